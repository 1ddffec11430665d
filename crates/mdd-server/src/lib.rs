//! `mdd server`: runs the checks that belong to the server, ingests results from everyone,
//! turns them into events, and answers for them over an HTTP JSON API.
//!
//! Owns the HTTP API (`api`), authentication (`auth`), the applied check set (`checks`), the
//! ingestion pipeline with group commits (`ingest`), the scheduler of server-side checks
//! (`scheduler`), derived event states (`view`), deployments' progress (`deployments`) and
//! Prometheus metrics (`metrics`).
//! Storage is `mdd-storage`; meaning (event state machine, spec) is `mdd-core`; running a probe
//! is `mdd-probes`. Must not print: the binary owns the terminal.

pub mod api;
pub mod auth;
pub mod checks;
pub mod dashboard;
pub mod deployments;
mod event_body;
pub mod follow;
pub mod followed;
pub mod ingest;
pub mod keepalive;
pub mod lease;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod scheduler;
pub mod signing;
pub mod silences;
pub mod tls;
pub mod view;

/// A database URL with its password hidden, for messages.
pub use mdd_storage::redact as redact_database_url;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use mdd_core::event::Event;
use mdd_core::perfdata::PerfDatum;
use mdd_storage::{Store, StoreError, StoredResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::{Role, TokenEntry};
use crate::checks::CheckSet;
use crate::ingest::{IngestJob, IngestOutcome, WriterJob};

/// (check, entity)
pub type EventKey = (String, String);

/// The events, by (check, entity). Each is shared: a page or a scrape takes them all in a
/// moment under the lock (a reference each) and works on its copy without it, so the writer
/// never waits for a page of 50,000 checks.
/// Every event by (check, entity). A persistent map: a snapshot of it is a reference count
/// (pages, scrapes, a single event's answer resolving what it depends on), and a write after
/// one copies only the few nodes on the written key's path.
pub type Events = imbl::OrdMap<EventKey, Arc<CachedEvent>>;

/// Removes the events whose keys `gone` picks (the persistent map has no `retain`).
fn remove_events(events: &mut Events, gone: impl Fn(&EventKey) -> bool) {
    let keys: Vec<EventKey> = events.keys().filter(|key| gone(key)).cloned().collect();
    for key in keys {
        events.remove(&key);
    }
}

/// An event as the server keeps it: the state machine's event plus the output of the result
/// that made it, so reads need no join. Its JSON is the stored body (see `event_body`).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedEvent {
    pub event: Event,
    pub summary: String,
    pub long_output: String,
    pub perfdata: Vec<PerfDatum>,
    pub duration_ms: f64,
    /// What the plugin printed, as it printed it (empty for events checkpointed before mdd
    /// kept it: `plugin_text` then writes it out from the parts).
    pub output: String,
    /// When results last started coming within the ttl again after it went stale (None: it
    /// never did). A state that comes back from stale is shown since then.
    pub fresh_since: Option<i64>,
    /// Its version in a store shared by several servers (one up with every fold that wrote
    /// it; 0 on SQLite): the change feed takes a row only when it is newer than this. Not
    /// in the body: the store's row holds it.
    pub version: i64,
}

impl CachedEvent {
    pub fn new(event: Event, result: &StoredResult) -> CachedEvent {
        let mut cached = CachedEvent {
            event,
            summary: String::new(),
            long_output: String::new(),
            perfdata: Vec::new(),
            duration_ms: 0.0,
            output: String::new(),
            fresh_since: None,
            version: 0,
        };
        cached.take_output(result);
        cached
    }

    /// The row the store keeps for this event; None (logged) if it cannot be encoded.
    pub fn to_row(&self) -> Option<mdd_storage::EventRow> {
        let body = serde_json::to_string(self)
            .inspect_err(|e| tracing::error!("cannot encode an event: {e}"))
            .ok()?;
        Some(mdd_storage::EventRow {
            check: self.event.check.clone(),
            entity: self.event.entity.clone(),
            status: self.event.status,
            executed_at: self.event.executed_at,
            last_result_id: self.event.last_result_id.clone(),
            body,
        })
    }

    /// The whole output as the plugin printed it.
    pub fn plugin_text(&self) -> String {
        if self.output.is_empty() {
            mdd_core::plugin_output::compose(&self.summary, &self.long_output, &self.perfdata)
        } else {
            self.output.clone()
        }
    }

    pub fn take_output(&mut self, result: &StoredResult) {
        self.output.clone_from(&result.output);
        self.summary.clone_from(&result.summary);
        self.long_output.clone_from(&result.long_output);
        self.perfdata.clone_from(&result.perfdata);
        self.duration_ms = result.duration_ms;
    }
}

/// A spec file the server reads itself: where it is, and the name it is stored under (the
/// same name `mdd apply` gives it, so the two replace each other).
#[derive(Debug, Clone)]
pub struct SpecPath {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A PostgreSQL URL: the store lives there instead of the data directory's SQLite.
    pub database: Option<String>,
    /// Spec files loaded at start and on SIGHUP (in addition to what was applied before).
    pub specs: Vec<SpecPath>,
    /// Reads without a token.
    pub public_read: bool,
    /// The first admin token's secret, when the operator provides it instead of mdd making one.
    pub admin_token: Option<String>,
    /// How long results are kept.
    pub retention: Duration,
    /// The entity name of checks the server runs itself.
    pub entity: String,
    /// The biggest request body accepted.
    pub max_body: usize,
    /// How often changed events are written. Events are derived from results, which are
    /// durable before they are acknowledged; after a crash the results since the last
    /// checkpoint are replayed, so this bounds the replay, never what is kept.
    pub event_checkpoint_interval: Duration,
    /// How long a connection may go without sending a whole request head.
    pub idle_timeout: Duration,
    /// Serve HTTPS with these files (and mutual TLS with `client_ca`); plain HTTP without.
    pub tls: Option<tls::TlsFiles>,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir,
            database: None,
            specs: Vec::new(),
            public_read: false,
            admin_token: None,
            retention: Duration::from_secs(14 * 24 * 3600),
            entity: "mdd-server".into(),
            max_body: 16 * 1024 * 1024,
            event_checkpoint_interval: Duration::from_secs(1),
            idle_timeout: listen::IDLE,
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("spec {path}: {detail}")]
    Spec { path: PathBuf, detail: String },
    #[error("cannot create a token: {0}")]
    Token(String),
    #[error("cannot start the notification thread: {0}")]
    Runtime(std::io::Error),
}

/// Where the events' change feed stands (see `Shared::follow_feed`).
struct Feed {
    from: mdd_storage::FeedPosition,
    read_at: Option<std::time::Instant>,
}

/// State shared by every handler and task.
pub struct Shared {
    pub store: Store,
    checks: RwLock<Arc<CheckSet>>,
    events: RwLock<Events>,
    tokens: followed::Followed<Vec<TokenEntry>>,
    ingest: mpsc::Sender<WriterJob>,
    pub metrics: metrics::Metrics,
    pub config: ServerConfig,
    /// Serialises applies, so two concurrent applies cannot lose each other's files.
    pub apply_lock: tokio::sync::Mutex<()>,
    /// Tells the scheduler the check set changed.
    pub checks_changed: tokio::sync::Notify,
    /// The applied revision, for agents' long-polls to wait on.
    revision: tokio::sync::watch::Sender<i64>,
    /// Cancelled when the server stops, so long-polls end at once instead of holding it up.
    pub shutdown: CancellationToken,
    /// Agents' keepalives, by entity.
    keepalives: std::sync::Mutex<std::collections::HashMap<String, keepalive::Watch>>,
    /// What each deployment has been through.
    deployments: RwLock<deployments::Tracks>,
    /// Silences not ended yet (some may start later).
    silences: followed::Followed<Vec<mdd_core::silence::Silence>>,
    /// Changed events for the notifier (bounded; never waited on).
    pub notices: mpsc::Sender<notify::Notice>,
    /// Events other servers folded that memory holds an older version of (or none), with the
    /// version the change feed saw stored: a server not doing the once-only work follows the
    /// feed by key and version only, and reads these bodies when somebody asks for events
    /// (see `fresh_events`). Empty on a server that follows the bodies.
    behind: std::sync::Mutex<HashMap<EventKey, i64>>,
    /// Where the events' change feed stands and when it was last read: it is read when events
    /// are asked for (by `catch_up_events`), at most once per `follow::FOLLOW_EVERY`.
    feed: tokio::sync::Mutex<Feed>,
    /// What each handler was sent, and how it went.
    pub deliveries: notify::DeliveryLog,
    /// The outage before this start: it does not count against checks' ttls.
    pub outage: mdd_core::event::Outage,
    /// Connections open, refused at the bound, and closed for sending nothing.
    pub connections: Arc<listen::Connections>,
    /// The TLS configuration in use, when the server speaks HTTPS.
    pub tls: Option<Arc<tls::Tls>>,
    /// This server among those on the store (the holder name of its leases).
    pub server_id: String,
    /// Whether this server holds the lease of the once-only work (see `lease.rs`).
    once_only: tokio::sync::watch::Sender<bool>,
    /// Goes up when a dashboard session ends anywhere in the cluster: the dashboard drops the
    /// sessions it has cached and reads them through again.
    sessions_generation: std::sync::atomic::AtomicU64,
    /// Goes up whenever what pages show changes (a state, a spec, a track, a silence): an
    /// open dashboard tab asks "anything new?" for the price of comparing it.
    version: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Now, and the outage, for working out states.
    pub fn clock(&self) -> view::Clock {
        self.clock_at(now_ms())
    }

    /// `now` given, with the outage.
    pub fn clock_at(&self, now: i64) -> view::Clock {
        view::Clock {
            now,
            outage: self.outage,
        }
    }

    /// What pages show has changed.
    pub fn changed(&self) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many times what pages show has changed since the start.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn checks(&self) -> Arc<CheckSet> {
        Arc::clone(&self.checks.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_checks(&self, checks: CheckSet) {
        let revision = checks.revision;
        *self.checks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(checks);
        self.changed();
        self.checks_changed.notify_waiters();
        self.revision.send_replace(revision);
    }

    pub fn keepalives(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, keepalive::Watch>> {
        self.keepalives.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes an entity and its events, from the store and from memory; the writer does it,
    /// between groups, so that no checkpoint or replay brings them back.
    pub async fn forget_entity(&self, entity: &str) -> Result<(), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || StoreError::Corrupt {
            path: self.store.path().to_path_buf(),
            detail: "the ingestion writer has stopped".into(),
        };
        self.ingest
            .send(WriterJob::ForgetEntity {
                entity: entity.to_string(),
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// A receiver that wakes when a new check set is applied.
    pub fn watch_revision(&self) -> tokio::sync::watch::Receiver<i64> {
        self.revision.subscribe()
    }

    pub fn silences_read(&self) -> RwLockReadGuard<'_, Vec<mdd_core::silence::Silence>> {
        self.silences.read()
    }

    /// For a change made here, after it was written to the store.
    pub fn silences_write(&self) -> RwLockWriteGuard<'_, Vec<mdd_core::silence::Silence>> {
        self.silences.write()
    }

    /// Changes made here to the silences so far (see `followed`).
    pub fn silence_changes(&self) -> u64 {
        self.silences.changes()
    }

    /// Changes made here to the tokens so far (see `followed`).
    pub fn token_changes(&self) -> u64 {
        self.tokens.changes()
    }

    pub fn deployments_read(&self) -> RwLockReadGuard<'_, deployments::Tracks> {
        self.deployments.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of every deployment's track, for work that takes a while (pages, views): the
    /// tracker's once-a-second write must never wait for a page, since it waits on an async
    /// worker and whatever is queued behind it waits too.
    pub fn deployments_snapshot(&self) -> deployments::Tracks {
        self.deployments_read().clone()
    }

    fn deployments_write(&self) -> RwLockWriteGuard<'_, deployments::Tracks> {
        self.deployments.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn events_read(&self) -> RwLockReadGuard<'_, Events> {
        self.events.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Has these events read from the store again when events are next asked for: those of
    /// folds that failed in a way that may have committed all the same (the connection broke
    /// during the commit), which the change feed leaves out, as this server wrote them.
    pub fn read_again(&self, keys: impl IntoIterator<Item = EventKey>) {
        let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            // No version known: read whatever memory holds.
            behind.insert(key, i64::MAX);
        }
    }

    /// Every event as it is now, taken in a moment under the lock (a reference each) and
    /// indexed without it: for pages, scrapes and sweeps over all of them, which then hold up
    /// neither ingestion nor each other, however long they take.
    pub fn events_snapshot(&self) -> Events {
        self.events_read().clone()
    }

    /// Every event, with those memory is behind on read from the store first: what API
    /// answers and pages show, so that every server shows the same, whichever folded them.
    /// If the store cannot be read, what memory holds (and the reason is logged).
    pub async fn fresh_events(&self) -> Events {
        self.catch_up_events_or_say().await;
        self.events_snapshot()
    }

    /// `catch_up_events` for every event memory is behind on, before an answer is made from
    /// memory; a store that cannot be read leaves the older events, and says so.
    pub async fn catch_up_events_or_say(&self) {
        if let Err(e) = self.catch_up_events(None).await {
            tracing::warn!("cannot read the newest events from the store (showing older): {e}");
        }
    }

    /// `fresh_events` for one event's answer: that event alone is read, unless its check has
    /// dependencies (whose events its state is worked out from).
    pub async fn fresh_event(&self, key: &EventKey) -> Events {
        let alone = self
            .checks()
            .get(&key.0)
            .is_none_or(|check| check.depends_on.is_empty());
        let which = alone.then_some(std::slice::from_ref(key));
        if let Err(e) = self.catch_up_events(which).await {
            tracing::warn!("cannot read the newest events from the store (showing older): {e}");
        }
        self.events_snapshot()
    }

    /// How many events there are: those in memory and those other servers made that this one
    /// has only noted (without reading them, which a health probe must not cost).
    pub fn events_count(&self) -> usize {
        let events = self.events_read();
        let behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        events.len()
            + behind
                .keys()
                .filter(|key| !events.contains_key(*key))
                .count()
    }

    /// Forgets the events `gone` picks, those held and those only noted as moved.
    pub fn forget_events(&self, gone: impl Fn(&EventKey) -> bool) {
        remove_events(&mut self.events_write(), &gone);
        self.behind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| !gone(key));
    }

    /// The entities of the events memory is behind on.
    pub fn noted_entities(&self) -> Vec<String> {
        let behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        let entities: std::collections::BTreeSet<&String> =
            behind.keys().map(|(_, entity)| entity).collect();
        entities.into_iter().cloned().collect()
    }

    /// Reads which events other servers folded since the last read of the change feed (by key
    /// and version), unless it was read less than `follow::FOLLOW_EVERY` ago: the lag of an
    /// answer is at most that. Nothing reads it while nobody asks for events, so servers that
    /// only take results follow nothing. A no-op on a store of one server's own.
    pub async fn follow_feed(&self) -> Result<(), StoreError> {
        if !self.store.is_shared() {
            return Ok(());
        }
        let mut feed = self.feed.lock().await;
        if feed
            .read_at
            .is_some_and(|at| at.elapsed() < follow::FOLLOW_EVERY)
        {
            return Ok(());
        }
        let asked = std::time::Instant::now();
        let (next, versions) = self.store.event_versions_changed_since(&feed.from).await?;
        self.fell_behind(versions);
        feed.from = next;
        feed.read_at = Some(asked);
        Ok(())
    }

    /// Notes events the change feed saw stored at a newer version than memory holds.
    pub fn fell_behind(&self, versions: Vec<(String, String, i64)>) {
        if versions.is_empty() {
            return;
        }
        let mut newer = Vec::new();
        {
            let events = self.events_read();
            for (check, entity, version) in versions {
                let key = (check, entity);
                if events.get(&key).is_none_or(|held| held.version < version) {
                    newer.push((key, version));
                }
            }
        }
        if newer.is_empty() {
            return;
        }
        let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        for (key, version) in newer {
            let noted = behind.entry(key).or_insert(version);
            *noted = (*noted).max(version);
        }
        drop(behind);
        // Long-polls and live pages look again, and read what moved.
        self.changed();
    }

    /// Reads from the store the events memory is behind on (`only` those of them, or all),
    /// and takes those newer than memory's. On an error they stay noted, to be read later.
    pub async fn catch_up_events(&self, only: Option<&[EventKey]>) -> Result<(), StoreError> {
        self.follow_feed().await?;
        let noted: Vec<(EventKey, i64)> = {
            let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
            if behind.is_empty() {
                return Ok(());
            }
            match only {
                None => behind.drain().collect(),
                Some(keys) => keys
                    .iter()
                    .filter_map(|key| behind.remove_entry(key))
                    .collect(),
            }
        };
        // Those this server folded since they were noted are current in memory already.
        let wanted: Vec<EventKey> = {
            let events = self.events_read();
            noted
                .into_iter()
                .filter(|(key, version)| events.get(key).is_none_or(|held| held.version < *version))
                .map(|(key, _)| key)
                .collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        match self.store.events_of(&wanted).await {
            Ok(rows) => {
                self.take_stored_events(rows);
                Ok(())
            }
            Err(e) => {
                self.read_again(wanted);
                Err(e)
            }
        }
    }

    /// Puts in memory the stored events that are newer than the versions it holds.
    pub fn take_stored_events(&self, rows: Vec<mdd_storage::VersionedEvent>) {
        let mut newer = Vec::new();
        {
            let events = self.events_read();
            for row in rows {
                let key = (row.row.check.clone(), row.row.entity.clone());
                if events
                    .get(&key)
                    .is_some_and(|held| held.version >= row.version)
                {
                    continue;
                }
                match serde_json::from_str::<CachedEvent>(&row.row.body) {
                    Ok(mut cached) => {
                        cached.version = row.version;
                        newer.push((key, cached));
                    }
                    Err(e) => tracing::error!(
                        "an unreadable stored event {}/{} is skipped: {e}",
                        key.0,
                        key.1
                    ),
                }
            }
        }
        if newer.is_empty() {
            return;
        }
        let mut events = self.events_write();
        for (key, cached) in newer {
            // Checked again under the write lock: the writer may have put a newer one since.
            if events
                .get(&key)
                .is_none_or(|held| held.version < cached.version)
            {
                events.insert(key, Arc::new(cached));
            }
        }
        drop(events);
        self.changed();
    }

    fn events_write(&self) -> RwLockWriteGuard<'_, Events> {
        self.events.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn token(&self, secret: &str) -> Option<TokenEntry> {
        let tokens = self.tokens.read();
        auth::find(&tokens, secret).cloned()
    }

    /// The tokens as stored now (another server may have made, used or revoked some), read
    /// after `token_changes` returned `since`; false if refused for a change made here
    /// meanwhile (see `followed`). When each was last used here is kept: it is written to the
    /// store now and then.
    pub fn replace_tokens(
        &self,
        stored: Vec<(Vec<u8>, mdd_storage::TokenRecord)>,
        since: u64,
    ) -> bool {
        self.tokens.reload(since, |tokens| {
            let used_here: HashMap<String, Arc<std::sync::atomic::AtomicI64>> = tokens
                .iter()
                .map(|t| (t.id.clone(), Arc::clone(&t.last_used)))
                .collect();
            *tokens = stored
                .into_iter()
                .filter_map(|(hash, record)| stored_token(hash, record))
                .map(|mut token| {
                    if let Some(here) = used_here.get(&token.id) {
                        here.fetch_max(
                            token.last_used.load(std::sync::atomic::Ordering::Relaxed),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        token.last_used = Arc::clone(here);
                    }
                    token
                })
                .collect();
        })
    }

    /// The deployments' tracks as the server doing the once-only work stored them.
    pub fn replace_deployments(&self, stored: deployments::Tracks) {
        *self.deployments_write() = stored;
        self.changed();
    }

    /// The silences as stored now (another server may have added or ended some), read after
    /// `silence_changes` returned `since`; false if refused for a change made here meanwhile
    /// (see `followed`).
    pub fn replace_silences(&self, stored: Vec<mdd_core::silence::Silence>, since: u64) -> bool {
        let taken = self.silences.reload(since, |silences| *silences = stored);
        if taken {
            self.changed();
        }
        taken
    }

    /// Whether this server does the once-only work now (runs its own checks, watches
    /// keepalives, applies retention).
    pub fn holds_once_only_work(&self) -> bool {
        *self.once_only.borrow()
    }

    pub fn set_once_only_work(&self, holds: bool) {
        self.once_only.send_replace(holds);
    }

    /// A receiver that wakes when this server takes or loses the once-only work.
    pub fn watch_once_only_work(&self) -> tokio::sync::watch::Receiver<bool> {
        self.once_only.subscribe()
    }

    /// A dashboard session ended somewhere: cached sessions are read through again.
    pub fn sessions_moved(&self) {
        self.sessions_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many times sessions ended somewhere since the start.
    pub fn sessions_generation(&self) -> u64 {
        self.sessions_generation
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stores results durably and updates their events; Ok means on disk.
    pub async fn ingest(
        &self,
        results: Vec<StoredResult>,
    ) -> Result<IngestOutcome, Arc<StoreError>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || {
            Arc::new(StoreError::Corrupt {
                path: self.store.path().to_path_buf(),
                detail: "the ingestion writer has stopped".into(),
            })
        };
        self.ingest
            .send(WriterJob::Results(IngestJob { results, reply }))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Creates a token, stores its hash, and returns the secret (shown once, never stored).
    pub async fn create_token(
        &self,
        role: Role,
        name: &str,
        entity: Option<&str>,
    ) -> Result<String, ServerError> {
        self.create_token_with(NewToken {
            role,
            name: name.to_string(),
            entity: entity.map(str::to_string),
            ..NewToken::default()
        })
        .await
        .map(|(secret, _)| secret)
    }

    /// Creates a token with everything a token can say; returns the secret and its id.
    pub async fn create_token_with(&self, new: NewToken) -> Result<(String, String), ServerError> {
        let secret = auth::new_secret().map_err(|e| ServerError::Token(e.to_string()))?;
        let id = self.add_token(&secret, new).await?;
        Ok((secret, id))
    }

    async fn add_token(&self, secret: &str, new: NewToken) -> Result<String, ServerError> {
        let hash = auth::hash(secret);
        let (entry, record) = token_entry(hash, new);
        self.store.create_token(&hash, &record).await?;
        let id = entry.id.clone();
        let mut tokens = self.tokens_write();
        // A reload that read the store after the write may have put it in already.
        tokens.retain(|t| t.id != id);
        tokens.push(entry);
        Ok(id)
    }

    /// For a change made here, after it was written to the store.
    fn tokens_write(&self) -> RwLockWriteGuard<'_, Vec<TokenEntry>> {
        self.tokens.write()
    }

    /// Every token, without secrets: for `GET /api/v1/tokens`.
    pub fn token_list(&self) -> Vec<TokenEntry> {
        self.tokens.read().clone()
    }

    /// Whether a token with this id still exists (a dashboard session lives as long as the
    /// token it was signed in with).
    pub fn token_exists(&self, id: &str) -> bool {
        let now = now_ms();
        self.tokens
            .read()
            .iter()
            .any(|t| t.id == id && !t.expired(now))
    }

    /// Revokes a token now: it is refused from the next request on. False if none has the id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = self.store.delete_token(id).await?;
        let mut tokens = self.tokens_write();
        let before = tokens.len();
        tokens.retain(|t| t.id != id);
        Ok(deleted || tokens.len() != before)
    }

    /// Enrolls an agent with an enrollment token: one use of it makes an agent token bound to
    /// `entity`, stored and in force at once. None when the enrollment token has no use left.
    pub async fn enroll(
        &self,
        enroll: &TokenEntry,
        entity: &str,
    ) -> Result<Option<String>, ServerError> {
        let secret = auth::new_secret().map_err(|e| ServerError::Token(e.to_string()))?;
        let hash = auth::hash(&secret);
        let (entry, record) = token_entry(
            hash,
            NewToken {
                role: Role::Agent,
                name: format!("{entity} (enrolled with {})", enroll.name),
                entity: Some(entity.to_string()),
                ..NewToken::default()
            },
        );
        if !self.store.enroll(&enroll.id, &hash, &record).await? {
            return Ok(None);
        }
        let mut tokens = self.tokens_write();
        // The use and the new token are one transaction: a reload that read the store after
        // it and landed first holds both already.
        if !tokens.iter().any(|t| t.id == entry.id) {
            for token in tokens.iter_mut().filter(|t| t.id == enroll.id) {
                token.uses_left = token.uses_left.map(|n| n - 1);
            }
            tokens.push(entry);
        }
        Ok(Some(secret))
    }

    /// Writes when tokens were last used, for those used since the last time.
    pub async fn save_token_uses(&self, written: &mut HashMap<String, i64>) {
        let used: Vec<(String, i64)> = self
            .tokens
            .read()
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.last_used.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .filter(|(id, at)| *at > 0 && written.get(id) != Some(at))
            .collect();
        if used.is_empty() {
            return;
        }
        match self.store.token_uses(&used).await {
            Ok(()) => written.extend(used),
            Err(e) => tracing::warn!("cannot record when tokens were used: {e}"),
        }
    }
}

/// A stored token as the server checks it; None for a row this version cannot read.
fn stored_token(hash: Vec<u8>, record: mdd_storage::TokenRecord) -> Option<TokenEntry> {
    Some(TokenEntry {
        hash: hash.try_into().ok()?,
        id: record.id,
        role: Role::parse(&record.role)?,
        name: record.name,
        entity: record.entity,
        created_at: record.created_at,
        expires_at: record.expires_at,
        uses_left: record.uses_left,
        grants: record
            .grants
            .as_deref()
            .and_then(|g| serde_json::from_str(g).ok())
            .unwrap_or_default(),
        last_used: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
            record.last_used_at.unwrap_or(0),
        )),
    })
}

/// What a new token is.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub role: Role,
    pub name: String,
    pub entity: Option<String>,
    pub expires_at: Option<i64>,
    pub uses: Option<i64>,
    pub grants: auth::Grants,
}

impl Default for NewToken {
    fn default() -> NewToken {
        NewToken {
            role: Role::Read,
            name: String::new(),
            entity: None,
            expires_at: None,
            uses: None,
            grants: auth::Grants::default(),
        }
    }
}

fn token_entry(hash: [u8; 32], new: NewToken) -> (TokenEntry, mdd_storage::TokenRecord) {
    let id = uuid::Uuid::now_v7().to_string();
    let created_at = now_ms();
    let grants = (new.grants != auth::Grants::default())
        .then(|| serde_json::to_string(&new.grants).unwrap_or_default());
    let record = mdd_storage::TokenRecord {
        id: id.clone(),
        role: new.role.as_str().to_string(),
        name: new.name.clone(),
        created_at,
        entity: new.entity.clone(),
        last_used_at: None,
        expires_at: new.expires_at,
        uses_left: new.uses,
        grants,
    };
    let entry = TokenEntry {
        hash,
        id,
        role: new.role,
        name: new.name,
        entity: new.entity,
        created_at,
        expires_at: new.expires_at,
        uses_left: new.uses,
        grants: new.grants,
        last_used: Default::default(),
    };
    (entry, record)
}

pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A started server: its address, and what to await for it to finish.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// Set when the first start created an admin token: print it once.
    pub new_admin_token: Option<String>,
    task: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    drain: CancellationToken,
}

impl RunningServer {
    /// Waits until shutdown has been asked for and everything acknowledged is on disk.
    pub async fn finished(self) {
        let _ = self.task.await;
        // The HTTP server and the scheduler are done: write what is queued, then stop.
        self.drain.cancel();
        let _ = self.writer.await;
        self.shared.store.close().await;
    }
}

/// Opens the store, loads state, binds the listener and starts serving until `shutdown`.
pub async fn start(
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<RunningServer, ServerError> {
    let server_id = server_id(&config);
    let store = match &config.database {
        // Its change feed leaves out what it folded itself, under its name.
        Some(url) => Store::connect(url).await?.writing_as(&server_id),
        None => Store::open(&config.data_dir).await?,
    };

    // Read before anything is loaded: whatever other servers change from now on is followed.
    let versions = store.shared_versions().await?;
    let started_at = now_ms();
    // The store's own record of the last moment a server used it; a store from before that
    // record counts as down until now (every check not yet stale then gets a whole ttl).
    let outage = mdd_core::event::Outage {
        down_at: store.last_alive().await?.unwrap_or(started_at),
        up_at: started_at,
    };
    let checks = initial_checks(&store, &config, started_at).await?;

    let (events, events_from) = load_events(&store, &checks, outage).await?;
    let tracks = deployments::load(&store).await?;
    let silences = silences::load(&store).await?;
    let tokens: Vec<TokenEntry> = store
        .tokens()
        .await?
        .into_iter()
        .filter_map(|(hash, record)| stored_token(hash, record))
        .collect();

    let (sender, receiver) = mpsc::channel(1024);
    let (notices, notices_rx) = mpsc::channel(notify::NOTICE_QUEUE);
    let (persist, persist_rx) = mpsc::channel(notify::PERSIST_QUEUE);
    let deliveries =
        notify::DeliveryLog::new(store.deliveries(notify::LOG_LEN).await?, persist.clone());
    let notified = store.notified().await?;
    let notified_keys = notified
        .iter()
        .map(|n| (n.handler.clone(), n.check.clone(), n.entity.clone()))
        .collect();
    // Bad TLS files stop the start before anything listens.
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(tls::Tls::load(files.clone())?)),
        None => None,
    };
    if let Some(warning) = exposure_warning(config.listen, tls.is_some()) {
        tracing::warn!("{warning}");
    }
    let max_connections = listen::raise_fd_limit();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let (revision, _) = tokio::sync::watch::channel(checks.revision);
    let watches = keepalive::resume(&store.entities().await?, |entity| {
        events
            .get(&(keepalive::KEEPALIVE_CHECK.to_string(), entity.to_string()))
            .map(|cached| cached.event.status)
    });
    let shared = Arc::new(Shared {
        store,
        revision,
        shutdown: shutdown.clone(),
        keepalives: std::sync::Mutex::new(watches),
        deployments: RwLock::new(tracks),
        silences: followed::Followed::new(silences),
        notices,
        behind: std::sync::Mutex::default(),
        feed: tokio::sync::Mutex::new(Feed {
            from: events_from,
            read_at: None,
        }),
        deliveries,
        checks: RwLock::new(Arc::new(checks)),
        events: RwLock::new(events),
        tokens: followed::Followed::new(tokens),
        ingest: sender,
        metrics: metrics::Metrics::new(),
        config,
        apply_lock: tokio::sync::Mutex::new(()),
        checks_changed: tokio::sync::Notify::new(),
        outage,
        connections: Arc::default(),
        tls: tls.clone(),
        version: std::sync::atomic::AtomicU64::new(0),
        sessions_generation: std::sync::atomic::AtomicU64::new(0),
        server_id,
        once_only: tokio::sync::watch::channel(false).0,
    });

    let mut new_admin_token = None;
    let has_tokens = !shared.tokens.read().is_empty();
    match (has_tokens, shared.config.admin_token.clone()) {
        (false, Some(secret)) => {
            shared
                .add_token(
                    &secret,
                    NewToken {
                        role: Role::Admin,
                        name: "first admin".into(),
                        ..NewToken::default()
                    },
                )
                .await?;
        }
        (false, None) => {
            new_admin_token = Some(
                shared
                    .create_token(Role::Admin, "first admin", None)
                    .await?,
            )
        }
        // The store has tokens: an admin token given at start is added, not ignored. This is
        // how an operator with only the data directory regains admin access: stop the server,
        // start it with --admin-token-file holding a new secret.
        (true, Some(secret)) => match shared.token(&secret) {
            Some(known) if known.role == Role::Admin => {}
            Some(known) => {
                return Err(ServerError::Token(format!(
                    "the admin token given at start is already a token of this store with the {} role (`{}`); give another secret for an admin token",
                    known.role.as_str(),
                    known.name
                )));
            }
            None => {
                shared
                    .add_token(
                        &secret,
                        NewToken {
                            role: Role::Admin,
                            name: "admin token given at start".into(),
                            ..NewToken::default()
                        },
                    )
                    .await?;
                tracing::warn!(
                    "added the admin token given at start (--admin-token-file or MDD_ADMIN_TOKEN): the store had tokens, none of them this one"
                );
            }
        },
        (true, None) => {}
    }

    let drain = CancellationToken::new();
    let writer = tokio::spawn(ingest::run_writer(
        Arc::clone(&shared),
        receiver,
        drain.clone(),
    ));
    let app = api::router(Arc::clone(&shared))
        .merge(dashboard::router(Arc::clone(&shared)))
        .layer(axum::middleware::from_fn_with_state(
            shared.config.max_body,
            api::guard,
        ));
    let scheduler = tokio::spawn(scheduler::run(Arc::clone(&shared), shutdown.clone()));
    let housekeeping = tokio::spawn(prune_loop(Arc::clone(&shared), shutdown.clone()));
    let vacuum = tokio::spawn(vacuum_loop(Arc::clone(&shared), shutdown.clone()));
    let token_uses = tokio::spawn(token_uses_loop(Arc::clone(&shared), shutdown.clone()));
    let watchdog = tokio::spawn(keepalive::watchdog(Arc::clone(&shared), shutdown.clone()));
    let progress = tokio::spawn(deployments::run(Arc::clone(&shared), shutdown.clone()));
    let follower = tokio::spawn(follow::run(
        Arc::clone(&shared),
        follow::Seen { versions },
        shutdown.clone(),
    ));
    let leaseholder = tokio::spawn(lease::run(Arc::clone(&shared), shutdown.clone()));
    // Notifications run on a thread of their own: a storm of deliveries then never queues
    // in front of ingestion's tasks, and the kernel shares the cores between the two.
    let notifier = {
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        std::thread::Builder::new()
            .name("mdd-notify".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let persister = tokio::spawn(notify::persist(
                        shared.store.clone(),
                        persist_rx,
                        notified_keys,
                        shutdown.clone(),
                    ));
                    notify::run(shared, notices_rx, notified, persist, shutdown).await;
                    let _ = persister.await;
                })
            })
            .map_err(ServerError::Runtime)?
    };
    if let Some(tls) = &tls {
        tokio::spawn(Arc::clone(tls).watch(shutdown.clone()));
    }
    let serve_shared = Arc::clone(&shared);
    let task = tokio::spawn(async move {
        listen::serve(
            listener,
            app,
            tls,
            max_connections,
            serve_shared.config.idle_timeout,
            Arc::clone(&serve_shared.connections),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        let _ = scheduler.await;
        let _ = housekeeping.await;
        let _ = vacuum.await;
        let _ = token_uses.await;
        let _ = watchdog.await;
        let _ = progress.await;
        let _ = follower.await;
        let _ = leaseholder.await;
        let _ = tokio::task::spawn_blocking(move || notifier.join()).await;
        drop(serve_shared);
    });
    Ok(RunningServer {
        addr,
        shared,
        new_admin_token,
        task,
        writer,
        drain,
    })
}

/// The last applied revision with the `--spec` files on top, stored as a new revision when
/// they change it. Another server applying at the same moment makes this one read again.
async fn initial_checks(
    store: &Store,
    config: &ServerConfig,
    started_at: i64,
) -> Result<CheckSet, ServerError> {
    let mut given = BTreeMap::new();
    for spec in &config.specs {
        let text = std::fs::read_to_string(&spec.path).map_err(|e| ServerError::Spec {
            path: spec.path.clone(),
            detail: e.to_string(),
        })?;
        given.insert(spec.name.clone(), text);
    }
    for _ in 0..APPLY_TRIES {
        let mut stored_files = BTreeMap::new();
        let mut revision = 0;
        let mut applied_at = i64::MIN;
        if let Some(latest) = store.latest_spec().await? {
            revision = latest.revision;
            applied_at = latest.applied_at;
            for file in latest.files {
                stored_files.insert(file.file, file.text);
            }
        }
        let mut files = stored_files.clone();
        files.extend(given.clone());
        let stored_checks = CheckSet::parse(revision, stored_files.clone())
            .ok()
            .map(|set| set.dated_after(None, applied_at));
        let mut checks = CheckSet::parse(revision, files.clone())
            .map_err(|errors| ServerError::Spec {
                path: config
                    .specs
                    .first()
                    .map(|s| s.path.clone())
                    .unwrap_or_default(),
                detail: format!("\n{errors}"),
            })?
            .dated_after(stored_checks.as_ref(), started_at);
        if files == stored_files {
            return Ok(checks);
        }
        match store
            .apply_spec_on(revision, &checks.files_for_storage(), started_at)
            .await?
        {
            mdd_storage::SpecApplied::Stored(stored) => {
                checks.revision = stored;
                return Ok(checks);
            }
            mdd_storage::SpecApplied::Moved { .. } => continue,
        }
    }
    Err(ServerError::Spec {
        path: config
            .specs
            .first()
            .map(|s| s.path.clone())
            .unwrap_or_default(),
        detail: format!(
            "the stored spec kept moving under this start ({APPLY_TRIES} applies through other servers in a row); start again"
        ),
    })
}

/// How many times an apply re-bases on a spec another server moved before it gives up.
pub const APPLY_TRIES: usize = 8;

/// This server's name among those on one database: kept in its data directory, so a server
/// restarted there takes back the lease it held at once instead of waiting for it to run out.
/// On SQLite (one server per store) and when the directory cannot hold it, a new one.
fn server_id(config: &ServerConfig) -> String {
    let fresh = || uuid::Uuid::now_v7().to_string();
    if config.database.is_none() {
        return fresh();
    }
    let path = config.data_dir.join("server-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && uuid::Uuid::parse_str(id.trim()).is_ok()
    {
        return id.trim().to_string();
    }
    let id = fresh();
    if std::fs::create_dir_all(&config.data_dir)
        .and_then(|()| std::fs::write(&path, &id))
        .is_err()
    {
        tracing::warn!("cannot keep this server's id in {}", path.display());
    }
    id
}

/// What an operator must hear about listening on `listen` without TLS: nothing on loopback.
pub fn exposure_warning(listen: SocketAddr, tls: bool) -> Option<String> {
    (!tls && !listen.ip().is_loopback()).then(|| format!(
        "listening on {listen} without TLS: API tokens, dashboard sign-ins, results and the spec cross the network in clear text, readable and alterable by anyone on the path; give --tls-cert and --tls-key (or put a TLS proxy in front and listen on loopback)"
    ))
}

/// The stored event checkpoint, brought up to date with the results stored after it (what a
/// crash left unchecked), then checkpointed again.
async fn load_events(
    store: &Store,
    checks: &CheckSet,
    outage: mdd_core::event::Outage,
) -> Result<(Events, mdd_storage::FeedPosition), ServerError> {
    if store.is_shared() {
        // Folded with their results: the stored events are current, nothing to replay. The
        // change feed goes on from where this read ended.
        let (next, stored) = store.all_events().await?;
        let mut events = Events::new();
        for event in stored {
            let mut cached: CachedEvent =
                serde_json::from_str(&event.row.body).map_err(|e| StoreError::Corrupt {
                    path: store.path().to_path_buf(),
                    detail: format!("event {}/{}: {e}", event.row.check, event.row.entity),
                })?;
            cached.version = event.version;
            events.insert((event.row.check, event.row.entity), Arc::new(cached));
        }
        return Ok((events, next));
    }
    let checkpoint = store.load_event_checkpoint().await?;
    let mut events = Events::new();
    for row in checkpoint.events {
        let cached: CachedEvent =
            serde_json::from_str(&row.body).map_err(|e| StoreError::Corrupt {
                path: store.path().to_path_buf(),
                detail: format!("event {}/{}: {e}", row.check, row.entity),
            })?;
        events.insert((row.check, row.entity), Arc::new(cached));
    }
    let mut after = checkpoint.through_rowid;
    let mut replayed = std::collections::HashSet::new();
    loop {
        let page = store.results_after(after, 10_000).await?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        let results: Vec<&StoredResult> = page.iter().map(|(_, r)| r).collect();
        let (staged, incidents) = ingest::apply_results(&events, &results, checks, outage);
        for (key, cached) in staged {
            replayed.insert(key.clone());
            events.insert(key, Arc::new(cached));
        }
        // Recorded again if they already were: harmless, and what a crash may have lost.
        store.record_incidents(&incidents).await?;
    }
    // Stored before such times were refused: a result from a clock far ahead would keep its
    // event from ever moving or going stale. It counts as of now.
    let now = now_ms();
    let latest_trusted =
        now.saturating_add(i64::try_from(mdd_core::event::MAX_CLOCK_SKEW.as_millis()).unwrap_or(0));
    let ahead: Vec<EventKey> = events
        .iter()
        .filter(|(_, cached)| cached.event.executed_at > latest_trusted)
        .map(|(key, _)| key.clone())
        .collect();
    for key in ahead {
        let Some(cached) = events.get_mut(&key) else {
            continue;
        };
        tracing::warn!(
            check = key.0,
            entity = key.1,
            "the stored event is dated {} (a wrong clock); it counts as of now",
            view::timestamp(cached.event.executed_at)
        );
        let cached = Arc::make_mut(cached);
        cached.event.executed_at = now;
        for entry in &mut cached.event.history {
            entry.executed_at = entry.executed_at.min(now);
        }
        replayed.insert(key);
    }
    if !replayed.is_empty() {
        tracing::info!(
            events = replayed.len(),
            "brought events up to date from results after the last checkpoint"
        );
        let rows: Vec<mdd_storage::EventRow> = replayed
            .iter()
            .filter_map(|key| events.get(key))
            .filter_map(|cached| cached.to_row())
            .collect();
        store.checkpoint_events(&rows).await?;
    }
    Ok((events, mdd_storage::FeedPosition::default()))
}

/// Records when tokens were last used, every 30 s and at the end (not on every request).
async fn token_uses_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut written = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        shared.save_token_uses(&mut written).await;
    }
    shared.save_token_uses(&mut written).await;
}

/// Deletes results older than the retention, hourly, on the server doing the once-only work.
async fn prune_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    while_holding(&shared, &shutdown, Duration::from_secs(3600), || async {
        let before =
            now_ms() - i64::try_from(shared.config.retention.as_millis()).unwrap_or(i64::MAX);
        match shared.store.prune_results(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("retention removed {n} old results"),
            Err(e) => tracing::warn!("retention failed: {e}"),
        }
    })
    .await;
}

/// How often the server doing the once-only work looks for tables to vacuum.
const VACUUM_EVERY: Duration = Duration::from_secs(2);

/// Vacuums the tables folds churn (see `Store::vacuum_churned`) on a store shared by several
/// servers, on the server doing the once-only work.
async fn vacuum_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    if !shared.store.is_shared() {
        return;
    }
    // Said once until it works again.
    let failing = std::sync::atomic::AtomicBool::new(false);
    while_holding(&shared, &shutdown, VACUUM_EVERY, || async {
        match shared.store.vacuum_churned().await {
            Ok(tables) => {
                failing.store(false, std::sync::atomic::Ordering::Relaxed);
                if !tables.is_empty() {
                    tracing::debug!(?tables, "vacuumed");
                }
            }
            Err(e) => {
                if !failing.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!("cannot vacuum (will retry): {e}");
                }
            }
        }
    })
    .await;
}

/// Does `work` every `every` for as long as this server holds the once-only lease (waiting
/// while it does not), until `shutdown`.
async fn while_holding<F, W>(
    shared: &Shared,
    shutdown: &CancellationToken,
    every: Duration,
    mut work: W,
) where
    W: FnMut() -> F,
    F: std::future::Future<Output = ()>,
{
    let mut holding = shared.watch_once_only_work();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            held = holding.wait_for(|holds| *holds) => if held.is_err() { return },
        }
        work().await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Re-reads the `--spec` files (SIGHUP) and applies them on top of the current set. An invalid
/// file changes nothing; the errors are returned to be logged.
pub async fn reload_specs(shared: &Shared) -> Result<checks::SpecDiff, String> {
    let _serialised = shared.apply_lock.lock().await;
    let mut given = BTreeMap::new();
    for spec in &shared.config.specs {
        let text = std::fs::read_to_string(&spec.path)
            .map_err(|e| format!("{}: {e}", spec.path.display()))?;
        given.insert(spec.name.clone(), text);
    }
    for _ in 0..APPLY_TRIES {
        let current = shared.checks();
        let mut files = current.files.clone();
        files.extend(given.clone());
        if files == current.files {
            return Ok(checks::SpecDiff::default());
        }
        let now = now_ms();
        let mut candidate = CheckSet::parse(current.revision, files)
            .map_err(|e| e.to_string())?
            .dated_after(Some(&current), now);
        let diff = checks::SpecDiff::between(&current, &candidate);
        match shared
            .store
            .apply_spec_on(current.revision, &candidate.files_for_storage(), now)
            .await
            .map_err(|e| e.to_string())?
        {
            mdd_storage::SpecApplied::Stored(revision) => {
                for warning in signing::secret_warnings(&candidate.spec.handlers) {
                    tracing::warn!("{warning}");
                }
                candidate.revision = revision;
                shared.set_checks(candidate);
                return Ok(diff);
            }
            mdd_storage::SpecApplied::Moved { .. } => {
                follow::catch_up_spec_locked(shared)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Err(format!(
        "the stored spec kept moving under this reload ({APPLY_TRIES} applies through other servers in a row); send SIGHUP again"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn listening_beyond_loopback_without_tls_is_said() {
        let warn = |addr: &str, tls| super::exposure_warning(addr.parse().expect("addr"), tls);
        let said = warn("0.0.0.0:7700", false).expect("a warning");
        assert!(
            said.contains("0.0.0.0:7700") && said.contains("clear text"),
            "{said}"
        );
        assert!(said.contains("--tls-cert"), "{said}");
        assert!(warn("[::]:7700", false).is_some());
        assert!(warn("10.1.2.3:7700", false).is_some());
        assert!(warn("0.0.0.0:7700", true).is_none());
        assert!(warn("127.0.0.1:7700", false).is_none());
        assert!(warn("127.0.0.2:7700", false).is_none());
        assert!(warn("[::1]:7700", false).is_none());
    }
}
