//! Serving connections so that no peer can take the server down by holding them: the
//! open-files limit is raised to what the system allows (the usual soft limit of 1,024 let
//! about a thousand idle sockets stop `/healthz` and result posts), a connection that sends no
//! request (or trickles its headers) is closed after `IDLE`, the number of connections is
//! bounded with a clear log line when the bound is reached, and an accept that fails for want
//! of file descriptors waits a moment instead of spinning. With TLS on (`tls`), a connection
//! is handshaken first (bounded by `IDLE` too), a plain HTTP request is answered with a 400
//! that says to use https, and the name of a verified client certificate goes to the handlers
//! in a header of the server's own that no request can bring itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a connection may go without sending a whole request head, by default: idle
/// between requests, or trickling headers. Agents talk more often than this (results every
/// second, keepalives every 20 s, long-polls held at most 60 s while a request is in flight,
/// which this does not cut), and close their idle connections sooner.
pub const IDLE: Duration = Duration::from_secs(30);
/// File descriptors kept for everything but connections: the database, plugins' pipes, logs.
const RESERVED_FDS: u64 = 256;
/// The most connections served at once, whatever the limit allows.
const MAX_CONNECTIONS: u64 = 100_000;
/// How long the server waits for connections to finish when it stops.
const DRAIN: Duration = Duration::from_secs(10);
/// The header that tells handlers the name of the connection's verified client certificate.
/// Removed from every request as it comes in, so only the listener ever sets it.
pub const CLIENT_CERTIFICATE_HEADER: &str = "mdd-internal-client-certificate";
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Raises the soft open-files limit to the hard one, and says how many connections that
/// allows. Returns the bound on connections.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("cannot read the open-files limit ({e}); assuming 1024");
            (1024, 1024)
        }
    };
    let raised = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
                soft
            }
        }
    } else {
        soft
    };
    let bound = raised
        .saturating_sub(RESERVED_FDS)
        .clamp(64, MAX_CONNECTIONS);
    if raised < 16_384 {
        tracing::warn!(
            "the open-files limit is {raised}: the server takes at most {bound} connections (agents' long-polls each hold one); raise it (LimitNOFILE= in systemd, ulimit -n) for more agents"
        );
    } else {
        tracing::debug!(limit = raised, connections = bound, "open-files limit");
    }
    bound
}

/// Connection figures, for `/metrics` and the log.
#[derive(Debug, Default)]
pub struct Connections {
    pub open: AtomicU64,
    pub refused: AtomicU64,
    pub timed_out: AtomicU64,
}

/// Serves `app` on `listener` until `shutdown`, then lets the connections finish (bounded).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<crate::tls::Tls>>,
    max_connections: u64,
    idle: Duration,
    figures: Arc<Connections>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(
        usize::try_from(max_connections).unwrap_or(usize::MAX),
    ));
    let connections = tokio_util::task::TaskTracker::new();
    let mut told_full: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors (EMFILE, ENFILE) or memory: not this listener's
                // fault, and retrying at once would spin.
                tracing::error!("cannot accept a connection: {e}; trying again in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            figures.refused.fetch_add(1, Ordering::Relaxed);
            if told_full.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                told_full = Some(tokio::time::Instant::now());
                tracing::error!(
                    "{max_connections} connections are open, the most this server takes: new ones are closed at once (the latest from {peer}); raise the open-files limit, or find who holds them ({} refused so far)",
                    figures.refused.load(Ordering::Relaxed)
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let figures = Arc::clone(&figures);
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            figures.open.fetch_add(1, Ordering::Relaxed);
            match tls {
                None => serve_one(stream, peer, app, None, idle, &figures, shutdown).await,
                Some(tls) => {
                    if let Some((stream, identity)) =
                        handshake(stream, peer, &tls, idle, &figures).await
                    {
                        serve_one(stream, peer, app, identity, idle, &figures, shutdown).await;
                    }
                }
            }
            figures.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connections were still open {}s after the server stopped taking new ones",
            connections.len(),
            DRAIN.as_secs()
        );
    }
}

/// The TLS handshake of one connection, after a look at its first byte: a plain HTTP request
/// is told to use https. Returns the stream and the name of the client's certificate, if it
/// presented one (the handshake verified it against the client CAs).
async fn handshake(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: &crate::tls::Tls,
    idle: Duration,
    figures: &Connections,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Option<String>,
)> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(idle, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
        Ok(Ok(1)) => {
            refuse_plain(stream, peer).await;
            return None;
        }
        Ok(_) => return None,
        Err(_) => {
            figures.timed_out.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    }
    match tokio::time::timeout(idle, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => {
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(crate::tls::client_name);
            Some((stream, identity))
        }
        Ok(Err(e)) => {
            // A client that does not trust the certificate ends here, as does a scanner.
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            figures.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "closed a connection that did not finish its TLS handshake within {idle:?}");
            None
        }
    }
}

/// Answers a plain HTTP request on the TLS port with a 400 that says why, then closes. The
/// request head is read first (briefly): closing with it unread would reset the connection and
/// the client would see that instead of the answer.
async fn refuse_plain(mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tracing::debug!(%peer, "plain HTTP on the TLS port: told to use https");
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let body = "this server speaks HTTPS only: use an https:// URL\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn serve_one<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    identity: Option<String>,
    idle: Duration,
    figures: &Connections,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true);
    // A name that is not a valid header value cannot be an entity's either: no identity.
    let identity = identity.and_then(|name| axum::http::HeaderValue::from_str(&name).ok());
    let service = hyper::service::service_fn(move |mut request: axum::http::Request<_>| {
        let headers = request.headers_mut();
        headers.remove(CLIENT_CERTIFICATE_HEADER);
        if let Some(name) = &identity {
            headers.insert(CLIENT_CERTIFICATE_HEADER, name.clone());
        }
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, request.map(axum::body::Body::new)).await }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        if e.is_timeout() {
            figures.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "closed a connection that sent no request within {idle:?}");
        } else {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}
