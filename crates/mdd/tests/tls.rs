//! TLS and mutual TLS on the server, end to end: certificates from a throw-away CA, real
//! agents, a rotation under load, plain HTTP on the TLS port, the server's config file.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Agent, TestServer, mdd_client, wait_for_events};

use mdd_testkit::certs::{ServerCert, TestCa};
use serde_json::json;

const SPEC: &str = "defaults: { interval: 250ms, timeout: 2s }
checks:
  - { name: web-up, subscriptions: [web], command: [echo, 'OK - web'] }
";

/// A CA, a server certificate for 127.0.0.1 from it, the files written in `dir`.
struct Material {
    ca: TestCa,
    ca_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn material(dir: &Path) -> Material {
    let ca = TestCa::new("mdd test CA");
    let ca_file = ca.write_pem(dir);
    let (cert, key) = ca
        .issue("127.0.0.1", time::Duration::days(30))
        .write_pem(dir, "server");
    Material {
        ca,
        ca_file,
        cert,
        key,
    }
}

async fn tls_server(dir: &Path, m: &Material, extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--tls-cert",
        m.cert.to_str().expect("utf-8"),
        "--tls-key",
        m.key.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let server = TestServer::start(&dir.join("data"), &args).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    server.with_ca(&m.ca_file)
}

/// A reqwest client that trusts the test CA and presents `identity` (a client certificate).
fn client_with(ca: &Path, identity: Option<&ServerCert>) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("CA");
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("CA PEM"));
    if let Some(cert) = identity {
        let both = format!("{}\n{}", cert.chain_pem, cert.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(both.as_bytes()).expect("identity"));
    }
    builder.build().expect("client")
}

async fn post_result(http: &reqwest::Client, url: &str, entity: &str, id: &str) -> u16 {
    http.post(format!("{url}/api/v1/results"))
        .header("content-type", "application/json")
        .body(json!({ "results": [{ "id": id, "check": "web-up", "entity": entity, "status": 0, "output": "OK" }] }).to_string())
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Agents reach an HTTPS server with a token, or with a client certificate alone; the
/// certificate's name is the only entity it reports for, a certificate from another CA is
/// refused in the handshake, and no request can bring the listener's identity header itself.
#[tokio::test]
async fn agents_report_over_tls_and_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = material(dir.path());
    let server = tls_server(
        dir.path(),
        &m,
        &["--tls-client-ca", m.ca_file.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(server.apply(&[("dc.yaml", SPEC)]).await.0, 200);
    let ca = m.ca_file.to_str().expect("utf-8");

    // An agent with a token, over TLS.
    let (code, token, stderr) = mdd_client(
        &server,
        &["token", "create", "--role", "agent", "--entity", "tok1"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let token = token.trim().to_string();
    let with_token = Agent::start(
        &server,
        &dir.path().join("tok1"),
        &[
            "--token",
            &token,
            "--ca",
            ca,
            "--name",
            "tok1",
            "--subscriptions",
            "web",
        ],
    );
    // An agent with a certificate and no token at all, over mutual TLS.
    let web1 = m.ca.issue("web1", time::Duration::days(30));
    let (web1_cert, web1_key) = web1.write_pem(dir.path(), "web1");
    let with_cert = Agent::start(
        &server,
        &dir.path().join("web1"),
        &[
            "--cert",
            web1_cert.to_str().expect("utf-8"),
            "--key",
            web1_key.to_str().expect("utf-8"),
            "--ca",
            ca,
            "--name",
            "web1",
            "--subscriptions",
            "web",
        ],
    );
    wait_for_events(&server, |events| {
        ["tok1", "web1"].iter().all(|entity| {
            events
                .iter()
                .any(|e| e["check"] == "web-up" && e["entity"] == *entity && e["status"] == "ok")
        })
    })
    .await;
    let (_, entities) = server.get("/api/v1/entities").await;
    let web1_entity = entities["entities"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "web1")
        .cloned()
        .unwrap_or_default();
    assert!(
        web1_entity["agent"].is_object(),
        "its keepalives came: {entities}"
    );
    assert!(
        !dir.path().join("web1/agent-token.json").exists(),
        "a certificate needs no token"
    );

    // The certificate of web1 reports for web1 only.
    let as_web1 = client_with(&m.ca_file, Some(&web1));
    assert_eq!(post_result(&as_web1, &server.url, "web1", "own").await, 200);
    assert_eq!(
        post_result(&as_web1, &server.url, "web2", "other").await,
        403
    );
    // It is an agent, not an admin.
    let tokens = as_web1
        .get(format!("{}/api/v1/tokens", server.url))
        .send()
        .await
        .expect("request");
    assert_eq!(tokens.status(), 403);
    // Without a certificate, the listener's header brought by the request is dropped.
    let forged = client_with(&m.ca_file, None)
        .post(format!("{}/api/v1/results", server.url))
        .header("mdd-internal-client-certificate", "web2")
        .header("content-type", "application/json")
        .body(json!({ "results": [{ "id": "forged", "check": "web-up", "entity": "web2", "status": 0 }] }).to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(forged.status(), 401);
    // A certificate from another CA does not get through the handshake.
    let stranger = TestCa::new("someone else").issue("web1", time::Duration::days(30));
    let refused = client_with(&m.ca_file, Some(&stranger))
        .post(format!("{}/api/v1/results", server.url))
        .header("content-type", "application/json")
        .body(json!({ "results": [{ "id": "stranger", "check": "web-up", "entity": "web1", "status": 0 }] }).to_string())
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");

    with_token.kill9().await;
    with_cert.kill9().await;
    assert!(server.stop().await.success());
}

/// Plain HTTP on the TLS port gets an answer that says to use https, not a hang or a reset.
#[tokio::test]
async fn plain_http_to_a_tls_server_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = material(dir.path());
    let server = tls_server(dir.path(), &m, &[]).await;
    let plain = server.url.replacen("https://", "http://", 1);
    let response = reqwest::get(format!("{plain}/healthz"))
        .await
        .expect("an answer");
    assert_eq!(response.status(), 400);
    let text = response.text().await.expect("body");
    assert!(text.contains("HTTPS"), "{text}");
    // The CLI says it too.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args(["status", "--server", &plain, "--token", common::ADMIN])
        .output()
        .await
        .expect("run mdd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("HTTPS"), "{stderr}");
    // And HTTPS works on the same port.
    assert_eq!(server.get("/healthz").await.0, 200);
    assert!(server.stop().await.success());
}

/// An agent refuses a server whose certificate expired, or is from a CA it was not told to
/// trust, and says which.
#[tokio::test]
async fn agents_refuse_expired_and_untrusted_server_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    assert_eq!(server.apply(&[("dc.yaml", SPEC)]).await.0, 200);
    let ca = TestCa::new("mdd test CA");
    let ca_file = ca.write_pem(dir.path());
    let upstream: std::net::SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let expired = ca.issue("127.0.0.1", -time::Duration::days(3));
    let proxy = mdd_testkit::tls_proxy::serve(&expired, upstream).await;
    let agent = Agent::start_at(
        &format!("https://127.0.0.1:{}", proxy.port()),
        &dir.path().join("a1"),
        &[
            "--token",
            common::ADMIN,
            "--ca",
            ca_file.to_str().expect("utf-8"),
            "--name",
            "a1",
        ],
    );
    agent
        .wait_until_said("the server's certificate expired 3 days ago")
        .await;
    agent.kill9().await;

    let other_ca = TestCa::new("not trusted");
    let untrusted = other_ca.issue("127.0.0.1", time::Duration::days(30));
    let proxy = mdd_testkit::tls_proxy::serve(&untrusted, upstream).await;
    let agent = Agent::start_at(
        &format!("https://127.0.0.1:{}", proxy.port()),
        &dir.path().join("a2"),
        &[
            "--token",
            common::ADMIN,
            "--ca",
            ca_file.to_str().expect("utf-8"),
            "--name",
            "a2",
        ],
    );
    agent
        .wait_until_said("the server's certificate is not from a trusted CA")
        .await;
    agent.kill9().await;

    // The server itself will not start on an expired certificate.
    let (cert, key) = expired.write_pem(dir.path(), "expired");
    let refused = TestServer::start_wrapped(
        &[],
        &dir.path().join("data2"),
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
    )
    .await;
    let said = refused.err().expect("the server refuses to start");
    assert!(said.contains("expired.pem"), "{said}");
    assert!(said.contains("expired on"), "{said}");
    assert!(server.stop().await.success());
}

/// The leaf certificate a new connection to `addr` is served.
async fn served_certificate(addr: &str, ca: &TestCa) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certificates")[0].to_vec()
}

/// Certificates are replaced on disk (as a certificate manager does) and on SIGHUP while
/// agents-like clients post without pause, on new and kept-alive connections: no request
/// fails, new connections get the new certificate, and a broken pair keeps the last good one.
#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = material(dir.path());
    let server = tls_server(dir.path(), &m, &[]).await;
    assert_eq!(server.apply(&[("dc.yaml", SPEC)]).await.0, 200);
    let addr = server.url.trim_start_matches("https://").to_string();
    let first = served_certificate(&addr, &m.ca).await;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        let url = server.url.clone();
        let ca_file = m.ca_file.clone();
        load.push(tokio::spawn(async move {
            // Half the workers keep their connections, half make a new one every time.
            let kept = client_with(&ca_file, None);
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let http = if worker % 2 == 0 {
                    kept.clone()
                } else {
                    client_with(&ca_file, None)
                };
                let sent = http
                    .post(format!("{url}/api/v1/results"))
                    .bearer_auth(common::ADMIN)
                    .header("content-type", "application/json")
        .body(json!({ "results": [{ "id": format!("w{worker}-{n}"), "check": "web-up", "entity": "e", "status": 0 }] }).to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => failures.push(format!("HTTP {}", r.status())),
                    Err(e) => failures.push(format!("{e:?}")),
                }
                n += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    let wait_for_cert = |want: Vec<u8>| {
        let addr = addr.clone();
        let ca = &m.ca;
        async move {
            for _ in 0..100 {
                if served_certificate(&addr, ca).await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the new certificate was never served");
        }
    };

    // Replaced on disk: picked up without a signal.
    let second = m.ca.issue("127.0.0.1", time::Duration::days(60));
    let (cert, key) = second.write_pem(dir.path(), "server");
    assert_eq!((cert, key), (m.cert.clone(), m.key.clone()));
    wait_for_cert(second.chain[0].to_vec()).await;
    assert_ne!(first, second.chain[0].to_vec());

    // A broken pair (the chain of one, the key of another) is not taken: the last good one
    // stays in use, and requests go on.
    let third = m.ca.issue("127.0.0.1", time::Duration::days(90));
    let fourth = m.ca.issue("127.0.0.1", time::Duration::days(90));
    std::fs::write(&m.cert, &third.chain_pem).expect("write");
    std::fs::write(&m.key, &fourth.key_pem).expect("write");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        served_certificate(&addr, &m.ca).await,
        second.chain[0].to_vec()
    );

    // Put right, and told with SIGHUP.
    std::fs::write(&m.key, &third.key_pem).expect("write");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    wait_for_cert(third.chain[0].to_vec()).await;

    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for worker in load {
        failures.extend(worker.await.expect("worker"));
    }
    let requests = done.load(Ordering::SeqCst);
    assert!(requests > 100, "only {requests} requests were made");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(server.stop().await.success());
}

/// `mdd server --config FILE`: the file's settings are used (TLS included), flags win over
/// it, and a mistake in it is named by file, line and field before anything starts.
#[tokio::test]
async fn the_server_takes_a_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = material(dir.path());
    let config = dir.path().join("server.yaml");
    std::fs::write(
        &config,
        "# what /etc/mdd/server.yaml holds\nlisten: 127.0.0.1:1\ndata: from-file\nretention: 3d\nname: srv-from-file\ntls:\n  cert: server.pem\n  key: server.key\n",
    )
    .expect("write");
    // The flag's listen wins over the file's port 1; the data directory is the file's,
    // relative to the file. No admin token given: the server makes one and says how to use it.
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args(["server", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("MDD_ADMIN_TOKEN")
        .env_remove("MDD_DATA")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let (server, said) = TestServer::serving(child)
        .await
        .unwrap_or_else(|said| panic!("the server does not start: {said}"));
    let url = server.url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert!(dir.path().join("from-file").is_dir(), "{said}");
    let export = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("export "))
        .unwrap_or_else(|| panic!("no export line in: {said}"));
    assert!(
        export.starts_with(&format!("MDD_SERVER={url} MDD_TOKEN=mdd_")),
        "{export}"
    );
    let token = export
        .rsplit("MDD_TOKEN=")
        .next()
        .expect("token")
        .to_string();

    // The server's own checks report as the file's name.
    let server = TestServer {
        http: client_with(&m.ca_file, None),
        ca: Some(m.ca_file.clone()),
        ..server
    };
    let spec = "checks:\n  - { name: itself, interval: 250ms, command: [echo, 'OK'] }\n";
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/spec",
            Some(&token),
            Some(
                serde_json::to_vec(&json!({ "files": [{ "file": "s.yaml", "text": spec }] }))
                    .expect("json"),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..100 {
        let (_, events) = server
            .call(reqwest::Method::GET, "/api/v1/events", Some(&token), None)
            .await;
        if events["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["check"] == "itself" && e["entity"] == "srv-from-file")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, events) = server
        .call(reqwest::Method::GET, "/api/v1/events", Some(&token), None)
        .await;
    assert!(events.to_string().contains("srv-from-file"), "{events}");
    server.kill9().await;

    // Mistakes: unknown field, wrong type, and a flag's mistake; each named.
    for (text, wants) in [
        (
            "listen: 127.0.0.1:0\ntls:\n  cert: a.pem\n  kee: a.key\n",
            vec!["server.yaml", "line 4", "kee"],
        ),
        (
            "listen: 127.0.0.1:0\nretention: forever\n",
            vec!["server.yaml", "line 2", "forever"],
        ),
        ("listen: [1, 2]\n", vec!["server.yaml", "line 1", "listen"]),
    ] {
        std::fs::write(&config, text).expect("write");
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
            .args(["server", "--config"])
            .arg(&config)
            .env_remove("MDD_DATA")
            .current_dir(dir.path())
            .output()
            .await
            .expect("run");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        for want in wants {
            assert!(stderr.contains(want), "want {want:?} in: {stderr}");
        }
    }
}
