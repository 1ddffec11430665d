//! Runs the checks that belong to the server (those without `subscriptions`), each on its
//! interval with a stable splay: a check's runs fall at `splay + k × interval` since the epoch,
//! so runs never drift and a restart keeps the phase.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mdd_core::spec::Check;
use mdd_probes::ProbeContext;
use mdd_storage::StoredResult;
use tokio_util::sync::CancellationToken;

use crate::{Shared, now_ms};

/// The offset of a check's runs within its interval: a hash of its name, stable across restarts
/// and machines, so checks spread over the interval instead of firing together.
pub fn splay(name: &str, interval: Duration) -> i64 {
    // FNV-1a: tiny, stable, and good enough to spread names.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let interval_ms = i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    (hash % interval_ms.unsigned_abs()) as i64
}

/// The first run time strictly after `now` for a check with this interval and splay.
pub fn next_run(now: i64, interval: Duration, splay: i64) -> i64 {
    let interval_ms = i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let since = now - splay;
    let k = since.div_euclid(interval_ms) + 1;
    splay + k * interval_ms
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_fall_on_a_fixed_grid() {
        let interval = Duration::from_secs(30);
        let s = splay("ams1-dns", interval);
        assert!((0..30_000).contains(&s));
        assert_eq!(s, splay("ams1-dns", interval), "stable");
        assert_ne!(s, splay("ams1-ldap", interval), "spread");
        let first = next_run(1_000_000, interval, s);
        assert!(first > 1_000_000 && first <= 1_030_000);
        assert_eq!((first - s) % 30_000, 0);
        // Asking again at the due time gives the next slot, never the same one twice.
        assert_eq!(next_run(first, interval, s), first + 30_000);
        // A late wake-up does not shift later runs.
        assert_eq!(next_run(first + 7_000, interval, s), first + 30_000);
    }
}
