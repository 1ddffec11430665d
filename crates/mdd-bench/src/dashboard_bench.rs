//! Dashboard pages on a big datacenter: 10,000 events and 200 deployments in a real
//! `mdd server`. Server time (until the answer starts) p50/p99 of the overview, a deployment
//! page and the events page, against `/healthz` measured the same way in the same run (the
//! floor: routing, one loopback round trip); and page weight. Pages are drawn from memory:
//! no SQL per page, whatever the size.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::ingest_bench::{TOKEN, start_server};

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The mdd binary to measure (a release build).
    #[arg(long, default_value = "target/release/mdd")]
    mdd: std::path::PathBuf,
    /// Checks (one event each).
    #[arg(long, default_value_t = 10_000)]
    checks: usize,
    /// Deployments, each selecting an equal share of the checks.
    #[arg(long, default_value_t = 200)]
    deployments: usize,
    /// Requests per page.
    #[arg(long, default_value_t = 200)]
    requests: usize,
}

pub fn run(args: DashboardArgs) -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run_async(args))
}

struct Sample {
    p50: Duration,
    p99: Duration,
    bytes: usize,
}

async fn measure(http: &reqwest::Client, url: &str, requests: usize) -> Result<Sample> {
    let mut times = Vec::with_capacity(requests);
    let mut bytes = 0;
    for _ in 0..requests {
        let started = Instant::now();
        let response = http.get(url).bearer_auth(TOKEN).send().await?;
        times.push(started.elapsed());
        if !response.status().is_success() {
            bail!("{url}: {}", response.status());
        }
        bytes = response.bytes().await?.len();
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(Sample {
        p50: at(0.5),
        p99: at(0.99),
        bytes,
    })
}

async fn run_async(args: DashboardArgs) -> Result<()> {
    crate::ensure_built(&args.mdd)?;
    let dir = tempfile::tempdir()?;
    let per = args.checks.div_ceil(args.deployments.max(1));
    let mut spec = String::from("deployments:\n");
    for d in 0..args.deployments {
        spec.push_str(&format!(
            "  - {{ name: dc-{d}, description: datacenter {d}, selector: {{ dc: dc-{d} }}, settle: 10m }}\n"
        ));
    }
    spec.push_str("checks:\n");
    for i in 0..args.checks {
        let d = i / per;
        let first = d * per;
        // Every check but the first of its datacenter depends on that first one.
        let depends = if i == first {
            String::new()
        } else {
            format!(", depends_on: [c-{first}]")
        };
        spec.push_str(&format!(
            "  - {{ name: c-{i}, owner: team-{}, labels: {{ dc: dc-{d} }}, ttl: 1h{depends} }}\n",
            i % 20
        ));
    }
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec)?;
    let (mut server, url) =
        start_server(&args.mdd, &dir.path().join("data"), &spec_path, &[]).await?;
    let http = reqwest::Client::new();
    // One result per check: most pass, one in ten fails, one in fifty warns.
    let results: Vec<serde_json::Value> = (0..args.checks)
        .map(|i| {
            let status = if i % 10 == 3 {
                2
            } else if i % 50 == 7 {
                1
            } else {
                0
            };
            serde_json::json!({
                "id": format!("bench-{i}"),
                "check": format!("c-{i}"),
                "entity": "bench",
                "status": status,
                "output": format!("check {i} says hello | time=0.0{}s", i % 10),
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
            .await
            .context("post results")?;
        if !response.status().is_success() {
            bail!("posting results: {}", response.status());
        }
    }
    // Let the deployments' tracker see every check once.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let floor = measure(&http, &format!("{url}/healthz"), args.requests).await?;
    let pages = [
        ("overview /", format!("{url}/")),
        (
            "deployment /deployments/dc-7",
            format!("{url}/deployments/dc-7"),
        ),
        (
            "events /events?state=failing",
            format!("{url}/events?state=failing"),
        ),
        (
            "API /api/v1/deployments",
            format!("{url}/api/v1/deployments"),
        ),
    ];
    println!(
        "mdd-bench dashboard: {} events, {} deployments, {} requests per page\n",
        args.checks, args.deployments, args.requests
    );
    println!(
        "{:<34} {:>9} {:>9} {:>10} {:>14}",
        "page", "p50", "p99", "weight", "p50 / healthz"
    );
    println!(
        "{:<34} {:>7.2}ms {:>7.2}ms {:>9}B {:>14}",
        "floor: /healthz",
        floor.p50.as_secs_f64() * 1000.0,
        floor.p99.as_secs_f64() * 1000.0,
        floor.bytes,
        "1.0"
    );
    for (name, page) in pages {
        let sample = measure(&http, &page, args.requests).await?;
        println!(
            "{:<34} {:>7.2}ms {:>7.2}ms {:>8.1}KB {:>14.1}",
            name,
            sample.p50.as_secs_f64() * 1000.0,
            sample.p99.as_secs_f64() * 1000.0,
            sample.bytes as f64 / 1024.0,
            sample.p50.as_secs_f64() / floor.p50.as_secs_f64().max(1e-9)
        );
    }
    let css = http
        .get(format!("{url}/static/mdd.css"))
        .send()
        .await?
        .bytes()
        .await?
        .len();
    let js = http
        .get(format!("{url}/static/live.js"))
        .send()
        .await?
        .bytes()
        .await?
        .len();
    println!(
        "\nshared assets: stylesheet {:.1} KB, script {:.1} KB (cached 5 minutes)\ngoal: p50 ≤ 30 ms server time; SQL per page: none for these pages (drawn from memory)",
        css as f64 / 1024.0,
        js as f64 / 1024.0
    );
    let _ = server.kill().await;
    Ok(())
}
