//! The `command` probe: runs a Nagios plugin (or any program) without a shell.
//!
//! The plugin runs in its own process group with stdin closed. Its output is read while it runs
//! (so a chatty plugin never blocks on a full pipe) and capped; on timeout the whole group is
//! killed, grandchildren included, and the result is CRITICAL.

use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
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
        // Spawning blocks the calling thread until the child has exec'd (vfork). On the blocking
        // pool that wait overlaps with other spawns instead of stalling an async worker.
        // The guard is made with the child, so if this future is dropped mid-spawn (Ctrl-C), the
        // group still dies when the blocking task's output is dropped.
        let mut spawn = move || {
            wrapped.spawn().map(|child| {
                let group = GroupGuard::new(child.id());
                (child, group)
            })
        };
        let spawned = if ctx.spawn_inline {
            spawn()
        } else {
            tokio::task::spawn_blocking(spawn)
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        // Whatever happens from here (timeout, the whole run cancelled by Ctrl-C), the group dies.
        let (mut child, group) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => return spawn_failure(&self.argv[0], &e),
        };

        let limit = ctx.output_limit;
        let (mut out, mut err) = (Captured::default(), Captured::default());
        let (stdout, stderr) = (child.stdout().take(), child.stderr().take());
        let waited = {
            // Output is read while the plugin runs, in this same task, so a chatty plugin never
            // blocks on a full pipe and no extra tasks are spawned per check.
            let mut reads = std::pin::pin!(futures_util::future::join(
                drain(stdout, &mut out, limit),
                drain(stderr, &mut err, limit),
            ));
            let mut wait = child.wait();
            let run = async {
                tokio::select! {
                    status = &mut wait => {
                        // Whatever the plugin left behind in its group would hold the pipes open.
                        group.kill();
                        // Only a descendant that left the group (a daemon) can keep them open now.
                        let _ = tokio::time::timeout(PIPE_GRACE, &mut reads).await;
                        status
                    }
                    _ = &mut reads => (&mut wait).await,
                }
            };
            tokio::time::timeout(timeout, run).await
        };
        let outcome = match waited {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(format!("cannot wait for the plugin: {e}")),
            Err(_) => {
                group.kill();
                // Reap the killed leader so it does not linger as a zombie.
                let _ = child.wait().await;
                Err(format!("timed out after {}", format_duration(timeout)))
            }
        };
        group.kill();

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
/// The group's id, 0 once killed (no process has id 0).
struct GroupGuard(std::sync::atomic::AtomicU32);

impl GroupGuard {
    fn new(pgid: Option<u32>) -> GroupGuard {
        GroupGuard(std::sync::atomic::AtomicU32::new(pgid.unwrap_or(0)))
    }

    /// Kills the group, once: SIGKILL cannot be ignored, so a second kill finds nothing of
    /// ours, and once the group is empty its id may even be reused by an unrelated process.
    fn kill(&self) {
        let pgid = self.0.swap(0, std::sync::atomic::Ordering::Relaxed);
        if let Ok(pgid @ 1..) = i32::try_from(pgid) {
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

/// Reads a stream to its end, keeping the first `limit` bytes and counting the rest.
async fn drain(stream: Option<impl AsyncRead + Unpin>, into: &mut Captured, limit: usize) {
    let Some(mut stream) = stream else { return };
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let keep = limit.saturating_sub(into.bytes.len()).min(n);
                into.bytes.extend_from_slice(&buf[..keep]);
                into.discarded += (n - keep) as u64;
            }
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown signal", |s| s.as_str())
}
