//! Many connections held open against one `mdd server`: 10,000 sockets that send nothing, then
//! 10,000 agents' long-polls. The p99 of `/healthz` and of a result post with each of them
//! open, against the same with none, in the same run (goal: at most 2×). (Each phase alone: a
//! hard open-files limit of 20,000, as here, does not hold both at once in one client.)

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::ingest_bench::{TOKEN, start_server};

#[derive(Debug, Args)]
pub struct ConnectionsArgs {
    /// The mdd binary to measure (a release build).
    #[arg(long, default_value = "target/release/mdd")]
    mdd: std::path::PathBuf,
    /// Sockets opened that send nothing.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Agents' long-polls held open.
    #[arg(long, default_value_t = 10_000)]
    polls: usize,
    /// Requests measured each way.
    #[arg(long, default_value_t = 500)]
    requests: usize,
}

pub fn run(args: ConnectionsArgs) -> Result<()> {
    raise_fd_limit()?;
    tokio::runtime::Runtime::new()?.block_on(run_async(args))
}

fn raise_fd_limit() -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    if hard < 12_000 {
        bail!("the hard open-files limit is {hard}: this bench needs about 12,000");
    }
    Ok(())
}

/// p99 of `/healthz` and of a one-result post, `n` of each, one after the other.
async fn latencies(
    http: &reqwest::Client,
    url: &str,
    n: usize,
    tag: &str,
) -> Result<(Duration, Duration)> {
    let (mut health, mut posts) = (Vec::new(), Vec::new());
    for i in 0..n {
        let started = Instant::now();
        http.get(format!("{url}/healthz"))
            .send()
            .await?
            .bytes()
            .await?;
        health.push(started.elapsed());
        let started = Instant::now();
        let response = http
            .post(format!("{url}/api/v1/results"))
            .bearer_auth(TOKEN)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(format!(
                r#"{{"results": [{{"id": "{tag}-{i}", "check": "cron", "status": 0}}]}}"#
            ))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("a result post failed: {}", response.status());
        }
        posts.push(started.elapsed());
    }
    let p99 = |mut v: Vec<Duration>| {
        v.sort();
        v[((v.len() - 1) as f64 * 0.99).round() as usize]
    };
    Ok((p99(health), p99(posts)))
}

async fn run_async(args: ConnectionsArgs) -> Result<()> {
    crate::ensure_built(&args.mdd)?;
    let dir = tempfile::tempdir()?;
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(
        &spec_path,
        "checks:\n  - { name: cron, ttl: 1h }\n  - { name: web, subscriptions: [web], command: [echo, OK] }\n",
    )?;
    let (mut server, url) =
        start_server(&args.mdd, &dir.path().join("data"), &spec_path, &[]).await?;
    let http = reqwest::Client::new();
    let (alone_health, alone_post) = latencies(&http, &url, args.requests, "alone").await?;

    let address = url.trim_start_matches("http://").to_string();
    let mut idle = Vec::with_capacity(args.idle);
    for _ in 0..args.idle {
        idle.push(
            tokio::net::TcpStream::connect(&address)
                .await
                .context("an idle socket")?,
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_health, idle_post) = latencies(&http, &url, args.requests, "idle").await?;
    let idle_count = idle.len();
    drop(idle);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The agents' version of their check set, so their long-polls wait.
    let answer: serde_json::Value = serde_json::from_slice(
        &http
            .get(format!("{url}/api/v1/agent/checks?subscriptions=web"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let version = answer["version"].as_str().context("version")?.to_string();
    let mut polls = Vec::with_capacity(args.polls);
    for _ in 0..args.polls {
        // One connection per agent, as agents have.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let poll = format!("{url}/api/v1/agent/checks?subscriptions=web&after={version}&wait=60s");
        polls.push(tokio::spawn(async move {
            client
                .get(poll)
                .bearer_auth(TOKEN)
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (poll_health, poll_post) = latencies(&http, &url, args.requests, "polls").await?;
    let held = polls.iter().filter(|p| !p.is_finished()).count();
    println!(
        "mdd-bench connections: p99 of {} requests each way
",
        args.requests
    );
    let line = |what: &str, health: Duration, post: Duration| {
        println!(
            "  {what:<34} /healthz {:>7.2} ms ({:>5.2}×)   result post {:>7.2} ms ({:>5.2}×)",
            health.as_secs_f64() * 1000.0,
            health.as_secs_f64() / alone_health.as_secs_f64().max(1e-9),
            post.as_secs_f64() * 1000.0,
            post.as_secs_f64() / alone_post.as_secs_f64().max(1e-9)
        );
    };
    line("none open", alone_health, alone_post);
    line(
        &format!("{idle_count} sockets sending nothing"),
        idle_health,
        idle_post,
    );
    line(&format!("{held} long-polls held"), poll_health, poll_post);
    println!("goal: every ratio ≤ 2");
    for poll in polls {
        poll.abort();
    }
    let _ = server.kill().await;
    Ok(())
}
