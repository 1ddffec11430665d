//! The `dns` probe: asks a name server (or the system's resolvers) for one record type.

use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RecordType as WireType;
use mdd_core::spec::{DnsProbe, RecordType};
use mdd_core::{ProbeResult, Status, format_duration};

use crate::{Execute, ProbeContext, latency_note, latency_status, time_perfdata, within};

impl Execute for DnsProbe {
    async fn execute(&self, _ctx: &ProbeContext, timeout: Duration) -> ProbeResult {
        within(timeout, query(self, timeout)).await
    }
}

fn wire_type(record_type: RecordType) -> WireType {
    match record_type {
        RecordType::A => WireType::A,
        RecordType::Aaaa => WireType::AAAA,
        RecordType::Cname => WireType::CNAME,
        RecordType::Mx => WireType::MX,
        RecordType::Ns => WireType::NS,
        RecordType::Ptr => WireType::PTR,
        RecordType::Soa => WireType::SOA,
        RecordType::Srv => WireType::SRV,
        RecordType::Txt => WireType::TXT,
        RecordType::Caa => WireType::CAA,
    }
}

/// Names compare without case and without the root's trailing dot, as DNS does.
fn normalize(value: &str) -> String {
    value.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn resolver(probe: &DnsProbe, timeout: Duration) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match probe.server {
        Some(server) => {
            let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut name_server.connections {
                connection.port = server.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], vec![name_server]),
                provider,
            )
        }
        None => TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
    };
    let options: &mut ResolverOpts = builder.options_mut();
    // A monitor asks every time: no cache, one attempt bounded by the check's timeout.
    options.cache_size = 0;
    options.attempts = 1;
    options.timeout = timeout;
    builder
        .build()
        .map_err(|e| format!("cannot set up the resolver: {e}"))
}

async fn query(probe: &DnsProbe, timeout: Duration) -> ProbeResult {
    let asked = match probe.server {
        Some(server) => format!("{} {} @{server}", probe.record_type, probe.name),
        None => format!("{} {}", probe.record_type, probe.name),
    };
    let resolver = match resolver(probe, timeout) {
        Ok(r) => r,
        Err(reason) => return ProbeResult::new(Status::Unknown, reason, Duration::ZERO),
    };
    let started = Instant::now();
    let lookup = resolver
        .lookup(probe.name.as_str(), wire_type(probe.record_type))
        .await;
    let elapsed = started.elapsed();
    let perf = time_perfdata(elapsed, probe.max_latency);
    let lookup = match lookup {
        Ok(l) => l,
        Err(e) => {
            // The resolver's own words quote its query structure; say what it means.
            let cause = if e.is_nx_domain() {
                "no such name (NXDOMAIN)".to_string()
            } else if e.is_no_records_found() {
                format!("no {} records", probe.record_type)
            } else {
                crate::describe_error(&e)
            };
            return ProbeResult::new(Status::Critical, format!("{asked}: {cause}"), elapsed)
                .with_perfdata(perf);
        }
    };
    let wanted = wire_type(probe.record_type);
    let answers: Vec<String> = lookup
        .answers()
        .iter()
        .filter(|r| r.record_type() == wanted)
        .map(|r| r.data.to_string())
        .collect();
    if answers.is_empty() {
        return ProbeResult::new(
            Status::Critical,
            format!("{asked}: no {} records", probe.record_type),
            elapsed,
        )
        .with_perfdata(perf);
    }
    let normalized: Vec<String> = answers.iter().map(|a| normalize(a)).collect();
    let missing: Vec<&String> = probe
        .expect
        .iter()
        .filter(|e| !normalized.contains(&normalize(e)))
        .collect();
    if !missing.is_empty() {
        let missing: Vec<&str> = missing.iter().map(|m| m.as_str()).collect();
        return ProbeResult::new(
            Status::Critical,
            format!(
                "{asked}: answered {} but not {}",
                answers.join(", "),
                missing.join(", ")
            ),
            elapsed,
        )
        .with_perfdata(perf);
    }
    ProbeResult::new(
        latency_status(elapsed, probe.max_latency),
        format!(
            "{asked}: {} in {}{}",
            answers.join(", "),
            format_duration(elapsed),
            latency_note(elapsed, probe.max_latency)
        ),
        elapsed,
    )
    .with_perfdata(perf)
}
