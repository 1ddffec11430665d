//! A small HTTP/1.1 server whose answers a test can change while it runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::ServerHandle;
use crate::certs::ServerCert;

/// What the server answers on one path.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply::status(200, body)
    }

    pub fn status(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Paths and their replies; unknown paths get 404. Shared with the running server.
#[derive(Clone, Debug, Default)]
pub struct Routes(Arc<Mutex<HashMap<String, Reply>>>);

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    pub fn with(self, path: &str, reply: Reply) -> Routes {
        self.set(path, reply);
        self
    }

    pub fn set(&self, path: &str, reply: Reply) {
        if let Ok(mut routes) = self.0.lock() {
            routes.insert(path.to_string(), reply);
        }
    }

    fn get(&self, path: &str) -> Reply {
        self.0
            .lock()
            .ok()
            .and_then(|routes| routes.get(path).cloned())
            .unwrap_or_else(|| Reply::status(404, "not found"))
    }
}

/// Serves `routes` over plain HTTP on 127.0.0.1.
pub async fn serve(routes: Routes) -> ServerHandle {
    serve_on(0, routes, None).await
}

/// Serves `routes` over HTTPS with `cert`.
pub async fn serve_tls(routes: Routes, cert: &ServerCert) -> ServerHandle {
    serve_on(0, routes, Some(TlsAcceptor::from(cert.server_config()))).await
}

/// Serves on a given port (0: any), for a target that comes up later at a known address.
pub async fn serve_on(port: u16, routes: Routes, tls: Option<TlsAcceptor>) -> ServerHandle {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let routes = routes.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            answer(stream, &routes).await;
                        }
                    }
                    None => answer(stream, &routes).await,
                }
            });
        }
    });
    ServerHandle::new(addr, task)
}

async fn answer(mut stream: impl AsyncRead + AsyncWrite + Unpin, routes: &Routes) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&request);
    let path = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("/");
    // Routes match the path; a query string only makes URLs distinct.
    let path = path.split('?').next().unwrap_or(path).to_string();
    let reply = routes.get(&path);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-length: {}\r\nconnection: close\r\ncontent-type: text/plain\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&reply.body);
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
