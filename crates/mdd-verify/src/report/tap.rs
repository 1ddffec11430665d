//! TAP version 13, as `prove` reads it: `ok`/`not ok` per check, blocked and unrun checks as
//! `# SKIP`, and a YAML block with the details of each check that is not green.

use std::fmt::Write;

use mdd_core::State;

use super::Report;

pub(crate) fn render(report: &Report) -> String {
    let mut out = String::from("TAP version 13\n");
    let _ = writeln!(out, "1..{}", report.checks.len());
    for (i, check) in report.checks.iter().enumerate() {
        let n = i + 1;
        let name = check.name.replace('#', "\\#");
        match check.state {
            State::Blocked | State::Pending => {
                let _ = writeln!(out, "ok {n} - {name} # SKIP {}", one_line(&check.summary()));
            }
            _ if report.is_green(check) => {
                let _ = writeln!(out, "ok {n} - {name}");
            }
            state => {
                let _ = writeln!(out, "not ok {n} - {name}");
                let _ = writeln!(out, "  ---");
                let _ = writeln!(out, "  state: {state}");
                let _ = writeln!(out, "  message: {}", yaml_string(&check.summary()));
                if let Some(owner) = &check.owner {
                    let _ = writeln!(out, "  owner: {}", yaml_string(owner));
                }
                let _ = writeln!(
                    out,
                    "  probe: {}",
                    yaml_string(&format!("{} {}", check.probe, check.target))
                );
                if let Some(runbook) = &check.runbook {
                    let _ = writeln!(out, "  runbook: {}", yaml_string(runbook));
                }
                if let Some(result) = check.result.as_ref().filter(|r| !r.long_output.is_empty()) {
                    let _ = writeln!(out, "  output: |");
                    for line in result.long_output.lines() {
                        let _ = writeln!(out, "    {}", mdd_core::terminal::printable(line));
                    }
                }
                let _ = writeln!(out, "  at: {}", yaml_string(&check.source));
                let _ = writeln!(out, "  ...");
            }
        }
    }
    out
}

fn one_line(text: &str) -> String {
    mdd_core::terminal::printable(&text.replace(['\n', '\r'], " ")).into_owned()
}

/// A double-quoted YAML scalar: always valid, whatever the text holds.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
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
