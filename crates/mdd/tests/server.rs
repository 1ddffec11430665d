//! `mdd server` end to end: the built binary on loopback, real clients, real kills.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

mod common;
use common::{ADMIN, Receiver, TestServer, mdd_client, wait_for_events};

fn result(id: &str, check: &str, status: i64) -> Value {
    json!({ "id": id, "check": check, "entity": "e1", "status": status, "output": format!("{id} | v=1") })
}

const PUSH_SPEC: &str =
    "checks:\n  - { name: cron, owner: platform, ttl: 1h }\n  - { name: ci, ttl: 1h }\n";

#[tokio::test]
async fn apply_validates_and_reports_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "checks:\n  - { name: a, ttl: 1h }\n  - { name: b, ttl: 1h }\n",
    )
    .expect("write");
    let mdd = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
            .args(args)
            .env("MDD_SERVER", &server.url)
            .env("MDD_TOKEN", ADMIN)
            .output()
            .expect("mdd")
    };
    let path = spec.to_str().expect("utf-8");
    let out = mdd(&["apply", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("added  a") && text.contains("2 added, 0 changed, 0 removed"),
        "{text}"
    );

    std::fs::write(
        &spec,
        "checks:\n  - { name: a, ttl: 2h }\n  - { name: c, ttl: 1h }\n",
    )
    .expect("write");
    let out = mdd(&["apply", path, "--dry-run", "--prune"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 added, 1 changed, 1 removed") && text.contains("would be 2"),
        "{text}"
    );
    let (_, spec_now) = server.get("/api/v1/spec").await;
    assert_eq!(spec_now["revision"], 1, "a dry run changes nothing");

    // An invalid spec: every error with file and line, nothing changed, exit 2.
    std::fs::write(
        &spec,
        "checks:\n  - { name: a, ttl: soon }\n  - { name: a, bogus: 1, ttl: 1h }\n",
    )
    .expect("write");
    let out = mdd(&["apply", path]);
    assert_eq!(out.status.code(), Some(2));
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        errors.contains(&format!("{path}:2:")) && errors.contains("`soon` is not a duration"),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{path}:3:")) && errors.contains("unknown field `bogus`"),
        "{errors}"
    );
    let (_, after) = server.get("/api/v1/checks").await;
    assert_eq!(after["revision"], 1);
    assert_eq!(after["checks"].as_array().map(Vec::len), Some(2));

    let out = mdd(&["apply", path, "--token", "mdd_wrong"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.stop().await.success());
}

#[tokio::test]
async fn server_side_checks_become_events_with_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.yaml");
    let listener = mdd_testkit::tcp::serve("hello\r\n", &[]).await;
    std::fs::write(
        &spec,
        format!(
            "defaults: {{ interval: 500ms, timeout: 400ms }}
checks:
  - {{ name: up, owner: net, tcp: {{ host: 127.0.0.1, port: {} }} }}
  - {{ name: down, owner: net, tcp: {{ host: 127.0.0.1, port: {} }} }}
  - {{ name: behind, owner: app, depends_on: [down], command: [true] }}
  - {{ name: never, ttl: 1h }}
",
            listener.port(),
            mdd_testkit::free_port()
        ),
    )
    .expect("write");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--spec", spec.to_str().expect("utf-8")],
    )
    .await;
    let mut events = Value::Null;
    for _ in 0..100 {
        let (status, body) = server.get("/api/v1/events").await;
        assert_eq!(status, 200);
        events = body;
        if events["events"].as_array().is_some_and(|e| {
            e.iter()
                .filter(|e| e["occurrences"].as_u64() >= Some(2))
                .count()
                == 3
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = |check: &str| -> String {
        events["events"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["check"] == check))
            .map(|e| e["state"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(state("up"), "passing", "{events}");
    assert_eq!(state("down"), "failing", "{events}");
    assert_eq!(state("behind"), "blocked", "{events}");
    assert_eq!(state("never"), "pending", "{events}");

    let (_, failing) = server
        .get("/api/v1/events?state=failing,blocked&owner=app")
        .await;
    let names = column(&failing["events"], "check");
    assert_eq!(names, ["behind"]);

    let (_, event) = server.get("/api/v1/events/down/mdd-server").await;
    assert!(
        event["history"].as_array().is_some_and(|h| h.len() >= 2),
        "{event}"
    );
    let result_id = event["last_result_id"].as_str().expect("linked result");
    let (status, result) = server.get(&format!("/api/v1/results/{result_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        result["check"], "down",
        "every event links to the result that made it"
    );

    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "mdd_check_state{check=\"behind\",entity=\"mdd-server\",state=\"blocked\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("mdd_results_total{status=\"critical\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nprocess_resident_memory_bytes "),
        "{metrics}"
    );
    assert!(server.stop().await.success());
}

#[tokio::test]
async fn hostile_input_gets_clear_4xx_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    assert_eq!(server.apply(&[("push.yaml", PUSH_SPEC)]).await.0, 200);
    let post_raw = |body: Vec<u8>, token: Option<&'static str>| {
        let server = &server;
        async move {
            server
                .call(reqwest::Method::POST, "/api/v1/results", token, Some(body))
                .await
        }
    };
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "invalid results payload"),
        (br#"{"results": "many"}"#.to_vec(), 400, "invalid type"),
        (br#"{"results": [{"id": "a", "check": "cron", "status": "ok"}]}"#.to_vec(), 400, "invalid type"),
        (br#"{"results": [], "extra": 1}"#.to_vec(), 400, "unknown field"),
        (serde_json::to_vec(&json!({"results": [result("a", "nope", 0)]})).expect("json"), 400, "results[0].check: unknown check `nope`"),
        (serde_json::to_vec(&json!({"results": [result("a b", "cron", 0)]})).expect("json"), 400, "results[0].id"),
        (serde_json::to_vec(&json!({"results": [result("a", "cron", 300)]})).expect("json"), 400, "results[0].status"),
        (serde_json::to_vec(&json!({"results": [{"id": "a", "check": "cron", "status": 0, "output": "x".repeat(70_000)}]})).expect("json"), 400, "results[0].output"),
        (serde_json::to_vec(&json!({"results": [{"id": "a", "check": "cron", "status": 0, "executed_at": "yesterday"}]})).expect("json"), 400, "results[0].executed_at"),
        (format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), 400, "invalid results payload"),
        (format!("{{\"results\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), 400, "invalid results payload"),
        (serde_json::to_vec(&json!({"results": [{"id": "x".repeat(1_000_000), "check": "cron", "status": 0}]})).expect("json"), 400, "results[0].id"),
    ];
    for (body, status, fragment) in cases {
        let (got, answer) = post_raw(body, Some(ADMIN)).await;
        assert_eq!(got, status, "{fragment}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains(fragment)),
            "{fragment}: {answer}"
        );
    }
    // Too many results in one batch, and a body over the size cap.
    let many: Vec<Value> = (0..10_001)
        .map(|i| result(&format!("m{i}"), "cron", 0))
        .collect();
    let (got, answer) = post_raw(
        serde_json::to_vec(&json!({ "results": many })).expect("json"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(got, 413, "{answer}");
    let million: Vec<Value> = (0..1_000_000)
        .map(|i| json!({"id": format!("r{i}"), "check": "cron", "status": 0}))
        .collect();
    // The server answers 413 as soon as the body passes 16 MiB and closes the connection; a
    // client still sending the rest may see that as a broken pipe instead of the answer.
    // Either way nothing is stored and the server carries on.
    let sent = server
        .http
        .post(format!("{}/api/v1/results", server.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({ "results": million })).expect("json"))
        .send()
        .await;
    match sent {
        Ok(response) => assert_eq!(response.status().as_u16(), 413),
        Err(e) => assert!(e.is_request(), "only the upload may break off: {e}"),
    }
    // Without a token, or with one that may only read.
    let ok = serde_json::to_vec(&json!({"results": [result("fine", "cron", 0)]})).expect("json");
    assert_eq!(post_raw(ok.clone(), None).await.0, 401);
    assert_eq!(post_raw(ok.clone(), Some("mdd_nonsense")).await.0, 401);
    let (_, reader) = server
        .post(
            "/api/v1/tokens",
            &json!({"role": "read", "name": "dashboard"}),
        )
        .await;
    let reader: &'static str = Box::leak(
        reader["token"]
            .as_str()
            .expect("token")
            .to_string()
            .into_boxed_str(),
    );
    assert_eq!(post_raw(ok.clone(), Some(reader)).await.0, 403);
    assert_eq!(
        server
            .call(reqwest::Method::GET, "/api/v1/events", Some(reader), None)
            .await
            .0,
        200
    );

    // Nothing of the rejected requests was stored; the server still works.
    let (status, answer) = post_raw(ok, Some(ADMIN)).await;
    assert_eq!(
        (status, answer["stored"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    let (_, results) = server
        .get("/api/v1/checks/cron/results?from=1970-01-01T00:00:00Z")
        .await;
    assert_eq!(
        results["results"].as_array().map(Vec::len),
        Some(1),
        "{results}"
    );
    assert_eq!(server.get("/healthz").await.0, 200);
    assert!(server.stop().await.success());
}

#[tokio::test]
async fn replays_are_stored_once_and_events_follow_sensu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    server.apply(&[("push.yaml", PUSH_SPEC)]).await;
    let batch = json!({ "results": [result("r1", "cron", 0), result("r2", "cron", 2), result("r2", "cron", 2), result("r3", "cron", 2)] });
    let (_, first) = server.post("/api/v1/results", &batch).await;
    assert_eq!(
        (first["stored"].as_u64(), first["duplicates"].as_u64()),
        (Some(3), Some(1)),
        "{first}"
    );
    let (_, replay) = server.post("/api/v1/results", &batch).await;
    assert_eq!(
        (replay["stored"].as_u64(), replay["duplicates"].as_u64()),
        (Some(0), Some(4)),
        "{replay}"
    );
    let (_, event) = server.get("/api/v1/events/cron/e1").await;
    assert_eq!(event["status"], "critical");
    assert_eq!(event["occurrences"], 2, "{event}");
    assert_eq!(
        event["history"].as_array().map(Vec::len),
        Some(3),
        "a replay adds no history: {event}"
    );
    assert_eq!(event["last_result_id"], "r3");
    assert!(server.stop().await.success());
}

/// Several clients post in a loop; the server is killed with SIGKILL mid-stream. After a
/// restart, every result that got a 2xx is there, exactly once.
#[tokio::test]
async fn kill_9_loses_no_acknowledged_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &[]).await;
    server.apply(&[("push.yaml", PUSH_SPEC)]).await;
    let url = server.url.clone();
    let mut clients = Vec::new();
    for client in 0..6 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acked: Vec<String> = Vec::new();
            for round in 0..10_000 {
                let ids: Vec<String> = (0..20).map(|i| format!("c{client}-{round}-{i}")).collect();
                let body = json!({ "results": ids.iter().map(|id| result(id, "ci", 0)).collect::<Vec<_>>() });
                let sent = http
                    .post(format!("{url}/api/v1/results"))
                    .bearer_auth(ADMIN)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).expect("json"))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => acked.extend(ids),
                    _ => break, // the server is gone
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9().await;
    let mut acked = Vec::new();
    for client in clients {
        acked.extend(client.await.expect("client"));
    }
    assert!(acked.len() > 100, "the clients got going: {}", acked.len());

    let server = TestServer::start(&data, &[]).await;
    let (_, stored) = server
        .get("/api/v1/checks/ci/results?from=1970-01-01T00:00:00Z&limit=10000")
        .await;
    // The limit caps one page; count through the store's own total for the exact figure.
    let mut stored_ids: std::collections::HashSet<String> =
        column(&stored["results"], "id").into_iter().collect();
    let mut missing = Vec::new();
    for id in &acked {
        if !stored_ids.contains(id) {
            let (status, _) = server.get(&format!("/api/v1/results/{id}")).await;
            if status == 200 {
                stored_ids.insert(id.clone());
            } else {
                missing.push(id.clone());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged results lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(server.stop().await.success());
}

/// Runs the server in its own mount namespace on a tiny tmpfs, so a full disk is real but
/// touches nothing outside the test.
fn in_small_tmpfs(dir: &Path, size: &str) -> Vec<String> {
    vec![
        "unshare".into(),
        "-rm".into(),
        "sh".into(),
        "-c".into(),
        format!(
            "mount -t tmpfs -o size={size} tmpfs {} && exec \"$@\"",
            dir.display()
        ),
        "sh".into(),
    ]
}

#[tokio::test]
async fn a_full_disk_is_reported_and_nothing_unstored_is_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mount: PathBuf = dir.path().join("small");
    std::fs::create_dir(&mount).expect("mkdir");
    let wrapper = in_small_tmpfs(&mount, "2m");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let server = TestServer::start_wrapped(&wrapper, &mount.join("data"), &[])
        .await
        .expect("server starts in a private tmpfs (needs unshare from util-linux)");
    server.apply(&[("push.yaml", PUSH_SPEC)]).await;
    let mut acked = Vec::new();
    let mut refusal = None;
    for round in 0..1_000 {
        let ids: Vec<String> = (0..10).map(|i| format!("big-{round}-{i}")).collect();
        let body = json!({ "results": ids.iter().map(|id| json!({"id": id, "check": "ci", "status": 0, "output": "y".repeat(60_000)})).collect::<Vec<_>>() });
        let (status, answer) = server.post("/api/v1/results", &body).await;
        if status == 200 {
            acked.extend(ids);
        } else {
            refusal = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refusal.expect("a 2 MiB disk fills up");
    assert_eq!(status, 507, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains("full")),
        "{answer}"
    );
    // Reads still work, and everything acknowledged is there.
    assert_eq!(server.get("/healthz").await.0, 200);
    for id in &acked {
        assert_eq!(
            server.get(&format!("/api/v1/results/{id}")).await.0,
            200,
            "{id} was acknowledged"
        );
    }
    server.kill9().await;
}

#[tokio::test]
async fn a_read_only_data_directory_is_refused_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start_on_sqlite(&data, &[]).await;
    assert!(server.stop().await.success());
    let wrapper = [
        "unshare",
        "-rm",
        "sh",
        "-c",
        "mount --bind \"$0\" \"$0\" && mount -o remount,ro,bind \"$0\" && exec \"$@\"",
    ];
    let mut wrapper: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
    wrapper.push(data.display().to_string());
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let said = match TestServer::start_wrapped(&wrapper, &data, &[]).await {
        Ok(server) => {
            server.kill9().await;
            panic!("a server on a read-only data directory must not start");
        }
        Err(said) => said,
    };
    assert!(
        said.to_lowercase().contains("read-only") || said.contains("readonly"),
        "{said}"
    );
}

/// Events are checkpointed once a second; a crash right after results were acknowledged must
/// still give the events those results made (replayed from the stored results at start).
#[tokio::test]
async fn events_are_rebuilt_after_a_crash_between_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // No checkpoint after the first (at start) until long after the kill: the events must come
    // from replaying results.
    let server = TestServer::start(&data, &["--event-checkpoint-interval", "1h"]).await;
    server.apply(&[("push.yaml", PUSH_SPEC)]).await;
    let batch = json!({ "results": (1..=5).map(|i| result(&format!("k{i}"), "cron", 2)).collect::<Vec<_>>() });
    let (status, _) = server.post("/api/v1/results", &batch).await;
    assert_eq!(status, 200);
    let (_, before) = server.get("/api/v1/events/cron/e1").await;
    server.kill9().await;

    let server = TestServer::start(&data, &[]).await;
    let (_, after) = server.get("/api/v1/events/cron/e1").await;
    for field in [
        "occurrences",
        "occurrences_watermark",
        "history",
        "last_result_id",
        "status",
        "first_seen",
    ] {
        assert_eq!(after[field], before[field], "{field}: {after}");
    }
    assert_eq!(after["occurrences"], 5);
    assert!(server.stop().await.success());
}

#[tokio::test]
async fn client_commands_public_read_and_sighup_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "checks:\n  - { name: cron, owner: platform, ttl: 1h }\n",
    )
    .expect("write");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--public-read", "--spec", spec.to_str().expect("utf-8")],
    )
    .await;
    let mdd = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mdd"));
        command
            .args(args)
            .env("MDD_SERVER", &server.url)
            .env_remove("MDD_TOKEN");
        if let Some(token) = token {
            command.env("MDD_TOKEN", token);
        }
        command.output().expect("mdd")
    };

    // Reads need no token under --public-read; writes still do.
    let out = mdd(&["status"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a pending check is not green: {table}"
    );
    assert!(
        table.contains("… pending") && table.contains("cron"),
        "{table}"
    );
    let args = [
        "result",
        "--check",
        "cron",
        "--status",
        "0",
        "--output",
        "backup ok | bytes=10B",
        "--entity",
        "db1",
        "--id",
        "run-1",
    ];
    let out = mdd(&args, None);
    assert_ne!(
        out.status.code(),
        Some(0),
        "writing without a token must fail"
    );

    let out = mdd(
        &["token", "create", "--role", "agent", "--name", "cron jobs"],
        Some(ADMIN),
    );
    let agent = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(agent.starts_with("mdd_"), "{agent}");
    let out = mdd(&args, Some(&agent));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("stored result run-1"));
    let out = mdd(&args, Some(&agent));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("already had result run-1"),
        "replays are harmless"
    );
    let out = mdd(&["apply", spec.to_str().expect("utf-8")], Some(&agent));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "an agent token cannot apply specs"
    );

    let out = mdd(&["status", "--state", "passing"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(
        table.contains("✓ passing") && table.contains("db1") && table.contains("backup ok"),
        "{table}"
    );

    // SIGHUP re-reads the spec file: a new check appears; an invalid file changes nothing.
    std::fs::write(
        &spec,
        "checks:\n  - { name: cron, owner: platform, ttl: 1h }\n  - { name: ci, ttl: 1h }\n",
    )
    .expect("write");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let mut names = Vec::new();
    for _ in 0..50 {
        let (_, checks) = server.get("/api/v1/checks").await;
        names = column(&checks["checks"], "name");
        if names.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names, ["cron", "ci"]);
    std::fs::write(&spec, "checks:\n  - { name: cron, ttl: never }\n").expect("write");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, checks) = server.get("/api/v1/checks").await;
    assert_eq!(
        checks["checks"].as_array().map(Vec::len),
        Some(2),
        "an invalid reload changes nothing"
    );
    assert!(server.stop().await.success());
}

#[tokio::test]
async fn pruned_checks_leave_the_events_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    server.apply(&[("push.yaml", PUSH_SPEC)]).await;
    let batch = json!({ "results": [result("p1", "cron", 0), result("p2", "ci", 0)] });
    assert_eq!(server.post("/api/v1/results", &batch).await.0, 200);
    let (_, applied) = server
        .post(
            "/api/v1/spec",
            &json!({ "files": [{ "file": "push.yaml", "text": "checks:\n  - { name: ci, ttl: 1h }\n" }], "prune": true }),
        )
        .await;
    assert_eq!(applied["removed"], json!(["cron"]), "{applied}");
    let (_, events) = server.get("/api/v1/events").await;
    let names = column(&events["events"], "check");
    assert_eq!(names, ["ci"]);
    let (status, _) = server.get("/api/v1/events/cron/e1").await;
    assert_eq!(status, 200, "its history can still be read");
    assert!(server.stop().await.success());
}

/// Agents long-poll for their checks: they see only their subscriptions' checks, and an apply
/// wakes exactly the agents whose checks it changed.
#[tokio::test]
async fn agents_long_poll_for_the_checks_of_their_subscriptions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = |disk_warn: u32, ldap_port: u32| {
        format!(
            "checks:
  - {{ name: disk, subscriptions: [docker-hosts], command: check_disk -w {disk_warn}% -p / }}
  - {{ name: ldap, subscriptions: [ldap-hosts], tcp: {{ host: ldap.example, port: {ldap_port} }} }}
  - {{ name: central, command: [true] }}
"
        )
    };
    assert_eq!(server.apply(&[("dc.yaml", &spec(20, 636))]).await.0, 200);
    let (_, agent) = server
        .post("/api/v1/tokens", &json!({"role": "agent"}))
        .await;
    let agent = agent["token"].as_str().expect("token").to_string();
    let poll = |after: Option<String>, wait: &str| {
        let url = format!(
            "{}/api/v1/agent/checks?subscriptions=docker-hosts,web&wait={wait}{}",
            server.url,
            after.map(|v| format!("&after={v}")).unwrap_or_default()
        );
        let token = agent.clone();
        let http = server.http.clone();
        async move {
            let response = http.get(url).bearer_auth(token).send().await.expect("poll");
            assert_eq!(response.status().as_u16(), 200);
            serde_json::from_slice::<Value>(&response.bytes().await.expect("body")).expect("json")
        }
    };
    let first = poll(None, "0s").await;
    let names = column(&first["checks"], "name");
    assert_eq!(
        names,
        ["disk"],
        "only the checks of its subscriptions: {first}"
    );
    assert_eq!(first["checks"][0]["probe"]["command"]["argv"][2], "20%");
    let version = first["version"].as_str().expect("version").to_string();

    // An apply that changes only another subscription's check does not wake this agent.
    let waiting = tokio::spawn(poll(Some(version.clone()), "20s"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.apply(&[("dc.yaml", &spec(20, 389))]).await.0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "woken by a change that is not its own"
    );
    // One that changes its check answers the waiting poll with the new definition.
    assert_eq!(server.apply(&[("dc.yaml", &spec(15, 389))]).await.0, 200);
    let changed = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the apply reaches the waiting agent")
        .expect("poll task");
    assert_ne!(changed["version"], json!(version));
    assert_eq!(changed["checks"][0]["probe"]["command"]["argv"][2], "15%");

    // Nothing changes: the poll ends after its wait, saying so.
    let unchanged = poll(changed["version"].as_str().map(str::to_string), "300ms").await;
    assert_eq!(unchanged["unchanged"], true, "{unchanged}");

    // A read token cannot pose as an agent.
    let (_, reader) = server
        .post("/api/v1/tokens", &json!({"role": "read"}))
        .await;
    let status = server
        .call(
            reqwest::Method::GET,
            "/api/v1/agent/checks?subscriptions=docker-hosts",
            reader["token"].as_str(),
            None,
        )
        .await
        .0;
    assert_eq!(status, 403);
    // A long-poll does not hold up a graceful stop.
    let _pending = tokio::spawn(poll(
        unchanged["version"].as_str().map(str::to_string),
        "60s",
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.stop().await.success());
}

struct TestAgent {
    child: Child,
}

impl TestAgent {
    fn start(
        server_url: &str,
        token: &str,
        name: &str,
        subscriptions: &str,
        data: &Path,
    ) -> TestAgent {
        TestAgent::start_with(server_url, token, name, subscriptions, data, &[])
    }

    fn start_with(
        server_url: &str,
        token: &str,
        name: &str,
        subscriptions: &str,
        data: &Path,
        extra: &[&str],
    ) -> TestAgent {
        let child = Command::new(env!("CARGO_BIN_EXE_mdd"))
            .args([
                "agent", "--server", server_url, "--token", token, "--name", name,
            ])
            .args(["--subscriptions", subscriptions, "--data"])
            .arg(data)
            .args(extra)
            .env("MDD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mdd agent");
        TestAgent { child }
    }

    async fn kill9(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn agent_token(server: &TestServer) -> String {
    let (_, agent) = server
        .post("/api/v1/tokens", &json!({"role": "agent"}))
        .await;
    agent["token"].as_str().expect("token").to_string()
}

fn pairs(events: &[Value]) -> std::collections::BTreeSet<(String, String)> {
    events
        .iter()
        .filter(|e| !e["entity"].is_null() && e["check"] != "keepalive")
        .map(|e| {
            (
                e["check"].as_str().unwrap_or_default().to_string(),
                e["entity"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Agents run exactly the checks of their subscriptions, events appear per (check, entity), and
/// an apply adds and removes checks on running agents.
#[tokio::test]
async fn agents_run_exactly_their_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = "defaults: { interval: 250ms, timeout: 1s }
checks:
  - { name: web-only, subscriptions: [web], command: [echo, 'OK - web'] }
  - { name: db-only, subscriptions: [db], command: [echo, 'OK - db'] }
  - { name: everywhere, subscriptions: [web, db, cache], command: [echo, 'OK - all'] }
";
    assert_eq!(server.apply(&[("dc.yaml", spec)]).await.0, 200);
    let token = agent_token(&server).await;
    let _a1 = TestAgent::start(&server.url, &token, "web1", "web", &dir.path().join("a1"));
    let _a2 = TestAgent::start(&server.url, &token, "db1", "db", &dir.path().join("a2"));
    let _a3 = TestAgent::start(
        &server.url,
        &token,
        "cache1",
        "cache,other",
        &dir.path().join("a3"),
    );
    let expected: std::collections::BTreeSet<(String, String)> = [
        ("web-only", "web1"),
        ("everywhere", "web1"),
        ("db-only", "db1"),
        ("everywhere", "db1"),
        ("everywhere", "cache1"),
    ]
    .iter()
    .map(|(c, e)| (c.to_string(), e.to_string()))
    .collect();
    let events = wait_for_events(&server, |events| pairs(events) == expected).await;
    assert!(events.iter().all(|e| e["state"] == "passing"), "{events:?}");

    // Remove web-only, add cache-only: the running agents follow without a restart.
    let spec = "defaults: { interval: 250ms, timeout: 1s }
checks:
  - { name: db-only, subscriptions: [db], command: [echo, 'OK - db'] }
  - { name: everywhere, subscriptions: [web, db, cache], command: [echo, 'OK - all'] }
  - { name: cache-only, subscriptions: [cache], command: [echo, 'OK - cache'] }
";
    let (_, applied) = server
        .post(
            "/api/v1/spec",
            &json!({ "files": [{ "file": "dc.yaml", "text": spec }], "prune": true }),
        )
        .await;
    assert_eq!(applied["removed"], json!(["web-only"]), "{applied}");
    wait_for_events(&server, |events| {
        pairs(events).contains(&("cache-only".into(), "cache1".into()))
    })
    .await;
    // web1 stopped running web-only: its results stop coming.
    let (_, before) = server
        .get("/api/v1/checks/web-only/results?from=1970-01-01T00:00:00Z&limit=10000")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, after) = server
        .get("/api/v1/checks/web-only/results?from=1970-01-01T00:00:00Z&limit=10000")
        .await;
    assert_eq!(
        before["results"].as_array().map(Vec::len),
        after["results"].as_array().map(Vec::len),
        "a removed check stops on the agents"
    );
    assert!(server.stop().await.success());
}

/// The server goes away for a while: every result the agent made meanwhile arrives once it is
/// back, none twice, in order; the same after the agent itself is killed mid-spool.
#[tokio::test]
async fn results_made_while_the_server_is_away_arrive_when_it_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = mdd_testkit::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let server = TestServer::start(&data, &["--listen", &listen]).await;
    let spec = "defaults: { interval: 250ms, timeout: 1s }
checks:
  - { name: tick, subscriptions: [all], command: [echo, 'OK - tick'] }
";
    server.apply(&[("dc.yaml", spec)]).await;
    let token = agent_token(&server).await;
    let agent_data = dir.path().join("agent");
    let agent = TestAgent::start(&server.url, &token, "host1", "all", &agent_data);
    wait_for_events(&server, |events| {
        pairs(events).contains(&("tick".into(), "host1".into()))
    })
    .await;

    // The server goes away; the agent keeps running the check and spools the results.
    assert!(server.stop().await.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The agent is killed with SIGKILL while it holds a spool, and started again while the
    // server is still away: it runs its checks from the set it kept on disk.
    agent.kill9().await;
    let first_spool = spooled_ids(&agent_data);
    assert!(
        first_spool.len() >= 4,
        "about 8 results were made in 2 s: {}",
        first_spool.len()
    );
    let url = format!("http://{listen}");
    let agent = TestAgent::start(&url, &token, "host1", "all", &agent_data);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second_spool = spooled_ids(&agent_data);
    assert!(
        second_spool.len() > first_spool.len(),
        "the restarted agent runs its checks without the server: {} then {}",
        first_spool.len(),
        second_spool.len()
    );
    let server = TestServer::start(&data, &["--listen", &listen]).await;

    // Every spooled result arrives once the server is back.
    let mut missing = second_spool.clone();
    for _ in 0..100 {
        let mut still = Vec::new();
        for id in &missing {
            if server.get(&format!("/api/v1/results/{id}")).await.0 != 200 {
                still.push(id.clone());
            }
        }
        missing = still;
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        missing.is_empty(),
        "{} spooled results never arrived: {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    // The spool drains: nothing made during the outage is left in it (every result passes
    // through the spool, so what is there now is at most the last second's), and each result
    // counts once in the event.
    let mut left = Vec::new();
    for _ in 0..50 {
        let now: std::collections::HashSet<String> = spooled_ids(&agent_data).into_iter().collect();
        left = second_spool
            .iter()
            .filter(|id| now.contains(*id))
            .cloned()
            .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "the spool drained: {} left", left.len());
    // Counted with the agent gone: while it runs, a batch can land between the two reads.
    agent.kill9().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, results) = server
        .get("/api/v1/checks/tick/results?from=1970-01-01T00:00:00Z&limit=10000")
        .await;
    let stored = results["results"].as_array().map_or(0, Vec::len);
    let (_, event) = server.get("/api/v1/events/tick/host1").await;
    let occurrences = event["occurrences"].as_u64().unwrap_or(0) as usize;
    assert!(
        occurrences <= stored && occurrences + 2 >= stored,
        "each result applied once: {occurrences} of {stored}"
    );
    assert!(server.stop().await.success());
}

/// The ids of the results waiting in an agent's spool.
fn spooled_ids(agent_data: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(agent_data.join("spool")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

/// Kill an agent: its keepalive event goes critical within the timeout (plus the watchdog's
/// quarter second), and resolves when it returns. A `--deregister` agent is removed instead.
#[tokio::test]
async fn keepalives_raise_and_resolve_and_deregister() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let token = agent_token(&server).await;
    let timeouts = [
        "--keepalive",
        "250ms",
        "--keepalive-warning",
        "1s",
        "--keepalive-critical",
        "2s",
        "--labels",
        "rack=r1",
    ];
    let agent = TestAgent::start_with(
        &server.url,
        &token,
        "host1",
        "all",
        &dir.path().join("a1"),
        &timeouts,
    );
    let mut ephemeral_args = timeouts.to_vec();
    ephemeral_args.push("--deregister");
    let ephemeral = TestAgent::start_with(
        &server.url,
        &token,
        "spot1",
        "all",
        &dir.path().join("a2"),
        &ephemeral_args,
    );
    let keepalive_state = |events: &[Value], entity: &str| -> Option<String> {
        events
            .iter()
            .find(|e| e["check"] == "keepalive" && e["entity"] == entity)
            .map(|e| e["state"].as_str().unwrap_or_default().to_string())
    };
    wait_for_events(&server, |events| {
        keepalive_state(events, "host1").as_deref() == Some("passing")
            && keepalive_state(events, "spot1").as_deref() == Some("passing")
    })
    .await;
    let (_, entities) = server.get("/api/v1/entities").await;
    let host1 = entities["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .find(|e| e["name"] == "host1")
        .expect("host1")
        .clone();
    assert_eq!(host1["agent"]["labels"]["rack"], "r1", "{host1}");
    assert_eq!(host1["agent"]["facts"]["os"], "linux", "{host1}");
    assert_eq!(host1["agent"]["facts"]["spool_dropped"], 0, "{host1}");
    assert!(
        host1["agent"]["facts"]["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|ip| ip == "127.0.0.1")),
        "{host1}"
    );

    let killed_at = std::time::Instant::now();
    agent.kill9().await;
    ephemeral.kill9().await;
    let events = wait_for_events(&server, |events| {
        keepalive_state(events, "host1").as_deref() == Some("failing")
    })
    .await;
    let took = killed_at.elapsed();
    // Generous against a busy machine: the timeout, the watchdog tick, a poll, a second.
    assert!(
        took < Duration::from_millis(2_000 + 250 + 100 + 1_000),
        "critical after {took:?}"
    );
    let events = if keepalive_state(&events, "spot1").is_some() {
        wait_for_events(&server, |events| keepalive_state(events, "spot1").is_none()).await
    } else {
        events
    };
    assert!(
        keepalive_state(&events, "spot1").is_none(),
        "the deregistered agent is gone"
    );
    let (_, entities) = server.get("/api/v1/entities").await;
    assert!(
        entities["entities"]
            .as_array()
            .expect("entities")
            .iter()
            .all(|e| e["name"] != "spot1")
    );
    let (_, event) = server.get("/api/v1/events/keepalive/host1").await;
    let statuses = column(&event["history"], "status");
    assert_eq!(statuses, ["ok", "warning", "critical"], "{event}");

    let _back = TestAgent::start_with(
        &server.url,
        &token,
        "host1",
        "all",
        &dir.path().join("a1"),
        &timeouts,
    );
    wait_for_events(&server, |events| {
        keepalive_state(events, "host1").as_deref() == Some("passing")
    })
    .await;
    assert!(server.stop().await.success());
}

/// An agent token bound to an entity reports only for it and its checks' proxy entities.
#[tokio::test]
async fn bound_agent_tokens_report_only_for_their_entity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = "checks:
  - { name: disk, subscriptions: [web], ttl: 1h }
  - { name: ldap, subscriptions: [web], entity: ldap.ams1, ttl: 1h }
";
    assert_eq!(server.apply(&[("dc.yaml", spec)]).await.0, 200);
    let (status, answer) = server
        .post(
            "/api/v1/tokens",
            &json!({"role": "agent", "entity": "web1"}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let token = answer["token"].as_str().expect("token").to_string();
    assert_eq!(
        server
            .post("/api/v1/tokens", &json!({"role": "read", "entity": "web1"}))
            .await
            .0,
        400,
        "only agent tokens are bound"
    );
    let post = |body: Value, path: &'static str| {
        let server = &server;
        let token = token.clone();
        async move {
            server
                .call(
                    reqwest::Method::POST,
                    path,
                    Some(&token),
                    Some(serde_json::to_vec(&body).expect("json")),
                )
                .await
        }
    };
    let one = |id: &str, check: &str, entity: &str| json!({"results": [{"id": id, "check": check, "entity": entity, "status": 0}]});
    assert_eq!(
        post(one("b1", "disk", "web1"), "/api/v1/results").await.0,
        200,
        "its own entity"
    );
    assert_eq!(
        post(one("b2", "ldap", "ldap.ams1"), "/api/v1/results")
            .await
            .0,
        200,
        "its check's proxy entity"
    );
    let (status, answer) = post(one("b3", "disk", "web2"), "/api/v1/results").await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("results[0].entity")),
        "{answer}"
    );
    assert_eq!(
        post(one("b4", "disk", "ldap.ams1"), "/api/v1/results")
            .await
            .0,
        403,
        "a proxy entity of another check"
    );
    let keepalive = |entity: &str| json!({"entity": entity, "interval_s": 20, "warning_s": 120, "critical_s": 180});
    assert_eq!(
        post(keepalive("web1"), "/api/v1/agent/keepalive").await.0,
        200
    );
    assert_eq!(
        post(keepalive("web2"), "/api/v1/agent/keepalive").await.0,
        403
    );
    assert_eq!(
        server.get("/api/v1/results/b3").await.0,
        404,
        "nothing of a refused request is stored"
    );
    assert!(server.stop().await.success());
}

/// The string `field` of every element of a JSON array (e.g. the check names of a list).
fn column(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {list}"))
        .iter()
        .map(|item| item[field].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every setting can come from a YAML file (relative paths against the file); flags override
/// it; a broken file is refused naming the file and the field.
#[tokio::test]
async fn an_agent_takes_its_settings_from_a_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = "checks:
  - { name: configured, subscriptions: [from-file], interval: 250ms, command: [echo, 'OK - configured'] }
";
    assert_eq!(server.apply(&[("dc.yaml", spec)]).await.0, 200);
    let token = agent_token(&server).await;
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).expect("mkdir");
    std::fs::write(etc.join("agent.token"), format!("{token}\n")).expect("write token");
    std::fs::write(
        etc.join("agent.yaml"),
        format!(
            "server: {}
token_file: agent.token
name: from-file
subscriptions: [from-file]
labels: {{ datacenter: ams1, rack: r7 }}
data: spool-dir
keepalive: 1s
",
            server.url
        ),
    )
    .expect("write config");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_mdd"))
        .arg("agent")
        .arg("--config")
        .arg(etc.join("agent.yaml"))
        .args(["--labels", "datacenter=fra1"])
        .current_dir(dir.path())
        .env_remove("MDD_SERVER")
        .env_remove("MDD_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mdd agent");
    wait_for_events(&server, |events| {
        pairs(events).contains(&("configured".into(), "from-file".into()))
    })
    .await;
    let (_, entities) = server.get("/api/v1/entities").await;
    let entity = entities["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .find(|e| e["name"] == "from-file")
        .expect("the agent registered under its configured name")
        .clone();
    // The flag replaced the file's labels as a whole.
    assert_eq!(
        entity["agent"]["labels"],
        json!({"datacenter": "fra1"}),
        "{entity}"
    );
    assert!(
        etc.join("spool-dir").is_dir(),
        "`data:` is relative to the config file"
    );
    let _ = agent.kill().await;

    for (text, expected) in [
        (
            "server: http://127.0.0.1:1\nsubscription: [a]\n",
            "subscription",
        ),
        (
            "server: http://127.0.0.1:1\nspool_limit_mib: lots\n",
            "spool_limit_mib",
        ),
        (
            "server: http://127.0.0.1:1\ntoken: t\nkeepalive: often\n",
            "keepalive",
        ),
        (
            "server: http://127.0.0.1:1\ntoken_file: missing.token\n",
            "missing.token",
        ),
    ] {
        let bad = etc.join("bad.yaml");
        std::fs::write(&bad, text).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_mdd"))
            .arg("agent")
            .arg("--config")
            .arg(&bad)
            .env_remove("MDD_SERVER")
            .env_remove("MDD_TOKEN")
            .output()
            .await
            .expect("run mdd agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains("bad.yaml") && stderr.contains(expected),
            "{text}: {stderr}"
        );
    }
    assert!(server.stop().await.success());
}

/// Behind TLS, the agent trusts the CA it is given and nothing else: an agent given another
/// CA never gets through, and says why.
#[tokio::test]
async fn agents_trust_only_the_ca_they_are_given() {
    use mdd_testkit::certs::TestCa;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let token = agent_token(&server).await;
    let upstream: std::net::SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    let ca = TestCa::new("mdd test CA");
    let other_ca = TestCa::new("someone else's CA");
    let proxy =
        mdd_testkit::tls_proxy::serve(&ca.issue("localhost", ::time::Duration::days(30)), upstream)
            .await;
    let https = format!("https://localhost:{}", proxy.port());
    for folder in ["good", "bad"] {
        std::fs::create_dir(dir.path().join(folder)).expect("mkdir");
    }
    let good_ca = ca.write_pem(&dir.path().join("good"));
    let bad_ca = other_ca.write_pem(&dir.path().join("bad"));

    let _trusting = TestAgent::start_with(
        &https,
        &token,
        "tls-good",
        "none",
        &dir.path().join("a1"),
        &[
            "--ca",
            good_ca.to_str().expect("utf-8"),
            "--keepalive",
            "1s",
        ],
    );
    let mut refusing = Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args(["agent", "--server", &https, "--token", &token])
        .args(["--name", "tls-bad", "--keepalive", "1s", "--ca"])
        .arg(&bad_ca)
        .arg("--data")
        .arg(dir.path().join("a2"))
        .env("MDD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mdd agent");

    let names = || async {
        let (_, entities) = server.get("/api/v1/entities").await;
        column(&entities["entities"], "name")
    };
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = names().await;
        if seen.iter().any(|n| n == "tls-good") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.iter().any(|n| n == "tls-good"), "{seen:?}");
    // Give the refusing agent the same time and more: it never gets through.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!names().await.iter().any(|n| n == "tls-bad"));
    let _ = refusing.kill().await;
    let mut said = String::new();
    if let Some(mut stderr) = refusing.stderr.take() {
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut said).await;
    }
    assert!(
        said.contains("certificate") || said.contains("UnknownIssuer"),
        "the refusal says why: {said}"
    );
    assert!(server.stop().await.success());
}

/// A datacenter comes up one integration point after the other: `deploy watch` ends 0 once the
/// last has settled, each check's time to green is recorded in the order they came up, and a
/// failure after done is a regression until it is resolved.
#[tokio::test]
async fn deploy_watch_waits_for_a_datacenter_to_turn_green() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dns_port, web_port) = (mdd_testkit::free_port(), mdd_testkit::free_port());
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "defaults: {{ interval: 200ms, timeout: 500ms }}
deployments:
  - {{ name: ams1, description: Amsterdam 1, selector: {{ dc: ams1 }}, settle: 2s }}
checks:
  - {{ name: ams1-dns, owner: team-dns, labels: {{ dc: ams1 }}, tcp: {{ host: 127.0.0.1, port: {dns_port} }} }}
  - {{ name: ams1-web, owner: team-web, labels: {{ dc: ams1 }}, depends_on: [ams1-dns],
      http: {{ url: 'http://127.0.0.1:{web_port}/' }} }}
  - {{ name: fra1-dns, owner: team-dns, labels: {{ dc: fra1 }}, tcp: {{ host: 127.0.0.1, port: {} }} }}
",
            mdd_testkit::free_port()
        ),
    )
    .expect("write spec");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--spec", spec.to_str().expect("utf-8")],
    )
    .await;
    let watch = Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args([
            "deploy",
            "watch",
            "ams1",
            "--timeout",
            "60s",
            "--every",
            "200ms",
        ])
        .env("MDD_SERVER", &server.url)
        .env("MDD_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn deploy watch");

    // Everything red: the web check is shown blocked under the DNS check, grouped by owner.
    let mut said = String::new();
    for _ in 0..50 {
        let (code, out, _) = mdd_client(&server, &["deploy", "status", "ams1"]).await;
        assert_eq!(code, Some(1), "{out}");
        said = out;
        // DNS has failed (not merely pending) and the web check waits behind it.
        if said.contains("✗ ams1-dns") && said.contains("blocked by ams1-dns") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(said.contains("0/2 green"), "{said}");
    assert!(said.contains("team-dns"), "{said}");
    let dns_line = said.lines().position(|l| l.contains("✗ ams1-dns"));
    let web_line = said.lines().position(|l| l.contains("ams1-web"));
    assert!(
        dns_line.is_some() && web_line == dns_line.map(|l| l + 1),
        "the blocked check sits under its blocker:\n{said}"
    );
    assert!(!said.contains("fra1"), "fra1 is not selected:\n{said}");

    // DNS comes up, then the web server a moment later.
    let dns = tokio::net::TcpListener::bind(("127.0.0.1", dns_port))
        .await
        .expect("bind dns port");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let web = mdd_testkit::http::serve_on(
        web_port,
        mdd_testkit::http::Routes::new().with("/", mdd_testkit::http::Reply::ok("up")),
        None,
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(40), watch.wait_with_output())
        .await
        .expect("deploy watch ends")
        .expect("deploy watch output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("2/2 green"), "{stdout}");
    assert!(stdout.contains("done after"), "{stdout}");

    let (code, json_text, _) =
        mdd_client(&server, &["deploy", "status", "ams1", "--format", "json"]).await;
    assert_eq!(code, Some(0), "{json_text}");
    let detail: Value = serde_json::from_str(&json_text).expect("json");
    assert_eq!(detail["done"], true);
    assert_eq!(detail["total"], 2);
    let time_to_green = |name: &str| {
        detail["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["time_to_green_ms"].as_i64())
            .unwrap_or_else(|| panic!("{name} has a time to green: {detail}"))
    };
    let (dns_green, web_green) = (time_to_green("ams1-dns"), time_to_green("ams1-web"));
    assert!(
        web_green >= dns_green + 1000,
        "web came up 1.5 s after dns: {dns_green} ms, {web_green} ms"
    );
    let done_after = detail["time_to_done_ms"].as_i64().expect("time to done");
    assert!(done_after >= web_green + 2000, "settle counts: {detail}");
    let (_, list, _) = mdd_client(&server, &["deploy", "list"]).await;
    assert!(
        list.contains("ams1") && list.contains("done after"),
        "{list}"
    );

    // DNS goes away after done: a regression, shown until it is back.
    drop(dns);
    let mut regressed = Value::Null;
    for _ in 0..50 {
        let (_, body) = server.get("/api/v1/deployments/ams1").await;
        regressed = body;
        if regressed["open_regressions"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One regression: the root cause. The web check is blocked behind it, not regressed.
    assert_eq!(regressed["open_regressions"], 1, "{regressed}");
    assert_eq!(
        regressed["regressions"][0]["check"], "ams1-dns",
        "{regressed}"
    );
    assert_eq!(regressed["done"], true, "done stays done");
    let (code, out, _) = mdd_client(&server, &["deploy", "status", "ams1"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("regressions since done"), "{out}");
    let _dns_back = tokio::net::TcpListener::bind(("127.0.0.1", dns_port))
        .await
        .expect("bind dns port again");
    let mut code = None;
    for _ in 0..50 {
        code = mdd_client(&server, &["deploy", "status", "ams1"]).await.0;
        if code == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(code, Some(0), "the regression resolves");

    let (code, _, err) = mdd_client(&server, &["deploy", "status", "nope"]).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("no deployment `nope`"), "{err}");
    drop(web);
    assert!(server.stop().await.success());
}

/// Silences mark what they match (still shown, not hidden), refuse requests that would
/// silence everything or never end, end on their own (expiry, resolution) and survive a
/// restart.
#[tokio::test]
async fn silences_mark_events_and_end_on_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &[]).await;
    let spec = "checks:
  - { name: ams1-dns, owner: team-dns, labels: { dc: ams1 }, ttl: 1h }
  - { name: ams1-ldap, owner: team-identity, labels: { dc: ams1 }, ttl: 1h }
";
    assert_eq!(server.apply(&[("dc.yaml", spec)]).await.0, 200);
    for (id, check, status) in [("r1", "ams1-dns", 2), ("r2", "ams1-ldap", 2)] {
        let (code, _) = server
            .post(
                "/api/v1/results",
                &json!({"results": [result(id, check, status)]}),
            )
            .await;
        assert_eq!(code, 200);
    }
    let (code, dns_silence, err) = mdd_client(
        &server,
        &[
            "silence",
            "add",
            "--check",
            "ams1-dns",
            "--reason",
            "resolver migration",
            "--until-resolved",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let dns_silence = dns_silence.trim().to_string();
    let (code, ldap_silence, err) = mdd_client(
        &server,
        &[
            "silence",
            "add",
            "--label",
            "dc=ams1",
            "--owner",
            "team-identity",
            "--reason",
            "LDAP upgrade",
            "--for",
            "2s",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let ldap_silence = ldap_silence.trim().to_string();

    let silenced_by = |events: &Value, check: &str| -> Vec<String> {
        events["events"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["check"] == check))
            .and_then(|e| e["silenced_by"].as_array())
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, events) = server.get("/api/v1/events").await;
    assert_eq!(
        silenced_by(&events, "ams1-dns"),
        std::slice::from_ref(&dns_silence),
        "{events}"
    );
    assert_eq!(
        silenced_by(&events, "ams1-ldap"),
        std::slice::from_ref(&ldap_silence),
        "{events}"
    );
    assert!(
        events["events"]
            .as_array()
            .is_some_and(|e| e.iter().all(|e| e["state"] == "failing")),
        "silenced events are still evaluated and shown: {events}"
    );
    let page = server.page_text("/events?q=ams1-dns").await;
    assert!(
        page.contains("- silenced") && page.contains("resolver migration"),
        "the dashboard marks it, with the reason: {page}"
    );

    // Requests that cannot be taken, with reasons.
    let (code, _, err) = mdd_client(
        &server,
        &["silence", "add", "--reason", "everything", "--for", "1h"],
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(err.contains("must say what it silences"), "{err}");
    for (body, says) in [
        (
            json!({"check": "ams1-dns", "reason": "r"}),
            "expiry or `until_resolved`",
        ),
        (
            json!({"check": "ams1-dns", "reason": "r", "for": "1h", "expires_at": "2030-01-01T00:00:00Z"}),
            "not both",
        ),
        (
            json!({"check": "ams1-dns", "reason": "r", "for": "soon"}),
            "for:",
        ),
        (
            json!({"check": "ams1-dns", "reason": "r", "for": "1h", "mute": true}),
            "unknown field",
        ),
        (
            json!({"check": "ams1-dns", "reason": "", "for": "1h"}),
            "reason",
        ),
        (
            json!({"check": "bad name!", "reason": "r", "for": "1h"}),
            "check:",
        ),
    ] {
        let (code, answer) = server.post("/api/v1/silences", &body).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(says)),
            "{body}: {answer}"
        );
    }
    let reader = server
        .post("/api/v1/tokens", &json!({"role": "read"}))
        .await
        .1["token"]
        .as_str()
        .expect("token")
        .to_string();
    let (code, _) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/silences",
            Some(&reader),
            Some(br#"{"check": "ams1-dns", "reason": "r", "for": "1h"}"#.to_vec()),
        )
        .await;
    assert_eq!(code, 403, "a read token cannot silence");

    // The 2 s silence expires; the until-resolved one ends when DNS passes.
    let mut listed = Vec::new();
    for _ in 0..50 {
        let (_, list) = server.get("/api/v1/silences").await;
        listed = column(&list["silences"], "id");
        if !listed.contains(&ldap_silence) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(listed, std::slice::from_ref(&dns_silence), "expired");
    let (_, events) = server.get("/api/v1/events").await;
    assert!(silenced_by(&events, "ams1-ldap").is_empty(), "{events}");
    server
        .post(
            "/api/v1/results",
            &json!({"results": [result("r3", "ams1-dns", 0)]}),
        )
        .await;
    for _ in 0..50 {
        let (_, list) = server.get("/api/v1/silences").await;
        listed = column(&list["silences"], "id");
        if listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(listed.is_empty(), "resolved: {listed:?}");

    // Deleting, and surviving a restart (silences name entities that exist).
    for (id, entity) in [("n1", "node-1"), ("n2", "node-2")] {
        let (code, _) = server
            .post(
                "/api/v1/results",
                &json!({"results": [{"id": id, "check": "ams1-dns", "entity": entity, "status": 0}]}),
            )
            .await;
        assert_eq!(code, 200);
    }
    let (_, kept, _) = mdd_client(
        &server,
        &[
            "silence",
            "add",
            "--entity",
            "node-1",
            "--reason",
            "decommissioning",
            "--for",
            "1h",
        ],
    )
    .await;
    let (_, gone, _) = mdd_client(
        &server,
        &[
            "silence", "add", "--entity", "node-2", "--reason", "oops", "--for", "1h",
        ],
    )
    .await;
    let (code, _, _) = mdd_client(&server, &["silence", "delete", gone.trim()]).await;
    assert_eq!(code, Some(0));
    let (code, _, err) = mdd_client(&server, &["silence", "delete", gone.trim()]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(server.stop().await.success());
    let server = TestServer::start(&data, &[]).await;
    let (code, out, _) = mdd_client(&server, &["silence", "list"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains(kept.trim()) && out.contains("decommissioning"),
        "{out}"
    );
    assert!(!out.contains(gone.trim()), "{out}");
    assert!(server.stop().await.success());
}

/// How often things break: incidents, time failing, time to recover per check and owner,
/// recorded as results arrive, kept across a `kill -9`, worst first.
#[tokio::test]
async fn incidents_are_counted_per_check_and_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &[]).await;
    let spec = "checks:
  - { name: ams1-dns, owner: team-dns, ttl: 1h }
  - { name: ams1-ldap, owner: team-identity, ttl: 1h }
  - { name: ams1-ntp, owner: team-dns, ttl: 1h }
";
    assert_eq!(server.apply(&[("dc.yaml", spec)]).await.0, 200);
    let now = jiff::Timestamp::now().as_millisecond();
    let t0 = now - 10 * 60_000;
    let at = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .expect("time")
            .to_string()
    };
    let timed = |id: &str, check: &str, status: i64, ms: i64| {
        let mut r = result(id, check, status);
        r["executed_at"] = json!(at(ms));
        r
    };
    let results = json!({ "results": [
        timed("d1", "ams1-dns", 0, t0),
        timed("d2", "ams1-dns", 2, t0 + 1_000),
        timed("d3", "ams1-dns", 0, t0 + 61_000),
        timed("d4", "ams1-dns", 2, t0 + 120_000),
        timed("l1", "ams1-ldap", 2, t0),
        timed("n1", "ams1-ntp", 0, t0),
    ]});
    assert_eq!(server.post("/api/v1/results", &results).await.0, 200);
    // Killed before the checkpoint could record them: the replay at start does.
    server.kill9().await;
    let server = TestServer::start(&data, &[]).await;

    let (code, report) = server.get("/api/v1/report?window=24h").await;
    assert_eq!(code, 200, "{report}");
    let row = |list: &str, key: &str, name: &str| {
        report[list]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r[key] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {list}: {report}"))
    };
    let dns = row("checks", "check", "ams1-dns");
    assert_eq!(dns["incidents"], 2, "{dns}");
    assert_eq!(dns["mttr_ms"], 60_000, "{dns}");
    assert_eq!(dns["open"], 1, "{dns}");
    let dns_failing = dns["failing_ms"].as_i64().expect("failing");
    assert!(
        (60_000 + 470_000..60_000 + 600_000).contains(&dns_failing),
        "a minute, plus the open one since t0+2min: {dns_failing}"
    );
    assert_eq!(row("checks", "check", "ams1-ldap")["incidents"], 1);
    assert!(
        report["checks"]
            .as_array()
            .is_some_and(|rows| rows.iter().all(|r| r["check"] != "ams1-ntp")),
        "ntp never broke"
    );
    assert_eq!(
        column(&report["top_offenders"], "check"),
        ["ams1-ldap", "ams1-dns"],
        "ten minutes failing before nine"
    );
    assert_eq!(row("owners", "owner", "team-dns")["incidents"], 2);

    let (code, text, _) = mdd_client(&server, &["report"]).await;
    assert_eq!(code, Some(0));
    // The three windows side by side, the owner beside each check.
    assert!(
        text.lines()
            .any(|l| l.contains("last 24h") && l.contains("last 7d") && l.contains("last 30d")),
        "{text}"
    );
    let ldap = text
        .lines()
        .find(|l| l.starts_with("ams1-ldap"))
        .unwrap_or_else(|| panic!("no ams1-ldap row: {text}"));
    assert!(ldap.contains("team-identity"), "{ldap}");
    assert_eq!(
        ldap.matches('|').count(),
        3,
        "a column group per window: {ldap}"
    );
    let (code, _) = server.get("/api/v1/report?window=forever").await;
    assert_eq!(code, 400);
    let page = server.page_text("/report").await;
    assert!(page.contains("data-check=\"ams1-ldap\""), "{page}");
    assert!(server.stop().await.success());
}

/// Handlers: a real webhook receiver and a real command get the right notifications, in
/// order, once per change: after N occurrences, one for a root cause and none for what is
/// blocked behind it, none while silenced; a receiver answering 500 gets bounded retries.
#[tokio::test]
async fn handlers_notify_root_causes_once_and_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let log = dir.path().join("handler.log");
    let spec = format!(
        "handlers:
  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/notify', timeout: 2s, filter: {{ occurrences: 2 }} }}
  - name: log
    type: command
    command: [python3, -c, \"import sys, json; e = json.load(sys.stdin); open('{}', 'a').write(e['check']['metadata']['name'] + ' ' + e['mdd']['notification'] + ' ' + str(e['check']['status']) + chr(10)); print('noted', e['check']['metadata']['name'])\"]
    filter: {{ owners: [team-dns] }}
checks:
  - {{ name: dns, owner: team-dns, ttl: 1h, handlers: [hook] }}
  - {{ name: ldap, owner: team-identity, ttl: 1h, depends_on: [dns], handlers: [hook] }}
",
        receiver.port,
        log.display()
    );
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec).expect("write spec");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--spec", spec_path.to_str().expect("utf-8")],
    )
    .await;
    let mut n = 0;
    let mut post = |check: &'static str, status: i64| {
        n += 1;
        let body = json!({ "results": [result(&format!("h{n}"), check, status)] });
        let server = &server;
        async move {
            assert_eq!(server.post("/api/v1/results", &body).await.0, 200);
            // One group at a time, so the notifier sees each step.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    post("dns", 0).await;
    post("ldap", 0).await;
    post("dns", 2).await; // hook waits for a second occurrence; log (occurrences 1) tells
    post("dns", 2).await; // hook: incident
    post("ldap", 2).await; // blocked behind dns: nobody is told
    post("ldap", 2).await;
    let pair = |c: &str, k: &str| (c.to_string(), k.to_string());
    assert_eq!(
        receiver.received(),
        [pair("dns", "incident")],
        "ldap is blocked behind dns while dns fails"
    );
    post("dns", 0).await; // resolution for both
    post("ldap", 2).await; // no longer blocked: ldap's own incident
    post("ldap", 0).await;
    for _ in 0..100 {
        if receiver.received().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // dns's resolution and ldap's incident (unblocked by it) are decided at one moment and
    // delivered on their events' own lanes, in either order; each event's come in order.
    let received = receiver.received();
    let of = |check: &str| -> Vec<String> {
        received
            .iter()
            .filter(|(c, _)| c == check)
            .map(|(_, kind)| kind.clone())
            .collect()
    };
    assert_eq!(received.len(), 4, "{received:?}");
    assert_eq!(received[0], pair("dns", "incident"), "{received:?}");
    assert_eq!(of("dns"), ["incident", "resolution"], "{received:?}");
    assert_eq!(of("ldap"), ["incident", "resolution"], "{received:?}");
    let first = receiver.bodies.lock().expect("lock")[0].clone();
    assert_eq!(first["check"]["status"], 2, "Sensu's shape: {first}");
    assert_eq!(first["check"]["occurrences"], 2, "{first}");
    assert_eq!(first["entity"]["metadata"]["name"], "e1", "{first}");
    assert!(
        first["check"]["history"]
            .as_array()
            .is_some_and(|h| h.len() == 3),
        "{first}"
    );
    let mut said = String::new();
    for _ in 0..50 {
        said = std::fs::read_to_string(&log).unwrap_or_default();
        if said.lines().count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        said, "dns incident 2\ndns resolution 0\n",
        "the command handler read the event from stdin"
    );

    // Silenced: evaluated, not notified, and no resolution for what was never notified.
    let (code, _) = server
        .post(
            "/api/v1/silences",
            &json!({"check": "dns", "reason": "maintenance", "for": "1h"}),
        )
        .await;
    assert_eq!(code, 201);
    post("dns", 2).await;
    post("dns", 2).await;
    post("dns", 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 4, "nothing while silenced");

    // A receiver that fails: three attempts, then it gives up; results are still taken at once.
    receiver
        .status
        .store(500, std::sync::atomic::Ordering::SeqCst);
    post("ldap", 2).await;
    let started = std::time::Instant::now();
    post("ldap", 2).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "ingestion does not wait for handlers"
    );
    let mut attempts = Vec::new();
    for _ in 0..100 {
        let (_, log) = server.get("/api/v1/handlers/hook/deliveries").await;
        attempts = log["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d["outcome"] == "http 500")
            .collect();
        if attempts.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(attempts.len(), 3, "bounded retries: {attempts:?}");
    let (_, handlers) = server.get("/api/v1/handlers").await;
    assert_eq!(column(&handlers["handlers"], "name"), ["hook", "log"]);
    let mut page = String::new();
    for _ in 0..20 {
        page = server.page_text("/handlers").await;
        if page.contains("<strong>1</strong> failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        page.contains("data-handler=\"hook\"") && page.contains("http 500"),
        "the dashboard shows the delivery log: {page}"
    );
    assert!(
        page.contains("<strong>1</strong> failed after every attempt"),
        "and what became of each notification: {page}"
    );
    assert!(
        page.contains("<summary>output</summary><pre>noted dns"),
        "a command's output is shown: {page}"
    );
    assert!(server.stop().await.success());
}

/// Reminders come at their cadence while an incident lasts (real time), and red that is
/// expected — a check never green yet in a deployment not done — notifies nobody.
#[tokio::test]
async fn reminders_repeat_and_expected_red_is_quiet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let spec = format!(
        "handlers:
  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/', filter: {{ reminder: 1s, owners: [ops] }} }}
deployments:
  - {{ name: fra1, selector: {{ dc: fra1 }}, settle: 1h }}
checks:
  - {{ name: disk, owner: ops, ttl: 1h }}
  - {{ name: fra1-dns, owner: ops, labels: {{ dc: fra1 }}, ttl: 1h }}
",
        receiver.port
    );
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    assert_eq!(server.apply(&[("spec.yaml", &spec)]).await.0, 200);
    // Right away, before the deployment tracker's first look at fra1: a deployment just
    // applied has nothing green in it yet, so fra1-dns failing is expected.
    for (id, check, status) in [("a", "disk", 0), ("b", "fra1-dns", 2), ("c", "disk", 2)] {
        assert_eq!(
            server
                .post(
                    "/api/v1/results",
                    &json!({"results": [result(id, check, status)]})
                )
                .await
                .0,
            200
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Wait for two reminders (however busy the machine), then check they kept their cadence:
    // never more than one a second.
    let failing_since = std::time::Instant::now();
    let reminders =
        |received: &[(String, String)]| received.iter().filter(|r| r.1 == "reminder").count();
    for _ in 0..100 {
        if reminders(&receiver.received()) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = receiver.received();
    let elapsed = failing_since.elapsed().as_secs_f64() + 0.5;
    assert!(
        received.iter().all(|(check, _)| check == "disk"),
        "fra1-dns is expected to be red: {received:?}"
    );
    assert_eq!(received.first().map(|r| r.1.as_str()), Some("incident"));
    let count = reminders(&received);
    assert!(
        count >= 2 && count as f64 <= elapsed + 1.0,
        "reminders at most every second: {count} in {elapsed:.1} s: {received:?}"
    );
    assert_eq!(
        server
            .post(
                "/api/v1/results",
                &json!({"results": [result("d", "disk", 0)]})
            )
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = receiver.received();
    assert_eq!(
        after.last().map(|r| r.1.as_str()),
        Some("resolution"),
        "{after:?}"
    );
    assert!(server.stop().await.success());
}

/// A flapping check notifies when flapping starts and when it ends, not on every change.
#[tokio::test]
async fn flapping_notifies_at_its_start_and_end_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let spec = format!(
        "handlers:
  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/' }}
checks:
  - {{ name: vip, ttl: 1h, handlers: [hook], low_flap_threshold: 10, high_flap_threshold: 30 }}
",
        receiver.port
    );
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec).expect("write spec");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--spec", spec_path.to_str().expect("utf-8")],
    )
    .await;
    // Alternating for a while, then steadily OK.
    let statuses: Vec<i64> = (0..12)
        .map(|i| if i % 2 == 0 { 0 } else { 2 })
        .chain(std::iter::repeat_n(0, 24))
        .collect();
    for (i, status) in statuses.iter().enumerate() {
        let (code, _) = server
            .post(
                "/api/v1/results",
                &json!({"results": [result(&format!("f{i}"), "vip", *status)]}),
            )
            .await;
        assert_eq!(code, 200);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let kinds: Vec<String> = receiver.received().into_iter().map(|(_, k)| k).collect();
    assert!(
        kinds.contains(&"flapping_started".to_string())
            && kinds.last().map(String::as_str) == Some("flapping_ended"),
        "{kinds:?}"
    );
    let started = kinds
        .iter()
        .position(|k| k == "flapping_started")
        .expect("started");
    assert_eq!(
        kinds.len(),
        started + 2,
        "nothing between the start and the end of flapping: {kinds:?}"
    );
    assert!(server.stop().await.success());
}

fn told(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(c, k)| (c.to_string(), k.to_string()))
        .collect()
}

/// What handlers were told survives `kill -9`: an incident notified before the crash is not
/// told again after the restart and its recovery is told; the delivery log is still there; and
/// a handler added by an apply hears about what is failing now.
#[tokio::test]
async fn what_handlers_were_told_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let hook = Receiver::start().await;
    let late = Receiver::start().await;
    let spec = |with_late: bool| {
        let mut spec = format!(
            "handlers:\n  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/' }}\n",
            hook.port
        );
        if with_late {
            spec.push_str(&format!(
                "  - {{ name: late, type: webhook, url: 'http://127.0.0.1:{}/' }}\n",
                late.port
            ));
        }
        let handlers = if with_late { "[hook, late]" } else { "[hook]" };
        spec.push_str(&format!(
            "checks:\n  - {{ name: dns, owner: ops, ttl: 1h, handlers: {handlers} }}\n"
        ));
        spec
    };
    let mut n = 0;
    let mut post = async |server: &TestServer, status: i64| {
        n += 1;
        let body = json!({ "results": [result(&format!("r{n}"), "dns", status)] });
        assert_eq!(server.post("/api/v1/results", &body).await.0, 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    };

    let server = TestServer::start(&data, &[]).await;
    assert_eq!(server.apply(&[("spec.yaml", &spec(false))]).await.0, 200);
    post(&server, 0).await;
    post(&server, 2).await;
    assert_eq!(hook.wait_for(1).await, told(&[("dns", "incident")]));
    // The delivery log and the incident record are written within a second of being made;
    // the margin is for a busy machine.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    server.kill9().await;

    let server = TestServer::start(&data, &[]).await;
    let (_, log) = server.get("/api/v1/handlers/hook/deliveries").await;
    let log = log["deliveries"].as_array().cloned().unwrap_or_default();
    assert_eq!(log.len(), 1, "the log from before the crash: {log:?}");
    assert_eq!(log[0]["kind"], "incident");
    assert_eq!(log[0]["outcome"], "ok");
    post(&server, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hook.received(),
        told(&[("dns", "incident")]),
        "not told again after the restart"
    );
    post(&server, 0).await;
    assert_eq!(
        hook.wait_for(2).await,
        told(&[("dns", "incident"), ("dns", "resolution")]),
        "the recovery is told although the incident was told before the crash"
    );

    post(&server, 2).await;
    assert_eq!(hook.wait_for(3).await.len(), 3);
    assert_eq!(server.apply(&[("spec.yaml", &spec(true))]).await.0, 200);
    assert_eq!(
        late.wait_for(1).await,
        told(&[("dns", "incident")]),
        "a handler added while dns fails hears about it"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.received().len(), 3, "hook is not told twice");
    assert!(server.stop().await.success());
}

/// The server is killed while a receiver holds its delivery unanswered: after the restart the
/// delivery is made again, with the same `webhook-id` and body, and once it is done it is not
/// made a third time.
#[tokio::test]
async fn a_delivery_cut_short_by_a_crash_is_made_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let hook = Receiver::start().await;
    hook.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let spec = format!(
        "handlers:\n  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/', timeout: 60s }}\n\
         checks:\n  - {{ name: dns, owner: ops, ttl: 1h, handlers: [hook] }}\n",
        hook.port
    );
    let server = TestServer::start(&data, &[]).await;
    assert_eq!(server.apply(&[("spec.yaml", &spec)]).await.0, 200);
    for (id, status) in [("r1", 0), ("r2", 2)] {
        let body = json!({ "results": [result(id, "dns", status)] });
        assert_eq!(server.post("/api/v1/results", &body).await.0, 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let first = hook.wait_for_requests(1).await;
    assert_eq!(first.len(), 1, "the incident is being delivered: {first:?}");
    // What was decided is stored within a second; the margin is for a busy machine.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.kill9().await;
    hook.release();

    let server = TestServer::start(&data, &[]).await;
    hook.wait_for_requests(2).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The receiver got the first one too (its answer went to a dead server): it drops the
    // repeat by its id.
    hook.assert_made_again(&first[0]);
    assert_eq!(
        hook.received(),
        told(&[("dns", "incident"), ("dns", "incident")])
    );

    // Delivered: a restart has nothing left to deliver.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(server.stop().await.success());
    let server = TestServer::start(&data, &[]).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(hook.ids().len(), 2, "not delivered a third time");
    assert!(server.stop().await.success());
}

/// A receiver that refuses connections and one that accepts and never answers: each delivery
/// gets its bounded attempts, and meanwhile ingestion takes every result as if there were no
/// handlers at all.
#[tokio::test]
async fn receivers_down_or_stalled_never_hold_up_ingestion() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Bound and released: nothing listens there any more.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stalled_port = stalled.local_addr().expect("addr").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = held.clone();
    let _stall = tokio::spawn(async move {
        while let Ok((stream, _)) = stalled.accept().await {
            // Kept open, never read, never answered.
            holder.lock().expect("lock").push(stream);
        }
    });
    let spec = format!(
        "handlers:
  - {{ name: down, type: webhook, url: 'http://127.0.0.1:{down}/', timeout: 1s }}
  - {{ name: stalled, type: webhook, url: 'http://127.0.0.1:{stalled_port}/', timeout: 1s }}
  - {{ name: hangs, type: command, command: [sleep, '30'], timeout: 1s }}
  - {{ name: chatty, type: command, command: [sh, -c, 'head -c 5000000 /dev/zero | tr \"\\\\000\" x; exit 3'] }}
checks:
  - {{ name: dns, owner: ops, ttl: 1h, handlers: [down, stalled, hangs, chatty] }}
"
    );
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    assert_eq!(server.apply(&[("spec.yaml", &spec)]).await.0, 200);
    let post = async |id: String, status: i64| {
        let body = json!({ "results": [result(&id, "dns", status)] });
        let started = std::time::Instant::now();
        assert_eq!(server.post("/api/v1/results", &body).await.0, 200);
        started.elapsed()
    };
    post("first".into(), 0).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    post("failing".into(), 2).await;
    // Wait until the stalled receiver holds a delivery: both workers are now busy.
    for _ in 0..100 {
        if !held.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !held.lock().expect("lock").is_empty(),
        "a delivery is stalled"
    );
    let mut took = Vec::new();
    for i in 0..50 {
        took.push(post(format!("more-{i}"), 2).await);
    }
    took.sort();
    eprintln!(
        "ingestion while both receivers fail: p50 {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    let (_, events) = server.get("/api/v1/events?check=dns").await;
    let occurrences = events["events"]
        .as_array()
        .and_then(|e| e.first())
        .map(|e| e["occurrences"].clone());
    assert_eq!(
        occurrences,
        Some(json!(51)),
        "every result was taken while deliveries were stuck: {events}"
    );

    let deliveries = async |handler: &str, wanted: usize| -> Vec<Value> {
        let mut deliveries = Vec::new();
        for _ in 0..100 {
            let (_, log) = server
                .get(&format!("/api/v1/handlers/{handler}/deliveries"))
                .await;
            deliveries = log["deliveries"].as_array().cloned().unwrap_or_default();
            if deliveries.len() >= wanted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        deliveries
    };
    let outcomes = async |handler: &str| -> Vec<String> {
        deliveries(handler, 3)
            .await
            .iter()
            .map(|d| d["outcome"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let refused = outcomes("down").await;
    assert_eq!(
        refused.len(),
        3,
        "three attempts, then it gives up: {refused:?}"
    );
    assert!(
        refused.iter().all(|o| o.starts_with("error:")),
        "{refused:?}"
    );
    let timed_out = outcomes("stalled").await;
    assert_eq!(timed_out.len(), 3, "{timed_out:?}");
    assert!(
        timed_out.iter().all(|o| o.contains("timed out")),
        "{timed_out:?}"
    );
    // Commands run once: one that hangs is killed at its timeout, one that prints megabytes
    // has its exit code recorded and its output capped.
    let hung = deliveries("hangs", 1).await;
    assert_eq!(hung.len(), 1, "{hung:?}");
    assert_eq!(hung[0]["outcome"], "error: timed out after 1s", "{hung:?}");
    let chatty = deliveries("chatty", 1).await;
    assert_eq!(chatty.len(), 1, "{chatty:?}");
    assert_eq!(chatty[0]["outcome"], "exit 3");
    let output = chatty[0]["output"].as_str().unwrap_or("");
    assert!(
        output.len() == 4096 && output.bytes().all(|b| b == b'x'),
        "capped output: {} bytes",
        output.len()
    );
    assert!(server.stop().await.success());
}

/// What a receiver does with a signed delivery, by the PyPI `standardwebhooks` package (an
/// implementation of the specification that is not ours): prints the verified id, or fails.
fn verify_with_standard_webhooks(
    secret: &str,
    headers: &[(String, String)],
    body: &str,
) -> Result<String, String> {
    let script = "import sys, json\nfrom standardwebhooks.webhooks import Webhook\nd = json.load(sys.stdin)\nWebhook(d['secret']).verify(d['body'], d['headers'])\nprint(d['headers']['webhook-id'])\n";
    let input = json!({
        "secret": secret,
        "body": body,
        "headers": headers.iter().cloned().collect::<std::collections::HashMap<String, String>>(),
    });
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A handler with a `secret_file` signs every attempt as Standard Webhooks says: the same
/// `webhook-id` across a retry, each attempt verified by an independent implementation, a
/// tampered body refused by it; a secret the server cannot read is said at apply and nothing
/// goes out unsigned.
#[tokio::test]
async fn webhook_deliveries_are_signed_as_standard_webhooks_specifies() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("write secret");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = format!(
        "handlers:
  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/notify', secret_file: '{}', timeout: 2s }}
  - {{ name: unread, type: webhook, url: 'http://127.0.0.1:{}/unread', secret_file: '{}/missing.secret' }}
checks:
  - {{ name: dns, ttl: 1h, handlers: [hook, unread] }}
",
        receiver.port,
        secret_file.display(),
        receiver.port,
        dir.path().display()
    );
    let (status, body) = server.apply(&[("spec.yaml", &spec)]).await;
    assert_eq!(status, 200, "{body}");
    let warned = body["warnings"].to_string();
    assert!(
        warned.contains("handler `unread`: secret_file") && warned.contains("missing.secret"),
        "{body}"
    );

    // The first attempt is answered 500, the retry 200.
    receiver
        .status
        .store(500, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        server
            .post(
                "/api/v1/results",
                &json!({ "results": [result("s1", "dns", 0)] })
            )
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server
            .post(
                "/api/v1/results",
                &json!({ "results": [result("s2", "dns", 2)] })
            )
            .await
            .0,
        200
    );
    for _ in 0..100 {
        if !receiver.requests.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver
        .status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    receiver.wait_for(1).await;
    let requests = receiver.requests.lock().expect("lock").clone();
    let to_hook: Vec<&common::Request> = requests.iter().collect();
    assert!(
        to_hook.len() >= 2,
        "a failed attempt and its retry: {requests:?}"
    );
    let mut ids = Vec::new();
    for (headers, body) in &to_hook {
        let id = verify_with_standard_webhooks(&secret, headers, body)
            .unwrap_or_else(|e| panic!("not verified: {e}\n{headers:?}"));
        assert!(id.starts_with("msg_"), "{id}");
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(
        ids.len(),
        1,
        "one notification, one id across attempts: {ids:?}"
    );
    // The verifier does refuse what was not signed so.
    let (headers, body) = to_hook[0];
    let tampered = body.replace("\"dns\"", "\"dnz\"");
    assert_ne!(&tampered, body);
    let refused = verify_with_standard_webhooks(&secret, headers, &tampered)
        .expect_err("a tampered body is refused");
    assert!(refused.contains("WebhookVerificationError"), "{refused}");
    let other_key = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    assert!(verify_with_standard_webhooks(&other_key, headers, body).is_err());
    // Nothing went unsigned: the handler whose secret cannot be read sent nothing at all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = receiver.requests.lock().expect("lock").clone();
    assert!(
        requests
            .iter()
            .all(|(headers, _)| headers.iter().any(|(k, _)| k == "webhook-signature")),
        "{requests:?}"
    );
    assert_eq!(requests.len(), to_hook.len(), "{requests:?}");
    assert!(server.stop().await.success());
}

/// `mdd status` puts what needs someone first, says what blocks a blocked check, and shows
/// an agent's row as when it was last heard from.
#[tokio::test]
async fn status_lists_the_worst_first_and_says_what_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = "checks:
  - { name: a-web, ttl: 1h }
  - { name: b-dns, ttl: 1h }
  - { name: c-ldap, ttl: 1h, depends_on: [b-dns] }
";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    let results = json!({ "results": [result("w", "a-web", 0), result("d", "b-dns", 2), result("l", "c-ldap", 0)] });
    assert_eq!(server.post("/api/v1/results", &results).await.0, 200);
    let keepalive = json!({ "entity": "agent1", "subscriptions": [], "labels": {}, "interval_s": 20, "warning_s": 120, "critical_s": 180 });
    let (status, body) = server.post("/api/v1/agent/keepalive", &keepalive).await;
    assert!(status < 300, "{body}");
    let (code, table, stderr) = mdd_client(&server, &["status"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert!(
        rows[0].contains("failing") && rows[0].contains("b-dns"),
        "{table}"
    );
    assert!(
        rows[1].contains("blocked") && rows[1].contains("c-ldap"),
        "{table}"
    );
    assert!(rows[1].contains("blocked by b-dns"), "{table}");
    let agent = rows
        .iter()
        .find(|r| r.contains("keepalive"))
        .unwrap_or_else(|| panic!("no keepalive row: {table}"));
    assert!(
        agent.contains("last keepalive") && agent.contains("ago ("),
        "{agent}"
    );
    assert!(
        rows.iter().position(|r| r.contains("a-web")) > Some(1),
        "passing after: {table}"
    );
    // The dashboard's tables say how long ago, with the exact second on hover.
    for page in ["/events", "/entities", "/checks/b-dns"] {
        let html = server.page_text(page).await;
        let time = html
            .split("<time datetime=\"")
            .nth(1)
            .unwrap_or_else(|| panic!("no <time> on {page}: {html}"));
        let (iso, rest) = time.split_once('"').expect("datetime");
        assert!(iso.ends_with('Z') && iso.len() == 20, "{iso}");
        let title = rest
            .split("title=\"")
            .nth(1)
            .and_then(|t| t.split_once('"'))
            .map(|(t, _)| t)
            .expect("title");
        assert_eq!(
            title,
            format!("{} UTC", iso.replace('T', " ").trim_end_matches('Z'))
        );
        let shown = rest.split_once('>').map(|(_, r)| r).unwrap_or_default();
        assert!(
            shown.starts_with("just now") || shown.contains(" ago<"),
            "{page}: {shown:.40}"
        );
    }
    assert!(server.stop().await.success());
}

/// The overview counts checks as the deployment pages do (one never reported is pending and
/// counted), and its headline says agents alive, silences active and what is stale.
#[tokio::test]
async fn the_overview_agrees_with_the_deployments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = "deployments:
  - { name: ams1, selector: { dc: ams1 } }
checks:
  - { name: dns, labels: { dc: ams1 }, ttl: 1h }
  - { name: ldap, labels: { dc: ams1 }, ttl: 1h }
  - { name: vault, labels: { dc: ams1 }, ttl: 1h }
";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    // Two entities for dns: still one check. vault never reports: pending, and counted.
    let mut on_e2 = result("b", "dns", 0);
    on_e2["entity"] = json!("e2");
    let results = json!({ "results": [result("a", "dns", 0), on_e2, result("c", "ldap", 2)] });
    assert_eq!(server.post("/api/v1/results", &results).await.0, 200);
    let keepalive = json!({ "entity": "agent1", "subscriptions": [], "labels": {}, "interval_s": 20, "warning_s": 120, "critical_s": 180 });
    assert!(server.post("/api/v1/agent/keepalive", &keepalive).await.0 < 300);
    let silence = json!({ "check": "ldap", "reason": "migration", "for": "1h" });
    assert_eq!(server.post("/api/v1/silences", &silence).await.0, 201);

    let (_, deployment) = server.get("/api/v1/deployments/ams1").await;
    let (green, total) = (
        deployment["green"].as_u64().expect("green"),
        deployment["total"].as_u64().expect("total"),
    );
    assert_eq!((green, total), (1, 3), "{deployment}");
    let html = server.page_text("/").await;
    let headline = html
        .split("id=\"headline\"")
        .nth(1)
        .and_then(|h| h.split("</p>").next())
        .unwrap_or_else(|| panic!("no headline: {html}"));
    assert!(headline.contains("1/3 checks passing"), "{headline}");
    assert!(headline.contains("agents 1/1 alive"), "{headline}");
    assert!(headline.contains("1 silence active"), "{headline}");
    assert!(headline.contains("0 stale"), "{headline}");
    // The dc=ams1 tile says what its deployment says.
    let tile = html
        .split("href=\"/events?label=dc%3Dams1\"")
        .nth(1)
        .and_then(|t| t.split("</a>").next())
        .unwrap_or_else(|| panic!("no ams1 tile: {html}"));
    assert!(tile.contains(&format!("{green}/{total} passing")), "{tile}");
    assert!(html.contains(">3 checks<"), "{html}");
    assert!(server.stop().await.success());
}

/// A check that has no result yet while what it depends on fails is blocked, not pending:
/// in the events list, on its page and in its deployment; pending again once that passes.
#[tokio::test]
async fn a_check_with_no_result_behind_a_failing_dependency_is_blocked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = "deployments:
  - { name: dc, selector: { dc: x } }
checks:
  - { name: db, labels: { dc: x }, ttl: 1h }
  - { name: app, labels: { dc: x }, ttl: 1h, depends_on: [db] }
";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    let post = |id: &'static str, status| {
        let body = json!({ "results": [result(id, "db", status)] });
        let server = &server;
        async move { assert_eq!(server.post("/api/v1/results", &body).await.0, 200) }
    };
    post("d1", 2).await;
    let app = |events: &Value| {
        events["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["check"] == "app")
            .cloned()
            .unwrap_or_default()
    };
    let (_, events) = server.get("/api/v1/events").await;
    let row = app(&events);
    assert_eq!(row["state"], "blocked", "{row}");
    assert_eq!(row["blocked_by"], json!(["db"]), "{row}");
    assert_eq!(row["summary"], "blocked by db", "{row}");
    let (_, deployment) = server.get("/api/v1/deployments/dc").await;
    assert_eq!(deployment["counts"]["blocked"], 1, "{deployment}");
    let page = server.page_text("/checks/app").await;
    assert!(page.contains("blocked by db"), "{page}");

    post("d2", 0).await;
    let (_, events) = server.get("/api/v1/events").await;
    assert_eq!(app(&events)["state"], "pending", "{events}");

    // app reports failing while db fails again: blocked, and its page's last changes end
    // with that, as its header says, not with what its result said.
    post("d3", 2).await;
    let body = json!({ "results": [result("a1", "app", 2)] });
    assert_eq!(server.post("/api/v1/results", &body).await.0, 200);
    let page = server.page_text("/checks/app").await;
    let changes = page
        .split("<th>Became</th>")
        .nth(1)
        .unwrap_or_else(|| panic!("no changes table: {page}"));
    let first_row = changes.split("</tr>").nth(1).unwrap_or_default();
    assert!(first_row.contains("blocked"), "{first_row}");
    assert!(server.stop().await.success());
}

/// Availability is the share of the time results said OK: on the check page, the deployment
/// page, the report (per check and per deployment) and `mdd report`.
#[tokio::test]
async fn availability_is_worked_out_from_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = "deployments:
  - { name: dc, selector: { dc: x } }
checks:
  - { name: web, labels: { dc: x }, ttl: 1h }
";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    // OK for 30 s, then CRITICAL until now (10 s): 75 % of the 40 s covered.
    let ago = |s: i64| {
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(s))
            .expect("time")
            .to_string()
    };
    let body = json!({ "results": [
        { "id": "u1", "check": "web", "entity": "e1", "status": 0, "output": "OK", "executed_at": ago(40) },
        { "id": "u2", "check": "web", "entity": "e1", "status": 2, "output": "CRITICAL", "executed_at": ago(10) },
    ] });
    assert_eq!(server.post("/api/v1/results", &body).await.0, 200);
    let (_, report) = server.get("/api/v1/report?window=24h").await;
    let share = report["deployments"][0]["availability"]
        .as_f64()
        .unwrap_or_else(|| panic!("{report}"));
    assert!((0.70..0.76).contains(&share), "{share}: {report}");
    assert_eq!(report["deployments"][0]["deployment"], "dc");
    let report_page = server.page_text("/report").await;
    let row = report_page
        .split("data-deployment=\"dc\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no availability row: {report_page}"));
    assert_eq!(row.matches(" %").count(), 3, "{row}");
    for path in ["/checks/web", "/deployments/dc"] {
        let html = server.page_text(path).await;
        let shown = html
            .split("availability")
            .nth(1)
            .unwrap_or_else(|| panic!("{path}: {html}"));
        assert!(shown.contains("24h 7"), "{path}: {shown:.200}");
        assert!(shown.contains("30d 7"), "{path}: {shown:.200}");
    }
    let (code, text, _) = mdd_client(&server, &["report"]).await;
    assert_eq!(code, Some(0));
    let row = text
        .lines()
        .find(|l| l.starts_with("dc "))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(row.matches(" %").count(), 3, "{row}");
    assert!(server.stop().await.success());
}

/// An agent given several servers moves to the next one when its server is gone (here a
/// second server on the same store, started after the first is killed), within seconds, and
/// every result it made arrives once.
#[tokio::test]
async fn an_agent_given_several_servers_moves_on_when_one_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let first = format!("127.0.0.1:{}", mdd_testkit::free_port());
    let second = format!("127.0.0.1:{}", mdd_testkit::free_port());
    let server = TestServer::start(&data, &["--listen", &first]).await;
    let spec = "defaults: { interval: 250ms, timeout: 1s }
checks:
  - { name: tick, subscriptions: [all], command: [echo, 'OK - tick'] }
";
    server.apply(&[("dc.yaml", spec)]).await;
    let token = agent_token(&server).await;
    let agent_data = dir.path().join("agent");
    let servers = format!("http://{first},http://{second}");
    let agent = TestAgent::start(&servers, &token, "host1", "all", &agent_data);
    wait_for_events(&server, |events| {
        pairs(events).contains(&("tick".into(), "host1".into()))
    })
    .await;
    server.kill9().await;
    // The agent spools while nobody answers; then the other server comes up on the store.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = TestServer::start(&data, &["--listen", &second]).await;
    let back = std::time::Instant::now();
    let before = {
        let (_, event) = server.get("/api/v1/events/tick/host1").await;
        event["occurrences"].as_u64().unwrap_or(0)
    };
    let mut moved = None;
    for _ in 0..300 {
        let (_, event) = server.get("/api/v1/events/tick/host1").await;
        if event["occurrences"].as_u64().unwrap_or(0) > before + 4 {
            moved = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved = moved.expect("the agent reported to the second server within 30 s");
    assert!(
        moved < Duration::from_secs(15),
        "moved to the second server in {moved:?}"
    );
    // Nothing made while no server answered is lost, nothing is counted twice.
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = spooled_ids(&agent_data).len();
        if left <= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        left <= 4,
        "the spool drained into the second server: {left} left"
    );
    agent.kill9().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, event) = server.get("/api/v1/events/tick/host1").await;
    let occurrences = event["occurrences"].as_u64().unwrap_or(0) as usize;
    let (_, results) = server
        .get("/api/v1/checks/tick/results?from=1970-01-01T00:00:00Z&limit=10000")
        .await;
    let stored = results["results"].as_array().map_or(0, Vec::len);
    assert!(
        occurrences <= stored && occurrences + 2 >= stored,
        "each result applied once: {occurrences} of {stored}"
    );
    assert!(server.stop().await.success());
}

/// `--database` takes PostgreSQL URLs only, and one that cannot be reached stops the start
/// with a message naming it, its password hidden.
#[tokio::test]
async fn a_database_that_is_not_postgres_or_not_there_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (url, says) in [
        ("mysql://u:secret@h/db", "give a PostgreSQL URL"),
        (
            "postgres://mdd:secret@localhost/x?host=/nonexistent-socket-dir",
            "cannot start the server: database postgres://mdd:***@localhost/x",
        ),
    ] {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            Command::new(env!("CARGO_BIN_EXE_mdd"))
                .args([
                    "server",
                    "--listen",
                    "127.0.0.1:0",
                    "--database",
                    url,
                    "--data",
                ])
                .arg(dir.path().join("data"))
                .output(),
        )
        .await
        .expect("in time")
        .expect("ran");
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{said}");
        assert!(said.contains(says), "{said}");
        assert!(
            !said.contains("secret"),
            "the password is never shown: {said}"
        );
    }
}

/// A silence ended or a token revoked here stays so on the next request, though the store's
/// follower reloads both whenever they move: a reload read just before the change must not
/// put back the old set (a dashboard test once saw an ended silence still shown).
#[tokio::test]
async fn a_silence_ended_or_a_token_revoked_stays_so_under_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = "checks:\n  - { name: ams1-dns, ttl: 1h }\n";
    assert_eq!(server.apply(&[("dc.yaml", spec)]).await.0, 200);
    // Every change moves what the follower reloads (every 250 ms); several writers at once
    // so that many changes fall inside reloads' reads. Bounded in count and time.
    let until = std::time::Instant::now() + Duration::from_secs(4);
    let writer = |n: usize| {
        let server = &server;
        async move {
            let mut rounds = 0;
            while rounds < 300 && std::time::Instant::now() < until {
                rounds += 1;
                end_a_silence_and_revoke_a_token(server, &format!("writer {n} round {rounds}"))
                    .await;
            }
            rounds
        }
    };
    let rounds = futures_util::future::join_all((0..4).map(writer)).await;
    assert!(
        rounds.iter().all(|r| *r >= 10),
        "rounds per writer: {rounds:?}"
    );
}

async fn end_a_silence_and_revoke_a_token(server: &TestServer, round: &str) {
    let (code, silence) = server
        .post(
            "/api/v1/silences",
            &json!({"check": "ams1-dns", "reason": round, "for": "1h"}),
        )
        .await;
    assert_eq!(code, 201, "{silence}");
    let id = silence["id"].as_str().expect("silence id").to_string();
    let (code, _) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/silences/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert!(code < 300, "{code}");
    let (_, list) = server.get("/api/v1/silences").await;
    assert!(
        !column(&list["silences"], "id").contains(&id),
        "{round}: ended, then listed: {list}"
    );

    let (code, made) = server
        .post("/api/v1/tokens", &json!({"role": "read", "name": round}))
        .await;
    assert!(code < 300, "{code} {made}");
    let secret = made["token"].as_str().expect("secret").to_string();
    let token_id = made["id"].as_str().expect("token id").to_string();
    let (code, _) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{token_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert!(code < 300, "{code}");
    let (code, _) = server
        .call(reqwest::Method::GET, "/api/v1/events", Some(&secret), None)
        .await;
    assert_eq!(code, 401, "{round}: revoked, then let in");
}
