//! Runs checks over and over on their grid (`mdd_core::schedule`): the server runs its own
//! checks with it, agents theirs. Each check runs in its own task; a run that is still going
//! when the next one is due is never started twice: the missed runs are skipped and logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mdd_core::ProbeResult;
use mdd_core::schedule::{next_run, splay};
use mdd_core::spec::Check;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ProbeContext;

/// One execution, as the scheduler hands it over.
#[derive(Debug)]
pub struct Executed {
    pub check: String,
    /// The check's proxy entity, if it names one; otherwise results are for where it ran.
    pub entity: Option<String>,
    pub result: ProbeResult,
    /// When the run started, ms since the epoch.
    pub executed_at: i64,
}

/// The checks being run, each with its own task. Give it the current set whenever it changes.
pub struct Scheduler {
    ctx: Arc<ProbeContext>,
    stop_all: CancellationToken,
    results: mpsc::Sender<Executed>,
    running: HashMap<String, (Check, CancellationToken)>,
    overruns: Arc<Overruns>,
}

/// How often skipped runs are summed up in the log.
const OVERRUN_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Runs skipped because the one before was still going, per check, since the last report: a
/// machine too busy for its checks must say so once, not once per skipped run (15,000 lines in
/// 30 s at 1,000 checks a second).
#[derive(Debug, Default)]
pub struct Overruns {
    skipped: std::sync::Mutex<HashMap<String, u64>>,
    total: std::sync::atomic::AtomicU64,
}

impl Overruns {
    fn add(&self, check: &str, skipped: u64) {
        self.total
            .fetch_add(skipped, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(check.to_string()).or_insert(0) += skipped;
    }

    /// Every run skipped since the scheduler started.
    pub fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One line for what was skipped since the last call, if anything was.
    fn report(&self, over: Duration) {
        let taken: HashMap<String, u64> = {
            let mut map = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *map)
        };
        if taken.is_empty() {
            return;
        }
        let runs: u64 = taken.values().sum();
        let (worst, worst_runs) = taken
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(name, n)| (name.as_str(), *n))
            .unwrap_or(("", 0));
        tracing::warn!(
            runs,
            checks = taken.len(),
            worst,
            worst_runs,
            "{runs} runs of {} checks were skipped in the last {}s: the run before was still going (a check slower than its interval, or a machine too busy); they are never started twice",
            taken.len(),
            over.as_secs()
        );
    }
}

impl Scheduler {
    /// Results go to `results`; everything stops when `stop_all` is cancelled.
    pub fn new(
        ctx: Arc<ProbeContext>,
        stop_all: CancellationToken,
        results: mpsc::Sender<Executed>,
    ) -> Scheduler {
        let overruns = Arc::new(Overruns::default());
        let reporting = Arc::clone(&overruns);
        let stop = stop_all.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(OVERRUN_REPORT_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => reporting.report(OVERRUN_REPORT_EVERY),
                }
            }
            reporting.report(OVERRUN_REPORT_EVERY);
        });
        Scheduler {
            ctx,
            stop_all,
            results,
            running: HashMap::new(),
            overruns,
        }
    }

    /// What was skipped, for metrics.
    pub fn overruns(&self) -> Arc<Overruns> {
        Arc::clone(&self.overruns)
    }

    /// Starts checks that are new or changed and stops those that are gone or changed.
    pub fn set_checks<'a>(&mut self, checks: impl IntoIterator<Item = &'a Check>) {
        let wanted: HashMap<&str, &Check> = checks
            .into_iter()
            .filter(|c| !c.is_push_only())
            .map(|c| (c.name.as_str(), c))
            .collect();
        self.running.retain(|name, (check, stop)| {
            let keep = wanted.get(name.as_str()).is_some_and(|c| *c == check);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (name, check) in wanted {
            if !self.running.contains_key(name) {
                let stop = self.stop_all.child_token();
                tokio::spawn(run_check(
                    Arc::clone(&self.ctx),
                    check.clone(),
                    stop.clone(),
                    self.results.clone(),
                    Arc::clone(&self.overruns),
                ));
                self.running.insert(name.to_string(), (check.clone(), stop));
            }
        }
    }

    /// The names of the checks being run.
    pub fn running(&self) -> impl Iterator<Item = &str> {
        self.running.keys().map(String::as_str)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        for (_, stop) in self.running.values() {
            stop.cancel();
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn run_check(
    ctx: Arc<ProbeContext>,
    check: Check,
    stop: CancellationToken,
    results: mpsc::Sender<Executed>,
    overruns: Arc<Overruns>,
) {
    let splay = splay(&check.name, check.interval);
    let interval_ms = i64::try_from(check.interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let mut due = next_run(now_ms(), check.interval, splay);
    loop {
        let wait = Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let executed_at = now_ms();
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = crate::run(&check, &ctx) => r,
        };
        let sent = results
            .send(Executed {
                check: check.name.clone(),
                entity: check.entity.clone(),
                result,
                executed_at,
            })
            .await;
        if sent.is_err() {
            return; // nobody takes results any more: shutting down
        }
        let next = next_run(now_ms(), check.interval, splay);
        let skipped = (next - due) / interval_ms - 1;
        if skipped > 0 {
            overruns.add(&check.name, u64::try_from(skipped).unwrap_or(0));
        }
        due = next;
    }
}

#[cfg(test)]
mod tests {
    /// A scheduler keeps one task per check alive between runs: each must stay small, or an
    /// agent with a thousand checks holds tens of MiB doing nothing.
    #[test]
    fn an_idle_check_task_is_small() {
        let (results, _) = tokio::sync::mpsc::channel(1);
        let check =
            mdd_core::spec::load_one("t.yaml", "checks:\n  - name: x\n    command: [\"true\"]\n")
                .unwrap_or_else(|e| panic!("{e}"))
                .checks
                .remove(0);
        let ctx = std::sync::Arc::new(crate::ProbeContext::default());
        let task = super::run_check(
            ctx,
            check,
            tokio_util::sync::CancellationToken::new(),
            results,
            std::sync::Arc::default(),
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 4096, "a check's task is {size} bytes");
    }

    #[test]
    fn skipped_runs_are_summed_up_and_reset() {
        let overruns = super::Overruns::default();
        overruns.add("slow", 3);
        overruns.add("slow", 2);
        overruns.add("other", 1);
        assert_eq!(overruns.total(), 6);
        overruns.report(std::time::Duration::from_secs(10));
        assert!(
            overruns.skipped.lock().expect("lock").is_empty(),
            "reported once, then counting starts again"
        );
        assert_eq!(overruns.total(), 6, "the total stays for metrics");
    }
}
