//! Runs the checks that belong to the server (those without `subscriptions`), each on its
//! interval on the grid `mdd_core::schedule` defines (no drift, restarts keep the phase).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mdd_core::spec::Check;
use mdd_probes::ProbeContext;
use mdd_storage::StoredResult;
use tokio_util::sync::CancellationToken;

use mdd_core::schedule::{next_run, splay};

use crate::{Shared, now_ms};

fn runs_here(check: &Check) -> bool {
    check.subscriptions.is_empty() && !check.is_push_only()
}

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let ctx = Arc::new(ProbeContext::default());
    let mut running: HashMap<String, (Check, CancellationToken)> = HashMap::new();
    loop {
        // Start what is new or changed, stop what is gone or changed.
        let checks = shared.checks();
        let wanted: HashMap<&str, &Check> = checks
            .checks()
            .iter()
            .filter(|c| runs_here(c))
            .map(|c| (c.name.as_str(), c))
            .collect();
        running.retain(|name, (check, stop)| {
            let keep = wanted.get(name.as_str()).is_some_and(|c| *c == check);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (name, check) in wanted {
            if !running.contains_key(name) {
                let stop = shutdown.child_token();
                tokio::spawn(run_check(
                    Arc::clone(&shared),
                    Arc::clone(&ctx),
                    check.clone(),
                    stop.clone(),
                ));
                running.insert(name.to_string(), (check.clone(), stop));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.checks_changed.notified() => {}
        }
    }
}

async fn run_check(
    shared: Arc<Shared>,
    ctx: Arc<ProbeContext>,
    check: Check,
    stop: CancellationToken,
) {
    let splay = splay(&check.name, check.interval);
    loop {
        let due = next_run(now_ms(), check.interval, splay);
        let wait = Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let executed_at = now_ms();
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = mdd_probes::run(&check, &ctx) => r,
        };
        let stored = StoredResult {
            id: uuid::Uuid::now_v7().to_string(),
            check: check.name.clone(),
            entity: shared.config.entity.clone(),
            status: result.status,
            summary: result.summary,
            long_output: result.long_output,
            perfdata: result.perfdata,
            duration_ms: result.duration.as_secs_f64() * 1000.0,
            exit_code: result.exit_code,
            executed_at,
            received_at: now_ms(),
        };
        if let Err(e) = shared.ingest(vec![stored]).await {
            tracing::error!(check = check.name, "cannot store the result: {e}");
        }
    }
}
