//! The report of a verify run, and its renderings. Each format is one module with a `render`
//! function over the same [`Report`], with snapshot tests of its exact output.

mod json;
mod junit;
mod tap;
mod text;

use std::collections::BTreeMap;
use std::time::Duration;

use mdd_core::{ProbeResult, State};

pub use text::TextStyle;

/// The outcome of a verify run: every check's final state, result and time to green.
#[derive(Debug, Clone)]
pub struct Report {
    pub started_at: jiff::Timestamp,
    pub duration: Duration,
    pub rounds: u32,
    /// Ctrl-C stopped the run; checks that had not finished are `pending`.
    pub interrupted: bool,
    /// `--wait` ran out before everything was green.
    pub timed_out: bool,
    pub allow_warning: bool,
    pub checks: Vec<CheckReport>,
}

#[derive(Debug, Clone)]
pub struct CheckReport {
    pub name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub runbook: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The probe kind: command, http, tcp, dns, tls.
    pub probe: String,
    /// What the probe looks at, in one line.
    pub target: String,
    /// `file:line` where the check is written.
    pub source: String,
    pub state: State,
    /// The last result; `None` when the check never ran.
    pub result: Option<ProbeResult>,
    /// The dependencies that were not green, when `state` is blocked.
    pub blocked_by: Vec<String>,
    /// How many times the probe ran.
    pub attempts: u32,
    /// Time from the start of the run to the first green result.
    pub time_to_green: Option<Duration>,
    /// The round in which the check first turned green (1 = green from the start).
    pub green_in_round: Option<u32>,
}

impl CheckReport {
    pub fn summary(&self) -> String {
        match (&self.result, self.state) {
            (_, State::Blocked) => format!("blocked by {}", self.blocked_by.join(", ")),
            (Some(r), _) => r.summary.clone(),
            (None, _) => "not run".to_string(),
        }
    }

    pub fn owner_or_default(&self) -> &str {
        self.owner.as_deref().unwrap_or("(no owner)")
    }
}

/// Counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub checks: usize,
    pub passing: usize,
    pub warning: usize,
    pub failing: usize,
    pub unknown: usize,
    pub blocked: usize,
    pub pending: usize,
}

impl Report {
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            checks: self.checks.len(),
            ..Totals::default()
        };
        for check in &self.checks {
            match check.state {
                State::Passing => t.passing += 1,
                State::Warning => t.warning += 1,
                State::Failing => t.failing += 1,
                State::Unknown => t.unknown += 1,
                State::Blocked => t.blocked += 1,
                _ => t.pending += 1,
            }
        }
        t
    }

    /// Whether this check counts as green under the run's options.
    pub fn is_green(&self, check: &CheckReport) -> bool {
        check.state == State::Passing || (self.allow_warning && check.state == State::Warning)
    }

    /// All checks green: what exit code 0 means.
    pub fn passed(&self) -> bool {
        !self.interrupted && self.checks.iter().all(|c| self.is_green(c))
    }
}

/// The report formats `--format` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Junit,
    Tap,
}

impl Format {
    pub fn render(self, report: &Report, style: TextStyle) -> String {
        match self {
            Format::Text => text::render(report, style),
            Format::Json => json::render(report),
            Format::Junit => junit::render(report),
            Format::Tap => tap::render(report),
        }
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    use std::time::Duration;

    use mdd_core::{PerfDatum, ProbeResult, State, Status};

    use super::{CheckReport, Report};

    fn check(name: &str, owner: Option<&str>, state: State) -> CheckReport {
        CheckReport {
            name: name.to_string(),
            description: None,
            owner: owner.map(str::to_string),
            runbook: None,
            labels: [("datacenter".to_string(), "ams1".to_string())].into(),
            probe: "tcp".into(),
            target: format!("{name}.ams1.example:443"),
            source: "spec.yaml:3".into(),
            state,
            result: None,
            blocked_by: Vec::new(),
            attempts: 1,
            time_to_green: None,
            green_in_round: None,
        }
    }

    /// A report with one check in every verify state, fixed times, for snapshot tests.
    pub fn report() -> Report {
        let ok = ProbeResult::new(
            Status::Ok,
            "connected to dns:53 in 12ms",
            Duration::from_millis(12),
        )
        .with_perfdata(PerfDatum::new("time", 0.012, "s"));
        let mut dns = check("ams1-dns", Some("network"), State::Passing);
        dns.result = Some(ok);
        dns.attempts = 3;
        dns.time_to_green = Some(Duration::from_millis(10_500));
        dns.green_in_round = Some(3);
        dns.description = Some("Internal resolvers answer.".into());

        let mut ldap = check("ams1-ldap", Some("identity"), State::Failing);
        ldap.result = Some(
            ProbeResult::new(
                Status::Critical,
                "cannot connect to ldap.ams1.example:636: connection refused",
                Duration::from_millis(3),
            )
            .with_long_output("line one\nline <two> & \"three\""),
        );
        ldap.runbook = Some("https://wiki.example/ldap".into());
        ldap.attempts = 3;

        let mut registry = check("ams1-registry", Some("platform"), State::Blocked);
        registry.blocked_by = vec!["ams1-ldap".into()];
        registry.attempts = 0;

        let mut cert = check("ams1-registry-cert", Some("platform"), State::Warning);
        cert.result = Some(ProbeResult::new(
            Status::Warning,
            "certificate expires in 10 days",
            Duration::from_millis(40),
        ));

        let mut disk = check("docker-host-disk", None, State::Unknown);
        let mut unknown = ProbeResult::new(
            Status::Unknown,
            "plugin not found: /usr/lib/nagios/plugins/check_disk",
            Duration::from_millis(1),
        );
        unknown.exit_code = None;
        disk.result = Some(unknown);
        disk.probe = "command".into();

        Report {
            started_at: "2026-11-26T10:00:00Z".parse().expect("timestamp"),
            duration: Duration::from_millis(12_340),
            rounds: 3,
            interrupted: false,
            timed_out: true,
            allow_warning: false,
            checks: vec![dns, ldap, registry, cert, disk],
        }
    }
}
