//! Keepalives: agents say they are alive every few seconds; when they stop, the `keepalive`
//! event of their entity turns WARNING and then CRITICAL, and turns OK again when they return.
//! Agents started with `deregister` are removed (entity and events) once they go critical.
//! Keepalive results go through the same ingestion as every other result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mdd_core::Status;
use mdd_storage::{StoreError, StoredResult};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{Shared, now_ms};

/// The built-in check every agent's keepalive events belong to; spec checks cannot take the name.
pub const KEEPALIVE_CHECK: &str = mdd_core::spec::KEEPALIVE_CHECK;

/// What an agent says of itself in a keepalive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    #[serde(default)]
    pub subscriptions: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Host facts: os, arch, agent version, hostname, addresses.
    #[serde(default)]
    pub facts: BTreeMap<String, serde_json::Value>,
    /// How often the agent sends keepalives, in seconds.
    pub interval_s: f64,
    /// Silence after which the keepalive event is WARNING, then CRITICAL, in seconds.
    pub warning_s: f64,
    pub critical_s: f64,
    /// Remove the entity and its events when it goes critical (ephemeral hosts).
    #[serde(default)]
    pub deregister: bool,
}

impl AgentInfo {
    pub fn validate(&self) -> Result<(), String> {
        let positive = |v: f64| v.is_finite() && v > 0.0 && v < 1e7;
        if !positive(self.interval_s) || !positive(self.warning_s) || !positive(self.critical_s) {
            return Err(
                "interval_s, warning_s and critical_s must be positive numbers of seconds".into(),
            );
        }
        if self.warning_s >= self.critical_s {
            return Err(format!(
                "warning_s ({}) must be less than critical_s ({})",
                self.warning_s, self.critical_s
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Watch {
    pub last: i64,
    pub info: AgentInfo,
    /// The status last written to the entity's keepalive event.
    pub reported: Status,
}

/// Records a keepalive and, when the agent was silent or new, turns its event OK.
pub async fn receive(
    shared: &Shared,
    entity: &str,
    info: AgentInfo,
) -> Result<(), Arc<StoreError>> {
    let now = now_ms();
    let text = serde_json::to_string(&info).unwrap_or_default();
    shared
        .store
        .record_keepalive(entity, &text, now)
        .await
        .map_err(Arc::new)?;
    let previous = shared.keepalives().insert(
        entity.to_string(),
        Watch {
            last: now,
            info: info.clone(),
            reported: Status::Ok,
        },
    );
    if previous.is_none_or(|w| w.reported != Status::Ok) {
        let version = info
            .facts
            .get("agent_version")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown");
        report(
            shared,
            entity,
            Status::Ok,
            format!("keepalive from {entity} (mdd agent {version})"),
        )
        .await?;
    }
    Ok(())
}

async fn report(
    shared: &Shared,
    entity: &str,
    status: Status,
    summary: String,
) -> Result<(), Arc<StoreError>> {
    let now = now_ms();
    shared
        .ingest(vec![StoredResult {
            id: uuid::Uuid::now_v7().to_string(),
            check: KEEPALIVE_CHECK.to_string(),
            entity: entity.to_string(),
            status,
            output: summary.clone(),
            summary,
            long_output: String::new(),
            perfdata: Vec::new(),
            duration_ms: 0.0,
            exit_code: None,
            executed_at: now,
            received_at: now,
        }])
        .await
        .map(|_| ())
}

/// What a silence of `age` ms means for an agent with these timeouts.
pub fn status_after(age_ms: i64, info: &AgentInfo) -> Status {
    let age = age_ms as f64 / 1000.0;
    if age > info.critical_s {
        Status::Critical
    } else if age > info.warning_s {
        Status::Warning
    } else {
        Status::Ok
    }
}

/// How often the watchdog reads what keepalives other servers of a cluster received.
const READ_SHARED_EVERY: Duration = Duration::from_secs(1);

/// Watches every agent's keepalives and reports when one goes quiet; only on the server doing
/// the once-only work, which also reads the keepalives other servers received from the store.
pub async fn watchdog(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut read_shared = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if !shared.holds_once_only_work() {
            continue;
        }
        if shared.store.is_shared() && read_shared.elapsed() >= READ_SHARED_EVERY {
            read_shared = std::time::Instant::now();
            match shared.store.entities().await {
                Ok(entities) => {
                    for entity in merge_stored(&shared, &entities) {
                        let summary =
                            format!("keepalive from {entity} (received by another server)");
                        if let Err(e) = report(&shared, &entity, Status::Ok, summary).await {
                            tracing::error!("cannot record the keepalive event of {entity}: {e}");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot read the keepalives other servers received: {e}");
                    continue;
                }
            }
        }
        let now = now_ms();
        let changes: Vec<(String, Status, bool, i64)> = {
            let mut watches = shared.keepalives();
            watches
                .iter_mut()
                .filter_map(|(entity, watch)| {
                    let status = status_after(now - watch.last, &watch.info);
                    // Only silence raises it; only a keepalive brings it back to OK.
                    if status == Status::Ok || status == watch.reported {
                        return None;
                    }
                    watch.reported = status;
                    Some((
                        entity.clone(),
                        status,
                        watch.info.deregister,
                        now - watch.last,
                    ))
                })
                .collect()
        };
        for (entity, status, deregister, silent_ms) in changes {
            let summary = format!(
                "no keepalive from {entity} for {}",
                mdd_core::format_duration(Duration::from_millis(
                    u64::try_from(silent_ms).unwrap_or(0)
                ))
            );
            if let Err(e) = report(&shared, &entity, status, summary).await {
                tracing::error!("cannot record the keepalive event of {entity}: {e}");
            }
            if deregister && status == Status::Critical {
                tracing::info!(entity, "deregistering an agent that went away");
                shared.keepalives().remove(&entity);
                if let Err(e) = shared.forget_entity(&entity).await {
                    tracing::error!("cannot deregister {entity}: {e}");
                }
            }
        }
    }
}

/// Keepalives other servers received: a later one than this server saw counts, and an agent
/// only they heard of is watched from now on.
/// Returns the agents that were reported silent and are heard again.
fn merge_stored(shared: &Shared, entities: &[mdd_storage::EntityRecord]) -> Vec<String> {
    let mut back = Vec::new();
    let mut watches = shared.keepalives();
    for (name, stored) in resume(entities, |_| None) {
        match watches.get_mut(&name) {
            Some(watch) if stored.last > watch.last => {
                watch.last = stored.last;
                watch.info = stored.info;
                if watch.reported != Status::Ok
                    && status_after(now_ms() - watch.last, &watch.info) == Status::Ok
                {
                    watch.reported = Status::Ok;
                    back.push(name);
                }
            }
            Some(_) => {}
            None => {
                watches.insert(name, stored);
            }
        }
    }
    back
}

/// The watches to resume after a restart, from what the store remembers.
pub fn resume(
    entities: &[mdd_storage::EntityRecord],
    reported: impl Fn(&str) -> Option<Status>,
) -> HashMap<String, Watch> {
    entities
        .iter()
        .filter_map(|e| {
            let info: AgentInfo = serde_json::from_str(e.info.as_deref()?).ok()?;
            Some((
                e.name.clone(),
                Watch {
                    last: e.last_keepalive?,
                    info,
                    reported: reported(&e.name).unwrap_or(Status::Ok),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_turns_warning_then_critical() {
        let info = AgentInfo {
            subscriptions: vec![],
            labels: BTreeMap::new(),
            facts: BTreeMap::new(),
            interval_s: 20.0,
            warning_s: 120.0,
            critical_s: 180.0,
            deregister: false,
        };
        assert!(info.validate().is_ok());
        assert_eq!(status_after(119_000, &info), Status::Ok);
        assert_eq!(status_after(121_000, &info), Status::Warning);
        assert_eq!(status_after(181_000, &info), Status::Critical);
        let backwards = AgentInfo {
            warning_s: 200.0,
            ..info
        };
        assert!(backwards.validate().is_err());
    }
}
