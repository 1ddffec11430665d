//! Silences in force: kept in memory (and in the store), matched against events so views can
//! mark them (and notifications skip them). Expired silences, and `until_resolved` ones whose
//! events all pass again, end on their own.

use mdd_core::State;
use mdd_core::silence::{Silence, Target};

use crate::checks::CheckSet;
use crate::view::StateResolver;
use crate::{Shared, now_ms};

/// Reads the stored silences; one that cannot be read is skipped (and said).
pub async fn load(store: &mdd_storage::Store) -> Result<Vec<Silence>, mdd_storage::StoreError> {
    Ok(store
        .silences()
        .await?
        .into_iter()
        .filter_map(|body| {
            serde_json::from_str(&body)
                .inspect_err(|e| tracing::error!("an unreadable stored silence is skipped: {e}"))
                .ok()
        })
        .collect())
}

/// The event an a silence is matched against.
pub fn target<'a>(checks: &'a CheckSet, check: &'a str, entity: &'a str) -> Target<'a> {
    let config = checks.get(check);
    Target {
        check,
        entity,
        labels: config.map(|c| &c.labels),
        owner: config.and_then(|c| c.owner.as_deref()),
    }
}

/// The ids of the silences in force over an event now.
pub fn silencing<'a>(silences: &'a [Silence], target: &Target<'_>, now: i64) -> Vec<&'a str> {
    silences
        .iter()
        .filter(|s| s.is_active(now) && s.matches(target))
        .map(|s| s.id.as_str())
        .collect()
}

/// Ends what should end: expired silences, and `until_resolved` ones in force whose events all
/// pass (a silence that matches nothing yet stays: its check may not have reported).
pub async fn sweep(shared: &Shared) {
    let now = now_ms();
    if shared.silences_read().is_empty() {
        return;
    }
    // `until_resolved` ends on the events as stored, whichever server folded them.
    shared.catch_up_events_or_say().await;
    let ended: Vec<String> = {
        let silences = shared.silences_read();
        if silences.is_empty() {
            return;
        }
        let checks = shared.checks();
        let events = shared.events_read();
        silences
            .iter()
            .filter(|s| s.has_expired(now) || resolved(s, &checks, &events, shared.clock_at(now)))
            .map(|s| s.id.clone())
            .collect()
    };
    if ended.is_empty() {
        return;
    }
    match shared.store.delete_silences(&ended).await {
        Ok(_) => {
            shared.silences_write().retain(|s| !ended.contains(&s.id));
            shared.changed();
            tracing::info!(count = ended.len(), "silences ended");
        }
        Err(e) => tracing::warn!("cannot end silences (will retry): {e}"),
    }
}

fn resolved(
    silence: &Silence,
    checks: &CheckSet,
    events: &crate::Events,
    clock: crate::view::Clock,
) -> bool {
    if !silence.until_resolved || !silence.is_active(clock.now) {
        return false;
    }
    let mut resolver = StateResolver::new(checks, events, clock);
    let mut matched = 0;
    for cached in events.values() {
        let t = target(checks, &cached.event.check, &cached.event.entity);
        if !silence.matches(&t) {
            continue;
        }
        matched += 1;
        if resolver.state_of(cached, checks.get(&cached.event.check)).0 != State::Passing {
            return false;
        }
    }
    matched > 0
}

/// Why a silence was not added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    Invalid(#[from] mdd_core::silence::SilenceError),
    #[error(transparent)]
    Store(#[from] mdd_storage::StoreError),
}

/// Validates, stores, and puts a silence in force.
pub async fn add(shared: &Shared, silence: Silence) -> Result<(), AddError> {
    silence.validate()?;
    let body = serde_json::to_string(&silence).unwrap_or_default();
    shared
        .store
        .save_silence(&silence.id, &body, silence.expires_at)
        .await?;
    let mut silences = shared.silences_write();
    // A reload that read the store after the write may have put it in already.
    silences.retain(|s| s.id != silence.id);
    silences.push(silence);
    drop(silences);
    shared.changed();
    Ok(())
}

/// Ends a silence now; false if there is none with that id.
pub async fn end(shared: &Shared, id: &str) -> Result<bool, mdd_storage::StoreError> {
    let deleted = shared
        .store
        .delete_silences(std::slice::from_ref(&id.to_string()))
        .await?;
    shared.silences_write().retain(|s| s.id != id);
    shared.changed();
    Ok(deleted > 0)
}
