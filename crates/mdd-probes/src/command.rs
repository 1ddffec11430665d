//! The `command` probe: runs a Nagios plugin (or any program) without a shell.
//!
//! The plugin runs in its own process group with stdin closed. Its output is read while it runs
//! (so a chatty plugin never blocks on a full pipe) and capped; on timeout the whole group is
//! killed, grandchildren included, and the result is CRITICAL.

use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use mdd_core::spec::CommandProbe;
use mdd_core::{ProbeResult, Status};

use crate::process::{self, Captured, Ended};
use crate::{Execute, ProbeContext};

/// What a plugin may print before its output is cut, per stream.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

impl Execute for CommandProbe {
    async fn execute(&self, ctx: &ProbeContext, timeout: Duration) -> ProbeResult {
        let finished = process::run(process::Run {
            argv: &self.argv,
            stdin: None,
            timeout,
            output_limit: ctx.output_limit,
            spawn_inline: ctx.spawn_inline,
        })
        .await;
        let (status, exit_code, override_summary) = match finished.ended {
            Ended::Exited(exit) => match (exit.code(), exit.signal()) {
                (Some(code), _) => (Status::from_exit_code(Some(code)), Some(code), None),
                (None, Some(signal)) => (
                    Status::Unknown,
                    None,
                    Some(format!(
                        "plugin killed by signal {signal} ({})",
                        signal_name(signal)
                    )),
                ),
                (None, None) => (
                    Status::Unknown,
                    None,
                    Some("plugin ended without an exit status".into()),
                ),
            },
            Ended::NotStarted(e) => return spawn_failure(&self.argv[0], &e),
            Ended::TimedOut(reason) | Ended::Lost(reason) => (Status::Critical, None, Some(reason)),
        };
        build_result(
            status,
            exit_code,
            override_summary,
            &finished.stdout,
            &finished.stderr,
            ctx.output_limit,
        )
    }
}

fn build_result(
    status: Status,
    exit_code: Option<i32>,
    override_summary: Option<String>,
    out: &Captured,
    err: &Captured,
    limit: usize,
) -> ProbeResult {
    let stdout_text = String::from_utf8_lossy(&out.bytes);
    let stderr_text = String::from_utf8_lossy(&err.bytes);
    let stderr_trimmed = stderr_text.trim();
    // Plugins print to stdout; stderr is where a crashing one says why. Use stderr as the
    // output only when stdout is empty, and otherwise keep it as long output.
    let (main_text, extra_stderr) = if stdout_text.trim().is_empty() {
        (stderr_text.as_ref(), "")
    } else {
        (stdout_text.as_ref(), stderr_trimmed)
    };
    let mut result = ProbeResult::from_plugin_output(status, main_text, Duration::ZERO, exit_code);
    let mut notes = Vec::new();
    if !extra_stderr.is_empty() {
        notes.push(format!("stderr: {extra_stderr}"));
    }
    for (name, captured) in [("stdout", out), ("stderr", err)] {
        if captured.discarded > 0 {
            notes.push(format!(
                "(mdd: {name} truncated at {} KiB, {} more bytes discarded)",
                limit / 1024,
                captured.discarded
            ));
        }
    }
    if let Some(summary) = override_summary {
        // The reason mdd decided the status leads; what the plugin said follows. The output
        // passed on whole is then mdd's account, not the plugin's partial words.
        if !result.summary.is_empty() {
            notes.insert(0, format!("plugin said: {}", result.summary));
        }
        result.summary = summary;
        result.output.clear();
    } else if result.summary.is_empty() {
        result.summary = match exit_code {
            Some(code) => format!("(no output, exit code {code})"),
            None => "(no output)".into(),
        };
    }
    if !notes.is_empty() {
        let mut long = std::mem::take(&mut result.long_output);
        for note in notes {
            if !long.is_empty() {
                long.push('\n');
            }
            long.push_str(&note);
        }
        result.long_output = long;
    }
    result
}

fn spawn_failure(program: &str, error: &std::io::Error) -> ProbeResult {
    let summary = match error.kind() {
        ErrorKind::NotFound => format!("plugin not found: {program}"),
        ErrorKind::PermissionDenied => format!("permission denied running {program}"),
        _ => format!("cannot start {program}: {error}"),
    };
    ProbeResult::new(Status::Unknown, summary, Duration::ZERO)
}

fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown signal", |s| s.as_str())
}
