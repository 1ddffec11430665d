//! `/metrics` in Prometheus text format: per-check state gauges, result counters, ingestion
//! and HTTP latency histograms, and process metrics.

use std::time::Duration;

use mdd_storage::StoredResult;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub check: String,
    pub entity: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub handler: String,
    /// `ok`, `failed` (every attempt failed) or `dropped` (the handler's queue was full)
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    pub notices_dropped: Counter,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub results: Family<StatusLabel, Counter>,
    pub ingest_failures: Counter,
    pub group_seconds: Histogram,
    pub group_size: Histogram,
    pub http_seconds: Family<RouteLabels, Histogram>,
    pub check_state: Family<StateLabels, Gauge>,
    process_resident: Gauge,
    process_cpu_ms: Gauge,
    process_fds: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mdd");
        let results = Family::<StatusLabel, Counter>::default();
        registry.register("results", "Results stored, by status", results.clone());
        let ingest_failures = Counter::default();
        registry.register(
            "ingest_failures",
            "Group commits that failed (nothing of them was acknowledged)",
            ingest_failures.clone(),
        );
        let group_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "ingest_commit_seconds",
            "Time to store one group of results durably",
            group_seconds.clone(),
        );
        let group_size = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        registry.register(
            "ingest_group_results",
            "Results per group commit",
            group_size.clone(),
        );
        let http_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0002, 2.0, 18))
        });
        registry.register(
            "http_request_seconds",
            "HTTP request latency by route",
            http_seconds.clone(),
        );
        let check_state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "check_state",
            "1 for the state each (check, entity) is in",
            check_state.clone(),
        );
        let notices_dropped = Counter::default();
        registry.register(
            "notices_dropped",
            "Changed events the notifier could not take (its queue was full)",
            notices_dropped.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Notifications by handler and how they ended",
            deliveries.clone(),
        );
        let process_resident = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the server process",
            process_resident.clone(),
        );
        let process_cpu_ms = Gauge::default();
        registry.register(
            "process_cpu_milliseconds",
            "CPU time used by the server process",
            process_cpu_ms.clone(),
        );
        let process_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors of the server process",
            process_fds.clone(),
        );
        Metrics {
            registry,
            notices_dropped,
            deliveries,
            results,
            ingest_failures,
            group_seconds,
            group_size,
            http_seconds,
            check_state,
            process_resident,
            process_cpu_ms,
            process_fds,
        }
    }

    /// Records how long the server spent on a request of `route`, from `started`.
    pub fn observe_route(&self, route: &str, started: std::time::Instant) {
        self.http_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn delivered(&self, handler: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                handler: handler.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// How many of a handler's notifications ended with `outcome` since the server started.
    pub fn delivered_count(&self, handler: &str, outcome: &str) -> u64 {
        self.deliveries
            .get(&DeliveryLabels {
                handler: handler.to_string(),
                outcome: outcome.to_string(),
            })
            .map_or(0, |counter| counter.get())
    }

    pub fn record_group(&self, stored: &[&StoredResult], took: Duration) {
        for result in stored {
            self.results
                .get_or_create(&StatusLabel {
                    status: format!("{:?}", result.status).to_lowercase(),
                })
                .inc();
        }
        self.group_seconds.observe(took.as_secs_f64());
        self.group_size.observe(stored.len() as f64);
    }

    /// Renders everything, refreshing the gauges that are read at scrape time.
    pub fn render(&self, states: impl Iterator<Item = (String, String, &'static str)>) -> String {
        self.check_state.clear();
        for (check, entity, state) in states {
            self.check_state
                .get_or_create(&StateLabels {
                    check,
                    entity,
                    state: state.to_string(),
                })
                .set(1);
        }
        if let Some(process) = read_process() {
            self.process_resident.set(process.resident_bytes);
            self.process_cpu_ms.set(process.cpu_ms);
            self.process_fds.set(process.open_fds);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

struct Process {
    resident_bytes: i64,
    cpu_ms: i64,
    open_fds: i64,
}

/// Reads this process' figures from /proc (Linux); None elsewhere.
fn read_process() -> Option<Process> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let resident_kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: i64 = fields.get(11)?.parse::<i64>().ok()? + fields.get(12)?.parse::<i64>().ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    Some(Process {
        resident_bytes: resident_kib * 1024,
        // The kernel's clock tick is 100 Hz on every Linux mdd targets.
        cpu_ms: ticks * 10,
        open_fds,
    })
}
