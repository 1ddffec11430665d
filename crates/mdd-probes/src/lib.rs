//! How checks are executed: one module per probe kind, each behind the [`Execute`] trait.
//!
//! Owns everything that touches the outside world to produce a result: spawning Nagios plugins
//! (process groups, output caps, kills on timeout), HTTP requests, TCP connections, DNS queries
//! and TLS handshakes. Every probe has a hard timeout and returns a [`ProbeResult`]; a probe never
//! returns an error, because a failure to probe *is* the result (CRITICAL or UNKNOWN with the reason).
//!
//! `scheduler` runs checks over and over on their grid, for the server and agents alike.
//! Must not know about reports, storage or the server. Adding a probe kind: one new module implementing [`Execute`], one arm in [`run`], and the
//! spec's parser in `mdd-core`.

mod command;
mod dns;
mod error_text;
mod http;
pub mod process;
pub mod scheduler;
mod tcp;
mod tls;

use std::time::{Duration, Instant};

use mdd_core::spec::{Check, Probe};
use mdd_core::{ProbeResult, Status, format_duration};

pub use command::DEFAULT_OUTPUT_LIMIT;
pub use error_text::describe as describe_error;

/// Shared state and settings for running probes: reused HTTP clients and output limits.
/// One is made per run (verify) or per process (server, agent) and shared by all checks.
#[derive(Debug)]
pub struct ProbeContext {
    /// The most bytes kept of each output stream of a `command` probe.
    pub output_limit: usize,
    /// Spawn plugins on the calling thread instead of the blocking pool. `vfork` holds the
    /// spawning thread until the child has exec'd (a few hundred µs): on a multi-threaded runtime
    /// running many checks at once, the blocking pool lets spawns overlap; on a single-threaded
    /// runtime (the agent), spawning inline avoids a thread hand-off per execution.
    pub spawn_inline: bool,
    http_clients: http::ClientCache,
}

impl Default for ProbeContext {
    fn default() -> Self {
        ProbeContext::new(DEFAULT_OUTPUT_LIMIT)
    }
}

impl ProbeContext {
    pub fn new(output_limit: usize) -> ProbeContext {
        ProbeContext {
            output_limit,
            spawn_inline: false,
            http_clients: http::ClientCache::default(),
        }
    }
}

/// One probe kind: runs once and reports, honouring `timeout` itself (a command must kill its
/// process group; a network probe just stops waiting).
pub(crate) trait Execute {
    async fn execute(&self, ctx: &ProbeContext, timeout: Duration) -> ProbeResult;
}

/// Runs a check's probe once, within the check's timeout, and measures how long it took.
pub async fn run(check: &Check, ctx: &ProbeContext) -> ProbeResult {
    run_probe(&check.probe, ctx, check.timeout).await
}

/// Runs one probe within `timeout`.
pub async fn run_probe(probe: &Probe, ctx: &ProbeContext, timeout: Duration) -> ProbeResult {
    let started = Instant::now();
    // Each probe's future is boxed: they differ a lot in size (DNS and HTTP are many KiB,
    // a command much less), and a scheduler keeps one `run` future per check alive between
    // runs. Unboxed, every idle check would hold the largest of them (~18 KiB).
    let mut result = match probe {
        Probe::Command(p) => Box::pin(p.execute(ctx, timeout)).await,
        Probe::Http(p) => Box::pin(p.execute(ctx, timeout)).await,
        Probe::Tcp(p) => Box::pin(p.execute(ctx, timeout)).await,
        Probe::Dns(p) => Box::pin(p.execute(ctx, timeout)).await,
        Probe::Tls(p) => Box::pin(p.execute(ctx, timeout)).await,
        Probe::Push => ProbeResult::new(
            Status::Unknown,
            "push-only check: its results come from outside, there is nothing to run",
            Duration::ZERO,
        ),
    };
    result.duration = started.elapsed();
    result
}

/// The result every probe gives when its time is up.
pub(crate) fn timed_out(timeout: Duration) -> ProbeResult {
    ProbeResult::new(
        Status::Critical,
        format!("timed out after {}", format_duration(timeout)),
        timeout,
    )
}

/// Runs a network probe's future under the timeout.
pub(crate) async fn within(
    timeout: Duration,
    probe: impl Future<Output = ProbeResult>,
) -> ProbeResult {
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| timed_out(timeout))
}

/// WARNING when a probe answered correctly but slower than `max_latency`.
pub(crate) fn latency_status(elapsed: Duration, max_latency: Option<Duration>) -> Status {
    match max_latency {
        Some(max) if elapsed > max => Status::Warning,
        _ => Status::Ok,
    }
}

/// ` (slower than 500ms)` when latency made the status a warning.
pub(crate) fn latency_note(elapsed: Duration, max_latency: Option<Duration>) -> String {
    match max_latency {
        Some(max) if elapsed > max => format!(" (slower than {})", format_duration(max)),
        _ => String::new(),
    }
}

/// The `time=` perfdata item built-in probes report, with `max_latency` as its warning threshold.
pub(crate) fn time_perfdata(
    elapsed: Duration,
    max_latency: Option<Duration>,
) -> mdd_core::PerfDatum {
    let mut datum = mdd_core::PerfDatum::new("time", round_secs(elapsed), "s");
    datum.warn = max_latency.map(|m| mdd_core::Range::at_most(m.as_secs_f64()));
    datum.min = Some(0.0);
    datum
}

fn round_secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1_000_000.0
}
