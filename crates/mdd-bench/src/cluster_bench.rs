//! Several servers on one PostgreSQL: results stored per second and p99 with 1, 2 and 3
//! servers (clients spread over them in turn) and, for reference, one server on SQLite, with
//! 10 and 100 clients. Baseline in the same run: a minimal program doing the same inserts and
//! event updates straight into the same PostgreSQL (one transaction per batch: the results,
//! then their events upserted in key order), with no HTTP and no fold. Everything (load,
//! servers, PostgreSQL) shares this machine. Goals: 3 servers ≥ 0.5 × the baseline and
//! ≥ 20,000 results/s stored. Two shapes of load: every client naming the same events at the
//! same moment (each batch of every server waits for the fold before it: the worst case) and
//! each client reporting for entities of its own, as agents do. Every measurement, the
//! baseline's and each setup's, begins settled the same way (`settle`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::ingest_bench::{Keys, Load, load, push_spec, start_server};

#[derive(Debug, Args)]
pub struct ClusterArgs {
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
    #[arg(long, default_value = "10,100", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Most servers on the database.
    #[arg(long, default_value_t = 3)]
    servers: usize,
    /// Shapes of load, comma separated: `shared` (every client names the same events) and
    /// `per-client` (each client its own entities).
    #[arg(long, default_value = "shared,per-client", value_delimiter = ',')]
    keys: Vec<KeysArg>,
    /// Fewest servers on the database (to measure, or profile, one setup alone).
    #[arg(long, default_value_t = 1)]
    min_servers: usize,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KeysArg {
    Shared,
    PerClient,
}

pub fn run(args: ClusterArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: ClusterArgs) -> Result<()> {
    crate::ensure_built(&args.mdd)?;
    let dir = tempfile::tempdir()?;
    let spec_path = push_spec(dir.path())?;
    let postgres = mdd_testkit::postgres::Postgres::start();
    println!(
        "mdd-bench cluster: batches of {} results, {} s per measurement, a private PostgreSQL on a unix socket, everything on this machine\n",
        args.batch, args.seconds
    );
    println!(
        "{:>8}  {:<22} {:>12} {:>9} {:>9}   {:>8}",
        "clients", "setup", "results/s", "p50", "p99", "× base"
    );
    let mut databases = 0;
    // The database of the measurement before, dropped before the next one begins.
    let mut finished: Option<String> = None;
    let mut database = |postgres: &mdd_testkit::postgres::Postgres| {
        databases += 1;
        let name = format!("bench_{databases}");
        (postgres.create_database(&name), name)
    };
    let mut lags = Vec::new();
    for keys in args.keys.iter().map(|k| match k {
        KeysArg::Shared => Keys::Shared,
        KeysArg::PerClient => Keys::PerClient,
    }) {
        println!(
            "{}",
            match keys {
                Keys::Shared =>
                    "every client's batches name the same 1,000 events (the worst case):",
                Keys::PerClient =>
                    "each client reports for 10 entities of its own (1,000 events a client), as agents do:",
            }
        );
        for &clients in &args.clients {
            let (url, name) = database(&postgres);
            // The schema as mdd makes it, then nothing of mdd.
            mdd_storage::Store::connect(&url)
                .await
                .context("make the schema")?
                .close()
                .await;
            settle(&postgres, finished.replace(name)).await?;
            let base = baseline(&url, keys, clients, args.batch, args.seconds).await?;
            print_row(clients, "baseline (direct SQL)", &base, &base);
            for count in args.min_servers.max(1)..=args.servers {
                let (url, name) = database(&postgres);
                settle(&postgres, finished.replace(name)).await?;
                let mut children = Vec::new();
                let mut urls = Vec::new();
                for i in 0..count {
                    let data = dir
                        .path()
                        .join(format!("pg-{keys:?}-{clients}-{count}-{i}"));
                    let (child, served) =
                        start_server(&args.mdd, &data, &spec_path, &["--database", &url]).await?;
                    children.push(child);
                    urls.push(served);
                }
                let tag = format!("c{clients}s{count}");
                let measure = load(&urls, None, keys, clients, args.batch, args.seconds, &tag);
                // The lag is measured during the load too, on the first clients' count.
                let during = count > 1 && clients == args.clients[0];
                let (measured, lag_during) = if during {
                    let (measured, lag) =
                        tokio::join!(measure, cross_server_lag(&urls, "during", args.seconds));
                    (measured?, Some(lag?))
                } else {
                    (measure.await?, None)
                };
                let setup = format!(
                    "{count} server{} on PostgreSQL",
                    if count == 1 { "" } else { "s" }
                );
                print_row(clients, &setup, &measured, &base);
                if let Some(lag_during) = lag_during {
                    let after = cross_server_lag(&urls, "after", 0).await?;
                    lags.push((keys, clients, count, lag_during, after));
                }
                for mut child in children {
                    let _ = child.kill().await;
                }
            }
            settle(&postgres, finished.take()).await?;
            let data = dir.path().join(format!("sqlite-{keys:?}-{clients}"));
            let (mut child, served) = start_server(&args.mdd, &data, &spec_path, &[]).await?;
            let measured = load(
                &[served],
                None,
                keys,
                clients,
                args.batch,
                args.seconds,
                &format!("c{clients}sqlite"),
            )
            .await?;
            print_row(clients, "1 server on SQLite", &measured, &base);
            let _ = child.kill().await;
        }
        println!();
    }
    for (keys, clients, count, during, after) in lags {
        println!(
            "{count} servers, {keys:?} keys: a result acknowledged by one is shown by another after p50 {:.0} ms, p99 {:.0} ms during the load of {clients} clients, p50 {:.0} ms, p99 {:.0} ms after it",
            during.0.as_secs_f64() * 1000.0,
            during.1.as_secs_f64() * 1000.0,
            after.0.as_secs_f64() * 1000.0,
            after.1.as_secs_f64() * 1000.0,
        );
    }
    println!(
        "\ngoals: {} servers ≥ 0.5 × the baseline and ≥ 20,000 results/s stored; lag p99 ≤ 1 s",
        args.servers
    );
    Ok(())
}

/// Makes a measurement begin as every other does: the database of the one before dropped
/// (PostgreSQL's autovacuum would otherwise work through it during this one), and a
/// checkpoint, so that none set off by the WAL of the measurements before falls into this
/// one's seconds (at the default `max_wal_size` one came every two or three, and cost
/// whichever it fell into, the baseline's or a server's).
async fn settle(
    postgres: &mdd_testkit::postgres::Postgres,
    finished: Option<String>,
) -> Result<()> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&postgres.url()).await?;
    if let Some(name) = finished {
        // Our own names (`bench_N`), quoted all the same.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .with_context(|| format!("drop {name}"))?;
    }
    sqlx::query("CHECKPOINT")
        .execute(&mut admin)
        .await
        .context("checkpoint")?;
    admin.close().await?;
    Ok(())
}

/// Results timed from their post to one server until another shows them.
const LAG_SAMPLES: usize = 50;

/// How long after a result is acknowledged by one server another shows it in its event: p50
/// and p99 over `LAG_SAMPLES` results, each posted to the next server and looked for on the
/// one after it, spread over `over_seconds` (0: one right after another).
async fn cross_server_lag(
    urls: &[String],
    tag: &str,
    over_seconds: u64,
) -> Result<(Duration, Duration)> {
    let http = reqwest::Client::new();
    let pause = Duration::from_secs(over_seconds) / u32::try_from(LAG_SAMPLES).unwrap_or(1);
    let mut lags = Vec::with_capacity(LAG_SAMPLES);
    for n in 0..LAG_SAMPLES {
        let (to, from) = (&urls[n % urls.len()], &urls[(n + 1) % urls.len()]);
        let id = format!("lag-{tag}-{n}");
        let body = serde_json::json!({"results": [{"id": id, "check": "push-0",
            "entity": "lag", "status": (n % 2) * 2, "output": "lag"}]});
        http.post(format!("{to}/api/v1/results"))
            .bearer_auth(crate::ingest_bench::TOKEN)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?
            .error_for_status()?;
        let acknowledged = Instant::now();
        loop {
            let answer = http
                .get(format!("{from}/api/v1/events/push-0/lag"))
                .bearer_auth(crate::ingest_bench::TOKEN)
                .send()
                .await?
                .bytes()
                .await?;
            let event: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
            if event["last_result_id"] == serde_json::json!(id) {
                break;
            }
            anyhow::ensure!(
                acknowledged.elapsed() < Duration::from_secs(10),
                "{from} did not show result {id} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lag = acknowledged.elapsed();
        lags.push(lag);
        tokio::time::sleep(pause.saturating_sub(lag)).await;
    }
    lags.sort();
    Ok((lags[lags.len() / 2], lags[lags.len() * 99 / 100]))
}

fn print_row(clients: usize, setup: &str, measured: &Load, base: &Load) {
    println!(
        "{clients:>8}  {setup:<22} {:>12.0} {:>9} {:>9}   {:>8.2}{}",
        measured.results_per_second,
        format!("{:.1}ms", measured.p50.as_secs_f64() * 1000.0),
        format!("{:.1}ms", measured.p99.as_secs_f64() * 1000.0),
        measured.results_per_second / base.results_per_second,
        if measured.errors > 0 {
            format!("  ({} failed requests)", measured.errors)
        } else {
            String::new()
        }
    );
}

/// An event's body as mdd writes it under this load (read from the events table of a run:
/// 21 results of history, one perfdatum), so the baseline writes as many bytes per event.
const EVENT_BODY: &str = r#"{"check":"push-14","entity":"host-9-0","status":"ok","last_result_id":"c10s3-9-270-14","executed_at":1796202962029,"occurrences":6,"occurrences_watermark":6,"history_steps":[[2,1796202954148],[0,420],[0,391],[0,361],[0,352],[0,397],[0,348],[2,420],[0,361],[0,432],[0,385],[0,397],[0,391],[0,381],[2,382],[0,345],[0,417],[0,386],[0,420],[0,401],[0,494]],"total_state_change":24,"flapping":false,"first_seen":1796202951225,"last_ok":1796202962029,"last_state_change":1796202959911,"summary":"OK - bench","long_output":"","perfdata":[{"label":"time","value":0.012,"uom":"s","warn":{"start":0.0,"end":0.5,"inside":false},"crit":{"start":0.0,"end":1.0,"inside":false},"min":0.0}],"duration_ms":0.0,"output":"OK - bench | time=0.012s;0.5;1;0"}"#;

/// `clients` tasks doing what mdd's writer does to the database for a batch, straight in SQL.
async fn baseline(
    url: &str,
    keys: Keys,
    clients: usize,
    batch: usize,
    seconds: u64,
) -> Result<Load> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(clients.min(16)).unwrap_or(16))
        .connect(url)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let stored = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let pool = pool.clone();
        let stored = Arc::clone(&stored);
        let errors = Arc::clone(&errors);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut round = 0usize;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match write_batch(&pool, keys, client, round, batch).await {
                    Ok(()) => {
                        latencies.push(sent.elapsed());
                        stored.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
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
    let elapsed = started.elapsed();
    pool.close().await;
    Ok(Load::of(
        latencies,
        stored.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        elapsed,
    ))
}

async fn write_batch(
    pool: &sqlx::PgPool,
    keys: Keys,
    client: usize,
    round: usize,
    batch: usize,
) -> Result<(), sqlx::Error> {
    let now = jiff::Timestamp::now().as_millisecond();
    let mut ids = Vec::with_capacity(batch);
    let mut checks = Vec::with_capacity(batch);
    let mut entities = Vec::with_capacity(batch);
    let mut statuses = Vec::with_capacity(batch);
    for i in 0..batch {
        let n = round * batch + i;
        ids.push(format!("base-{client}-{round}-{i}"));
        let (check, entity) = keys.of(client, n);
        checks.push(check);
        entities.push(entity);
        statuses.push(if n.is_multiple_of(7) { 2i32 } else { 0 });
    }
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO results (id, check_name, entity, status, summary, long_output, perfdata,
             duration_ms, exit_code, executed_at, received_at, output)
         SELECT id, c, e, s, 'OK - bench', '', '[]', 12.0, s, $5, $5, 'OK - bench | time=0.012s;0.5;1;0'
         FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS r(id, c, e, s)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&checks)
    .bind(&entities)
    .bind(&statuses)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let mut keys: Vec<(&String, &String, i32, &String)> = checks
        .iter()
        .zip(&entities)
        .zip(&statuses)
        .zip(&ids)
        .map(|(((c, e), s), id)| (c, e, *s, id))
        .collect();
    keys.sort();
    keys.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let column = |f: fn(&(&String, &String, i32, &String)) -> String| -> Vec<String> {
        keys.iter().map(f).collect()
    };
    let key_statuses: Vec<i32> = keys.iter().map(|k| k.2).collect();
    sqlx::query(
        "INSERT INTO events (check_name, entity, status, executed_at, last_result_id, body)
         SELECT c, e, s, $5, id, $6
         FROM unnest($1::text[], $2::text[], $3::int[], $4::text[]) AS k(c, e, s, id)
         ORDER BY c, e
         ON CONFLICT (check_name, entity) DO UPDATE SET status = excluded.status,
             executed_at = excluded.executed_at, last_result_id = excluded.last_result_id,
             body = excluded.body, version = events.version + 1,
             changed_xid = pg_current_xact_id()::text::bigint",
    )
    .bind(column(|k| k.0.clone()))
    .bind(column(|k| k.1.clone()))
    .bind(key_statuses)
    .bind(column(|k| k.3.clone()))
    .bind(now)
    .bind(EVENT_BODY)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
