//! A TLS-terminating proxy: HTTPS in front of a plain-HTTP server, as a load balancer would
//! put it, so that clients' certificate checks can be tested against a real server.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::ServerHandle;
use crate::certs::ServerCert;

/// Accepts TLS with `cert` on 127.0.0.1 and forwards the plain bytes to `upstream`.
pub async fn serve(cert: &ServerCert, upstream: SocketAddr) -> ServerHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let acceptor = TlsAcceptor::from(cert.server_config());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    ServerHandle::new(addr, task)
}
