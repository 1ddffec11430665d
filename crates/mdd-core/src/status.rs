//! Statuses (what one result says, in Nagios terms) and states (what mdd concludes about a check).

use serde::{Deserialize, Serialize};

/// The status of one result, with Nagios plugin semantics: exit 0 OK, 1 WARNING, 2 CRITICAL,
/// anything else UNKNOWN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    /// Maps a plugin exit code to a status. A process killed by a signal has no exit code and is
    /// UNKNOWN: pass `None`.
    pub fn from_exit_code(code: Option<i32>) -> Status {
        match code {
            Some(0) => Status::Ok,
            Some(1) => Status::Warning,
            Some(2) => Status::Critical,
            _ => Status::Unknown,
        }
    }

    /// The Nagios exit code for this status, so results can be relayed to tools that speak it.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    /// The state a check is in when its latest result has this status.
    pub fn state(self) -> State {
        match self {
            Status::Ok => State::Passing,
            Status::Warning => State::Warning,
            Status::Critical => State::Failing,
            Status::Unknown => State::Unknown,
        }
    }
}

/// What mdd concludes about a check, the word used everywhere: spec, API, dashboard, reports.
/// `verify` uses the first six; the server adds stale, flapping and silenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Never ran (or the run was interrupted before it finished).
    Pending,
    Passing,
    Warning,
    Failing,
    Unknown,
    /// Not run because a dependency is not passing.
    Blocked,
    /// No result within its ttl.
    Stale,
    Flapping,
    Silenced,
}

impl State {
    /// How bad a state is, for "worst of" summaries (a datacenter tile, a check over its
    /// entities): failing is worst, passing best; states that say "we cannot tell" sit between.
    pub fn severity(self) -> u8 {
        match self {
            State::Passing => 0,
            State::Silenced => 1,
            State::Pending => 2,
            State::Blocked => 3,
            State::Flapping => 4,
            State::Warning => 5,
            State::Stale => 6,
            State::Unknown => 7,
            State::Failing => 8,
        }
    }

    pub const ALL: [State; 9] = [
        State::Pending,
        State::Passing,
        State::Warning,
        State::Failing,
        State::Unknown,
        State::Blocked,
        State::Stale,
        State::Flapping,
        State::Silenced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Passing => "passing",
            State::Warning => "warning",
            State::Failing => "failing",
            State::Unknown => "unknown",
            State::Blocked => "blocked",
            State::Stale => "stale",
            State::Flapping => "flapping",
            State::Silenced => "silenced",
        }
    }

    /// A mark that carries the state without colour, for people who cannot tell red from green
    /// and for logs that have no colour at all.
    pub fn mark(self) -> &'static str {
        match self {
            State::Passing => "✓",
            State::Failing => "✗",
            State::Warning => "!",
            State::Unknown => "?",
            State::Blocked => "⊘",
            State::Pending => "…",
            State::Stale => "⌛",
            State::Flapping => "~",
            State::Silenced => "-",
        }
    }

    /// An ASCII stand-in for [`State::mark`], for terminals and tools that cannot show Unicode.
    pub fn ascii_mark(self) -> &'static str {
        match self {
            State::Passing => "ok",
            State::Failing => "FAIL",
            State::Warning => "WARN",
            State::Unknown => "UNKN",
            State::Blocked => "BLKD",
            State::Pending => "PEND",
            State::Stale => "STALE",
            State::Flapping => "FLAP",
            State::Silenced => "SILN",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = State::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state `{s}`: expected one of {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_nagios() {
        assert_eq!(Status::from_exit_code(Some(0)), Status::Ok);
        assert_eq!(Status::from_exit_code(Some(1)), Status::Warning);
        assert_eq!(Status::from_exit_code(Some(2)), Status::Critical);
        assert_eq!(Status::from_exit_code(Some(3)), Status::Unknown);
        assert_eq!(Status::from_exit_code(Some(7)), Status::Unknown);
        assert_eq!(Status::from_exit_code(Some(-1)), Status::Unknown);
        assert_eq!(Status::from_exit_code(None), Status::Unknown);
        for status in [
            Status::Ok,
            Status::Warning,
            Status::Critical,
            Status::Unknown,
        ] {
            assert_eq!(Status::from_exit_code(Some(status.exit_code())), status);
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
        }
        assert!("green".parse::<State>().is_err());
    }
}
