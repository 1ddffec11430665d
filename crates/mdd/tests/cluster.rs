//! Several `mdd server`s on one PostgreSQL (a private server started by the test, unix socket
//! only): what one server is told, every server knows.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::{ADMIN, TestServer};
use serde_json::{Value, json};

/// Servers on the same database, each with a data directory of its own.
async fn cluster(dir: &std::path::Path, url: &str, count: usize) -> Vec<TestServer> {
    let mut servers = Vec::new();
    // One after the other: the first makes the admin token, the others find it.
    for i in 0..count {
        let data = dir.join(format!("server-{i}"));
        servers.push(TestServer::start_on_sqlite(&data, &["--database", url]).await);
    }
    servers
}

/// Waits (at most `limit`) until `done` holds; how long it took.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn spec(warn: u32) -> String {
    format!(
        "deployments:
  - {{ name: ams1, selector: {{ dc: ams1 }}, settle: 1s }}
checks:
  - {{ name: disk, subscriptions: [web], command: check_disk -w {warn}% -p / }}
  - {{ name: web-push, ttl: 1h, labels: {{ dc: ams1 }} }}
"
    )
}

async fn silence_listed(server: &TestServer, id: &str) -> bool {
    let (_, body) = server.get("/api/v1/silences").await;
    body["silences"]
        .as_array()
        .is_some_and(|list| list.iter().any(|s| s["id"] == json!(id)))
}

fn names(files: &Value) -> Vec<String> {
    files
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|f| f["file"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn what_one_server_is_told_every_server_knows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let postgres = mdd_testkit::postgres::Postgres::start();
    let url = postgres.create_database("mdd");
    let servers = cluster(dir.path(), &url, 2).await;
    let (a, b) = (&servers[0], &servers[1]);

    // An apply through A reaches an agent long-polling on B.
    let (status, applied) = a.apply(&[("dc.yaml", &spec(20))]).await;
    assert_eq!(status, 200, "{applied}");
    let (_, made) = a.post("/api/v1/tokens", &json!({"role": "agent"})).await;
    let agent = made["token"].as_str().expect("token").to_string();
    let poll = |server: &TestServer, after: Option<String>, wait: &str| {
        let url = format!(
            "{}/api/v1/agent/checks?subscriptions=web&wait={wait}{}",
            server.url,
            after.map(|v| format!("&after={v}")).unwrap_or_default()
        );
        let http = server.http.clone();
        let token = agent.clone();
        async move {
            let response = http.get(url).bearer_auth(token).send().await.expect("poll");
            let status = response.status().as_u16();
            let body = response.bytes().await.expect("body");
            (
                status,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    // The token made on A works on B, and B serves A's spec.
    eventually(
        Duration::from_secs(10),
        "A's agent token accepted by B",
        || async { poll(b, None, "0s").await.0 == 200 },
    )
    .await;
    let (_, first) = poll(b, None, "0s").await;
    assert_eq!(
        first["checks"][0]["probe"]["command"]["argv"][2], "20%",
        "{first}"
    );
    let version = first["version"].as_str().expect("version").to_string();
    let waiting = tokio::spawn(poll(b, Some(version.clone()), "20s"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applied_at = Instant::now();
    assert_eq!(a.apply(&[("dc.yaml", &spec(15))]).await.0, 200);
    let (status, woken) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the apply through A reaches the poll on B")
        .expect("poll task");
    let lag = applied_at.elapsed();
    assert_eq!(status, 200);
    assert_ne!(woken["version"], json!(version));
    assert_eq!(
        woken["checks"][0]["probe"]["command"]["argv"][2], "15%",
        "{woken}"
    );
    eprintln!("an apply through A woke a long-poll on B after {lag:?}");

    // B takes results for the check A's spec added, and both answer with the same spec.
    let result = json!({"results": [{"id": "r1", "check": "web-push", "entity": "web1",
        "status": 0, "output": "OK"}]});
    let (status, body) = b.post("/api/v1/results", &result).await;
    assert!(status < 300, "{status} {body}");
    let (_, spec_a) = a.get("/api/v1/spec").await;
    let (_, spec_b) = b.get("/api/v1/spec").await;
    assert_eq!(spec_a["revision"], spec_b["revision"]);
    assert_eq!(spec_a["files"], spec_b["files"]);

    // Six failing results sent in turn to A and B, each sent twice: one event, folded once per
    // result, and both servers say so (each folds on top of the other's).
    for i in 0..6 {
        let server = &servers[i % 2];
        let body = json!({"results": [{"id": format!("crit-{i}"), "check": "web-push",
            "entity": "web2", "status": 2, "output": format!("CRITICAL {i}")}]});
        for _ in 0..2 {
            let (status, answer) = server.post("/api/v1/results", &body).await;
            assert!(status < 300, "{status} {answer}");
        }
    }
    let lag = eventually(
        Duration::from_secs(5),
        "both servers count 6 occurrences",
        || async {
            let mut agree = true;
            for server in &servers {
                let (_, events) = server
                    .get("/api/v1/events?check=web-push&entity=web2")
                    .await;
                let event = events["events"]
                    .as_array()
                    .and_then(|list| list.iter().find(|e| e["entity"] == "web2"))
                    .cloned()
                    .unwrap_or(Value::Null);
                agree &= event["occurrences"] == json!(6)
                    && event["summary"] == json!("CRITICAL 5")
                    && event["recent_statuses"].as_array().map(Vec::len) == Some(6);
            }
            agree
        },
    )
    .await;
    eprintln!("both servers showed the same event {lag:?} after the last result");

    // The deployment is tracked once (by the server doing the once-only work) and both servers
    // show the same track: red now, then done once web-push passes and settles.
    let body = json!({"results": [{"id": "ok-web1", "check": "web-push", "entity": "web1",
        "status": 0, "output": "OK"}, {"id": "ok-web2", "check": "web-push", "entity": "web2",
        "status": 0, "output": "OK"}]});
    assert!(b.post("/api/v1/results", &body).await.0 < 300);
    eventually(
        Duration::from_secs(15),
        "ams1 done on both servers, alike",
        || async {
            let (_, on_a) = a.get("/api/v1/deployments/ams1").await;
            let (_, on_b) = b.get("/api/v1/deployments/ams1").await;
            on_a["done_at"].is_string()
                && on_a["done_at"] == on_b["done_at"]
                && on_a["started_at"] == on_b["started_at"]
                && on_a["timeline"] == on_b["timeline"]
        },
    )
    .await;

    // Concurrent applies of different files through both servers: none is lost (each one that
    // finds the spec moved is made again on top of it).
    let mut applies = Vec::new();
    for i in 0..8 {
        let server = &servers[i % 2];
        let text = format!("checks:\n  - {{ name: extra-{i}, ttl: 1h }}\n");
        let file = format!("extra-{i}.yaml");
        applies.push(async move { server.apply(&[(&file, &text)]).await });
    }
    for (status, body) in futures_util::future::join_all(applies).await {
        assert_eq!(status, 200, "{body}");
    }
    for server in &servers {
        eventually(
            Duration::from_secs(10),
            "every file on every server",
            || async {
                let (_, spec) = server.get("/api/v1/spec").await;
                let files = names(&spec["files"]);
                (0..8).all(|i| files.contains(&format!("extra-{i}.yaml")))
                    && files.contains(&"dc.yaml".to_string())
            },
        )
        .await;
    }

    // A silence made on A is in force on B.
    let (status, silence) = a
        .post(
            "/api/v1/silences",
            &json!({"check": "disk", "reason": "disk swap", "for": "2h"}),
        )
        .await;
    assert!(status < 300, "{status} {silence}");
    let id = silence["id"].as_str().expect("silence id").to_string();
    eventually(Duration::from_secs(5), "A's silence listed by B", || {
        silence_listed(b, &id)
    })
    .await;
    // Ended on B, gone on A.
    let (status, _) = b
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/silences/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert!(status < 300, "{status}");
    eventually(
        Duration::from_secs(5),
        "B's end of the silence seen by A",
        || async { !silence_listed(a, &id).await },
    )
    .await;

    // A dashboard session made on A is valid on B; signed out on B, it is over on A too.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let signed_in = http
        .post(format!("{}/login", a.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN}&next=/"))
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
    let page = |server: &TestServer| {
        let http = http.clone();
        let url = format!("{}/", server.url);
        let cookie = cookie.clone();
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
    assert_eq!(page(a).await, 200);
    assert_eq!(
        page(b).await,
        200,
        "a session made on A is valid on B at once"
    );
    let out = http
        .post(format!("{}/logout", b.url))
        .header("cookie", cookie.clone())
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), 303);
    eventually(
        Duration::from_secs(5),
        "signed out on B, out on A",
        || async { page(a).await != 200 },
    )
    .await;

    // An entity deleted through A loses its events on B too.
    let body = json!({"results": [{"id": "spot-1", "check": "web-push", "entity": "spot1",
        "status": 2, "output": "about to go"}]});
    assert!(a.post("/api/v1/results", &body).await.0 < 300);
    let listed_on_b = || async {
        let (_, events) = b.get("/api/v1/events?entity=spot1").await;
        events["events"]
            .as_array()
            .is_some_and(|list| list.iter().any(|e| e["entity"] == "spot1"))
    };
    eventually(Duration::from_secs(5), "spot1's event on B", listed_on_b).await;
    let (status, body) = a
        .call(
            reqwest::Method::DELETE,
            "/api/v1/entities/spot1",
            Some(ADMIN),
            None,
        )
        .await;
    assert!(status < 300, "{status} {body}");
    eventually(
        Duration::from_secs(5),
        "spot1 deleted through A, gone on B",
        || async { !listed_on_b().await },
    )
    .await;

    // A token revoked through B is refused by A.
    let token_id = made["id"].as_str().expect("token id").to_string();
    let (status, _) = b
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{token_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert!(status < 300, "{status}");
    eventually(
        Duration::from_secs(5),
        "a token revoked on B refused by A",
        || async { poll(a, None, "0s").await.0 == 401 },
    )
    .await;

    for server in servers {
        assert!(server.stop().await.success());
    }
}

/// Waits until exactly one of `servers` does the once-only work.
async fn wait_for_one_holder(servers: &[TestServer]) {
    eventually(
        Duration::from_secs(15),
        "one server does the once-only work",
        || async {
            let mut holding = 0;
            for server in servers {
                holding += usize::from(holds_once_only_work(server).await);
            }
            holding == 1
        },
    )
    .await;
}

async fn holds_once_only_work(server: &TestServer) -> bool {
    let (status, health) = server
        .call(reqwest::Method::GET, "/healthz", None, None)
        .await;
    status == 200 && health["once_only_work"] == json!(true)
}

/// Results of the server's own `tick` check stored in `window`, and the window as measured.
async fn ticks_in(store: &mdd_storage::Store, window: Duration) -> (i64, Duration) {
    let before = store.count_results().await.expect("count");
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = store.count_results().await.expect("count");
    (after - before, started.elapsed())
}

/// What the servers of the lease test say: enough to tell, when it fails, which server took
/// or gave up the lease when.
const LEASE_LOG: &str = "warn,mdd_server::lease=debug";

#[tokio::test]
async fn once_only_work_runs_on_one_server_and_moves_when_it_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let postgres = mdd_testkit::postgres::Postgres::start();
    let url = postgres.create_database("mdd");
    let mut servers = Vec::new();
    for i in 0..2 {
        let data = dir.path().join(format!("server-{i}"));
        servers.push(TestServer::start_logging(&data, &["--database", &url], LEASE_LOG).await);
    }
    let (status, body) = servers[0]
        .apply(&[(
            "dc.yaml",
            "checks:\n  - { name: tick, command: [true], interval: 1s }\n",
        )])
        .await;
    assert_eq!(status, 200, "{body}");
    let store = mdd_storage::Store::connect(&url).await.expect("connect");

    // One holder at a time, and the check runs once a second, not once per server.
    wait_for_one_holder(&servers).await;
    let (ticks, window) = ticks_in(&store, Duration::from_secs(4)).await;
    let per_second = ticks as f64 / window.as_secs_f64();
    eprintln!("two servers: {ticks} results of a 1 s check in {window:?}");
    assert!(
        (0.5..=1.5).contains(&per_second),
        "{per_second:.2} results a second of a check every second"
    );

    // kill -9 of the holder: the other takes the work over within the lease's time.
    let holder = if holds_once_only_work(&servers[0]).await {
        0
    } else {
        1
    };
    let killed_at = Instant::now();
    servers.remove(holder).kill9().await;
    // servers[0] is the survivor from here on.
    let took = eventually(
        Duration::from_secs(15),
        "the survivor takes the work over",
        || holds_once_only_work(&servers[0]),
    )
    .await;
    eprintln!(
        "once-only work moved {:?} after kill -9",
        killed_at.elapsed()
    );
    assert!(took <= Duration::from_secs(10), "took over after {took:?}");
    let (ticks, window) = ticks_in(&store, Duration::from_secs(3)).await;
    assert!(
        ticks >= 1,
        "no results of the check in {window:?} after the failover"
    );

    // The killed server comes back: the work stays where it is, still once a second.
    let data = dir.path().join(format!("server-{holder}"));
    servers.push(TestServer::start_logging(&data, &["--database", &url], LEASE_LOG).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!holds_once_only_work(&servers[1]).await);
    assert!(holds_once_only_work(&servers[0]).await);
    let (ticks, window) = ticks_in(&store, Duration::from_secs(4)).await;
    let per_second = ticks as f64 / window.as_secs_f64();
    assert!(
        (0.5..=1.5).contains(&per_second),
        "{per_second:.2} results a second after the restart"
    );

    // A graceful stop gives the lease up: the other takes it at its next try.
    let stopped_at = Instant::now();
    let stopped = servers.remove(0);
    let stopped_log = stopped.log.clone();
    assert!(stopped.stop().await.success());
    let left = store
        .lease_holder(mdd_server::lease::ONCE_ONLY)
        .await
        .expect("read the lease");
    let other = std::fs::read_to_string(data.join("server-id")).expect("the other's id");
    assert!(
        left.as_ref().is_none_or(|(by, _)| *by == other.trim()),
        "a server stopped without giving the lease up: {left:?} (holder, ms left)\n\
         --- it said:\n{}",
        stopped_log.text()
    );
    let limit = Duration::from_secs(5);
    let started = Instant::now();
    while !holds_once_only_work(&servers[0]).await {
        assert!(
            started.elapsed() < limit,
            "not within {limit:?}: the lease given up is taken\n\
             --- the stopped server said:\n{}\n--- the other said:\n{}",
            stopped_log.text(),
            servers[0].log.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "once-only work moved {:?} after a graceful stop",
        stopped_at.elapsed()
    );
    store.close().await;
    for server in servers {
        assert!(server.stop().await.success());
    }
}

#[tokio::test]
async fn notifications_are_decided_once_whichever_server_folds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let postgres = mdd_testkit::postgres::Postgres::start();
    let url = postgres.create_database("mdd");
    let receiver = common::Receiver::start().await;
    let mut servers = cluster(dir.path(), &url, 2).await;
    let spec = format!(
        "handlers:
  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/notify', timeout: 2s }}
checks:
  - {{ name: dns, ttl: 1h, handlers: [hook] }}
  - {{ name: ldap, ttl: 1h, depends_on: [dns], handlers: [hook] }}
",
        receiver.port
    );
    let (status, body) = servers[0].apply(&[("dc.yaml", &spec)]).await;
    assert_eq!(status, 200, "{body}");
    wait_for_one_holder(&servers).await;
    let mut n = 0;
    let steps = [
        ("dns", 0),
        ("ldap", 0),
        ("dns", 2),  // incident
        ("ldap", 2), // blocked behind dns: nobody is told
        ("dns", 2),
        ("dns", 0),  // resolution
        ("ldap", 2), // no longer blocked: ldap's own incident
        ("ldap", 0), // and its resolution
    ];
    for (check, status) in steps {
        n += 1;
        // Through the servers in turn, each result sent to both (a retry through another).
        let body = json!({"results": [{"id": format!("n{n}"), "check": check,
            "entity": "e1", "status": status, "output": format!("{check} {status}")}]});
        for i in 0..2 {
            let (code, answer) = servers[(n + i) % 2].post("/api/v1/results", &body).await;
            assert!(code < 300, "{code} {answer}");
        }
        // One step at a time: the notifier decides each against the one before.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let expected: Vec<(String, String)> = [
        ("dns", "incident"),
        ("dns", "resolution"),
        ("ldap", "incident"),
        ("ldap", "resolution"),
    ]
    .iter()
    .map(|(c, k)| (c.to_string(), k.to_string()))
    .collect();
    receiver.wait_for(expected.len()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.received(),
        expected,
        "each told once, by one server"
    );
    // Each with its own id, the same in the header and in the event.
    let ids: Vec<String> = receiver
        .requests
        .lock()
        .expect("lock")
        .iter()
        .map(|(headers, body)| {
            let header = headers
                .iter()
                .find(|(name, _)| name == "webhook-id")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let event: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            assert_eq!(event["mdd"]["notification_id"], json!(header), "{body}");
            header
        })
        .collect();
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");

    // The server deciding is killed: the other decides from then on, the outbox kept what
    // was folded meanwhile.
    let holder = if holds_once_only_work(&servers[0]).await {
        0
    } else {
        1
    };
    servers.remove(holder).kill9().await;
    let body = json!({"results": [{"id": "after-kill", "check": "dns", "entity": "e1",
        "status": 2, "output": "dns down again"}]});
    let (code, answer) = servers[0].post("/api/v1/results", &body).await;
    assert!(code < 300, "{code} {answer}");
    let told = receiver.wait_for(expected.len() + 1).await;
    assert_eq!(
        told.get(expected.len()),
        Some(&("dns".to_string(), "incident".to_string())),
        "{told:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), expected.len() + 1, "told once");
    for server in servers {
        assert!(server.stop().await.success());
    }
}

/// The server deciding notifications decides against the events as stored, also those another
/// server folded since it last looked: a dependency that failed through the other server
/// blocks its dependent's incident, although the deciding server last held it passing.
#[tokio::test]
async fn the_deciding_server_sees_a_dependency_another_server_folded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let postgres = mdd_testkit::postgres::Postgres::start();
    let url = postgres.create_database("mdd");
    let receiver = common::Receiver::start().await;
    let servers = cluster(dir.path(), &url, 2).await;
    let spec = format!(
        "handlers:
  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/notify', timeout: 2s }}
checks:
  - {{ name: dns, ttl: 1h, handlers: [hook] }}
  - {{ name: ldap, ttl: 1h, depends_on: [dns], handlers: [hook] }}
",
        receiver.port
    );
    let (status, body) = servers[0].apply(&[("dc.yaml", &spec)]).await;
    assert_eq!(status, 200, "{body}");
    wait_for_one_holder(&servers).await;
    let (deciding, other) = if holds_once_only_work(&servers[0]).await {
        (&servers[0], &servers[1])
    } else {
        (&servers[1], &servers[0])
    };
    // Each result through one server only: the deciding one holds dns passing, then dns
    // fails through the other, then ldap fails through the deciding one.
    let steps = [
        (deciding, "dns", 0),
        (deciding, "ldap", 0),
        (other, "dns", 2),     // incident
        (deciding, "ldap", 2), // blocked behind dns: nobody is told
    ];
    for (n, (server, check, status)) in steps.into_iter().enumerate() {
        let body = json!({"results": [{"id": format!("d{n}"), "check": check,
            "entity": "e1", "status": status, "output": format!("{check} {status}")}]});
        let (code, answer) = server.post("/api/v1/results", &body).await;
        assert!(code < 300, "{code} {answer}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.received(),
        [("dns".to_string(), "incident".to_string())],
        "ldap is blocked behind dns"
    );
    for server in servers {
        assert!(server.stop().await.success());
    }
}

/// The server deciding notifications is killed while a receiver holds its delivery of an
/// incident unanswered: the server that takes the work over delivers it, with the same id.
#[tokio::test]
async fn a_delivery_left_by_a_killed_server_is_made_by_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let postgres = mdd_testkit::postgres::Postgres::start();
    let url = postgres.create_database("mdd");
    let receiver = common::Receiver::start().await;
    receiver
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut servers = cluster(dir.path(), &url, 2).await;
    let spec = format!(
        "handlers:
  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/notify', timeout: 60s }}
checks:
  - {{ name: dns, ttl: 1h, handlers: [hook] }}
",
        receiver.port
    );
    let (status, body) = servers[0].apply(&[("dc.yaml", &spec)]).await;
    assert_eq!(status, 200, "{body}");
    wait_for_one_holder(&servers).await;
    let holder = if holds_once_only_work(&servers[0]).await {
        0
    } else {
        1
    };
    // Through the server that does not decide: the notice goes through the outbox.
    for (id, status) in [("d1", 0), ("d2", 2)] {
        let body = json!({"results": [{"id": id, "check": "dns", "entity": "e1",
            "status": status, "output": "dns"}]});
        let (code, answer) = servers[1 - holder].post("/api/v1/results", &body).await;
        assert!(code < 300, "{code} {answer}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let first = receiver.wait_for_requests(1).await;
    assert_eq!(first.len(), 1, "the incident is being delivered: {first:?}");
    // What was decided is stored within a second; the margin is for a busy machine.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    servers.remove(holder).kill9().await;
    let killed_at = Instant::now();
    receiver.release();
    let ids = receiver.wait_for_requests(2).await;
    assert!(
        ids.len() >= 2,
        "not made again within 20 s of the kill: {ids:?}"
    );
    eprintln!("delivered again {:?} after kill -9", killed_at.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The receiver got the first one too (its answer went to a dead server): it drops the
    // repeat by its id.
    receiver.assert_made_again(&first[0]);
    assert!(holds_once_only_work(&servers[0]).await);
    for server in servers {
        assert!(server.stop().await.success());
    }
}

/// The keepalive event of an entity, as one server shows it.
async fn keepalive_of(server: &TestServer, entity: &str) -> Value {
    let (_, events) = server.get("/api/v1/events?check=keepalive").await;
    events["events"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["entity"] == entity))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn keepalives_to_any_server_raise_one_warning_and_one_critical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let postgres = mdd_testkit::postgres::Postgres::start();
    let url = postgres.create_database("mdd");
    let servers = cluster(dir.path(), &url, 2).await;
    wait_for_one_holder(&servers).await;
    // The agent talks only to the server that does not watch keepalives.
    let (holder, other) = if holds_once_only_work(&servers[0]).await {
        (&servers[0], &servers[1])
    } else {
        (&servers[1], &servers[0])
    };
    let (_, made) = holder
        .post("/api/v1/tokens", &json!({"role": "agent"}))
        .await;
    let token = made["token"].as_str().expect("token").to_string();
    let agent = common::Agent::start_at(
        &other.url,
        &dir.path().join("agent"),
        &[
            "--token",
            &token,
            "--name",
            "host1",
            "--keepalive",
            "250ms",
            "--keepalive-warning",
            "2s",
            "--keepalive-critical",
            "4s",
        ],
    );
    for server in &servers {
        eventually(
            Duration::from_secs(15),
            "host1's keepalive passing",
            || async { keepalive_of(server, "host1").await["state"] == "passing" },
        )
        .await;
    }
    // Longer than the critical silence: the watchdog hears the keepalives another server got.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let event = keepalive_of(holder, "host1").await;
    assert_eq!(event["state"], "passing", "{event}");
    assert!(
        event["recent_statuses"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s == "ok")),
        "{event}"
    );

    agent.kill9().await;
    for server in &servers {
        eventually(
            Duration::from_secs(15),
            "host1's keepalive critical",
            || async { keepalive_of(server, "host1").await["status"] == "critical" },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for server in &servers {
        let event = keepalive_of(server, "host1").await;
        let statuses: Vec<&str> = event["recent_statuses"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let count = |status| statuses.iter().filter(|s| **s == status).count();
        assert_eq!((count("warning"), count("critical")), (1, 1), "{event}");
        assert_eq!(statuses.last(), Some(&"critical"), "{event}");
    }
    for server in servers {
        assert!(server.stop().await.success());
    }
}

/// One producer's results: `load` on 40 entities of its own, `svc` on 3 (each failing once,
/// for 8 s, starting at a different moment of the run) and `quiet` on one (failing while a
/// silence made on another server covers it). Each batch goes to the next server in turn and,
/// when that one fails, to the next with the same ids until one acknowledges it. Returns the
/// ids acknowledged and what was sent for each (svc) key, in order.
async fn produce(
    producer: usize,
    urls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    started: Instant,
    run_for: Duration,
) -> (Vec<String>, std::collections::BTreeMap<String, Vec<i64>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut acknowledged = Vec::new();
    let mut sent: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    let mut round = 0usize;
    while started.elapsed() < run_for {
        let t = started.elapsed().as_secs_f64();
        let mut results = Vec::new();
        for e in 0..40 {
            // A status that moves now and then, so events have history to get wrong.
            let status = i64::from((round + e).is_multiple_of(9));
            results.push(
                json!({"id": format!("p{producer}-r{round}-load{e}"), "check": "load",
                "entity": format!("p{producer}-e{e}"), "status": status, "output": "load"}),
            );
        }
        for k in 0..3 {
            let key = producer * 3 + k;
            let fails_from = 1.5 + key as f64 * 0.6;
            let status = if (fails_from..fails_from + 8.0).contains(&t) {
                2
            } else {
                0
            };
            let entity = format!("svc-{key}");
            sent.entry(entity.clone()).or_default().push(status);
            results.push(
                json!({"id": format!("p{producer}-r{round}-svc{k}"), "check": "svc",
                "entity": entity, "status": status, "output": "svc"}),
            );
        }
        let quiet = if (3.0..12.0).contains(&t) { 2 } else { 0 };
        results.push(
            json!({"id": format!("p{producer}-r{round}-quiet"), "check": "quiet",
            "entity": format!("q{producer}"), "status": quiet, "output": "quiet"}),
        );
        let ids: Vec<String> = results
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect();
        let body = json!({ "results": results });
        let mut tries = 0;
        loop {
            let url = {
                let urls = urls.lock().expect("lock");
                format!(
                    "{}/api/v1/results",
                    urls[(producer + round + tries) % urls.len()]
                )
            };
            let answer = http
                .post(&url)
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await;
            match answer {
                Ok(response) if response.status().is_success() => break,
                Ok(response) if response.status().is_client_error() => {
                    panic!("{url} refused a batch: {}", response.status())
                }
                _ => {}
            }
            tries += 1;
            assert!(
                tries < 100,
                "no server took producer {producer}'s round {round}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acknowledged.extend(ids);
        round += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (acknowledged, sent)
}

/// What the events API says of an event, in the terms a single process's fold gives.
fn folded_view(event: &Value) -> Value {
    json!({
        "status": event["status"],
        "occurrences": event["occurrences"],
        "occurrences_watermark": event["occurrences_watermark"],
        "recent_statuses": event["recent_statuses"],
        "total_state_change": event["total_state_change"],
        "last_result_id": event["last_result_id"],
    })
}

/// Every event of `checks` as one server shows it, by (check, entity).
async fn events_of(
    server: &TestServer,
    checks: &[&str],
) -> std::collections::BTreeMap<(String, String), Value> {
    let mut all = std::collections::BTreeMap::new();
    for check in checks {
        let (_, events) = server.get(&format!("/api/v1/events?check={check}")).await;
        for event in events["events"].as_array().into_iter().flatten() {
            let key = (
                event["check"].as_str().unwrap_or("").to_string(),
                event["entity"].as_str().unwrap_or("").to_string(),
            );
            all.insert(key, folded_view(event));
        }
    }
    all
}

/// The cluster test: three servers on one PostgreSQL under load from producers that
/// post through all of them in turn (retrying through another with the same ids), an agent
/// given all three URLs, a server-side check every second, a deployment, a webhook receiver
/// and a silence; the server doing the once-only work is killed with SIGKILL mid-load and
/// started again. Then every acknowledged result is stored once, every event is what one
/// process folding the stored results gives, all servers agree, each incident is told once and
/// its resolution once (repeats dropped by `webhook-id`), the silenced check is told nothing,
/// the server-side check ran about once a second (not three times), the agent's keepalive never
/// went silent and its results kept coming.
#[tokio::test]
async fn three_servers_under_load_lose_nothing_when_the_deciding_one_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let postgres = mdd_testkit::postgres::Postgres::start();
    let url = postgres.create_database("mdd");
    let receiver = common::Receiver::start().await;
    let mut servers = cluster(dir.path(), &url, 3).await;
    let spec = format!(
        "handlers:
  - {{ name: hook, type: webhook, url: 'http://127.0.0.1:{}/notify', timeout: 5s }}
deployments:
  - {{ name: ams1, selector: {{ dc: ams1 }}, settle: 1s }}
checks:
  - {{ name: tick, command: [true], interval: 1s, labels: {{ dc: ams1 }} }}
  - {{ name: disk, subscriptions: [web], command: [true], interval: 1s }}
  - {{ name: load, ttl: 1h }}
  - {{ name: svc, ttl: 1h, handlers: [hook] }}
  - {{ name: quiet, ttl: 1h, handlers: [hook] }}
",
        receiver.port
    );
    let (status, body) = servers[1].apply(&[("dc.yaml", &spec)]).await;
    assert_eq!(status, 200, "{body}");
    wait_for_one_holder(&servers).await;
    for server in &servers {
        eventually(
            Duration::from_secs(5),
            "the spec on every server",
            || async {
                let (_, spec) = server.get("/api/v1/spec").await;
                names(&spec["files"]).contains(&"dc.yaml".to_string())
            },
        )
        .await;
    }
    let (status, silence) = servers[2]
        .post(
            "/api/v1/silences",
            &json!({"check": "quiet", "reason": "known", "for": "2h"}),
        )
        .await;
    assert!(status < 300, "{status} {silence}");
    let (_, made) = servers[0]
        .post("/api/v1/tokens", &json!({"role": "agent"}))
        .await;
    let token = made["token"].as_str().expect("token").to_string();
    let all_urls = servers
        .iter()
        .map(|s| s.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let agent = common::Agent::start_at(
        &all_urls,
        &dir.path().join("agent"),
        &[
            "--token",
            &token,
            "--name",
            "web1",
            "--subscriptions",
            "web",
            "--keepalive",
            "500ms",
            "--keepalive-warning",
            "15s",
            "--keepalive-critical",
            "30s",
        ],
    );
    // Everything in place (the silence and the agent seen by every server) before the load.
    for server in &servers {
        eventually(
            Duration::from_secs(15),
            "the silence and the agent",
            || async {
                silence_listed(server, silence["id"].as_str().unwrap_or("")).await
                    && keepalive_of(server, "web1").await["state"] == "passing"
            },
        )
        .await;
    }

    let urls = std::sync::Arc::new(std::sync::Mutex::new(
        servers.iter().map(|s| s.url.clone()).collect::<Vec<_>>(),
    ));
    let started = Instant::now();
    let run_for = Duration::from_secs(20);
    let producers: Vec<_> = (0..3)
        .map(|p| tokio::spawn(produce(p, urls.clone(), started, run_for)))
        .collect();

    // Mid-load, the server doing the once-only work is killed; later it starts again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut holder = None;
    for (i, server) in servers.iter().enumerate() {
        if holds_once_only_work(server).await {
            holder = Some(i);
        }
    }
    let holder = holder.expect("a holder");
    servers.remove(holder).kill9().await;
    eprintln!("killed server {holder} at {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(7)).await;
    let data = dir.path().join(format!("server-{holder}"));
    let restarted = TestServer::start_on_sqlite(&data, &["--database", &url]).await;
    urls.lock().expect("lock").push(restarted.url.clone());
    servers.push(restarted);
    eprintln!("restarted it at {:?}", started.elapsed());

    let mut acknowledged = Vec::new();
    let mut sent = std::collections::BTreeMap::new();
    for producer in producers {
        let (ids, statuses) = producer.await.expect("producer");
        acknowledged.extend(ids);
        sent.extend(statuses);
    }
    let load_ended = started.elapsed();
    eprintln!(
        "{} results acknowledged in {load_ended:?}",
        acknowledged.len()
    );

    // Every acknowledged result is stored, once.
    let store = mdd_storage::Store::connect(&url).await.expect("connect");
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page = store.results_after(after, 10_000).await.expect("results");
        let Some((last, _)) = page.last() else { break };
        after = *last;
        stored.extend(page);
    }
    let mut counted: std::collections::HashMap<&str, usize> = Default::default();
    for (_, result) in &stored {
        *counted.entry(result.id.as_str()).or_default() += 1;
    }
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !counted.contains_key(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged and not stored: {lost:?}");
    assert!(counted.values().all(|n| *n == 1), "a result stored twice");
    let ours = stored
        .iter()
        .filter(|(_, r)| ["load", "svc", "quiet"].contains(&r.check.as_str()))
        .count();
    assert_eq!(ours, acknowledged.len(), "stored and never acknowledged");

    // Every event is what one process folding the stored results in order gives, and every
    // server says so.
    let mut by_key: std::collections::BTreeMap<
        (String, String),
        Vec<(i64, &mdd_storage::StoredResult)>,
    > = Default::default();
    for (seq, result) in &stored {
        if ["load", "svc", "quiet"].contains(&result.check.as_str()) {
            by_key
                .entry((result.check.clone(), result.entity.clone()))
                .or_default()
                .push((*seq, result));
        }
    }
    let mut expected = std::collections::BTreeMap::new();
    for (key, mut results) in by_key {
        results.sort_by_key(|(seq, r)| (r.executed_at, *seq));
        fn observe(r: &mdd_storage::StoredResult) -> mdd_core::event::Observation<'_> {
            mdd_core::event::Observation {
                result_id: &r.id,
                status: r.status,
                executed_at: r.executed_at,
            }
        }
        let mut event = mdd_core::event::Event::new(&key.0, &key.1, &observe(results[0].1));
        for (_, result) in &results[1..] {
            event.apply(&observe(result), Default::default());
        }
        let view = json!({
            "status": event.status,
            "occurrences": event.occurrences,
            "occurrences_watermark": event.occurrences_watermark,
            "recent_statuses": event.history.iter().map(|h| h.status).collect::<Vec<_>>(),
            "total_state_change": event.total_state_change,
            "last_result_id": event.last_result_id,
        });
        expected.insert(key, view);
    }
    assert_eq!(expected.len(), 3 * 40 + 9 + 3);
    let checks = ["load", "svc", "quiet"];
    for server in &servers {
        let lag = eventually(
            Duration::from_secs(10),
            "every server shows the single-process fold",
            || async { events_of(server, &checks).await == expected },
        )
        .await;
        eprintln!("{} agrees {lag:?} after the load", server.url);
    }

    // Each incident told once and its resolution once, after dropping repeats by id; nothing
    // about the silenced check.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut told: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut seen_ids = std::collections::HashSet::new();
    for (headers, body) in receiver.requests.lock().expect("lock").iter() {
        let id = headers
            .iter()
            .find(|(name, _)| name == "webhook-id")
            .map(|(_, v)| v.clone())
            .expect("a webhook-id");
        if !seen_ids.insert(id) {
            continue;
        }
        let event: Value = serde_json::from_str(body).expect("json");
        let what = format!(
            "{}/{}",
            event["check"]["metadata"]["name"].as_str().unwrap_or(""),
            event["entity"]["metadata"]["name"].as_str().unwrap_or("")
        );
        told.entry(what).or_default().push(
            event["mdd"]["notification"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    let mut want = std::collections::BTreeMap::new();
    for (entity, statuses) in &sent {
        // Each svc key failed once, for longer than a failover takes, and ended passing.
        assert_eq!(statuses.last(), Some(&0), "{entity} ends passing");
        assert!(statuses.contains(&2), "{entity} failed");
        want.insert(
            format!("svc/{entity}"),
            vec!["incident".to_string(), "resolution".to_string()],
        );
    }
    assert_eq!(told, want, "each incident and resolution told once");

    // The server's own check ran about once a second across the cluster, not once per server.
    let ticks: Vec<i64> = stored
        .iter()
        .filter(|(_, r)| r.check == "tick")
        .map(|(_, r)| r.executed_at)
        .collect();
    let (first, last) = (ticks.iter().min(), ticks.iter().max());
    let span = match (first, last) {
        (Some(first), Some(last)) => (last - first) as f64 / 1000.0,
        _ => 0.0,
    };
    eprintln!("{} results of a 1 s check over {span:.1} s", ticks.len());
    assert!(span > 15.0, "the check ran for {span:.1} s");
    assert!(
        (ticks.len() as f64) <= span * 1.3 + 2.0,
        "{} results of a 1 s check over {span:.1} s",
        ticks.len()
    );
    // The lease's time without a holder is the only gap.
    assert!(
        (ticks.len() as f64) >= (span - 10.0) * 0.6,
        "{} ticks",
        ticks.len()
    );

    // The deployment is done, and every server says when alike.
    eventually(
        Duration::from_secs(15),
        "ams1 done alike everywhere",
        || async {
            let mut done = Vec::new();
            for server in &servers {
                let (_, deployment) = server.get("/api/v1/deployments/ams1").await;
                done.push(deployment["done_at"].clone());
            }
            done[0].is_string() && done.iter().all(|d| *d == done[0])
        },
    )
    .await;

    // The agent kept reporting through the failover, and its keepalive never went silent.
    let disk: Vec<i64> = stored
        .iter()
        .filter(|(_, r)| r.check == "disk" && r.entity == "web1")
        .map(|(_, r)| r.executed_at)
        .collect();
    let gaps = disk
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(i64::MAX);
    eprintln!("{} agent results, the longest gap {gaps} ms", disk.len());
    assert!(
        disk.len() as f64 >= load_ended.as_secs_f64() * 0.7,
        "{} agent results",
        disk.len()
    );
    for server in &servers {
        let event = keepalive_of(server, "web1").await;
        assert!(
            event["recent_statuses"]
                .as_array()
                .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s == "ok")),
            "{event}"
        );
    }
    agent.kill9().await;
    store.close().await;
    for server in servers {
        assert!(server.stop().await.success());
    }
}
