//! What the end-to-end suites share: a real `mdd server` on a loopback port the OS picks.
#![allow(dead_code)] // each test file uses a different part

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ADMIN: &str = "mdd_test_admin_token_0123456789abcdef";

pub struct TestServer {
    pub child: Child,
    pub url: String,
    pub http: reqwest::Client,
}

impl TestServer {
    /// Starts `mdd server` on a port the OS picks and waits until it serves.
    pub async fn start(data: &Path, extra: &[&str]) -> TestServer {
        TestServer::start_wrapped(&[], data, extra)
            .await
            .expect("server starts")
    }

    /// Starts the server behind `wrapper` (e.g. unshare), returning its stderr if it fails.
    pub async fn start_wrapped(
        wrapper: &[&str],
        data: &Path,
        extra: &[&str],
    ) -> Result<TestServer, String> {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_mdd"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_mdd")),
        };
        command.arg("server");
        if !extra.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("MDD_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn mdd server");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut said = String::new();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                said.push_str(&line);
                said.push('\n');
                if let Some(rest) = line.split("serving on ").nth(1) {
                    return Some(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(url) = url else {
            let _ = child.kill().await;
            return Err(said);
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(TestServer {
            child,
            url,
            http: reqwest::Client::new(),
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(ADMIN), None)
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            path,
            Some(ADMIN),
            Some(serde_json::to_vec(body).expect("json")),
        )
        .await
    }

    pub async fn apply(&self, files: &[(&str, &str)]) -> (u16, Value) {
        let files: Vec<Value> = files
            .iter()
            .map(|(f, t)| json!({ "file": f, "text": t }))
            .collect();
        self.post("/api/v1/spec", &json!({ "files": files })).await
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    pub async fn stop(mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("server stops after SIGTERM")
            .expect("wait")
    }

    pub async fn kill9(mut self) {
        let _ = self.child.kill().await;
    }
}
/// Waits until `pred` holds for the events list, or panics with the last list after 20 s.
pub async fn wait_for_events(server: &TestServer, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..200 {
        let (_, body) = server.get("/api/v1/events").await;
        last = body["events"].as_array().cloned().unwrap_or_default();
        if pred(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "events never got there: {}",
        serde_json::to_string_pretty(&last).unwrap_or_default()
    );
}

/// Runs an `mdd` client command against `server` with the admin token.
pub async fn mdd_client(server: &TestServer, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mdd"))
        .args(args)
        .env("MDD_SERVER", &server.url)
        .env("MDD_TOKEN", ADMIN)
        .output()
        .await
        .expect("run mdd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub mod browser;
