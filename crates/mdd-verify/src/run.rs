//! The verification run: rounds of checks in dependency order until all are green or time is up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mdd_core::graph::DependencyGraph;
use mdd_core::spec::Check;
use mdd_core::{ProbeResult, State};
use mdd_probes::ProbeContext;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::report::{CheckReport, Report};

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// How many probes may run at once.
    pub concurrency: usize,
    /// Keep re-running what is not green until this much time has passed.
    pub wait: Option<Duration>,
    /// Time between the starts of two rounds when waiting.
    pub every: Duration,
    /// Count warnings as green.
    pub allow_warning: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            concurrency: 32,
            wait: None,
            every: Duration::from_secs(5),
            allow_warning: false,
        }
    }
}

/// What happened, as it happens, for live progress displays.
#[derive(Debug, Clone)]
pub enum Progress {
    RoundStarted {
        round: u32,
        /// How many checks this round runs (the ones not green yet).
        checks: usize,
    },
    /// One check finished (or was blocked) in a round.
    CheckFinished {
        round: u32,
        index: usize,
        name: String,
        state: State,
        /// The state the check had before this round (`Pending` in the first).
        previous: State,
        summary: String,
        /// Time since the run started.
        at: Duration,
    },
    RoundFinished {
        round: u32,
        green: usize,
        total: usize,
        /// When the next round starts, if there is one.
        next_in: Option<Duration>,
    },
}

/// The outcome of one check so far.
#[derive(Debug, Clone)]
struct Outcome {
    state: State,
    result: Option<ProbeResult>,
    blocked_by: Vec<String>,
    attempts: u32,
    time_to_green: Option<Duration>,
    green_in_round: Option<u32>,
}

impl Outcome {
    fn pending() -> Outcome {
        Outcome {
            state: State::Pending,
            result: None,
            blocked_by: Vec::new(),
            attempts: 0,
            time_to_green: None,
            green_in_round: None,
        }
    }
}

fn is_green(state: State, allow_warning: bool) -> bool {
    state == State::Passing || (allow_warning && state == State::Warning)
}

/// Runs `checks` (already selected, dependencies included) and reports. Stops early, with
/// what it has, when `cancel` fires; probes still running are dropped, which kills their processes.
pub async fn verify(
    checks: Vec<Check>,
    options: &VerifyOptions,
    ctx: Arc<ProbeContext>,
    progress: Option<mpsc::UnboundedSender<Progress>>,
    cancel: CancellationToken,
) -> Report {
    let started_at = jiff::Timestamp::now();
    let started = Instant::now();
    let deadline = options.wait.map(|w| started + w);
    let graph = Arc::new(DependencyGraph::new(&checks));
    let checks = Arc::new(checks);
    let outcomes = Arc::new(Mutex::new(vec![Outcome::pending(); checks.len()]));
    let semaphore = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let send = |p: Progress| {
        if let Some(tx) = &progress {
            let _ = tx.send(p);
        }
    };

    let mut round = 0;
    let mut interrupted = false;
    loop {
        round += 1;
        let round_started = Instant::now();
        let snapshot: Vec<Outcome> = lock(&outcomes).clone();
        let to_run = snapshot
            .iter()
            .filter(|o| !is_green(o.state, options.allow_warning))
            .count();
        send(Progress::RoundStarted {
            round,
            checks: to_run,
        });
        let round_future = run_round(RoundContext {
            round,
            checks: Arc::clone(&checks),
            graph: Arc::clone(&graph),
            outcomes: Arc::clone(&outcomes),
            semaphore: Arc::clone(&semaphore),
            ctx: Arc::clone(&ctx),
            allow_warning: options.allow_warning,
            started,
            progress: progress.clone(),
        });
        tokio::select! {
            _ = round_future => {}
            _ = cancel.cancelled() => {
                interrupted = true;
            }
        }
        let green = lock(&outcomes)
            .iter()
            .filter(|o| is_green(o.state, options.allow_warning))
            .count();
        // The last round runs at the deadline rather than never: `--wait 8s` with rounds every
        // 5 s looks at 0 s, 5 s and 8 s, not only until 5 s.
        let next_start = match deadline {
            Some(d) => (round_started + options.every).min(d),
            None => round_started + options.every,
        };
        let another =
            !interrupted && green < checks.len() && deadline.is_some_and(|d| Instant::now() < d);
        send(Progress::RoundFinished {
            round,
            green,
            total: checks.len(),
            next_in: another.then(|| next_start.saturating_duration_since(Instant::now())),
        });
        if !another {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_start.into()) => {}
            _ = cancel.cancelled() => {
                interrupted = true;
                break;
            }
        }
    }

    let outcomes = lock(&outcomes).clone();
    let timed_out = deadline.is_some()
        && !interrupted
        && outcomes
            .iter()
            .any(|o| !is_green(o.state, options.allow_warning));
    Report {
        started_at,
        duration: started.elapsed(),
        rounds: round,
        interrupted,
        timed_out,
        allow_warning: options.allow_warning,
        checks: checks
            .iter()
            .zip(outcomes)
            .map(|(check, o)| CheckReport {
                name: check.name.clone(),
                description: check.description.clone(),
                owner: check.owner.clone(),
                runbook: check.runbook.clone(),
                labels: check.labels.clone(),
                probe: check.probe.kind().to_string(),
                target: check.probe.target(),
                source: format!("{}:{}", check.source.file, check.source.line),
                state: o.state,
                result: o.result,
                blocked_by: o.blocked_by,
                attempts: o.attempts,
                time_to_green: o.time_to_green,
                green_in_round: o.green_in_round,
            })
            .collect(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock would be a bug in this module; the data is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct RoundContext {
    round: u32,
    checks: Arc<Vec<Check>>,
    graph: Arc<DependencyGraph>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    semaphore: Arc<Semaphore>,
    ctx: Arc<ProbeContext>,
    allow_warning: bool,
    started: Instant,
    progress: Option<mpsc::UnboundedSender<Progress>>,
}

/// One round: every check that is not green yet runs once its dependencies have finished this
/// round; a check whose dependency is not green is blocked instead of run.
async fn run_round(rc: RoundContext) {
    let n = rc.checks.len();
    let snapshot: Vec<Outcome> = lock(&rc.outcomes).clone();
    // Each check publishes its final state for this round; dependents wait on it.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
        .map(|i| {
            let already =
                is_green(snapshot[i].state, rc.allow_warning).then_some(snapshot[i].state);
            watch::channel(already)
        })
        .unzip();
    let receivers = Arc::new(receivers);
    let rc = Arc::new(rc);
    let tasks = senders
        .into_iter()
        .enumerate()
        .filter_map(|(index, sender)| {
            if sender.borrow().is_some() {
                return None; // green in an earlier round
            }
            let rc = Arc::clone(&rc);
            let receivers = Arc::clone(&receivers);
            Some(async move {
                let mut blockers = Vec::new();
                for &dep in rc.graph.dependencies(index) {
                    let mut rx = receivers[dep].clone();
                    let state = match rx.wait_for(Option::is_some).await {
                        Ok(state) => state.unwrap_or(State::Pending),
                        Err(_) => State::Pending,
                    };
                    if !is_green(state, rc.allow_warning) {
                        blockers.push(rc.checks[dep].name.clone());
                    }
                }
                let check = &rc.checks[index];
                let (state, result) = if blockers.is_empty() {
                    let result = {
                        let _permit = rc.semaphore.acquire().await;
                        mdd_probes::run(check, &rc.ctx).await
                    };
                    (result.status.state(), Some(result))
                } else {
                    (State::Blocked, None)
                };
                let at = rc.started.elapsed();
                let (previous, summary) = {
                    let mut outcomes = lock(&rc.outcomes);
                    let outcome = &mut outcomes[index];
                    let previous = outcome.state;
                    outcome.state = state;
                    if result.is_some() {
                        outcome.attempts += 1;
                        outcome.result = result;
                    }
                    outcome.blocked_by = blockers.clone();
                    if is_green(state, rc.allow_warning) && outcome.time_to_green.is_none() {
                        outcome.time_to_green = Some(at);
                        outcome.green_in_round = Some(rc.round);
                    }
                    let summary = match &outcome.result {
                        Some(r) if state != State::Blocked => r.summary.clone(),
                        _ => format!("blocked by {}", blockers.join(", ")),
                    };
                    (previous, summary)
                };
                if let Some(tx) = &rc.progress {
                    let _ = tx.send(Progress::CheckFinished {
                        round: rc.round,
                        index,
                        name: check.name.clone(),
                        state,
                        previous,
                        summary,
                        at,
                    });
                }
                let _ = sender.send(Some(state));
            })
        });
    join_all(tasks).await;
}
