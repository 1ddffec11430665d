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
    /// The CA file its certificate is from, when it serves HTTPS (see `with_ca`).
    pub ca: Option<std::path::PathBuf>,
    /// The tail of what it said on stderr (see [`ServerLog`]).
    pub log: ServerLog,
}

/// The last [`ServerLog::KEEP`] bytes a server said on stderr, kept past its stop, for the
/// message of a test that fails on what the server did.
#[derive(Clone, Default)]
pub struct ServerLog(std::sync::Arc<std::sync::Mutex<String>>);

impl ServerLog {
    const KEEP: usize = 256 * 1024;

    fn push(&self, line: &str) {
        let mut text = self.0.lock().unwrap_or_else(|p| p.into_inner());
        text.push_str(line);
        text.push('\n');
        if text.len() > 2 * Self::KEEP {
            let mut cut = text.len() - Self::KEEP;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text.drain(..cut);
        }
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl TestServer {
    /// Starts `mdd server` on a port the OS picks and waits until it serves. When the suite
    /// runs on PostgreSQL (see [`postgres_for`]), its store is a database named after `data`.
    pub async fn start(data: &Path, extra: &[&str]) -> TestServer {
        let database = postgres_for(data);
        let mut all: Vec<&str> = extra.to_vec();
        if let Some(url) = &database {
            all.extend(["--database", url.as_str()]);
        }
        TestServer::start_wrapped(&[], data, &all)
            .await
            .expect("server starts")
    }

    /// Starts `mdd server` on the data directory's SQLite whatever the suite runs on: for the
    /// tests about the data directory itself (its lock, a full or read-only disk).
    pub async fn start_on_sqlite(data: &Path, extra: &[&str]) -> TestServer {
        TestServer::start_wrapped(&[], data, extra)
            .await
            .expect("server starts")
    }

    /// `start_on_sqlite` with the server logging at `filter` (`MDD_LOG`), for tests that show
    /// what it said when they fail.
    pub async fn start_logging(data: &Path, extra: &[&str], filter: &str) -> TestServer {
        TestServer::start_with_env(&[], data, extra, &[("MDD_LOG", filter)])
            .await
            .expect("server starts")
    }

    /// Starts the server behind `wrapper` (e.g. unshare), returning its stderr if it fails.
    pub async fn start_wrapped(
        wrapper: &[&str],
        data: &Path,
        extra: &[&str],
    ) -> Result<TestServer, String> {
        TestServer::start_with_env(wrapper, data, extra, &[]).await
    }

    async fn start_with_env(
        wrapper: &[&str],
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
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
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().expect("spawn mdd server");
        TestServer::serving(child).await.map(|(server, _)| server)
    }

    /// Waits (at most 30 s) until a spawned `mdd server` (stderr piped) says where it serves;
    /// the server and all it said until then, or what it said when it did not start. Its
    /// stderr is drained from then on so it never blocks on a full pipe.
    pub async fn serving(mut child: Child) -> Result<(TestServer, String), String> {
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut said = String::new();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                said.push_str(&line);
                said.push('\n');
                if let Some(rest) = line.split("serving on ").nth(1) {
                    return rest.split_whitespace().next().map(str::to_string);
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
        let log = ServerLog::default();
        log.push(said.trim_end());
        let tail = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tail.push(&line);
            }
        });
        let server = TestServer {
            child,
            url,
            http: reqwest::Client::new(),
            ca: None,
            log,
        };
        Ok((server, said))
    }

    /// A dashboard page's HTML, read with the admin token.
    pub async fn page_text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html")
    }

    /// For a server on HTTPS: its requests, and `mdd_client`'s, trust the CA in `ca`.
    pub fn with_ca(mut self, ca: &Path) -> TestServer {
        let pem = std::fs::read(ca).expect("CA file");
        let certs = reqwest::Certificate::from_pem_bundle(&pem).expect("CA PEM");
        self.http = reqwest::Client::builder()
            .tls_certs_only(certs)
            .build()
            .expect("client");
        self.ca = Some(ca.to_path_buf());
        self
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
/// An agent process; its stderr lines are collected for the assertions on what it says.
pub struct Agent {
    child: Child,
    said: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Agent {
    pub fn start(server: &TestServer, data: &Path, args: &[&str]) -> Agent {
        Agent::start_at(&server.url, data, args)
    }

    /// An agent for the server at `url` (e.g. a proxy in front of one).
    pub fn start_at(url: &str, data: &Path, args: &[&str]) -> Agent {
        let mut all = vec!["--server", url];
        all.extend_from_slice(args);
        Agent::start_with(Path::new(env!("CARGO_BIN_EXE_mdd")), data, &all)
    }

    /// `program agent --data DATA ARGS…`: another build of mdd (a packaged one), the server
    /// named in ARGS or in a config file.
    pub fn start_with(program: &Path, data: &Path, args: &[&str]) -> Agent {
        let mut child = Command::new(program)
            .args(["agent", "--data"])
            .arg(data)
            .args(args)
            .env("MDD_LOG", "info")
            .env_remove("MDD_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("spawn mdd agent");
        let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let keep = std::sync::Arc::clone(&said);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut said = keep.lock().unwrap_or_else(|p| p.into_inner());
                said.push_str(&line);
                said.push('\n');
            }
        });
        Agent { child, said }
    }

    pub fn said(&self) -> String {
        self.said.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for the agent to exit by itself; its exit code and what it said.
    pub async fn exits(mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the agent exits by itself")
            .expect("wait");
        // The reader may be a line behind the exit.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status.code(), self.said())
    }

    pub async fn wait_until_said(&self, text: &str) {
        for _ in 0..200 {
            if self.said().contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the agent never said {text:?}; it said:\n{}", self.said());
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
    let mut command = Command::new(env!("CARGO_BIN_EXE_mdd"));
    command
        .args(args)
        .env("MDD_SERVER", &server.url)
        .env("MDD_TOKEN", ADMIN);
    if let Some(ca) = &server.ca {
        command.env("MDD_CA", ca);
    }
    let out = command.output().await.expect("run mdd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A webhook receiver on loopback: records every POSTed JSON body, answers `status`.
/// A request a `Receiver` got: its headers (names lowercase) and its body.
pub type Request = (Vec<(String, String)>, String);

pub struct Receiver {
    pub port: u16,
    pub bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    /// Every request as it came, whatever it was answered: its headers (names lowercase) and
    /// its body as sent.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
    pub status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// While set, a request is recorded in `requests` and not answered until it is cleared.
    pub hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
        let requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>> = Default::default();
        let hold: std::sync::Arc<std::sync::atomic::AtomicBool> = Default::default();
        let (b, st, rq, hd) = (
            bodies.clone(),
            status.clone(),
            requests.clone(),
            hold.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (b, st, rq, hd) = (b.clone(), st.clone(), rq.clone(), hd.clone());
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&data).to_string();
                        let Some((head, body)) = text.split_once("\r\n\r\n") else {
                            continue;
                        };
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() < length {
                            continue;
                        }
                        let headers = head
                            .lines()
                            .skip(1)
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                            .collect();
                        rq.lock().expect("lock").push((headers, body.to_string()));
                        // Bounded: a test that forgets to let go ends the wait itself.
                        for _ in 0..1200 {
                            if !hd.load(std::sync::atomic::Ordering::SeqCst) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let code = st.load(std::sync::atomic::Ordering::SeqCst);
                        if code == 200 {
                            b.lock()
                                .expect("lock")
                                .push(serde_json::from_str(body).unwrap_or(Value::Null));
                        }
                        let reply = format!(
                            "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(reply.as_bytes()).await;
                        return;
                    }
                });
            }
        });
        Receiver {
            port,
            bodies,
            requests,
            status,
            hold,
            _task: task,
        }
    }

    /// Waits (boundedly) until at least `n` notifications arrived; returns what did.
    pub async fn wait_for(&self, n: usize) -> Vec<(String, String)> {
        for _ in 0..150 {
            if self.received().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.received()
    }

    /// The `webhook-id` of every request that came, in order, answered or not.
    pub fn ids(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|(headers, _)| {
                headers
                    .iter()
                    .find(|(name, _)| name == "webhook-id")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Waits (at most 20 s) until at least `n` requests came, answered or not; their ids.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            if self.ids().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.ids()
    }

    /// Answers held requests, and the ones to come, from now on (see `hold`).
    pub fn release(&self) {
        self.hold.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Asserts that exactly two requests came, both carrying `id` and the same body: one
    /// delivery made again (after its first answer went to a server that died).
    pub fn assert_made_again(&self, id: &str) {
        let requests = self.requests.lock().expect("lock").clone();
        assert_eq!(self.ids(), [id, id], "made again, with the same id");
        assert_eq!(requests[0].1, requests[1].1, "the same body");
    }

    /// (check, notification) of what arrived, in order.
    pub fn received(&self) -> Vec<(String, String)> {
        self.bodies
            .lock()
            .expect("lock")
            .iter()
            .map(|b| {
                (
                    b["check"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    b["mdd"]["notification"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

pub mod browser;

/// When the test command runs the suite on PostgreSQL, `MDD_TEST_POSTGRES` names the socket
/// directory of the private server it started: each data directory then gets a database of
/// its own, named after the directory, so a server restarted on the same directory finds what
/// it stored before.
pub fn postgres_for(data: &Path) -> Option<String> {
    let socket = std::env::var("MDD_TEST_POSTGRES").ok()?;
    // FNV-1a of the path: a stable, valid database name.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let name = format!("mdd_{hash:016x}");
    let output = std::process::Command::new(mdd_testkit::postgres::bin_dir().join("createdb"))
        .args(["-h", &socket, "-p", "5432", "-U", "postgres", &name])
        .output()
        .expect("createdb runs");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() || said.contains("already exists"),
        "createdb {name}: {said}"
    );
    Some(format!(
        "postgres:///{name}?host={socket}&port=5432&user=postgres"
    ))
}
