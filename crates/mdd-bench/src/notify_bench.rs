//! Ingestion with notifications: results/s into a real `mdd server` whose spec has 5 webhook
//! handlers (to a receiver in this process) while 10% of the results change state, against the
//! same load into a server without handlers, in the same run. Goal: ratio ≥ 0.9.
//!
//! Both servers run side by side and take turns for a few short rounds (none, handlers, none,
//! handlers, …), each round giving a ratio; the median is reported. On a shared machine a
//! burst of someone else's work then spoils one round instead of one whole side.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::ingest_bench::{TOKEN, start_server};

const CHECKS: usize = 1000;
const ENTITIES: usize = 10;

#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// The mdd binary to measure (a release build).
    #[arg(long, default_value = "target/release/mdd")]
    mdd: std::path::PathBuf,
    /// Seconds per turn.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Turns per server.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 10)]
    clients: usize,
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

pub fn run(args: NotifyArgs) -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run_async(args))
}

/// What each client last sent for each of its keys: kept between turns, so a flip is a flip.
type Failing = Vec<Arc<std::sync::Mutex<Vec<bool>>>>;

/// Posts batches for `seconds`; every tenth result flips its (check, entity) status.
async fn load(url: &str, args: &NotifyArgs, tag: &str, state: &Failing) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let stored = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let (url, stored, tag, batch, state) = (
            format!("{url}/api/v1/results"),
            Arc::clone(&stored),
            tag.to_string(),
            args.batch,
            Arc::clone(&state[client]),
        );
        // Each client owns its own keys, so it knows their status.
        let keys: Vec<usize> = (0..CHECKS * ENTITIES)
            .filter(|k| k % args.clients == client)
            .collect();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut failing = std::mem::take(&mut *state.lock().unwrap_or_else(|p| p.into_inner()));
            failing.resize(keys.len(), false);
            let mut next = 0usize;
            let mut round = 0u64;
            while Instant::now() < deadline {
                let results: Vec<serde_json::Value> = (0..batch)
                    .map(|i| {
                        let slot = next % keys.len();
                        next += 1;
                        if i % 10 == 0 {
                            failing[slot] = !failing[slot];
                        }
                        let key = keys[slot];
                        serde_json::json!({
                            "id": format!("{tag}-{client}-{round}-{i}"),
                            "check": format!("c-{}", key % CHECKS),
                            "entity": format!("e-{}", key / CHECKS),
                            "status": if failing[slot] { 2 } else { 0 },
                            "output": "bench",
                        })
                    })
                    .collect();
                let response = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(serde_json::json!({ "results": results }).to_string())
                    .send()
                    .await;
                if let Ok(r) = response
                    && r.status().is_success()
                {
                    let _ = r.bytes().await;
                    stored.fetch_add(batch as u64, Ordering::Relaxed);
                }
                round += 1;
            }
            *state.lock().unwrap_or_else(|p| p.into_inner()) = failing;
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(stored.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn run_async(args: NotifyArgs) -> Result<()> {
    crate::ensure_built(&args.mdd)?;
    // The receiver: counts what the handlers deliver.
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&delivered);
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_url = format!("http://{}/hook", listener.local_addr()?);
    let receiver_task = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let checks: String = (0..CHECKS)
        .map(|i| format!("  - {{ name: c-{i}, owner: ops, ttl: 1h }}\n"))
        .collect();
    let plain = format!("checks:\n{checks}");
    let handlers: String = (0..5)
        .map(|h| {
            format!(
                "  - {{ name: hook-{h}, type: webhook, url: '{receiver_url}', filter: {{ owners: [ops] }} }}\n"
            )
        })
        .collect();
    let with_handlers = format!("handlers:\n{handlers}checks:\n{checks}");

    let dir = tempfile::tempdir()?;
    let mut servers = Vec::new();
    for (name, spec) in [("no handlers", plain), ("5 handlers", with_handlers)] {
        let tag = name.replace(' ', "-");
        let spec_path = dir.path().join(format!("{tag}.yaml"));
        std::fs::write(&spec_path, spec)?;
        let (server, url) =
            start_server(&args.mdd, &dir.path().join(&tag), &spec_path, &[]).await?;
        let state: Failing = (0..args.clients).map(|_| Default::default()).collect();
        servers.push((name, tag, server, url, state));
    }
    let mut rates = [Vec::new(), Vec::new()];
    // CPU ms used per side, by the server and by this process (load and receiver), and the
    // results stored: throughput on a shared machine is noisy, CPU per result much less so.
    let mut cpu = [(0u64, 0u64, 0f64); 2];
    let mut delivering = Duration::ZERO;
    let usage = |pid: Option<u32>| -> Result<u64> {
        Ok(crate::agent_bench::proc_usage(pid.context("server pid")?)?.1)
    };
    for round in 0..args.rounds {
        for (side, (_, tag, server, url, state)) in servers.iter().enumerate() {
            let (server_before, own_before) =
                (usage(server.id())?, usage(Some(std::process::id()))?);
            let rate = load(url, &args, &format!("{tag}-{round}"), state).await?;
            rates[side].push(rate);
            // Deliveries still queued are part of this side's cost: let them finish first.
            tokio::time::sleep(Duration::from_secs(2)).await;
            cpu[side].0 += usage(server.id())? - server_before;
            cpu[side].1 += usage(Some(std::process::id()))? - own_before;
            cpu[side].2 += rate * args.seconds as f64;
            if side == 1 {
                delivering += Duration::from_secs(args.seconds);
            }
        }
    }
    // What the server says became of every notification, against what the receiver got.
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", servers[1].3))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let total = |prefix: &str, outcome: Option<&str>| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter(|l| outcome.is_none_or(|o| l.contains(&format!("outcome=\"{o}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let accounted = format!(
        "deliveries ok {}, failed {}, dropped {}; notices dropped {}",
        total("mdd_deliveries_total", Some("ok")),
        total("mdd_deliveries_total", Some("failed")),
        total("mdd_deliveries_total", Some("dropped")),
        total("mdd_notices_dropped_total", None),
    );
    for (_, _, mut server, _, _) in servers {
        let _ = server.kill().await;
    }
    receiver_task.abort();
    println!(
        "mdd-bench notify: {} clients × {} results per request, {} turns of {} s each, 10% of results change state\n",
        args.clients, args.batch, args.rounds, args.seconds
    );
    let mut ratios: Vec<f64> = rates[1]
        .iter()
        .zip(&rates[0])
        .map(|(with, without)| with / without.max(1.0))
        .collect();
    for (name, side) in [("no handlers", &rates[0]), ("5 handlers", &rates[1])] {
        let listed: Vec<String> = side.iter().map(|r| format!("{r:>7.0}")).collect();
        println!("  {name:<12} {} results/s", listed.join(" "));
    }
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:>7.2}")).collect();
    println!("  {:<12} {}", "ratio", listed.join(" "));
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let received = delivered.load(Ordering::Relaxed);
    println!(
        "  median ratio {median:.2} (goal ≥ 0.9); webhook deliveries received: {received} ({:.0}/s of load with handlers)",
        received as f64 / delivering.as_secs_f64().max(1.0)
    );
    println!("  the server says: {accounted}");
    let per_1000 = |ms: u64, results: f64| ms as f64 * 1000.0 / results.max(1.0);
    let server = [per_1000(cpu[0].0, cpu[0].2), per_1000(cpu[1].0, cpu[1].2)];
    let own = [per_1000(cpu[0].1, cpu[0].2), per_1000(cpu[1].1, cpu[1].2)];
    println!(
        "  CPU per 1,000 results: server {:.0} ms without handlers, {:.0} ms with ({:.2}×); \
         this process (load, and the receiver on the handlers' side) {:.0} → {:.0} ms",
        server[0],
        server[1],
        server[1] / server[0].max(0.001),
        own[0],
        own[1]
    );
    Ok(())
}
