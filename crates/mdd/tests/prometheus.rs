//! `/metrics` read by the real consumers: `promtool check metrics` (Debian's `prometheus`
//! package) on the text format, and a real Prometheus server scraping a real `mdd server`
//! (it asks for OpenMetrics) and answering the alert users write.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

mod common;
use common::{ADMIN, TestServer};

async fn scrape(server: &TestServer, accept: Option<&str>) -> (String, String) {
    let mut request = server
        .http
        .get(format!("{}/metrics", server.url))
        .bearer_auth(ADMIN);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("scrape");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (content_type, response.text().await.expect("text"))
}

/// A port nobody listens on right now, for a program that cannot be told to pick one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus' answer to an instant query (None while it is not up).
async fn try_query(http: &reqwest::Client, port: u16, expr: &str) -> Option<Vec<Value>> {
    let text = http
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/query?query={}",
            encode(expr)
        ))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let answer: Value = serde_json::from_str(&text).ok()?;
    answer["data"]["result"].as_array().cloned()
}

async fn query(http: &reqwest::Client, port: u16, expr: &str) -> Vec<Value> {
    try_query(http, port, expr)
        .await
        .expect("prometheus answers")
}

#[tokio::test]
async fn promtool_and_a_real_prometheus_read_the_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = "deployments:\n  - { name: dc1, settle: 1h }\n\
                checks:\n\
                \x20 - { name: db, ttl: 1h }\n\
                \x20 - { name: api, ttl: 1h }\n\
                \x20 - { name: far, ttl: 1h, subscriptions: [nobody] }\n";
    let (status, body) = server.apply(&[("spec.yaml", spec)]).await;
    assert_eq!(status, 200, "{body}");
    let post = |id: &str, check: &str, status: i64| {
        let body =
            json!({ "results": [{ "id": id, "check": check, "entity": "e1", "status": status }] });
        let server = &server;
        async move { assert_eq!(server.post("/api/v1/results", &body).await.0, 200) }
    };
    post("r1", "db", 0).await;
    post("r2", "api", 0).await;

    // The text format, by default, passes promtool without a word.
    let (content_type, text) = scrape(&server, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; ./scripts/test installs it)");
    let mut stdin = promtool.stdin.take().expect("stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("feed promtool");
    drop(stdin);
    let out = promtool.wait_with_output().await.expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
    for expected in [
        "# TYPE mdd_results_total counter",
        "# TYPE process_cpu_seconds_total counter",
        "process_resident_memory_bytes ",
        "process_start_time_seconds ",
        "process_open_fds ",
        "process_max_fds ",
        "mdd_build_info{version=",
        "mdd_check_state{check=\"far\",entity=\"\",state=\"pending\"} 1",
        "mdd_deployment_checks{deployment=\"dc1\"} 3",
        "mdd_deployment_checks_green{deployment=\"dc1\"} 2",
        "mdd_deployment_done{deployment=\"dc1\"} 0",
        "mdd_check_last_executed_timestamp_seconds{check=\"db\",entity=\"e1\"} ",
    ] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }
    assert!(!text.contains("# EOF"));
    let (content_type, openmetrics) =
        scrape(&server, Some("application/openmetrics-text; version=1.0.0")).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(openmetrics.ends_with("# EOF\n"));

    // A real Prometheus scrapes it every second.
    let port = free_port();
    let target = server.url.trim_start_matches("http://").to_string();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n\
             \x20 - job_name: mdd\n\
             \x20   authorization: {{ type: Bearer, credentials: {ADMIN} }}\n\
             \x20   static_configs: [ {{ targets: ['{target}'] }} ]\n"
        ),
    )
    .expect("write config");
    let _prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus (Debian package prometheus)");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut up = Vec::new();
    for _ in 0..300 {
        if let Some(answer) = try_query(&http, port, "up{job=\"mdd\"}").await {
            up = answer;
            if up.first().is_some_and(|r| r["value"][1] == "1") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up.first().is_some_and(|r| r["value"][1] == "1"),
        "never scraped: {up:?}"
    );

    // The alert users write fires from the first red, and the old state's series is 0, not gone.
    post("r3", "db", 2).await;
    let mut firing = Vec::new();
    for _ in 0..100 {
        firing = query(&http, port, "mdd_check_state{state!=\"passing\"} == 1").await;
        if firing.iter().any(|r| r["metric"]["check"] == "db") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let names: Vec<(&str, &str)> = firing
        .iter()
        .filter_map(|r| {
            Some((
                r["metric"]["check"].as_str()?,
                r["metric"]["state"].as_str()?,
            ))
        })
        .collect();
    assert!(names.contains(&("db", "failing")), "{firing:?}");
    assert!(names.contains(&("far", "pending")), "{firing:?}");
    assert!(
        !names.iter().any(|(check, _)| *check == "api"),
        "{firing:?}"
    );
    let was_passing = query(
        &http,
        port,
        "mdd_check_state{check=\"db\",state=\"passing\"}",
    )
    .await;
    assert_eq!(
        was_passing.first().map(|r| r["value"][1].clone()),
        Some(json!("0")),
        "{was_passing:?}"
    );
    let green = query(
        &http,
        port,
        "mdd_deployment_checks_green{deployment=\"dc1\"}",
    )
    .await;
    assert_eq!(
        green.first().map(|r| r["value"][1].clone()),
        Some(json!("1")),
        "{green:?}"
    );
    server.stop().await;
}
