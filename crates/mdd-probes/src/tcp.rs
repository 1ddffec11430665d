//! The `tcp` probe: connects, optionally sends a line and waits for an expected answer.

use std::time::{Duration, Instant};

use mdd_core::spec::TcpProbe;
use mdd_core::{ProbeResult, Status, format_duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error_text::io_words;
use crate::{Execute, ProbeContext, latency_note, latency_status, time_perfdata, within};

/// How much of the peer's answer is read while looking for `expect`.
const READ_LIMIT: usize = 64 * 1024;

impl Execute for TcpProbe {
    async fn execute(&self, _ctx: &ProbeContext, timeout: Duration) -> ProbeResult {
        within(timeout, connect(self)).await
    }
}

async fn connect(probe: &TcpProbe) -> ProbeResult {
    let target = format!("{}:{}", probe.host, probe.port);
    let started = Instant::now();
    let fail = |summary: String| {
        let elapsed = started.elapsed();
        ProbeResult::new(Status::Critical, summary, elapsed)
            .with_perfdata(time_perfdata(elapsed, probe.max_latency))
    };
    let mut stream = match TcpStream::connect((probe.host.as_str(), probe.port)).await {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot connect to {target}: {}", io_words(&e))),
    };
    if let Some(payload) = &probe.send
        && let Err(e) = stream.write_all(payload.as_bytes()).await
    {
        return fail(format!(
            "connected to {target}, but sending failed: {}",
            io_words(&e)
        ));
    }
    let mut answer = Vec::new();
    if let Some(expect) = &probe.expect {
        let mut buf = [0u8; 4096];
        loop {
            if String::from_utf8_lossy(&answer).contains(expect.as_str()) {
                break;
            }
            if answer.len() >= READ_LIMIT {
                return fail(format!(
                    "{target} sent {} KiB without `{expect}`",
                    READ_LIMIT / 1024
                ));
            }
            match stream.read(&mut buf).await {
                Ok(0) => {
                    return fail(format!(
                        "{target} closed the connection without sending `{expect}` (got {:?})",
                        preview(&answer)
                    ));
                }
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => {
                    return fail(format!(
                        "{target}: {} before sending `{expect}`",
                        io_words(&e)
                    ));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let got = if probe.expect.is_some() {
        format!(", answered {:?}", preview(&answer))
    } else {
        String::new()
    };
    ProbeResult::new(
        latency_status(elapsed, probe.max_latency),
        format!(
            "connected to {target} in {}{got}{}",
            format_duration(elapsed),
            latency_note(elapsed, probe.max_latency)
        ),
        elapsed,
    )
    .with_perfdata(time_perfdata(elapsed, probe.max_latency))
}

/// The first line of what the peer sent, short enough for a summary.
fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(80).collect()
}
