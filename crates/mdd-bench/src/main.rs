//! Benchmarks of mdd, each reported as a ratio against a baseline measured in the same run.
//! `./scripts/bench` builds everything in release mode and runs them all. Every benchmark talks
//! only to 127.0.0.1, is bounded in time, and stops by itself.

mod agent_bench;
mod big_bench;
mod cluster_bench;
mod connections_bench;
mod dashboard_bench;
mod import_bench;
mod ingest_bench;
mod notify_bench;
mod server_checks_bench;
mod verify_bench;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// `mdd verify` against shell baselines: HTTP checks, command checks, peak RSS.
    Verify(verify_bench::VerifyArgs),
    /// Result ingestion into `mdd server` against a minimal axum handler.
    Ingest(ingest_bench::IngestArgs),
    /// The agent's memory and CPU against a plain spawn loop.
    Agent(agent_bench::AgentArgs),
    /// Dashboard pages with 10,000 events and 200 deployments against /healthz.
    Dashboard(dashboard_bench::DashboardArgs),
    /// Ingestion with 5 webhook handlers and 10% of results changing state, against none.
    Notify(notify_bench::NotifyArgs),
    /// Deployment pages and /docs of 1,000 to 50,000 checks, and ingestion while they render.
    Big(big_bench::BigArgs),
    /// 1,000 and 2,000 server-side checks every second: on time, CPU against a spawn loop.
    ServerChecks(server_checks_bench::ServerChecksArgs),
    /// 10,000 idle sockets and 10,000 long-polls: /healthz and result posts against none.
    Connections(connections_bench::ConnectionsArgs),
    /// 1, 2 and 3 servers on one PostgreSQL (and one on SQLite) against direct SQL.
    Cluster(cluster_bench::ClusterArgs),
    /// `mdd import` of 10,000 services over 1,000 hosts against nagios4 -v and icinga2 -C.
    Import(import_bench::ImportArgs),
}

/// Every whole-process benchmark measures a release build: refuse to start without one.
pub fn ensure_built(mdd: &std::path::Path) -> Result<()> {
    if !mdd.exists() {
        anyhow::bail!("{} is missing: cargo build --release -p mdd", mdd.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().bench {
        Bench::Verify(args) => verify_bench::run(args),
        Bench::Ingest(args) => ingest_bench::run(args),
        Bench::Agent(args) => agent_bench::run(args),
        Bench::Dashboard(args) => dashboard_bench::run(args),
        Bench::Notify(args) => notify_bench::run(args),
        Bench::Big(args) => big_bench::run(args),
        Bench::ServerChecks(args) => server_checks_bench::run(args),
        Bench::Connections(args) => connections_bench::run(args),
        Bench::Import(args) => import_bench::run(args),
        Bench::Cluster(args) => cluster_bench::run(args),
    }
}
