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

pub use spool::Spool;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server's base URL, like `http://127.0.0.1:7700`.
    pub server: String,
    /// An agent token.
    pub token: String,
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
    pub fn new(server: String, token: String, name: String, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            server,
            token,
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
}

/// The most results one request carries.
const BATCH: usize = 500;
/// Spool segments replayed per flush, so a long outage drains at a bounded rate.
const SEGMENTS_PER_FLUSH: usize = 4;
/// How long the server may hold a long-poll open.
const POLL_WAIT: &str = "30s";

/// Runs until `shutdown`; then sends (or spools) what it has and returns.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let spool_dir = config.data_dir.join("spool");
    let spool = Spool::open(&spool_dir, config.spool_limit).map_err(|error| AgentError::Spool {
        path: spool_dir.clone(),
        error,
    })?;
    let http = client(&config)?;
    let (results_tx, results_rx) = mpsc::channel::<Executed>(4096);
    let mut probe_context = ProbeContext::default();
    // The agent runs on a single-threaded runtime: no hand-off to another thread per execution.
    probe_context.spawn_inline = true;
    let scheduler = Scheduler::new(Arc::new(probe_context), shutdown.child_token(), results_tx);
    // Results the full spool had to drop, told to the server with every keepalive.
    let dropped = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn(send_results(
        config.clone(),
        http.clone(),
        spool,
        results_rx,
        shutdown.clone(),
        Arc::clone(&dropped),
    ));
    let keepalives = tokio::spawn(send_keepalives(
        config.clone(),
        http.clone(),
        shutdown.clone(),
        dropped,
    ));
    pull_checks(&config, &http, scheduler, shutdown).await;
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
    http: reqwest::Client,
    shutdown: CancellationToken,
    dropped: Arc<AtomicU64>,
) {
    let url = format!(
        "{}/api/v1/agent/keepalive",
        config.server.trim_end_matches('/')
    );
    let facts = host_facts();
    let mut tick = tokio::time::interval(config.keepalive_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut facts = facts.clone();
        facts["spool_dropped"] = dropped.load(Ordering::Relaxed).into();
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
        let sent = http
            .post(&url)
            .bearer_auth(&config.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(config.keepalive_every.max(Duration::from_secs(1)))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!("keepalive refused: {}", r.status()),
            Err(e) => tracing::debug!(
                "keepalive not delivered: {}",
                mdd_probes::describe_error(&e)
            ),
        }
    }
}

fn client(config: &AgentConfig) -> Result<reqwest::Client, AgentError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("mdd-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(90));
    if let Some(ca) = &config.ca {
        let pem = std::fs::read(ca).map_err(|e| {
            AgentError::Client(format!("cannot read CA file {}: {e}", ca.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| AgentError::Client(format!("CA file {}: {e}", ca.display())))?;
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|e| AgentError::Client(e.to_string()))
}

/// Long-polls for the checks of this agent's subscriptions and keeps the scheduler in step.
async fn pull_checks(
    config: &AgentConfig,
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
        let mut url = format!(
            "{}/api/v1/agent/checks?subscriptions={}&wait={POLL_WAIT}",
            config.server.trim_end_matches('/'),
            config.subscriptions.join(",")
        );
        if let Some(v) = &version {
            url.push_str(&format!("&after={v}"));
        }
        let request = http.get(&url).bearer_auth(&config.token).send();
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
            Ok(response) => Err(format!("server answered {}", response.status())),
            Err(e) => Err(mdd_probes::describe_error(&e)),
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
                    config.server
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
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
    http: reqwest::Client,
    spool: Spool,
    mut results: mpsc::Receiver<Executed>,
    shutdown: CancellationToken,
    dropped: Arc<AtomicU64>,
) {
    let sender = Sender {
        url: format!("{}/api/v1/results", config.server.trim_end_matches('/')),
        token: config.token.clone(),
        http,
        spool,
        dropped,
    };
    let mut pending: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(config.flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            run = results.recv() => match run {
                Some(run) => {
                    pending.extend(to_line(&config, run));
                    if pending.len() >= BATCH {
                        sender.flush(&mut pending).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => sender.flush(&mut pending).await,
            _ = shutdown.cancelled() => break,
        }
    }
    // Stopping: what cannot be sent now waits in the spool for the next start.
    sender.flush(&mut pending).await;
    if !pending.is_empty() {
        sender.spool_pending(&mut pending);
    }
}

struct Sender {
    url: String,
    token: String,
    http: reqwest::Client,
    spool: Spool,
    dropped: Arc<AtomicU64>,
}

enum Delivery {
    Stored,
    /// The server will never take these (e.g. their check left the spec): drop, do not retry.
    Rejected,
    /// Try again later.
    Unavailable,
}

impl Sender {
    /// Replays the spool (oldest first, a few segments at a time), then sends what is pending;
    /// anything the server cannot take now goes to the spool, behind what is already there.
    async fn flush(&self, pending: &mut Vec<String>) {
        let mut server_up = true;
        for _ in 0..SEGMENTS_PER_FLUSH {
            match self.spool.oldest() {
                Ok(Some((segment, lines))) => {
                    if self.deliver(&lines).await {
                        if let Err(e) = self.spool.remove(&segment) {
                            tracing::error!("cannot remove a replayed spool segment: {e}");
                        }
                    } else {
                        server_up = false;
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
        if pending.is_empty() {
            return;
        }
        // New results never overtake spooled ones: while the spool holds anything, they queue behind it.
        if server_up && self.spool.is_empty() && self.deliver(pending).await {
            pending.clear();
            return;
        }
        self.spool_pending(pending);
    }

    fn spool_pending(&self, pending: &mut Vec<String>) {
        match self.spool.append(pending) {
            Ok(0) => {}
            Ok(dropped) => {
                self.dropped.fetch_add(dropped, Ordering::Relaxed);
                tracing::error!(
                    dropped,
                    "the spool is full: the oldest results were dropped"
                );
            }
            Err(e) => tracing::error!(
                results = pending.len(),
                "cannot spool results, they are lost: {e}"
            ),
        }
        pending.clear();
    }

    /// Sends lines in batches; true when the server has them all (or refused some for good).
    async fn deliver(&self, lines: &[String]) -> bool {
        for batch in lines.chunks(BATCH) {
            match self.post(batch).await {
                Delivery::Stored => {}
                Delivery::Unavailable => return false,
                Delivery::Rejected => {
                    // One bad result must not hold back the others: send them one by one.
                    for line in batch {
                        match self.post(std::slice::from_ref(line)).await {
                            Delivery::Unavailable => return false,
                            Delivery::Rejected => {
                                tracing::warn!("the server refused a result for good: {line}")
                            }
                            Delivery::Stored => {}
                        }
                    }
                }
            }
        }
        true
    }

    async fn post(&self, batch: &[String]) -> Delivery {
        let body = format!("{{\"results\":[{}]}}", batch.join(","));
        let sent = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Delivery::Stored,
            Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => {
                let text = r.text().await.unwrap_or_default();
                tracing::warn!("the server refused results: {text}");
                Delivery::Rejected
            }
            Ok(r) => {
                tracing::warn!(
                    "the server cannot take results now ({}); spooling",
                    r.status()
                );
                Delivery::Unavailable
            }
            Err(e) => {
                tracing::warn!(
                    "cannot reach the server: {}; spooling",
                    mdd_probes::describe_error(&e)
                );
                Delivery::Unavailable
            }
        }
    }
}
