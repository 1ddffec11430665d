//! The `http` probe: one request, checked for status, body and latency.
//!
//! Connections are not pooled between runs: every run opens a new connection and, for https,
//! a new TLS handshake, so the probe tests the whole path a new client would take.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mdd_core::spec::HttpProbe;
use mdd_core::{PerfDatum, ProbeResult, Status, format_duration};

use crate::error_text::describe;
use crate::{Execute, ProbeContext, latency_note, latency_status, time_perfdata, within};

/// How much of a body is read for `body_contains` and `body_regex`.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Clients differ only by TLS trust and redirect policy; one per combination is built once.
#[derive(Debug, Default)]
pub(crate) struct ClientCache(Mutex<HashMap<ClientKey, reqwest::Client>>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    ca: Option<PathBuf>,
    insecure: bool,
    follow_redirects: bool,
}

impl ClientCache {
    fn get(&self, key: &ClientKey) -> Result<reqwest::Client, String> {
        if let Ok(clients) = self.0.lock()
            && let Some(client) = clients.get(key)
        {
            return Ok(client.clone());
        }
        let client = build_client(key)?;
        if let Ok(mut clients) = self.0.lock() {
            clients.insert(key.clone(), client.clone());
        }
        Ok(client)
    }
}

fn build_client(key: &ClientKey) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("mdd/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(0)
        // A monitor tests the direct path; proxies from the environment would hide it.
        .no_proxy()
        .redirect(if key.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        })
        .tls_danger_accept_invalid_certs(key.insecure);
    if let Some(ca) = &key.ca {
        let pem =
            std::fs::read(ca).map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("CA file {} holds no usable certificate: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("CA file {} holds no certificate", ca.display()));
        }
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", describe(&e)))
}

impl Execute for HttpProbe {
    async fn execute(&self, ctx: &ProbeContext, timeout: Duration) -> ProbeResult {
        within(timeout, request(self, ctx)).await
    }
}

async fn request(probe: &HttpProbe, ctx: &ProbeContext) -> ProbeResult {
    let key = ClientKey {
        ca: probe.ca.clone(),
        insecure: probe.insecure,
        follow_redirects: probe.follow_redirects,
    };
    let client = match ctx.http_clients.get(&key) {
        Ok(client) => client,
        Err(reason) => return ProbeResult::new(Status::Unknown, reason, Duration::ZERO),
    };
    let method = match reqwest::Method::from_bytes(probe.method.as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            return ProbeResult::new(
                Status::Unknown,
                format!("invalid method {}", probe.method),
                Duration::ZERO,
            );
        }
    };
    let mut request = client.request(method, &probe.url);
    for (name, value) in &probe.headers {
        request = request.header(name, value);
    }
    if let Some(body) = &probe.body {
        request = request.body(body.clone());
    }

    let started = Instant::now();
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            // The cause first, and where: the URL is in the spec and in the long output.
            let place = reqwest::Url::parse(&probe.url)
                .ok()
                .and_then(|u| {
                    let host = u.host_str()?.to_string();
                    Some(match u.port() {
                        Some(port) => format!("{host}:{port}"),
                        None => host,
                    })
                })
                .unwrap_or_else(|| probe.url.clone());
            return ProbeResult::new(
                Status::Critical,
                format!("{} ({place})", describe(&e)),
                started.elapsed(),
            )
            .with_long_output(format!("{} {}", probe.method, probe.url))
            .with_perfdata(time_perfdata(started.elapsed(), probe.max_latency));
        }
    };
    let http_status = response.status();
    let mut body = Vec::new();
    let mut size: u64 = 0;
    let mut body_error = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                size += chunk.len() as u64;
                let room = BODY_LIMIT.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..room.min(chunk.len())]);
            }
            Ok(None) => break,
            Err(e) => {
                body_error = Some(describe(&e));
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    let perfdata = [time_perfdata(elapsed, probe.max_latency), {
        let mut d = PerfDatum::new("size", size as f64, "B");
        d.min = Some(0.0);
        d
    }];
    let status_text = match http_status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", http_status.as_u16()),
        None => format!("HTTP {}", http_status.as_u16()),
    };
    let finish = |status: Status, summary: String| {
        let mut result = ProbeResult::new(status, summary, elapsed);
        result.perfdata.extend(perfdata.iter().cloned());
        result
    };

    let accepted = if probe.status.is_empty() {
        http_status.is_success()
    } else {
        probe.status.contains(&http_status.as_u16())
    };
    if !accepted {
        let expected = if probe.status.is_empty() {
            "2xx".to_string()
        } else {
            probe
                .status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let snippet = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        return finish(Status::Critical, format!("{status_text}, want {expected}"))
            .with_long_output(snippet);
    }
    if let Some(e) = body_error {
        return finish(
            Status::Critical,
            format!("{status_text}, but the body broke off: {e}"),
        );
    }
    let text = String::from_utf8_lossy(&body);
    if let Some(needle) = &probe.body_contains
        && !text.contains(needle.as_str())
    {
        return finish(
            Status::Critical,
            format!("{status_text}, but the body does not contain `{needle}`"),
        );
    }
    if let Some(pattern) = &probe.body_regex {
        // Validated when the spec was loaded; a failure here can only be resource limits.
        match regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
        {
            Ok(re) if re.is_match(&text) => {}
            Ok(_) => {
                return finish(
                    Status::Critical,
                    format!("{status_text}, but the body does not match /{pattern}/"),
                );
            }
            Err(e) => return finish(Status::Unknown, format!("body_regex: {e}")),
        }
    }
    finish(
        latency_status(elapsed, probe.max_latency),
        format!(
            "{status_text} in {}, {size} bytes{}",
            format_duration(elapsed),
            latency_note(elapsed, probe.max_latency)
        ),
    )
}
