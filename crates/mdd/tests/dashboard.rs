//! The dashboard in a real headless Chromium against a real `mdd server`: sign-in, the right
//! states after results are posted, live updates without a reload, links, no console errors.
//! Screenshots of the main pages are kept in `target/dashboard-screenshots/`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::browser::Browser;
use common::{ADMIN, TestServer};
use serde_json::{Value, json};

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn post_result(server: &TestServer, check: &str, status: u8, output: &str) {
    let (code, body) = server
        .post(
            "/api/v1/results",
            &json!({ "results": [{
                "id": uuid_like(),
                "check": check,
                "entity": "ams1-probe",
                "status": status,
                "output": output,
            }] }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "dash-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

const SPEC: &str = "deployments:
  - { name: ams1, description: Amsterdam 1 goes live, selector: { dc: ams1 }, settle: 1s }
checks:
  - name: ams1-dns
    owner: team-dns
    description: Resolvers answer for the datacenter's zone
    runbook: https://wiki.example/dns
    labels: { dc: ams1 }
    ttl: 1h
  - name: ams1-ldap
    owner: team-identity
    labels: { dc: ams1 }
    depends_on: [ams1-dns]
    ttl: 1h
  - name: fra1-dns
    owner: team-dns
    labels: { dc: fra1 }
    ttl: 1h
  - name: local-echo
    owner: team-dns
    interval: 1h
    command: [echo, 'OK - ran on demand']
";

#[tokio::test]
async fn the_dashboard_shows_a_datacenter_turning_green_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, SPEC).expect("write spec");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--spec", spec.to_str().expect("utf-8")],
    )
    .await;
    post_result(
        &server,
        "ams1-dns",
        2,
        "CRITICAL - no answer from 10.1.0.53",
    )
    .await;
    post_result(
        &server,
        "ams1-ldap",
        0,
        "LDAP OK - bind in 4 ms | time=0.004s",
    )
    .await;
    post_result(
        &server,
        "fra1-dns",
        1,
        "WARNING - slow answers | time=0.9s;0.5;2",
    )
    .await;

    let browser = Browser::start().await;
    let shots = screenshots();

    // Without --public-read the dashboard asks for a token first, then goes where it was asked.
    browser
        .open(&format!("{}/deployments/ams1", server.url))
        .await;
    assert_eq!(
        browser.eval("location.pathname").await,
        json!("/login"),
        "reading needs a token"
    );
    browser
        .eval("document.querySelector('input[name=token]').value = 'not-a-token'")
        .await;
    browser
        .navigate_by("document.querySelector('form.login').submit()")
        .await;
    assert!(
        browser
            .eval("document.querySelector('.error').textContent")
            .await
            .as_str()
            .is_some_and(|t| t.contains("not valid")),
        "a wrong token is refused"
    );
    // The refusal is a 401, which the browser logs; nothing else may be.
    let refused: Vec<String> = std::mem::take(&mut *browser.problems.lock().expect("lock"));
    assert!(
        refused.len() == 1 && refused[0].contains("401"),
        "{refused:?}"
    );
    browser
        .eval(&format!(
            "document.querySelector('input[name=token]').value = '{ADMIN}'"
        ))
        .await;
    browser
        .navigate_by("document.querySelector('form.login').submit()")
        .await;
    assert_eq!(
        browser.eval("location.pathname").await,
        json!("/deployments/ams1")
    );
    assert_eq!(
        browser.eval("document.cookie").await,
        json!(""),
        "the session cookie is HttpOnly: scripts cannot read it"
    );

    // The deployment page: states by data attribute, mark and word.
    let state_of = |check: &str| {
        format!("document.querySelector('.grid [data-check=\"{check}\"]')?.dataset.state ?? null")
    };
    assert_eq!(browser.eval(&state_of("ams1-dns")).await, json!("failing"));
    assert_eq!(browser.eval(&state_of("ams1-ldap")).await, json!("blocked"));
    assert_eq!(
        browser.eval(&state_of("fra1-dns")).await,
        Value::Null,
        "fra1 is not in ams1"
    );
    let cell_text = browser
        .eval("document.querySelector('.grid [data-check=\"ams1-dns\"]').innerText")
        .await;
    assert!(
        cell_text
            .as_str()
            .is_some_and(|t| t.contains('✗') && t.contains("failing")),
        "state is shown by mark and word, not colour alone: {cell_text}"
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('svg.graph .edge').length")
            .await,
        json!(1),
        "the dependency graph is drawn"
    );
    browser.screenshot(&shots.join("deployment-red.png")).await;

    // DNS comes up: the open page follows without a reload.
    browser.eval("window.notReloaded = true").await;
    post_result(&server, "ams1-dns", 0, "DNS OK - 3 answers | time=0.012s").await;
    browser
        .wait_for(&state_of("ams1-dns"), json!("passing"))
        .await;
    browser
        .wait_for(&state_of("ams1-ldap"), json!("passing"))
        .await;
    browser
        .wait_for(
            "document.getElementById('green-count').textContent",
            json!("2/2 green"),
        )
        .await;
    assert_eq!(
        browser.eval("window.notReloaded === true").await,
        json!(true),
        "updated in place, not reloaded"
    );
    browser
        .screenshot(&shots.join("deployment-green.png"))
        .await;

    // Links work: from the grid to the check page.
    browser
        .navigate_by("document.querySelector('.grid a[href=\"/checks/ams1-dns\"]').click()")
        .await;
    assert_eq!(
        browser.eval("document.querySelector('h1').innerText").await,
        json!("ams1-dns ✓ passing")
    );
    assert_eq!(
        browser
            .eval("document.querySelector('a[href=\"https://wiki.example/dns\"]') !== null")
            .await,
        json!(true),
        "the runbook is linked"
    );
    assert!(
        browser
            .eval("document.querySelectorAll('svg.chart').length")
            .await
            .as_u64()
            .is_some_and(|n| n >= 1),
        "perfdata is plotted"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('run-now') === null")
            .await,
        json!(true),
        "a push-only check cannot be run from here"
    );
    browser.screenshot(&shots.join("check.png")).await;

    // An admin can run one of the server's checks now, from its page.
    browser
        .open(&format!("{}/checks/local-echo", server.url))
        .await;
    browser
        .navigate_by("document.getElementById('run-now').click()")
        .await;
    browser
        .wait_for(
            "[...document.querySelectorAll('pre')].some(p => p.textContent.includes('ran on demand'))",
            json!(true),
        )
        .await;

    // Silence a check from its page, see it marked, end it.
    browser
        .open(&format!("{}/checks/ams1-dns", server.url))
        .await;
    browser
        .eval("document.querySelector('.silence-form input[name=reason]').value = 'resolver migration'")
        .await;
    browser
        .eval("document.querySelector('.silence-form select').value = '4h'")
        .await;
    browser
        .navigate_by("document.getElementById('silence').click()")
        .await;
    // The page after the form posts: its silence shown with the reason and the end.
    browser
        .wait_for(
            "(document.querySelector('.silences')?.innerText ?? '').includes('resolver migration')",
            json!(true),
        )
        .await;
    assert!(
        browser
            .eval("document.querySelector('.silences').innerText")
            .await
            .as_str()
            .is_some_and(|t| t.contains("until 20") && t.contains("first admin")),
        "who and until when"
    );
    let (_, silences) = server.get("/api/v1/silences").await;
    assert_eq!(silences["silences"][0]["check"], "ams1-dns", "{silences}");
    assert_eq!(
        silences["silences"][0]["creator"], "first admin",
        "{silences}"
    );
    browser
        .navigate_by("document.querySelector('.end-silence').click()")
        .await;
    assert_eq!(
        browser
            .eval("document.querySelector('.silences') === null")
            .await,
        json!(true),
        "ended"
    );
    let (_, silences) = server.get("/api/v1/silences").await;
    assert_eq!(silences["silences"], json!([]), "{silences}");

    // The overview: the deployment's bar and a tile per datacenter, coloured by its worst.
    browser.open(&format!("{}/", server.url)).await;
    let tiles = browser
        .eval("[...document.querySelectorAll('.tile')].map(t => t.className + ' ' + t.innerText.replace(/\\s+/g, ' '))")
        .await;
    let tiles: Vec<String> = serde_json::from_value(tiles).expect("tiles");
    assert!(
        tiles
            .iter()
            .any(|t| t.contains("s-passing") && t.contains("ams1")),
        "{tiles:?}"
    );
    assert!(
        tiles
            .iter()
            .any(|t| t.contains("s-warning") && t.contains("fra1") && t.contains("warning")),
        "{tiles:?}"
    );
    browser.screenshot(&shots.join("overview.png")).await;

    // Events with filters in the URL, shareable.
    browser
        .open(&format!("{}/events?state=warning", server.url))
        .await;
    let rows = browser
        .eval("[...document.querySelectorAll('table.events tbody tr')].map(r => r.dataset.check)")
        .await;
    assert_eq!(rows, json!(["fra1-dns"]));
    browser.screenshot(&shots.join("events.png")).await;
    browser.open(&format!("{}/entities", server.url)).await;
    browser.screenshot(&shots.join("entities.png")).await;
    browser.open(&format!("{}/report", server.url)).await;
    browser.screenshot(&shots.join("report.png")).await;
    browser.open(&format!("{}/handlers", server.url)).await;
    browser.screenshot(&shots.join("handlers.png")).await;
    browser.open(&format!("{}/docs", server.url)).await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('svg.graph .edge').length")
            .await,
        json!(1),
        "the dependency is drawn"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('nav.back a') && document.querySelector('nav.back a').getAttribute('href')")
            .await,
        json!("/"),
        "/docs links back to the dashboard"
    );
    browser.screenshot(&shots.join("docs.png")).await;

    // Give the live script a few rounds on the last page, then: not one error anywhere.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let problems = browser.problems.lock().expect("lock").clone();
    assert!(problems.is_empty(), "console errors: {problems:#?}");
    assert!(server.stop().await.success());
}

/// The pages are whole without JavaScript: a plain HTTP client reads the states.
#[tokio::test]
async fn pages_read_without_javascript_and_escape_what_they_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, SPEC).expect("write spec");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--spec", spec.to_str().expect("utf-8"), "--public-read"],
    )
    .await;
    post_result(&server, "ams1-dns", 2, "<script>alert('owned')</script>").await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/deployments/ams1", server.url))
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.expect("body");
    assert!(
        html.contains("data-check=\"ams1-dns\" data-state=\"failing\""),
        "{html}"
    );
    assert!(html.contains("alert("), "the output is shown");
    assert!(!html.contains("<script>alert"), "and escaped");
    let missing = http
        .get(format!("{}/checks/nope", server.url))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    // Running a check is a write: reading rights are not enough, and a signed-in browser
    // must send the session's form token from a page of this server.
    let run = format!("{}/checks/local-echo/run", server.url);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let refused = no_redirects.post(&run).send().await.expect("post");
    assert_eq!(refused.status(), 403, "public read cannot run checks");
    let signed_in = no_redirects
        .post(format!("{}/login", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN}&next=/"))
        .send()
        .await
        .expect("login");
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().expect("name=value").to_string();
    let page = no_redirects
        .get(format!("{}/checks/local-echo", server.url))
        .header("cookie", &session)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form carries the session's token")
        .to_string();
    let origin = server.url.clone();
    let attempt = |csrf: String, origin: String| {
        let request = no_redirects
            .post(&run)
            .header("cookie", &session)
            .header("origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"));
        async move { request.send().await.expect("post").status().as_u16() }
    };
    assert_eq!(
        attempt("wrong".into(), origin.clone()).await,
        403,
        "a forged form"
    );
    assert_eq!(
        attempt(csrf.clone(), "http://evil.example".into()).await,
        403,
        "another site's page"
    );
    assert_eq!(
        attempt(csrf, origin).await,
        303,
        "this dashboard's own form"
    );
    let with_bearer = no_redirects
        .post(&run)
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("post");
    assert_eq!(
        with_bearer.status(),
        303,
        "a bearer token is not ambient: no form token needed"
    );

    // Sign-in never sends anyone to another site.
    let login = http
        .get(format!("{}/login?next=//evil.example/", server.url))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(login.contains("name=\"next\" value=\"/\""), "{login}");
    assert!(server.stop().await.success());
}

/// `mdd demo`, played 20 times faster: the example datacenter comes up in the order the demo
/// brings its integration points up, and the deployment ends done done.
#[tokio::test]
async fn the_demo_brings_a_datacenter_to_done() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args(["demo", "--listen", "127.0.0.1:0", "--speed", "20"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start mdd demo");
    let mut lines = BufReader::new(demo.stderr.take().expect("stderr")).lines();
    let mut url = None;
    let mut said = String::new();
    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            said.push_str(&line);
            said.push('\n');
            if url.is_none() {
                url = line
                    .split("open ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(|u| u.trim_end_matches('/').to_string());
            }
            if line.contains("done done") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(finished, Ok(true), "{said}");
    let url = url.expect("the demo prints its URL");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let body = reqwest::get(format!("{url}/api/v1/deployments/ams1"))
        .await
        .expect("public read")
        .bytes()
        .await
        .expect("body");
    let detail: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(detail["done"], true, "{detail}");
    assert_eq!(detail["total"], 8, "{detail}");
    let green_after = |name: &str| {
        detail["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .and_then(|c| c["time_to_green_ms"].as_i64())
            .unwrap_or_else(|| panic!("{name}: {detail}"))
    };
    let order = ["ams1-dns", "ams1-ldap", "ams1-api", "ams1-lb"].map(green_after);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    let page = reqwest::get(format!("{url}/deployments/ams1"))
        .await
        .expect("dashboard")
        .text()
        .await
        .expect("html");
    assert!(page.contains("8/8 green"), "{page}");
    // Every probe kind ran for real, the Nagios plugin included (the test command installs it).
    let spec_text = reqwest::get(format!("{url}/api/v1/spec"))
        .await
        .expect("spec")
        .text()
        .await
        .expect("text");
    for kind in ["dns: ", "tcp: ", "http: ", "tls: ", "https://", "check_tcp"] {
        assert!(spec_text.contains(kind), "{kind} in the demo's spec");
    }
    // Then one point breaks and comes back: a regression, and the handler told both ways.
    let after = tokio::time::timeout(Duration::from_secs(60), async {
        let mut told = (false, false, false);
        while let Ok(Some(line)) = lines.next_line().await {
            said.push_str(&line);
            said.push('\n');
            told.0 |= line.contains("on-call was told: ams1-postgres incident");
            told.1 |= line.contains("on-call was told: ams1-postgres resolution");
            told.2 |= line.contains("ams1-postgres is back");
            if told == (true, true, true) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(after, Ok(true), "{said}");
    let body = reqwest::get(format!("{url}/api/v1/deployments/ams1"))
        .await
        .expect("public read")
        .bytes()
        .await
        .expect("body");
    let detail: Value = serde_json::from_slice(&body).expect("json");
    let regressions = detail["regressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        regressions.iter().any(|r| r["check"] == "ams1-postgres"),
        "{detail}"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id().expect("running") as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = tokio::time::timeout(Duration::from_secs(20), demo.wait())
        .await
        .expect("the demo stops on SIGTERM")
        .expect("wait");
    assert!(status.success());
}

/// `mdd docs`: from files alone, and from a server with live states; Markdown and HTML.
#[tokio::test]
async fn docs_from_files_and_from_a_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, SPEC).expect("write spec");
    let mdd = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mdd"))
            .args(args)
            .env_remove("MDD_SERVER")
            .env_remove("MDD_TOKEN")
            .output()
            .expect("run mdd docs")
    };
    let out = mdd(&["docs", spec.to_str().expect("utf-8")]);
    assert!(out.status.success());
    let markdown = String::from_utf8_lossy(&out.stdout);
    assert!(markdown.contains("## team-dns"), "{markdown}");
    assert!(
        markdown.contains("n0 --> n1"),
        "a Mermaid edge dns -> ldap: {markdown}"
    );
    assert!(
        markdown.contains("Needed by [ams1-ldap]") || markdown.contains("Needed by ams1-ldap"),
        "{markdown}"
    );

    let server = TestServer::start(
        &dir.path().join("data"),
        &["--spec", spec.to_str().expect("utf-8")],
    )
    .await;
    post_result(&server, "ams1-dns", 0, "DNS OK").await;
    let html_path = dir.path().join("docs.html");
    let out = mdd(&[
        "docs",
        "--server",
        &server.url,
        "--token",
        ADMIN,
        "--format",
        "html",
        "--output",
        html_path.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&html_path).expect("written");
    assert!(html.contains("✓ passing since"), "live state of ams1-dns");
    assert!(html.contains("… pending"), "ams1-ldap has no result yet");
    assert!(html.contains("<style>"), "a file that stands alone");
    let out = mdd(&["docs"]);
    assert_eq!(out.status.code(), Some(2), "nothing to document");
    assert!(server.stop().await.success());
}

/// Every page at 400 px (a phone) and 1,400 px (a desk), in a real Chromium, screenshotted
/// into `target/dashboard-screenshots/` (`NAME-400.png`, `NAME-1400.png`) and checked for
/// what breaks a layout: the page wider than the window, a navigation link off screen or
/// over another, a table running out of the window instead of scrolling in its box.
#[tokio::test]
async fn every_page_fits_a_phone_and_a_wide_screen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.yaml");
    let handlers = "handlers:
  - { name: log, type: command, command: [python3, -c, 'import sys; sys.stdin.read()'] }
";
    std::fs::write(&spec, format!("{handlers}{SPEC}")).expect("write spec");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--spec", spec.to_str().expect("utf-8"), "--public-read"],
    )
    .await;
    post_result(&server, "ams1-dns", 2, "CRITICAL - no answer from 10.1.0.53 after 3 tries over udp and tcp, with a very long explanation that does not fit").await;
    post_result(
        &server,
        "ams1-ldap",
        0,
        "LDAP OK - bind in 4 ms | time=0.004s;0.5;1",
    )
    .await;
    post_result(
        &server,
        "ams1-ldap",
        0,
        "LDAP OK - bind in 6 ms | time=0.006s;0.5;1",
    )
    .await;
    post_result(
        &server,
        "fra1-dns",
        1,
        "WARNING - slow answers | time=0.9s;0.5;2",
    )
    .await;
    let browser = Browser::start().await;
    let shots = screenshots();
    let pages = [
        ("overview", "/"),
        ("deployment", "/deployments/ams1"),
        ("check", "/checks/ams1-ldap"),
        ("events", "/events"),
        ("entities", "/entities"),
        ("report", "/report"),
        ("handlers", "/handlers"),
        ("docs", "/docs"),
    ];
    let layout = "(() => {
        const w = window.innerWidth, problems = [];
        if (document.documentElement.scrollWidth > w + 1)
            problems.push('page ' + document.documentElement.scrollWidth + 'px wide in ' + w);
        const links = [...document.querySelectorAll('nav a')].map(a => a.getBoundingClientRect());
        links.forEach((r, i) => {
            if (r.left < 0 || r.right > w + 1) problems.push('nav link ' + i + ' off screen');
            links.slice(i + 1).forEach((o, j) => {
                if (r.left < o.right && o.left < r.right && r.top < o.bottom && o.top < r.bottom)
                    problems.push('nav links ' + i + ' and ' + (i + j + 1) + ' overlap');
            });
        });
        document.querySelectorAll('table').forEach((t, i) => {
            if (t.getBoundingClientRect().right > w + 1) problems.push('table ' + i + ' runs out');
        });
        return problems;
    })()";
    for width in [400, 1400] {
        browser.viewport(width, 900).await;
        for (name, path) in pages {
            browser.open(&format!("{}{path}", server.url)).await;
            browser
                .screenshot(&shots.join(format!("{name}-{width}.png")))
                .await;
            let problems = browser.eval(layout).await;
            assert_eq!(problems, json!([]), "{path} at {width} px");
        }
    }
    let problems = browser.problems.lock().expect("lock").clone();
    assert!(problems.is_empty(), "console errors: {problems:#?}");
    assert!(server.stop().await.success());
}
