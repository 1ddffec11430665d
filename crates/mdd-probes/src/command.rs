//! The `command` probe: runs a Nagios plugin (or any program) without a shell.
//!
//! The plugin runs in its own process group with stdin closed. Its output is read while it runs
//! (so a chatty plugin never blocks on a full pipe) and capped; on timeout the whole group is
//! killed, grandchildren included, and the result is CRITICAL.

use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mdd_core::spec::CommandProbe;
use mdd_core::{ProbeResult, Status, format_duration};
use process_wrap::tokio::{CommandWrap, ProcessGroup};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{Execute, ProbeContext};

/// What a plugin may print before its output is cut, per stream.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// How long to wait for a plugin's pipes to close after it exited and its group was killed. Only
/// a descendant that left the group (a daemon) can hold them open longer; it is not waited for.
const PIPE_GRACE: Duration = Duration::from_millis(500);

impl Execute for CommandProbe {
    async fn execute(&self, ctx: &ProbeContext, timeout: Duration) -> ProbeResult {
        let mut command = tokio::process::Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut wrapped = CommandWrap::from(command);
        wrapped.wrap(ProcessGroup::leader());
        let mut child = match wrapped.spawn() {
            Ok(child) => child,
            Err(e) => return spawn_failure(&self.argv[0], &e),
        };
        // Whatever happens from here (timeout, the whole run cancelled by Ctrl-C), the group dies.
        let group = GroupGuard(child.id());

        let stdout = Capture::start(child.stdout().take(), ctx.output_limit);
        let stderr = Capture::start(child.stderr().take(), ctx.output_limit);

        let waited = tokio::time::timeout(timeout, child.wait()).await;
        // Kill the group either way: on timeout it is the plugin; after a normal exit it is
        // whatever the plugin left behind, which would otherwise hold its pipes open.
        group.kill();
        let outcome = match waited {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(format!("cannot wait for the plugin: {e}")),
            Err(_) => {
                // Reap the killed leader so it does not linger as a zombie.
                let _ = child.wait().await;
                Err(format!("timed out after {}", format_duration(timeout)))
            }
        };
        let out = stdout.finish().await;
        let err = stderr.finish().await;

        let (status, exit_code, override_summary) = match outcome {
            Ok(exit) => match (exit.code(), exit.signal()) {
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
            Err(reason) => (Status::Critical, None, Some(reason)),
        };
        build_result(
            status,
            exit_code,
            override_summary,
            &out,
            &err,
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
        // The reason mdd decided the status leads; what the plugin said follows.
        if !result.summary.is_empty() {
            notes.insert(0, format!("plugin said: {}", result.summary));
        }
        result.summary = summary;
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

/// Kills the plugin's whole process group when dropped or asked to.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.0.and_then(|id| i32::try_from(id).ok()) {
            // ESRCH (nothing left in the group) is the normal case after a clean exit.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    discarded: u64,
}

/// Reads one output stream in the background, keeping the first `limit` bytes and counting the rest.
struct Capture {
    shared: Arc<Mutex<Captured>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    fn start(stream: Option<impl AsyncRead + Unpin + Send + 'static>, limit: usize) -> Capture {
        let shared = Arc::new(Mutex::new(Captured::default()));
        let task = stream.map(|mut stream| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let Ok(mut captured) = shared.lock() else {
                                break;
                            };
                            let room = limit.saturating_sub(captured.bytes.len());
                            let keep = room.min(n);
                            captured.bytes.extend_from_slice(&buf[..keep]);
                            captured.discarded += (n - keep) as u64;
                        }
                    }
                }
            })
        });
        Capture { shared, task }
    }

    /// Waits briefly for the stream to end, then takes what was read.
    async fn finish(mut self) -> Captured {
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(PIPE_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
        self.shared
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }
}

fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown signal", |s| s.as_str())
}
