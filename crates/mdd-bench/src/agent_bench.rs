//! The agent: resident memory idle and busy, and its own CPU per 1,000 check executions
//! against a plain loop spawning the same plugin (measured in the same run, in a fresh helper
//! process so that nothing else counts). Goals: ≤ 8 MiB idle, ≤ 20 MiB busy, CPU ≤ 1.2×.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

const TOKEN: &str = "mdd_bench_admin_token_0123456789abcdef";
const CHECK_DUMMY: &str = "/usr/lib/nagios/plugins/check_dummy";

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The mdd binary to measure (a release build).
    #[arg(long, default_value = "target/release/mdd")]
    mdd: PathBuf,
    /// Checks the busy agent runs, each once a minute.
    #[arg(long, default_value_t = 1000)]
    checks: usize,
    /// Seconds of busy running measured.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Internal: spawn the plugin this many times and print this process' own CPU in ms.
    #[arg(long, hide = true)]
    spawn_loop: Option<usize>,
}

pub fn run(args: AgentArgs) -> Result<()> {
    if let Some(count) = args.spawn_loop {
        for _ in 0..count {
            std::process::Command::new(CHECK_DUMMY)
                .args(["0", "ok"])
                .stdin(Stdio::null())
                .output()?;
        }
        println!("{}", self_cpu_ms()?);
        return Ok(());
    }
    tokio::runtime::Runtime::new()?.block_on(run_async(args))
}

fn self_cpu_ms() -> Result<u64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1000 + t.tv_usec() as u64 / 1000;
    Ok(ms(usage.user_time()) + ms(usage.system_time()))
}

/// (resident KiB, own CPU ms) of a running process, from /proc.
fn proc_usage(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok((rss, ticks * 10))
}

/// Starts `mdd agent` with the bench token against `url`.
fn spawn_agent(
    mdd: &std::path::Path,
    url: &str,
    subscriptions: &str,
    data: &std::path::Path,
) -> Result<tokio::process::Child> {
    tokio::process::Command::new(mdd)
        .args([
            "agent",
            "--server",
            url,
            "--token",
            TOKEN,
            "--name",
            "bench-agent",
        ])
        .args(["--subscriptions", subscriptions, "--data"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start mdd agent")
}

async fn run_async(args: AgentArgs) -> Result<()> {
    if !args.mdd.exists() {
        bail!(
            "{} is missing: cargo build --release -p mdd",
            args.mdd.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let spec: String = std::iter::once("checks:\n".to_string())
        .chain((0..args.checks).map(|i| {
            format!("  - {{ name: dummy-{i}, subscriptions: [bench], interval: 1m, command: [{CHECK_DUMMY}, 0, ok] }}\n")
        }))
        .collect();
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec)?;
    let (mut server, url) =
        crate::ingest_bench::start_server(&args.mdd, &dir.path().join("data"), &spec_path).await?;

    let mut agent = spawn_agent(&args.mdd, &url, "none", &dir.path().join("idle"))?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (idle_rss, _) = proc_usage(agent.id().context("pid")?)?;
    let _ = agent.kill().await;

    let mut agent = spawn_agent(&args.mdd, &url, "bench", &dir.path().join("busy"))?;
    let pid = agent.id().context("pid")?;
    // Let it fetch its checks and settle, then measure a window of steady running.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let http = reqwest::Client::new();
    let stored = |http: reqwest::Client, url: String| async move {
        let text = http
            .get(format!("{url}/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .text()
            .await?;
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("mdd_results_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        anyhow::Ok(total as u64)
    };
    let (_, cpu_before) = proc_usage(pid)?;
    let results_before = stored(http.clone(), url.clone()).await?;
    let started = Instant::now();
    let mut peak_rss = 0;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(proc_usage(pid)?.0);
    }
    // Results of the window are sent within a second of being made.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (busy_rss, cpu_after) = proc_usage(pid)?;
    let executions = stored(http.clone(), url.clone()).await? - results_before;
    let agent_cpu = cpu_after - cpu_before;
    let _ = agent.kill().await;
    let _ = server.kill().await;
    if executions == 0 {
        bail!("the agent ran nothing");
    }

    let helper = std::process::Command::new(std::env::current_exe()?)
        .args(["agent", "--spawn-loop", &executions.to_string()])
        .output()
        .context("run the spawn-loop helper")?;
    let loop_cpu: u64 = String::from_utf8_lossy(&helper.stdout).trim().parse()?;

    let per_1000 = |cpu: u64| cpu as f64 * 1000.0 / executions as f64;
    println!(
        "mdd-bench agent: {} checks once a minute, {} s measured\n",
        args.checks, args.seconds
    );
    println!(
        "resident memory: idle {:.1} MiB (goal ≤ 8), busy {:.1} MiB, peak {:.1} MiB (goal ≤ 20)",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0,
        peak_rss.max(busy_rss) as f64 / 1024.0
    );
    println!(
        "own CPU per 1,000 executions ({executions} runs): agent {:.0} ms, plain spawn loop {:.0} ms, ratio {:.2} (goal ≤ 1.2)",
        per_1000(agent_cpu),
        per_1000(loop_cpu),
        per_1000(agent_cpu) / per_1000(loop_cpu).max(1.0)
    );
    Ok(())
}
