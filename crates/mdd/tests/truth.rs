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
    let (status, applied) = server
        .apply(&[(spec_arg, &deployment_spec("5s"))])
        .await;
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
    assert_eq!(cron["since"], rfc3339(now + 2_000), "stale a ttl after: {cron}");

    let (_, one) = server.get("/api/v1/events/api/e1").await;
    assert_eq!(one["since"], rfc3339(t1));
    let (_, detail) = server.get("/api/v1/deployments/dc1").await;
    let progress: Vec<&Value> = detail["checks"].as_array().expect("checks").iter().collect();
    let of = |name: &str| {
        progress
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["since"].clone())
    };
    assert_eq!(of("api"), Some(json!(rfc3339(t1))));
    assert_eq!(of("cron"), Some(json!(rfc3339(now + 2_000))));

    // Pages and commands show it to the second.
    let second = |ms: i64| rfc3339(ms).chars().take(19).collect::<String>().replace('T', " ");
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
