//! Bounded fuzzing of what faces the outside, on real processes: the results API, the sign-in
//! form and the agent's config file (the spec parser has its property tests in `mdd-core`).
//! Each run is seeded and repeatable; `MDD_FUZZ_CASES` makes it longer (a longer run is
//! reported in the notes), `MDD_FUZZ_SEED` picks another sequence.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{ADMIN, TestServer};

/// A small, fast, seeded generator (xorshift64*): repeatable without a dependency.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Rng {
        let seed = std::env::var("MDD_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x0005_eed0_f0dd_ba11);
        Rng((seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A string of hostile bits: controls, quotes, markup, unicode, long runs.
    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a",
            "dns",
            "cron",
            "0",
            "-",
            ":",
            ".",
            " ",
            "\t",
            "\n",
            "\r",
            "\u{0}",
            "\u{1b}[31m",
            "<script>",
            "\"",
            "'",
            "\\",
            "%00",
            "%0d%0a",
            "/",
            "//",
            "é",
            "✓",
            "\u{202e}",
            "💥",
            "{",
            "}",
            "[",
            "]",
            "$",
            "`",
            "|",
            ";",
            "&&",
        ];
        let mut out = String::new();
        let parts = self.below(12);
        for _ in 0..parts {
            let piece: &&str = self.pick(PIECES);
            out.push_str(piece);
        }
        if self.chance(3) {
            out.push_str(&"x".repeat(self.below(200_000)));
        }
        out
    }

    fn cases(&self, default: usize) -> usize {
        std::env::var("MDD_FUZZ_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }

    /// Any JSON value, shallow.
    fn value(&mut self, depth: usize) -> Value {
        match self.below(if depth > 2 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.chance(50)),
            2 => json!(self.next() as i64),
            3 => json!(*self.pick(&[0, 1, 2, 3, 255, 256, -1, i64::MAX, i64::MIN])),
            4 => json!(*self.pick(&[0.5, -0.0, 1e308, f64::MIN_POSITIVE])),
            5 => json!(self.text()),
            6 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
            _ => {
                let mut map = serde_json::Map::new();
                for _ in 0..self.below(4) {
                    map.insert(self.text(), self.value(depth + 1));
                }
                Value::Object(map)
            }
        }
    }
}

const CHECKS: &[&str] = &["cron", "dns", "nope", ""];
const TIMES: &[&str] = &[
    "2026-12-01T00:00:00Z",
    "2999-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "yesterday",
    "",
];

/// One result, mostly well formed, with one field (or more) broken.
fn result(rng: &mut Rng, id: String) -> Value {
    let mut item = serde_json::Map::new();
    item.insert("id".into(), json!(id));
    item.insert("check".into(), json!(*rng.pick(CHECKS)));
    item.insert(
        "status".into(),
        json!(*rng.pick(&[0, 1, 2, 3, 7, 255, 256, -3])),
    );
    if rng.chance(60) {
        item.insert(
            "entity".into(),
            json!(*rng.pick(&["e1", "web-1", "bad name", "::"])),
        );
    }
    if rng.chance(70) {
        let output = if rng.chance(50) {
            format!("{} | t=1s;{};;0 {}", rng.text(), rng.text(), rng.text())
        } else {
            rng.text()
        };
        item.insert("output".into(), json!(output));
    }
    if rng.chance(50) {
        let now = jiff::Timestamp::now().to_string();
        let time = if rng.chance(50) {
            now
        } else {
            rng.pick(TIMES).to_string()
        };
        item.insert("executed_at".into(), json!(time));
    }
    if rng.chance(30) {
        item.insert("duration_ms".into(), rng.value(1));
    }
    // Break something about it: a field's type, an unknown field, a missing field.
    match rng.below(6) {
        0 => {
            let key = rng
                .pick(&["id", "check", "status", "entity", "output", "executed_at"])
                .to_string();
            item.insert(key, rng.value(0));
        }
        1 => {
            item.insert(rng.text(), rng.value(0));
        }
        2 => {
            let key = *rng.pick(&["id", "check", "status"]);
            item.remove(key);
        }
        _ => {}
    }
    Value::Object(item)
}

/// The results API under a bounded fuzz: never a 5xx, never a crash, and nothing a refused
/// request carried is stored.
#[tokio::test]
async fn the_results_api_holds_under_fuzz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let spec = "checks:\n  - { name: cron, ttl: 1h }\n  - { name: dns, ttl: 1h }\n";
    assert_eq!(server.apply(&[("spec.yaml", spec)]).await.0, 200);
    let mut rng = Rng::new(1);
    let cases = rng.cases(300);
    let (mut stored, mut refused) = (HashSet::new(), HashSet::new());
    let mut statuses = std::collections::BTreeMap::new();
    for case in 0..cases {
        let ids: Vec<String> = (0..rng.below(5)).map(|i| format!("f{case}-{i}")).collect();
        let mut sent: Vec<String> = Vec::new();
        let body: Vec<u8> = match rng.below(10) {
            // Not JSON at all, or JSON of the wrong shape.
            0 => rng.text().into_bytes(),
            1 => serde_json::to_vec(&rng.value(0)).expect("json"),
            2 => serde_json::to_vec(&json!({ "results": rng.value(1) })).expect("json"),
            _ => {
                let items: Vec<Value> = ids.iter().map(|id| result(&mut rng, id.clone())).collect();
                // What the items really carry as ids (a broken field may be the id).
                sent = items
                    .iter()
                    .filter_map(|item| item["id"].as_str().map(str::to_string))
                    .collect();
                let mut request = json!({ "results": items });
                if rng.chance(10) {
                    request[rng.text()] = rng.value(1);
                }
                serde_json::to_vec(&request).expect("json")
            }
        };
        let token = if rng.chance(5) {
            Some("mdd_wrong")
        } else {
            Some(ADMIN)
        };
        let (status, answer) = server
            .call(reqwest::Method::POST, "/api/v1/results", token, Some(body))
            .await;
        *statuses.entry(status).or_insert(0) += 1;
        assert!(status < 500, "case {case}: {status} {answer}");
        if (200..300).contains(&status) {
            stored.extend(sent);
        } else {
            assert!(
                answer["error"].as_str().is_some_and(|e| e.len() < 2_000),
                "case {case}: a bounded error says why: {answer}"
            );
            refused.extend(sent);
        }
    }
    let (status, _) = server.get("/healthz").await;
    assert_eq!(
        status, 200,
        "still serving after {cases} cases: {statuses:?}"
    );
    // Nothing of a refused request was stored; everything acknowledged was.
    for id in refused.iter().filter(|id| !stored.contains(*id)).take(200) {
        let (status, body) = server.get(&format!("/api/v1/results/{id}")).await;
        assert_eq!(status, 404, "{id} was refused but is stored: {body}");
    }
    for id in stored.iter().take(200) {
        let (status, _) = server.get(&format!("/api/v1/results/{id}")).await;
        assert_eq!(status, 200, "{id} was acknowledged but is not stored");
    }
    assert!(
        statuses.keys().any(|s| *s == 200) && statuses.keys().any(|s| *s == 400),
        "the fuzz reached both sides: {statuses:?}"
    );
    server.stop().await;
}

/// The sign-in form under a bounded fuzz: never a 5xx, and a redirect only ever to a path of
/// this server.
#[tokio::test]
async fn the_sign_in_form_holds_under_fuzz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut rng = Rng::new(2);
    let cases = rng.cases(300);
    const NEXT: &[&str] = &[
        "/",
        "//evil.example",
        "/\t/evil.example",
        "/\\evil",
        "https://evil.example",
        "/ok",
        "/%2F/evil",
        "/\r\nSet-Cookie: a=b",
        "javascript:alert(1)",
        "/deployments/a b",
    ];
    for case in 0..cases {
        let mut form = form_urlencoded::Serializer::new(String::new());
        let token = match rng.below(4) {
            0 => ADMIN.to_string(),
            1 => String::new(),
            _ => rng.text(),
        };
        form.append_pair("token", &token);
        let next = if rng.chance(50) {
            rng.pick(NEXT).to_string()
        } else {
            format!("{}{}", rng.pick(NEXT), rng.text())
        };
        form.append_pair("next", &next);
        if rng.chance(20) {
            form.append_pair(&rng.text(), &rng.text());
        }
        let mut body = form.finish().into_bytes();
        if rng.chance(10) {
            body = rng.text().into_bytes();
        }
        let response = http
            .post(format!("{}/login", server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("answer");
        let status = response.status().as_u16();
        assert!(status < 500, "case {case}: {status}");
        if let Some(location) = response.headers().get("location") {
            let location = location.to_str().expect("visible ASCII");
            let bytes = location.as_bytes();
            assert!(
                bytes.first() == Some(&b'/')
                    && !matches!(bytes.get(1), Some(b'/' | b'\\'))
                    && bytes.iter().all(|b| b.is_ascii_graphic() && *b != b'\\'),
                "case {case}: next {next:?} redirected to {location:?}"
            );
        }
    }
    server.stop().await;
}

/// The agent's config file under a bounded fuzz: a bad file is refused with exit 2 naming
/// the file, a good one starts; never a panic.
#[tokio::test]
async fn the_agent_config_holds_under_fuzz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::new(3);
    let cases = rng.cases(40);
    const KEYS: &[&str] = &[
        "server",
        "token",
        "token_file",
        "name",
        "subscriptions",
        "labels",
        "data",
        "ca",
        "spool_limit_mib",
        "keepalive",
        "keepalive_warning",
        "keepalive_critical",
        "deregister",
        "bogus",
    ];
    const VALUES: &[&str] = &[
        "http://127.0.0.1:9",
        "mdd_some_token_0123456789",
        "[a, b]",
        "{ k: v }",
        "yes",
        "no",
        "-1",
        "99999999999999999999999",
        "1s",
        "0s",
        "soon",
        "[]",
        "{}",
        "~",
        "'x'",
        "&a x",
        "*a",
        "!!binary aGk=",
        "[[[[[[]]]]]]",
        "\"\\u0000\"",
    ];
    let mut outcomes = std::collections::BTreeMap::new();
    for case in 0..cases {
        let mut text = String::new();
        let mut used = HashSet::new();
        if rng.chance(40) {
            // A file that could work, with one more thing in it.
            text.push_str("server: http://127.0.0.1:9\ntoken: mdd_some_token_0123456789\n");
            used.extend(["server".to_string(), "token".to_string()]);
        }
        for _ in 0..rng.below(6) {
            let key = if rng.chance(90) {
                rng.pick(KEYS).to_string()
            } else {
                rng.text()
            };
            if !used.insert(key.clone()) && rng.chance(80) {
                continue;
            }
            let value = if rng.chance(80) {
                rng.pick(VALUES).to_string()
            } else {
                rng.text()
            };
            text.push_str(&format!("{key}: {value}\n"));
        }
        if rng.chance(10) {
            text = rng.text();
        }
        let config = dir.path().join(format!("agent-{case}.yaml"));
        std::fs::write(&config, &text).expect("write");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
            .args(["agent", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(dir.path().join(format!("data-{case}")))
            .env_remove("MDD_TOKEN")
            .env_remove("MDD_SERVER")
            .env("MDD_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn agent");
        let ended = tokio::time::timeout(Duration::from_millis(700), child.wait()).await;
        let code = match ended {
            Ok(status) => status.expect("wait").code(),
            Err(_) => {
                // It started and runs: a file it could use.
                let _ = child.kill().await;
                None
            }
        };
        let mut said = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = tokio::time::timeout(Duration::from_secs(1), stderr.read_to_string(&mut said))
                .await;
        }
        assert!(!said.contains("panicked"), "case {case}: {text:?}\n{said}");
        assert_ne!(code, Some(101), "case {case} panicked: {text:?}\n{said}");
        if code == Some(2) {
            assert!(
                said.contains(&format!("agent-{case}.yaml"))
                    || said.contains("no server")
                    || said.contains("no token"),
                "case {case}: the error names the file or what is missing: {said}"
            );
        }
        *outcomes.entry(code).or_insert(0) += 1;
    }
    assert!(
        outcomes.contains_key(&Some(2)) && outcomes.contains_key(&None),
        "some files were refused and some started: {outcomes:?}"
    );
}
