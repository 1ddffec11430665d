//! The built-in probes against real servers on loopback.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{assert_status, run};
use mdd_core::Status;
use mdd_testkit::certs::TestCa;
use mdd_testkit::http::{Reply, Routes, serve, serve_tls};
use mdd_testkit::{dns, free_port, tcp};

#[tokio::test]
async fn http_ok_with_status_body_and_perfdata() {
    let server = serve(Routes::new().with("/v2/", Reply::status(401, "{\"ok\": true}"))).await;
    let result = run(&format!(
        "http: {{ url: 'http://127.0.0.1:{}/v2/', status: [200, 401], body_contains: ok, body_regex: 'true' }}",
        server.port()
    ))
    .await;
    assert_status(&result, Status::Ok);
    assert!(
        result.summary.starts_with("HTTP 401 Unauthorized in "),
        "{result:?}"
    );
    let labels: Vec<_> = result.perfdata.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["time", "size"]);
    assert_eq!(result.perfdata[1].value, Some(12.0));
}

#[tokio::test]
async fn http_wrong_status_and_wrong_body_are_critical() {
    let routes = Routes::new()
        .with("/down", Reply::status(503, "maintenance"))
        .with("/up", Reply::ok("hello"));
    let server = serve(routes).await;
    let base = format!("http://127.0.0.1:{}", server.port());

    let result = run(&format!("http: {{ url: '{base}/down' }}")).await;
    assert_status(&result, Status::Critical);
    assert!(
        result.summary.contains("HTTP 503") && result.summary.contains("want 2xx"),
        "{result:?}"
    );
    assert_eq!(result.long_output, "maintenance");

    let result = run(&format!(
        "http: {{ url: '{base}/up', body_contains: goodbye }}"
    ))
    .await;
    assert_status(&result, Status::Critical);
    assert!(
        result.summary.contains("does not contain `goodbye`"),
        "{result:?}"
    );

    let result = run(&format!("http: {{ url: '{base}/up', body_regex: '^bye' }}")).await;
    assert_status(&result, Status::Critical);
    assert!(result.summary.contains("does not match"), "{result:?}");
}

#[tokio::test]
async fn http_slower_than_max_latency_is_a_warning() {
    let server =
        serve(Routes::new().with("/", Reply::ok("x").after(Duration::from_millis(300)))).await;
    let result = run(&format!(
        "http: {{ url: 'http://127.0.0.1:{}/', max_latency: 50ms }}",
        server.port()
    ))
    .await;
    assert_status(&result, Status::Warning);
    assert!(result.summary.contains("slower than 50ms"), "{result:?}");
}

#[tokio::test]
async fn http_redirects_are_followed_unless_told_not_to() {
    let routes = Routes::new()
        .with("/old", Reply::status(302, "").header("location", "/new"))
        .with("/new", Reply::ok("arrived"));
    let server = serve(routes).await;
    let url = format!("http://127.0.0.1:{}/old", server.port());
    let result = run(&format!("http: {{ url: '{url}', body_contains: arrived }}")).await;
    assert_status(&result, Status::Ok);
    let result = run(&format!(
        "http: {{ url: '{url}', follow_redirects: false, status: [302] }}"
    ))
    .await;
    assert_status(&result, Status::Ok);
    assert!(result.summary.starts_with("HTTP 302"), "{result:?}");
}

#[tokio::test]
async fn http_connection_refused_and_timeout() {
    let port = free_port();
    let result = run(&format!("http: {{ url: 'http://127.0.0.1:{port}/' }}")).await;
    assert_status(&result, Status::Critical);
    assert!(result.summary.contains("connection refused"), "{result:?}");

    let server = serve(Routes::new().with("/", Reply::ok("x").after(Duration::from_secs(5)))).await;
    let result = run(&format!(
        "http: {{ url: 'http://127.0.0.1:{}/' }}\ntimeout: 200ms",
        server.port()
    ))
    .await;
    assert_status(&result, Status::Critical);
    assert_eq!(result.summary, "timed out after 200ms");
}

#[tokio::test]
async fn https_verifies_certificates() {
    let ca = TestCa::new("mdd test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write_pem(dir.path());
    let good = serve_tls(
        Routes::new().with("/", Reply::ok("secure")),
        &ca.issue("localhost", time::Duration::days(90)),
    )
    .await;
    let url = format!("https://localhost:{}/", good.port());

    let result = run(&format!(
        "http: {{ url: '{url}', ca: '{}' }}",
        ca_file.display()
    ))
    .await;
    assert_status(&result, Status::Ok);

    // Without the CA the system roots do not trust it.
    let result = run(&format!("http: {{ url: '{url}' }}")).await;
    assert_status(&result, Status::Critical);
    assert!(
        result.summary.to_lowercase().contains("certificate"),
        "{result:?}"
    );

    // insecure accepts it anyway.
    let result = run(&format!("http: {{ url: '{url}', insecure: true }}")).await;
    assert_status(&result, Status::Ok);

    let expired = serve_tls(
        Routes::new(),
        &ca.issue("localhost", time::Duration::days(-2)),
    )
    .await;
    let result = run(&format!(
        "http: {{ url: 'https://localhost:{}/', ca: '{}' }}",
        expired.port(),
        ca_file.display()
    ))
    .await;
    assert_status(&result, Status::Critical);
    assert!(
        result.summary.to_lowercase().contains("expired"),
        "{result:?}"
    );
}

#[tokio::test]
async fn tcp_connect_send_and_expect() {
    let server = tcp::serve("SSH-2.0-mdd\r\n", &[("PING", "PONG\n")]).await;
    let port = server.port();
    let result = run(&format!("tcp: {{ host: 127.0.0.1, port: {port} }}")).await;
    assert_status(&result, Status::Ok);
    assert!(
        result
            .summary
            .starts_with(&format!("connected to 127.0.0.1:{port} in")),
        "{result:?}"
    );

    let result = run(&format!(
        "tcp: {{ host: 127.0.0.1, port: {port}, expect: SSH-2.0 }}"
    ))
    .await;
    assert_status(&result, Status::Ok);
    assert!(result.summary.contains("SSH-2.0-mdd"), "{result:?}");

    let result = run(&format!(
        "tcp: {{ host: 127.0.0.1, port: {port}, send: \"PING\\n\", expect: PONG }}"
    ))
    .await;
    assert_status(&result, Status::Ok);

    let result = run(&format!(
        "tcp: {{ host: 127.0.0.1, port: {port}, expect: NOPE }}\ntimeout: 300ms"
    ))
    .await;
    assert_status(&result, Status::Critical);
    assert_eq!(result.summary, "timed out after 300ms");

    let result = run(&format!(
        "tcp: {{ host: 127.0.0.1, port: {} }}",
        free_port()
    ))
    .await;
    assert_status(&result, Status::Critical);
    assert!(result.summary.contains("connection refused"), "{result:?}");
}

#[tokio::test]
async fn dns_answers_expectations_and_failures() {
    let zone = dns::Zone::new()
        .a("api.ams1.example.", Ipv4Addr::new(10, 0, 0, 7))
        .a("api.ams1.example.", Ipv4Addr::new(10, 0, 0, 8))
        .mx("ams1.example.", 10, "mail.ams1.example.")
        .txt("ams1.example.", "v=spf1 -all");
    let server = dns::serve(zone).await;
    let at = format!("127.0.0.1:{}", server.port());

    let result = run(&format!(
        "dns: {{ name: api.ams1.example, server: '{at}', expect: [10.0.0.7] }}"
    ))
    .await;
    assert_status(&result, Status::Ok);
    assert!(
        result.summary.contains("10.0.0.7") && result.summary.contains("10.0.0.8"),
        "{result:?}"
    );

    let result = run(&format!(
        "dns: {{ name: api.ams1.example, server: '{at}', expect: [10.0.0.9] }}"
    ))
    .await;
    assert_status(&result, Status::Critical);
    assert!(result.summary.contains("but not 10.0.0.9"), "{result:?}");

    let result = run(&format!(
        "dns: {{ name: ams1.example, type: MX, server: '{at}', expect: ['10 mail.ams1.example'] }}"
    ))
    .await;
    assert_status(&result, Status::Ok);

    let result = run(&format!(
        "dns: {{ name: ams1.example, type: TXT, server: '{at}' }}"
    ))
    .await;
    assert_status(&result, Status::Ok);
    assert!(result.summary.contains("v=spf1"), "{result:?}");

    let result = run(&format!(
        "dns: {{ name: missing.ams1.example, server: '{at}' }}"
    ))
    .await;
    assert_status(&result, Status::Critical);

    let result = run(&format!(
        "dns: {{ name: ams1.example, type: AAAA, server: '{at}' }}"
    ))
    .await;
    assert_status(&result, Status::Critical);
}

#[tokio::test]
async fn dns_slow_answer_is_a_warning_and_silence_times_out() {
    let server = dns::serve(
        dns::Zone::new()
            .a("slow.example.", Ipv4Addr::LOCALHOST)
            .slow(Duration::from_millis(200)),
    )
    .await;
    let result = run(&format!(
        "dns: {{ name: slow.example, server: '127.0.0.1:{}', max_latency: 50ms }}",
        server.port()
    ))
    .await;
    assert_status(&result, Status::Warning);

    // A UDP port where nobody answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let result = run(&format!(
        "dns: {{ name: x.example, server: '127.0.0.1:{port}' }}\ntimeout: 300ms"
    ))
    .await;
    assert_status(&result, Status::Critical);
}

#[tokio::test]
async fn tls_certificate_expiry_and_trust() {
    let ca = TestCa::new("mdd test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write_pem(dir.path());
    let ca_opt = format!("ca: '{}'", ca_file.display());
    let cases = [
        (
            "valid",
            ca.issue("localhost", time::Duration::days(90)),
            ca_opt.clone(),
            Status::Ok,
            "valid for",
        ),
        (
            "expiring soon",
            ca.issue("localhost", time::Duration::days(3)),
            ca_opt.clone(),
            Status::Critical,
            "under 7 days",
        ),
        (
            "within warn_days",
            ca.issue("localhost", time::Duration::days(10)),
            ca_opt.clone(),
            Status::Warning,
            "under 14 days",
        ),
        (
            "expired",
            ca.issue("localhost", time::Duration::days(-3)),
            ca_opt.clone(),
            Status::Critical,
            "expired 3 days ago",
        ),
        (
            "wrong host",
            ca.issue("other.example", time::Duration::days(90)),
            ca_opt.clone(),
            Status::Critical,
            "not valid for the name localhost",
        ),
        (
            "untrusted",
            TestCa::new("rogue CA").issue("localhost", time::Duration::days(90)),
            ca_opt.clone(),
            Status::Critical,
            "untrusted authority",
        ),
        (
            "untrusted but insecure",
            TestCa::new("rogue CA").issue("localhost", time::Duration::days(90)),
            "insecure: true".into(),
            Status::Ok,
            "valid for",
        ),
    ];
    for (name, cert, extra, status, fragment) in cases {
        let server = serve_tls(Routes::new(), &cert).await;
        let result = run(&format!(
            "tls: {{ host: 127.0.0.1, server_name: localhost, port: {}, {extra} }}",
            server.port()
        ))
        .await;
        assert_eq!(result.status, status, "{name}: {result:#?}");
        assert!(result.summary.contains(fragment), "{name}: {result:#?}");
        if status != Status::Critical || name.starts_with("expir") {
            assert!(
                result.perfdata.iter().any(|p| p.label == "days_left"),
                "{name}: {result:#?}"
            );
        }
    }
}

/// Every kind of failure of the HTTP probe reads as an operator says it: the cause first and
/// once, where it happened, no URL twice and no library's chain of wrappers.
#[tokio::test]
async fn http_failures_say_the_cause_once() {
    let closed = free_port();
    let result = run(&format!(
        "http: {{ url: 'http://127.0.0.1:{closed}/health' }}"
    ))
    .await;
    assert_status(&result, Status::Critical);
    assert_eq!(
        result.summary,
        format!("connection refused (127.0.0.1:{closed})")
    );
    assert_eq!(
        result.long_output,
        format!("GET http://127.0.0.1:{closed}/health")
    );

    let server = serve(Routes::new().with("/down", Reply::status(503, "maintenance"))).await;
    let base = format!("http://127.0.0.1:{}", server.port());
    let result = run(&format!("http: {{ url: '{base}/down' }}")).await;
    assert_eq!(result.summary, "HTTP 503 Service Unavailable, want 2xx");
    let result = run(&format!(
        "http: {{ url: '{base}/down', status: [200, 204] }}"
    ))
    .await;
    assert_eq!(
        result.summary,
        "HTTP 503 Service Unavailable, want 200, 204"
    );

    let ca = TestCa::new("mdd test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write_pem(dir.path());
    for (cert, want) in [
        (
            ca.issue("localhost", time::Duration::days(-3)),
            "the server's certificate expired 3 days ago",
        ),
        (
            ca.issue("other.example", time::Duration::days(90)),
            "the server's certificate is not valid for this host name",
        ),
        (
            TestCa::new("rogue CA").issue("localhost", time::Duration::days(90)),
            "the server's certificate is not from a trusted CA (unknown issuer; give its CA)",
        ),
    ] {
        let tls = serve_tls(Routes::new(), &cert).await;
        let result = run(&format!(
            "http: {{ url: 'https://localhost:{}/', ca: '{}' }}",
            tls.port(),
            ca_file.display()
        ))
        .await;
        assert_status(&result, Status::Critical);
        assert_eq!(result.summary, format!("{want} (localhost:{})", tls.port()));
    }
}

/// The TCP and TLS probes' refusals, pinned.
#[tokio::test]
async fn tcp_and_tls_failures_say_the_cause_once() {
    let closed = free_port();
    let result = run(&format!("tcp: {{ host: 127.0.0.1, port: {closed} }}")).await;
    assert_eq!(
        result.summary,
        format!("cannot connect to 127.0.0.1:{closed}: connection refused")
    );
    let result = run(&format!("tls: {{ host: 127.0.0.1, port: {closed} }}")).await;
    assert_eq!(
        result.summary,
        format!("cannot connect to 127.0.0.1:{closed}: connection refused")
    );
}

/// The DNS probe's failures, pinned: no such name, no records of the type, an expected
/// answer missing.
#[tokio::test]
async fn dns_failures_say_the_cause_once() {
    let zone = dns::Zone::new()
        .a("api.ams1.example.", Ipv4Addr::new(10, 0, 0, 7))
        .mx("ams1.example.", 10, "mail.ams1.example.");
    let server = dns::serve(zone).await;
    let at = format!("127.0.0.1:{}", server.port());
    let summary = |yaml: String| async move { run(&yaml).await.summary };
    assert_eq!(
        summary(format!(
            "dns: {{ name: missing.ams1.example, server: '{at}' }}"
        ))
        .await,
        format!("A missing.ams1.example @{at}: no such name (NXDOMAIN)")
    );
    assert_eq!(
        summary(format!(
            "dns: {{ name: ams1.example, type: AAAA, server: '{at}' }}"
        ))
        .await,
        format!("AAAA ams1.example @{at}: no AAAA records")
    );
    assert_eq!(
        summary(format!(
            "dns: {{ name: api.ams1.example, server: '{at}', expect: [10.0.0.9] }}"
        ))
        .await,
        format!("A api.ams1.example @{at}: answered 10.0.0.7 but not 10.0.0.9")
    );
}
