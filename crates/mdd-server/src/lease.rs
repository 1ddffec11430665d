//! Who does the once-only work of a cluster: running the server's own checks, the keepalive
//! watchdog, retention. One lease in the store, timed by the database's clock; its holder does
//! that work, the other servers wait to take over. A holder that cannot renew stops before the
//! lease can run out, so two servers never both believe they hold it. On SQLite the lease is
//! always granted (one server has the data directory): the same code path.
//!
//! Owns the holding flag and nothing else; the work itself stays with its modules, which ask
//! [`Shared::holds_once_only_work`] and wait on [`Shared::watch_once_only_work`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::Shared;

/// The lease's name in the store.
pub const ONCE_ONLY: &str = "once-only";
/// How long a lease runs without renewal: a server killed while holding it is replaced within
/// this plus one renewal period.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often the holder renews, and the others try to take it.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// Holds the lease while it can, until `shutdown`; gives it up on the way out.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let holder = shared.server_id.clone();
    let ttl_ms = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(6_000);
    let mut renewed: Option<Instant> = None;
    loop {
        let asked = Instant::now();
        let taken = shared.store.take_lease(ONCE_ONLY, &holder, ttl_ms).await;
        tracing::debug!(
            ?taken,
            asked_ms = asked.elapsed().as_millis(),
            "asked for the once-only lease"
        );
        match taken {
            Ok(Some(epoch)) => {
                // Counted from before the request: the lease may have been granted at once.
                renewed = Some(asked);
                if !shared.holds_once_only_work() {
                    // The work decides against the events: first those this server only
                    // noted as moved (it followed them by version) are read whole.
                    match shared.catch_up_events(None).await {
                        Ok(()) => {
                            tracing::info!(epoch, "this server does the once-only work now");
                            shared.set_once_only_work(true);
                        }
                        Err(e) => tracing::warn!(
                            "took the once-only lease but cannot read the events yet (will retry): {e}"
                        ),
                    }
                }
            }
            Ok(None) => {
                renewed = None;
                if shared.holds_once_only_work() {
                    tracing::warn!("another server took the once-only work");
                    shared.set_once_only_work(false);
                }
            }
            Err(e) => {
                tracing::warn!("cannot renew the once-only lease: {e}");
                // Half the ttl without a renewal: stop before it can run out.
                if renewed.is_none_or(|at| at.elapsed() > LEASE_TTL / 2)
                    && shared.holds_once_only_work()
                {
                    tracing::warn!("stopping the once-only work until the lease is renewed");
                    shared.set_once_only_work(false);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RENEW_EVERY) => {}
        }
    }
    // Given up whatever this server believes: the store may hold it for this server while the
    // work waits (taken, the events not read yet), and giving up a lease held by another is a
    // no-op.
    let held = shared.holds_once_only_work();
    shared.set_once_only_work(false);
    match shared.store.release_lease(ONCE_ONLY, &holder).await {
        Ok(()) => tracing::debug!(held, "gave the once-only lease up"),
        Err(e) => tracing::warn!("cannot give the once-only lease up: {e}"),
    }
}
