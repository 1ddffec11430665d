//! Sustained result ingestion into a real `mdd server` (results stored durably: SQLite WAL,
//! synchronous=FULL), with 10, 100 and 1,000 concurrent HTTP clients posting batches; the
//! baseline, in the same run, is a minimal axum handler that parses the same JSON into the
//! same shape and discards it. Goal: ≥ 40,000 results/s stored and ≥ 0.5 of the baseline.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::response::IntoResponse;
use clap::Args;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const TOKEN: &str = "mdd_bench_admin_token_0123456789abcdef";
pub const CHECKS: usize = 100;
pub const ENTITIES: usize = 10;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The mdd binary to measure (a release build).
    #[arg(long, default_value = "target/release/mdd")]
    mdd: PathBuf,
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Results per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent clients, comma separated.
    #[arg(long, default_value = "10,100,1000", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Turns of HTTPS against plain HTTP (100 clients each, taking turns; the ratio is the
    /// median of the turns'); 0 skips it.
    #[arg(long, default_value_t = 3)]
    tls_turns: usize,
}

/// The same shape the server reads, so the baseline parses as much as mdd does.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Payload {
    results: Vec<ResultIn>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct ResultIn {
    id: String,
    check: String,
    entity: Option<String>,
    status: i64,
    output: String,
}

pub struct Load {
    pub results_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
}

pub fn run(args: IngestArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: IngestArgs) -> Result<()> {
    crate::ensure_built(&args.mdd)?;
    let dir = tempfile::tempdir()?;
    let spec_path = push_spec(dir.path())?;

    let (mut server, mdd_url) =
        start_server(&args.mdd, &dir.path().join("data"), &spec_path, &[]).await?;

    let baseline = axum::Router::new().route(
        "/api/v1/results",
        axum::routing::post(|body: axum::body::Bytes| async move {
            match serde_json::from_slice::<Payload>(&body) {
                Ok(p) => {
                    axum::Json(serde_json::json!({ "stored": p.results.len(), "duplicates": 0 }))
                        .into_response()
                }
                Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let baseline_url = format!("http://{}", listener.local_addr()?);
    let baseline_task = tokio::spawn(async move { axum::serve(listener, baseline).await });

    println!(
        "mdd-bench ingest: batches of {} results, {} s per measurement, results durable (WAL, synchronous=FULL)\n",
        args.batch, args.seconds
    );
    println!(
        "{:>8}  {:>14} {:>9} {:>9}   {:>14} {:>9}   {:>6}",
        "clients", "mdd results/s", "p50", "p99", "baseline r/s", "p99", "ratio"
    );
    let run_id = AtomicU64::new(0);
    for &clients in &args.clients {
        let tag = run_id.fetch_add(1, Ordering::Relaxed);
        let mdd = load(
            std::slice::from_ref(&mdd_url),
            None,
            Keys::Shared,
            clients,
            args.batch,
            args.seconds,
            &format!("m{tag}"),
        )
        .await?;
        let base = load(
            std::slice::from_ref(&baseline_url),
            None,
            Keys::Shared,
            clients,
            args.batch,
            args.seconds,
            &format!("b{tag}"),
        )
        .await?;
        let ratio = mdd.results_per_second / base.results_per_second;
        println!(
            "{clients:>8}  {:>14.0} {:>9} {:>9}   {:>14.0} {:>9}   {ratio:>6.2}{}",
            mdd.results_per_second,
            format!("{:.1}ms", mdd.p50.as_secs_f64() * 1000.0),
            format!("{:.1}ms", mdd.p99.as_secs_f64() * 1000.0),
            base.results_per_second,
            format!("{:.1}ms", base.p99.as_secs_f64() * 1000.0),
            if mdd.errors + base.errors > 0 {
                format!(
                    "  ({} mdd errors, {} baseline errors)",
                    mdd.errors, base.errors
                )
            } else {
                String::new()
            }
        );
    }
    baseline_task.abort();
    println!("\ngoal: ≥ 40,000 results/s stored and a ratio ≥ 0.5\n");

    let _ = server.kill().await;

    if args.tls_turns > 0 {
        tls_against_plain(&args, dir.path(), &spec_path).await?;
    }

    // Event queries over exactly 10,000 events (100 checks × 100 entities) on a fresh server.
    let (mut server, mdd_url) =
        start_server(&args.mdd, &dir.path().join("query-data"), &spec_path, &[]).await?;
    let http = reqwest::Client::new();
    for chunk in 0..100 {
        let results: Vec<serde_json::Value> = (0..CHECKS)
            .map(|i| {
                serde_json::json!({
                    "id": format!("q-{chunk}-{i}"),
                    "check": format!("push-{i}"),
                    "entity": format!("node-{chunk}"),
                    "status": if i % 10 == 0 { 2 } else { 0 },
                    "output": "OK | time=0.01s",
                })
            })
            .collect();
        http.post(format!("{mdd_url}/api/v1/results"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(
                &serde_json::json!({ "results": results }),
            )?)
            .send()
            .await?
            .error_for_status()?;
    }
    let mut server_side = Vec::new();
    let mut whole = Vec::new();
    let mut filtered = Vec::new();
    let mut count = 0;
    let mut size = 0;
    for _ in 0..31 {
        let started = Instant::now();
        // axum answers after the whole body is built, so the headers arriving is the server's
        // time plus one loopback round trip.
        let response = http
            .get(format!("{mdd_url}/api/v1/events"))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        server_side.push(started.elapsed());
        let body = response.bytes().await?;
        whole.push(started.elapsed());
        size = body.len();
        let parsed: serde_json::Value = serde_json::from_slice(&body)?;
        count = parsed["events"].as_array().map_or(0, Vec::len);
        let started = Instant::now();
        http.get(format!(
            "{mdd_url}/api/v1/events?state=failing&entity=node-7"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .bytes()
        .await?;
        filtered.push(started.elapsed());
    }
    let p50 = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2].as_secs_f64() * 1000.0
    };
    println!(
        "event query, {count} events, no SQL (served from memory):\n  GET /api/v1/events: p50 {:.1} ms until the answer starts (server time + one loopback round trip), {:.1} ms with the whole {:.1} MB body\n  GET /api/v1/events?state=failing&entity=node-7: p50 {:.1} ms\n  goal: p50 under 20 ms server time",
        p50(&mut server_side),
        p50(&mut whole),
        size as f64 / 1e6,
        p50(&mut filtered)
    );
    let _ = server.kill().await;
    Ok(())
}

/// Results/s into an HTTPS server against a plain HTTP one, both fresh, 100 clients each,
/// taking turns so that a noisy neighbour hits both alike. Goal: ≥ 0.9.
async fn tls_against_plain(
    args: &IngestArgs,
    dir: &std::path::Path,
    spec: &std::path::Path,
) -> Result<()> {
    let ca = mdd_testkit::certs::TestCa::new("mdd-bench CA");
    let (cert, key) = ca
        .issue("127.0.0.1", time::Duration::days(1))
        .write_pem(dir, "bench-server");
    let trust = reqwest::Certificate::from_pem(ca.pem().as_bytes())?;
    let tls_args = [
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ];
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let (mut plain, plain_url) =
        start_server(&args.mdd, &dir.join("plain-data"), spec, &[]).await?;
    let (mut tls, tls_url) =
        start_server(&args.mdd, &dir.join("tls-data"), spec, &tls_args).await?;
    println!(
        "\nHTTPS against plain HTTP, 100 clients, keep-alive connections, {} turns:",
        args.tls_turns
    );
    let mut ratios = Vec::new();
    for turn in 0..args.tls_turns {
        let over_plain = load(
            std::slice::from_ref(&plain_url),
            None,
            Keys::Shared,
            100,
            args.batch,
            args.seconds,
            &format!("p{turn}"),
        )
        .await?;
        let over_tls = load(
            std::slice::from_ref(&tls_url),
            Some(&trust),
            Keys::Shared,
            100,
            args.batch,
            args.seconds,
            &format!("t{turn}"),
        )
        .await?;
        let ratio = over_tls.results_per_second / over_plain.results_per_second;
        println!(
            "  turn {}: plain {:>8.0} results/s (p99 {:.1} ms), TLS {:>8.0} results/s (p99 {:.1} ms): ratio {ratio:.2}{}",
            turn + 1,
            over_plain.results_per_second,
            over_plain.p99.as_secs_f64() * 1000.0,
            over_tls.results_per_second,
            over_tls.p99.as_secs_f64() * 1000.0,
            if over_plain.errors + over_tls.errors > 0 {
                format!(
                    "  ({} plain errors, {} TLS errors)",
                    over_plain.errors, over_tls.errors
                )
            } else {
                String::new()
            }
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!("  median ratio {:.2}; goal ≥ 0.9", ratios[ratios.len() / 2]);
    let _ = plain.kill().await;
    let _ = tls.kill().await;
    Ok(())
}

/// Writes the spec the load's results belong to (`CHECKS` push-only checks) into `dir`.
pub fn push_spec(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let spec: String = std::iter::once("checks:\n".to_string())
        .chain((0..CHECKS).map(|i| format!("  - {{ name: push-{i}, ttl: 1h }}\n")))
        .collect();
    let path = dir.join("spec.yaml");
    std::fs::write(&path, spec)?;
    Ok(path)
}

/// Starts `mdd server` on a port the OS picks, with the admin token and spec, and waits for it.
pub async fn start_server(
    mdd: &std::path::Path,
    data: &std::path::Path,
    spec: &std::path::Path,
    extra: &[&str],
) -> Result<(tokio::process::Child, String)> {
    let mut server = tokio::process::Command::new(mdd)
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--spec")
        .arg(spec)
        .args(extra)
        .env("MDD_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start mdd server")?;
    let mut lines = BufReader::new(server.stderr.take().context("stderr")?).lines();
    let mut url = None;
    while let Some(line) = lines.next_line().await? {
        if let Some(rest) = line.split("serving on ").nth(1) {
            url = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let url = url.context("mdd server did not start")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((server, url))
}

/// `clients` tasks, each with its own connection, posting batches back to back for `seconds`;
/// client `c` posts to `urls[c % urls.len()]` (the servers of a cluster in turn).
/// Which events the clients' results land on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Every client's batches name the same (check, entity) pairs at the same moment: the worst
    /// case for folding, every batch waits on the one before it.
    Shared,
    /// Each client reports for entities of its own, as agents do.
    PerClient,
}

impl Keys {
    /// The (check, entity) of a client's `n`th result.
    pub fn of(self, client: usize, n: usize) -> (String, String) {
        let check = format!("push-{}", n % CHECKS);
        let entity = match self {
            Keys::Shared => format!("host-{}", (n / CHECKS) % ENTITIES),
            Keys::PerClient => format!("host-{client}-{}", (n / CHECKS) % ENTITIES),
        };
        (check, entity)
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn load(
    urls: &[String],
    ca: Option<&reqwest::Certificate>,
    keys: Keys,
    clients: usize,
    batch: usize,
    seconds: u64,
    tag: &str,
) -> Result<Load> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let stored = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let url = format!("{}/api/v1/results", urls[client % urls.len()]);
        let stored = Arc::clone(&stored);
        let errors = Arc::clone(&errors);
        let tag = tag.to_string();
        let ca = ca.cloned();
        tasks.push(tokio::spawn(async move {
            let mut builder = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(60));
            if let Some(ca) = ca {
                builder = builder.tls_certs_only([ca]);
            }
            let http = builder.build().expect("client");
            let mut latencies = Vec::new();
            let mut round = 0u64;
            while Instant::now() < deadline {
                let results: Vec<serde_json::Value> = (0..batch)
                    .map(|i| {
                        let n = round as usize * batch + i;
                        let (check, entity) = keys.of(client, n);
                        serde_json::json!({
                            "id": format!("{tag}-{client}-{round}-{i}"),
                            "check": check,
                            "entity": entity,
                            "status": if n.is_multiple_of(7) { 2 } else { 0 },
                            "output": "OK - bench | time=0.012s;0.5;1;0",
                        })
                    })
                    .collect();
                let body =
                    serde_json::to_vec(&serde_json::json!({ "results": results })).expect("json");
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(sent.elapsed());
                        stored.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                round += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    Ok(Load::of(
        latencies,
        stored.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        started.elapsed(),
    ))
}

impl Load {
    /// A run's figures from each request's latency, the results stored and the requests that
    /// failed in `elapsed`.
    pub fn of(mut latencies: Vec<Duration>, stored: u64, errors: u64, elapsed: Duration) -> Load {
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Load {
            results_per_second: stored as f64 / elapsed.as_secs_f64(),
            p50: at(0.50),
            p99: at(0.99),
            errors,
        }
    }
}
