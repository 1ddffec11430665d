//! The server's own checks: 1,000 and 2,000 `check_dummy` checks every second run by
//! `mdd server`. Executions on time (runs made against runs due; each run's start against its
//! place on the grid), the server's own CPU per 1,000 executions against a plain loop spawning
//! the same plugin in the same run, resident memory, and results per group commit (one per
//! result is no grouping). Goal: 100% of the runs at 1,000 checks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::agent_bench::proc_usage;
use crate::ingest_bench::{TOKEN, start_server};

const CHECK_DUMMY: &str = "/usr/lib/nagios/plugins/check_dummy";

#[derive(Debug, Args)]
pub struct ServerChecksArgs {
    /// The mdd binary to measure (a release build).
    #[arg(long, default_value = "target/release/mdd")]
    mdd: PathBuf,
    /// Numbers of checks, each run every second, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    checks: Vec<usize>,
    /// Seconds measured per size.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub fn run(args: ServerChecksArgs) -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run_async(args))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// (results stored, group commits) from the server's metrics.
async fn stored(http: &reqwest::Client, url: &str) -> Result<(f64, f64)> {
    let text = http
        .get(format!("{url}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("mdd_ingest_group_results_sum"),
        value("mdd_ingest_group_results_count"),
    ))
}

/// A plain loop in a helper process spawning the plugin `count` times back to back: its own
/// CPU in ms (the children's is not counted, as it is not for the server).
fn spawn_loop_cpu(count: usize) -> Result<u64> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["agent", "--spawn-loop", &count.to_string()])
        .output()?;
    if !out.status.success() {
        bail!(
            "the spawn loop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

async fn run_async(args: ServerChecksArgs) -> Result<()> {
    crate::ensure_built(&args.mdd)?;
    println!(
        "mdd-bench server-checks: {:?} checks of check_dummy every second on the server, {} s each\n",
        args.checks, args.seconds
    );
    println!(
        "{:>6} {:>9} {:>8} {:>8} {:>8} {:>14} {:>10} {:>9} {:>8}",
        "checks", "on time", "p50", "p99", "max", "CPU/1000 runs", "spawn loop", "ratio", "RSS"
    );
    let http = reqwest::Client::new();
    for &n in &args.checks {
        let dir = tempfile::tempdir()?;
        let spec: String = std::iter::once("checks:\n".to_string())
            .chain((0..n).map(|i| {
                format!("  - {{ name: run-{i}, interval: 1s, timeout: 5s, command: [{CHECK_DUMMY}, 0, ok] }}\n")
            }))
            .collect();
        let spec_path = dir.path().join("spec.yaml");
        std::fs::write(&spec_path, spec)?;
        let (mut server, url) =
            start_server(&args.mdd, &dir.path().join("data"), &spec_path, &[]).await?;
        let pid = server.id().context("pid")?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (_, cpu_before) = proc_usage(pid)?;
        let (results_before, groups_before) = stored(&http, &url).await?;
        let measure_from = now_ms();
        let started = Instant::now();
        let mut peak_rss = 0;
        while started.elapsed() < Duration::from_secs(args.seconds) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            peak_rss = peak_rss.max(proc_usage(pid)?.0);
        }
        let measure_to = now_ms();
        let (_, cpu_after) = proc_usage(pid)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (results_after, groups_after) = stored(&http, &url).await?;
        // Lateness of every run of a sample of checks, against the grid.
        let mut lateness = Vec::new();
        let mut made = 0usize;
        let sample = n.min(200);
        for i in (0..n).step_by((n / sample).max(1)) {
            let name = format!("run-{i}");
            let splay = mdd_core::schedule::splay(&name, Duration::from_secs(1));
            let answer: serde_json::Value = serde_json::from_slice(
                &http
                    .get(format!(
                        "{url}/api/v1/checks/{name}/results?from=1970-01-01T00:00:00Z&limit=10000"
                    ))
                    .bearer_auth(TOKEN)
                    .send()
                    .await?
                    .bytes()
                    .await?,
            )?;
            for r in answer["results"].as_array().into_iter().flatten() {
                let Some(at) = r["executed_at"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_millisecond())
                else {
                    continue;
                };
                if (measure_from..measure_to).contains(&at) {
                    made += 1;
                    lateness.push((at - splay).rem_euclid(1000));
                }
            }
        }
        let due = (sample as f64) * (measure_to - measure_from) as f64 / 1000.0;
        lateness.sort_unstable();
        let at = |q: f64| {
            lateness
                .get(((lateness.len().max(1) - 1) as f64 * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        let runs = (results_after - results_before).max(1.0);
        let server_cpu = (cpu_after - cpu_before) as f64;
        let per_1000 = server_cpu / (runs / 1000.0);
        let loop_cpu = spawn_loop_cpu(1000)? as f64;
        let _ = server.kill().await;
        println!(
            "{n:>6} {:>8.1}% {:>6}ms {:>6}ms {:>6}ms {:>12.0}ms {:>8.0}ms {:>9.2} {:>6.0}MB",
            100.0 * made as f64 / due,
            at(0.5),
            at(0.99),
            lateness.last().copied().unwrap_or(0),
            per_1000,
            loop_cpu,
            per_1000 / loop_cpu.max(1.0),
            peak_rss as f64 / 1024.0
        );
        println!(
            "       {:.1} results per group commit ({} results in {} commits)",
            (results_after - results_before) / (groups_after - groups_before).max(1.0),
            results_after - results_before,
            groups_after - groups_before
        );
    }
    println!(
        "\non time: runs made in the window against runs due, over a sample of checks; p50/p99/max: how late a run starts against its place on the grid"
    );
    Ok(())
}
