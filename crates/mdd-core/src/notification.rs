//! What a handler is told about an event, and when: the rules of notification, without I/O and
//! without a clock (the caller passes `now`), so every rule has a worked test.
//!
//! Per handler and event: an **incident** once the filter's states and occurrences allow it,
//! unless the event is silenced, blocked behind a failing dependency, or expected to be red;
//! **changed** when a notified incident changes status; a **reminder** at most every
//! `reminder` while it lasts; a **resolution** only for what was notified; while flapping,
//! only **flapping started** and **flapping ended**.

use crate::spec::HandlerFilter;
use crate::{State, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Incident,
    Changed,
    Reminder,
    Resolution,
    FlappingStarted,
    FlappingEnded,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Incident,
        Kind::Changed,
        Kind::Reminder,
        Kind::Resolution,
        Kind::FlappingStarted,
        Kind::FlappingEnded,
    ];

    /// The kind [`Kind::as_str`] names.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Incident => "incident",
            Kind::Changed => "changed",
            Kind::Reminder => "reminder",
            Kind::Resolution => "resolution",
            Kind::FlappingStarted => "flapping_started",
            Kind::FlappingEnded => "flapping_ended",
        }
    }
}

/// What a handler was last told about an event it notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub status: Status,
    pub notified_at: i64,
}

/// An event as it is now, and what it was before this result.
pub struct Seen<'a> {
    pub status: Status,
    /// Its derived state (blocked, stale, …).
    pub state: State,
    pub occurrences: u32,
    pub flapping: bool,
    pub previous_flapping: bool,
    /// Asked only when an incident would otherwise be notified (they cost a lookup).
    pub silenced: &'a dyn Fn() -> bool,
    pub expected_red: &'a dyn Fn() -> bool,
}

/// What to tell a handler now; `open` is its record of a notified incident for this event,
/// updated here.
pub fn decide(
    filter: &HandlerFilter,
    seen: &Seen<'_>,
    open: &mut Option<Open>,
    now: i64,
) -> Option<Kind> {
    let notified = |status| Open {
        status,
        notified_at: now,
    };
    if seen.flapping != seen.previous_flapping {
        if seen.flapping {
            if (seen.silenced)() {
                return None;
            }
            *open = Some(notified(seen.status));
            return Some(Kind::FlappingStarted);
        }
        if open.is_none() {
            return None;
        }
        if seen.status == Status::Ok {
            *open = None;
        }
        return Some(Kind::FlappingEnded);
    }
    if seen.flapping {
        return None;
    }
    if seen.status == Status::Ok {
        return open.take().map(|_| Kind::Resolution);
    }
    if let Some(known) = open {
        if known.status == seen.status {
            return None;
        }
        *known = notified(seen.status);
        return Some(Kind::Changed);
    }
    let quiet = seen.state == State::Blocked
        || seen.occurrences < filter.occurrences
        || (!filter.states.is_empty() && !filter.states.contains(&seen.state))
        || (seen.silenced)()
        || (seen.expected_red)();
    if quiet {
        return None;
    }
    *open = Some(notified(seen.status));
    Some(Kind::Incident)
}

/// Whether a reminder is due for a notified incident that still fails (and is not silenced):
/// at most every `filter.reminder`. Marks it reminded when it is.
pub fn reminder_due(filter: &HandlerFilter, open: &mut Open, now: i64) -> bool {
    let Some(every) = filter.reminder else {
        return false;
    };
    let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    if now - open.notified_at < every {
        return false;
    }
    open.notified_at = now;
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NO: &dyn Fn() -> bool = &|| false;
    const YES: &dyn Fn() -> bool = &|| true;

    fn seen(status: Status, state: State, occurrences: u32) -> Seen<'static> {
        Seen {
            status,
            state,
            occurrences,
            flapping: false,
            previous_flapping: false,
            silenced: NO,
            expected_red: NO,
        }
    }

    fn filter() -> HandlerFilter {
        HandlerFilter {
            occurrences: 1,
            ..HandlerFilter::default()
        }
    }

    #[test]
    fn an_incident_its_change_and_its_resolution_once_each() {
        let f = filter();
        let mut open = None;
        let crit = seen(Status::Critical, State::Failing, 1);
        assert_eq!(decide(&f, &crit, &mut open, 10), Some(Kind::Incident));
        assert_eq!(decide(&f, &crit, &mut open, 20), None, "once");
        let warn = seen(Status::Warning, State::Warning, 1);
        assert_eq!(decide(&f, &warn, &mut open, 30), Some(Kind::Changed));
        let ok = seen(Status::Ok, State::Passing, 1);
        assert_eq!(decide(&f, &ok, &mut open, 40), Some(Kind::Resolution));
        assert_eq!(decide(&f, &ok, &mut open, 50), None);
        assert_eq!(open, None);
    }

    #[test]
    fn what_keeps_an_incident_quiet() {
        let cases: [(&str, HandlerFilter, Seen<'static>); 5] = [
            (
                "before N occurrences",
                HandlerFilter {
                    occurrences: 3,
                    ..filter()
                },
                seen(Status::Critical, State::Failing, 2),
            ),
            (
                "a state the filter does not want",
                HandlerFilter {
                    states: vec![State::Failing],
                    ..filter()
                },
                seen(Status::Warning, State::Warning, 5),
            ),
            (
                "blocked behind a failing dependency",
                filter(),
                seen(Status::Critical, State::Blocked, 5),
            ),
            (
                "silenced",
                filter(),
                Seen {
                    silenced: YES,
                    ..seen(Status::Critical, State::Failing, 5)
                },
            ),
            (
                "expected red in an undone deployment",
                filter(),
                Seen {
                    expected_red: YES,
                    ..seen(Status::Critical, State::Failing, 5)
                },
            ),
        ];
        for (why, f, s) in cases {
            let mut open = None;
            assert_eq!(decide(&f, &s, &mut open, 0), None, "{why}");
            assert_eq!(open, None, "{why}");
            // And no resolution later for what was never notified.
            let ok = seen(Status::Ok, State::Passing, 1);
            assert_eq!(decide(&f, &ok, &mut open, 1), None, "{why}");
        }
        let f = HandlerFilter {
            occurrences: 3,
            ..filter()
        };
        let mut open = None;
        assert_eq!(
            decide(&f, &seen(Status::Critical, State::Failing, 3), &mut open, 0),
            Some(Kind::Incident),
            "at the third"
        );
    }

    #[test]
    fn flapping_is_told_at_its_start_and_end_only() {
        let f = filter();
        let mut open = None;
        let start = Seen {
            flapping: true,
            ..seen(Status::Critical, State::Flapping, 1)
        };
        assert_eq!(
            decide(&f, &start, &mut open, 0),
            Some(Kind::FlappingStarted)
        );
        let during = Seen {
            flapping: true,
            previous_flapping: true,
            ..seen(Status::Ok, State::Flapping, 1)
        };
        assert_eq!(decide(&f, &during, &mut open, 1), None);
        let end = Seen {
            previous_flapping: true,
            ..seen(Status::Ok, State::Passing, 4)
        };
        assert_eq!(decide(&f, &end, &mut open, 2), Some(Kind::FlappingEnded));
        assert_eq!(open, None, "ended passing: nothing left open");
        let mut never = None;
        assert_eq!(
            decide(&f, &end, &mut never, 3),
            None,
            "an end without a start told"
        );
    }

    #[test]
    fn reminders_keep_their_cadence_on_an_injected_clock() {
        let f = HandlerFilter {
            reminder: Some(Duration::from_secs(30 * 60)),
            ..filter()
        };
        let minute = 60_000;
        let mut open = Open {
            status: Status::Critical,
            notified_at: 0,
        };
        let due: Vec<i64> = (0..=95)
            .map(|m| m * minute)
            .filter(|&now| reminder_due(&f, &mut open, now))
            .collect();
        assert_eq!(due, [30 * minute, 60 * minute, 90 * minute]);
        let mut quiet = Open {
            status: Status::Critical,
            notified_at: 0,
        };
        assert!(
            !reminder_due(&filter(), &mut quiet, 10_000 * minute),
            "no reminder set"
        );
    }
}
