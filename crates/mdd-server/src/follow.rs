//! What the other servers of a cluster wrote: the shared configuration (the applied spec,
//! tokens, silences, dashboard sessions) followed from the store.
//!
//! Every change to one of those moves its row of `shared_versions` in the change's own
//! transaction (database triggers). A server polls that small table and reloads whatever
//! moved, whoever moved it; on SQLite that is only ever itself, and the reload is a no-op in
//! effect. It owns no state of its own: it hands what it read to `Shared`, which owns it.
//! It must not touch results or events: those are the writer's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mdd_storage::StoreError;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::checks::CheckSet;

/// How often the versions are read: the lag of an apply, a token, a silence or a sign-out
/// made through another server is at most this plus a reload.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Follows the store until `shutdown`, from the versions read before the start loaded state.
pub async fn run(
    shared: Arc<Shared>,
    mut seen: BTreeMap<String, i64>,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        let versions = match shared.store.shared_versions().await {
            Ok(versions) => versions,
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot read what other servers changed (will retry): {e}");
                    failing = true;
                }
                continue;
            }
        };
        failing = false;
        for (name, version) in versions {
            if seen.get(&name) == Some(&version) {
                continue;
            }
            match reload(&shared, &name).await {
                Ok(()) => {
                    seen.insert(name, version);
                }
                Err(e) => tracing::warn!("cannot reload the {name} (will retry): {e}"),
            }
        }
    }
}

async fn reload(shared: &Shared, name: &str) -> Result<(), StoreError> {
    match name {
        "spec" => catch_up_spec(shared).await,
        "tokens" => {
            let stored = shared.store.tokens().await?;
            shared.replace_tokens(stored);
            Ok(())
        }
        "silences" => {
            let stored = crate::silences::load(&shared.store).await?;
            shared.replace_silences(stored);
            Ok(())
        }
        "sessions" => {
            shared.sessions_moved();
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Takes the newest stored spec if it is newer than the one in force (another server applied
/// it). Callers that apply hold the apply lock; this takes it itself otherwise.
pub async fn catch_up_spec(shared: &Shared) -> Result<(), StoreError> {
    let _serialised = shared.apply_lock.lock().await;
    catch_up_spec_locked(shared).await
}

/// `catch_up_spec` for a caller that holds the apply lock.
pub async fn catch_up_spec_locked(shared: &Shared) -> Result<(), StoreError> {
    let current = shared.checks();
    if shared.store.spec_head().await? <= current.revision {
        return Ok(());
    }
    let Some(latest) = shared.store.latest_spec().await? else {
        return Ok(());
    };
    let files = latest.files.into_iter().map(|f| (f.file, f.text)).collect();
    match CheckSet::parse(latest.revision, files) {
        Ok(checks) => {
            let checks = checks.dated_after(Some(&current), latest.applied_at);
            tracing::info!(
                revision = latest.revision,
                "took the spec another server applied"
            );
            shared.set_checks(checks);
        }
        // Another server accepted it, so another version of mdd: this one keeps what it has
        // and says why once per revision (the version stays seen).
        Err(errors) => tracing::error!(
            revision = latest.revision,
            "the spec another server applied does not parse here; keeping revision {}:\n{errors}",
            current.revision
        ),
    }
    Ok(())
}
