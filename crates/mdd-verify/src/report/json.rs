//! The JSON report: a stable document for machines, described in docs/verify-json.md.
//! Fields are only ever added; version 1 stays version 1.

use mdd_core::State;
use mdd_core::perfdata::PerfDatum;
use serde::Serialize;

use super::{Report, Totals};

#[derive(Serialize)]
struct Document<'a> {
    mdd_verify: u32,
    started_at: String,
    duration_ms: u128,
    rounds: u32,
    passed: bool,
    interrupted: bool,
    timed_out: bool,
    allow_warning: bool,
    totals: Totals,
    checks: Vec<Check<'a>>,
}

#[derive(Serialize)]
struct Check<'a> {
    name: &'a str,
    state: State,
    green: bool,
    owner: Option<&'a str>,
    description: Option<&'a str>,
    runbook: Option<&'a str>,
    labels: &'a std::collections::BTreeMap<String, String>,
    probe: &'a str,
    target: &'a str,
    source: &'a str,
    summary: String,
    /// The Nagios status of the last result; null when the check never ran.
    status: Option<mdd_core::Status>,
    exit_code: Option<i32>,
    long_output: Option<&'a str>,
    perfdata: &'a [PerfDatum],
    duration_ms: Option<u128>,
    attempts: u32,
    time_to_green_ms: Option<u128>,
    green_in_round: Option<u32>,
    blocked_by: &'a [String],
}

pub(crate) fn render(report: &Report) -> String {
    let document = Document {
        mdd_verify: 1,
        started_at: report.started_at.to_string(),
        duration_ms: report.duration.as_millis(),
        rounds: report.rounds,
        passed: report.passed(),
        interrupted: report.interrupted,
        timed_out: report.timed_out,
        allow_warning: report.allow_warning,
        totals: report.totals(),
        checks: report
            .checks
            .iter()
            .map(|c| {
                let ran = c.result.as_ref();
                Check {
                    name: &c.name,
                    state: c.state,
                    green: report.is_green(c),
                    owner: c.owner.as_deref(),
                    description: c.description.as_deref(),
                    runbook: c.runbook.as_deref(),
                    labels: &c.labels,
                    probe: &c.probe,
                    target: &c.target,
                    source: &c.source,
                    summary: c.summary(),
                    status: ran.map(|r| r.status),
                    exit_code: ran.and_then(|r| r.exit_code),
                    long_output: ran
                        .map(|r| r.long_output.as_str())
                        .filter(|s| !s.is_empty()),
                    perfdata: ran.map_or(&[], |r| r.perfdata.as_slice()),
                    duration_ms: ran.map(|r| r.duration.as_millis()),
                    attempts: c.attempts,
                    time_to_green_ms: c.time_to_green.map(|d| d.as_millis()),
                    green_in_round: c.green_in_round,
                    blocked_by: &c.blocked_by,
                }
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_else(|e| {
        // Serializing plain structs of strings and numbers cannot fail; say so loudly if it does.
        format!("{{\"error\": \"cannot render the report: {e}\"}}")
    });
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    #[test]
    fn document() {
        insta::assert_snapshot!(render(&fixture::report()));
    }

    #[test]
    fn is_valid_json_with_the_documented_fields() {
        let value: serde_json::Value =
            serde_json::from_str(&render(&fixture::report())).expect("json");
        assert_eq!(value["mdd_verify"], 1);
        assert_eq!(value["passed"], false);
        assert_eq!(value["totals"]["blocked"], 1);
        assert_eq!(value["checks"][2]["blocked_by"][0], "ams1-ldap");
        assert_eq!(value["checks"][0]["time_to_green_ms"], 10_500);
        assert_eq!(value["checks"][0]["perfdata"][0]["label"], "time");
    }
}
