//! `mdd agent`: runs checks where they must run (inside the datacenter, behind the firewall)
//! and never loses a result.
//!
//! Four tasks: *keepalives* every `keepalive_every`, with host facts; the *puller* long-polls
//! the server for the checks of the agent's subscriptions and hands them to the shared
//! scheduler of `mdd-probes`; the scheduler runs them on their grid;
//! the *sender* batches results to `POST /api/v1/results` and, while the server cannot take them
//! (unreachable, 5xx), appends them to the on-disk spool, which it replays in order, oldest
//! first, before anything newer.
//!
//! Owns the agent's side of the protocol and the spool. Must not know how the server stores
//! things; talks to it only over the documented API.

mod enroll;
mod spool;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mdd_core::spec::Check;
use mdd_probes::ProbeContext;
use mdd_probes::scheduler::{Executed, Scheduler};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use enroll::{TOKEN_FILE, credentials};
pub use spool::Spool;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server's base URL, like `http://127.0.0.1:7700`.
    pub server: String,
    /// An agent token (None: enroll with `enroll_token`, or let the client certificate say
    /// who the agent is).
    pub token: Option<String>,
    /// An enrollment token, presented once when the data directory holds no token of its own.
    pub enroll_token: Option<String>,
    /// A client certificate and its key (PEM files), for servers that take them instead of
    /// tokens (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// What to tell the operator when the server refuses the token.
    pub token_hint: String,
    /// The entity this agent reports as.
    pub name: String,
    pub subscriptions: Vec<String>,
    /// Where the spool lives.
    pub data_dir: PathBuf,
    /// A PEM file of CAs to trust for the server instead of the system's.
    pub ca: Option<PathBuf>,
    /// How often results are sent.
    pub flush_every: Duration,
    /// The most bytes the spool may hold; past that the oldest results are dropped (and counted).
    pub spool_limit: u64,
    /// Labels of this entity.
    pub labels: std::collections::BTreeMap<String, String>,
    /// How often to send keepalives, and after how much silence the server should call the
    /// agent's keepalive event WARNING and CRITICAL (Sensu's defaults: 20 s, 120 s, 180 s).
    pub keepalive_every: Duration,
    pub keepalive_warning: Duration,
    pub keepalive_critical: Duration,
    /// Ask the server to remove this entity once it goes critical (ephemeral hosts).
    pub deregister: bool,
}

impl AgentConfig {
    pub fn new(
        server: String,
        token: Option<String>,
        name: String,
        data_dir: PathBuf,
    ) -> AgentConfig {
        AgentConfig {
            server,
            token,
            enroll_token: None,
            client_cert: None,
            token_hint: "make a token with `mdd token create --role agent --entity NAME` and give it with --token-file, or enroll with --enroll-token (`mdd token create --role enroll`)".into(),
            name,
            subscriptions: Vec::new(),
            data_dir,
            ca: None,
            flush_every: Duration::from_secs(1),
            spool_limit: 100 * 1024 * 1024,
            labels: std::collections::BTreeMap::new(),
            keepalive_every: Duration::from_secs(20),
            keepalive_warning: Duration::from_secs(120),
            keepalive_critical: Duration::from_secs(180),
            deregister: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use the spool in {path}: {error}")]
    Spool {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot set up the connection to the server: {0}")]
    Client(String),
    #[error("{0}")]
    Enroll(String),
    #[error("stopped before the agent could start")]
    Stopped,
}

/// The servers an agent may talk to (`--server https://a:7700,https://b:7700`, like Sensu's
/// backend-url list) and the one it talks to now. Every request is made to the current one;
/// when it cannot be reached (or answers 502, 503, 504), the next one becomes current, so a
/// dead server costs one failed request per task, and the spool holds results meanwhile.
#[derive(Debug)]
pub struct Servers {
    urls: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
}

impl Servers {
    /// A comma-separated list of base URLs; blanks are ignored.
    pub fn parse(list: &str) -> Servers {
        let urls: Vec<String> = list
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        Servers {
            urls,
            current: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The current server's index and `path` on it.
    pub fn url(&self, path: &str) -> (usize, String) {
        let at = self.current.load(Ordering::Acquire) % self.urls.len().max(1);
        let base = self.urls.get(at).map_or("", String::as_str);
        (at, format!("{base}{path}"))
    }

    /// The current server's base URL.
    pub fn current(&self) -> &str {
        let at = self.current.load(Ordering::Acquire) % self.urls.len().max(1);
        self.urls.get(at).map_or("", String::as_str)
    }

    /// The server at `used` could not be reached: the next one becomes current (once, however
    /// many tasks saw the same failure).
    pub fn failed(&self, used: usize) {
        if self.urls.len() < 2 {
            return;
        }
        let next = (used + 1) % self.urls.len();
        if self
            .current
            .compare_exchange(used, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(
                "{} cannot be reached: moving to {}",
                self.urls[used],
                self.urls[next]
            );
        }
    }

    /// Whether an answer means this server cannot serve now (another one may).
    fn gone(status: reqwest::StatusCode) -> bool {
        matches!(
            status,
            reqwest::StatusCode::BAD_GATEWAY
                | reqwest::StatusCode::SERVICE_UNAVAILABLE
                | reqwest::StatusCode::GATEWAY_TIMEOUT
        )
    }
}

/// Adds the agent's token, when it has one (a client certificate may stand for it).
fn authed(request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// The most results one request carries.
const BATCH: usize = 500;
/// Spool segments replayed per flush, so a long outage drains at a bounded rate.
const SEGMENTS_PER_FLUSH: usize = 4;
/// How long the server may hold a long-poll open.
const POLL_WAIT: &str = "30s";

/// Runs until `shutdown`; then sends (or spools) what it has and returns. Settles the
/// agent's token first (see [`credentials`]).
pub async fn run(mut config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    credentials(&mut config, &shutdown).await?;
    let spool_dir = config.data_dir.join("spool");
    let spool = Spool::open(&spool_dir, config.spool_limit).map_err(|error| AgentError::Spool {
        path: spool_dir.clone(),
        error,
    })?;
    let http = client(&config)?;
    let servers = Arc::new(Servers::parse(&config.server));
    let (results_tx, results_rx) = mpsc::channel::<Executed>(4096);
    let mut probe_context = ProbeContext::default();
    // The agent runs on a single-threaded runtime: no hand-off to another thread per execution.
    probe_context.spawn_inline = true;
    let scheduler = Scheduler::new(Arc::new(probe_context), shutdown.child_token(), results_tx);
    // Results the full spool had to drop, or the server refused, told to the server with
    // every keepalive.
    let counters = Arc::new(Counters::default());
    let sender = tokio::spawn(send_results(
        config.clone(),
        Arc::clone(&servers),
        http.clone(),
        spool,
        results_rx,
        shutdown.clone(),
        Arc::clone(&counters),
    ));
    let keepalives = tokio::spawn(send_keepalives(
        config.clone(),
        Arc::clone(&servers),
        http.clone(),
        shutdown.clone(),
        counters,
    ));
    pull_checks(&config, &servers, &http, scheduler, shutdown).await;
    let _ = sender.await;
    let _ = keepalives.await;
    Ok(())
}

/// What the agent knows about its host, for the server's entity record.
fn host_facts() -> serde_json::Value {
    let addresses: Vec<String> = nix::ifaddrs::getifaddrs()
        .map(|interfaces| {
            interfaces
                .filter_map(|i| i.address)
                .filter_map(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| v4.ip().to_string())
                        .or_else(|| a.as_sockaddr_in6().map(|v6| v6.ip().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    serde_json::json!({
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "agent_version": env!("CARGO_PKG_VERSION"),
        "hostname": hostname,
        "addresses": addresses,
    })
}

/// Tells the server every `keepalive_every` that this agent is alive, and what it is.
async fn send_keepalives(
    config: AgentConfig,
    servers: Arc<Servers>,
    http: reqwest::Client,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) {
    let facts = host_facts();
    let mut tick = tokio::time::interval(config.keepalive_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut facts = facts.clone();
        facts["spool_dropped"] = counters.spool_dropped.load(Ordering::Relaxed).into();
        facts["refused_dropped"] = counters.refused_dropped.load(Ordering::Relaxed).into();
        let body = serde_json::json!({
            "entity": config.name,
            "subscriptions": config.subscriptions,
            "labels": config.labels,
            "facts": facts,
            "interval_s": config.keepalive_every.as_secs_f64(),
            "warning_s": config.keepalive_warning.as_secs_f64(),
            "critical_s": config.keepalive_critical.as_secs_f64(),
            "deregister": config.deregister,
        })
        .to_string();
        let (used, url) = servers.url("/api/v1/agent/keepalive");
        let sent = authed(http.post(&url), config.token.as_deref())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(config.keepalive_every.max(Duration::from_secs(1)))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) if Servers::gone(r.status()) => servers.failed(used),
            Ok(r) => tracing::warn!("keepalive refused: {}", r.status()),
            Err(e) => {
                servers.failed(used);
                tracing::debug!(
                    "keepalive not delivered: {}",
                    mdd_probes::describe_error(&e)
                )
            }
        }
    }
}

fn client(config: &AgentConfig) -> Result<reqwest::Client, AgentError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("mdd-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(90))
        // Below the server's idle timeout (30 s): the agent lets go of an idle connection
        // before the server closes it, so a request never races that close.
        .pool_idle_timeout(Duration::from_secs(25));
    if let Some(ca) = &config.ca {
        let pem = std::fs::read(ca).map_err(|e| {
            AgentError::Client(format!("cannot read CA file {}: {e}", ca.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| AgentError::Client(format!("CA file {}: {e}", ca.display())))?;
        builder = builder.tls_certs_only(certs);
    }
    if let Some((cert, key)) = &config.client_cert {
        let mut pem = std::fs::read(cert).map_err(|e| {
            AgentError::Client(format!(
                "cannot read the certificate {}: {e}",
                cert.display()
            ))
        })?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).map_err(|e| {
            AgentError::Client(format!("cannot read the key {}: {e}", key.display()))
        })?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            AgentError::Client(format!(
                "the certificate {} and key {} do not make a client identity: {e}",
                cert.display(),
                key.display()
            ))
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| AgentError::Client(e.to_string()))
}

/// Long-polls for the checks of this agent's subscriptions and keeps the scheduler in step.
async fn pull_checks(
    config: &AgentConfig,
    servers: &Servers,
    http: &reqwest::Client,
    mut scheduler: Scheduler,
    shutdown: CancellationToken,
) {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Answer {
        version: String,
        #[serde(default)]
        unchanged: bool,
        #[serde(default)]
        checks: Vec<Check>,
    }
    // The last check set is kept on disk, so an agent restarted while the server is away goes
    // on running its checks (and spooling their results) instead of waiting for the server.
    let cache = config.data_dir.join("checks.json");
    let mut version: Option<String> = None;
    if let Ok(text) = std::fs::read_to_string(&cache) {
        match serde_json::from_str::<Answer>(&text) {
            Ok(cached) => {
                tracing::info!(
                    checks = cached.checks.len(),
                    "running the check set from the last run until the server answers"
                );
                scheduler.set_checks(&cached.checks);
                version = Some(cached.version);
            }
            Err(e) => tracing::warn!("ignoring the cached check set {}: {e}", cache.display()),
        }
    }
    let mut backoff = Duration::from_millis(500);
    loop {
        let (used, mut url) = servers.url(&format!(
            "/api/v1/agent/checks?subscriptions={}&wait={POLL_WAIT}",
            config.subscriptions.join(",")
        ));
        if let Some(v) = &version {
            url.push_str(&format!("&after={v}"));
        }
        let request = authed(http.get(&url), config.token.as_deref()).send();
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = request => answer,
        };
        let parsed: Result<Answer, String> = match answer {
            Ok(response) if response.status().is_success() => response
                .bytes()
                .await
                .map_err(|e| e.to_string())
                .and_then(|body| serde_json::from_slice(&body).map_err(|e| e.to_string())),
            Ok(response)
                if response.status() == reqwest::StatusCode::UNAUTHORIZED
                    || response.status() == reqwest::StatusCode::FORBIDDEN =>
            {
                Err(format!(
                    "the server does not accept this agent's credentials ({}); {}",
                    response.status(),
                    config.token_hint
                ))
            }
            Ok(response) => {
                if Servers::gone(response.status()) {
                    servers.failed(used);
                }
                Err(format!("server answered {}", response.status()))
            }
            Err(e) => {
                servers.failed(used);
                Err(mdd_probes::describe_error(&e))
            }
        };
        match parsed {
            Ok(answer) => {
                backoff = Duration::from_millis(500);
                if !answer.unchanged {
                    tracing::info!(
                        checks = answer.checks.len(),
                        version = answer.version,
                        "new check set"
                    );
                    scheduler.set_checks(&answer.checks);
                    save_checks(&cache, &answer.version, &answer.checks);
                }
                version = Some(answer.version);
            }
            Err(reason) => {
                // The checks already running keep running; results go to the spool meanwhile.
                tracing::warn!(
                    "cannot fetch checks from {}: {reason}; retrying in {backoff:?}",
                    servers.urls()[used]
                );
                // Another server is tried at once; the same one (or a full round) backs off.
                if servers.current() == servers.urls()[used] || used + 1 == servers.urls().len() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Writes the check set next to the spool (via a temporary file, so a crash never leaves half).
fn save_checks(path: &std::path::Path, version: &str, checks: &[Check]) {
    let text = serde_json::json!({ "version": version, "checks": checks }).to_string();
    let temp = path.with_extension("json.tmp");
    let written = std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        tracing::warn!("cannot keep the check set in {}: {e}", path.display());
    }
}

/// One result in the API's shape, as a JSON line for the wire and the spool.
fn to_line(config: &AgentConfig, run: Executed) -> Option<String> {
    let result = run.result;
    // What the plugin printed, as it printed it: the server parses it again, and passes it on
    // whole to handlers as Sensu does.
    let output = result.plugin_text();
    let executed_at = jiff::Timestamp::from_millisecond(run.executed_at)
        .map(|t| t.to_string())
        .ok()?;
    serde_json::to_string(&serde_json::json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "check": run.check,
        "entity": run.entity.as_deref().unwrap_or(&config.name),
        "status": result.status.exit_code(),
        "exit_code": result.exit_code,
        "output": output,
        "executed_at": executed_at,
        "duration_ms": result.duration.as_secs_f64() * 1000.0,
    }))
    .ok()
}

async fn send_results(
    config: AgentConfig,
    servers: Arc<Servers>,
    http: reqwest::Client,
    spool: Spool,
    mut results: mpsc::Receiver<Executed>,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) {
    let refused_path = config.data_dir.join("refused.jsonl");
    let mut sender = Sender {
        servers,
        token: config.token.clone(),
        token_hint: config.token_hint.clone(),
        http,
        spool,
        counters,
        refused: Refused::load(refused_path),
        paused_until: None,
        pause: Duration::ZERO,
        clock_offset: std::sync::atomic::AtomicI64::new(i64::MIN),
        told_offset: std::sync::atomic::AtomicI64::new(0),
    };
    let mut tick = tokio::time::interval(config.flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written = 0usize;
    loop {
        tokio::select! {
            run = results.recv() => match run {
                Some(run) => {
                    // On disk before it waits for anything: a kill now loses nothing.
                    if let Some(line) = to_line(&config, run) {
                        sender.write(&line);
                        written += 1;
                    }
                    if written >= BATCH {
                        sender.flush().await;
                        written = 0;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                sender.flush().await;
                written = 0;
            }
            _ = shutdown.cancelled() => break,
        }
    }
    // Stopping: what cannot be sent now waits in the spool for the next start.
    sender.flush().await;
    sender.seal().await;
}

/// What the agent tells the server in every keepalive about results it could not deliver.
#[derive(Debug, Default)]
pub struct Counters {
    /// Dropped by a full spool (the oldest go first).
    pub spool_dropped: AtomicU64,
    /// Refused by the server for good, and dropped.
    pub refused_dropped: AtomicU64,
}

/// How long a result the server refuses as "unknown check" is tried again before it is
/// dropped: the check came from the server, so an apply is racing (or another server of a
/// cluster has not seen it yet).
const REFUSED_RETRY_FOR: Duration = Duration::from_secs(5 * 60);
/// The longest pause between attempts while the server refuses the agent's token.
const MAX_AUTH_PAUSE: Duration = Duration::from_secs(60);

struct Sender {
    servers: Arc<Servers>,
    token: Option<String>,
    token_hint: String,
    http: reqwest::Client,
    spool: Spool,
    counters: Arc<Counters>,
    /// Results refused as "unknown check", tried again until their time is up.
    refused: Refused,
    /// While the server refuses the token, nothing is sent before this.
    paused_until: Option<tokio::time::Instant>,
    pause: Duration,
    /// How far the server's clock is ahead of this host's (ms), from its answers' `Date`
    /// (`i64::MIN` until one came).
    clock_offset: std::sync::atomic::AtomicI64,
    /// When the clock difference was last logged (ms since the epoch, 0: never).
    told_offset: std::sync::atomic::AtomicI64,
}

/// Past this difference between this host's clock and the server's, results are dated by the
/// server's clock (the server refuses times more than `MAX_CLOCK_SKEW` ahead of its own).
const CLOCK_CORRECTION_AFTER: i64 = 30_000;

enum Delivery {
    Stored,
    /// Some results the server refused (400): one by one to find which.
    Refused(String),
    /// The token is not accepted (401, 403): wait, tell, try again later.
    Unauthorized(reqwest::StatusCode, String),
    /// Try again later.
    Unavailable,
}

/// Results the server refused as naming an unknown check: kept beside the spool (so a
/// restart keeps them) with the time they were first refused.
struct Refused {
    path: PathBuf,
    held: Vec<(i64, String)>,
}

impl Refused {
    fn load(path: PathBuf) -> Refused {
        let held = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (at, line) = l.split_once(' ')?;
                Some((at.parse().ok()?, line.to_string()))
            })
            .collect();
        Refused { path, held }
    }

    fn save(&self) {
        let text: String = self
            .held
            .iter()
            .map(|(at, line)| format!("{at} {line}\n"))
            .collect();
        let temp = self.path.with_extension("jsonl.tmp");
        let written = if self.held.is_empty() {
            std::fs::remove_file(&self.path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        } else {
            std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, &self.path))
        };
        if let Err(e) = written {
            tracing::error!(
                "cannot keep refused results in {}: {e}",
                self.path.display()
            );
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Sender {
    fn write(&mut self, line: &str) {
        if let Err(e) = self.spool.write(line) {
            tracing::error!("cannot write a result to the spool, it is lost: {e}");
        }
    }

    /// Makes what was written durable without holding up the one thread the agent runs on:
    /// the fsync (tens of ms on a busy disk) happens on the blocking pool while the checks go
    /// on running; nothing of the segment is sent before it is done.
    async fn seal(&mut self) {
        if let Some(file) = self.spool.close_open() {
            let synced = tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(e) = synced {
                tracing::error!("cannot make the spool durable: {e}");
            }
        }
        match self.spool.sealed() {
            Ok(0) => {}
            Ok(dropped) => {
                self.counters
                    .spool_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
                tracing::error!(
                    dropped,
                    "the spool is full: the oldest results were dropped"
                );
            }
            Err(e) => tracing::error!("cannot make the spool durable: {e}"),
        }
    }

    /// Seals what was written (one fsync), then sends the spool oldest first, a few
    /// segments at a time; a segment goes once the server has all of it.
    async fn flush(&mut self) {
        self.seal().await;
        if self
            .paused_until
            .is_some_and(|until| tokio::time::Instant::now() < until)
        {
            return;
        }
        self.retry_refused().await;
        for _ in 0..SEGMENTS_PER_FLUSH {
            match self.spool.oldest() {
                Ok(Some((segment, lines))) => {
                    if self.deliver(&lines).await {
                        if let Err(e) = self.spool.remove(&segment) {
                            tracing::error!("cannot remove a delivered spool segment: {e}");
                        }
                    } else {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("cannot read the spool: {e}");
                    break;
                }
            }
        }
    }

    /// Sends lines in batches; true when the server has them all (or refused some for good,
    /// or holds them for another try).
    async fn deliver(&mut self, lines: &[String]) -> bool {
        for batch in lines.chunks(BATCH) {
            match self.post(batch).await {
                Delivery::Stored => {}
                Delivery::Unavailable => return false,
                Delivery::Unauthorized(status, said) => {
                    self.refused_token(status, &said);
                    return false;
                }
                Delivery::Refused(_) => {
                    // One bad result must not hold back the others: send them one by one.
                    for line in batch {
                        match self.post(std::slice::from_ref(line)).await {
                            Delivery::Stored => {}
                            Delivery::Unavailable => return false,
                            Delivery::Unauthorized(status, said) => {
                                self.refused_token(status, &said);
                                return false;
                            }
                            Delivery::Refused(why) => self.refused_one(line, &why),
                        }
                    }
                }
            }
        }
        self.pause = Duration::ZERO;
        true
    }

    /// A result the server refused: held for another try when its check is unknown to the
    /// server (an apply may be racing), dropped and counted otherwise.
    fn refused_one(&mut self, line: &str, why: &str) {
        if why.contains("unknown check") {
            tracing::warn!(
                "the server does not know the check of a result yet ({}); trying again for {}",
                why.trim(),
                mdd_core::format_duration(REFUSED_RETRY_FOR)
            );
            self.refused.held.push((now_ms(), line.to_string()));
            self.refused.save();
        } else {
            self.counters
                .refused_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!("the server refused a result for good, it is dropped: {why}");
        }
    }

    /// Tries the held results again; those still refused past their time are dropped and
    /// counted.
    async fn retry_refused(&mut self) {
        if self.refused.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.refused.held);
        let deadline = i64::try_from(REFUSED_RETRY_FOR.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let mut still = Vec::new();
        for (first_refused, line) in held {
            match self.post(std::slice::from_ref(&line)).await {
                Delivery::Stored => {}
                Delivery::Refused(why) if now - first_refused >= deadline => {
                    self.counters
                        .refused_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "the server still refuses a result after {}, it is dropped: {why}",
                        mdd_core::format_duration(REFUSED_RETRY_FOR)
                    );
                }
                _ => still.push((first_refused, line)),
            }
        }
        self.refused.held = still;
        self.refused.save();
    }

    /// The server does not take this agent's token: say so plainly, then back off (results
    /// keep going to the spool, which stays bounded as in an outage).
    fn refused_token(&mut self, status: reqwest::StatusCode, said: &str) {
        self.pause = (self.pause * 2).clamp(Duration::from_secs(1), MAX_AUTH_PAUSE);
        self.paused_until = Some(tokio::time::Instant::now() + self.pause);
        let what = if status == reqwest::StatusCode::FORBIDDEN {
            "does not allow this agent's token to report these results"
        } else {
            "does not accept this agent's token (unknown, or revoked)"
        };
        tracing::error!(
            "the server {what} ({status}: {}). Results are kept in the spool; trying again in {}. {}",
            said.trim(),
            mdd_core::format_duration(self.pause),
            self.token_hint
        );
    }

    /// The server's clock from an answer's `Date`, to notice a host whose clock is off.
    fn learn_clock(&self, response: &reqwest::Response) {
        let Some(date) = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
        else {
            return;
        };
        let Ok(server) = jiff::fmt::rfc2822::parse(date) else {
            return;
        };
        let now = now_ms();
        let offset = server.timestamp().as_millisecond() - now;
        self.clock_offset.store(offset, Ordering::Relaxed);
        let due = now - self.told_offset.load(Ordering::Relaxed) > 600_000;
        if offset.abs() > CLOCK_CORRECTION_AFTER && due {
            self.told_offset.store(now, Ordering::Relaxed);
            tracing::warn!(
                "this host's clock is {}s {} the server's: results are dated by the server's clock; fix this host's time (NTP)",
                offset.abs() / 1000,
                if offset < 0 { "ahead of" } else { "behind" }
            );
        }
    }

    /// A result line dated by the server's clock, when this host's is off by more than
    /// `CLOCK_CORRECTION_AFTER`.
    fn dated(&self, line: &str) -> String {
        let offset = self.clock_offset.load(Ordering::Relaxed);
        if offset == i64::MIN || offset.abs() <= CLOCK_CORRECTION_AFTER {
            return line.to_string();
        }
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(line) else {
            return line.to_string();
        };
        let shifted = value["executed_at"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .and_then(|t| jiff::Timestamp::from_millisecond(t.as_millisecond() + offset).ok());
        match shifted {
            Some(time) => {
                value["executed_at"] = serde_json::Value::String(time.to_string());
                value.to_string()
            }
            None => line.to_string(),
        }
    }

    async fn post(&self, batch: &[String]) -> Delivery {
        let lines: Vec<String> = batch.iter().map(|l| self.dated(l)).collect();
        let body = format!("{{\"results\":[{}]}}", lines.join(","));
        let (used, url) = self.servers.url("/api/v1/results");
        let sent = authed(self.http.post(&url), self.token.as_deref())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        if let Ok(response) = &sent {
            self.learn_clock(response);
        }
        match sent {
            Ok(r) if r.status().is_success() => Delivery::Stored,
            Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => {
                Delivery::Refused(r.text().await.unwrap_or_default())
            }
            Ok(r)
                if r.status() == reqwest::StatusCode::UNAUTHORIZED
                    || r.status() == reqwest::StatusCode::FORBIDDEN =>
            {
                let status = r.status();
                Delivery::Unauthorized(status, r.text().await.unwrap_or_default())
            }
            Ok(r) => {
                if Servers::gone(r.status()) {
                    self.servers.failed(used);
                }
                tracing::warn!(
                    "the server cannot take results now ({}); they wait in the spool",
                    r.status()
                );
                Delivery::Unavailable
            }
            Err(e) => {
                self.servers.failed(used);
                tracing::warn!(
                    "cannot reach {}: {}; results wait in the spool",
                    self.servers.urls()[used],
                    mdd_probes::describe_error(&e)
                );
                Delivery::Unavailable
            }
        }
    }
}

#[cfg(test)]
mod servers_tests {
    use super::Servers;

    #[test]
    fn the_next_server_takes_over_once_per_failure() {
        let servers = Servers::parse(" http://a:1/ , http://b:2,,http://c:3 ");
        assert_eq!(servers.urls(), ["http://a:1", "http://b:2", "http://c:3"]);
        let (used, url) = servers.url("/api/v1/results");
        assert_eq!((used, url.as_str()), (0, "http://a:1/api/v1/results"));
        // Two tasks saw the same failure: the agent moves one step, not two.
        servers.failed(used);
        servers.failed(used);
        assert_eq!(servers.current(), "http://b:2");
        servers.failed(1);
        servers.failed(2);
        assert_eq!(servers.current(), "http://a:1", "round and round");
        // One server: nowhere to go.
        let one = Servers::parse("http://only:1");
        one.failed(0);
        assert_eq!(one.current(), "http://only:1");
        assert!(Servers::parse(" , ").urls().is_empty());
    }
}
