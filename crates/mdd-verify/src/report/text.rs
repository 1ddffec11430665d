//! The report people read: one line per check like a test runner, then the failures grouped by
//! owner with their output and runbook, then the times to green and a closing count.

use std::collections::BTreeMap;
use std::fmt::Write;

use mdd_core::terminal::printable;
use mdd_core::{State, format_duration};

use super::{CheckReport, Report};

/// How to draw marks: colour is only ever added on top of a mark that carries the meaning alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TextStyle {
    pub color: bool,
    /// ASCII marks instead of ✓ ✗ ⊘ for terminals that cannot show them.
    pub ascii: bool,
}

fn paint(style: TextStyle, state: State, text: &str) -> String {
    if !style.color {
        return text.to_string();
    }
    let styled = console::style(text).force_styling(true);
    let styled = match state {
        State::Passing => styled.green(),
        State::Warning => styled.yellow(),
        State::Failing => styled.red().bold(),
        State::Unknown => styled.magenta(),
        State::Blocked | State::Pending => styled.dim(),
        _ => styled,
    };
    styled.to_string()
}

fn mark(style: TextStyle, state: State) -> String {
    let mark = if style.ascii {
        state.ascii_mark()
    } else {
        state.mark()
    };
    paint(style, state, mark)
}

pub(crate) fn render(report: &Report, style: TextStyle) -> String {
    let mut out = String::new();
    let name_width = report
        .checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    let mark_width: usize = if style.ascii { 5 } else { 1 };
    for check in &report.checks {
        let took = check
            .result
            .as_ref()
            .filter(|_| check.state != State::Blocked)
            .map_or_else(|| "-".to_string(), |r| format_duration(r.duration));
        let plain_mark = if style.ascii {
            check.state.ascii_mark()
        } else {
            check.state.mark()
        };
        let pad = mark_width.saturating_sub(plain_mark.chars().count());
        let _ = writeln!(
            out,
            "{}{} {:<name_width$}  {:>6}  {}",
            mark(style, check.state),
            " ".repeat(pad),
            check.name,
            took,
            printable(&check.summary())
        );
    }

    let not_green: Vec<&CheckReport> = report
        .checks
        .iter()
        .filter(|c| !report.is_green(c))
        .collect();
    if !not_green.is_empty() {
        let mut by_owner: BTreeMap<&str, Vec<&CheckReport>> = BTreeMap::new();
        for check in not_green {
            by_owner
                .entry(check.owner_or_default())
                .or_default()
                .push(check);
        }
        let _ = writeln!(out, "\nNot green, by owner:");
        for (owner, checks) in by_owner {
            let _ = writeln!(out, "\n  {}", printable(owner));
            for check in checks {
                let _ = writeln!(
                    out,
                    "    {} {} — {}",
                    mark(style, check.state),
                    check.name,
                    printable(&check.summary())
                );
                let _ = writeln!(
                    out,
                    "      {} {}  ({})",
                    check.probe,
                    printable(&check.target),
                    printable(&check.source)
                );
                if let Some(description) = &check.description {
                    for line in description.lines() {
                        let _ = writeln!(out, "      {}", printable(line));
                    }
                }
                if let Some(runbook) = &check.runbook {
                    let _ = writeln!(out, "      runbook: {}", printable(runbook));
                }
                if let Some(result) = check
                    .result
                    .as_ref()
                    .filter(|_| check.state != State::Blocked)
                {
                    for line in result.long_output.lines().take(20) {
                        let _ = writeln!(out, "      │ {}", printable(line));
                    }
                    let more = result.long_output.lines().count().saturating_sub(20);
                    if more > 0 {
                        let _ = writeln!(out, "      │ … {more} more lines (see --format json)");
                    }
                }
            }
        }
    }

    let mut greened: Vec<&CheckReport> = report
        .checks
        .iter()
        .filter(|c| c.green_in_round.is_some_and(|round| round > 1))
        .collect();
    if !greened.is_empty() {
        greened.sort_by_key(|c| c.time_to_green);
        let _ = writeln!(out, "\nTurned green:");
        for check in greened {
            let _ = writeln!(
                out,
                "  {} {:<name_width$}  after {} (attempt {})",
                mark(style, State::Passing),
                check.name,
                format_duration(check.time_to_green.unwrap_or_default()),
                check.attempts
            );
        }
    }

    let t = report.totals();
    let mut line = format!("{} passed, {} failed", t.passing, t.failing);
    for (count, word) in [
        (
            t.warning,
            if t.warning == 1 {
                "warning"
            } else {
                "warnings"
            },
        ),
        (t.unknown, "unknown"),
        (t.blocked, "blocked"),
        (t.pending, "not run"),
    ] {
        if count > 0 {
            let _ = write!(line, ", {count} {word}");
        }
    }
    let rounds = if report.rounds > 1 {
        format!(" over {} rounds", report.rounds)
    } else {
        String::new()
    };
    let _ = write!(line, " in {}{rounds}", format_duration(report.duration));
    if report.interrupted {
        line.push_str(" (interrupted)");
    } else if report.timed_out {
        line.push_str(" (gave up waiting)");
    }
    let _ = writeln!(out, "\n{line}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    #[test]
    fn plain_text() {
        insta::assert_snapshot!(render(&fixture::report(), TextStyle::default()));
    }

    #[test]
    fn plugin_output_never_reaches_the_terminal_raw() {
        let mut report = fixture::report();
        let result = report.checks[0].result.as_mut().expect("a result");
        result.summary = "\u{1b}[2J\u{1b}]0;owned\u{7}OK".into();
        result.long_output = "line\twith tab\r\n\u{1b}[31mred".into();
        report.checks[0].state = State::Failing;
        let text = render(&report, TextStyle::default());
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\r'),
            "{text:?}"
        );
        assert!(text.contains("\\x1b[2J\\x1b]0;owned\\x07OK"), "{text}");
        assert!(text.contains("line\\twith tab"), "{text}");
    }

    #[test]
    fn ascii_marks() {
        let text = render(
            &fixture::report(),
            TextStyle {
                color: false,
                ascii: true,
            },
        );
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.starts_with("ok    ams1-dns")),
            "{text}"
        );
        assert!(text.is_ascii() || text.contains('—'), "{text}");
    }

    #[test]
    fn colour_only_adds_to_marks() {
        let plain = render(&fixture::report(), TextStyle::default());
        let coloured = render(
            &fixture::report(),
            TextStyle {
                color: true,
                ascii: false,
            },
        );
        assert_ne!(plain, coloured);
        assert_eq!(console::strip_ansi_codes(&coloured), plain);
    }
}
