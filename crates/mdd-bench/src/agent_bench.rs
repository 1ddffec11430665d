//! The agent: resident memory idle and busy; its own CPU per 1,000 check executions against a
//! plain loop spawning the same plugin (back to back, and paced at the agent's own rate so that
//! both pay for cold caches alike); and how late its runs start with 1,000 checks every second,
//! against a plain tokio program sleeping to the same grid and spawning the same plugin.
//! Baselines run in the same run, in fresh helper processes so that nothing else counts.
//! Goals: ≤ 8 MiB idle, ≤ 20 MiB busy, CPU ≤ 1.2×.

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
    /// Internal: pause this long between spawns of the loop, in µs.
    #[arg(long, hide = true, default_value_t = 0)]
    spawn_pause_us: u64,
    /// Checks run every second for the lateness measurement.
    #[arg(long, default_value_t = 1000)]
    lateness_checks: usize,
    /// Seconds of every-second running measured for lateness.
    #[arg(long, default_value_t = 15)]
    lateness_seconds: u64,
    /// Internal: run the tokio-timer baseline for this many seconds and print its lateness.
    #[arg(long, hide = true)]
    timer_baseline: Option<u64>,
    /// Talk plain HTTP to the server instead of HTTPS (as agents on real networks do).
    #[arg(long)]
    plain: bool,
}

pub fn run(args: AgentArgs) -> Result<()> {
    if let Some(count) = args.spawn_loop {
        for _ in 0..count {
            std::thread::sleep(Duration::from_micros(args.spawn_pause_us));
            std::process::Command::new(CHECK_DUMMY)
                .args(["0", "ok"])
                .stdin(Stdio::null())
                .output()?;
        }
        println!("{}", self_cpu_ms()?);
        return Ok(());
    }
    if let Some(seconds) = args.timer_baseline {
        let lateness = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(timer_baseline(args.lateness_checks, seconds))?;
        println!("{}", serde_json::to_string(&lateness)?);
        return Ok(());
    }
    tokio::runtime::Runtime::new()?.block_on(run_async(args))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn lateness_name(i: usize) -> String {
    format!("late-{i}")
}

/// The plainest scheduler there is: one tokio task per check sleeping to its next run on the
/// same grid as mdd's (`mdd_core::schedule`), then spawning the plugin. Returns every run's
/// lateness in ms, measured like the agent's (start time in ms against the grid).
async fn timer_baseline(checks: usize, seconds: u64) -> Result<Vec<i64>> {
    let interval = Duration::from_secs(1);
    let started = now_ms();
    let measure_from = started + 3000;
    let end = measure_from + i64::try_from(seconds * 1000)?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..checks {
        tasks.spawn(async move {
            let splay = mdd_core::schedule::splay(&lateness_name(i), interval);
            let mut lateness = Vec::new();
            loop {
                let due = mdd_core::schedule::next_run(now_ms(), interval, splay);
                if due >= end {
                    return lateness;
                }
                let wait = u64::try_from(due - now_ms()).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let start = now_ms();
                if due >= measure_from {
                    lateness.push(start - due);
                }
                let _ = tokio::process::Command::new(CHECK_DUMMY)
                    .args(["0", "ok"])
                    .stdin(Stdio::null())
                    .output()
                    .await;
            }
        });
    }
    let mut all = Vec::new();
    while let Some(lateness) = tasks.join_next().await {
        all.extend(lateness?);
    }
    Ok(all)
}

/// (p50, p99, max) of a sample.
fn percentiles(mut sample: Vec<i64>) -> (i64, i64, i64) {
    sample.sort_unstable();
    let at = |q: f64| {
        sample
            .get(((sample.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    (at(0.5), at(0.99), sample.last().copied().unwrap_or(0))
}

fn self_cpu_ms() -> Result<u64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1000 + t.tv_usec() as u64 / 1000;
    Ok(ms(usage.user_time()) + ms(usage.system_time()))
}

/// (resident KiB, own CPU ms) of a running process, from /proc.
pub(crate) fn proc_usage(pid: u32) -> Result<(u64, u64)> {
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

/// Memory only this process uses (private pages, USS), in KiB: RSS also counts the pages of the
/// binary and libraries it shares with the page cache.
fn private_kib(pid: u32) -> Result<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(rollup
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum())
}

/// Starts `mdd agent` with the bench token against `url` (trusting `ca`, for HTTPS).
fn spawn_agent(
    mdd: &std::path::Path,
    url: &str,
    ca: Option<&std::path::Path>,
    subscriptions: &str,
    data: &std::path::Path,
) -> Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(mdd);
    command.arg("agent");
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    command
        .args(["--server", url, "--token", TOKEN, "--name", "bench-agent"])
        .args(["--subscriptions", subscriptions, "--data"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start mdd agent")
}

async fn run_async(args: AgentArgs) -> Result<()> {
    crate::ensure_built(&args.mdd)?;
    let dir = tempfile::tempdir()?;
    let spec: String = std::iter::once("checks:\n".to_string())
        .chain((0..args.checks).map(|i| {
            format!("  - {{ name: dummy-{i}, subscriptions: [bench], interval: 1m, command: [{CHECK_DUMMY}, 0, ok] }}\n")
        }))
        .chain((0..args.lateness_checks).map(|i| {
            format!("  - {{ name: {}, subscriptions: [late], interval: 1s, command: [{CHECK_DUMMY}, 0, ok] }}\n", lateness_name(i))
        }))
        .collect();
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec)?;
    // HTTPS by default, as on a real network: a certificate from a throw-away CA.
    let ca = mdd_testkit::certs::TestCa::new("mdd-bench CA");
    let (cert, key) = ca
        .issue("127.0.0.1", time::Duration::days(1))
        .write_pem(dir.path(), "server");
    let ca_file = ca.write_pem(dir.path());
    let tls = [
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ];
    let extra: Vec<&str> = if args.plain {
        Vec::new()
    } else {
        tls.iter().map(String::as_str).collect()
    };
    let (mut server, url) =
        crate::ingest_bench::start_server(&args.mdd, &dir.path().join("data"), &spec_path, &extra)
            .await?;
    let ca = (!args.plain).then_some(ca_file.as_path());

    let mut agent = spawn_agent(&args.mdd, &url, ca, "none", &dir.path().join("idle"))?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_pid = agent.id().context("pid")?;
    let (idle_rss, _) = proc_usage(idle_pid)?;
    let idle_private = private_kib(idle_pid)?;
    let _ = agent.kill().await;

    let mut agent = spawn_agent(&args.mdd, &url, ca, "bench", &dir.path().join("busy"))?;
    let pid = agent.id().context("pid")?;
    // Let it fetch its checks and settle, then measure a window of steady running.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut http = reqwest::Client::builder();
    if let Some(ca) = ca {
        http = http.tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(ca)?)?]);
    }
    let http = http.build()?;
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
    if executions == 0 {
        bail!("the agent ran nothing");
    }

    // Lateness: every run's start against its place on the grid, from the stored results.
    let mut agent = spawn_agent(&args.mdd, &url, ca, "late", &dir.path().join("late"))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let measure_from = now_ms();
    tokio::time::sleep(Duration::from_secs(args.lateness_seconds)).await;
    let measure_to = now_ms();
    // SIGTERM: the agent sends what it holds before it exits, so every run of the window counts.
    if let Some(pid) = agent.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), agent.wait()).await;
    let _ = agent.kill().await;
    let mut agent_lateness = Vec::new();
    for i in 0..args.lateness_checks {
        let name = lateness_name(i);
        let splay = mdd_core::schedule::splay(&name, Duration::from_secs(1));
        let body = http
            .get(format!("{url}/api/v1/checks/{name}/results?limit=1000"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        let results = answer["results"].as_array().context("results")?;
        agent_lateness.extend(
            results
                .iter()
                .filter_map(|r| r["executed_at"].as_str()?.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond())
                .filter(|t| (measure_from..measure_to).contains(t))
                .map(|t| (t - splay).rem_euclid(1000)),
        );
    }
    let _ = server.kill().await;
    let expected_runs = args.lateness_checks as u64 * args.lateness_seconds;

    let helper = |extra: &[String]| -> Result<String> {
        let out = std::process::Command::new(std::env::current_exe()?)
            .arg("agent")
            .args(extra)
            .output()
            .context("run a baseline helper")?;
        if !out.status.success() {
            bail!(
                "baseline helper failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let timer_lateness: Vec<i64> = serde_json::from_str(&helper(&[
        "--timer-baseline".into(),
        args.lateness_seconds.to_string(),
        "--lateness-checks".into(),
        args.lateness_checks.to_string(),
    ])?)?;
    let loop_cpu: u64 = helper(&["--spawn-loop".into(), executions.to_string()])?.parse()?;
    let pause_us = args.seconds * 1_000_000 / executions;
    let paced_cpu: u64 = helper(&[
        "--spawn-loop".into(),
        executions.to_string(),
        "--spawn-pause-us".into(),
        pause_us.to_string(),
    ])?
    .parse()?;

    let per_1000 = |cpu: u64| cpu as f64 * 1000.0 / executions as f64;
    println!(
        "mdd-bench agent: {} checks once a minute, {} s measured, over {}\n",
        args.checks,
        args.seconds,
        if args.plain { "plain HTTP" } else { "HTTPS" }
    );
    println!(
        "resident memory: idle {:.1} MiB (goal ≤ 8; {:.1} MiB of it private, the rest shared pages of the binary and libc), busy {:.1} MiB, peak {:.1} MiB (goal ≤ 20)",
        idle_rss as f64 / 1024.0,
        idle_private as f64 / 1024.0,
        busy_rss as f64 / 1024.0,
        peak_rss.max(busy_rss) as f64 / 1024.0
    );
    println!(
        "own CPU per 1,000 executions ({executions} runs): agent {:.0} ms; plain spawn loop at the same pace {:.0} ms, ratio {:.2} (goal ≤ 1.2); back to back {:.0} ms, ratio {:.2}",
        per_1000(agent_cpu),
        per_1000(paced_cpu),
        per_1000(agent_cpu) / per_1000(paced_cpu).max(1.0),
        per_1000(loop_cpu),
        per_1000(agent_cpu) / per_1000(loop_cpu).max(1.0)
    );
    let runs = agent_lateness.len();
    let (a50, a99, amax) = percentiles(agent_lateness);
    let (t50, t99, tmax) = percentiles(timer_lateness);
    println!(
        "lateness, {} checks every second, {} s: agent p50 {a50} ms, p99 {a99} ms, max {amax} ms ({runs} of {expected_runs} runs); tokio-timer baseline p50 {t50} ms, p99 {t99} ms, max {tmax} ms",
        args.lateness_checks, args.lateness_seconds
    );
    Ok(())
}
