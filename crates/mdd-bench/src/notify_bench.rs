//! Ingestion with notifications: results/s into a real `mdd server` whose spec has 5 webhook
//! handlers (to a receiver in this process) while 10% of the results change state, against the
//! same load into a server without handlers, in the same run. Goal: ratio ≥ 0.9.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use crate::ingest_bench::{TOKEN, start_server};

const CHECKS: usize = 1000;
const ENTITIES: usize = 10;

#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// The mdd binary to measure (a release build).
    #[arg(long, default_value = "target/release/mdd")]
    mdd: std::path::PathBuf,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 10)]
    clients: usize,
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

pub fn run(args: NotifyArgs) -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run_async(args))
}

/// Posts batches for `seconds`; every tenth result flips its (check, entity) status.
async fn load(url: &str, args: &NotifyArgs, tag: &str) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let stored = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let (url, stored, tag, batch) = (
            format!("{url}/api/v1/results"),
            Arc::clone(&stored),
            tag.to_string(),
            args.batch,
        );
        // Each client owns its own keys, so it knows their status.
        let keys: Vec<usize> = (0..CHECKS * ENTITIES)
            .filter(|k| k % args.clients == client)
            .collect();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut failing = vec![false; keys.len()];
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

    let mut rates = Vec::new();
    for (name, spec) in [("no handlers", plain), ("5 handlers", with_handlers)] {
        let dir = tempfile::tempdir()?;
        let spec_path = dir.path().join("spec.yaml");
        std::fs::write(&spec_path, spec)?;
        let (mut server, url) =
            start_server(&args.mdd, &dir.path().join("data"), &spec_path).await?;
        let rate = load(&url, &args, &name.replace(' ', "-")).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = server.kill().await;
        rates.push((name, rate));
    }
    receiver_task.abort();
    println!(
        "mdd-bench notify: {} clients × {} results per request, {} s each, 10% of results change state\n",
        args.clients, args.batch, args.seconds
    );
    for (name, rate) in &rates {
        println!("  {name:<12} {rate:>9.0} results/s");
    }
    let ratio = rates[1].1 / rates[0].1.max(1.0);
    println!(
        "  ratio {ratio:.2} (goal ≥ 0.9); webhook deliveries received: {} ({:.0}/s)",
        delivered.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed) as f64 / args.seconds as f64
    );
    Ok(())
}
