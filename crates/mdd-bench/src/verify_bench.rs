//! Whole-process benchmarks of `mdd verify`, each reported as a ratio against a baseline
//! measured in the same run on the same machine (these machines are shared and noisy: only
//! ratios from one run mean anything).
//!
//! 1. 1,000 built-in HTTP checks against a local server, vs `check_http` for the same URLs
//!    under `xargs -P 8` (the shell baseline). Goal: ≤ 0.2.
//! 2. 1,000 `command` checks of `check_dummy 0 ok` at concurrency 8, vs a plain loop of 8
//!    threads spawning the same processes. Goal: ≤ 1.15.
//! 3. Peak RSS of `mdd verify` with 1,000 checks.
//!
//! Talks only to 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use mdd_testkit::http::{Reply, Routes};

const CHECK_HTTP: &str = "/usr/lib/nagios/plugins/check_http";
const CHECK_DUMMY: &str = "/usr/lib/nagios/plugins/check_dummy";

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The mdd binary to measure (a release build).
    #[arg(long, default_value = "target/release/mdd")]
    mdd: PathBuf,
    /// Checks per run.
    #[arg(long, default_value_t = 1000)]
    checks: usize,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Only run the spawn-loop baseline (for profiling it alone).
    #[arg(long, hide = true)]
    baseline_only: bool,
    /// Internal: run mdd on this spec and print its peak RSS in KiB.
    #[arg(long, hide = true)]
    rss_of: Option<PathBuf>,
}

pub fn run(args: VerifyArgs) -> Result<()> {
    if args.baseline_only {
        let took = spawn_loop(args.checks, 8)?;
        println!("{:.3}s", took.as_secs_f64());
        return Ok(());
    }
    if let Some(spec) = &args.rss_of {
        run_mdd(&args.mdd, spec, &[])?;
        println!("{}", children_max_rss_kib()?);
        return Ok(());
    }
    for tool in [CHECK_HTTP, CHECK_DUMMY] {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing: install monitoring-plugins-basic (./scripts/test does)");
        }
    }
    crate::ensure_built(&args.mdd)?;
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let server = runtime.block_on(mdd_testkit::http::serve(
        Routes::new().with("/health", Reply::ok("ok")),
    ));
    let port = server.port();

    // Distinct URLs so neither side can cache anything; all served by the same handler.
    let http_spec = dir.path().join("http.yaml");
    let mut spec = String::from("checks:\n");
    for i in 0..args.checks {
        spec.push_str(&format!(
            "  - {{ name: http-{i}, http: {{ url: 'http://127.0.0.1:{port}/health?i={i}', body_contains: ok }} }}\n"
        ));
    }
    std::fs::write(&http_spec, spec)?;
    let url_args = dir.path().join("urls.txt");
    let lines: String = (0..args.checks)
        .map(|i| format!("-u /health?i={i} -s ok\n"))
        .collect();
    std::fs::write(&url_args, lines)?;

    let command_spec = dir.path().join("command.yaml");
    let mut spec = String::from("checks:\n");
    for i in 0..args.checks {
        spec.push_str(&format!(
            "  - {{ name: dummy-{i}, command: [{CHECK_DUMMY}, 0, ok] }}\n"
        ));
    }
    std::fs::write(&command_spec, spec)?;

    println!(
        "mdd-bench: {} checks, median of {} runs, one machine, one run\n",
        args.checks, args.repeat
    );

    // getrusage(RUSAGE_CHILDREN) reports the largest child a process ever waited for (even
    // before an exec), so the peak RSS is read in a fresh helper whose only child is mdd.
    let helper = Command::new(std::env::current_exe()?)
        .arg("verify")
        .arg("--mdd")
        .arg(&args.mdd)
        .arg("--rss-of")
        .arg(&http_spec)
        .output()
        .context("run the RSS helper")?;
    if !helper.status.success() {
        bail!(
            "RSS helper failed: {}",
            String::from_utf8_lossy(&helper.stderr)
        );
    }
    let peak_rss_kib: f64 = String::from_utf8_lossy(&helper.stdout).trim().parse()?;

    let mut http_mdd = Vec::new();
    let mut http_shell = Vec::new();
    let mut cmd_mdd = Vec::new();
    let mut cmd_loop = Vec::new();
    for _ in 0..args.repeat {
        http_mdd.push(run_mdd(&args.mdd, &http_spec, &[])?);
        http_shell.push(run_xargs_check_http(&url_args, port)?);
        cmd_mdd.push(run_mdd(&args.mdd, &command_spec, &["--concurrency", "8"])?);
        cmd_loop.push(spawn_loop(args.checks, 8)?);
    }
    drop(server);

    let report = |name: &str,
                  mdd: &mut Vec<Duration>,
                  base: &mut Vec<Duration>,
                  base_name: &str,
                  goal: f64| {
        let (m, b) = (median(mdd), median(base));
        let ratio = m.as_secs_f64() / b.as_secs_f64();
        println!(
            "{name:<34} mdd {:>8.3}s   {base_name:<26} {:>8.3}s   ratio {ratio:.3}  (goal ≤ {goal}) {}",
            m.as_secs_f64(),
            b.as_secs_f64(),
            if ratio <= goal { "met" } else { "NOT MET" }
        );
    };
    report(
        "1,000 http checks",
        &mut http_mdd,
        &mut http_shell,
        "xargs -P 8 check_http",
        0.2,
    );
    report(
        "1,000 check_dummy, concurrency 8",
        &mut cmd_mdd,
        &mut cmd_loop,
        "8-thread spawn loop",
        1.15,
    );
    println!(
        "peak RSS of mdd verify, 1,000 http checks: {:.1} MiB",
        peak_rss_kib / 1024.0
    );
    Ok(())
}

fn children_max_rss_kib() -> Result<i64> {
    Ok(nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?.max_rss())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn run_mdd(mdd: &Path, spec: &Path, extra: &[&str]) -> Result<Duration> {
    let started = Instant::now();
    let output = Command::new(mdd)
        .arg("verify")
        .arg(spec)
        .args(["--format", "json"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .context("run mdd")?;
    let took = started.elapsed();
    if output.status.code() != Some(0) {
        bail!(
            "mdd verify did not pass: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
                .chars()
                .take(3000)
                .collect::<String>()
        );
    }
    Ok(took)
}

fn run_xargs_check_http(url_args: &Path, port: u16) -> Result<Duration> {
    let started = Instant::now();
    let status = Command::new("xargs")
        .args(["-P", "8", "-L", "1", "-a"])
        .arg(url_args)
        .args([CHECK_HTTP, "-I", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("run xargs")?;
    let took = started.elapsed();
    if !status.success() {
        bail!("xargs check_http failed: {status}");
    }
    Ok(took)
}

/// The baseline for command checks: `threads` workers spawning the plugin with piped output
/// and waiting for it, no shell, nothing else.
fn spawn_loop(count: usize, threads: usize) -> Result<Duration> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        let output = Command::new(CHECK_DUMMY)
                            .args(["0", "ok"])
                            .stdin(Stdio::null())
                            .output()?;
                        if !output.status.success() {
                            bail!("check_dummy failed");
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("worker panicked"))??;
        }
        Ok(())
    })?;
    Ok(started.elapsed())
}
