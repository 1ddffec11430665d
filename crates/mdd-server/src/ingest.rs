//! Result ingestion: one writer task, group commits, the event state machine, then the ack.
//!
//! Every producer (the HTTP API, the server's own scheduler) sends a job and waits for its
//! reply. The writer takes every job waiting at that moment as one group: it drops results
//! already stored (ids are chosen by producers, so replays are harmless), applies the rest to
//! their events in order, writes results and entities in one transaction, and only when that
//! transaction is on disk updates the in-memory events and answers. A failed commit answers
//! every job of the group with the error and changes nothing.
//!
//! Events are derived from results, so they are written as a checkpoint once a second rather
//! than with every group; a start after a crash replays the results after the checkpoint. The
//! checkpoint is taken between groups (so its sequence number is exactly what the events
//! include) and written beside the writer: a checkpoint of 10,000 events never holds up an ack.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use mdd_core::Status;
use mdd_core::event::{Event, Observation, Outage};
use mdd_core::incident::IncidentChange;
use mdd_storage::{Commit, EventRow, StoreError, StoredResult};

use tokio::sync::{mpsc, oneshot};

use crate::{CachedEvent, EventKey, Shared};

/// The most results one group commit takes; more waiting jobs go into the next group.
const MAX_GROUP: usize = 50_000;

pub struct IngestJob {
    pub results: Vec<StoredResult>,
    pub reply: oneshot::Sender<Result<IngestOutcome, Arc<StoreError>>>,
}

/// What the writer is asked to do, in order.
pub enum WriterJob {
    Results(IngestJob),
    /// Drops an entity's events, from memory and the store, such that no replay brings them
    /// back: done by the writer, between groups, after a checkpoint of everything before.
    ForgetEntity {
        entity: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// Incident changes recorded per transaction: small enough that a group commit waiting for
/// SQLite's write lock waits little.
const INCIDENTS_PER_TRANSACTION: usize = 500;

/// What a checkpoint took from the writer, given back when it could not be written.
struct Unwritten {
    dirty: HashSet<EventKey>,
    incidents: Vec<IncidentChange>,
}

type Checkpointing = tokio::task::JoinHandle<Result<(), Unwritten>>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestOutcome {
    /// Results stored by this request.
    pub stored: usize,
    /// Results already stored before (a replay) or repeated within the request.
    pub duplicates: usize,
}

/// Runs until `drain` is cancelled and every job sent before that has been answered.
pub async fn run_writer(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<WriterJob>,
    drain: tokio_util::sync::CancellationToken,
) {
    let mut closing = false;
    let mut dirty: HashSet<EventKey> = HashSet::new();
    // Incident changes wait for the checkpoint like events do: a crash loses none of them,
    // because the replay of the results after the checkpoint makes them again.
    let mut incidents: Vec<IncidentChange> = Vec::new();
    let mut checkpointing: Option<Checkpointing> = None;
    let mut tick = tokio::time::interval(shared.config.event_checkpoint_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alive = tokio::time::interval(ALIVE_EVERY);
    alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A job taken while gathering a group that does not belong in it.
    let mut held: Option<WriterJob> = None;
    loop {
        let next = match held.take() {
            Some(job) => Some(job),
            None => tokio::select! {
                job = jobs.recv() => job,
                _ = tick.tick() => {
                    // One checkpoint at a time: a slow one makes the next wait, and the
                    // events it would have written stay dirty until then.
                    if checkpointing.as_ref().is_none_or(|task| task.is_finished()) {
                        finish(&mut checkpointing, &mut dirty, &mut incidents).await;
                        checkpointing = begin_checkpoint(&shared, &mut dirty, &mut incidents).await;
                    }
                    continue;
                }
                _ = alive.tick() => {
                    mark_alive(&shared).await;
                    continue;
                }
                _ = drain.cancelled(), if !closing => {
                    // No new jobs from now on; the ones already queued are still written.
                    jobs.close();
                    closing = true;
                    continue;
                }
            },
        };
        let first = match next {
            None => break,
            Some(WriterJob::ForgetEntity { entity, reply }) => {
                finish(&mut checkpointing, &mut dirty, &mut incidents).await;
                let done = forget_entity(&shared, &entity, &mut dirty, &mut incidents).await;
                let _ = reply.send(done);
                continue;
            }
            Some(WriterJob::Results(job)) => job,
        };
        let mut size = first.results.len();
        let mut group = vec![first];
        while size < MAX_GROUP {
            match jobs.try_recv() {
                Ok(WriterJob::Results(job)) => {
                    size += job.results.len();
                    group.push(job);
                }
                Ok(other) => {
                    held = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        write_group(&shared, group, &mut dirty, &mut incidents).await;
    }
    finish(&mut checkpointing, &mut dirty, &mut incidents).await;
    if let Some(last) = begin_checkpoint(&shared, &mut dirty, &mut incidents).await {
        checkpointing = Some(last);
        finish(&mut checkpointing, &mut dirty, &mut incidents).await;
    }
    mark_alive(&shared).await;
    tracing::debug!("ingestion writer drained and stopped");
}

/// Waits for the checkpoint being written, if any, and takes back what it could not write.
async fn finish(
    checkpointing: &mut Option<Checkpointing>,
    dirty: &mut HashSet<EventKey>,
    incidents: &mut Vec<IncidentChange>,
) {
    let Some(task) = checkpointing.take() else {
        return;
    };
    let unwritten = match task.await {
        Ok(Ok(())) => return,
        Ok(Err(unwritten)) => unwritten,
        Err(e) => {
            // Its keys are lost with it; the next start replays from the last checkpoint
            // written, so nothing acknowledged is lost, only replayed.
            tracing::error!("the event checkpoint task failed: {e}");
            return;
        }
    };
    unwritten.give_back(dirty, incidents);
}

impl Unwritten {
    /// Makes what was not written dirty again; its incident changes happened before the ones
    /// gathered since, so they go first.
    fn give_back(self, dirty: &mut HashSet<EventKey>, incidents: &mut Vec<IncidentChange>) {
        dirty.extend(self.dirty);
        let later = std::mem::replace(incidents, self.incidents);
        incidents.extend(later);
    }
}

/// Takes what the next checkpoint writes (the dirty events as they are now, the incident
/// changes so far, and the sequence number of the newest stored result, which is exactly what
/// those events include because the writer is between groups) and writes it in a task of its
/// own. Nothing to write, or the sequence number unreadable: no task, nothing taken.
async fn begin_checkpoint(
    shared: &Arc<Shared>,
    dirty: &mut HashSet<EventKey>,
    incidents: &mut Vec<IncidentChange>,
) -> Option<Checkpointing> {
    if dirty.is_empty() && incidents.is_empty() {
        return None;
    }
    let taken = match take_checkpoint(shared, dirty, incidents).await {
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!("cannot write the event checkpoint (will retry): {e}");
            return None;
        }
    };
    let shared = Arc::clone(shared);
    Some(tokio::spawn(async move {
        write_checkpoint(&shared, taken)
            .await
            .map_err(|(unwritten, e)| {
                tracing::warn!("cannot write the event checkpoint (will retry): {e}");
                unwritten
            })
    }))
}

/// One checkpoint's worth, taken from the writer.
struct Taken {
    keys: HashSet<EventKey>,
    changes: Vec<IncidentChange>,
    events: Vec<Arc<CachedEvent>>,
    through: i64,
}

async fn take_checkpoint(
    shared: &Shared,
    dirty: &mut HashSet<EventKey>,
    incidents: &mut Vec<IncidentChange>,
) -> Result<Taken, StoreError> {
    let through = shared.store.newest_result_seq().await?;
    let keys = std::mem::take(dirty);
    let events: Vec<Arc<CachedEvent>> = {
        let cache = shared.events_read();
        keys.iter()
            .filter_map(|key| cache.get(key).cloned())
            .collect()
    };
    Ok(Taken {
        keys,
        changes: std::mem::take(incidents),
        events,
        through,
    })
}

async fn write_checkpoint(shared: &Shared, taken: Taken) -> Result<(), (Unwritten, StoreError)> {
    let Taken {
        keys,
        changes,
        events,
        through,
    } = taken;
    // Incidents first: if the events' checkpoint then fails, the replay makes them again,
    // which is harmless (recording is idempotent).
    for (n, chunk) in changes.chunks(INCIDENTS_PER_TRANSACTION).enumerate() {
        if let Err(e) = shared.store.record_incidents(chunk).await {
            let unwritten = Unwritten {
                dirty: keys,
                incidents: changes[n * INCIDENTS_PER_TRANSACTION..].to_vec(),
            };
            return Err((unwritten, e));
        }
    }
    if events.is_empty() {
        return Ok(());
    }
    // Encoding 10,000 events takes a while: off the async workers.
    let rows = tokio::task::spawn_blocking(move || {
        events
            .iter()
            .filter_map(|cached| cached.to_row())
            .collect::<Vec<EventRow>>()
    })
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        // A bug, not a condition: the task's failure is logged by `finish`, and the events
        // it would have written are replayed by the next start.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let written = shared.store.checkpoint_events_through(&rows, through).await;
    written.map_err(|e| {
        let unwritten = Unwritten {
            dirty: keys,
            incidents: Vec::new(),
        };
        (unwritten, e)
    })
}

/// Checkpoints everything first, so that the results already stored for `entity` are behind
/// the checkpoint and no replay makes its events again; then drops them.
async fn forget_entity(
    shared: &Arc<Shared>,
    entity: &str,
    dirty: &mut HashSet<EventKey>,
    incidents: &mut Vec<IncidentChange>,
) -> Result<(), StoreError> {
    let taken = take_checkpoint(shared, dirty, incidents).await?;
    if let Err((unwritten, e)) = write_checkpoint(shared, taken).await {
        unwritten.give_back(dirty, incidents);
        return Err(e);
    }
    shared.store.delete_entity(entity).await?;
    shared.forget_events(|(_, e)| e == entity);
    dirty.retain(|(_, e)| e != entity);
    Ok(())
}

/// How often the server records that it is up: the next start counts the time after the last
/// record as an outage, which does not count against checks' ttls.
const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

async fn mark_alive(shared: &Shared) {
    if let Err(e) = shared.store.mark_alive(crate::now_ms()).await {
        tracing::warn!("cannot record that the server is up: {e}");
    }
}

/// Applies results, in order, to copies of their events (taken from `cache` or made new).
/// Ingestion and the replay at start share it, so both give the same events.
/// Also returns the incidents opened and closed and the flaps started on the way, in order.
pub fn apply_results(
    cache: &crate::Events,
    results: &[&StoredResult],
    checks: &crate::checks::CheckSet,
    outage: Outage,
) -> (HashMap<EventKey, CachedEvent>, Vec<IncidentChange>) {
    let mut staged: HashMap<EventKey, CachedEvent> = HashMap::new();
    let mut changes = Vec::new();
    for result in results {
        let key = (result.check.clone(), result.entity.clone());
        let flap = checks
            .get(&result.check)
            .map(|c| c.flap)
            .unwrap_or_default();
        let observation = Observation {
            result_id: &result.id,
            status: result.status,
            executed_at: result.executed_at,
        };
        let mut created = false;
        let cached = match staged.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match cache.get(e.key()) {
                Some(existing) => e.insert(CachedEvent::clone(existing)),
                None => {
                    created = true;
                    e.insert(CachedEvent::new(
                        Event::new(&result.check, &result.entity, &observation),
                        result,
                    ))
                }
            },
        };
        let (check, entity, at) = (&result.check, &result.entity, result.executed_at);
        let opened = || IncidentChange::Opened {
            check: check.clone(),
            entity: entity.clone(),
            at,
        };
        if created {
            if result.status != Status::Ok {
                changes.push(opened());
            }
            continue;
        }
        if cached.event.last_result_id == result.id {
            continue;
        }
        let before = cached.event.status;
        let previous_at = cached.event.executed_at;
        let change = cached
            .event
            .apply_at(&observation, flap, result.received_at);
        if change == mdd_core::event::Change::OutOfOrder {
            continue;
        }
        cached.take_output(result);
        // It had gone stale before this result: whatever it says holds from now.
        if let Some(config) = checks.get(&result.check)
            && outage.stale_at(previous_at, config.effective_ttl()) < result.executed_at
        {
            cached.fresh_since = Some(result.executed_at);
        }
        match (before == Status::Ok, result.status == Status::Ok) {
            (true, false) => changes.push(opened()),
            (false, true) => changes.push(IncidentChange::Closed {
                check: check.clone(),
                entity: entity.clone(),
                at,
            }),
            _ => {}
        }
        if change == mdd_core::event::Change::FlappingStarted {
            changes.push(IncidentChange::Flapped {
                check: check.clone(),
                entity: entity.clone(),
                at,
            });
        }
    }
    (staged, changes)
}

async fn write_group(
    shared: &Shared,
    group: Vec<IngestJob>,
    dirty: &mut HashSet<EventKey>,
    pending_incidents: &mut Vec<IncidentChange>,
) {
    let started = Instant::now();
    // Each id once, in arrival order; the store reports which of them were new.
    let mut seen: HashSet<&str> = HashSet::new();
    let mut candidates: Vec<&StoredResult> = Vec::new();
    let mut entities: HashMap<&str, i64> = HashMap::new();
    for result in group.iter().flat_map(|job| &job.results) {
        if seen.insert(&result.id) {
            candidates.push(result);
            let seen_at = entities
                .entry(result.entity.as_str())
                .or_insert(result.received_at);
            *seen_at = (*seen_at).max(result.received_at);
        }
    }
    let entity_list: Vec<(&str, i64)> = entities.into_iter().collect();
    let checks = shared.checks();
    // Handlers hear about changes (and about the first results in a row of a failing event,
    // for occurrence thresholds); with no handlers in the spec this costs nothing.
    let watching = !checks.spec.handlers.is_empty();
    // Failing results in a row matter only up to the highest occurrences threshold.
    let counted = checks
        .spec
        .handlers
        .iter()
        .map(|h| h.filter.occurrences)
        .max()
        .unwrap_or(0)
        .min(crate::notify::OCCURRENCES_WATCHED);
    // Several servers on one database: the events move in the results' own transaction, from
    // the stored events (what every server folded before), and that is the truth. One server
    // on its own store: its memory is the truth, and events are checkpointed.
    let shared_store = shared.store.is_shared();
    // The server doing the once-only work decides notifications: its own folds' notices go
    // straight to its notifier, as on SQLite (decided against the events as they are now);
    // another server's go into the store's outbox, which the holder takes them from.
    let outbox = shared_store && !shared.holds_once_only_work();
    let (inserted, staged, base) = if shared_store {
        match fold_in_store(
            shared,
            &candidates,
            &entity_list,
            &checks,
            (watching && outbox).then_some(counted),
        )
        .await
        {
            Ok(folded) => folded,
            Err(error) => return fail(shared, group, error),
        }
    } else {
        let inserted = match shared
            .store
            .commit(Commit {
                results: &candidates,
                entities: &entity_list,
            })
            .await
        {
            Ok(inserted) => inserted,
            Err(error) => return fail(shared, group, error),
        };
        // Only now, with the results on disk, do the events move.
        let fresh: Vec<&StoredResult> = candidates
            .iter()
            .copied()
            .filter(|r| inserted.contains(&r.id))
            .collect();
        let (staged, incidents) = {
            let cache = shared.events_read();
            apply_results(&cache, &fresh, &checks, shared.outage)
        };
        pending_incidents.extend(incidents);
        (inserted, staged, None)
    };
    let fresh: Vec<&StoredResult> = candidates
        .into_iter()
        .filter(|r| inserted.contains(&r.id))
        .collect();
    let mut notices = Vec::new();
    // Pages show outputs too: any stored result changes what they show.
    if !staged.is_empty() {
        shared.changed();
    }
    {
        let mut cache = shared.events_write();
        for (key, cached) in staged {
            let notice = watching.then(|| cached.clone());
            let previous = match &base {
                // What the fold started from; memory may already hold a newer version
                // (another server's, read by the change feed), which stays.
                Some(base) => {
                    let previous = base.get(&key).cloned();
                    if cache
                        .get(&key)
                        .is_none_or(|held| held.version < cached.version)
                    {
                        cache.insert(key, Arc::new(cached));
                    }
                    previous
                }
                None => {
                    dirty.insert(key.clone());
                    cache.insert(key, Arc::new(cached))
                }
            };
            // Or the fold left its notices in the outbox.
            if let Some(event) = notice.filter(|_| !outbox)
                && let Some(notice) = notice_of(previous.as_deref(), event, counted)
            {
                notices.push(notice);
            }
        }
    }
    for notice in notices {
        // Never wait for the notifier: a notice it cannot take is dropped, and said.
        if shared.notices.try_send(notice).is_err() {
            shared.metrics.notices_dropped.inc();
            tracing::warn!("the notification queue is full: a notice was dropped");
        }
    }
    shared.metrics.record_group(&fresh, started.elapsed());
    tracing::debug!(stored = fresh.len(), jobs = group.len(), "group committed");

    let mut counted: HashSet<&str> = HashSet::with_capacity(inserted.len());
    let outcomes: Vec<IngestOutcome> = group
        .iter()
        .map(|job| {
            let mut outcome = IngestOutcome::default();
            for result in &job.results {
                if inserted.contains(&result.id) && counted.insert(&result.id) {
                    outcome.stored += 1;
                } else {
                    outcome.duplicates += 1;
                }
            }
            outcome
        })
        .collect();
    for (job, outcome) in group.into_iter().zip(outcomes) {
        let _ = job.reply.send(Ok(outcome));
    }
}

/// What handlers need to hear of an event that moved from `previous`, if anything: a change
/// (back from stale is one too, even with the same status: handlers that were told it went
/// stale hear that it reports again), or one of the first failing results in a row, up to the
/// highest occurrences threshold `counted`.
fn notice_of(
    previous: Option<&CachedEvent>,
    event: CachedEvent,
    counted: u32,
) -> Option<crate::notify::Notice> {
    let changed = previous.is_none_or(|p| {
        p.event.status != event.event.status
            || p.event.flapping != event.event.flapping
            || p.fresh_since != event.fresh_since
    });
    let counting = event.event.status != Status::Ok
        && event.event.occurrences > 1
        && event.event.occurrences <= counted;
    (changed || counting).then(|| crate::notify::Notice {
        previous_status: previous.map(|p| p.event.status),
        previous_flapping: previous.is_some_and(|p| p.event.flapping),
        version: event.version,
        event,
    })
}

/// Stores a group and folds it into the stored events in one transaction (see
/// `Store::commit_folding`): the new ids, the events as written (with their versions), and the
/// stored events they were folded from.
#[allow(clippy::type_complexity)]
async fn fold_in_store(
    shared: &Shared,
    candidates: &[&StoredResult],
    entities: &[(&str, i64)],
    checks: &crate::checks::CheckSet,
    notices_counted: Option<u32>,
) -> Result<
    (
        HashSet<String>,
        HashMap<EventKey, CachedEvent>,
        Option<crate::Events>,
    ),
    StoreError,
> {
    let outage = shared.outage;
    let folded = shared
        .store
        .commit_folding(
            Commit {
                results: candidates,
                entities,
            },
            // The events this server wrote last (or followed) are in memory at the version
            // stored: those are not read back and decoded.
            |check, entity| {
                shared
                    .events_read()
                    .get(&(check.to_string(), entity.to_string()))
                    .map(|cached| cached.version)
            },
            |inserted, stored| {
                let mut base = crate::Events::new();
                let events = shared.events_read();
                for event in stored {
                    let key = (event.row.check, event.row.entity);
                    if event.known {
                        // Memory never moves past a version the store holds locked.
                        let cached = events
                            .get(&key)
                            .filter(|cached| cached.version == event.version)
                            .ok_or_else(|| {
                                format!(
                                    "event {}/{} moved in memory while it was being folded",
                                    key.0, key.1
                                )
                            })?;
                        base.insert(key, Arc::clone(cached));
                        continue;
                    }
                    let mut cached: CachedEvent = serde_json::from_str(&event.row.body)
                        .map_err(|e| format!("event {}/{}: {e}", key.0, key.1))?;
                    cached.version = event.version;
                    base.insert(key, Arc::new(cached));
                }
                drop(events);
                let fresh: Vec<&StoredResult> = candidates
                    .iter()
                    .copied()
                    .filter(|r| inserted.contains(&r.id))
                    .collect();
                let (staged, incidents) = apply_results(&base, &fresh, checks, outage);
                let events = staged.values().filter_map(CachedEvent::to_row).collect();
                let mut notices = Vec::new();
                if let Some(counted) = notices_counted {
                    for (key, event) in &staged {
                        let previous = base.get(key).map(|p| &**p);
                        if let Some(mut notice) = notice_of(previous, event.clone(), counted) {
                            // Written one version up from the one it was folded from (the row
                            // is locked: nobody else can move it meanwhile).
                            notice.version = event.version + 1;
                            notices.push(
                                serde_json::to_string(&notice)
                                    .map_err(|e| format!("cannot encode a notice: {e}"))?,
                            );
                        }
                    }
                }
                Ok(mdd_storage::FoldOutput {
                    events,
                    incidents,
                    notices,
                    value: (staged, base),
                })
            },
        )
        .await?;
    let (mut staged, base) = folded.value;
    for (key, cached) in staged.iter_mut() {
        if let Some(version) = folded.versions.get(key) {
            cached.version = *version;
        }
    }
    Ok((folded.inserted, staged, Some(base)))
}

fn fail(shared: &Shared, group: Vec<IngestJob>, error: StoreError) {
    tracing::error!("cannot store results: {error}");
    shared.metrics.ingest_failures.inc();
    if shared.store.is_shared() {
        // The fold may have committed before the error: its events are read back.
        shared.read_again(
            group
                .iter()
                .flat_map(|job| &job.results)
                .map(|r| (r.check.clone(), r.entity.clone())),
        );
    }
    let error = Arc::new(error);
    for job in group {
        let _ = job.reply.send(Err(Arc::clone(&error)));
    }
}
