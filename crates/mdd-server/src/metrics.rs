//! `/metrics` as Prometheus users expect it: the text format 0.0.4 by default, OpenMetrics when
//! the scraper asks for it (`Accept: application/openmetrics-text`), base units, the standard
//! `process_*` metrics and `mdd_build_info`, and per-scrape figures worked out from the live
//! events: every event's state (a series per state it has been in, 1 for the current one and 0
//! for the others, so `mdd_check_state{state!="passing"} == 1` fires from the first red and
//! a change never makes a series vanish), when it last ran, and each deployment's progress.
//!
//! prometheus-client writes OpenMetrics; the 0.0.4 text is derived from it line by line
//! (`to_text_format`), so both say exactly the same.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use mdd_core::State;
use mdd_storage::StoredResult;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
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
pub struct EventLabels {
    pub check: String,
    pub entity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub deployment: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The exposition formats a scraper can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`, what every Prometheus parser reads.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics only when the `Accept` header asks for it.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One event (or never-reported check) as a scrape sees it.
pub struct EventSample {
    pub check: String,
    /// Empty for a check that never reported.
    pub entity: String,
    pub state: State,
    /// When its latest result was produced (ms), if it has one.
    pub executed_at: Option<i64>,
}

/// The HTTP connections as a scrape sees them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionSample {
    pub open: u64,
    pub refused: u64,
    pub timed_out: u64,
}

/// One deployment as a scrape sees it.
pub struct DeploymentSample {
    pub name: String,
    pub done: bool,
    pub green: usize,
    pub total: usize,
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
    /// The states each event has been in since the server started, as bits of `State`'s
    /// index: a state it left is still written, as 0.
    states_seen: Mutex<HashMap<(String, String), u16>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector::new()));
        let mdd = registry.sub_registry_with_prefix("mdd");
        mdd.register(
            "build",
            "The mdd build serving these metrics",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        );
        let results = Family::<StatusLabel, Counter>::default();
        mdd.register("results", "Results stored, by status", results.clone());
        let ingest_failures = Counter::default();
        mdd.register(
            "ingest_failures",
            "Group commits that failed (nothing of them was acknowledged)",
            ingest_failures.clone(),
        );
        let group_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        mdd.register(
            "ingest_commit_seconds",
            "Time to store one group of results durably",
            group_seconds.clone(),
        );
        let group_size = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        mdd.register(
            "ingest_group_results",
            "Results per group commit",
            group_size.clone(),
        );
        let http_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0002, 2.0, 18))
        });
        mdd.register(
            "http_request_seconds",
            "HTTP request latency by route",
            http_seconds.clone(),
        );
        let notices_dropped = Counter::default();
        mdd.register(
            "notices_dropped",
            "Changed events the notifier could not take (its queue was full)",
            notices_dropped.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        mdd.register(
            "deliveries",
            "Notifications by handler and how they ended",
            deliveries.clone(),
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
            states_seen: Mutex::new(HashMap::new()),
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

    /// Renders everything in `format`: the registry, then what this scrape worked out.
    pub fn render(
        &self,
        format: Format,
        events: &[EventSample],
        deployments: &[DeploymentSample],
        connections: ConnectionSample,
    ) -> String {
        let mut scrape = self.scrape_registry(events, deployments);
        let open = Gauge::<i64>::default();
        open.set(i64::try_from(connections.open).unwrap_or(i64::MAX));
        scrape.register("http_connections_open", "HTTP connections open now", open);
        let refused = ConstCounter::new(connections.refused);
        scrape.register_collector(Box::new(OneCounter {
            name: "http_connections_refused",
            help: "Connections closed at once because as many as the server takes were open",
            counter: refused,
        }));
        scrape.register_collector(Box::new(OneCounter {
            name: "http_connections_timed_out",
            help: "Connections closed for sending no whole request within the idle timeout",
            counter: ConstCounter::new(connections.timed_out),
        }));
        let mut out = String::new();
        let encoded = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .and_then(|()| prometheus_client::encoding::text::encode_registry(&mut out, &scrape))
            .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut out));
        if let Err(e) = encoded {
            tracing::error!("cannot encode metrics: {e}");
        }
        match format {
            Format::OpenMetrics => out,
            Format::Text => to_text_format(&out),
        }
    }

    /// The figures worked out from this moment's events and deployments.
    fn scrape_registry(
        &self,
        events: &[EventSample],
        deployments: &[DeploymentSample],
    ) -> Registry {
        let mut registry = Registry::with_prefix("mdd");
        let state = Family::<StateLabels, Gauge>::default();
        let executed = Family::<EventLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        {
            let mut seen = self.states_seen.lock().unwrap_or_else(|p| p.into_inner());
            let mut present = std::collections::HashSet::with_capacity(events.len());
            for event in events {
                let key = (event.check.clone(), event.entity.clone());
                let bits = seen.entry(key.clone()).or_insert(0);
                *bits |= state_bit(event.state);
                for (i, s) in State::ALL.iter().enumerate() {
                    if *bits & (1 << i) == 0 {
                        continue;
                    }
                    state
                        .get_or_create(&StateLabels {
                            check: event.check.clone(),
                            entity: event.entity.clone(),
                            state: s.as_str().to_string(),
                        })
                        .set(i64::from(*s == event.state));
                }
                if let Some(at) = event.executed_at {
                    executed
                        .get_or_create(&EventLabels {
                            check: event.check.clone(),
                            entity: event.entity.clone(),
                        })
                        .set(at as f64 / 1000.0);
                }
                present.insert(key);
            }
            // Events that are gone (a check pruned, an entity deleted) leave.
            seen.retain(|key, _| present.contains(key));
        }
        registry.register(
            "check_state",
            "1 for the state each (check, entity) is in now, 0 for the states it was in before (entity is empty for a check that never reported)",
            state,
        );
        registry.register(
            "check_last_executed_timestamp_seconds",
            "When the latest result of each (check, entity) was produced",
            executed,
        );
        let done = Family::<DeploymentLabels, Gauge>::default();
        let green = Family::<DeploymentLabels, Gauge>::default();
        let total = Family::<DeploymentLabels, Gauge>::default();
        for deployment in deployments {
            let labels = DeploymentLabels {
                deployment: deployment.name.clone(),
            };
            done.get_or_create(&labels).set(i64::from(deployment.done));
            green
                .get_or_create(&labels)
                .set(i64::try_from(deployment.green).unwrap_or(i64::MAX));
            total
                .get_or_create(&labels)
                .set(i64::try_from(deployment.total).unwrap_or(i64::MAX));
        }
        registry.register(
            "deployment_done",
            "1 once the deployment is done (every check passed for its settle), 0 before",
            done,
        );
        registry.register(
            "deployment_checks_green",
            "Checks of the deployment passing now",
            green,
        );
        registry.register("deployment_checks", "Checks the deployment selects", total);
        registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A counter whose value is read at the scrape.
#[derive(Debug)]
struct OneCounter {
    name: &'static str,
    help: &'static str,
    counter: ConstCounter,
}

impl Collector for OneCounter {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.counter.encode(encoder.encode_descriptor(
            self.name,
            self.help,
            None,
            self.counter.metric_type(),
        )?)
    }
}

fn state_bit(state: State) -> u16 {
    let index = State::ALL.iter().position(|s| *s == state).unwrap_or(0);
    1 << index
}

/// The OpenMetrics text as the Prometheus text format 0.0.4: counters' HELP and TYPE under
/// the `_total` name their samples have, info metrics as gauges, `unknown` as `untyped`, no
/// `# UNIT` or `# EOF`. Sample lines are the same in both.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                "stateset" => (name.to_string(), "gauge"),
                "gaugehistogram" => (name.to_string(), "histogram"),
                other => (name.to_string(), other),
            };
            if let Some((help_name, text)) = help.take()
                && name.starts_with(help_name)
            {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The standard process metrics, read from /proc at each scrape (Linux; nothing elsewhere).
#[derive(Debug)]
struct ProcessCollector {
    start_time_seconds: Option<f64>,
}

impl ProcessCollector {
    fn new() -> ProcessCollector {
        ProcessCollector {
            start_time_seconds: process_start_time(),
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(process) = read_process() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(process.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                Some(process.resident_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                Some(process.virtual_bytes),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                Some(process.open_fds),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                process.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        if let Some(start) = self.start_time_seconds {
            let gauge = ConstGauge::new(start);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

struct Process {
    resident_bytes: i64,
    virtual_bytes: i64,
    cpu_seconds: f64,
    open_fds: i64,
    max_fds: Option<i64>,
}

/// The kernel's clock tick: 100 Hz on every Linux mdd targets.
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of /proc/self/stat after the command name (which may hold spaces).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace().collect())
}

/// Reads this process' figures from /proc (Linux); None elsewhere.
fn read_process() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields = stat_fields(&stat)?;
    // After the name: state is field 3 of stat(5), so field N is at index N - 3.
    let number = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();
    let ticks = number(14)? + number(15)?;
    let virtual_bytes = number(23)?;
    let page_size = 4096;
    let resident_bytes = number(24)? * page_size;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse::<i64>()
                .ok()
        });
    Some(Process {
        resident_bytes,
        virtual_bytes,
        cpu_seconds: ticks as f64 / TICKS_PER_SECOND,
        open_fds,
        max_fds,
    })
}

/// When this process started, in seconds since the epoch: boot time plus its start in ticks.
fn process_start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let started_ticks: f64 = stat_fields(&stat)?.get(22 - 3)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + started_ticks / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counters_as_their_samples() {
        let openmetrics = "# HELP mdd_results Results stored.\n# TYPE mdd_results counter\nmdd_results_total{status=\"ok\"} 3\n# HELP mdd_build The build.\n# TYPE mdd_build info\nmdd_build_info{version=\"0.1.0\"} 1\n# HELP mdd_x X.\n# TYPE mdd_x gauge\n# UNIT mdd_x seconds\nmdd_x 1.5\n# EOF\n";
        assert_eq!(
            to_text_format(openmetrics),
            "# HELP mdd_results_total Results stored.\n# TYPE mdd_results_total counter\nmdd_results_total{status=\"ok\"} 3\n# HELP mdd_build_info The build.\n# TYPE mdd_build_info gauge\nmdd_build_info{version=\"0.1.0\"} 1\n# HELP mdd_x X.\n# TYPE mdd_x gauge\nmdd_x 1.5\n"
        );
    }

    #[test]
    fn a_state_left_stays_as_zero_and_gone_events_leave() {
        let metrics = Metrics::new();
        let sample = |state| EventSample {
            check: "dns".into(),
            entity: "e1".into(),
            state,
            executed_at: Some(1_700_000_000_000),
        };
        let deployments = [DeploymentSample {
            name: "ams1".into(),
            done: false,
            green: 1,
            total: 2,
        }];
        let first = metrics.render(
            Format::Text,
            &[sample(State::Passing)],
            &deployments,
            ConnectionSample::default(),
        );
        assert!(first.contains("mdd_check_state{check=\"dns\",entity=\"e1\",state=\"passing\"} 1"));
        let second = metrics.render(
            Format::Text,
            &[sample(State::Failing)],
            &deployments,
            ConnectionSample::default(),
        );
        assert!(
            second.contains("mdd_check_state{check=\"dns\",entity=\"e1\",state=\"passing\"} 0"),
            "{second}"
        );
        assert!(
            second.contains("mdd_check_state{check=\"dns\",entity=\"e1\",state=\"failing\"} 1")
        );
        assert!(second.contains(
            "mdd_check_last_executed_timestamp_seconds{check=\"dns\",entity=\"e1\"} 1700000000"
        ));
        assert!(second.contains("mdd_deployment_checks_green{deployment=\"ams1\"} 1"));
        assert!(
            second.contains("# TYPE process_cpu_seconds_total counter"),
            "{second}"
        );
        assert!(second.contains("mdd_build_info{version="));
        assert!(!second.contains("# EOF"));
        let gone = metrics.render(
            Format::OpenMetrics,
            &[],
            &deployments,
            ConnectionSample::default(),
        );
        assert!(!gone.contains("check=\"dns\""), "{gone}");
        assert!(gone.ends_with("# EOF\n"));
    }
}
