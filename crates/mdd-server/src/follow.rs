//! What the other servers of a cluster wrote: the shared configuration (the applied spec,
//! tokens, silences, dashboard sessions, deployments' tracks) followed from the store.
//!
//! Every change to one of those moves its row of `shared_versions` in the change's own
//! transaction (database triggers). A server polls that small table and reloads whatever
//! moved, whoever moved it; on SQLite that is only ever itself, and the reload is a no-op in
//! effect. Tokens and silences are also changed in memory by the requests that change them
//! here, and a reload never undoes one of those (see `followed`). It owns no state of its
//! own: it hands what it read to `Shared`, which owns it.
//! The events the other servers of a shared store fold are not followed here but when events
//! are asked for (see `Shared::follow_feed`). It never writes to the store.

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

/// Where following starts: what the start loaded state from.
pub struct Seen {
    /// The shared versions read before anything was loaded.
    pub versions: BTreeMap<String, i64>,
}

/// Follows the store until `shutdown`, from what the start loaded.
pub async fn run(shared: Arc<Shared>, from: Seen, shutdown: CancellationToken) {
    let Seen { versions: mut seen } = from;
    // For what this server also changes itself: its count of those changes at the last reload.
    let mut synced: BTreeMap<String, u64> = ["tokens", "silences"]
        .into_iter()
        .filter_map(|name| Some((name.to_string(), local_changes(&shared, name)?)))
        .collect();
    let mut failing = false;
    let mut feed_failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        if shared.store.is_shared() {
            // The notifier reads the change feed before it decides a notice taken here, so
            // it decides against events at least as new as the ones the notice was made from.
            let round = if shared.holds_once_only_work() {
                take_notices(&shared).await
            } else {
                Ok(())
            };
            match round {
                Ok(()) => feed_failing = false,
                Err(e) => {
                    if !feed_failing {
                        tracing::warn!("cannot read what other servers wrote (will retry): {e}");
                        feed_failing = true;
                    }
                }
            }
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
            // Changed here since the last reload: memory was edited by hand, so it is read
            // again once to be exactly what the store holds (see `followed`).
            let edited = local_changes(&shared, &name)
                .is_some_and(|now| synced.get(&name).is_some_and(|at| *at != now));
            if seen.get(&name) == Some(&version) && !edited {
                continue;
            }
            match reload_again_if_refused(&shared, &name).await {
                Ok(Reloaded::Taken { since }) => {
                    seen.insert(name.clone(), version);
                    if let Some(since) = since {
                        synced.insert(name, since);
                    }
                }
                // Changes made here kept landing: the next round reads it again.
                Ok(Reloaded::Refused) => {}
                Err(e) => tracing::warn!("cannot reload the {name} (will retry): {e}"),
            }
        }
    }
}

/// Drops the events and keepalive watches of entities deleted through another server: those
/// in memory that the store no longer lists and that have no stored events (read after the
/// memory was, so an entity that reported a moment ago is found and kept).
async fn forget_deleted_entities(shared: &Shared) -> Result<(), StoreError> {
    let listed: std::collections::HashSet<String> = shared
        .store
        .entities()
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    let mut missing: std::collections::BTreeSet<String> = shared
        .events_read()
        .keys()
        .map(|(_, entity)| entity.clone())
        .filter(|entity| !listed.contains(entity))
        .collect();
    missing.extend(
        shared
            .noted_entities()
            .into_iter()
            .filter(|entity| !listed.contains(entity)),
    );
    missing.extend(
        shared
            .keepalives()
            .keys()
            .filter(|entity| !listed.contains(*entity))
            .cloned(),
    );
    if missing.is_empty() {
        return Ok(());
    }
    let missing: Vec<String> = missing.into_iter().collect();
    let kept = shared.store.entities_with_events(&missing).await?;
    let gone: std::collections::HashSet<&String> =
        missing.iter().filter(|e| !kept.contains(*e)).collect();
    if gone.is_empty() {
        return Ok(());
    }
    shared.forget_events(|(_, entity)| gone.contains(entity));
    shared
        .keepalives()
        .retain(|entity, _| !gone.contains(entity));
    shared.changed();
    tracing::info!(
        count = gone.len(),
        "dropped entities deleted through another server"
    );
    Ok(())
}

/// The most notices handed to the notifier per round.
const NOTICES_PER_ROUND: i64 = 5_000;

/// On the server doing the once-only work: hands the notices every server's folds left in the
/// store to this server's notifier, in order, and forgets those it took. One the notifier
/// cannot take now waits for the next round.
async fn take_notices(shared: &Shared) -> Result<(), StoreError> {
    let waiting = shared.store.notices(NOTICES_PER_ROUND).await?;
    let mut taken = Vec::with_capacity(waiting.len());
    for (seq, body) in waiting {
        match serde_json::from_str::<crate::notify::Notice>(&body) {
            Ok(notice) => {
                if shared.notices.try_send(notice).is_err() {
                    break;
                }
            }
            Err(e) => tracing::error!("an unreadable notice is dropped: {e}"),
        }
        taken.push(seq);
    }
    if !taken.is_empty() {
        shared.store.drop_notices(&taken).await?;
    }
    Ok(())
}

/// What a reload did.
enum Reloaded {
    /// Memory holds what the store held; for tokens and silences, with the count of changes
    /// made here that the read began after.
    Taken { since: Option<u64> },
    /// Not taken: a change made here landed while the store was read.
    Refused,
}

/// The count of changes made here, for what this server also changes itself.
fn local_changes(shared: &Shared, name: &str) -> Option<u64> {
    match name {
        "tokens" => Some(shared.token_changes()),
        "silences" => Some(shared.silence_changes()),
        _ => None,
    }
}

/// `reload`, read again at once when a change made here refused it (at most a few times, so
/// that changes made here all the time only delay what the others did by a round).
async fn reload_again_if_refused(shared: &Shared, name: &str) -> Result<Reloaded, StoreError> {
    for _ in 0..3 {
        if let taken @ Reloaded::Taken { .. } = reload(shared, name).await? {
            return Ok(taken);
        }
    }
    Ok(Reloaded::Refused)
}

async fn reload(shared: &Shared, name: &str) -> Result<Reloaded, StoreError> {
    let taken = |since: Option<u64>| Reloaded::Taken { since };
    match name {
        "spec" => catch_up_spec(shared).await.map(|()| taken(None)),
        "tokens" => {
            let since = shared.token_changes();
            let stored = shared.store.tokens().await?;
            Ok(if shared.replace_tokens(stored, since) {
                taken(Some(since))
            } else {
                Reloaded::Refused
            })
        }
        "silences" => {
            let since = shared.silence_changes();
            let stored = crate::silences::load(&shared.store).await?;
            Ok(if shared.replace_silences(stored, since) {
                taken(Some(since))
            } else {
                Reloaded::Refused
            })
        }
        "sessions" => {
            shared.sessions_moved();
            Ok(taken(None))
        }
        "entities" => forget_deleted_entities(shared).await.map(|()| taken(None)),
        // The holder wrote them itself: what it has is what it stored.
        "deployments" if !shared.holds_once_only_work() => {
            let stored = crate::deployments::load(&shared.store).await?;
            shared.replace_deployments(stored);
            Ok(taken(None))
        }
        _ => Ok(taken(None)),
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
