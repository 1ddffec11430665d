//! `mdd demo`: a datacenter coming up, to watch in the dashboard in the first five minutes.
//!
//! Starts a server on a throw-away store with an example deployment whose integration points
//! are listeners this process opens on loopback, one after the other over about two minutes:
//! the monitors go from red (and blocked) to green, and the deployment to done done.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use mdd_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{DemoArgs, exit};

/// One integration point of the example datacenter.
struct Point {
    check: &'static str,
    /// Seconds after the start (at speed 1) when it comes up.
    up_after: u64,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    /// Accepts TCP connections.
    Tcp,
    /// Answers HTTP with this status and body.
    Http(u16, &'static str),
}

const POINTS: &[Point] = &[
    Point {
        check: "ams1-dns",
        up_after: 8,
        kind: Kind::Tcp,
    },
    Point {
        check: "ams1-ntp",
        up_after: 16,
        kind: Kind::Tcp,
    },
    Point {
        check: "ams1-ldap",
        up_after: 30,
        kind: Kind::Tcp,
    },
    Point {
        check: "ams1-postgres",
        up_after: 44,
        kind: Kind::Tcp,
    },
    Point {
        check: "ams1-vault",
        up_after: 58,
        kind: Kind::Http(200, "{\"initialized\":true,\"sealed\":false}"),
    },
    Point {
        check: "ams1-registry",
        up_after: 72,
        kind: Kind::Http(401, "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}"),
    },
    Point {
        check: "ams1-api",
        up_after: 90,
        kind: Kind::Http(200, "ok"),
    },
    Point {
        check: "ams1-lb",
        up_after: 104,
        kind: Kind::Http(200, "<html>welcome to ams1</html>"),
    },
];

fn spec(ports: &[(u16, &Point)], interval: &str, settle: &str) -> String {
    let port = |name: &str| {
        ports
            .iter()
            .find(|(_, p)| p.check == name)
            .map_or(0, |(port, _)| *port)
    };
    format!(
        "# The example datacenter of `mdd demo`: every integration point ams1 needs, who owns it,
# and what it depends on. Each one is a listener the demo opens on 127.0.0.1, one by one.
defaults: {{ interval: {interval}, timeout: 1s }}
deployments:
  - name: ams1
    description: Amsterdam 1 goes live
    selector: {{ datacenter: ams1 }}
    settle: {settle}
checks:
  - name: ams1-dns
    description: The datacenter's resolvers answer; everything else finds its peers through them.
    owner: team-network
    runbook: https://wiki.example.com/runbooks/dns
    labels: {{ datacenter: ams1, layer: network }}
    tcp: {{ host: 127.0.0.1, port: {} }}
  - name: ams1-ntp
    description: Clocks agree, or TLS and Kerberos fail in confusing ways.
    owner: team-network
    labels: {{ datacenter: ams1, layer: network }}
    tcp: {{ host: 127.0.0.1, port: {} }}
  - name: ams1-ldap
    description: Hosts and services authenticate people and machines here.
    owner: team-identity
    runbook: https://wiki.example.com/runbooks/ldap
    labels: {{ datacenter: ams1, layer: identity }}
    depends_on: [ams1-dns, ams1-ntp]
    tcp: {{ host: 127.0.0.1, port: {} }}
  - name: ams1-postgres
    description: The primary database the API keeps its state in.
    owner: team-data
    labels: {{ datacenter: ams1, layer: data }}
    depends_on: [ams1-dns]
    tcp: {{ host: 127.0.0.1, port: {} }}
  - name: ams1-vault
    description: Secrets for every service; unsealed and initialised.
    owner: team-security
    labels: {{ datacenter: ams1, layer: security }}
    depends_on: [ams1-ldap]
    http: {{ url: 'http://127.0.0.1:{}/v1/sys/health', body_contains: '\"sealed\":false' }}
  - name: ams1-registry
    description: Container images for every deploy; answers the v2 API (401 until logged in is fine).
    owner: team-platform
    runbook: https://wiki.example.com/runbooks/registry
    labels: {{ datacenter: ams1, layer: platform }}
    depends_on: [ams1-ldap]
    http: {{ url: 'http://127.0.0.1:{}/v2/', status: [200, 401] }}
  - name: ams1-api
    description: The product's API answers its health check.
    owner: team-app
    labels: {{ datacenter: ams1, layer: app }}
    depends_on: [ams1-postgres, ams1-vault, ams1-registry]
    http: {{ url: 'http://127.0.0.1:{}/healthz', body_contains: ok }}
  - name: ams1-lb
    description: The load balancer serves the site to the world.
    owner: team-network
    labels: {{ datacenter: ams1, layer: network }}
    depends_on: [ams1-api]
    http: {{ url: 'http://127.0.0.1:{}/' }}
",
        port("ams1-dns"),
        port("ams1-ntp"),
        port("ams1-ldap"),
        port("ams1-postgres"),
        port("ams1-vault"),
        port("ams1-registry"),
        port("ams1-api"),
        port("ams1-lb"),
    )
}

/// Reserves a loopback port for a point that comes up later: bound now (so nobody else takes
/// it) but not listening, so connections are refused until the point comes up.
fn reserve() -> Result<(u16, tokio::net::TcpSocket)> {
    let socket = tokio::net::TcpSocket::new_v4().context("make a socket")?;
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("bind a loopback port")?;
    let port = socket.local_addr()?.port();
    Ok((port, socket))
}

/// A duration as spec text, in whole milliseconds.
fn spec_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis().max(1))
}

/// Serves one integration point once it is up, until `stop`.
async fn serve(listener: TcpListener, kind: Kind, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        if let Kind::Http(status, body) = kind {
            tokio::spawn(async move {
                let mut request = [0u8; 2048];
                // The probe's request head fits in one read; its content does not matter.
                let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut request));
                if !matches!(read.await, Ok(Ok(n)) if n > 0) {
                    return;
                }
                let reason = if status == 200 { "OK" } else { "Unauthorized" };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    }
}

pub fn demo(args: DemoArgs) -> Result<u8> {
    let speed = args.speed.max(0.01);
    let scaled = |seconds: f64| Duration::from_secs_f64(seconds / speed);
    let data = tempfile::Builder::new()
        .prefix("mdd-demo-")
        .tempdir()
        .context("cannot make a directory for the demo's store")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut reserved = Vec::new();
        for point in POINTS {
            let (port, socket) = reserve()?;
            reserved.push((port, point, socket));
        }
        let ports: Vec<(u16, &Point)> = reserved.iter().map(|(port, p, _)| (*port, *p)).collect();
        let spec_path = data.path().join("ams1.yaml");
        std::fs::write(
            &spec_path,
            spec(&ports, &spec_duration(scaled(2.0)), &spec_duration(scaled(15.0))),
        )
        .context("cannot write the demo's spec")?;
        let mut config = ServerConfig::new(data.path().join("data"));
        config.listen = args.listen;
        config.specs = vec![mdd_server::SpecPath {
            name: "ams1.yaml".to_string(),
            path: spec_path.clone(),
        }];
        config.public_read = true;
        let shutdown = CancellationToken::new();
        let running = mdd_server::start(config, shutdown.clone())
            .await
            .context("cannot start the demo's server")?;
        let url = format!("http://{}/", running.addr);
        eprintln!("mdd demo: a datacenter (ams1) comes up over about {} on loopback.", mdd_core::format_duration(scaled(120.0)));
        eprintln!("mdd demo: open {url} and watch it turn green; Ctrl-C stops the demo.");
        eprintln!("mdd demo: the spec it monitors: {}", spec_path.display());
        eprintln!("mdd demo: in another terminal: mdd deploy watch ams1 --server {}", url.trim_end_matches('/'));
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let mut pending = reserved;
        pending.sort_by_key(|(_, p, _)| p.up_after);
        let bring_up = {
            let stop = stop.clone();
            async move {
                for (_, point, socket) in pending {
                    tokio::time::sleep_until(started + scaled(point.up_after as f64)).await;
                    let listener = socket.listen(128)?;
                    eprintln!(
                        "mdd demo: {:>5.0}s  {} is up",
                        started.elapsed().as_secs_f64() * speed,
                        point.check
                    );
                    tokio::spawn(serve(listener, point.kind, stop.clone()));
                }
                anyhow::Ok(())
            }
        };
        let signals = crate::verify::stop_on_signal(shutdown.clone());
        tokio::spawn(signals);
        let shared = running.shared.clone();
        tokio::select! {
            brought = bring_up => brought?,
            _ = shutdown.cancelled() => {}
        }
        // Everything is up: say when the deployment is done, then keep serving until Ctrl-C.
        let done_watch = async {
            loop {
                let done = shared
                    .deployments_read()
                    .get("ams1")
                    .and_then(|t| t.done_at)
                    .is_some();
                if done {
                    eprintln!("mdd demo: ams1 is done done: every check green for the settle time. Ctrl-C to stop.");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        tokio::select! {
            _ = done_watch => shutdown.cancelled().await,
            _ = shutdown.cancelled() => {}
        }
        stop.cancel();
        running.finished().await;
        Ok(exit::OK)
    })
}
