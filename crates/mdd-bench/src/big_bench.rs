//! Large deployments: the deployment page and `/docs` of one deployment of 1,000, 10,000 and
//! 50,000 checks in a real `mdd server` (time per check should stay about flat as the
//! deployment grows), and what rendering does to everyone else: the p99 of result posts and
//! of `/healthz` while ten such pages render at once, against the same with none, in the same
//! run (goal: at most 2×).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::ingest_bench::{TOKEN, start_server};

#[derive(Debug, Args)]
pub struct BigArgs {
    /// The mdd binary to measure (a release build).
    #[arg(long, default_value = "target/release/mdd")]
    mdd: std::path::PathBuf,
    /// Deployment sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    sizes: Vec<usize>,
    /// Seconds of result posts measured with and without pages rendering.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

pub fn run(args: BigArgs) -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run_async(args))
}

/// One deployment of `n` checks: 50 roots (DNS, LDAP, …) and every other check behind one.
fn spec(n: usize) -> String {
    let mut spec = String::from(
        "deployments:\n  - { name: big, description: one big datacenter, selector: { dc: big }, settle: 10m }\nchecks:\n",
    );
    for i in 0..n {
        let depends = if i < 50 {
            String::new()
        } else {
            format!(", depends_on: [c-{}]", i % 50)
        };
        spec.push_str(&format!(
            "  - {{ name: c-{i}, owner: team-{}, description: integration point {i}, labels: {{ dc: big }}, ttl: 1h{depends} }}\n",
            i % 40
        ));
    }
    spec
}

async fn post_all(http: &reqwest::Client, url: &str, n: usize) -> Result<()> {
    let results: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("big-{i}"), "check": format!("c-{i}"), "entity": "bench",
                "status": if i % 10 == 3 { 2 } else { 0 },
                "output": format!("check {i} | time=0.01s"),
            })
        })
        .collect();
    for batch in results.chunks(5000) {
        let response = http
            .post(format!("{url}/api/v1/results"))
            .bearer_auth(TOKEN)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "results": batch }).to_string())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("posting results: {}", response.status());
        }
    }
    Ok(())
}

/// Whole time of a GET (server time and body), the median of `n`.
async fn page_time(http: &reqwest::Client, url: &str, n: usize) -> Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let response = http.get(url).bearer_auth(TOKEN).send().await?;
        if !response.status().is_success() {
            bail!("{url}: {}", response.status());
        }
        let _ = response.bytes().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Result posts of one small batch back to back (and `/healthz` between them) for `seconds`:
/// their p99s.
async fn latencies(
    http: &reqwest::Client,
    url: &str,
    seconds: u64,
) -> Result<(Duration, Duration)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut posts, mut health) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let body = serde_json::json!({ "results": [
            { "id": format!("lat-{}-{n}", Instant::now().elapsed().as_nanos()), "check": "c-0", "entity": "probe", "status": 0 }
        ]})
        .to_string();
        let started = Instant::now();
        let response = http
            .post(format!("{url}/api/v1/results"))
            .bearer_auth(TOKEN)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        posts.push(started.elapsed());
        if !response.status().is_success() {
            bail!("a result post failed: {}", response.status());
        }
        let started = Instant::now();
        http.get(format!("{url}/healthz"))
            .send()
            .await?
            .bytes()
            .await?;
        health.push(started.elapsed());
    }
    let p99 = |mut v: Vec<Duration>| {
        v.sort();
        v[((v.len() - 1) as f64 * 0.99).round() as usize]
    };
    Ok((p99(posts), p99(health)))
}

async fn run_async(args: BigArgs) -> Result<()> {
    crate::ensure_built(&args.mdd)?;
    println!(
        "mdd-bench big: one deployment of {:?} checks (50 roots, the rest behind one), a result each\n",
        args.sizes
    );
    println!(
        "{:>7} {:>12} {:>10} {:>10} {:>10} {:>9}",
        "checks", "deployment", "µs/check", "/docs", "µs/check", "weight"
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let mut largest = None;
    for &n in &args.sizes {
        let dir = tempfile::tempdir()?;
        let spec_path = dir.path().join("spec.yaml");
        std::fs::write(&spec_path, spec(n))?;
        let (server, url) =
            start_server(&args.mdd, &dir.path().join("data"), &spec_path, &[]).await?;
        post_all(&http, &url, n).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let repeat = if n <= 10_000 { 5 } else { 3 };
        let deployment = page_time(&http, &format!("{url}/deployments/big"), repeat).await?;
        let docs = page_time(&http, &format!("{url}/docs"), repeat).await?;
        let weight = http
            .get(format!("{url}/deployments/big"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .bytes()
            .await?
            .len();
        println!(
            "{n:>7} {:>10.1}ms {:>10.1} {:>8.1}ms {:>10.1} {:>7.1}MB",
            deployment.as_secs_f64() * 1000.0,
            deployment.as_secs_f64() * 1e6 / n as f64,
            docs.as_secs_f64() * 1000.0,
            docs.as_secs_f64() * 1e6 / n as f64,
            weight as f64 / 1e6
        );
        largest = Some((server, url, dir, n));
    }
    let (mut server, url, _dir, n) = largest.context("no sizes")?;
    // Ingestion and /healthz alone, then with ten pages of the largest rendering at once.
    let (alone_post, alone_health) = latencies(&http, &url, args.seconds).await?;
    let rendering = Arc::new(AtomicBool::new(true));
    let mut renderers = Vec::new();
    for i in 0..10 {
        let (http, url, rendering) = (http.clone(), url.clone(), Arc::clone(&rendering));
        let page = if i % 2 == 0 {
            "/deployments/big"
        } else {
            "/docs"
        };
        renderers.push(tokio::spawn(async move {
            while rendering.load(Ordering::Relaxed) {
                let _ = page_time(&http, &format!("{url}{page}"), 1).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (busy_post, busy_health) = latencies(&http, &url, args.seconds).await?;
    rendering.store(false, Ordering::Relaxed);
    for r in renderers {
        let _ = r.await;
    }
    println!(
        "\nwhile ten pages of {n} checks render at once (5 deployment pages, 5 /docs), against none:"
    );
    println!(
        "  result post p99 {:.1} ms against {:.1} ms: ratio {:.2}",
        busy_post.as_secs_f64() * 1000.0,
        alone_post.as_secs_f64() * 1000.0,
        busy_post.as_secs_f64() / alone_post.as_secs_f64().max(1e-9)
    );
    println!(
        "  /healthz p99 {:.1} ms against {:.1} ms: ratio {:.2}",
        busy_health.as_secs_f64() * 1000.0,
        alone_health.as_secs_f64() * 1000.0,
        busy_health.as_secs_f64() / alone_health.as_secs_f64().max(1e-9)
    );
    println!("goal: time per check about flat across sizes; both ratios ≤ 2");
    let _ = server.kill().await;
    Ok(())
}
