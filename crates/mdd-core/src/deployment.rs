//! How a deployment progresses: which of its checks have turned green and when, which went red
//! again, when the whole of it was done (every check passing for `settle`), and what regressed
//! after that.
//!
//! The server feeds a [`Track`] the current state of each selected check (worst over its
//! entities, with the time it entered that state) once a second; times come from the events,
//! so they are exact even though the feed is periodic. A flip that goes and comes back between
//! two feeds is not seen. Pure: no clock, the caller passes `now`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::State;

/// The most transitions a track keeps (oldest dropped): enough for a burn-up chart of a
/// deployment of thousands of checks.
pub const TIMELINE_LEN: usize = 10_000;

/// A selected check as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckNow {
    pub state: State,
    /// When it entered this state (ms since the epoch).
    pub since: i64,
}

/// What a deployment has been through; persisted by the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// When the server first saw the deployment in an applied spec.
    pub started_at: i64,
    /// When every check had been passing for `settle` (the moment it became done, not when it
    /// was noticed). Once done, a deployment stays done; later failures are regressions.
    pub done_at: Option<i64>,
    pub checks: BTreeMap<String, CheckTrack>,
    /// Every turn to green and back, oldest first, at most [`TIMELINE_LEN`].
    pub timeline: Vec<Transition>,
    /// Checks that stopped passing after the deployment was done.
    pub regressions: Vec<Regression>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckTrack {
    /// When it first passed since the deployment started.
    pub first_green_at: Option<i64>,
    pub passing: bool,
    /// How often it stopped passing after having passed.
    pub reds_after_green: u32,
    /// When it last turned (to green or away from it): a later turn is never dated before it.
    #[serde(default)]
    pub turned_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: i64,
    pub check: String,
    pub passing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regression {
    pub check: String,
    pub at: i64,
    pub resolved_at: Option<i64>,
}

impl Track {
    pub fn new(started_at: i64) -> Track {
        Track {
            started_at,
            ..Track::default()
        }
    }

    /// Brings the track up to date with the selected checks as they are `now`. Returns whether
    /// anything changed (and should be stored).
    pub fn observe(
        &mut self,
        now: i64,
        settle: Duration,
        current: &BTreeMap<String, CheckNow>,
    ) -> bool {
        // Checks the spec no longer selects leave the track; their open regressions end.
        let tracked = self.checks.len();
        self.checks.retain(|name, _| current.contains_key(name));
        let mut changed = self.checks.len() != tracked;
        for regression in &mut self.regressions {
            if regression.resolved_at.is_none() && !current.contains_key(&regression.check) {
                regression.resolved_at = Some(now);
                changed = true;
            }
        }
        for (name, check) in current {
            let passing = check.state == State::Passing;
            let track = match self.checks.get_mut(name) {
                Some(track) => track,
                None => {
                    changed = true;
                    self.checks.entry(name.clone()).or_default()
                }
            };
            if passing == track.passing {
                continue;
            }
            changed = true;
            track.passing = passing;
            // History only moves forward: a turn is dated when the state began, but never
            // before the check's previous turn, never before done when seen after it (every
            // check passed then), and never in the future.
            let at = check
                .since
                .max(track.turned_at.unwrap_or(i64::MIN))
                .max(self.done_at.unwrap_or(i64::MIN))
                .min(now);
            track.turned_at = Some(at);
            if passing {
                track.first_green_at.get_or_insert(at);
            } else {
                track.reds_after_green += 1;
            }
            self.timeline.push(Transition {
                at,
                check: name.clone(),
                passing,
            });
        }
        if let Some(done_at) = self.done_at {
            changed |= self.follow_regressions(current, done_at, now);
        }
        if self.timeline.len() > TIMELINE_LEN {
            let excess = self.timeline.len() - TIMELINE_LEN;
            self.timeline.drain(..excess);
        }
        if self.done_at.is_none()
            && !current.is_empty()
            && current.values().all(|c| c.state == State::Passing)
        {
            let settle_ms = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
            let all_green_since = current.values().map(|c| c.since).max().unwrap_or(now);
            let done_at = all_green_since
                .max(self.started_at)
                .saturating_add(settle_ms);
            if now >= done_at {
                self.done_at = Some(done_at);
                changed = true;
            }
        }
        changed
    }

    /// After done, a check that stops passing regresses until it passes again. A blocked check
    /// does not: its blocker is the regression (one root cause, not a cascade); if it then
    /// fails on its own, it is one.
    /// A regression happens after done (never dated before it) and ends after it began.
    fn follow_regressions(
        &mut self,
        current: &BTreeMap<String, CheckNow>,
        done_at: i64,
        now: i64,
    ) -> bool {
        let mut changed = false;
        for (name, check) in current {
            let open = self
                .regressions
                .iter_mut()
                .find(|r| r.check == *name && r.resolved_at.is_none());
            match (check.state, open) {
                (State::Passing, Some(open)) => {
                    open.resolved_at = Some(check.since.max(open.at).min(now));
                    changed = true;
                }
                (State::Passing | State::Blocked, _) | (_, Some(_)) => {}
                (_, None) => {
                    self.regressions.push(Regression {
                        check: name.clone(),
                        at: check.since.max(done_at).min(now),
                        resolved_at: None,
                    });
                    changed = true;
                }
            }
        }
        changed
    }

    /// How many of the tracked checks pass now.
    pub fn green(&self) -> usize {
        self.checks.values().filter(|c| c.passing).count()
    }

    /// The regressions not resolved yet.
    pub fn open_regressions(&self) -> impl Iterator<Item = &Regression> {
        self.regressions.iter().filter(|r| r.resolved_at.is_none())
    }
}

/// The state a check shows for a deployment: the worst over its entities, since the earliest
/// time one of them turned that bad (or, when all pass, since the last one turned green).
pub fn combine(states: impl IntoIterator<Item = CheckNow>) -> Option<CheckNow> {
    states
        .into_iter()
        .reduce(|a, b| match a.state.severity().cmp(&b.state.severity()) {
            std::cmp::Ordering::Greater => a,
            std::cmp::Ordering::Less => b,
            std::cmp::Ordering::Equal => CheckNow {
                state: a.state,
                since: if a.state == State::Passing {
                    a.since.max(b.since)
                } else {
                    a.since.min(b.since)
                },
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(10);

    fn now(states: &[(&str, State, i64)]) -> BTreeMap<String, CheckNow> {
        states
            .iter()
            .map(|(name, state, since)| {
                (
                    name.to_string(),
                    CheckNow {
                        state: *state,
                        since: *since,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_deployment_is_done_once_everything_passed_for_settle() {
        let mut track = Track::new(1_000);
        assert!(track.observe(
            1_000,
            SETTLE,
            &now(&[
                ("dns", State::Failing, 1_000),
                ("ldap", State::Pending, 1_000)
            ])
        ));
        assert_eq!(track.green(), 0);
        track.observe(
            5_000,
            SETTLE,
            &now(&[
                ("dns", State::Passing, 4_000),
                ("ldap", State::Failing, 1_000),
            ]),
        );
        assert_eq!(track.checks["dns"].first_green_at, Some(4_000));
        assert_eq!(track.green(), 1);
        // All green at 7,000, but not for `settle` yet.
        let all_green = now(&[
            ("dns", State::Passing, 4_000),
            ("ldap", State::Passing, 7_000),
        ]);
        track.observe(16_999, SETTLE, &all_green);
        assert_eq!(track.done_at, None);
        // Noticed late, dated exactly: the moment the last check had passed for `settle`.
        assert!(track.observe(30_000, SETTLE, &all_green));
        assert_eq!(track.done_at, Some(17_000));
        assert!(!track.observe(31_000, SETTLE, &all_green), "nothing new");
        let turns: Vec<(i64, &str, bool)> = track
            .timeline
            .iter()
            .map(|t| (t.at, t.check.as_str(), t.passing))
            .collect();
        assert_eq!(turns, [(4_000, "dns", true), (7_000, "ldap", true)]);
    }

    #[test]
    fn a_red_during_settle_restarts_it_and_is_counted() {
        let mut track = Track::new(0);
        track.observe(1_000, SETTLE, &now(&[("dns", State::Passing, 1_000)]));
        track.observe(5_000, SETTLE, &now(&[("dns", State::Failing, 4_000)]));
        assert_eq!(track.checks["dns"].reds_after_green, 1);
        assert_eq!(track.checks["dns"].first_green_at, Some(1_000));
        track.observe(12_000, SETTLE, &now(&[("dns", State::Passing, 6_000)]));
        assert_eq!(track.done_at, None, "green again only since 6,000");
        track.observe(16_000, SETTLE, &now(&[("dns", State::Passing, 6_000)]));
        assert_eq!(track.done_at, Some(16_000));
        assert!(
            track.regressions.is_empty(),
            "reds before done are not regressions"
        );
    }

    #[test]
    fn failures_after_done_are_regressions_until_resolved() {
        let mut track = Track::new(0);
        track.observe(20_000, SETTLE, &now(&[("dns", State::Passing, 1_000)]));
        assert_eq!(track.done_at, Some(11_000));
        track.observe(30_000, SETTLE, &now(&[("dns", State::Warning, 29_000)]));
        assert_eq!(track.done_at, Some(11_000), "done stays done");
        assert_eq!(track.open_regressions().count(), 1);
        track.observe(40_000, SETTLE, &now(&[("dns", State::Passing, 35_000)]));
        assert_eq!(track.open_regressions().count(), 0);
        assert_eq!(
            track.regressions,
            [Regression {
                check: "dns".into(),
                at: 29_000,
                resolved_at: Some(35_000)
            }]
        );
    }

    #[test]
    fn a_blocked_check_is_not_a_regression_until_it_fails_on_its_own() {
        let mut track = Track::new(0);
        let green = now(&[("dns", State::Passing, 0), ("web", State::Passing, 0)]);
        track.observe(20_000, SETTLE, &green);
        assert!(track.done_at.is_some());
        track.observe(
            30_000,
            SETTLE,
            &now(&[
                ("dns", State::Failing, 25_000),
                ("web", State::Blocked, 25_000),
            ]),
        );
        let open: Vec<&str> = track.open_regressions().map(|r| r.check.as_str()).collect();
        assert_eq!(open, ["dns"]);
        assert_eq!(track.checks["web"].reds_after_green, 1, "it did go red");
        track.observe(
            40_000,
            SETTLE,
            &now(&[
                ("dns", State::Passing, 35_000),
                ("web", State::Failing, 35_000),
            ]),
        );
        let open: Vec<&str> = track.open_regressions().map(|r| r.check.as_str()).collect();
        assert_eq!(open, ["web"]);
    }

    #[test]
    fn an_empty_deployment_is_never_done_and_removed_checks_leave() {
        let mut track = Track::new(0);
        track.observe(100_000, SETTLE, &BTreeMap::new());
        assert_eq!(track.done_at, None);
        track.observe(
            1_000,
            SETTLE,
            &now(&[("dns", State::Passing, 0), ("old", State::Failing, 0)]),
        );
        track.observe(20_000, SETTLE, &now(&[("dns", State::Passing, 0)]));
        assert!(!track.checks.contains_key("old"));
        assert_eq!(track.done_at, Some(10_000));
    }

    #[test]
    fn the_worst_entity_decides_and_dates_the_state() {
        let combined = combine([
            CheckNow {
                state: State::Passing,
                since: 5,
            },
            CheckNow {
                state: State::Failing,
                since: 9,
            },
            CheckNow {
                state: State::Failing,
                since: 7,
            },
        ]);
        assert_eq!(
            combined,
            Some(CheckNow {
                state: State::Failing,
                since: 7
            })
        );
        let all_green = combine([
            CheckNow {
                state: State::Passing,
                since: 5,
            },
            CheckNow {
                state: State::Passing,
                since: 9,
            },
        ]);
        assert_eq!(all_green.map(|c| c.since), Some(9));
        assert_eq!(combine([]), None);
    }

    #[test]
    fn the_timeline_is_bounded() {
        let mut track = Track::new(0);
        for i in 0..(TIMELINE_LEN as i64 + 10) {
            let state = if i % 2 == 0 {
                State::Passing
            } else {
                State::Failing
            };
            track.observe(i, Duration::from_secs(3600), &now(&[("dns", state, i)]));
        }
        assert_eq!(track.timeline.len(), TIMELINE_LEN);
        assert_eq!(track.timeline[0].at, 10);
    }

    #[test]
    fn history_never_moves_backwards() {
        let mut track = Track::new(0);
        track.observe(20_000, SETTLE, &now(&[("dns", State::Passing, 1_000)]));
        assert_eq!(track.done_at, Some(11_000));
        // A state dated before the check's last turn, and before done (what a restart could
        // feed if it dated a state by an old change): dated no earlier than what is known.
        track.observe(30_000, SETTLE, &now(&[("dns", State::Stale, 500)]));
        assert_eq!(track.timeline.last().map(|t| t.at), Some(11_000));
        assert_eq!(track.regressions[0].at, 11_000, "never before done");
        track.observe(40_000, SETTLE, &now(&[("dns", State::Passing, 900)]));
        assert_eq!(track.regressions[0].resolved_at, Some(11_000));
        assert!(
            track.timeline.windows(2).all(|w| w[0].at <= w[1].at),
            "{:?}",
            track.timeline
        );
    }
}
