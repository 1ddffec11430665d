//! What the API shows of events: derived states (blocked, stale, flapping) and JSON views.

use std::collections::BTreeMap;

use foldhash::HashMap as FastMap;

use mdd_core::State;
use mdd_core::event::Outage;
use serde::Serialize;

use crate::CachedEvent;
use crate::checks::CheckSet;

/// What the server knows of time when it works out states: now, and its last outage (time it
/// was down does not count against ttls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub now: i64,
    pub outage: Outage,
}

impl Clock {
    /// The wall clock alone, no outage known.
    pub fn at(now: i64) -> Clock {
        Clock {
            now,
            outage: Outage::NONE,
        }
    }
}

/// An event's state as shown, with what explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub state: State,
    /// The dependencies keeping it blocked.
    pub blocked_by: Vec<String>,
    /// When the state shown began (ms): the one meaning of "since" everywhere. The latest of:
    /// its status changed, it went stale or came back from stale, it was blocked, or what
    /// blocked it passed again.
    pub since: i64,
}

/// Works out the state of events, including `blocked` (a dependency not passing), which
/// depends on other events, and since when it holds. Remembers what it worked out for the
/// life of one request.
pub struct StateResolver<'a> {
    checks: &'a CheckSet,
    events: &'a crate::Events,
    clock: Clock,
    memo: FastMap<(&'a str, &'a str), Resolved>,
}

/// What a dependency means for a check that needs it.
struct Dependency {
    passing: bool,
    /// Passing: since when all of it passes; not: since when it has not been passing.
    since: i64,
}

impl<'a> StateResolver<'a> {
    pub fn new(checks: &'a CheckSet, events: &'a crate::Events, clock: Clock) -> StateResolver<'a> {
        StateResolver {
            checks,
            events,
            clock,
            memo: FastMap::default(),
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The state of the event for (check, entity), and the dependencies blocking it.
    pub fn state(&mut self, check: &'a str, entity: &'a str) -> (State, Vec<String>) {
        match self.resolve_key(check, entity) {
            Some(r) => (r.state, r.blocked_by),
            None => (State::Pending, Vec::new()),
        }
    }

    /// The state of an event already in hand. `config` is the event's check, which callers
    /// usually have at hand already.
    pub fn state_of(
        &mut self,
        cached: &'a CachedEvent,
        config: Option<&'a mdd_core::spec::Check>,
    ) -> (State, Vec<String>) {
        let resolved = self.resolve(cached, config);
        (resolved.state, resolved.blocked_by)
    }

    /// State, blockers and since of an event already in hand. Checks without dependencies
    /// (most of them) need no lookups and nothing remembered, which keeps listing ten thousand
    /// events cheap.
    pub fn resolve(
        &mut self,
        cached: &'a CachedEvent,
        config: Option<&'a mdd_core::spec::Check>,
    ) -> Resolved {
        match config {
            Some(config) if !config.depends_on.is_empty() => {
                let key = (cached.event.check.as_str(), cached.event.entity.as_str());
                if let Some(known) = self.memo.get(&key) {
                    return known.clone();
                }
                // A provisional answer guards against a dependency loop in data from an
                // older spec.
                self.memo.insert(
                    key,
                    Resolved {
                        state: State::Pending,
                        blocked_by: Vec::new(),
                        since: cached.event.first_seen,
                    },
                );
                let answer = self.with_dependencies(cached, config);
                self.memo.insert(key, answer.clone());
                answer
            }
            config => self.own(cached, config),
        }
    }

    /// A check that has no event at all: blocked while a dependency does not pass (waiting
    /// for it is the reason it has nothing to say), else pending since it was applied, and
    /// stale once it has gone a ttl without a first result (time the server was down not
    /// counted).
    pub fn absent(&mut self, check: &'a mdd_core::spec::Check) -> Resolved {
        let added_at = self.checks.added_at(&check.name);
        let mut blockers = Vec::new();
        let mut blocked_since = added_at;
        for dep in &check.depends_on {
            // No entity of its own: a dependency passes when all of its events pass.
            let dependency = self.dependency(dep, "");
            if !dependency.passing {
                blockers.push(dep.clone());
                blocked_since = blocked_since.max(dependency.since);
            }
        }
        if !blockers.is_empty() {
            return Resolved {
                state: State::Blocked,
                blocked_by: blockers,
                since: blocked_since,
            };
        }
        self.absent_alone(check)
    }

    /// `absent` without looking at dependencies: pending, or stale once overdue. The
    /// deployments' tracker counts only green or not, and has no events to look at.
    pub fn absent_alone(&self, check: &mdd_core::spec::Check) -> Resolved {
        let added_at = self.checks.added_at(&check.name);
        let stale_at = self.clock.outage.stale_at(added_at, check.effective_ttl());
        if self.clock.now > stale_at {
            Resolved {
                state: State::Stale,
                blocked_by: Vec::new(),
                since: stale_at,
            }
        } else {
            Resolved {
                state: State::Pending,
                blocked_by: Vec::new(),
                since: added_at,
            }
        }
    }

    fn resolve_key(&mut self, check: &'a str, entity: &'a str) -> Option<Resolved> {
        let (key, cached) = self
            .events
            .get_key_value(&(check.to_string(), entity.to_string()))?;
        debug_assert_eq!(key.0, check);
        let config = self.checks.get(check);
        Some(self.resolve(cached, config))
    }

    /// The event by itself: its status, stale or flapping, and since when.
    fn own(&self, cached: &CachedEvent, config: Option<&mdd_core::spec::Check>) -> Resolved {
        let ttl = config.map(|c| c.effective_ttl());
        let event = &cached.event;
        let state = event.own_state(self.clock.now, ttl, self.clock.outage);
        let since = match ttl {
            Some(ttl) if state == State::Stale => {
                self.clock.outage.stale_at(event.executed_at, ttl)
            }
            _ => event
                .status_since()
                .max(cached.fresh_since.unwrap_or(i64::MIN)),
        };
        Resolved {
            state,
            blocked_by: Vec::new(),
            since,
        }
    }

    fn with_dependencies(
        &mut self,
        cached: &'a CachedEvent,
        config: &'a mdd_core::spec::Check,
    ) -> Resolved {
        let own = self.own(cached, Some(config));
        let entity = cached.event.entity.as_str();
        let mut blockers = Vec::new();
        let mut blocked_since = i64::MAX;
        let mut unblocked_since = i64::MIN;
        for dep in &config.depends_on {
            let dependency = self.dependency(dep, entity);
            if dependency.passing {
                unblocked_since = unblocked_since.max(dependency.since);
            } else {
                blockers.push(dep.clone());
                blocked_since = blocked_since.min(dependency.since);
            }
        }
        if blockers.is_empty() {
            Resolved {
                since: own.since.max(unblocked_since),
                ..own
            }
        } else {
            Resolved {
                state: State::Blocked,
                blocked_by: blockers,
                since: blocked_since.max(cached.event.first_seen),
            }
        }
    }

    /// A dependency passes for an entity when its event for that entity passes; when it has no
    /// event there (it runs elsewhere, on the server for instance), when all of its events pass.
    fn dependency(&mut self, dep: &'a str, entity: &'a str) -> Dependency {
        let Some(dep_config) = self.checks.get(dep) else {
            // Not in the spec any more: it cannot block.
            return Dependency {
                passing: true,
                since: i64::MIN,
            };
        };
        let dep: &'a str = dep_config.name.as_str();
        if let Some(resolved) = self.resolve_key(dep, entity) {
            return Dependency {
                passing: resolved.state == State::Passing,
                since: resolved.since,
            };
        }
        let events: Vec<&'a CachedEvent> = self
            .events
            .range((dep.to_string(), String::new())..)
            .take_while(|((check, _), _)| check == dep)
            .map(|(_, e)| &**e)
            .collect();
        if events.is_empty() {
            // Never reported: it blocks from the start.
            return Dependency {
                passing: false,
                since: i64::MIN,
            };
        }
        let mut latest_green = i64::MIN;
        let mut earliest_red = None::<i64>;
        for event in events {
            let resolved = self.resolve(event, Some(dep_config));
            if resolved.state == State::Passing {
                latest_green = latest_green.max(resolved.since);
            } else {
                earliest_red = Some(earliest_red.map_or(resolved.since, |e| e.min(resolved.since)));
            }
        }
        match earliest_red {
            Some(since) => Dependency {
                passing: false,
                since,
            },
            None => Dependency {
                passing: true,
                since: latest_green,
            },
        }
    }
}

/// RFC 3339 (UTC, milliseconds) for a time in ms since the epoch, like
/// `2026-11-26T17:28:29.705Z`.
pub fn timestamp(ms: i64) -> String {
    let mut buffer = [0u8; 24];
    match write_timestamp(ms, &mut buffer) {
        Some(text) => text.to_string(),
        None => ms.to_string(),
    }
}

/// Writes the RFC 3339 form into `buffer`; None for years outside 0000-9999. Written out by
/// hand because lists format tens of thousands per request; the test checks it against jiff.
fn write_timestamp(ms: i64, buffer: &mut [u8; 24]) -> Option<&str> {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let fields = [
        (year, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (in_day / 3_600_000, 2, b':'),
        (in_day / 60_000 % 60, 2, b':'),
        (in_day / 1_000 % 60, 2, b'.'),
        (in_day % 1_000, 3, b'Z'),
    ];
    let mut at = 0;
    for (value, width, after) in fields {
        for place in (0..width).rev() {
            buffer[at] = b'0' + ((value / 10_i64.pow(place)) % 10) as u8;
            at += 1;
        }
        buffer[at] = after;
        at += 1;
    }
    std::str::from_utf8(&buffer[..at]).ok()
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn timestamps_match_jiff() {
        for ms in [
            0,
            951_782_400_000,   // 2000-02-29
            1_764_178_109_705, // an ordinary afternoon
            4_102_444_799_999, // the last ms of 2099
            -86_400_000,       // 1969-12-31
            1_709_251_199_999, // the end of a leap-year February
        ] {
            let expected = jiff::Timestamp::from_millisecond(ms)
                .expect("in range")
                .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(timestamp(ms), expected, "{ms}");
        }
    }
}

/// A time (ms since the epoch) that serializes as RFC 3339 without a heap allocation.
#[derive(Debug, Clone, Copy)]
pub struct Time(pub i64);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = [0u8; 24];
        match write_timestamp(self.0, &mut buffer) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.serialize_i64(self.0),
        }
    }
}

/// An event's history as bare statuses (`"ok"`, `"critical"`, … as everywhere in the API),
/// serialized straight from it.
#[derive(Debug, Clone, Copy)]
pub struct RecentStatuses<'a>(pub &'a [mdd_core::event::HistoryEntry]);

impl Serialize for RecentStatuses<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|h| h.status))
    }
}

/// One stored result as the API shows it: times in RFC 3339 and the status as a word, like
/// every other answer.
#[derive(Debug, Serialize)]
pub struct ResultView<'a> {
    pub id: &'a str,
    pub check: &'a str,
    pub entity: &'a str,
    pub status: mdd_core::Status,
    pub exit_code: Option<i32>,
    pub summary: &'a str,
    pub long_output: &'a str,
    pub perfdata: &'a [mdd_core::PerfDatum],
    /// What the plugin printed, as it printed it.
    pub output: String,
    pub duration_ms: f64,
    pub executed_at: Time,
    pub received_at: Time,
}

impl<'a> ResultView<'a> {
    pub fn new(result: &'a mdd_storage::StoredResult) -> ResultView<'a> {
        ResultView {
            id: &result.id,
            check: &result.check,
            entity: &result.entity,
            status: result.status,
            exit_code: result.exit_code,
            summary: &result.summary,
            long_output: &result.long_output,
            perfdata: &result.perfdata,
            output: if result.output.is_empty() {
                mdd_core::plugin_output::compose(
                    &result.summary,
                    &result.long_output,
                    &result.perfdata,
                )
            } else {
                result.output.clone()
            },
            duration_ms: result.duration_ms,
            executed_at: Time(result.executed_at),
            received_at: Time(result.received_at),
        }
    }
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
    /// When the state shown began (derived states included): the "since" of every view.
    pub since: Time,
    pub status: mdd_core::Status,
    pub summary: &'a str,
    /// Only in the one-event view (`GET /api/v1/events/{check}/{entity}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_output: Option<&'a str>,
    /// Only in the one-event view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perfdata: Option<&'a [mdd_core::PerfDatum]>,
    pub duration_ms: f64,
    pub executed_at: Time,
    pub occurrences: u32,
    pub occurrences_watermark: u32,
    /// The last 21 Nagios exit codes, oldest first: a compact history for lists.
    pub recent_statuses: RecentStatuses<'a>,
    /// The same history with times; only in the one-event view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryView>>,
    pub total_state_change: u32,
    pub flapping: bool,
    pub first_seen: Time,
    pub last_ok: Option<Time>,
    pub last_state_change: Option<Time>,
    /// The result this event was made from: GET /api/v1/results/{id}.
    pub last_result_id: &'a str,
    pub blocked_by: Vec<String>,
    pub owner: Option<&'a str>,
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// The silences in force over it: it is shown as it is, and not notified.
    pub silenced_by: Vec<String>,
}

impl<'a> EventView<'a> {
    /// `detail`: the one-event view, with long output, perfdata and timed history. Lists leave
    /// them out so that ten thousand events stay a small, fast document.
    pub fn new(
        cached: &'a CachedEvent,
        config: Option<&'a mdd_core::spec::Check>,
        resolved: Resolved,
        detail: bool,
    ) -> EventView<'a> {
        let event = &cached.event;
        let Resolved {
            state,
            blocked_by,
            since,
        } = resolved;
        EventView {
            check: &event.check,
            entity: &event.entity,
            state,
            since: Time(since),
            status: event.status,
            summary: &cached.summary,
            long_output: detail.then_some(cached.long_output.as_str()),
            perfdata: detail.then_some(cached.perfdata.as_slice()),
            duration_ms: cached.duration_ms,
            executed_at: Time(event.executed_at),
            occurrences: event.occurrences,
            occurrences_watermark: event.occurrences_watermark,
            recent_statuses: RecentStatuses(&event.history),
            history: detail.then(|| {
                event
                    .history
                    .iter()
                    .map(|h| HistoryView {
                        status: h.status,
                        executed_at: timestamp(h.executed_at),
                    })
                    .collect()
            }),
            total_state_change: event.total_state_change,
            flapping: event.flapping,
            first_seen: Time(event.first_seen),
            last_ok: event.last_ok.map(Time),
            last_state_change: event.last_state_change.map(Time),
            last_result_id: &event.last_result_id,
            blocked_by,
            owner: config.and_then(|c| c.owner.as_deref()),
            labels: config.map(|c| &c.labels),
            silenced_by: Vec::new(),
        }
    }
}

/// The windows availability is given over.
pub const AVAILABILITY_WINDOWS: [(&str, i64); 3] = [
    ("24h", 86_400_000),
    ("7d", 7 * 86_400_000),
    ("30d", 30 * 86_400_000),
];

/// The share of time `checks` were OK, from their results, over each of
/// [`AVAILABILITY_WINDOWS`] ending `now`: (window, None when no result in it, or 0..=1).
/// All the checks together: check-time OK over check-time covered.
pub async fn availability(
    store: &mdd_storage::Store,
    checks: &[&mdd_core::spec::Check],
    now: i64,
) -> Vec<(&'static str, Option<f64>)> {
    let caps: Vec<(&str, i64)> = checks
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                i64::try_from(c.effective_ttl().as_millis()).unwrap_or(i64::MAX),
            )
        })
        .collect();
    let mut answer = Vec::new();
    for (name, span) in AVAILABILITY_WINDOWS {
        let share = match store.availability(&caps, now - span, now).await {
            Ok(per_check) => {
                let (ok, total) = per_check
                    .values()
                    .fold((0i64, 0i64), |(o, t), (ok, total)| (o + ok, t + total));
                (total > 0).then(|| ok as f64 / total as f64)
            }
            Err(e) => {
                tracing::warn!("cannot work out availability: {e}");
                None
            }
        };
        answer.push((name, share));
    }
    answer
}

/// `99.82 %`, or `—` without results.
pub fn percent(share: Option<f64>) -> String {
    match share {
        Some(s) if s >= 1.0 => "100 %".to_string(),
        Some(s) => format!("{:.2} %", (s * 100.0).min(99.99)),
        None => "—".to_string(),
    }
}
