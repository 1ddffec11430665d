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
}

impl Scheduler {
    /// Results go to `results`; everything stops when `stop_all` is cancelled.
    pub fn new(
        ctx: Arc<ProbeContext>,
        stop_all: CancellationToken,
        results: mpsc::Sender<Executed>,
    ) -> Scheduler {
        Scheduler {
            ctx,
            stop_all,
            results,
            running: HashMap::new(),
        }
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
            tracing::warn!(
                check = check.name,
                skipped,
                "a run took longer than the interval; runs that fell due meanwhile were skipped, not started twice"
            );
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
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 4096, "a check's task is {size} bytes");
    }
}
