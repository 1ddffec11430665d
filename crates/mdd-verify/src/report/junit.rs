//! JUnit XML, as CI systems read it: a testsuite per owner, a testcase per check; failing,
//! unknown and (unless allowed) warning checks are failures, blocked and unrun checks skipped.

use std::collections::BTreeMap;

use mdd_core::State;
use quick_junit::{NonSuccessKind, Report as JunitReport, TestCase, TestCaseStatus, TestSuite};

use super::Report;

pub(crate) fn render(report: &Report) -> String {
    let mut junit = JunitReport::new("mdd verify");
    if let Some(started) = chrono::DateTime::from_timestamp(
        report.started_at.as_second(),
        report.started_at.subsec_nanosecond().unsigned_abs(),
    ) {
        junit.set_timestamp(started.fixed_offset());
    }
    junit.set_time(report.duration);
    let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
    for check in &report.checks {
        let owner = check.owner_or_default();
        let suite = suites.entry(owner).or_insert_with(|| TestSuite::new(owner));
        let status = if report.is_green(check) {
            TestCaseStatus::success()
        } else {
            match check.state {
                State::Blocked | State::Pending => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(check.summary());
                    status
                }
                state => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status.set_message(check.summary());
                    status.set_type(state.as_str());
                    if let Some(result) = &check.result {
                        let mut description = format!("{} {}\n", check.probe, check.target);
                        if !result.long_output.is_empty() {
                            description.push_str(&result.long_output);
                            description.push('\n');
                        }
                        if let Some(runbook) = &check.runbook {
                            description.push_str(&format!("runbook: {runbook}\n"));
                        }
                        status.set_description(description);
                    }
                    status
                }
            }
        };
        let mut case = TestCase::new(check.name.as_str(), status);
        case.set_classname(owner);
        if let Some(result) = check
            .result
            .as_ref()
            .filter(|_| check.state != State::Blocked)
        {
            case.set_time(result.duration);
            case.set_system_out(result.summary.as_str());
        }
        case.extra
            .insert("file".into(), check.source.as_str().into());
        suite.add_test_case(case);
    }
    junit.add_test_suites(suites.into_values());
    junit
        .to_string()
        .unwrap_or_else(|e| format!("<!-- cannot render the JUnit report: {e} -->\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    #[test]
    fn document() {
        insta::assert_snapshot!(render(&fixture::report()));
    }
}
