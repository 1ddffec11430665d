//! Running a program we do not trust to behave: no shell, its own process group, optional input
//! on stdin, output read while it runs and capped, and a hard timeout after which the whole group
//! (grandchildren included) is killed. The `command` probe runs plugins through it, and the
//! server runs command handlers through it.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use mdd_core::format_duration;
use process_wrap::tokio::{CommandWrap, ProcessGroup};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How long to wait for a program's pipes to close after it exited and its group was killed. Only
/// a descendant that left the group (a daemon) can hold them open longer; it is not waited for.
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// What to run and how.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub argv: &'a [String],
    /// Written to stdin, which is then closed; without it stdin is `/dev/null`.
    pub stdin: Option<&'a [u8]>,
    pub timeout: Duration,
    /// The most bytes kept of each of stdout and stderr; the rest is read and counted.
    pub output_limit: usize,
    /// Spawn on the calling thread rather than the blocking pool (see `ProbeContext`).
    pub spawn_inline: bool,
}

/// How a run ended.
#[derive(Debug)]
pub enum Ended {
    /// It exited (or was killed by a signal not ours).
    Exited(ExitStatus),
    /// It could not be started.
    NotStarted(std::io::Error),
    /// It ran past the timeout and its group was killed; says so in words.
    TimedOut(String),
    /// Waiting for it failed.
    Lost(String),
}

/// What it printed, capped.
#[derive(Debug, Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// Bytes read past the limit and thrown away.
    pub discarded: u64,
}

#[derive(Debug)]
pub struct Finished {
    pub ended: Ended,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// Runs `run.argv[0]` with the rest as arguments. Never waits past `run.timeout` (plus a short
/// grace for pipes), whatever the program does: never reads stdin, prints forever, forks and
/// leaves children behind, or hangs.
pub async fn run(run: Run<'_>) -> Finished {
    run_inner(run).await
}

/// Spawns in flight at once on the blocking pool, for the whole process: twice the cores.
fn spawn_turns() -> &'static tokio::sync::Semaphore {
    static TURNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    TURNS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        tokio::sync::Semaphore::new(cores * 2)
    })
}

async fn run_inner(run: Run<'_>) -> Finished {
    let mut finished = Finished {
        ended: Ended::Lost(String::new()),
        stdout: Captured::default(),
        stderr: Captured::default(),
    };
    let Some((program, args)) = run.argv.split_first() else {
        finished.ended = Ended::NotStarted(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ));
        return finished;
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(if run.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
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
    let spawned = if run.spawn_inline {
        spawn()
    } else {
        // A few spawns at a time: thousands of checks falling due together would otherwise
        // each take a blocking thread (hundreds of them), and the threads that store results
        // would get a sliver of the cores (inserts of a second at 2,000 checks a second).
        let _turn = spawn_turns().acquire().await;
        tokio::task::spawn_blocking(spawn)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    // Whatever happens from here (timeout, the whole run cancelled by Ctrl-C), the group dies.
    let (mut child, group) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            finished.ended = Ended::NotStarted(e);
            return finished;
        }
    };

    let limit = run.output_limit;
    let (stdin, stdout, stderr) = (
        child.stdin().take(),
        child.stdout().take(),
        child.stderr().take(),
    );
    let waited = {
        // Input is written and output read while the program runs, in this same task, so neither
        // side blocks on a full pipe and no extra tasks are spawned per run.
        let feed = async {
            if let (Some(mut pipe), Some(input)) = (stdin, run.stdin) {
                // A program that exits without reading all of it is fine (EPIPE): it is the
                // exit status that counts.
                let _ = pipe.write_all(input).await;
                // Dropping the pipe closes it: the program sees the end of its input.
            }
        };
        let mut io = std::pin::pin!(futures_util::future::join3(
            feed,
            drain(stdout, &mut finished.stdout, limit),
            drain(stderr, &mut finished.stderr, limit),
        ));
        let mut wait = child.wait();
        let ran = async {
            tokio::select! {
                status = &mut wait => {
                    // Whatever the program left behind in its group would hold the pipes open.
                    group.kill();
                    // Only a descendant that left the group (a daemon) can keep them open now.
                    let _ = tokio::time::timeout(PIPE_GRACE, &mut io).await;
                    status
                }
                _ = &mut io => (&mut wait).await,
            }
        };
        tokio::time::timeout(run.timeout, ran).await
    };
    finished.ended = match waited {
        Ok(Ok(status)) => Ended::Exited(status),
        Ok(Err(e)) => Ended::Lost(format!("cannot wait for {program}: {e}")),
        Err(_) => {
            group.kill();
            // Reap the killed leader so it does not linger as a zombie.
            let _ = child.wait().await;
            Ended::TimedOut(format!("timed out after {}", format_duration(run.timeout)))
        }
    };
    group.kill();
    finished
}

/// Kills the program's whole process group when dropped or asked to.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn base(argv: &[String]) -> Run<'_> {
        Run {
            argv,
            stdin: None,
            timeout: Duration::from_secs(10),
            output_limit: 1024,
            spawn_inline: false,
        }
    }

    #[tokio::test]
    async fn input_reaches_the_program_and_its_end_is_seen() {
        let cat = argv(&["cat"]);
        let finished = run(Run {
            stdin: Some(b"hello handler"),
            ..base(&cat)
        })
        .await;
        assert!(matches!(finished.ended, Ended::Exited(s) if s.success()));
        assert_eq!(finished.stdout.bytes, b"hello handler");
    }

    #[tokio::test]
    async fn a_program_that_never_reads_a_large_input_does_not_stall_the_run() {
        // 4 MiB is far past a pipe's buffer: writing it all would block forever if the write
        // were not raced against the program's exit.
        let input = vec![b'x'; 4 << 20];
        let exit = argv(&["sh", "-c", "echo not reading; exit 2"]);
        let finished = run(Run {
            stdin: Some(&input),
            ..base(&exit)
        })
        .await;
        assert!(
            matches!(finished.ended, Ended::Exited(s) if s.code() == Some(2)),
            "{:?}",
            finished.ended
        );
        assert_eq!(finished.stdout.bytes, b"not reading\n");
    }

    #[tokio::test]
    async fn a_program_that_hangs_without_reading_is_killed_at_the_timeout() {
        let input = vec![b'x'; 4 << 20];
        let hang = argv(&["sleep", "30"]);
        let started = std::time::Instant::now();
        let finished = run(Run {
            stdin: Some(&input),
            timeout: Duration::from_millis(300),
            ..base(&hang)
        })
        .await;
        assert!(
            matches!(&finished.ended, Ended::TimedOut(why) if why.contains("timed out")),
            "{:?}",
            finished.ended
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn output_past_the_limit_is_counted_not_kept() {
        let chatty = argv(&["sh", "-c", "head -c 1000000 /dev/zero"]);
        let finished = run(base(&chatty)).await;
        assert_eq!(finished.stdout.bytes.len(), 1024);
        assert_eq!(finished.stdout.discarded, 1_000_000 - 1024);
    }

    #[tokio::test]
    async fn an_empty_command_is_not_started() {
        let finished = run(base(&[])).await;
        assert!(matches!(finished.ended, Ended::NotStarted(_)));
    }
}
