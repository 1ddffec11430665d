//! The text a Nagios plugin prints, split the way the plugin API defines it:
//!
//! ```text
//! SUMMARY | PERFDATA
//! LONG OUTPUT LINE 1
//! LONG OUTPUT LINE 2 | PERFDATA
//! PERFDATA CONTINUED
//! ```
//!
//! The first line's text before `|` is the summary. Later lines are long output until one holds a
//! `|`; everything after that `|`, including the lines that follow, is perfdata.

use crate::perfdata::{PerfDatum, PerfdataError, parse_perfdata};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PluginOutput {
    pub summary: String,
    pub long_output: String,
    pub perfdata: Vec<PerfDatum>,
    pub perfdata_errors: Vec<PerfdataError>,
}

impl PluginOutput {
    pub fn parse(text: &str) -> PluginOutput {
        let text = text.trim_end_matches(['\n', '\r']);
        let (first_line, rest) = match text.split_once('\n') {
            Some((first, rest)) => (first.trim_end_matches('\r'), rest),
            None => (text, ""),
        };
        let mut perf_text = String::new();
        let summary = match first_line.split_once('|') {
            Some((summary, perf)) => {
                perf_text.push_str(perf);
                summary
            }
            None => first_line,
        };
        let long_output = match rest.split_once('|') {
            Some((long, perf)) => {
                perf_text.push(' ');
                perf_text.push_str(perf);
                long
            }
            None => rest,
        };
        let (perfdata, perfdata_errors) = parse_perfdata(&perf_text);
        PluginOutput {
            summary: summary.trim().to_string(),
            long_output: long_output.trim_end().to_string(),
            perfdata,
            perfdata_errors,
        }
    }
}

/// Plugin output written out from its parts: `SUMMARY | perfdata` and the long output below.
pub fn compose(summary: &str, long_output: &str, perfdata: &[PerfDatum]) -> String {
    let mut text = summary.to_string();
    if !perfdata.is_empty() {
        text.push_str(" |");
        for datum in perfdata {
            text.push(' ');
            text.push_str(&datum.to_string());
        }
    }
    if !long_output.is_empty() {
        text.push('\n');
        text.push_str(long_output);
    }
    text
}

/// One note for a result whose perfdata had malformed items, however many: a plugin that
/// prints its usage text after a `|` must not get a line per word. Names the first, counts the
/// rest.
pub fn perfdata_note(errors: &[PerfdataError]) -> Option<String> {
    let first = errors.first()?;
    Some(match errors.len() {
        1 => format!("(mdd: ignored malformed {first})"),
        n => format!("(mdd: ignored {n} malformed perfdata items; the first: {first})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_only() {
        let out = PluginOutput::parse("OK - all fine\n");
        assert_eq!(out.summary, "OK - all fine");
        assert!(out.long_output.is_empty() && out.perfdata.is_empty());
    }

    #[test]
    fn the_plugin_api_example() {
        let text = "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n\
                    / 15272 MB (77%);\n\
                    /boot 68 MB (69%);\n\
                    /home 69357 MB (27%);\n\
                    /var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n\
                    /home=69357MB;253404;253409;0;253414 \n\
                    /var/log=818MB;970;975;0;980\n";
        let out = PluginOutput::parse(text);
        assert_eq!(out.summary, "DISK OK - free space: / 3326 MB (56%);");
        assert_eq!(
            out.long_output,
            "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%);"
        );
        let labels: Vec<_> = out.perfdata.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["/", "/boot", "/home", "/var/log"]);
        assert!(out.perfdata_errors.is_empty());
    }

    #[test]
    fn no_trailing_newline_and_crlf() {
        let out = PluginOutput::parse("WARNING: slow|time=2s\r\nmore\r\n");
        assert_eq!(out.summary, "WARNING: slow");
        assert_eq!(out.perfdata[0].label, "time");
        assert_eq!(out.long_output, "more");
    }

    #[test]
    fn empty_output() {
        assert_eq!(PluginOutput::parse(""), PluginOutput::default());
    }

    #[test]
    fn a_usage_text_after_a_bar_is_one_note_not_one_per_word() {
        let usage = "Usage: check_foo -H host | -w warn -c crit [--verbose] [--timeout seconds] and more words here";
        let parsed = PluginOutput::parse(usage);
        assert!(
            parsed.perfdata_errors.len() > 5,
            "{:?}",
            parsed.perfdata_errors
        );
        let note = perfdata_note(&parsed.perfdata_errors).expect("a note");
        assert_eq!(note.lines().count(), 1);
        assert!(
            note.starts_with(&format!(
                "(mdd: ignored {} malformed perfdata items; the first: ",
                parsed.perfdata_errors.len()
            )),
            "{note}"
        );
        assert_eq!(perfdata_note(&[]), None);
        let result = crate::ProbeResult::from_plugin_output(
            crate::Status::Unknown,
            usage,
            std::time::Duration::ZERO,
            Some(3),
        );
        assert_eq!(
            result.long_output.lines().count(),
            1,
            "{}",
            result.long_output
        );
        assert_eq!(result.plugin_text(), usage, "the output as printed");
    }

    #[test]
    fn composed_text_reads_back_the_same() {
        let text = compose(
            "OK - fine",
            "line two",
            &[crate::PerfDatum::new("time", 0.5, "s")],
        );
        assert_eq!(text, "OK - fine | time=0.5s\nline two");
        let parsed = PluginOutput::parse(&text);
        assert_eq!(parsed.summary, "OK - fine");
        assert_eq!(parsed.long_output, "line two");
        assert_eq!(parsed.perfdata.len(), 1);
    }
}
