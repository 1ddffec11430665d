//! Notifications: decides which event changes each handler hears about, and delivers them
//! (webhooks with bounded retries, commands with the event on stdin), without ever holding up
//! ingestion: the writer hands notices over with `try_send`, all of this runs on a thread of
//! its own (started by `lib.rs`), and each handler has its own lanes — bounded queues with a
//! worker each, an event always in the same lane — so a slow or dead receiver only delays its
//! own deliveries, and one event's notifications arrive in order.
//!
//! Rules, per handler that applies to the check: an incident (not OK after OK) is notified once
//! the filter's states and occurrences allow it, unless the event is silenced, blocked behind a
//! failing dependency (its root cause is notified instead), or expected to be red (the check
//! has not been green yet in a deployment that is not done); a resolution is notified only for
//! incidents that were; a change of status while failing is notified again; flapping is
//! notified when it starts and ends, not on every change; reminders repeat while failing.
//!
//! What handlers were told survives a restart: the delivery log, the incidents each handler
//! was told about and the deliveries decided and not yet finished are written to the store in
//! batches (by [`persist`], off the delivery path; a record of an incident told is stored in the
//! same transaction as the delivery that tells it). A server that starts, or takes over the
//! once-only work in a cluster, delivers what is still due, with the same ids: deliveries are at
//! least once, and a receiver drops a repeat by its `webhook-id`.
//! On start, and whenever a spec is applied, every failing event and every remembered incident
//! is looked at again, so a recovery or failure that happened while the server was down, or a
//! handler added to the spec, is told what it would have been told.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mdd_core::notification::{Open, Seen};
use mdd_core::spec::{Check, Handler, HandlerKind};
use mdd_core::{State, Status};
use mdd_storage::{DeliveryRow, DueDelivery, NotificationChanges, NotifiedRow};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checks::CheckSet;
use crate::view::StateResolver;
use crate::{CachedEvent, Shared, now_ms};

/// Notices waiting for the notifier; past this, new ones are dropped (and counted) rather than
/// slowing ingestion.
pub const NOTICE_QUEUE: usize = 10_000;
/// Deliveries in flight at once per handler. Each event always goes down the same lane, so
/// what one event's receiver hears stays in order (incident before resolution), while a slow
/// receiver still gets several events at a time.
const LANES: usize = 8;
/// Deliveries waiting per lane.
const DELIVERY_QUEUE: usize = 1_000;
/// Attempts per webhook delivery, and the first pause between them (doubling).
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Deliveries kept per handler for the log.
pub const LOG_LEN: usize = 500;
/// Log entries and incident records waiting to be written; past this they are dropped from the
/// store (not from memory) rather than slowing deliveries.
pub const PERSIST_QUEUE: usize = 20_000;
/// How long the persister gathers changes before writing them in one transaction: at most this
/// much of the log is lost in a crash, and under a storm of changes an incident told and
/// resolved within it costs no write at all.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// How many results in a row of a failing event are looked at for occurrence thresholds.
pub const OCCURRENCES_WATCHED: u32 = 100;
/// The most of a webhook receiver's answer read (and thrown away).
const RESPONSE_READ: usize = 64 * 1024;
/// The most output of a command handler kept in the log.
const OUTPUT_KEPT: usize = 4096;

/// An event that changed, as the writer saw it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Notice {
    pub event: CachedEvent,
    pub previous_status: Option<Status>,
    pub previous_flapping: bool,
    /// The event's version as the fold wrote it (0 on SQLite, where there are none).
    #[serde(default)]
    pub version: i64,
}

/// One attempt to deliver, for the log.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub at: String,
    #[serde(skip)]
    pub at_ms: i64,
    pub check: String,
    pub entity: String,
    /// incident, resolution, changed, reminder, flapping_started, flapping_ended
    pub kind: String,
    pub attempt: u32,
    /// `ok`, `http 500`, `exit 2`, `error: …`, `dropped: queue full`
    pub outcome: String,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// Delivery logs by handler name: read from memory, written through to the store.
pub struct DeliveryLog {
    logs: Mutex<HashMap<String, VecDeque<Delivery>>>,
    persist: mpsc::Sender<Persist>,
}

impl DeliveryLog {
    /// Starts from what the store kept (oldest first).
    pub fn new(stored: Vec<DeliveryRow>, persist: mpsc::Sender<Persist>) -> DeliveryLog {
        let mut logs: HashMap<String, VecDeque<Delivery>> = HashMap::new();
        for row in stored {
            logs.entry(row.handler).or_default().push_back(Delivery {
                at: crate::view::timestamp(row.at),
                at_ms: row.at,
                check: row.check,
                entity: row.entity,
                kind: row.kind,
                attempt: row.attempt,
                outcome: row.outcome,
                latency_ms: row.latency_ms,
                output: row.output,
            });
        }
        DeliveryLog {
            logs: Mutex::new(logs),
            persist,
        }
    }

    fn record(&self, handler: &str, delivery: Delivery) {
        // Never wait for the store: a full queue costs the entry its place on disk, not in
        // the log.
        if self
            .persist
            .try_send(Persist::Delivery(handler.to_string(), delivery.clone()))
            .is_err()
        {
            tracing::warn!("the delivery log is behind: an entry was not written to the store");
        }
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let log = logs.entry(handler.to_string()).or_default();
        log.push_back(delivery);
        while log.len() > LOG_LEN {
            log.pop_front();
        }
    }

    /// The newest first.
    pub fn of(&self, handler: &str) -> Vec<Delivery> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.get(handler)
            .map(|log| log.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

/// (handler, check, entity): whom an incident was told to, and about what.
pub type OpenKey = (String, String, String);

/// What the persister writes.
pub enum Persist {
    Delivery(String, Delivery),
    /// What a handler now knows about an event: `None` once it was told it is resolved (or
    /// will never be).
    Notified(OpenKey, Option<Open>),
    /// A delivery decided: due until it is done.
    Due(DueDelivery),
    /// A delivery that ended (delivered, or given up): (id, handler).
    Done(String, String),
}

/// Writes the delivery log and incident records in batches until `shutdown`, then writes what
/// is queued and stops. `stored` are the incident records the store holds now.
pub async fn persist(
    store: mdd_storage::Store,
    mut queue: mpsc::Receiver<Persist>,
    mut stored: std::collections::HashSet<OpenKey>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            item = queue.recv() => item,
            _ = shutdown.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = Batch::default();
        batch.add(first);
        let deadline = tokio::time::sleep(PERSIST_EVERY);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                item = queue.recv() => match item {
                    Some(item) => batch.add(item),
                    None => break,
                },
                _ = &mut deadline => break,
                _ = shutdown.cancelled() => break,
            }
        }
        batch.write(&store, &mut stored).await;
    }
    let mut batch = Batch::default();
    while let Ok(item) = queue.try_recv() {
        batch.add(item);
    }
    batch.write(&store, &mut stored).await;
}

#[derive(Default)]
struct Batch {
    /// Per handler, at most the newest `LOG_LEN`: older ones would be pruned at once.
    deliveries: HashMap<String, VecDeque<Delivery>>,
    /// The last word on each incident record.
    notified: HashMap<OpenKey, Option<Open>>,
    /// Deliveries decided and ended, by (id, handler): the last word on each.
    due: HashMap<(String, String), DueDelivery>,
    done: std::collections::HashSet<(String, String)>,
}

impl Batch {
    fn add(&mut self, item: Persist) {
        match item {
            Persist::Delivery(handler, delivery) => {
                let log = self.deliveries.entry(handler).or_default();
                log.push_back(delivery);
                if log.len() > LOG_LEN {
                    log.pop_front();
                }
            }
            Persist::Notified(key, open) => {
                self.notified.insert(key, open);
            }
            Persist::Due(due) => {
                let key = (due.id.clone(), due.handler.clone());
                self.done.remove(&key);
                self.due.insert(key, due);
            }
            Persist::Done(id, handler) => {
                let key = (id, handler);
                // Decided and ended within one batch: nothing to write, unless an earlier
                // batch stored it (a delete of a row that is not there costs nothing).
                self.due.remove(&key);
                self.done.insert(key);
            }
        }
    }

    /// `stored` mirrors the incident records in the store: a record that was never written
    /// needs no delete.
    async fn write(
        self,
        store: &mdd_storage::Store,
        stored: &mut std::collections::HashSet<OpenKey>,
    ) {
        let deliveries: Vec<DeliveryRow> = self
            .deliveries
            .into_iter()
            .flat_map(|(handler, log)| {
                log.into_iter().map(move |d| DeliveryRow {
                    handler: handler.clone(),
                    at: d.at_ms,
                    check: d.check,
                    entity: d.entity,
                    kind: d.kind,
                    attempt: d.attempt,
                    outcome: d.outcome,
                    latency_ms: d.latency_ms,
                    output: d.output,
                })
            })
            .collect();
        let mut notified = Vec::new();
        let mut resolved = Vec::new();
        for (key, open) in self.notified {
            match open {
                Some(open) => {
                    stored.insert(key.clone());
                    let (handler, check, entity) = key;
                    notified.push(NotifiedRow {
                        handler,
                        check,
                        entity,
                        status: open.status,
                        notified_at: open.notified_at,
                    })
                }
                None => {
                    // Another server of a cluster may have written the record: one this server
                    // never wrote is deleted too, unless the store is this server's alone.
                    if stored.remove(&key) || store.is_shared() {
                        resolved.push(key);
                    }
                }
            }
        }
        let mut due: Vec<DueDelivery> = self.due.into_values().collect();
        due.sort_by(|a, b| (a.decided_at, &a.id).cmp(&(b.decided_at, &b.id)));
        let done: Vec<(String, String)> = self.done.into_iter().collect();
        let changes = NotificationChanges {
            deliveries: &deliveries,
            notified: &notified,
            resolved: &resolved,
            due: &due,
            done: &done,
        };
        if let Err(e) = store.save_notifications(&changes, LOG_LEN).await {
            tracing::error!("cannot write the delivery log: {e}");
        }
    }
}

/// The incidents each handler was told about and not yet told are resolved; every change is
/// also sent to the persister.
struct Told {
    open: HashMap<OpenKey, Open>,
    persist: mpsc::Sender<Persist>,
    /// The newest version of each event a notice was decided for (on a store shared by
    /// several servers, where events have versions): a notice that comes after a newer one
    /// for the same event (another server's fold through the outbox, a group that committed
    /// before one started earlier) is older news, and is not decided.
    decided: HashMap<(String, String), i64>,
}

impl Told {
    fn new(stored: Vec<NotifiedRow>, persist: mpsc::Sender<Persist>) -> Told {
        let open = stored
            .into_iter()
            .map(|row| {
                (
                    (row.handler, row.check, row.entity),
                    Open {
                        status: row.status,
                        notified_at: row.notified_at,
                    },
                )
            })
            .collect();
        Told {
            open,
            persist,
            decided: HashMap::new(),
        }
    }

    /// Puts back a record taken with `open.remove`, writing it through if it changed.
    fn put(&mut self, key: OpenKey, before: Option<Open>, after: Option<Open>) {
        if before != after {
            self.store(key.clone(), after);
        }
        if let Some(after) = after {
            self.open.insert(key, after);
        }
    }

    /// Sends a changed record to the persister (never waits for it).
    fn store(&self, key: OpenKey, open: Option<Open>) {
        if self.persist.try_send(Persist::Notified(key, open)).is_err() {
            tracing::warn!("the delivery log is behind: an incident record was not stored");
        }
    }
}

struct Job {
    /// The notification's id: the same in every attempt to deliver it (`webhook-id`), so a
    /// receiver can drop a repeat.
    id: String,
    /// The check set the decision was made with, and the handler's place in it: a job is
    /// made per delivery, so it shares rather than copies the handler.
    checks: Arc<CheckSet>,
    handler_index: usize,
    kind: &'static str,
    /// Shared by every handler told the same thing, and sent without a copy.
    body: bytes::Bytes,
    check: String,
    entity: String,
}

/// A notification's id (`webhook-id`, `mdd.notification_id`): made from what it says and what
/// caused it (the result that moved the event, the record of an incident told before), so the
/// same decision made again — a catch-up after a restart, another server of a cluster after a
/// failover — carries the id a receiver already has and can drop.
fn notification_id(kind: &str, state: State, check: &str, entity: &str, cause: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!(
        "{kind}\0{}\0{check}\0{entity}\0{cause}",
        state.as_str()
    ));
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

impl Job {
    fn handler(&self) -> &Handler {
        &self.checks.spec.handlers[self.handler_index]
    }

    /// What the store keeps of it until it is done.
    fn due(&self) -> DueDelivery {
        DueDelivery {
            id: self.id.clone(),
            handler: self.handler().name.clone(),
            kind: self.kind.to_string(),
            check: self.check.clone(),
            entity: self.entity.clone(),
            body: self.body.to_vec(),
            decided_at: now_ms(),
        }
    }

    /// A delivery the store kept as due, for the handler of that name in `checks`: `None`
    /// when the spec no longer has that handler (or the row is not one mdd wrote).
    fn from_due(checks: &Arc<CheckSet>, due: DueDelivery) -> Option<Job> {
        let handler_index = checks
            .spec
            .handlers
            .iter()
            .position(|h| h.name == due.handler)?;
        let kind = mdd_core::notification::Kind::from_name(&due.kind)?.as_str();
        Some(Job {
            id: due.id,
            checks: Arc::clone(checks),
            handler_index,
            kind,
            body: due.body.into(),
            check: due.check,
            entity: due.entity,
        })
    }
}

/// Tells the persister a delivery ended, so it is no longer due (never waits for it).
fn done(persist: &mpsc::Sender<Persist>, job: &Job) {
    let ended = Persist::Done(job.id.clone(), job.handler().name.clone());
    if persist.try_send(ended).is_err() {
        tracing::warn!("the delivery log is behind: a delivery done was not stored as done");
    }
}

/// Queues again what the store says is due: decided (by this server before a restart, or by
/// the server that held the once-only work before) and not finished.
async fn load_due(shared: &Shared, persist: &mpsc::Sender<Persist>, jobs: &mut Vec<Job>) {
    let due = match shared.store.due_deliveries().await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!("cannot read the deliveries still due: {e}");
            return;
        }
    };
    if due.is_empty() {
        return;
    }
    tracing::info!("{} still due from before: delivering them", due.len());
    let checks = shared.checks();
    for row in due {
        let key = (row.id.clone(), row.handler.clone());
        match Job::from_due(&checks, row) {
            Some(job) => jobs.push(job),
            // Its handler is gone from the spec: nobody to tell.
            None => {
                if persist.try_send(Persist::Done(key.0, key.1)).is_err() {
                    tracing::warn!("the delivery log is behind: a delivery was not dropped");
                }
            }
        }
    }
}

/// Runs until `shutdown`: takes notices, decides, queues deliveries; reminds once a second.
/// `notified` is what the store remembers handlers were told.
pub async fn run(
    shared: Arc<Shared>,
    mut notices: mpsc::Receiver<Notice>,
    notified: Vec<NotifiedRow>,
    persist: mpsc::Sender<Persist>,
    shutdown: CancellationToken,
) {
    let mut told = Told::new(notified, persist);
    let mut workers: HashMap<String, Vec<mpsc::Sender<Job>>> = HashMap::new();
    let http = reqwest::Client::builder()
        .user_agent(concat!("mdd/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut revisions = shared.watch_revision();
    // Sweeps, reminders and catching up are once-only work: in a cluster, the holder of the
    // lease does them (on SQLite that is always this server, from the start on).
    let mut holding = shared.watch_once_only_work();
    holding.mark_changed();
    let mut jobs = Vec::new();
    loop {
        tokio::select! {
            // Taking the lease comes before any notice: what handlers were told is read again
            // before the first notice this server decides as the holder.
            biased;
            _ = shutdown.cancelled() => return,
            moved = holding.changed() => {
                if moved.is_err() {
                    return;
                }
                if *holding.borrow_and_update() {
                    // What the last holder told handlers is in the store (up to its last
                    // second); the first look makes up for what happened while nobody was.
                    if shared.store.is_shared() {
                        match shared.store.notified().await {
                            Ok(stored) => told = Told::new(stored, told.persist.clone()),
                            Err(e) => tracing::warn!("cannot read what handlers were told: {e}"),
                        }
                    }
                    // What was decided and not delivered goes first (it is due already: no
                    // second row for it), then what was never decided.
                    let mut due = Vec::new();
                    load_due(&shared, &told.persist, &mut due).await;
                    dispatch(&shared, &http, &mut workers, &told.persist, &mut due, &shutdown);
                    events_current(&shared).await;
                    catch_up(&shared, &mut told, &mut jobs);
                }
            }
            notice = notices.recv() => match notice {
                Some(notice) => {
                    events_current(&shared).await;
                    decide(&shared, &notice, &mut told, &mut jobs);
                }
                None => return,
            },
            changed = revisions.changed() => match changed {
                // Handlers may have been added, removed or re-routed.
                Ok(()) if shared.holds_once_only_work() => {
                    events_current(&shared).await;
                    catch_up(&shared, &mut told, &mut jobs);
                }
                Ok(()) => {}
                Err(_) => return,
            },
            _ = tick.tick() => if shared.holds_once_only_work() {
                events_current(&shared).await;
                watch_stale(&shared, &mut told, &mut jobs);
                remind(&shared, &mut told, &mut jobs);
            }
        }
        for job in &jobs {
            decided(&told.persist, job);
        }
        dispatch(
            &shared,
            &http,
            &mut workers,
            &told.persist,
            &mut jobs,
            &shutdown,
        );
    }
}

/// Decisions are made against the events as stored: those memory only noted as moved (folded
/// through other servers) are read first. With no handlers nothing is decided, and nothing read.
async fn events_current(shared: &Shared) {
    if !shared.checks().spec.handlers.is_empty() {
        shared.catch_up_events_or_say().await;
    }
}

/// Tells the persister a delivery is due (never waits for it): it is stored with the changes
/// to what handlers were told that go with it.
fn decided(persist: &mpsc::Sender<Persist>, job: &Job) {
    if persist.try_send(Persist::Due(job.due())).is_err() {
        tracing::warn!("the delivery log is behind: a delivery due was not stored");
    }
}

/// Hands each job to its handler's lane (starting the lanes of a handler not seen before).
fn dispatch(
    shared: &Arc<Shared>,
    http: &reqwest::Client,
    workers: &mut HashMap<String, Vec<mpsc::Sender<Job>>>,
    persist: &mpsc::Sender<Persist>,
    jobs: &mut Vec<Job>,
    shutdown: &CancellationToken,
) {
    for job in jobs.drain(..) {
        let lanes = workers
            .entry(job.handler().name.clone())
            .or_insert_with(|| {
                (0..LANES)
                    .map(|_| {
                        let (tx, rx) = mpsc::channel(DELIVERY_QUEUE);
                        tokio::spawn(deliver_all(
                            Arc::clone(shared),
                            http.clone(),
                            rx,
                            persist.clone(),
                            shutdown.clone(),
                        ));
                        tx
                    })
                    .collect()
            });
        let lane = lane_of(&job.check, &job.entity);
        if let Err(mpsc::error::TrySendError::Full(job)) = lanes[lane].try_send(job) {
            let outcome = "dropped: queue full".to_string();
            log(shared, &job, 0, outcome, Instant::now(), String::new());
            shared.metrics.delivered(&job.handler().name, "dropped");
            done(persist, &job);
        }
    }
}

/// Which lane of a handler an event's deliveries take: always the same one.
fn lane_of(check: &str, entity: &str) -> usize {
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::with_seed(0).hash_one((check, entity));
    (hash % LANES as u64) as usize
}

/// Looks again at every failing event and every incident a handler was told about, as if each
/// had just changed: what recovered or failed unseen (while the server was down) or what a
/// changed spec now routes elsewhere gets told; what was already told is not told again.
fn catch_up(shared: &Shared, told: &mut Told, jobs: &mut Vec<Job>) {
    let checks = shared.checks();
    let events: Vec<CachedEvent> = {
        let events = shared.events_snapshot();
        // Records of events that are gone, or of handlers that no longer apply, are dropped.
        let stale: Vec<OpenKey> = told
            .open
            .keys()
            .filter(|(handler, check, entity)| {
                let applies = checks.get(check).is_some_and(|c| {
                    checks
                        .spec
                        .handlers
                        .iter()
                        .any(|h| h.name == *handler && h.applies_to(c))
                });
                let kept = events.contains_key(&(check.clone(), entity.clone()))
                    || is_absent_record(shared, &events, check, entity);
                !applies || !kept
            })
            .cloned()
            .collect();
        for key in stale {
            let before = told.open.remove(&key);
            told.put(key, before, None);
        }
        let remembered: std::collections::HashSet<(&str, &str)> = told
            .open
            .keys()
            .map(|(_, check, entity)| (check.as_str(), entity.as_str()))
            .collect();
        events
            .iter()
            .filter(|((check, entity), cached)| {
                cached.event.status != Status::Ok
                    || remembered.contains(&(check.as_str(), entity.as_str()))
            })
            .map(|(_, cached)| CachedEvent::clone(cached))
            .collect()
    };
    for event in events {
        let (status, flapping) = (event.event.status, event.event.flapping);
        decide_one(
            shared,
            &Notice {
                event,
                previous_status: Some(status),
                previous_flapping: flapping,
                version: 0,
            },
            told,
            jobs,
        );
    }
}

/// The entity a check that never reported is notified under: the server, which is the one
/// saying it is stale (as it is for agents' keepalives).
fn absent_entity(shared: &Shared) -> &str {
    &shared.config.entity
}

/// Whether a handler's record is about a check that had no event at all when it went stale
/// (and still has none on the entity it was told under).
fn is_absent_record(shared: &Shared, events: &crate::Events, check: &str, entity: &str) -> bool {
    entity == absent_entity(shared)
        && !events.contains_key(&(check.to_string(), entity.to_string()))
}

/// What a handler is told when an event (or a check that never reported) goes stale: as Sensu
/// Go does when a check's ttl runs out, a WARNING whose output says since when nothing came.
fn stale_event(cached: &CachedEvent, check: &Check, since: i64, why: &str) -> CachedEvent {
    let mut stale = cached.clone();
    stale.event.status = Status::Warning;
    stale.summary = format!(
        "no result within its ttl of {} since {}: {why}",
        mdd_core::format_duration(check.effective_ttl()),
        crate::view::timestamp(since)
    );
    stale.long_output.clear();
    stale.perfdata.clear();
    stale
}

/// Once a second: events that have gone stale, and checks that never reported and are now
/// overdue, are looked at as a change of their own (a stale event has no result to announce
/// it); a never-reported check that now reports, or is no longer overdue, is resolved.
fn watch_stale(shared: &Shared, told: &mut Told, jobs: &mut Vec<Job>) {
    let checks = shared.checks();
    if checks.spec.handlers.is_empty() {
        return;
    }
    let clock = shared.clock();
    let mut looked_at: Vec<(Notice, i64, String)> = Vec::new();
    let mut resolved_absent: Vec<OpenKey> = Vec::new();
    {
        let events = shared.events_snapshot();
        let mut resolver = StateResolver::new(&checks, &events, clock);
        let agents = crate::checks::AgentSubscriptions::of(shared);
        for check in checks.checks() {
            if !checks.spec.handlers.iter().any(|h| h.applies_to(check)) {
                continue;
            }
            let mine: Vec<&CachedEvent> = events
                .range((check.name.clone(), String::new())..)
                .take_while(|((name, _), _)| *name == check.name)
                .map(|(_, e)| &**e)
                .collect();
            if mine.is_empty() {
                let resolved = resolver.absent(check);
                if resolved.state != State::Stale {
                    continue;
                }
                let entity = absent_entity(shared);
                let placeholder = CachedEvent::new(
                    mdd_core::event::Event::new(
                        &check.name,
                        entity,
                        &mdd_core::event::Observation {
                            result_id: "",
                            status: Status::Warning,
                            executed_at: resolved.since,
                        },
                    ),
                    &mdd_storage::StoredResult {
                        id: String::new(),
                        check: check.name.clone(),
                        entity: entity.to_string(),
                        status: Status::Warning,
                        summary: String::new(),
                        long_output: String::new(),
                        perfdata: Vec::new(),
                        duration_ms: 0.0,
                        exit_code: None,
                        executed_at: resolved.since,
                        received_at: resolved.since,
                        output: String::new(),
                    },
                );
                looked_at.push((
                    Notice {
                        event: placeholder,
                        previous_status: None,
                        previous_flapping: false,
                        version: 0,
                    },
                    resolved.since,
                    format!("it never reported ({})", agents.why_no_result(check)),
                ));
                continue;
            }
            for cached in mine {
                let resolved = resolver.resolve(cached, Some(check));
                if resolved.state != State::Stale {
                    continue;
                }
                looked_at.push((
                    Notice {
                        event: cached.clone(),
                        previous_status: Some(cached.event.status),
                        previous_flapping: cached.event.flapping,
                        version: 0,
                    },
                    resolved.since,
                    format!(
                        "the last result was at {}",
                        crate::view::timestamp(cached.event.executed_at)
                    ),
                ));
            }
        }
        for (handler, check, entity) in told.open.keys() {
            if !is_absent_record(shared, &events, check, entity) {
                continue;
            }
            let still = checks.get(check).is_some_and(|c| {
                let has_events = events
                    .range((c.name.clone(), String::new())..)
                    .next()
                    .is_some_and(|((name, _), _)| *name == c.name);
                !has_events && resolver.absent(c).state == State::Stale
            });
            if !still {
                resolved_absent.push((handler.clone(), check.clone(), entity.clone()));
            }
        }
    }
    for (notice, since, why) in looked_at {
        let Some(check) = checks.get(&notice.event.event.check) else {
            continue;
        };
        let stale = stale_event(&notice.event, check, since, &why);
        decide_with(
            shared,
            &Notice {
                event: stale,
                previous_status: notice.previous_status,
                previous_flapping: notice.previous_flapping,
                version: 0,
            },
            State::Stale,
            told,
            jobs,
        );
    }
    for key in resolved_absent {
        let Some(handler_index) = checks.spec.handlers.iter().position(|h| h.name == key.0) else {
            continue;
        };
        let Some(check) = checks.get(&key.1) else {
            continue;
        };
        let before = told.open.remove(&key);
        told.put(key.clone(), before, None);
        let mut event = mdd_core::event::Event::new(
            &key.1,
            &key.2,
            &mdd_core::event::Observation {
                result_id: "",
                status: Status::Ok,
                executed_at: clock.now,
            },
        );
        event.last_ok = Some(clock.now);
        let cached = CachedEvent {
            event,
            summary: "it reports now, or is no longer expected to".to_string(),
            long_output: String::new(),
            perfdata: Vec::new(),
            duration_ms: 0.0,
            output: String::new(),
            fresh_since: None,
            version: 0,
        };
        // The incident record it resolves is the same on every server.
        let cause = before.map_or(0, |open| open.notified_at).to_string();
        let id = notification_id("resolution", State::Passing, &key.1, &key.2, &cause);
        jobs.push(Job {
            body: sensu_event(shared, &cached, check, State::Passing, "resolution", &id).into(),
            id,
            checks: Arc::clone(&checks),
            handler_index,
            kind: "resolution",
            check: key.1.clone(),
            entity: key.2.clone(),
        });
    }
}

/// Whether the check has not been green yet in a deployment that is not done: red is expected
/// there, not an incident.
fn expected_red(shared: &Shared, check: &Check) -> bool {
    let checks = shared.checks();
    let tracks = shared.deployments_read();
    checks
        .spec
        .deployments
        .iter()
        .filter(|d| check.matches_labels(&d.selector))
        .any(|d| {
            // A deployment the tracker has not looked at yet (applied less than a second ago)
            // has just begun: nothing in it has been green in it.
            tracks.get(&d.name).is_none_or(|t| {
                t.done_at.is_none()
                    && t.checks
                        .get(&check.name)
                        .is_none_or(|c| c.first_green_at.is_none())
            })
        })
}

fn silenced(shared: &Shared, check: &str, entity: &str, now: i64) -> bool {
    let checks = shared.checks();
    let target = crate::silences::target(&checks, check, entity);
    shared
        .silences_read()
        .iter()
        .any(|s| s.is_active(now) && s.matches(&target))
}

/// Whether a notice is about a version of its event older than (or the same as) one decided
/// before; otherwise it becomes the newest decided. Notices without a version (SQLite) are
/// always news.
fn older_news(decided: &mut HashMap<(String, String), i64>, notice: &Notice) -> bool {
    if notice.version <= 0 {
        return false;
    }
    let key = (
        notice.event.event.check.clone(),
        notice.event.event.entity.clone(),
    );
    match decided.get_mut(&key) {
        Some(newest) if *newest >= notice.version => true,
        Some(newest) => {
            *newest = notice.version;
            false
        }
        None => {
            decided.insert(key, notice.version);
            false
        }
    }
}

fn decide(shared: &Shared, notice: &Notice, told: &mut Told, jobs: &mut Vec<Job>) {
    if older_news(&mut told.decided, notice) {
        tracing::debug!(
            "a notice of {}/{} came after a newer one: not decided",
            notice.event.event.check,
            notice.event.event.entity
        );
        return;
    }
    decide_one(shared, notice, told, jobs);
    // A check passing again unblocks what depends on it: what still fails there is now a root
    // cause of its own, and is looked at as such.
    if notice.event.event.status != Status::Ok {
        return;
    }
    let checks = shared.checks();
    let dependents: Vec<CachedEvent> = {
        let events = shared.events_read();
        checks
            .checks()
            .iter()
            .filter(|c| c.depends_on.contains(&notice.event.event.check))
            .flat_map(|c| {
                events
                    .range((c.name.clone(), String::new())..)
                    .take_while(|((name, _), _)| *name == c.name)
                    .map(|(_, e)| CachedEvent::clone(e))
                    .collect::<Vec<_>>()
            })
            .filter(|e| e.event.status != Status::Ok)
            .collect()
    };
    for event in dependents {
        let status = event.event.status;
        let flapping = event.event.flapping;
        decide_one(
            shared,
            &Notice {
                event,
                previous_status: Some(status),
                previous_flapping: flapping,
                version: 0,
            },
            told,
            jobs,
        );
    }
}

fn decide_one(shared: &Shared, notice: &Notice, told: &mut Told, jobs: &mut Vec<Job>) {
    let checks = shared.checks();
    let Some(check) = checks.get(&notice.event.event.check) else {
        return;
    };
    let state = {
        let events = shared.events_read();
        let mut resolver = StateResolver::new(&checks, &events, shared.clock());
        resolver.state_of(&notice.event, Some(check)).0
    };
    decide_with(shared, notice, state, told, jobs);
}

/// Decides for every handler of the event's check, the event being in `state`.
fn decide_with(
    shared: &Shared,
    notice: &Notice,
    state: State,
    told: &mut Told,
    jobs: &mut Vec<Job>,
) {
    let checks = shared.checks();
    let event = &notice.event.event;
    let Some(check) = checks.get(&event.check) else {
        return;
    };
    let now = now_ms();
    // The body is the same for every handler told the same kind of thing: made once.
    let mut bodies: HashMap<&'static str, bytes::Bytes> = HashMap::new();
    let silenced_now = || silenced(shared, &event.check, &event.entity, now);
    let expected_red_now = || expected_red(shared, check);
    let seen = Seen {
        status: event.status,
        state,
        // Staleness is not counted in results: it notifies whatever the occurrences asked.
        occurrences: if state == State::Stale {
            u32::MAX
        } else {
            event.occurrences
        },
        flapping: event.flapping,
        previous_flapping: notice.previous_flapping,
        silenced: &silenced_now,
        expected_red: &expected_red_now,
    };
    for (handler_index, handler) in checks
        .spec
        .handlers
        .iter()
        .enumerate()
        .filter(|(_, h)| h.applies_to(check))
    {
        let key = (
            handler.name.clone(),
            event.check.clone(),
            event.entity.clone(),
        );
        let before = told.open.remove(&key);
        let mut slot = before;
        let kind = mdd_core::notification::decide(&handler.filter, &seen, &mut slot, now);
        told.put(key, before, slot);
        if let Some(kind) = kind {
            let kind = kind.as_str();
            // What caused it is the status and since when it holds, not the result that
            // happened to reach the threshold: whichever server decides it, from whichever
            // result, a decision about one incident carries one id.
            let cause = format!("{}@{}", event.status.exit_code(), event.status_since());
            let id = notification_id(kind, state, &event.check, &event.entity, &cause);
            jobs.push(Job {
                checks: Arc::clone(&checks),
                handler_index,
                kind,
                body: bodies
                    .entry(kind)
                    .or_insert_with(|| {
                        sensu_event(shared, &notice.event, check, state, kind, &id).into()
                    })
                    .clone(),
                id,
                check: event.check.clone(),
                entity: event.entity.clone(),
            });
        }
    }
}

/// Reminders for incidents still open, at most every `reminder` per handler.
fn remind(shared: &Shared, told: &mut Told, jobs: &mut Vec<Job>) {
    let now = now_ms();
    let checks = shared.checks();
    let events = shared.events_read();
    let mut gone = Vec::new();
    let mut reminded = Vec::new();
    for ((handler_name, check_name, entity), incident) in told.open.iter_mut() {
        let Some((handler_index, handler)) = checks
            .spec
            .handlers
            .iter()
            .enumerate()
            .find(|(_, h)| h.name == *handler_name)
        else {
            gone.push((handler_name.clone(), check_name.clone(), entity.clone()));
            continue;
        };
        if handler.filter.reminder.is_none() {
            continue;
        }
        let (Some(check), Some(cached)) = (
            checks.get(check_name),
            events.get(&(check_name.clone(), entity.clone())),
        ) else {
            continue;
        };
        if cached.event.status == Status::Ok || silenced(shared, check_name, entity, now) {
            continue;
        }
        if !mdd_core::notification::reminder_due(&handler.filter, incident, now) {
            continue;
        }
        reminded.push((
            (handler_name.clone(), check_name.clone(), entity.clone()),
            *incident,
        ));
        let state = StateResolver::new(&checks, &events, shared.clock_at(now))
            .state_of(cached, Some(check))
            .0;
        // Each reminder is a new message: a repeat of one is harmless.
        let cause = uuid::Uuid::now_v7().to_string();
        let id = notification_id("reminder", state, check_name, entity, &cause);
        jobs.push(Job {
            body: sensu_event(shared, cached, check, state, "reminder", &id).into(),
            id,
            checks: Arc::clone(&checks),
            handler_index,
            kind: "reminder",
            check: check_name.clone(),
            entity: entity.clone(),
        });
    }
    for key in gone {
        let before = told.open.remove(&key);
        told.put(key, before, None);
    }
    for (key, open) in reminded {
        told.store(key, Some(open));
    }
}

/// The event in the shape Sensu Go handlers read (its documented fields that mdd knows,
/// under the same names and types: top-level `id`, `timestamp`, `metadata`; `check` with
/// `status`, the whole `output`, `history`, `occurrences`, …; `entity` with `entity_class`,
/// `subscriptions`, `system`), plus what mdd knows besides under `mdd`.
fn sensu_event(
    shared: &Shared,
    cached: &CachedEvent,
    check: &Check,
    state: State,
    kind: &str,
    id: &str,
) -> String {
    let event = &cached.event;
    let now = now_ms();
    let secs = |ms: i64| ms.div_euclid(1000);
    let sensu_state = match (event.flapping, event.status) {
        (true, _) => "flapping",
        (false, Status::Ok) => "passing",
        (false, _) => "failing",
    };
    let agent = shared.keepalives().get(&event.entity).cloned();
    let entity = match &agent {
        Some(watch) => {
            let fact = |name: &str| {
                watch
                    .info
                    .facts
                    .get(name)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let addresses: Vec<serde_json::Value> = watch
                .info
                .facts
                .get("addresses")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            serde_json::json!({
                "entity_class": "agent",
                "metadata": { "name": event.entity, "namespace": "default", "labels": watch.info.labels },
                "subscriptions": watch.info.subscriptions,
                "last_seen": secs(watch.last),
                "deregister": watch.info.deregister,
                "user": "agent",
                "redact": [],
                "system": {
                    "hostname": fact("hostname"),
                    "os": fact("os"),
                    "arch": fact("arch"),
                    "platform": fact("os"),
                    "network": { "interfaces": [{ "name": "", "mac": "", "addresses": addresses }] },
                },
            })
        }
        None => serde_json::json!({
            "entity_class": "proxy",
            "metadata": { "name": event.entity, "namespace": "default", "labels": {} },
            "subscriptions": [format!("entity:{}", event.entity)],
            "last_seen": secs(event.executed_at),
            "deregister": false,
            "user": "",
            "redact": [],
            // A proxy entity is an endpoint, not a host mdd runs on: nothing is known of it.
            "system": {
                "hostname": "", "os": "", "arch": "", "platform": "",
                "network": { "interfaces": [] },
            },
        }),
    };
    let command = match &check.probe {
        mdd_core::Probe::Command(c) => c.argv.join(" "),
        probe => format!("mdd {} {}", probe.kind(), probe.target()),
    };
    let ttl = check.ttl.map_or(0, |t| t.as_secs());
    serde_json::json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "timestamp": secs(now),
        "metadata": { "namespace": "default" },
        "entity": entity,
        "check": {
            "metadata": { "name": event.check, "namespace": "default", "labels": check.labels },
            "command": command,
            "subscriptions": check.subscriptions,
            "proxy_entity_name": check.entity.clone().unwrap_or_default(),
            "publish": !check.is_push_only(),
            "round_robin": false,
            "stdin": false,
            "interval": check.interval.as_secs(),
            "timeout": check.timeout.as_secs(),
            "ttl": ttl,
            "handlers": check.handlers,
            "low_flap_threshold": check.flap.low,
            "high_flap_threshold": check.flap.high,
            "status": event.status.exit_code(),
            "output": cached.plugin_text(),
            "executed": secs(event.executed_at),
            "issued": secs(event.executed_at),
            "duration": cached.duration_ms / 1000.0,
            "history": event.history.iter().map(|h| serde_json::json!({
                "status": h.status.exit_code(),
                "executed": secs(h.executed_at),
            })).collect::<Vec<_>>(),
            "occurrences": event.occurrences,
            "occurrences_watermark": event.occurrences_watermark,
            "state": sensu_state,
            "total_state_change": event.total_state_change,
            "last_ok": event.last_ok.map_or(0, secs),
            "is_silenced": silenced(shared, &event.check, &event.entity, now),
            "processed_by": shared.config.entity,
            "output_metric_format": "nagios_perfdata",
            "check_hooks": null,
            "env_vars": null,
            "subdue": null,
        },
        "mdd": {
            "notification": kind,
            "notification_id": id,
            "state": state.as_str(),
            "owner": check.owner,
            "runbook": check.runbook,
            "description": check.description,
            "summary": cached.summary,
            "long_output": cached.long_output,
        },
    })
    .to_string()
}

/// One lane of a handler: delivers its jobs in order.
async fn deliver_all(
    shared: Arc<Shared>,
    http: reqwest::Client,
    mut jobs: mpsc::Receiver<Job>,
    persist: mpsc::Sender<Persist>,
    shutdown: CancellationToken,
) {
    let mut parsed: Option<(String, Result<reqwest::Url, String>)> = None;
    loop {
        let job = tokio::select! {
            _ = shutdown.cancelled() => return,
            job = jobs.recv() => match job { Some(job) => job, None => return },
        };
        let handler = job.handler();
        match &handler.kind {
            HandlerKind::Webhook {
                url,
                headers,
                secret_file,
            } => {
                // Parsed once per handler and lane, not per request.
                if parsed.as_ref().is_none_or(|(text, _)| text != url) {
                    parsed = Some((
                        url.clone(),
                        reqwest::Url::parse(url).map_err(|e| e.to_string()),
                    ));
                }
                let target = match parsed.as_ref().map(|(_, u)| u) {
                    Some(Ok(target)) => target.clone(),
                    Some(Err(e)) => {
                        let outcome = format!("error: bad url: {e}");
                        log(&shared, &job, 1, outcome, Instant::now(), String::new());
                        shared.metrics.delivered(&handler.name, "failed");
                        done(&persist, &job);
                        continue;
                    }
                    None => continue,
                };
                // Read at each notification, so a rotated secret is used from the next one;
                // never sent unsigned when it cannot be read.
                let key = match secret_file.as_deref().map(crate::signing::read_secret) {
                    None => None,
                    Some(Ok(key)) => Some(key),
                    Some(Err(e)) => {
                        let outcome = format!("error: secret_file: {e}");
                        log(&shared, &job, 1, outcome, Instant::now(), String::new());
                        shared.metrics.delivered(&handler.name, "failed");
                        done(&persist, &job);
                        continue;
                    }
                };
                let mut pause = FIRST_BACKOFF;
                for attempt in 1..=ATTEMPTS {
                    let started = Instant::now();
                    let mut request = http
                        .post(target.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .timeout(handler.timeout)
                        .body(job.body.clone());
                    for (name, value) in headers {
                        request = request.header(name.as_str(), value.as_str());
                    }
                    // Standard Webhooks: the id stays, the time is the attempt's.
                    let timestamp = now_ms() / 1000;
                    request = request
                        .header("webhook-id", job.id.as_str())
                        .header("webhook-timestamp", timestamp.to_string());
                    if let Some(key) = &key {
                        let signature = crate::signing::sign(key, &job.id, timestamp, &job.body);
                        request = request.header("webhook-signature", signature);
                    }
                    let outcome = match request.send().await {
                        Ok(mut response) => {
                            // Read what the receiver says (a little of it), so the connection
                            // can be used again rather than closed.
                            let mut read = 0;
                            while read < RESPONSE_READ {
                                match response.chunk().await {
                                    Ok(Some(chunk)) => read += chunk.len(),
                                    Ok(None) | Err(_) => break,
                                }
                            }
                            if response.status().is_success() {
                                "ok".to_string()
                            } else {
                                format!("http {}", response.status().as_u16())
                            }
                        }
                        Err(e) => format!("error: {}", mdd_probes::describe_error(&e)),
                    };
                    let ok = outcome == "ok";
                    log(&shared, &job, attempt, outcome, started, String::new());
                    if ok || attempt == ATTEMPTS {
                        let ended = if ok { "ok" } else { "failed" };
                        shared.metrics.delivered(&handler.name, ended);
                        done(&persist, &job);
                        break;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause *= 2;
                }
            }
            HandlerKind::Command { argv } => {
                let started = Instant::now();
                // A stop while it runs leaves it due: it runs again after the restart.
                let (outcome, output) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ran = run_command(argv, &job.body, handler.timeout) => ran,
                };
                let ended = if outcome == "ok" { "ok" } else { "failed" };
                log(&shared, &job, 1, outcome, started, output);
                shared.metrics.delivered(&handler.name, ended);
                done(&persist, &job);
            }
        }
    }
}

fn log(
    shared: &Shared,
    job: &Job,
    attempt: u32,
    outcome: String,
    started: Instant,
    output: String,
) {
    let at_ms = now_ms();
    shared.deliveries.record(
        &job.handler().name,
        Delivery {
            at: crate::view::timestamp(at_ms),
            at_ms,
            check: job.check.clone(),
            entity: job.entity.clone(),
            kind: job.kind.to_string(),
            attempt,
            outcome,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            output,
        },
    );
}

/// Runs a command handler through the same runner as plugins: no shell, its own process group,
/// the event on stdin, output capped, the whole group killed at the timeout.
async fn run_command(argv: &[String], body: &[u8], timeout: Duration) -> (String, String) {
    use mdd_probes::process::{self, Ended};
    let finished = process::run(process::Run {
        argv,
        stdin: Some(body),
        timeout,
        output_limit: OUTPUT_KEPT,
        spawn_inline: false,
    })
    .await;
    let mut text = String::from_utf8_lossy(&finished.stdout.bytes).into_owned();
    text.push_str(&String::from_utf8_lossy(&finished.stderr.bytes));
    text.truncate(text.floor_char_boundary(OUTPUT_KEPT));
    let outcome = match finished.ended {
        Ended::Exited(status) => match status.code() {
            Some(0) => "ok".to_string(),
            Some(code) => format!("exit {code}"),
            None => "error: killed by a signal".to_string(),
        },
        Ended::NotStarted(e) => {
            let program = argv.first().map_or("", String::as_str);
            format!("error: cannot start {program}: {e}")
        }
        Ended::TimedOut(why) | Ended::Lost(why) => format!("error: {why}"),
    };
    (outcome, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_older_than_one_decided_is_not_news() {
        let notice = |entity: &str, version: i64| {
            let observation = mdd_core::event::Observation {
                result_id: "r1",
                status: Status::Critical,
                executed_at: 1,
            };
            let result = mdd_storage::StoredResult {
                id: "r1".into(),
                check: "dns".into(),
                entity: entity.into(),
                status: Status::Critical,
                summary: String::new(),
                long_output: String::new(),
                perfdata: Vec::new(),
                duration_ms: 0.0,
                exit_code: None,
                executed_at: 1,
                received_at: 1,
                output: String::new(),
            };
            Notice {
                event: CachedEvent::new(
                    mdd_core::event::Event::new("dns", entity, &observation),
                    &result,
                ),
                previous_status: None,
                previous_flapping: false,
                version,
            }
        };
        let mut decided = HashMap::new();
        assert!(!older_news(&mut decided, &notice("a", 5)));
        // Through the outbox after the holder's own newer fold, or the same one again.
        assert!(older_news(&mut decided, &notice("a", 4)));
        assert!(older_news(&mut decided, &notice("a", 5)));
        assert!(!older_news(&mut decided, &notice("a", 6)));
        // Another event's versions are its own; no version (SQLite) is always news.
        assert!(!older_news(&mut decided, &notice("b", 1)));
        assert!(!older_news(&mut decided, &notice("a", 0)));
        assert!(!older_news(&mut decided, &notice("a", 0)));
    }

    #[test]
    fn a_notification_id_is_the_same_for_the_same_decision_only() {
        let id = |kind, state, check, cause| notification_id(kind, state, check, "e1", cause);
        let first = id("incident", State::Failing, "dns", "r7");
        assert_eq!(first, id("incident", State::Failing, "dns", "r7"));
        assert!(first.starts_with("msg_") && first.len() == 36, "{first}");
        for other in [
            id("resolution", State::Failing, "dns", "r7"),
            id("incident", State::Stale, "dns", "r7"),
            id("incident", State::Failing, "ldap", "r7"),
            id("incident", State::Failing, "dns", "r8"),
        ] {
            assert_ne!(first, other);
        }
    }

    fn key(check: &str) -> OpenKey {
        ("pager".into(), check.into(), "server".into())
    }

    fn open(status: Status) -> Option<Open> {
        Some(Open {
            status,
            notified_at: 1,
        })
    }

    fn delivery(n: usize) -> Delivery {
        Delivery {
            at: String::new(),
            at_ms: n as i64,
            check: "dns".into(),
            entity: "server".into(),
            kind: "incident".into(),
            attempt: 1,
            outcome: "ok".into(),
            latency_ms: 1.0,
            output: String::new(),
        }
    }

    async fn store() -> (tempfile::TempDir, mdd_storage::Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = mdd_storage::Store::open(dir.path()).await.expect("open");
        (dir, store)
    }

    #[tokio::test]
    async fn a_batch_keeps_the_last_word_on_each_incident() {
        let (_dir, store) = store().await;
        let mut stored = std::collections::HashSet::new();
        let mut batch = Batch::default();
        batch.add(Persist::Notified(key("dns"), open(Status::Warning)));
        batch.add(Persist::Notified(key("dns"), open(Status::Critical)));
        // Told and resolved within one batch: never written at all.
        batch.add(Persist::Notified(key("ldap"), open(Status::Critical)));
        batch.add(Persist::Notified(key("ldap"), None));
        batch.write(&store, &mut stored).await;
        let rows = store.notified().await.expect("read");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].check.as_str(), rows[0].status),
            ("dns", Status::Critical)
        );
        assert_eq!(stored, [key("dns")].into_iter().collect());

        let mut batch = Batch::default();
        batch.add(Persist::Notified(key("dns"), None));
        batch.write(&store, &mut stored).await;
        assert!(store.notified().await.expect("read").is_empty());
        assert!(stored.is_empty());
    }

    #[tokio::test]
    async fn a_batch_writes_at_most_the_log_length_per_handler() {
        let (_dir, store) = store().await;
        let mut batch = Batch::default();
        for n in 0..LOG_LEN + 20 {
            batch.add(Persist::Delivery("pager".into(), delivery(n)));
        }
        batch.write(&store, &mut Default::default()).await;
        let kept = store.deliveries(LOG_LEN * 2).await.expect("read");
        assert_eq!(kept.len(), LOG_LEN);
        assert_eq!(kept.first().map(|d| d.at), Some(20), "the newest are kept");
        assert_eq!(kept.last().map(|d| d.at), Some((LOG_LEN + 19) as i64));
    }

    #[test]
    fn an_event_always_takes_the_same_lane_and_events_spread() {
        assert_eq!(lane_of("dns", "a"), lane_of("dns", "a"));
        let lanes: std::collections::HashSet<usize> = (0..200)
            .map(|n| lane_of("dns", &format!("e-{n}")))
            .collect();
        assert_eq!(lanes.len(), LANES, "200 events use every lane");
    }
}
