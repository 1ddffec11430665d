//! What the API shows of events: derived states (blocked, stale, flapping) and JSON views.

use std::collections::{BTreeMap, HashMap};

use mdd_core::State;
use serde::Serialize;

use crate::checks::CheckSet;
use crate::{CachedEvent, EventKey};

/// Works out the state of events, including `blocked` (a dependency not passing), which
/// depends on other events. Remembers what it worked out for the life of one request.
pub struct StateResolver<'a> {
    checks: &'a CheckSet,
    events: &'a BTreeMap<EventKey, CachedEvent>,
    now: i64,
    memo: HashMap<(&'a str, &'a str), (State, Vec<String>)>,
}

impl<'a> StateResolver<'a> {
    pub fn new(
        checks: &'a CheckSet,
        events: &'a BTreeMap<EventKey, CachedEvent>,
        now: i64,
    ) -> StateResolver<'a> {
        StateResolver {
            checks,
            events,
            now,
            memo: HashMap::new(),
        }
    }

    /// The state of the event for (check, entity), and the dependencies blocking it.
    pub fn state(&mut self, check: &'a str, entity: &'a str) -> (State, Vec<String>) {
        if let Some(known) = self.memo.get(&(check, entity)) {
            return known.clone();
        }
        // Provisional answer guards against a dependency loop in data from an older spec.
        self.memo
            .insert((check, entity), (State::Pending, Vec::new()));
        let answer = self.work_out(check, entity);
        self.memo.insert((check, entity), answer.clone());
        answer
    }

    fn work_out(&mut self, check: &'a str, entity: &'a str) -> (State, Vec<String>) {
        let Some(cached) = self.events.get(&(check.to_string(), entity.to_string())) else {
            return (State::Pending, Vec::new());
        };
        let config = self.checks.get(check);
        let mut blockers = Vec::new();
        if let Some(config) = config {
            for dep in &config.depends_on {
                if !self.dependency_passing(dep, entity) {
                    blockers.push(dep.clone());
                }
            }
        }
        if !blockers.is_empty() {
            return (State::Blocked, blockers);
        }
        let ttl = config.map(|c| c.effective_ttl());
        (cached.event.own_state(self.now, ttl), blockers)
    }

    /// A dependency passes for an entity when its event for that entity passes; when it has no
    /// event there (it runs elsewhere, on the server for instance), when all of its events pass.
    fn dependency_passing(&mut self, dep: &'a str, entity: &'a str) -> bool {
        let Some(dep_config) = self.checks.get(dep) else {
            return true; // not in the spec any more: it cannot block
        };
        let dep: &'a str = dep_config.name.as_str();
        if self
            .events
            .contains_key(&(dep.to_string(), entity.to_string()))
        {
            return self.state(dep, entity).0 == State::Passing;
        }
        let entities: Vec<&'a str> = self
            .events
            .range((dep.to_string(), String::new())..)
            .take_while(|((check, _), _)| check == dep)
            .map(|((_, e), _)| e.as_str())
            .collect();
        !entities.is_empty()
            && entities
                .into_iter()
                .all(|e| self.state(dep, e).0 == State::Passing)
    }
}

/// RFC 3339 for a time in ms since the epoch.
pub fn timestamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[derive(Debug, Serialize)]
pub struct HistoryView {
    pub status: mdd_core::Status,
    pub executed_at: String,
}

#[derive(Debug, Serialize)]
pub struct EventView<'a> {
    pub check: &'a str,
    pub entity: &'a str,
    pub state: State,
    pub status: mdd_core::Status,
    pub summary: &'a str,
    pub long_output: &'a str,
    pub perfdata: &'a [mdd_core::PerfDatum],
    pub duration_ms: f64,
    pub executed_at: String,
    pub occurrences: u32,
    pub occurrences_watermark: u32,
    pub history: Vec<HistoryView>,
    pub total_state_change: u32,
    pub flapping: bool,
    pub first_seen: String,
    pub last_ok: Option<String>,
    pub last_state_change: Option<String>,
    /// The result this event was made from: GET /api/v1/results/{id}.
    pub last_result_id: &'a str,
    pub blocked_by: Vec<String>,
    pub owner: Option<&'a str>,
    pub labels: Option<&'a BTreeMap<String, String>>,
}

impl<'a> EventView<'a> {
    pub fn new(
        cached: &'a CachedEvent,
        checks: &'a CheckSet,
        state: State,
        blocked_by: Vec<String>,
    ) -> EventView<'a> {
        let event = &cached.event;
        let config = checks.get(&event.check);
        EventView {
            check: &event.check,
            entity: &event.entity,
            state,
            status: event.status,
            summary: &cached.summary,
            long_output: &cached.long_output,
            perfdata: &cached.perfdata,
            duration_ms: cached.duration_ms,
            executed_at: timestamp(event.executed_at),
            occurrences: event.occurrences,
            occurrences_watermark: event.occurrences_watermark,
            history: event
                .history
                .iter()
                .map(|h| HistoryView {
                    status: h.status,
                    executed_at: timestamp(h.executed_at),
                })
                .collect(),
            total_state_change: event.total_state_change,
            flapping: event.flapping,
            first_seen: timestamp(event.first_seen),
            last_ok: event.last_ok.map(timestamp),
            last_state_change: event.last_state_change.map(timestamp),
            last_result_id: &event.last_result_id,
            blocked_by,
            owner: config.and_then(|c| c.owner.as_deref()),
            labels: config.map(|c| &c.labels),
        }
    }
}
