//! `mdd demo`: a datacenter coming up, to watch in the dashboard in the first five minutes.
//!
//! Starts a server on a throw-away store with an example deployment whose integration points
//! are real servers this process opens on loopback, one after the other over about two
//! minutes — a DNS server answering for the demo's names, HTTP, HTTPS and a TLS endpoint with a
//! certificate from a throw-away CA, TCP, and a Nagios plugin when one is installed: the
//! monitors go from red (and blocked) to green, the deployment to done done. Then one point
//! breaks and comes back, so a regression and a notification are seen too.

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

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Accepts TCP connections.
    Tcp,
    /// Answers HTTP with this status and body.
    Http(u16, &'static str),
    /// The same over TLS, with the demo CA's certificate.
    Https(u16, &'static str),
    /// A TLS handshake with the demo CA's certificate, nothing more.
    Tls,
    /// A DNS server (UDP) answering A records of `*.ams1.example` with 127.0.0.1.
    Dns,
}

/// A TCP point's port, bound but not listening until it comes up.
type Reserved = (u16, &'static Point, tokio::net::TcpSocket);

/// The point the demo breaks once the deployment is done, and brings back.
const BROKEN: &str = "ams1-postgres";
/// The names the demo's DNS server answers for.
const DNS_NAMES: [&str; 3] = ["ns1.ams1.example", "vault.ams1.example", "www.ams1.example"];

const POINTS: &[Point] = &[
    Point {
        check: "ams1-dns",
        up_after: 8,
        kind: Kind::Dns,
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
        kind: Kind::Https(200, "{\"initialized\":true,\"sealed\":false}"),
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
        kind: Kind::Tls,
    },
];

/// Where the demo's spec points: ports, the CA file, the notifications file, the plugin.
struct Places<'a> {
    ports: &'a [(u16, &'a Point)],
    ca: String,
    notifications: String,
    /// check_tcp from Debian's monitoring-plugins, when installed.
    plugin: Option<&'static str>,
}

fn spec(places: &Places<'_>, interval: &str, settle: &str) -> String {
    let port = |name: &str| {
        places
            .ports
            .iter()
            .find(|(_, p)| p.check == name)
            .map_or(0, |(port, _)| *port)
    };
    let ntp = match places.plugin {
        Some(plugin) => format!(
            "command: [{plugin}, -H, 127.0.0.1, -p, '{}']   # a Nagios plugin",
            port("ams1-ntp")
        ),
        None => format!("tcp: {{ host: 127.0.0.1, port: {} }}", port("ams1-ntp")),
    };
    format!(
        "# The example datacenter of `mdd demo`: every integration point ams1 needs, who owns it,
# and what it depends on. Each one is a real server the demo opens on 127.0.0.1, one by one.
defaults: {{ interval: {interval}, timeout: 1s }}
handlers:
  - name: on-call
    type: command                    # what a Sensu handler would get, on stdin
    command: [sh, -c, 'cat >> \"$0\"; echo >> \"$0\"', '{notifications}']
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
    dns: {{ name: ns1.ams1.example, server: '127.0.0.1:{}', expect: [127.0.0.1] }}
    handlers: [on-call]
  - name: ams1-ntp
    description: Clocks agree, or TLS and Kerberos fail in confusing ways.
    owner: team-network
    labels: {{ datacenter: ams1, layer: network }}
    {ntp}
  - name: ams1-ldap
    description: Hosts and services authenticate people and machines here.
    owner: team-identity
    runbook: https://wiki.example.com/runbooks/ldap
    labels: {{ datacenter: ams1, layer: identity }}
    depends_on: [ams1-dns, ams1-ntp]
    tcp: {{ host: 127.0.0.1, port: {} }}
    handlers: [on-call]
  - name: ams1-postgres
    description: The primary database the API keeps its state in.
    owner: team-data
    labels: {{ datacenter: ams1, layer: data }}
    depends_on: [ams1-dns]
    tcp: {{ host: 127.0.0.1, port: {} }}
    handlers: [on-call]
  - name: ams1-vault
    description: Secrets for every service; unsealed and initialised, over TLS.
    owner: team-security
    labels: {{ datacenter: ams1, layer: security }}
    depends_on: [ams1-ldap]
    http: {{ url: 'https://127.0.0.1:{}/v1/sys/health', body_contains: '\"sealed\":false', ca: '{ca}' }}
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
    handlers: [on-call]
  - name: ams1-lb
    description: The load balancer's certificate for the site, valid and not about to expire.
    owner: team-network
    labels: {{ datacenter: ams1, layer: network }}
    depends_on: [ams1-api]
    tls: {{ host: 127.0.0.1, port: {}, server_name: www.ams1.example, ca: '{ca}' }}
",
        port("ams1-dns"),
        port("ams1-ldap"),
        port("ams1-postgres"),
        port("ams1-vault"),
        port("ams1-registry"),
        port("ams1-api"),
        port("ams1-lb"),
        ca = places.ca,
        notifications = places.notifications,
    )
}

/// A throw-away CA and a certificate from it for the demo's names and 127.0.0.1: the CA's PEM,
/// and the TLS configuration that serves the certificate.
fn demo_tls() -> Result<(String, std::sync::Arc<rustls::ServerConfig>)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mdd demo CA (throw-away)");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().context("a CA key")?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("the CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);
    let names: Vec<String> = DNS_NAMES
        .iter()
        .map(|n| n.to_string())
        .chain(std::iter::once("127.0.0.1".to_string()))
        .collect();
    let mut params = CertificateParams::new(names).context("certificate parameters")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "www.ams1.example");
    let key = KeyPair::generate().context("a key")?;
    let cert = params.signed_by(&key, &issuer).context("the certificate")?;
    let chain = vec![cert.der().clone(), ca_cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        key.serialize_der(),
    ));
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS configuration")?;
    Ok((ca_cert.pem(), std::sync::Arc::new(config)))
}

/// Answers A queries for the demo's names with 127.0.0.1 (NXDOMAIN for any other), until
/// `stop`. Before `up` it answers SERVFAIL: a resolver whose zone is not loaded yet.
async fn serve_dns(socket: tokio::net::UdpSocket, up: CancellationToken, stop: CancellationToken) {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    let mut buf = vec![0u8; 4096];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let Ok((n, peer)) = received else { continue };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let mut response = Message::response(query.metadata.id, query.metadata.op_code);
        response.metadata.message_type = MessageType::Response;
        response.metadata.recursion_desired = query.metadata.recursion_desired;
        if !up.is_cancelled() {
            // Not up yet: the zone is not loaded, and the server says so at once.
            response.metadata.response_code = ResponseCode::ServFail;
            for q in &query.queries {
                response.add_query(q.clone());
            }
            if let Ok(bytes) = response.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
            continue;
        }
        response.metadata.authoritative = true;
        let mut known = false;
        for q in &query.queries {
            response.add_query(q.clone());
            let asked = q
                .name()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if DNS_NAMES.contains(&asked.as_str()) {
                known = true;
                if q.query_type() == RecordType::A
                    && let Ok(name) = Name::from_ascii(&asked)
                {
                    response.add_answer(Record::from_rdata(
                        name,
                        60,
                        RData::A(A(std::net::Ipv4Addr::LOCALHOST)),
                    ));
                }
            }
        }
        if !known {
            response.metadata.response_code = ResponseCode::NXDomain;
        }
        if let Ok(bytes) = response.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

/// Reserves a loopback port for a point that comes up later: bound now (so nobody else takes
/// it) but not listening, so connections are refused until the point comes up.
fn reserve() -> Result<(u16, tokio::net::TcpSocket)> {
    let socket = tokio::net::TcpSocket::new_v4().context("make a socket")?;
    // The broken point listens again on its port while the probes' closed connections wait
    // out TIME_WAIT there.
    socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
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
async fn serve(
    listener: TcpListener,
    kind: Kind,
    tls: std::sync::Arc<rustls::ServerConfig>,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let handshake = |stream| async {
                tokio::time::timeout(Duration::from_secs(2), acceptor.accept(stream))
                    .await
                    .ok()?
                    .ok()
            };
            match kind {
                Kind::Http(status, body) => answer_http(stream, status, body).await,
                Kind::Https(status, body) => {
                    if let Some(tls) = handshake(stream).await {
                        answer_http(tls, status, body).await;
                    }
                }
                Kind::Tls => {
                    if let Some(mut tls) = handshake(stream).await {
                        let _ = tls.shutdown().await;
                    }
                }
                Kind::Tcp | Kind::Dns => drop(stream),
            }
        });
    }
}

async fn answer_http<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    status: u16,
    body: &str,
) {
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
        let (ca_pem, tls) = demo_tls()?;
        let ca_file = data.path().join("demo-ca.pem");
        std::fs::write(&ca_file, ca_pem).context("cannot write the demo's CA")?;
        let notifications = data.path().join("notifications.jsonl");
        let plugin = ["/usr/lib/nagios/plugins/check_tcp"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let stop = CancellationToken::new();
        let dns_up = CancellationToken::new();
        let mut reserved = Vec::new();
        let mut ports = Vec::new();
        for point in POINTS {
            if point.kind == Kind::Dns {
                // Bound now, failing every query until it is up.
                let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
                    .await
                    .context("bind a loopback UDP port")?;
                ports.push((socket.local_addr()?.port(), point));
                tokio::spawn(serve_dns(socket, dns_up.clone(), stop.clone()));
            } else {
                let (port, socket) = reserve()?;
                ports.push((port, point));
                reserved.push((port, point, socket));
            }
        }
        let spec_path = data.path().join("ams1.yaml");
        let settle = format!("{}s", (15.0 / speed).round().max(1.0));
        let places = Places {
            ports: &ports,
            ca: ca_file.display().to_string(),
            notifications: notifications.display().to_string(),
            plugin,
        };
        std::fs::write(&spec_path, spec(&places, &spec_duration(scaled(2.0)), &settle))
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
        if plugin.is_none() {
            eprintln!("mdd demo: no Nagios plugins here (apt install monitoring-plugins-basic): ams1-ntp is checked with the built-in tcp probe");
        }
        let started = tokio::time::Instant::now();
        // Real time since the start, as the dashboard shows it.
        let at = move || format!("[{:>4}s]", started.elapsed().as_secs());
        tokio::spawn(tell_notifications(notifications.clone(), at, stop.clone()));
        let mut pending = reserved;
        pending.sort_by_key(|(_, p, _)| p.up_after);
        let mut broken: Option<(u16, CancellationToken)> = None;
        let bring_up = async {
            let mut all: Vec<(u64, Option<Reserved>, &Point)> = pending
                .into_iter()
                .map(|(port, point, socket)| (point.up_after, Some((port, point, socket)), point))
                .chain(
                    POINTS
                        .iter()
                        .filter(|p| p.kind == Kind::Dns)
                        .map(|p| (p.up_after, None, p)),
                )
                .collect();
            all.sort_by_key(|(after, _, _)| *after);
            for (after, reserved, point) in all {
                tokio::time::sleep_until(started + scaled(after as f64)).await;
                match reserved {
                    None => dns_up.cancel(),
                    Some((port, point, socket)) => {
                        let listener = socket.listen(128)?;
                        let own = stop.child_token();
                        if point.check == BROKEN {
                            broken = Some((port, own.clone()));
                        }
                        tokio::spawn(serve(listener, point.kind, tls.clone(), own));
                    }
                }
                eprintln!("mdd demo: {} {} is up", at(), point.check);
            }
            anyhow::Ok(())
        };
        let signals = crate::verify::stop_on_signal(shutdown.clone());
        tokio::spawn(signals);
        let shared = running.shared.clone();
        tokio::select! {
            brought = bring_up => brought?,
            _ = shutdown.cancelled() => {}
        }
        let done = |shared: &mdd_server::Shared| {
            shared
                .deployments_snapshot()
                .get("ams1")
                .and_then(|t| t.done_at)
                .is_some()
        };
        let done_watch = async {
            while !done(&shared) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            eprintln!("mdd demo: {} ams1 is done done: every check green for the settle time.", at());
        };
        tokio::select! {
            _ = done_watch => {}
            _ = shutdown.cancelled() => {}
        }
        // Then the first incident in production: one point breaks, and comes back.
        let incident = async {
            tokio::time::sleep(scaled(20.0)).await;
            let Some((port, serving)) = broken.take() else { return anyhow::Ok(()) };
            serving.cancel();
            eprintln!(
                "mdd demo: {} {BROKEN} goes down: see the regression at {url}deployments/ams1 and who was told at {url}handlers",
                at()
            );
            tokio::time::sleep(scaled(25.0)).await;
            let socket = tokio::net::TcpSocket::new_v4().context("make a socket")?;
            socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
            socket
                .bind(SocketAddr::from(([127, 0, 0, 1], port)))
                .with_context(|| format!("cannot bring {BROKEN} back on port {port}"))?;
            let listener = socket
                .listen(128)
                .with_context(|| format!("cannot bring {BROKEN} back on port {port}"))?;
            let point = POINTS.iter().find(|p| p.check == BROKEN).context("the broken point")?;
            tokio::spawn(serve(listener, point.kind, tls.clone(), stop.child_token()));
            eprintln!("mdd demo: {} {BROKEN} is back. Ctrl-C to stop.", at());
            anyhow::Ok(())
        };
        tokio::select! {
            broke = incident => {
                if let Err(e) = broke {
                    eprintln!("mdd demo: {e:#}");
                }
                shutdown.cancelled().await;
            }
            _ = shutdown.cancelled() => {}
        }
        stop.cancel();
        running.finished().await;
        Ok(exit::OK)
    })
}

/// Says what the demo's handler was told, as it is told: a line per notification.
async fn tell_notifications(
    file: std::path::PathBuf,
    at: impl Fn() -> String,
    stop: CancellationToken,
) {
    let mut said = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for line in lines.iter().skip(said) {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            eprintln!(
                "mdd demo: {} on-call was told: {} {}",
                at(),
                event["check"]["metadata"]["name"].as_str().unwrap_or("?"),
                event["mdd"]["notification"].as_str().unwrap_or("?")
            );
        }
        said = lines.len();
    }
}
