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
                    status.set_message(xml_text(&check.summary()));
                    status
                }
                state => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status.set_message(xml_text(&check.summary()));
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
                        status.set_description(xml_text(&description));
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
            case.set_system_out(xml_text(&result.summary));
        }
        // `file` and `line` apart, as CI systems that link a test case to its source read them.
        let (file, line) = match check.source.rsplit_once(':') {
            Some((file, line)) if line.parse::<u32>().is_ok() => (file, Some(line)),
            _ => (check.source.as_str(), None),
        };
        case.extra.insert("file".into(), file.into());
        if let Some(line) = line {
            case.extra.insert("line".into(), line.into());
        }
        suite.add_test_case(case);
    }
    junit.add_test_suites(suites.into_values());
    match junit.to_string() {
        Ok(xml) => xml.replace(TAB, "&#9;"),
        Err(e) => format!("<!-- cannot render the JUnit report: {e} -->\n"),
    }
}

/// Stands in for a tab until the XML is written: the JUnit writer drops tabs (and every
/// escape sequence), so they go through as this private-use character and come out as
/// `&#9;`, which keeps them even inside attributes.
const TAB: char = '\u{e000}';

/// Plugin text for the report: tabs kept, other control characters shown escaped (`\x1b`)
/// rather than dropped without a trace, new lines kept.
fn xml_text(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            line.split('\t')
                .map(|part| mdd_core::terminal::printable(part).into_owned())
                .collect::<Vec<_>>()
                .join(&TAB.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    #[test]
    fn tabs_are_kept_and_escapes_shown() {
        let mut report = fixture::report();
        let result = report.checks[0].result.as_mut().expect("a result");
        result.summary = "a\tb\u{1b}[31mc".into();
        report.checks[0].state = State::Failing;
        let xml = render(&report);
        assert!(xml.contains("message=\"a&#9;b\\x1b[31mc\""), "{xml}");
        assert!(
            xml.contains("<system-out>a&#9;b\\x1b[31mc</system-out>"),
            "{xml}"
        );
        assert!(xml.contains("file=\"spec.yaml\" line=\"3\""), "{xml}");
        assert!(!xml.contains('\u{e000}'));
    }

    #[test]
    fn document() {
        insta::assert_snapshot!(render(&fixture::report()));
    }
}
