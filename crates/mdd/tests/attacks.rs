//! mdd under attack, at scale and through faults, as its worst users and worst days would
//! have it: each test is a defect an attacker or a bad day found, on real server processes on
//! loopback.

use std::time::Duration;

mod common;
use common::{ADMIN, TestServer};

/// After sign-in only a path on this server is followed: `next=/<TAB>/evil.example/x` went to
/// `Location: /<TAB>/evil.example/x`, which browsers follow to another site; a `next` with
/// CR/LF made the answer carry neither cookie nor location.
#[tokio::test]
async fn sign_in_never_redirects_to_another_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (next, expected) in [
        ("/%09/evil.example/x", "/"),
        ("/%0d%0aSet-Cookie:%20x=1", "/"),
        ("%2F%2Fevil.example", "/"),
        ("%2F%5Cevil.example", "/"),
        ("%2Fdeployments%2Fams1", "/deployments/ams1"),
    ] {
        let response = http
            .post(format!("{}/login", server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={ADMIN}&next={next}"))
            .send()
            .await
            .expect("sign in");
        assert_eq!(response.status(), 303, "{next}");
        let headers = response.headers();
        assert_eq!(
            headers.get("location").and_then(|v| v.to_str().ok()),
            Some(expected),
            "{next}"
        );
        assert!(
            headers
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("mdd_session=")),
            "signed in: {next}"
        );
    }
    server.stop().await;
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .expect("in range")
        .to_string()
}

/// A result from a clock years ahead is refused with a 4xx naming the field and the real
/// limit, and one stored before that was refused no longer pins its event: it used to stay
/// failing for good and never go stale.
#[tokio::test]
async fn a_result_from_the_far_future_pins_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // On SQLite, whatever the suite runs on: the result is written straight into the data
    // directory's store, as an older mdd would have, and folded by the replay at start (on
    // PostgreSQL events are folded with their results, and there is no older mdd).
    let server = TestServer::start_on_sqlite(&data, &[]).await;
    let spec = "checks:\n  - { name: cron, ttl: 2s }\n";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    for (at, says) in [
        ("2999-01-01T00:00:00Z", "ahead of this server's clock"),
        ("9999-12-31T23:59:59Z", "too far in the future"),
    ] {
        let (status, body) = server
            .post(
                "/api/v1/results",
                &serde_json::json!({ "results": [{ "id": "f1", "check": "cron", "status": 2, "executed_at": at }] }),
            )
            .await;
        assert_eq!(status, 400, "{at}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("results[0].executed_at:")
                && error.contains(says)
                && error.contains("at most 5m after this server's clock"),
            "{error}"
        );
    }
    server.stop().await;

    // One stored by an older mdd, written straight into the store as it would have been.
    let store = mdd_storage::Store::open(&data)
        .await
        .expect("open the store");
    let far = 32_503_680_000_000; // 3000-01-01
    let now = jiff::Timestamp::now().as_millisecond();
    let stored = mdd_storage::StoredResult {
        id: "from-3000".into(),
        check: "cron".into(),
        entity: "e1".into(),
        status: mdd_core::Status::Critical,
        summary: "from a wrong clock".into(),
        long_output: String::new(),
        perfdata: Vec::new(),
        duration_ms: 0.0,
        exit_code: Some(2),
        executed_at: far,
        received_at: now,
        output: "from a wrong clock".into(),
    };
    store
        .commit(mdd_storage::Commit {
            results: &[&stored],
            entities: &[("e1", now)],
        })
        .await
        .expect("commit");
    store.close().await;

    let server = TestServer::start_on_sqlite(&data, &[]).await;
    let (_, event) = server.get("/api/v1/events/cron/e1").await;
    assert_eq!(event["state"], "failing", "{event}");
    let executed = event["executed_at"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
        .expect("a time");
    assert!(executed < now + 60_000, "counted as of now: {event}");
    // With nothing new it goes stale after its ttl, like any other.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (_, event) = server.get("/api/v1/events/cron/e1").await;
    assert_eq!(event["state"], "stale", "{event}");
    // And a result of now moves it.
    let (status, body) = server
        .post(
            "/api/v1/results",
            &serde_json::json!({ "results": [{ "id": "now", "check": "cron", "entity": "e1", "status": 0,
                                   "executed_at": rfc3339(jiff::Timestamp::now().as_millisecond()) }] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, event) = server.get("/api/v1/events/cron/e1").await;
    assert_eq!(event["state"], "passing", "{event}");
    server.stop().await;
}

/// A second server on a data directory in use refuses to start and names the process that
/// holds it (two servers on one directory silently diverged); `kill -9` of the first frees it.
#[tokio::test]
async fn a_second_server_on_one_data_directory_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = TestServer::start_on_sqlite(dir.path(), &[]).await;
    let pid = first.pid();
    let second = TestServer::start_wrapped(&[], dir.path(), &[]).await;
    let said = match second {
        Ok(_) => panic!("a second server started on the same directory"),
        Err(said) => said,
    };
    assert!(
        said.contains("is in use by process")
            && said.contains(&pid.to_string())
            && said.contains("mdd server"),
        "{said}"
    );
    first.kill9().await;
    let again = TestServer::start(dir.path(), &[]).await;
    again.stop().await;
}

/// `MDD_TOKEN` in the environment and `--token-file` on the command line is not an error: the
/// flag wins, as documented. A config file's `subscriptions: [no]` is the subscription `no`
/// (YAML 1.2), not `false`.
#[tokio::test]
async fn an_agent_takes_the_token_file_over_the_environment_and_yaml_1_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let (_, token) = server
        .post("/api/v1/tokens", &serde_json::json!({ "role": "agent" }))
        .await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token["token"].as_str().expect("token")).expect("write");
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, "subscriptions: [no, on]\nlabels: { ipv6: off }\n").expect("write");
    let _agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args([
            "agent",
            "--server",
            &server.url,
            "--name",
            "web1",
            "--config",
        ])
        .arg(&config)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--data")
        .arg(dir.path().join("agent"))
        .env("MDD_TOKEN", "mdd_a_stale_token_from_the_shell")
        .env("MDD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent");
    let mut agent = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, entities) = server.get("/api/v1/entities").await;
        if let Some(found) = entities["entities"]
            .as_array()
            .and_then(|list| list.iter().find(|e| e["name"] == "web1"))
        {
            agent = found["agent"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        agent["subscriptions"],
        serde_json::json!(["no", "on"]),
        "{agent}"
    );
    assert_eq!(agent["labels"]["ipv6"], "off", "{agent}");
    server.stop().await;
}

/// The smaller ones: a silence of a check or entity that exists nowhere is refused; a body
/// announced bigger than the limit is answered 413 before any of it is sent; an error never
/// echoes input raw (nor megabytes of it); every answer says `nosniff`.
#[tokio::test]
async fn small_holes_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let spec = "checks:\n  - { name: dns, ttl: 1h }\n  - { name: ldap, ttl: 1h, entity: ldap1 }\n";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    for (silence, field) in [
        (
            serde_json::json!({ "check": "dsn", "reason": "typo" }),
            "check: `dsn` is not a check",
        ),
        (
            serde_json::json!({ "entity": "nowhere", "reason": "typo" }),
            "entity: `nowhere` is not an entity",
        ),
    ] {
        let (status, body) = server.post("/api/v1/silences", &silence).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.starts_with(field)),
            "{body}"
        );
    }
    for silence in [
        serde_json::json!({ "check": "dns", "reason": "maintenance", "for": "1h" }),
        serde_json::json!({ "entity": "ldap1", "reason": "maintenance", "for": "1h" }),
    ] {
        let (status, body) = server.post("/api/v1/silences", &silence).await;
        assert_eq!(status, 201, "{body}");
    }

    // 413 at once: headers only, the body never sent.
    let address = server.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    stream
        .write_all(
            format!(
                "POST /api/v1/results HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("send headers");
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer
            .to_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{answer}"
    );

    // Input is never echoed raw or whole.
    let huge = format!("\u{1b}[31m<script>{}", "x".repeat(1_000_000));
    let (status, body) = server
        .post("/api/v1/results", &serde_json::json!({ "results": huge }))
        .await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().expect("an error");
    assert!(error.len() < 600, "{} bytes", error.len());
    assert!(
        !error.contains('\u{1b}') && error.contains("[31m<script>"),
        "{error}"
    );
    let (status, body) = server
        .get(&format!("/api/v1/events?{}=1", "\u{7}".repeat(3)))
        .await;
    assert_eq!(status, 400);
    assert!(
        !body["error"].as_str().unwrap_or_default().contains('\u{7}'),
        "{body}"
    );

    for path in [
        "/healthz",
        "/api/v1/events",
        "/api/v1/nothing-here",
        "/metrics",
    ] {
        let response = server
            .http
            .get(format!("{}{path}", server.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("answer");
        assert_eq!(
            response
                .headers()
                .get("x-content-type-options")
                .and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{path}"
        );
    }
    server.stop().await;
}

/// `--admin-token-file` on a store that already has tokens is not ignored: it is added as an
/// admin token, which is how an operator with only the data directory regains admin access.
#[tokio::test]
async fn admin_access_comes_back_with_only_the_data_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &[]).await;
    server.stop().await;
    let new_secret = "mdd_recovered_admin_secret_0123456789";
    let file = dir.path().join("admin-token");
    std::fs::write(&file, format!("{new_secret}\n")).expect("write");
    let server = TestServer::start(
        &data,
        &["--admin-token-file", file.to_str().expect("utf-8")],
    )
    .await;
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(new_secret),
            Some(br#"{"role": "read", "name": "made with the recovered token"}"#.to_vec()),
        )
        .await;
    assert_eq!(status, 201, "the recovered token is an admin: {body}");
    // Starting again with the same file adds nothing more.
    server.stop().await;
    let server = TestServer::start(
        &data,
        &["--admin-token-file", file.to_str().expect("utf-8")],
    )
    .await;
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/events",
            Some(new_secret),
            None,
        )
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// The server's own checks are stored in groups like everyone else's results: it handed each
/// result to ingestion and waited for its commit before the next, so a group held one result
/// (an fsync each), and at 1,000 checks a second runs fell behind.
#[tokio::test]
async fn the_servers_own_checks_are_stored_in_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = String::from("defaults: { interval: 1s, timeout: 5s }\nchecks:\n");
    for i in 0..300 {
        spec.push_str(&format!(
            "  - {{ name: c{i:03}, command: /usr/lib/nagios/plugins/check_dummy 0 fine }}\n"
        ));
    }
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec).expect("write spec");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--spec", spec_path.to_str().expect("utf-8")],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let metrics = server.page_text("/metrics").await;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let (results, groups) = (
        value("mdd_ingest_group_results_sum"),
        value("mdd_ingest_group_results_count"),
    );
    assert!(
        results >= 600.0,
        "{results} results stored in 4 s of 300 checks a second"
    );
    // Checks are spread over the second, so on a fast disk most commits still hold one
    // result; what matters is that results arriving during a commit share the next one
    // (before, every commit held exactly one: groups == results).
    assert!(
        results / groups > 1.05,
        "{results} results in {groups} group commits: one per result is no grouping"
    );
    server.stop().await;
}

/// An `mdd agent` on loopback with its stderr in a file.
struct Agent {
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl Agent {
    fn start(
        server: &str,
        token: &str,
        subscriptions: &str,
        data: &std::path::Path,
        wrapper: &[&str],
    ) -> Agent {
        let log = data.with_extension("log");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_mdd"));
                c
            }
            None => tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd")),
        };
        // Its own process group, killed whole when the test ends: a wrapper (faketime) may
        // run the agent as its child rather than in its place.
        command.process_group(0);
        let child = command
            .args([
                "agent", "--server", server, "--token", token, "--name", "web1",
            ])
            .args(["--subscriptions", subscriptions, "--data"])
            .arg(data)
            .env("MDD_LOG", "warn")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log"),
            )
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mdd agent");
        Agent { child, log }
    }

    fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn agent_token(server: &TestServer) -> String {
    let (_, token) = server
        .post("/api/v1/tokens", &serde_json::json!({ "role": "agent" }))
        .await;
    token["token"].as_str().expect("token").to_string()
}

/// `kill -9` of an agent loses no result: each is on disk the moment it is made (results used
/// to wait up to a second in memory for the next batch: 2 to 17 of 20 checks lost one).
#[tokio::test]
async fn an_agent_killed_with_9_loses_no_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    // A plugin that writes down each run (its id and when) before it prints it.
    let runs = dir.path().join("runs");
    std::fs::create_dir(&runs).expect("runs dir");
    let plugin = dir.path().join("check_run");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\nid=$(cat /proc/sys/kernel/random/uuid)\necho \"$id $(date +%s%3N)\" >> {}/$1\necho \"OK $id\"\n",
            runs.display()
        ),
    )
    .expect("write plugin");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mut spec = String::from("defaults: { interval: 1s, timeout: 5s }\nchecks:\n");
    for i in 0..20 {
        spec.push_str(&format!(
            "  - {{ name: c{i:02}, subscriptions: [web], command: [{:?}, c{i:02}] }}\n",
            plugin.display().to_string()
        ));
    }
    assert_eq!(server.apply(&[("spec.yaml", &spec)]).await.0, 200);
    let token = agent_token(&server).await;
    let data = dir.path().join("agent");
    let mut agent = Agent::start(&server.url, &token, "web", &data, &[]);
    tokio::time::sleep(Duration::from_millis(3_700)).await;
    let _ = agent.child.kill().await; // SIGKILL
    let killed_at = jiff::Timestamp::now().as_millisecond();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _again = Agent::start(&server.url, &token, "web", &data, &[]);

    // Every run a plugin finished well before the kill is at the server.
    let mut made: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(&runs).expect("runs") {
        let path = entry.expect("entry").path();
        let check = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        for line in std::fs::read_to_string(&path).expect("read").lines() {
            let (id, at) = line.split_once(' ').expect("id and time");
            if at.parse::<i64>().expect("ms") < killed_at - 200 {
                made.push((check.clone(), id.to_string()));
            }
        }
    }
    assert!(
        made.len() >= 40,
        "about 3 runs of 20 checks before the kill: {}",
        made.len()
    );
    let mut missing = made.clone();
    for _ in 0..100 {
        let mut still = Vec::new();
        for (check, id) in &missing {
            let (_, results) = server
                .get(&format!(
                    "/api/v1/checks/{check}/results?from=1970-01-01T00:00:00Z&limit=1000"
                ))
                .await;
            let there = results["results"]
                .as_array()
                .is_some_and(|list| list.iter().any(|r| r["summary"] == format!("OK {id}")));
            if !there {
                still.push((check.clone(), id.clone()));
            }
        }
        missing = still;
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        missing.is_empty(),
        "{} of {} runs lost: {:?}",
        missing.len(),
        made.len(),
        &missing[..missing.len().min(5)]
    );
    server.stop().await;
}

/// An agent whose token is refused says so plainly and backs off (it used to retry every
/// second for ever); its results wait in the spool.
#[tokio::test]
async fn an_agent_with_a_refused_token_says_so_and_backs_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = "defaults: { interval: 250ms, timeout: 1s }\nchecks:\n  - { name: tick, subscriptions: [web], command: [echo, OK] }\n";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    let data = dir.path().join("agent");
    // It cannot fetch checks with a bad token: give it the check set as a past run left it.
    let (_, checks) = server.get("/api/v1/agent/checks?subscriptions=web").await;
    std::fs::create_dir_all(&data).expect("data");
    std::fs::write(data.join("checks.json"), checks.to_string()).expect("checks");
    let agent = Agent::start(
        &server.url,
        "mdd_revoked_token_0123456789abcdef",
        "web",
        &data,
        &[],
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let said = agent.said();
    let refusals = said.matches("does not accept this agent's token").count();
    assert!(refusals >= 2, "it says why: {said}");
    assert!(
        said.contains("mdd token create --role agent"),
        "and how to get a valid one: {said}"
    );
    // Result sends back off 1, 2, 4 s: at most 4 attempts in 8 s (it was 8).
    let sends = said.matches("Results are kept in the spool").count();
    assert!((2..=4).contains(&sends), "{sends} attempts in 8 s: {said}");
    let spooled: usize = std::fs::read_dir(data.join("spool"))
        .expect("spool")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .map(|text| text.lines().count())
        .sum();
    assert!(spooled >= 20, "results wait in the spool: {spooled}");
    server.stop().await;
}

/// A result refused as "unknown check" (the check came from the server: an apply is racing)
/// is tried again for a while, not dropped at once; a host clock two hours ahead is corrected
/// by the server's `Date` instead of every result being refused.
#[tokio::test]
async fn an_agent_holds_results_of_a_racing_apply_and_corrects_its_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let with_fast = "defaults: { interval: 250ms, timeout: 1s }\nchecks:\n  - { name: fast, subscriptions: [web], command: [echo, OK fast] }\n  - { name: keep, subscriptions: [web], command: [echo, OK keep] }\n";
    let without = "defaults: { interval: 250ms, timeout: 1s }\nchecks:\n  - { name: keep, subscriptions: [web], command: [echo, OK keep] }\n";
    assert_eq!(server.apply(&[("spec.yaml", with_fast)]).await.0, 200);
    let token = agent_token(&server).await;
    let data = dir.path().join("agent");
    let agent = Agent::start(
        &server.url,
        &token,
        "web",
        &data,
        &["faketime", "-f", "+2h"],
    );
    common::wait_for_events(&server, |events| {
        events
            .iter()
            .any(|e| e["check"] == "fast" && e["entity"] == "web1")
    })
    .await;
    let (_, event) = server.get("/api/v1/events/fast/web1").await;
    let executed = event["executed_at"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
        .expect("a time");
    let now = jiff::Timestamp::now().as_millisecond();
    assert!(
        (executed - now).abs() < 60_000,
        "dated by the server's clock: {event}"
    );
    assert!(
        agent.said().contains("ahead of the server's"),
        "{}",
        agent.said()
    );

    // `fast` leaves the spec while the agent has results of it in hand, and comes back.
    for _ in 0..40 {
        assert_eq!(server.apply(&[("spec.yaml", without)]).await.0, 200);
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        if data.join("refused.jsonl").exists() {
            break;
        }
        assert_eq!(server.apply(&[("spec.yaml", with_fast)]).await.0, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        data.join("refused.jsonl").exists(),
        "results of `fast` are held: {}",
        agent.said()
    );
    assert_eq!(server.apply(&[("spec.yaml", with_fast)]).await.0, 200);
    for _ in 0..50 {
        if !data.join("refused.jsonl").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !data.join("refused.jsonl").exists(),
        "held results were stored once the check came back"
    );
    assert!(
        agent.said().contains("trying again for 5m"),
        "{}",
        agent.said()
    );
    assert!(!agent.said().contains("dropped"), "{}", agent.said());
    server.stop().await;
}

/// Raises this test process' own open-files limit: it opens more sockets than 1,024.
fn raise_own_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
}

/// About a thousand sockets that send nothing took the server down under the usual soft
/// limit of 1,024 open files: `/healthz` and result posts timed out. The server raises its
/// limit, closes connections that send nothing (or trickle their headers) after its idle
/// timeout, and keeps answering.
#[tokio::test]
async fn idle_and_slow_connections_cannot_take_the_server_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raise_own_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    // Started as a service manager would start it: with the usual soft limit of 1,024.
    let server = TestServer::start_wrapped(
        &["sh", "-c", "ulimit -Sn 1024 && exec \"$0\" \"$@\""],
        dir.path(),
        &["--idle-timeout", "2s"],
    )
    .await
    .expect("server starts");
    let spec = "checks:\n  - { name: cron, ttl: 1h }\n";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    let address = server.url.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        idle.push(
            tokio::net::TcpStream::connect(&address)
                .await
                .expect("connect"),
        );
    }
    // Still answering, promptly, with 1,100 sockets open that sent nothing.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let health = http.get(format!("{}/healthz", server.url)).send().await;
    assert!(health.is_ok_and(|r| r.status() == 200), "healthz answers");
    let posted = http
        .post(format!("{}/api/v1/results", server.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(r#"{"results": [{"id": "r1", "check": "cron", "status": 0}]}"#)
        .send()
        .await;
    assert!(posted.is_ok_and(|r| r.status() == 200), "results are taken");

    // One that trickles its headers, a byte every 300 ms.
    let mut trickle = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let trickler = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n".iter() {
            if trickle.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    });
    // After the idle timeout the sockets that sent nothing are closed by the server.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let mut closed = 0;
    for stream in idle.iter_mut().take(50) {
        let mut buf = [0u8; 16];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 50, "idle connections are closed by the server");
    assert!(
        tokio::time::timeout(Duration::from_secs(20), trickler)
            .await
            .expect("the trickler ends")
            .expect("joined"),
        "a connection trickling its headers is cut off"
    );
    let (_, metrics) = {
        let text = http
            .get(format!("{}/metrics", server.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        ((), text)
    };
    assert!(
        metrics.contains("mdd_http_connections_timed_out_total"),
        "{metrics}"
    );
    server.stop().await;
}

/// Drawing a large deployment's page never holds up ingestion: a result posted while the
/// page of 10,000 checks is being drawn is acknowledged before the page arrives (the page held
/// the events' lock for as long as it took, and the writer waited for it).
#[tokio::test]
async fn a_large_page_being_drawn_holds_up_no_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let n = 10_000;
    let mut spec = String::from(
        "deployments:\n  - { name: big, selector: { dc: big }, settle: 1h }\nchecks:\n",
    );
    for i in 0..n {
        let depends = if i < 50 {
            String::new()
        } else {
            format!(", depends_on: [c{}]", i % 50)
        };
        spec.push_str(&format!(
            "  - {{ name: c{i}, owner: t{}, labels: {{ dc: big }}, ttl: 1h{depends} }}\n",
            i % 20
        ));
    }
    let (status, body) = server.apply(&[("spec.yaml", &spec)]).await;
    assert_eq!(status, 200, "{body}");
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let results: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| serde_json::json!({ "id": format!("r{i}"), "check": format!("c{i}"), "entity": "e1", "status": i % 3 }))
            .collect();
        let (status, body) = server
            .post(
                "/api/v1/results",
                &serde_json::json!({ "results": results }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Results are posted one after another for as long as the page is being drawn: with the
    // page holding the events' lock, none got through until it was done.
    let drawn = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let page = {
        let (http, url, drawn) = (server.http.clone(), server.url.clone(), drawn.clone());
        tokio::spawn(async move {
            let text = http
                .get(format!("{url}/deployments/big"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("page")
                .text()
                .await
                .expect("text");
            drawn.store(true, std::sync::atomic::Ordering::SeqCst);
            text.len()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut acknowledged_meanwhile = 0;
    for i in 0.. {
        let (status, _) = server
            .post(
                "/api/v1/results",
                &serde_json::json!({ "results": [{ "id": format!("during{i}"), "check": "c1", "entity": "e1", "status": 0 }] }),
            )
            .await;
        assert_eq!(status, 200);
        if drawn.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        acknowledged_meanwhile += 1;
    }
    let weight = page.await.expect("page task");
    assert!(weight > 1_000_000, "the whole page: {weight} bytes");
    assert!(
        acknowledged_meanwhile >= 5,
        "only {acknowledged_meanwhile} results were acknowledged while the page was being drawn"
    );
    server.stop().await;
}

/// An open dashboard tab does not keep a core busy: while nothing a page shows changes, the
/// live script's look is answered "not modified" without drawing the page again.
#[tokio::test]
async fn an_open_tab_is_told_not_modified_while_nothing_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let spec =
        "deployments:\n  - { name: dc1, settle: 1h }\nchecks:\n  - { name: cron, ttl: 1h }\n";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    let get = |tag: Option<String>| {
        let server = &server;
        async move {
            let mut request = server
                .http
                .get(format!("{}/deployments/dc1", server.url))
                .bearer_auth(ADMIN);
            if let Some(tag) = tag {
                request = request.header("if-none-match", tag);
            }
            let response = request.send().await.expect("page");
            let tag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (
                response.status().as_u16(),
                tag,
                response.text().await.expect("body"),
            )
        }
    };
    let (status, tag, body) = get(None).await;
    assert_eq!(status, 200);
    assert!(body.contains("dc1"));
    let tag = tag.expect("an ETag");
    // The tracker looks once a second; let it settle, then ask with what we have.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // (A page's version also turns over every 15 s, so that ages it shows move on: ask again
    // if that happened between the two looks.)
    let (mut status, mut settled, mut again, mut body) = (0, String::new(), None, String::new());
    for _ in 0..3 {
        settled = get(None).await.1.expect("an ETag");
        (status, again, body) = get(Some(settled.clone())).await;
        if status == 304 {
            break;
        }
    }
    assert_eq!(status, 304, "nothing changed: {tag} then {settled}");
    assert!(body.is_empty());
    assert_eq!(again.as_deref(), Some(settled.as_str()));
    let (status, _) = server
        .post(
            "/api/v1/results",
            &serde_json::json!({ "results": [{ "id": "r1", "check": "cron", "entity": "e1", "status": 2 }] }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, changed, body) = get(Some(settled.clone())).await;
    assert_eq!(status, 200, "a result changed what the page shows");
    assert!(body.contains("cron"));
    assert_ne!(changed.as_deref(), Some(settled.as_str()));
    server.stop().await;
}
