//! Runs the checks that belong to the server (those without `subscriptions`) with the shared
//! scheduler of `mdd-probes`, and stores their results like any other producer's. In a cluster
//! only the server holding the once-only lease runs them.

use std::sync::Arc;

use mdd_core::spec::Check;
use mdd_probes::ProbeContext;
use mdd_probes::scheduler::{Executed, Scheduler};
use mdd_storage::StoredResult;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Shared, now_ms};

/// Whether the server itself runs this check (agents run those with subscriptions; results of
/// push-only checks come from outside).
pub fn runs_here(check: &Check) -> bool {
    check.subscriptions.is_empty() && !check.is_push_only()
}

fn stored_result(shared: &Shared, run: Executed) -> StoredResult {
    let result = run.result;
    StoredResult {
        id: uuid::Uuid::now_v7().to_string(),
        check: run.check,
        entity: run.entity.unwrap_or_else(|| shared.config.entity.clone()),
        output: result.plugin_text(),
        status: result.status,
        summary: result.summary,
        long_output: result.long_output,
        perfdata: result.perfdata,
        duration_ms: result.duration.as_secs_f64() * 1000.0,
        exit_code: result.exit_code,
        executed_at: run.executed_at,
        received_at: now_ms(),
    }
}

/// Runs one of the server's checks once, now (the dashboard's "Run now"), and stores the
/// result like any other. Its schedule is unchanged.
pub async fn run_now(shared: &Shared, check: &Check) -> Result<(), String> {
    let executed_at = now_ms();
    let result = mdd_probes::run(check, &ProbeContext::default()).await;
    let run = Executed {
        check: check.name.clone(),
        entity: check.entity.clone(),
        result,
        executed_at,
    };
    shared
        .ingest(vec![stored_result(shared, run)])
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The most results of the server's own checks stored in one group.
const MAX_BATCH: usize = 5_000;

pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    // Room for several seconds of results at thousands of checks a second: a check's task
    // never waits for storage to hand its result over.
    let (sender, mut executed) = mpsc::channel::<Executed>(MAX_BATCH * 4);
    let mut scheduler = Scheduler::new(
        Arc::new(ProbeContext::default()),
        shutdown.child_token(),
        sender,
    );
    let store_shared = Arc::clone(&shared);
    let storing = tokio::spawn(async move {
        // Whatever came in while the last group was being stored goes in the next one: one
        // commit (one fsync) for all of it, as for everyone else's results.
        let mut batch = Vec::new();
        while executed.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let stored: Vec<StoredResult> = batch
                .drain(..)
                .map(|run| stored_result(&store_shared, run))
                .collect();
            if let Err(e) = store_shared.ingest(stored).await {
                tracing::error!("cannot store results of the server's own checks: {e}");
            }
        }
    });
    // Only the server doing the once-only work runs them: once per interval in a cluster.
    let mut holding = shared.watch_once_only_work();
    loop {
        // Registered before reading the checks, so an apply in between is not missed.
        let changed = shared.checks_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let checks = shared.checks();
        let runs = *holding.borrow_and_update();
        scheduler.set_checks(checks.checks().iter().filter(|c| runs && runs_here(c)));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed => {}
            moved = holding.changed() => if moved.is_err() { break },
        }
    }
    drop(scheduler);
    let _ = storing.await;
}
