//! The event state machine: the latest state of one (check, entity) pair, updated by each result.
//!
//! Semantics follow Sensu Go so that handlers and operators find what they know:
//! - `occurrences` counts consecutive results with the same status, OK included; a change of
//!   status starts again at 1.
//! - `occurrences_watermark` is the highest `occurrences` of the current incident: it resets to 1
//!   on the first non-OK status after an OK, never between non-OK statuses, and otherwise rises
//!   with `occurrences`. After a resolution it keeps the incident's peak until the next incident.
//! - `history` keeps the last 21 statuses; flapping is Nagios' weighted percent state change over
//!   them (weights 0.80 for the oldest change to 1.20 for the newest, needs 21 entries), with
//!   hysteresis: flapping starts at `high_flap_threshold` and ends below or at `low_flap_threshold`.
//!
//! Pure: times are milliseconds since the Unix epoch, passed in by the caller.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::status::{State, Status};

/// How many statuses an event remembers for flap detection and display.
pub const HISTORY_LEN: usize = 21;

/// How far ahead of the server's clock a result may be dated: clocks differ by a little
/// (NTP keeps them within milliseconds; a host that lost it drifts by seconds a day), not by
/// years. Results beyond it are refused, and one already stored holds nothing back.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// One status in an event's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub status: Status,
    /// When the result was produced, ms since the epoch.
    pub executed_at: i64,
}

/// Flap detection thresholds in percent; 0 for either disables flap detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FlapThresholds {
    pub low: u32,
    pub high: u32,
}

impl FlapThresholds {
    pub fn enabled(self) -> bool {
        self.low > 0 && self.high > 0
    }
}

/// What the state machine needs to know of one result.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation<'a> {
    pub result_id: &'a str,
    pub status: Status,
    pub executed_at: i64,
}

/// The latest state of one (check, entity) pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub check: String,
    pub entity: String,
    pub status: Status,
    /// The result that made this event what it is.
    pub last_result_id: String,
    pub executed_at: i64,
    pub occurrences: u32,
    pub occurrences_watermark: u32,
    /// Oldest first, at most [`HISTORY_LEN`].
    pub history: Vec<HistoryEntry>,
    /// Weighted percent state change over the history (0-100).
    pub total_state_change: u32,
    pub flapping: bool,
    pub first_seen: i64,
    /// When the last OK result was produced.
    pub last_ok: Option<i64>,
    /// When the status last changed (or flapping started or ended).
    pub last_state_change: Option<i64>,
}

/// What a result did to an event, for whoever reacts to changes (notifications, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The first result for this pair.
    Created,
    /// The status changed from the given one.
    StatusChanged {
        from: Status,
    },
    FlappingStarted,
    FlappingEnded,
    /// Same status as before.
    Unchanged,
    /// The result is older than the event's latest; it is kept as history elsewhere but does not
    /// move the event backwards in time.
    OutOfOrder,
}

impl Event {
    /// The event made by the first result of a (check, entity) pair.
    pub fn new(check: &str, entity: &str, observation: &Observation<'_>) -> Event {
        let mut event = Event {
            check: check.to_string(),
            entity: entity.to_string(),
            status: observation.status,
            last_result_id: observation.result_id.to_string(),
            executed_at: observation.executed_at,
            occurrences: 0,
            occurrences_watermark: 0,
            history: Vec::with_capacity(HISTORY_LEN),
            total_state_change: 0,
            flapping: false,
            first_seen: observation.executed_at,
            last_ok: None,
            last_state_change: None,
        };
        event.record(observation, FlapThresholds::default());
        event
    }

    /// Applies a newer result. Results older than the latest one do not change the event.
    pub fn apply(&mut self, observation: &Observation<'_>, flap: FlapThresholds) -> Change {
        self.apply_at(observation, flap, i64::MAX)
    }

    /// [`Event::apply`] `now`: a latest result dated more than [`MAX_CLOCK_SKEW`] after `now`
    /// came from a wrong clock, so it holds nothing back — whatever comes next is newer. A
    /// result from a clock years ahead must not pin its event for good.
    pub fn apply_at(
        &mut self,
        observation: &Observation<'_>,
        flap: FlapThresholds,
        now: i64,
    ) -> Change {
        let skew = i64::try_from(MAX_CLOCK_SKEW.as_millis()).unwrap_or(i64::MAX);
        let trusted = self.executed_at <= now.saturating_add(skew);
        if trusted && observation.executed_at < self.executed_at {
            return Change::OutOfOrder;
        }
        let previous_status = self.status;
        let was_flapping = self.flapping;
        self.record(observation, flap);
        if self.flapping != was_flapping {
            self.last_state_change = Some(observation.executed_at);
            return if self.flapping {
                Change::FlappingStarted
            } else {
                Change::FlappingEnded
            };
        }
        if previous_status != observation.status {
            self.last_state_change = Some(observation.executed_at);
            Change::StatusChanged {
                from: previous_status,
            }
        } else {
            Change::Unchanged
        }
    }

    fn record(&mut self, observation: &Observation<'_>, flap: FlapThresholds) {
        let previous = self.history.last().map(|h| h.status);
        self.history.push(HistoryEntry {
            status: observation.status,
            executed_at: observation.executed_at,
        });
        if self.history.len() > HISTORY_LEN {
            let excess = self.history.len() - HISTORY_LEN;
            self.history.drain(..excess);
        }
        self.status = observation.status;
        self.executed_at = observation.executed_at;
        self.last_result_id = observation.result_id.to_string();

        self.occurrences = match previous {
            Some(p) if p == observation.status => self.occurrences.saturating_add(1),
            _ => 1,
        };
        let new_incident = previous == Some(Status::Ok) && observation.status != Status::Ok;
        if new_incident {
            self.occurrences_watermark = 1;
        } else if self.occurrences > self.occurrences_watermark {
            self.occurrences_watermark = self.occurrences;
        }

        self.total_state_change = total_state_change(&self.history);
        self.flapping = flap.enabled()
            && if self.flapping {
                self.total_state_change > flap.low
            } else {
                self.total_state_change >= flap.high
            };
        if observation.status == Status::Ok {
            self.last_ok = Some(observation.executed_at);
        }
    }

    /// The state this event is in by itself (not blocked, not silenced): stale when no result
    /// came within `ttl` (time the server was down not counted, see [`Outage`]), flapping, or
    /// what its status says.
    pub fn own_state(&self, now: i64, ttl: Option<Duration>, outage: Outage) -> State {
        if let Some(ttl) = ttl
            && now > outage.stale_at(self.executed_at, ttl)
        {
            return State::Stale;
        }
        if self.flapping {
            return State::Flapping;
        }
        self.status.state()
    }

    /// When the status (or flapping) last changed: since when what the event says has held.
    pub fn status_since(&self) -> i64 {
        self.last_state_change.unwrap_or(self.first_seen)
    }
}

/// The server's last outage: it stopped (or was killed) at `down_at` and started again at
/// `up_at`. While it is down nobody can report to it, so that time does not count against a
/// check's ttl: a check that was not stale when the server stopped gets a whole ttl after the
/// start before it is called stale. One that was already stale stays stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub down_at: i64,
    pub up_at: i64,
}

impl Outage {
    /// No outage known: ttls run on the wall clock alone.
    pub const NONE: Outage = Outage {
        down_at: i64::MIN,
        up_at: i64::MIN,
    };

    /// When an event whose latest result was produced at `executed_at` goes stale.
    pub fn stale_at(self, executed_at: i64, ttl: Duration) -> i64 {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let due = executed_at.saturating_add(ttl_ms);
        if due <= self.down_at || executed_at >= self.up_at {
            due
        } else {
            due.max(self.up_at.saturating_add(ttl_ms))
        }
    }
}

/// Nagios' weighted percent state change over a history, oldest first. 0 with fewer than 21
/// entries, so that a new check never starts out flapping.
pub fn total_state_change(history: &[HistoryEntry]) -> u32 {
    if history.len() < HISTORY_LEN {
        return 0;
    }
    let mut changes = 0.0f64;
    let mut weight = 0.80f64;
    for pair in history.windows(2) {
        if pair[0].status != pair[1].status {
            changes += weight;
        }
        weight += 0.02;
    }
    // A small epsilon so that float rounding never drops a whole percent (20 changes = 100%).
    ((changes / 20.0) * 100.0 + 1e-9) as u32
}

/// The default ttl of a check that runs on an interval: two missed runs and a timeout.
pub fn default_ttl(interval: Duration, timeout: Duration) -> Duration {
    interval * 2 + timeout
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Critical as C, Ok as O, Unknown as U, Warning as W};

    fn run(statuses: &[Status], flap: FlapThresholds) -> Vec<(Event, Change)> {
        let mut out: Vec<(Event, Change)> = Vec::new();
        for (i, status) in statuses.iter().enumerate() {
            let id = format!("r{i}");
            let observation = Observation {
                result_id: &id,
                status: *status,
                executed_at: 1_000 * i as i64,
            };
            match out.last() {
                None => out.push((Event::new("c", "e", &observation), Change::Created)),
                Some((event, _)) => {
                    let mut event = event.clone();
                    let change = event.apply(&observation, flap);
                    out.push((event, change));
                }
            }
        }
        out
    }

    /// Sensu's occurrences table: status, occurrences, watermark after each result.
    #[test]
    fn occurrences_and_watermark() {
        let table = [
            (O, 1, 1),
            (O, 2, 2),
            (W, 1, 1), // a new incident resets the watermark
            (W, 2, 2),
            (W, 3, 3),
            (C, 1, 3), // not between non-OK statuses
            (C, 2, 3),
            (C, 3, 3),
            (C, 4, 4),
            (U, 1, 4),
            (O, 1, 4), // the resolution keeps the incident's peak
            (O, 2, 4),
            (O, 3, 4),
            (C, 1, 1), // the next incident starts again
        ];
        let statuses: Vec<Status> = table.iter().map(|t| t.0).collect();
        for (i, ((event, _), (status, occurrences, watermark))) in
            run(&statuses, FlapThresholds::default())
                .iter()
                .zip(table)
                .enumerate()
        {
            assert_eq!(event.status, status, "row {i}");
            assert_eq!(
                (event.occurrences, event.occurrences_watermark),
                (occurrences, watermark),
                "row {i}: {status:?}"
            );
        }
    }

    #[test]
    fn changes_and_times() {
        let events = run(&[O, O, C, C, O], FlapThresholds::default());
        let changes: Vec<Change> = events.iter().map(|(_, c)| *c).collect();
        assert_eq!(
            changes,
            [
                Change::Created,
                Change::Unchanged,
                Change::StatusChanged { from: O },
                Change::Unchanged,
                Change::StatusChanged { from: C },
            ]
        );
        let last = &events[4].0;
        assert_eq!(last.first_seen, 0);
        assert_eq!(last.last_ok, Some(4_000));
        assert_eq!(last.last_state_change, Some(4_000));
        assert_eq!(last.last_result_id, "r4");
        assert_eq!(
            events[3].0.last_ok,
            Some(1_000),
            "last_ok is the last OK, not the last result"
        );
    }

    #[test]
    fn history_keeps_the_last_21() {
        let statuses = vec![O; 30];
        let (event, _) = run(&statuses, FlapThresholds::default())
            .pop()
            .expect("events");
        assert_eq!(event.history.len(), HISTORY_LEN);
        assert_eq!(event.history[0].executed_at, 9_000);
        assert_eq!(event.occurrences, 30);
    }

    #[test]
    fn out_of_order_results_do_not_move_the_event_back() {
        let mut event = Event::new(
            "c",
            "e",
            &Observation {
                result_id: "new",
                status: O,
                executed_at: 5_000,
            },
        );
        let change = event.apply(
            &Observation {
                result_id: "old",
                status: C,
                executed_at: 4_000,
            },
            FlapThresholds::default(),
        );
        assert_eq!(change, Change::OutOfOrder);
        assert_eq!((event.status, event.last_result_id.as_str()), (O, "new"));
    }

    /// Percent state change: 21 alternating statuses change 20 times, weights 0.80..1.18 sum
    /// to 19.8, which is 99%; steady histories are 0%; fewer than 21 entries are always 0%.
    #[test]
    fn percent_state_change() {
        let entries = |statuses: &[Status]| -> Vec<HistoryEntry> {
            statuses
                .iter()
                .map(|s| HistoryEntry {
                    status: *s,
                    executed_at: 0,
                })
                .collect()
        };
        let alternating: Vec<Status> = (0..21).map(|i| if i % 2 == 0 { O } else { C }).collect();
        assert_eq!(total_state_change(&entries(&alternating)), 99);
        assert_eq!(total_state_change(&entries(&[O; 21])), 0);
        assert_eq!(total_state_change(&entries(&alternating[..20])), 0);
        // One change at the newest end weighs 1.18 (5%), at the oldest 0.80 (4%).
        let mut newest = vec![O; 21];
        newest[20] = C;
        assert_eq!(total_state_change(&entries(&newest)), 5);
        let mut oldest = vec![C; 21];
        oldest[0] = O;
        assert_eq!(total_state_change(&entries(&oldest)), 4);
    }

    #[test]
    fn flapping_starts_at_high_and_ends_at_low() {
        let flap = FlapThresholds { low: 10, high: 30 };
        // 21 steady results, then alternate until flapping, then settle until it ends.
        let mut statuses = vec![O; 21];
        statuses.extend((0..10).map(|i| if i % 2 == 0 { C } else { O }));
        statuses.extend(vec![O; 21]);
        let events = run(&statuses, flap);
        let started = events
            .iter()
            .position(|(_, c)| *c == Change::FlappingStarted)
            .expect("starts");
        let ended = events
            .iter()
            .position(|(_, c)| *c == Change::FlappingEnded)
            .expect("ends");
        assert!(started > 21 && ended > started, "{started} {ended}");
        assert!(events[started].0.total_state_change >= 30);
        assert!(events[ended].0.total_state_change <= 10);
        // In between it stays flapping even when the percentage dips below high.
        assert!(events[started..ended].iter().all(|(e, _)| e.flapping));
        assert_eq!(
            events[started].0.own_state(0, None, Outage::NONE),
            State::Flapping
        );
        // Disabled thresholds never flap.
        assert!(
            run(&statuses, FlapThresholds::default())
                .iter()
                .all(|(e, _)| !e.flapping)
        );
    }

    #[test]
    fn stale_when_no_result_within_ttl() {
        let event = Event::new(
            "c",
            "e",
            &Observation {
                result_id: "r",
                status: O,
                executed_at: 0,
            },
        );
        let ttl = Some(Duration::from_secs(70));
        assert_eq!(event.own_state(70_000, ttl, Outage::NONE), State::Passing);
        assert_eq!(event.own_state(70_001, ttl, Outage::NONE), State::Stale);
        assert_eq!(
            event.own_state(1_000_000, None, Outage::NONE),
            State::Passing
        );
        assert_eq!(
            default_ttl(Duration::from_secs(30), Duration::from_secs(10)),
            Duration::from_secs(70)
        );
    }

    #[test]
    fn time_the_server_was_down_does_not_count_against_the_ttl() {
        let ttl = Duration::from_secs(10);
        // Down from 100 s to 1,000 s.
        let outage = Outage {
            down_at: 100_000,
            up_at: 1_000_000,
        };
        // Fresh when it stopped: a whole ttl after the start.
        assert_eq!(outage.stale_at(95_000, ttl), 1_010_000);
        // Already stale when it stopped: stale it stays, dated as it was.
        assert_eq!(outage.stale_at(80_000, ttl), 90_000);
        // Produced during the outage (an agent's spool) or after it: the ttl as usual, at least
        // a ttl after the start.
        assert_eq!(outage.stale_at(500_000, ttl), 1_010_000);
        assert_eq!(outage.stale_at(2_000_000, ttl), 2_010_000);
        assert_eq!(Outage::NONE.stale_at(95_000, ttl), 105_000);
        let event = Event::new(
            "c",
            "e",
            &Observation {
                result_id: "r",
                status: O,
                executed_at: 95_000,
            },
        );
        assert_eq!(
            event.own_state(1_005_000, Some(ttl), outage),
            State::Passing
        );
        assert_eq!(
            event.own_state(1_005_000, Some(ttl), Outage::NONE),
            State::Stale
        );
    }

    #[test]
    fn a_result_from_the_far_future_pins_nothing() {
        let far = 32_503_680_000_000; // 3000-01-01
        let mut event = Event::new(
            "c",
            "e",
            &Observation {
                result_id: "future",
                status: C,
                executed_at: far,
            },
        );
        let now = 1_800_000_000_000;
        let next = Observation {
            result_id: "now",
            status: O,
            executed_at: now,
        };
        assert_eq!(
            event.clone().apply(&next, FlapThresholds::default()),
            Change::OutOfOrder,
            "without a clock, the far future still wins"
        );
        let change = event.apply_at(&next, FlapThresholds::default(), now);
        assert_eq!(change, Change::StatusChanged { from: C });
        assert_eq!((event.status, event.executed_at), (O, now));
        // Within the allowance, order holds as before.
        let older = Observation {
            result_id: "older",
            status: C,
            executed_at: now - 1,
        };
        assert_eq!(
            event.apply_at(&older, FlapThresholds::default(), now),
            Change::OutOfOrder
        );
    }
}
