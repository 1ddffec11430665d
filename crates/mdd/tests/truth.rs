//! What the server says must be what happened: deployments' history across restarts and
//! applies, "since" meaning one thing on every surface, checks nobody runs, and the breakage
//! report counting what MDD calls an incident. Real server processes on loopback, real kills.

use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{TestServer, mdd_client, wait_for_events};

const PLUGIN: &str = "/usr/lib/nagios/plugins/check_dummy";

/// Two server-side checks every second, `b` behind `a`, in a deployment settling in 2 s.
fn deployment_spec(settle: &str) -> String {
    format!(
        "defaults: {{ interval: 1s, timeout: 1s }}\n\
         deployments:\n  - {{ name: dc1, selector: {{ dc: one }}, settle: {settle} }}\n\
         checks:\n\
         \x20 - {{ name: a, labels: {{ dc: one }}, command: {PLUGIN} 0 fine }}\n\
         \x20 - {{ name: b, labels: {{ dc: one }}, depends_on: [a], command: {PLUGIN} 0 fine }}\n"
    )
}

/// What a deployment has been through, without what moves on its own (counts of now).
fn history(detail: &Value) -> Value {
    json!({
        "done_at": detail["done_at"],
        "started_at": detail["started_at"],
        "timeline": detail["timeline"],
        "regressions": detail["regressions"],
        "checks": detail["checks"].as_array().map(|checks| checks.iter().map(|c| json!({
            "name": c["name"], "first_green_at": c["first_green_at"],
            "reds_after_green": c["reds_after_green"],
        })).collect::<Vec<_>>()),
    })
}

async fn wait_done(server: &TestServer) -> Value {
    for _ in 0..300 {
        let (_, detail) = server.get("/api/v1/deployments/dc1").await;
        if detail["done"] == true {
            return detail;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("dc1 never got done");
}

/// A restart, graceful or `kill -9`, with the server down for longer than the checks' ttl,
/// and an apply that changes only `settle`, leave a done deployment's history as it was.
#[tokio::test]
async fn restarts_and_applies_never_rewrite_a_deployments_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, deployment_spec("2s")).expect("write spec");
    let spec_arg = spec.to_str().expect("utf-8 path");
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &["--spec", spec_arg]).await;
    let before = history(&wait_done(&server).await);
    assert_eq!(before["timeline"].as_array().map(Vec::len), Some(2));

    // ttl is 2 × 1 s + 1 s: four seconds down is longer than that.
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let server = TestServer::start(&data, &["--spec", spec_arg]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, detail) = server.get("/api/v1/deployments/dc1").await;
    assert_eq!(history(&detail), before, "after SIGTERM and a start");
    let (_, events) = server.get("/api/v1/events").await;
    assert!(
        events["events"]
            .as_array()
            .is_some_and(|e| e.iter().all(|e| e["state"] == "passing")),
        "{events}"
    );

    server.kill9().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let server = TestServer::start(&data, &["--spec", spec_arg]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, detail) = server.get("/api/v1/deployments/dc1").await;
    assert_eq!(history(&detail), before, "after kill -9 and a start");

    // Only the deployment's settle changes.
    let (status, applied) = server.apply(&[(spec_arg, &deployment_spec("5s"))]).await;
    assert_eq!(status, 200, "{applied}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, detail) = server.get("/api/v1/deployments/dc1").await;
    assert_eq!(detail["settle_ms"], 5000);
    assert_eq!(history(&detail), before, "after an apply of settle only");
    server.stop().await;
}

fn push(id: &str, check: &str, status: i64, at: &str) -> Value {
    json!({ "id": id, "check": check, "entity": "e1", "status": status,
            "output": format!("{check} {status}"), "executed_at": at })
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .expect("in range")
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn event<'a>(events: &'a [Value], check: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["check"] == check)
        .unwrap_or_else(|| panic!("no event for {check} in {events:?}"))
}

/// "Since" is when the state shown began, derived states included, and every surface says
/// the same: the events list, one event, the deployment, `/events`, the check page, `/docs`,
/// `mdd status` and `mdd deploy status`.
#[tokio::test]
async fn since_means_when_the_state_shown_began_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let spec = "deployments:\n  - { name: dc1, settle: 1h }\n\
                checks:\n\
                \x20 - { name: db, ttl: 1h }\n\
                \x20 - { name: api, ttl: 1h, depends_on: [db] }\n\
                \x20 - { name: cron, ttl: 2s }\n";
    let (status, body) = server.apply(&[("spec.yaml", spec)]).await;
    assert_eq!(status, 200, "{body}");
    let now = jiff::Timestamp::now().as_millisecond();
    let (t0, t1) = (now - 60_000, now - 20_000);
    // db and api pass from t0; db fails at t1, so api is blocked from t1 although its own
    // status has not changed since t0. cron passes at `now` and goes stale 2 s later.
    let (status, body) = server
        .post(
            "/api/v1/results",
            &json!({ "results": [
                push("r1", "db", 0, &rfc3339(t0)),
                push("r2", "api", 0, &rfc3339(t0)),
                push("r3", "db", 2, &rfc3339(t1)),
                push("r4", "api", 0, &rfc3339(t1 + 1_000)),
                push("r5", "cron", 0, &rfc3339(now)),
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let events = wait_for_events(&server, |events| {
        events
            .iter()
            .any(|e| e["check"] == "cron" && e["state"] == "stale")
    })
    .await;
    let api = event(&events, "api");
    assert_eq!(api["state"], "blocked");
    assert_eq!(api["since"], rfc3339(t1), "blocked since db failed: {api}");
    assert_eq!(event(&events, "db")["since"], rfc3339(t1));
    let cron = event(&events, "cron");
    assert_eq!(
        cron["since"],
        rfc3339(now + 2_000),
        "stale a ttl after: {cron}"
    );

    let (_, one) = server.get("/api/v1/events/api/e1").await;
    assert_eq!(one["since"], rfc3339(t1));
    let (_, detail) = server.get("/api/v1/deployments/dc1").await;
    let progress: Vec<&Value> = detail["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .collect();
    let of = |name: &str| {
        progress
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["since"].clone())
    };
    assert_eq!(of("api"), Some(json!(rfc3339(t1))));
    assert_eq!(of("cron"), Some(json!(rfc3339(now + 2_000))));

    // Pages and commands show it to the second.
    let second = |ms: i64| {
        rfc3339(ms)
            .chars()
            .take(19)
            .collect::<String>()
            .replace('T', " ")
    };
    let page = |path: &'static str| {
        let server = &server;
        async move {
            server
                .http
                .get(format!("{}{path}", server.url))
                .bearer_auth(common::ADMIN)
                .send()
                .await
                .expect("page")
                .text()
                .await
                .expect("text")
        }
    };
    let events_page = page("/events").await;
    assert!(events_page.contains(&second(t1)), "{events_page}");
    assert!(events_page.contains(&second(now + 2_000)));
    assert!(
        !events_page.contains(&second(t0)),
        "nothing shown is in its state since t0"
    );
    let check_page = page("/checks/api").await;
    assert!(check_page.contains(&second(t1)), "{check_page}");
    let docs_page = page("/docs").await;
    assert!(docs_page.contains(&second(t1)), "{docs_page}");

    let (code, status_out, _) = mdd_client(&server, &["status"]).await;
    assert_eq!(code, Some(1));
    let api_line = status_out
        .lines()
        .find(|l| l.contains(" api "))
        .expect("api row");
    assert!(api_line.contains(&second(t1)), "{status_out}");
    let (_, deploy_out, _) = mdd_client(&server, &["deploy", "status", "dc1"]).await;
    assert!(deploy_out.contains(&second(t1)), "{deploy_out}");
    assert!(deploy_out.contains(&second(now + 2_000)), "{deploy_out}");
    server.stop().await;
}

/// A check whose subscription no agent serves says why it has no result, goes stale after its
/// ttl like any other check and is notified as stale (as is a push-only check whose results
/// stop), `mdd apply` warns about it, and it resolves once an agent runs it.
#[tokio::test]
async fn checks_nobody_runs_say_why_and_go_stale_like_any_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = common::Receiver::start().await;
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let spec = format!(
        "defaults: {{ interval: 1s, timeout: 1s }}\n\
         handlers:\n  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/n', filter: {{ owners: [web] }} }}\n\
         checks:\n\
         \x20 - {{ name: wbe-http, owner: web, subscriptions: [wbe], command: {PLUGIN} 0 up }}\n\
         \x20 - {{ name: cron, owner: web, ttl: 2s }}\n",
        receiver.port
    );
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec).expect("write spec");
    let spec_arg = spec_path.to_str().expect("utf-8");
    let (code, out, err) = mdd_client(&server, &["apply", spec_arg]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("warning: no agent known to this server is subscribed to `wbe`: wbe-http"),
        "{err}"
    );

    let (_, events) = server.get("/api/v1/events").await;
    let events = events["events"].as_array().cloned().unwrap_or_default();
    let wbe = event(&events, "wbe-http");
    assert_eq!(wbe["state"], "pending", "{wbe}");
    assert_eq!(wbe["reason"], "no agent subscribed to `wbe`", "{wbe}");
    let (_, status_out, _) = mdd_client(&server, &["status"]).await;
    assert!(
        status_out.contains("no result yet: no agent subscribed to `wbe`"),
        "{status_out}"
    );
    let (status, _) = server
        .post(
            "/api/v1/results",
            &json!({ "results": [{ "id": "c1", "check": "cron", "entity": "e1", "status": 0 }] }),
        )
        .await;
    assert_eq!(status, 200);

    // ttl 3 s for wbe-http (2 × interval + timeout), 2 s for cron.
    let events = wait_for_events(&server, |events| {
        events.iter().filter(|e| e["state"] == "stale").count() == 2
    })
    .await;
    assert!(
        event(&events, "wbe-http")["summary"]
            .as_str()
            .is_some_and(|s| s.contains("no agent subscribed to `wbe`")),
        "{events:?}"
    );
    let told = receiver.wait_for(2).await;
    let mut sorted = told.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("cron".to_string(), "incident".to_string()),
            ("wbe-http".to_string(), "incident".to_string())
        ],
        "{told:?}"
    );
    let bodies = receiver.bodies.lock().expect("lock").clone();
    let stale_wbe = bodies
        .iter()
        .find(|b| b["check"]["metadata"]["name"] == "wbe-http")
        .expect("told");
    assert_eq!(
        stale_wbe["check"]["status"], 1,
        "a ttl runs out as Sensu's does: {stale_wbe}"
    );
    assert_eq!(stale_wbe["mdd"]["state"], "stale");
    let page = server
        .http
        .get(format!("{}/checks/wbe-http", server.url))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(page.contains("no agent subscribed to `wbe`"), "{page}");

    // cron reports again; an agent subscribed to wbe starts: both resolve.
    let (status, _) = server
        .post(
            "/api/v1/results",
            &json!({ "results": [{ "id": "c2", "check": "cron", "entity": "e1", "status": 0 }] }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, token) = server
        .post("/api/v1/tokens", &json!({ "role": "agent" }))
        .await;
    let agent_data = dir.path().join("agent");
    let _agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args(["agent", "--server", &server.url, "--name", "web1"])
        .args(["--token", token["token"].as_str().expect("token")])
        .args(["--subscriptions", "wbe", "--data"])
        .arg(&agent_data)
        .env("MDD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent");
    let told = receiver.wait_for(4).await;
    let resolved: Vec<&String> = told
        .iter()
        .filter(|(_, kind)| kind == "resolution")
        .map(|(check, _)| check)
        .collect();
    assert_eq!(resolved.len(), 2, "{told:?}");
    assert!(resolved.contains(&&"cron".to_string()) && resolved.contains(&&"wbe-http".to_string()));
    wait_for_events(&server, |events| {
        events
            .iter()
            .any(|e| e["check"] == "wbe-http" && e["entity"] == "web1" && e["state"] == "passing")
    })
    .await;
    server.stop().await;
}

/// Runs `mdd` in `cwd` against `server`.
async fn mdd_in(
    server: &TestServer,
    cwd: &std::path::Path,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args(args)
        .current_dir(cwd)
        .env("MDD_SERVER", &server.url)
        .env("MDD_TOKEN", common::ADMIN)
        .output()
        .await
        .expect("run mdd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The same file applied from another directory or by another path replaces itself; two files
/// that really define one check are refused naming both and how to resolve it; `--dry-run`
/// names the revision the apply will make; deployments and handlers are in the diff.
#[tokio::test]
async fn applies_name_files_by_what_they_are_not_how_they_were_reached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let repo = dir.path().join("checkout");
    std::fs::create_dir_all(repo.join(".git")).expect("a git work tree");
    std::fs::create_dir_all(repo.join("dc")).expect("dir");
    let spec = "deployments:\n  - { name: ams1, settle: 1m }\n\
                checks:\n  - { name: dns, ttl: 1h }\n  - { name: ldap, ttl: 1h }\n";
    std::fs::write(repo.join("dc/ams1.yaml"), spec).expect("write");

    let (code, out, err) = mdd_in(&server, &repo, &["apply", "--dry-run", "dc/ams1.yaml"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revision would be 1"), "{out}");
    assert!(out.contains("added  deployment ams1"), "{out}");
    let (code, out, err) = mdd_in(&server, &repo, &["apply", "dc/ams1.yaml"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revision now 1"), "{out}");

    // From another directory, and by an absolute path: the same file, nothing to change.
    let absolute = repo.join("dc/ams1.yaml");
    let (code, out, err) = mdd_in(&server, &repo.join("dc"), &["apply", "ams1.yaml"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("0 added, 0 changed, 0 removed, 2 unchanged"),
        "{out}"
    );
    let (code, out, err) = mdd_in(
        &server,
        dir.path(),
        &["apply", absolute.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("revision now 1"), "{out}");
    let (_, applied) = server.get("/api/v1/spec").await;
    assert_eq!(applied["files"][0]["file"], "dc/ams1.yaml", "{applied}");

    // A changed settle and a new handler are listed; the dry run names the real revision.
    let changed = format!(
        "{}handlers:\n  - {{ name: pager, type: webhook, url: 'http://127.0.0.1:9/x' }}\n",
        spec.replace("settle: 1m", "settle: 2m")
    );
    std::fs::write(&absolute, &changed).expect("write");
    let (_, out, _) = mdd_in(&server, &repo, &["apply", "--dry-run", "dc/ams1.yaml"]).await;
    assert!(out.contains("changed  deployment ams1"), "{out}");
    assert!(out.contains("added  handler pager"), "{out}");
    assert!(out.contains("revision would be 2"), "{out}");
    let (_, out, _) = mdd_in(&server, &repo, &["apply", "dc/ams1.yaml"]).await;
    assert!(out.contains("revision now 2"), "{out}");

    // Another file that really defines dns too.
    std::fs::write(
        repo.join("dc/more.yaml"),
        "checks:\n  - { name: dns, ttl: 1h }\n",
    )
    .expect("write");
    let (code, _, err) = mdd_in(&server, &repo, &["apply", "dc/more.yaml"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("dc/more.yaml:2:")
            && err.contains("duplicate check name `dns`: already used at dc/ams1.yaml:4")
            && err.contains("--prune"),
        "{err}"
    );
    let (code, out, err) = mdd_in(&server, &repo, &["apply", "--prune", "dc/more.yaml"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("removed  ldap") && out.contains("removed  deployment ams1"),
        "{out}"
    );
    server.stop().await;
}

/// The breakage report counts what MDD calls an incident: not the red of bring-up, and not the
/// time a check spends blocked behind a failing dependency (that is the root cause's). Before,
/// a check blocked during bring-up was the top offender.
#[tokio::test]
async fn the_report_counts_root_causes_after_bring_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let spec = "deployments:\n  - { name: dc1, settle: 1h }\n\
                checks:\n\
                \x20 - { name: db, owner: data, ttl: 1h }\n\
                \x20 - { name: api, owner: web, ttl: 1h, depends_on: [db] }\n";
    let (status, body) = server.apply(&[("spec.yaml", spec)]).await;
    assert_eq!(status, 200, "{body}");
    let now = jiff::Timestamp::now().as_millisecond();
    let at = |seconds_ago: i64| rfc3339(now - seconds_ago * 1_000);
    let post = |results: Vec<Value>| {
        let server = &server;
        async move {
            let (status, body) = server
                .post("/api/v1/results", &json!({ "results": results }))
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    // Bring-up: both red for 50 s (api blocked behind db), then green.
    post(vec![
        push("b1", "db", 2, &at(100)),
        push("b2", "api", 2, &at(100)),
        push("b3", "db", 0, &at(50)),
        push("b4", "api", 0, &at(50)),
    ])
    .await;
    // The tracker has seen both green (it looks once a second).
    for _ in 0..100 {
        let (_, detail) = server.get("/api/v1/deployments/dc1").await;
        let remembered = detail["checks"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| !c["first_green_at"].is_null()));
        if remembered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // In production: db fails 40 s → 30 s ago; api fails with it and goes on failing by
    // itself until 20 s ago.
    post(vec![
        push("p1", "db", 2, &at(40)),
        push("p2", "api", 2, &at(40)),
        push("p3", "db", 0, &at(30)),
        push("p4", "api", 2, &at(29)),
        push("p5", "api", 0, &at(20)),
    ])
    .await;
    // Incidents are recorded with the event checkpoint, once a second.
    let mut report = Value::Null;
    for _ in 0..50 {
        let (status, body) = server.get("/api/v1/report?window=24h").await;
        assert_eq!(status, 200, "{body}");
        report = body;
        let api_done = report["checks"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["check"] == "api" && r["open"] == 0 && r["incidents"] != 0)
        });
        if api_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = |check: &str| {
        report["checks"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["check"] == check))
            .cloned()
            .unwrap_or_else(|| panic!("no row for {check}: {report}"))
    };
    let db = row("db");
    assert_eq!(
        (db["incidents"].as_u64(), db["failing_ms"].as_i64()),
        (Some(1), Some(10_000)),
        "{db}"
    );
    let api = row("api");
    assert_eq!(
        (
            api["incidents"].as_u64(),
            api["failing_ms"].as_i64(),
            api["mttr_ms"].as_i64()
        ),
        (Some(1), Some(10_000), Some(10_000)),
        "its own from when db recovered: {api}"
    );
    assert!(
        report["counts"]
            .as_str()
            .is_some_and(|c| c.contains("bring-up") && c.contains("root cause")),
        "{report}"
    );
    let (code, out, _) = mdd_client(&server, &["report", "--window", "24h"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("bring-up is expected"), "{out}");
    server.stop().await;
}

/// Every time in `value` is an RFC 3339 string (or null) and every status a word: walks the
/// whole document, so a new endpoint or field that forgets it fails here.
fn check_times_and_statuses(value: &Value, path: &str, problems: &mut Vec<String>) {
    const TIMES: [&str; 9] = [
        "since",
        "first_seen",
        "last_seen",
        "last_ok",
        "last_state_change",
        "last_keepalive",
        "from",
        "to",
        "at",
    ];
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let here = format!("{path}.{key}");
                let is_time = key.ends_with("_at") || TIMES.contains(&key.as_str());
                if is_time {
                    let ok = match inner {
                        Value::Null => true,
                        Value::String(text) => text.parse::<jiff::Timestamp>().is_ok(),
                        _ => false,
                    };
                    if !ok {
                        problems.push(format!("{here} is not an RFC 3339 time: {inner}"));
                    }
                }
                if key == "status" && !inner.is_string() {
                    problems.push(format!("{here} is not a word: {inner}"));
                }
                if key == "recent_statuses"
                    && !inner
                        .as_array()
                        .is_some_and(|list| list.iter().all(Value::is_string))
                {
                    problems.push(format!("{here} are not words: {inner}"));
                }
                check_times_and_statuses(inner, &here, problems);
            }
        }
        Value::Array(list) => {
            for (i, inner) in list.iter().enumerate() {
                check_times_and_statuses(inner, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

/// Times are RFC 3339 and statuses words in every answer (the results endpoints gave epoch
/// milliseconds, `recent_statuses` integers), and results of a check that does not exist are
/// a 404, not an empty list.
#[tokio::test]
async fn the_api_gives_times_and_statuses_one_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let spec = "deployments:\n  - { name: dc1, settle: 1s }\n\
                handlers:\n  - { name: pager, type: webhook, url: 'http://127.0.0.1:9/x', filter: { owners: [nobody] } }\n\
                checks:\n  - { name: db, ttl: 1h }\n  - { name: api, ttl: 1h, depends_on: [db] }\n";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    let now = jiff::Timestamp::now().as_millisecond();
    let (status, _) = server
        .post(
            "/api/v1/results",
            &json!({ "results": [
                push("t1", "db", 0, &rfc3339(now - 5_000)),
                push("t2", "db", 2, &rfc3339(now - 4_000)),
                push("t3", "api", 0, &rfc3339(now - 3_000)),
            ]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post(
            "/api/v1/silences",
            &json!({ "check": "db", "reason": "testing", "for": "1h" }),
        )
        .await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut problems = Vec::new();
    for path in [
        "/api/v1/events",
        "/api/v1/events/db/e1",
        "/api/v1/results/t2",
        "/api/v1/checks/db/results",
        "/api/v1/deployments",
        "/api/v1/deployments/dc1",
        "/api/v1/entities",
        "/api/v1/silences",
        "/api/v1/report",
        "/api/v1/handlers",
        "/api/v1/handlers/pager/deliveries",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        check_times_and_statuses(&body, path, &mut problems);
    }
    assert!(problems.is_empty(), "{problems:#?}");
    let (_, result) = server.get("/api/v1/results/t2").await;
    assert_eq!(result["status"], "critical");
    assert_eq!(result["executed_at"], rfc3339(now - 4_000));
    let (_, one) = server.get("/api/v1/events/db/e1").await;
    assert_eq!(one["recent_statuses"], json!(["ok", "critical"]));

    let (status, body) = server.get("/api/v1/checks/nope/results").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no check `nope`")),
        "{body}"
    );
    server.stop().await;
}

/// `/events` sorts worst first before it cuts a page: with 2,101 events a failing one whose
/// name sorts last is at the top of the first page (it was cut off), and every event is on
/// some page.
#[tokio::test]
async fn the_events_page_shows_the_worst_first_and_pages_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let mut spec = String::from("checks:\n");
    for i in 0..2_100 {
        spec.push_str(&format!("  - {{ name: c{i:04}, ttl: 1h }}\n"));
    }
    spec.push_str("  - { name: zz-broken, ttl: 1h }\n  - { name: zz-never, ttl: 1h }\n");
    let (status, body) = server.apply(&[("spec.yaml", &spec)]).await;
    assert_eq!(status, 200, "{body}");
    let mut results: Vec<Value> = (0..2_100)
        .map(|i| json!({ "id": format!("r{i}"), "check": format!("c{i:04}"), "entity": "e1", "status": 0 }))
        .collect();
    results.push(json!({ "id": "bad", "check": "zz-broken", "entity": "e1", "status": 2, "output": "BROKEN" }));
    let (status, body) = server
        .post("/api/v1/results", &json!({ "results": results }))
        .await;
    assert_eq!(status, 200, "{body}");
    let page = |path: String| {
        let server = &server;
        async move {
            server
                .http
                .get(format!("{}{path}", server.url))
                .bearer_auth(common::ADMIN)
                .send()
                .await
                .expect("page")
                .text()
                .await
                .expect("text")
        }
    };
    let first = page("/events".into()).await;
    let rows: Vec<&str> = first
        .split("<tr data-check=\"")
        .skip(1)
        .filter_map(|row| row.split('"').next())
        .collect();
    assert_eq!(rows.first(), Some(&"zz-broken"), "worst first");
    assert_eq!(
        rows.get(1),
        Some(&"zz-never"),
        "pending next, before passing"
    );
    assert_eq!(rows.len(), 500);
    assert!(first.contains("1–500 of 2102 matching"), "{first}");
    assert!(first.contains("rel=\"next\""));
    let mut seen = rows.len();
    for n in 2..=5 {
        let more = page(format!("/events?page={n}")).await;
        seen += more.matches("<tr data-check=\"").count();
    }
    assert_eq!(seen, 2_102, "every event is on a page");
    let filtered = page("/events?state=failing".into()).await;
    assert_eq!(filtered.matches("<tr data-check=\"").count(), 1);
    server.stop().await;
}

/// What a plugin prints never reaches a terminal raw: escape sequences and control characters
/// are shown escaped in the text report, `mdd status` and `mdd deploy status`; JUnit keeps
/// tabs and puts the spec line in its own attribute; logs have no colour when stderr is not a
/// terminal.
#[tokio::test]
async fn nothing_a_plugin_prints_reaches_a_terminal_raw() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("check_hostile");
    std::fs::write(
        &plugin,
        "#!/bin/sh\nprintf '\\033]0;owned\\007\\033[2JCRITICAL\\tbad | x=1\\n\\033[31mred line\\n'\nexit 2\n",
    )
    .expect("write plugin");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "deployments:\n  - {{ name: dc1, settle: 1s }}\n\
             checks:\n  - {{ name: hostile, owner: ops, interval: 1s, command: {:?} }}\n",
            plugin.display().to_string()
        ),
    )
    .expect("write spec");
    let spec_arg = spec.to_str().expect("utf-8");
    let verify = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
            .arg("verify")
            .arg(spec_arg)
            .args(args)
            .env("MDD_LOG", "debug")
            .output()
            .expect("mdd verify")
    };
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(
        text.contains("\\x1b]0;owned\\x07\\x1b[2JCRITICAL\\tbad"),
        "{text}"
    );
    assert!(text.contains("\\x1b[31mred line"), "{text}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));

    let junit = verify(&["--format", "junit"]);
    let xml = String::from_utf8_lossy(&junit.stdout);
    assert!(xml.contains("CRITICAL&#9;bad"), "{xml}");
    assert!(
        xml.contains(&format!("file=\"{spec_arg}\" line=\"4\"")),
        "{xml}"
    );

    let server = TestServer::start(&dir.path().join("data"), &["--spec", spec_arg]).await;
    wait_for_events(&server, |events| {
        events
            .iter()
            .any(|e| e["check"] == "hostile" && e["state"] == "failing")
    })
    .await;
    for args in [&["status"][..], &["deploy", "status", "dc1"][..]] {
        let (_, out, _) = mdd_client(&server, args).await;
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}'),
            "{args:?}: {out:?}"
        );
        assert!(out.contains("\\x1b]0;owned"), "{args:?}: {out}");
    }
    server.stop().await;

    // A server's logs to a file (a pipe, a journal) carry no colour codes.
    let log = dir.path().join("server.log");
    let mut logged = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--spec",
            spec_arg,
            "--data",
        ])
        .arg(dir.path().join("data"))
        .env("MDD_LOG", "debug")
        .env("MDD_ADMIN_TOKEN", common::ADMIN)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn server");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = logged.kill().await;
    let logs = std::fs::read_to_string(&log).expect("read log");
    assert!(logs.contains("DEBUG"), "debug logs were written: {logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "no colour in logs to a file: {logs:?}"
    );
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Reports written by `--output` and `docs -o` take the mode the umask allows (they were
/// always 0600), keep an existing file's mode, follow a symlink to its target, and write into
/// a FIFO instead of replacing it; the server's data directory and database are private.
#[tokio::test]
async fn files_mdd_writes_have_the_modes_users_expect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "checks:\n  - { name: ok, command: /usr/lib/nagios/plugins/check_dummy 0 fine }\n",
    )
    .expect("write spec");
    let spec_arg = spec.to_str().expect("utf-8").to_string();
    let mdd_with_umask = |umask: &str, args: &[String]| {
        let line = format!("umask {umask}; exec \"$0\" \"$@\"");
        std::process::Command::new("sh")
            .arg("-c")
            .arg(line)
            .arg(env!("CARGO_BIN_EXE_mdd"))
            .args(args)
            .output()
            .expect("run mdd")
    };
    let report = dir.path().join("report.json");
    let report_arg = report.to_str().expect("utf-8").to_string();
    let out = mdd_with_umask(
        "022",
        &[
            "verify".into(),
            spec_arg.clone(),
            "--format".into(),
            "json".into(),
            "--output".into(),
            report_arg.clone(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode_of(&report), 0o644);
    std::fs::remove_file(&report).expect("remove");
    mdd_with_umask(
        "027",
        &[
            "verify".into(),
            spec_arg.clone(),
            "--output".into(),
            report_arg.clone(),
        ],
    );
    assert_eq!(mode_of(&report), 0o640);
    // An existing file keeps its mode when it is replaced.
    std::fs::set_permissions(&report, std::os::unix::fs::PermissionsExt::from_mode(0o664))
        .expect("chmod");
    mdd_with_umask(
        "077",
        &[
            "verify".into(),
            spec_arg.clone(),
            "--output".into(),
            report_arg.clone(),
        ],
    );
    assert_eq!(mode_of(&report), 0o664);
    let docs = dir.path().join("docs.md");
    mdd_with_umask(
        "022",
        &[
            "docs".into(),
            spec_arg.clone(),
            "--output".into(),
            docs.to_str().expect("utf-8").into(),
        ],
    );
    assert_eq!(mode_of(&docs), 0o644);

    // A symlink: the link stays, its target gets the report.
    let target = dir.path().join("real.json");
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    mdd_with_umask(
        "022",
        &[
            "verify".into(),
            spec_arg.clone(),
            "--format".into(),
            "json".into(),
            "--output".into(),
            link.to_str().expect("utf-8").into(),
        ],
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&target)
            .expect("target written")
            .contains("\"checks\"")
    );

    // A FIFO (like /dev/null, not a regular file) is written into, never replaced.
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap_or_default())
    };
    let out = mdd_with_umask(
        "022",
        &[
            "verify".into(),
            spec_arg.clone(),
            "--format".into(),
            "tap".into(),
            "--output".into(),
            fifo.to_str().expect("utf-8").into(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = reader.join().expect("reader");
    assert!(read.starts_with("TAP version 13"), "{read}");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(&fifo)
            .expect("fifo")
            .file_type()
            .is_fifo(),
        "still a FIFO"
    );

    // The server's data directory and database.
    let data = dir.path().join("data");
    let server = TestServer::start_on_sqlite(&data, &[]).await;
    assert_eq!(mode_of(&data), 0o700);
    assert_eq!(mode_of(&data.join("mdd.db")), 0o600);
    server.stop().await;
}
