//! Notifications: decides which event changes each handler hears about, and delivers them
//! (webhooks with bounded retries, commands with the event on stdin), without ever holding up
//! ingestion: the writer hands notices over with `try_send`, and each handler has its own
//! bounded queue and worker, so a slow or dead receiver only delays its own deliveries.
//!
//! Rules, per handler that applies to the check: an incident (not OK after OK) is notified once
//! the filter's states and occurrences allow it, unless the event is silenced, blocked behind a
//! failing dependency (its root cause is notified instead), or expected to be red (the check
//! has not been green yet in a deployment that is not done); a resolution is notified only for
//! incidents that were; a change of status while failing is notified again; flapping is
//! notified when it starts and ends, not on every change; reminders repeat while failing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mdd_core::notification::{Open, Seen};
use mdd_core::spec::{Check, Handler, HandlerKind};
use mdd_core::{State, Status};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::view::StateResolver;
use crate::{CachedEvent, Shared, now_ms};

/// Notices waiting for the notifier; past this, new ones are dropped (and counted) rather than
/// slowing ingestion.
pub const NOTICE_QUEUE: usize = 10_000;
/// Deliveries waiting per handler.
const DELIVERY_QUEUE: usize = 1_000;
/// Attempts per webhook delivery, and the first pause between them (doubling).
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Deliveries kept per handler for the log.
const LOG_LEN: usize = 500;
/// How many results in a row of a failing event are looked at for occurrence thresholds.
pub const OCCURRENCES_WATCHED: u32 = 100;
/// The most output of a command handler kept in the log.
const OUTPUT_KEPT: usize = 4096;

/// An event that changed, as the writer saw it.
#[derive(Debug, Clone)]
pub struct Notice {
    pub event: CachedEvent,
    pub previous_status: Option<Status>,
    pub previous_flapping: bool,
}

/// One attempt to deliver, for the log.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub at: String,
    pub check: String,
    pub entity: String,
    /// incident, resolution, changed, reminder, flapping_started, flapping_ended
    pub kind: &'static str,
    pub attempt: u32,
    /// `ok`, `http 500`, `exit 2`, `error: …`, `dropped: queue full`
    pub outcome: String,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// Delivery logs by handler name.
#[derive(Default)]
pub struct DeliveryLog(Mutex<HashMap<String, VecDeque<Delivery>>>);

impl DeliveryLog {
    fn record(&self, handler: &str, delivery: Delivery) {
        let mut logs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let log = logs.entry(handler.to_string()).or_default();
        log.push_back(delivery);
        while log.len() > LOG_LEN {
            log.pop_front();
        }
    }

    /// The newest first.
    pub fn of(&self, handler: &str) -> Vec<Delivery> {
        let logs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        logs.get(handler)
            .map(|log| log.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

struct Job {
    handler: Handler,
    kind: &'static str,
    body: Arc<str>,
    check: String,
    entity: String,
}

/// Runs until `shutdown`: takes notices, decides, queues deliveries; reminds once a second.
pub async fn run(
    shared: Arc<Shared>,
    mut notices: mpsc::Receiver<Notice>,
    shutdown: CancellationToken,
) {
    let mut open: HashMap<(String, String, String), Open> = HashMap::new();
    let mut workers: HashMap<String, mpsc::Sender<Job>> = HashMap::new();
    let http = reqwest::Client::builder()
        .user_agent(concat!("mdd/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut jobs = Vec::new();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            notice = notices.recv() => match notice {
                Some(notice) => decide(&shared, &notice, &mut open, &mut jobs),
                None => return,
            },
            _ = tick.tick() => remind(&shared, &mut open, &mut jobs),
        }
        for job in jobs {
            let sender = workers.entry(job.handler.name.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(DELIVERY_QUEUE);
                tokio::spawn(deliver_all(
                    Arc::clone(&shared),
                    http.clone(),
                    rx,
                    shutdown.clone(),
                ));
                tx
            });
            if let Err(mpsc::error::TrySendError::Full(job)) = sender.try_send(job) {
                shared.deliveries.record(
                    &job.handler.name,
                    Delivery {
                        at: crate::view::timestamp(now_ms()),
                        check: job.check,
                        entity: job.entity,
                        kind: job.kind,
                        attempt: 0,
                        outcome: "dropped: queue full".into(),
                        latency_ms: 0.0,
                        output: String::new(),
                    },
                );
            }
        }
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
            tracks.get(&d.name).is_some_and(|t| {
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

fn decide(
    shared: &Shared,
    notice: &Notice,
    open: &mut HashMap<(String, String, String), Open>,
    jobs: &mut Vec<Job>,
) {
    decide_one(shared, notice, open, jobs);
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
                    .map(|(_, e)| e.clone())
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
            },
            open,
            jobs,
        );
    }
}

fn decide_one(
    shared: &Shared,
    notice: &Notice,
    open: &mut HashMap<(String, String, String), Open>,
    jobs: &mut Vec<Job>,
) {
    let checks = shared.checks();
    let event = &notice.event.event;
    let Some(check) = checks.get(&event.check) else {
        return;
    };
    let now = now_ms();
    let state = {
        let events = shared.events_read();
        let mut resolver = StateResolver::new(&checks, &events, now);
        resolver.state_of(&notice.event, Some(check)).0
    };
    // The body is the same for every handler told the same kind of thing: made once.
    let mut bodies: HashMap<&'static str, Arc<str>> = HashMap::new();
    let silenced_now = || silenced(shared, &event.check, &event.entity, now);
    let expected_red_now = || expected_red(shared, check);
    let seen = Seen {
        status: event.status,
        state,
        occurrences: event.occurrences,
        flapping: event.flapping,
        previous_flapping: notice.previous_flapping,
        silenced: &silenced_now,
        expected_red: &expected_red_now,
    };
    for handler in checks.spec.handlers.iter().filter(|h| h.applies_to(check)) {
        let key = (
            handler.name.clone(),
            event.check.clone(),
            event.entity.clone(),
        );
        let mut slot = open.remove(&key);
        let told = mdd_core::notification::decide(&handler.filter, &seen, &mut slot, now);
        if let Some(still) = slot {
            open.insert(key, still);
        }
        if let Some(kind) = told {
            let kind = kind.as_str();
            jobs.push(Job {
                handler: handler.clone(),
                kind,
                body: Arc::clone(
                    bodies
                        .entry(kind)
                        .or_insert_with(|| sensu_event(&notice.event, check, state, kind).into()),
                ),
                check: event.check.clone(),
                entity: event.entity.clone(),
            });
        }
    }
}

/// Reminders for incidents still open, at most every `reminder` per handler.
fn remind(
    shared: &Shared,
    open: &mut HashMap<(String, String, String), Open>,
    jobs: &mut Vec<Job>,
) {
    let now = now_ms();
    let checks = shared.checks();
    let events = shared.events_read();
    let mut gone = Vec::new();
    for ((handler_name, check_name, entity), incident) in open.iter_mut() {
        let Some(handler) = checks
            .spec
            .handlers
            .iter()
            .find(|h| h.name == *handler_name)
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
        let state = StateResolver::new(&checks, &events, now)
            .state_of(cached, Some(check))
            .0;
        jobs.push(Job {
            handler: handler.clone(),
            kind: "reminder",
            body: sensu_event(cached, check, state, "reminder").into(),
            check: check_name.clone(),
            entity: entity.clone(),
        });
    }
    for key in gone {
        open.remove(&key);
    }
}

/// The event in the shape Sensu Go handlers read (`entity`, `check` with `status`, `output`,
/// `history`, `occurrences`, …), plus what mdd knows besides under `mdd`.
fn sensu_event(cached: &CachedEvent, check: &Check, state: State, kind: &str) -> String {
    let event = &cached.event;
    let secs = |ms: i64| ms / 1000;
    let sensu_state = match (event.flapping, event.status) {
        (true, _) => "flapping",
        (false, Status::Ok) => "passing",
        (false, _) => "failing",
    };
    serde_json::json!({
        "timestamp": secs(now_ms()),
        "entity": {
            "entity_class": "proxy",
            "metadata": { "name": event.entity, "namespace": "default" },
        },
        "check": {
            "metadata": { "name": event.check, "namespace": "default", "labels": check.labels },
            "status": event.status.exit_code(),
            "output": cached.summary,
            "executed": secs(event.executed_at),
            "issued": secs(event.executed_at),
            "duration": cached.duration_ms / 1000.0,
            "interval": check.interval.as_secs(),
            "history": event.history.iter().map(|h| serde_json::json!({
                "status": h.status.exit_code(),
                "executed": secs(h.executed_at),
            })).collect::<Vec<_>>(),
            "occurrences": event.occurrences,
            "occurrences_watermark": event.occurrences_watermark,
            "state": sensu_state,
            "total_state_change": event.total_state_change,
            "last_ok": event.last_ok.map(secs),
            "handlers": check.handlers,
        },
        "mdd": {
            "notification": kind,
            "state": state.as_str(),
            "owner": check.owner,
            "runbook": check.runbook,
            "description": check.description,
            "long_output": cached.long_output,
        },
    })
    .to_string()
}

/// One handler's worker: delivers its jobs in order.
async fn deliver_all(
    shared: Arc<Shared>,
    http: reqwest::Client,
    mut jobs: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            _ = shutdown.cancelled() => return,
            job = jobs.recv() => match job { Some(job) => job, None => return },
        };
        match &job.handler.kind {
            HandlerKind::Webhook { url, headers } => {
                let mut pause = FIRST_BACKOFF;
                for attempt in 1..=ATTEMPTS {
                    let started = Instant::now();
                    let mut request = http
                        .post(url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .timeout(job.handler.timeout)
                        .body(job.body.to_string());
                    for (name, value) in headers {
                        request = request.header(name.as_str(), value.as_str());
                    }
                    let outcome = match request.send().await {
                        Ok(r) if r.status().is_success() => "ok".to_string(),
                        Ok(r) => format!("http {}", r.status().as_u16()),
                        Err(e) => format!("error: {}", mdd_probes::describe_error(&e)),
                    };
                    let ok = outcome == "ok";
                    log(&shared, &job, attempt, outcome, started, String::new());
                    if ok || attempt == ATTEMPTS {
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
                let (outcome, output) = run_command(argv, &job.body, job.handler.timeout).await;
                log(&shared, &job, 1, outcome, started, output);
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
    shared.deliveries.record(
        &job.handler.name,
        Delivery {
            at: crate::view::timestamp(now_ms()),
            check: job.check.clone(),
            entity: job.entity.clone(),
            kind: job.kind,
            attempt,
            outcome,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            output,
        },
    );
}

/// Runs a command handler through the same runner as plugins: no shell, its own process group,
/// the event on stdin, output capped, the whole group killed at the timeout.
async fn run_command(argv: &[String], body: &str, timeout: Duration) -> (String, String) {
    use mdd_probes::process::{self, Ended};
    let finished = process::run(process::Run {
        argv,
        stdin: Some(body.as_bytes()),
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
