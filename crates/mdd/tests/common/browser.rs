//! A real headless Chromium driven over the DevTools protocol: navigate, click, read the DOM,
//! take screenshots, and collect every console error, uncaught exception and CSP violation.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

pub struct Browser {
    _child: Child,
    _profile: tempfile::TempDir,
    commands: mpsc::UnboundedSender<String>,
    pending: Pending,
    next_id: std::sync::atomic::AtomicU64,
    /// Console errors, exceptions and security (CSP) violations seen so far.
    pub problems: Arc<Mutex<Vec<String>>>,
    loads: Arc<tokio::sync::Notify>,
}

impl Browser {
    /// Starts Chromium (Debian's `chromium`) headless with a fresh profile.
    pub async fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1200,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium (apt-get install chromium)");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let browser_ws = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return url.trim().to_string();
                }
            }
            panic!("chromium ended without a DevTools address");
        })
        .await
        .expect("chromium starts within 30 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // The page target, from the same host:port as the browser's endpoint.
        let host = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_string();
        assert!(
            host.starts_with("127.0.0.1:"),
            "DevTools on loopback only: {host}"
        );
        let list = reqwest::get(format!("http://{host}/json/list"))
            .await
            .expect("target list")
            .bytes()
            .await
            .expect("target list body");
        let targets: Value = serde_json::from_slice(&list).expect("target json");
        let page_ws = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (socket, _) = tokio_tungstenite::connect_async(page_ws.as_str())
            .await
            .expect("connect to the page");
        let (mut sink, mut stream) = socket.split();
        let (commands, mut outgoing) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = outgoing.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        });
        let pending: Pending = Arc::default();
        let problems: Arc<Mutex<Vec<String>>> = Arc::default();
        let loads = Arc::new(tokio::sync::Notify::new());
        {
            let (pending, problems, loads) = (
                Arc::clone(&pending),
                Arc::clone(&problems),
                Arc::clone(&loads),
            );
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let Ok(text) = message.to_text() else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_str::<Value>(text) else {
                        continue;
                    };
                    if let Some(id) = value["id"].as_u64() {
                        if let Some(reply) = pending.lock().expect("lock").remove(&id) {
                            let _ = reply.send(value);
                        }
                        continue;
                    }
                    let params = &value["params"];
                    let problem = match value["method"].as_str() {
                        Some("Page.loadEventFired") => {
                            loads.notify_waiters();
                            None
                        }
                        Some("Runtime.exceptionThrown") => {
                            Some(format!("exception: {}", params["exceptionDetails"]))
                        }
                        Some("Runtime.consoleAPICalled")
                            if matches!(params["type"].as_str(), Some("error" | "assert")) =>
                        {
                            Some(format!("console.error: {}", params["args"]))
                        }
                        Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                            Some(format!(
                                "{}: {} ({})",
                                params["entry"]["source"],
                                params["entry"]["text"],
                                params["entry"]["url"]
                            ))
                        }
                        _ => None,
                    };
                    if let Some(problem) = problem {
                        problems.lock().expect("lock").push(problem);
                    }
                }
            });
        }
        let browser = Browser {
            _child: child,
            _profile: profile,
            commands,
            pending,
            next_id: std::sync::atomic::AtomicU64::new(1),
            problems,
            loads,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Sends one DevTools command and returns its result.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let value = self.send(method, params).await;
        assert!(value["error"].is_null(), "{method}: {value}");
        value["result"].clone()
    }

    /// Sends one DevTools command and returns the whole answer, error or not.
    async fn send(&self, method: &str, params: Value) -> Value {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.pending.lock().expect("lock").insert(id, reply);
        let text = json!({ "id": id, "method": method, "params": params }).to_string();
        self.commands.send(text).expect("devtools connection");
        tokio::time::timeout(Duration::from_secs(30), answer)
            .await
            .unwrap_or_else(|_| panic!("{method} answered within 30 s"))
            .expect("answer")
    }

    /// Evaluates an expression; None if the page went away meanwhile (it was navigating).
    async fn try_eval(&self, expression: &str) -> Option<Value> {
        let answer = self
            .send(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        let result = &answer["result"];
        (answer["error"].is_null() && result["exceptionDetails"].is_null())
            .then(|| result["result"]["value"].clone())
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn open(&self, url: &str) {
        let loaded = self.loads.notified();
        tokio::pin!(loaded);
        loaded.as_mut().enable();
        self.call("Page.navigate", json!({ "url": url })).await;
        tokio::time::timeout(Duration::from_secs(30), loaded)
            .await
            .unwrap_or_else(|_| panic!("{url} loads within 30 s"));
    }

    /// Runs `action` (a script that navigates, like a click) and waits for the next page: a
    /// marker set on the current document must be gone (a new document) and it must be loaded.
    /// The action runs from a timer, so the evaluation returns before the page goes away.
    pub async fn navigate_by(&self, action: &str) {
        self.eval("window.__mddOldPage = true").await;
        self.eval(&format!("setTimeout(() => {{ {action}; }}, 0)"))
            .await;
        self.wait_for(
            "window.__mddOldPage === undefined && document.readyState === 'complete'",
            Value::Bool(true),
        )
        .await;
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it equals `expected`, or panics with the last value after 15 s.
    pub async fn wait_for(&self, expression: &str, expected: Value) {
        let mut last = Value::Null;
        for _ in 0..150 {
            // A page in the middle of navigating has no value yet: ask again.
            last = self.try_eval(expression).await.unwrap_or(Value::Null);
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{expression} is {last}, not {expected}");
    }

    /// Lays pages out as a window `width` CSS pixels wide would (400: a phone).
    pub async fn viewport(&self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
    }

    /// Saves a PNG of the page as it is now.
    pub async fn screenshot(&self, path: &Path) {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("png data"))
            .expect("base64");
        std::fs::write(path, png).expect("write screenshot");
    }
}
