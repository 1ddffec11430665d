//! A TCP server that greets with a banner and answers lines it recognises.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::ServerHandle;

/// Greets every connection with `banner`, then answers each `(request, reply)` it reads.
pub async fn serve(banner: &str, replies: &[(&str, &str)]) -> ServerHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let banner = banner.to_string();
    let replies: Vec<(String, String)> = replies
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let banner = banner.clone();
            let replies = replies.clone();
            tokio::spawn(async move {
                if stream.write_all(banner.as_bytes()).await.is_err() {
                    return;
                }
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_string();
                    for (request, reply) in &replies {
                        if text.contains(request.as_str()) {
                            let _ = stream.write_all(reply.as_bytes()).await;
                            seen.clear();
                        }
                    }
                }
            });
        }
    });
    ServerHandle::new(addr, task)
}
