//! Enrollment and the token and entity lifecycle, end to end: real servers, real agents, the
//! CLI as an operator types it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{ADMIN, Agent, TestServer, mdd_client, wait_for_events};
use serde_json::{Value, json};

const SPEC: &str = "defaults: { interval: 250ms, timeout: 2s }
checks:
  - { name: web-up, subscriptions: [web], command: [echo, 'OK - web'] }
";

/// `mdd token create …` as an operator runs it; the secret it prints.
async fn make_token(server: &TestServer, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = mdd_client(server, &all).await;
    assert_eq!(code, Some(0), "{stderr}");
    let token = stdout.trim().to_string();
    assert!(token.starts_with("mdd_"), "{stdout}");
    token
}

async fn token_list(server: &TestServer) -> Vec<Value> {
    let (status, body) = server.get("/api/v1/tokens").await;
    assert_eq!(status, 200, "{body}");
    body["tokens"].as_array().cloned().unwrap_or_default()
}

async fn results_of(server: &TestServer, entity: &str) -> usize {
    let (status, body) = server
        .get(&format!(
            "/api/v1/checks/web-up/results?from=1970-01-01T00:00:00Z&limit=10000&entity={entity}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    body["results"].as_array().map(Vec::len).unwrap_or(0)
}

async fn wait_for_more_results(server: &TestServer, entity: &str, than: usize) -> usize {
    for _ in 0..200 {
        let now = results_of(server, entity).await;
        if now > than {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no new result from {entity} (still {than})");
}

/// One enrollment token, two uses: two hosts enroll and report under the subscriptions and
/// labels it grants, a third is refused, a host name a live agent holds is refused, the token
/// kept is private, and revoking the enrollment token (then restarting an agent) leaves the
/// enrolled agents working.
#[tokio::test]
async fn agents_enroll_once_and_keep_their_own_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    assert_eq!(server.apply(&[("dc.yaml", SPEC)]).await.0, 200);
    let enroll = make_token(
        &server,
        &[
            "--role",
            "enroll",
            "--name",
            "rack 1",
            "--uses",
            "2",
            "--expires",
            "1h",
            "--subscriptions",
            "web",
            "--labels",
            "rack=r1",
        ],
    )
    .await;

    // No subscription given: the token grants `web`, so the agent runs web-up.
    let web1_data = dir.path().join("web1");
    let web1 = Agent::start(
        &server,
        &web1_data,
        &["--enroll-token", &enroll, "--name", "web1"],
    );
    wait_for_events(&server, |events| {
        events
            .iter()
            .any(|e| e["check"] == "web-up" && e["entity"] == "web1" && e["state"] == "passing")
    })
    .await;
    let kept = web1_data.join("agent-token.json");
    let mode = std::fs::metadata(&kept)
        .expect("token kept")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the kept token is private");
    let kept_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&kept).expect("read")).expect("json");
    assert_eq!(kept_json["entity"], "web1");
    assert_ne!(
        kept_json["token"], enroll,
        "the agent got a token of its own"
    );
    let (_, entities) = server.get("/api/v1/entities").await;
    let web1_entity = entities["entities"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["name"] == "web1").cloned())
        .expect("web1 registered");
    assert_eq!(
        web1_entity["agent"]["labels"]["rack"], "r1",
        "{web1_entity}"
    );

    // The agent's own token is bound to web1, listed, and was used.
    let tokens = token_list(&server).await;
    let own = tokens
        .iter()
        .find(|t| t["entity"] == "web1")
        .expect("web1's token is listed");
    assert_eq!(own["role"], "agent");
    let enrolling = tokens
        .iter()
        .find(|t| t["name"] == "rack 1")
        .expect("the enrollment token is listed");
    assert_eq!(enrolling["uses_left"], 1, "{enrolling}");
    assert!(
        tokens
            .iter()
            .all(|t| t.get("token").is_none() && t.get("hash").is_none()),
        "never a secret in the list"
    );

    // web1 is alive: another host claiming its name is refused, and uses no enrollment.
    let impostor = Agent::start(
        &server,
        &dir.path().join("impostor"),
        &["--enroll-token", &enroll, "--name", "web1"],
    );
    let (code, said) = impostor.exits().await;
    assert_ne!(code, Some(0), "{said}");
    assert!(said.contains("already reports as `web1`"), "{said}");
    assert!(!dir.path().join("impostor/agent-token.json").exists());

    let web2 = Agent::start(
        &server,
        &dir.path().join("web2"),
        &["--enroll-token", &enroll, "--name", "web2"],
    );
    wait_for_events(&server, |events| {
        events
            .iter()
            .any(|e| e["check"] == "web-up" && e["entity"] == "web2")
    })
    .await;
    // Two uses, both taken.
    let third = Agent::start(
        &server,
        &dir.path().join("web3"),
        &["--enroll-token", &enroll, "--name", "web3"],
    );
    let (code, said) = third.exits().await;
    assert_ne!(code, Some(0), "{said}");
    assert!(said.contains("no use left"), "{said}");
    assert!(
        said.contains("mdd token create --role enroll"),
        "says how: {said}"
    );

    // Revoke the enrollment token: the enrolled agents go on reporting.
    let enroll_id = enrolling["id"].as_str().expect("id").to_string();
    let (code, _, stderr) = mdd_client(&server, &["token", "revoke", &enroll_id]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let before = results_of(&server, "web1").await;
    wait_for_more_results(&server, "web1", before).await;

    // Restarted, web1 uses the token it kept (the enrollment token it is given is revoked).
    web1.kill9().await;
    let web1 = Agent::start(
        &server,
        &web1_data,
        &["--enroll-token", &enroll, "--name", "web1"],
    );
    let before = results_of(&server, "web1").await;
    wait_for_more_results(&server, "web1", before).await;
    assert!(!web1.said().contains("refused"), "{}", web1.said());

    // Renamed, the kept token does not fit: said plainly, nothing reported under a new name.
    web1.kill9().await;
    let renamed = Agent::start(&server, &web1_data, &["--name", "web9"]);
    let (code, said) = renamed.exits().await;
    assert_ne!(code, Some(0));
    assert!(said.contains("enrolling as `web1`"), "{said}");

    // web2's own token revoked: it is refused at once, and says how to recover.
    let web2_id = token_list(&server)
        .await
        .iter()
        .find(|t| t["entity"] == "web2")
        .and_then(|t| t["id"].as_str().map(str::to_string))
        .expect("web2's token");
    let (code, _, stderr) = mdd_client(&server, &["token", "revoke", &web2_id]).await;
    assert_eq!(code, Some(0), "{stderr}");
    web2.wait_until_said("delete that file and start the agent with a new enrollment token")
        .await;
    web2.kill9().await;
    assert!(server.stop().await.success());
}

/// An expired enrollment token enrolls nobody, and says it expired.
#[tokio::test]
async fn an_expired_enrollment_token_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let enroll = make_token(&server, &["--role", "enroll", "--expires", "1s"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let agent = Agent::start(
        &server,
        &dir.path().join("late"),
        &["--enroll-token", &enroll, "--name", "late1"],
    );
    let (code, said) = agent.exits().await;
    assert_ne!(code, Some(0), "{said}");
    assert!(said.contains("expired"), "{said}");
    let listed = token_list(&server).await;
    assert!(
        listed
            .iter()
            .any(|t| t["role"] == "enroll" && t["expired"] == true),
        "{listed:?}"
    );
    // An enrollment token does nothing else.
    let fresh = make_token(&server, &["--role", "enroll"]).await;
    let (status, _) = server
        .call(reqwest::Method::GET, "/api/v1/events", Some(&fresh), None)
        .await;
    assert_eq!(status, 403);
    assert!(server.stop().await.success());
}

/// A revoked token is refused from the next request on, and the dashboard session signed in
/// with it ends at once; `mdd token list` shows what an operator needs to pick one.
#[tokio::test]
async fn revoking_a_token_takes_effect_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let reader = make_token(&server, &["--role", "read", "--name", "night shift"]).await;
    let (status, _) = server
        .call(reqwest::Method::GET, "/api/v1/events", Some(&reader), None)
        .await;
    assert_eq!(status, 200);

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let signed_in = http
        .post(format!("{}/login", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={reader}&next=/"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let page = |cookie: String| {
        let http = http.clone();
        let url = format!("{}/", server.url);
        async move {
            http.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .expect("page")
                .status()
                .as_u16()
        }
    };
    assert_eq!(page(cookie.clone()).await, 200);

    let (code, listed, stderr) = mdd_client(&server, &["token", "list"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let header = listed.lines().next().unwrap_or_default();
    for column in ["ID", "NAME", "ROLE", "ENTITY", "CREATED", "LAST USED"] {
        assert!(header.contains(column), "{listed}");
    }
    let row = listed
        .lines()
        .find(|l| l.contains("night shift"))
        .unwrap_or_else(|| panic!("{listed}"));
    let id = row.split_whitespace().next().expect("id").to_string();
    assert!(row.contains("read"), "{row}");
    // Used a moment ago: the last-used column holds a time, not "-".
    let at = header.find("LAST USED").expect("column");
    assert!(
        row.get(at..).is_some_and(|rest| rest.starts_with("20")),
        "last used: {row}"
    );

    let (code, _, stderr) = mdd_client(&server, &["token", "revoke", &id]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (status, body) = server
        .call(reqwest::Method::GET, "/api/v1/events", Some(&reader), None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert_ne!(page(cookie).await, 200, "the session ended with its token");
    let (code, _, stderr) = mdd_client(&server, &["token", "revoke", &id]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("no token"), "{stderr}");

    // Revoked stays revoked across a restart.
    let data = dir.path().join("data");
    server.stop().await;
    let server = TestServer::start(&data, &[]).await;
    let (status, _) = server
        .call(reqwest::Method::GET, "/api/v1/events", Some(&reader), None)
        .await;
    assert_eq!(status, 401);
    assert!(server.stop().await.success());
}

/// `mdd entity delete` forgets an entity and its events; its results stay.
#[tokio::test]
async fn deleting_an_entity_drops_its_events_not_its_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // No checkpoint of its own: the results of `gone1` are all after the last one, and a
    // replay after a crash would make its events again unless the deletion took care.
    let args = ["--event-checkpoint-interval", "1h"];
    let server = TestServer::start(&data, &args).await;
    let spec = "checks:\n  - { name: web-up, ttl: 1h }\n";
    assert_eq!(server.apply(&[("dc.yaml", spec)]).await.0, 200);
    for entity in ["gone1", "stays1"] {
        let (status, body) = server
            .post(
                "/api/v1/results",
                &json!({ "results": [{ "id": format!("r-{entity}"), "check": "web-up", "entity": entity, "status": 0, "output": "OK" }] }),
            )
            .await;
        assert!(status < 300, "{body}");
    }
    let (code, listed, stderr) = mdd_client(&server, &["entity", "list"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        listed.contains("gone1") && listed.contains("stays1"),
        "{listed}"
    );

    let (code, _, stderr) = mdd_client(&server, &["entity", "delete", "gone1"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (_, events) = server.get("/api/v1/events").await;
    let entities: Vec<&str> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["entity"].as_str())
        .collect();
    assert!(!entities.contains(&"gone1"), "{entities:?}");
    assert!(entities.contains(&"stays1"), "{entities:?}");
    assert_eq!(results_of(&server, "gone1").await, 1, "its results stay");
    server.kill9().await;
    let server = TestServer::start(&data, &args).await;
    let (_, events) = server.get("/api/v1/events").await;
    let entities: Vec<&str> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["entity"].as_str())
        .collect();
    assert_eq!(entities, ["stays1"], "after kill -9 and the replay");
    let (code, listed, _) = mdd_client(&server, &["entity", "list"]).await;
    assert_eq!(code, Some(0));
    assert!(!listed.contains("gone1"), "{listed}");
    let (code, _, stderr) = mdd_client(&server, &["entity", "delete", "gone1"]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("no entity `gone1`"), "{stderr}");
    // Only an admin forgets entities.
    let reader = make_token(&server, &["--role", "read"]).await;
    let (status, _) = server
        .call(
            reqwest::Method::DELETE,
            "/api/v1/entities/stays1",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let _ = ADMIN;
    assert!(server.stop().await.success());
}
