//! The HTTP JSON API (documented in docs/api.md). Reads need a token unless `--public-read`;
//! writes always do: results need an agent or admin token, specs and tokens an admin token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mdd_core::{PluginOutput, State, Status};
use mdd_storage::{StoreError, StoredResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::Role;
use crate::checks::{CheckSet, SpecDiff};
use crate::view::{EventView, StateResolver, timestamp};
use crate::{Shared, now_ms};

/// The biggest apply: 100,000 checks across files are some 20 MB of YAML, in JSON strings.
pub const MAX_SPEC_BODY: usize = 64 * 1024 * 1024;

/// Every answer, API and dashboard: a body announced as bigger than the route takes is
/// refused at once, before any of it is read (a client must not hold a connection open
/// sending megabytes that will be thrown away), and nothing is ever sniffed as another type.
pub async fn guard(
    AxumState(max_body): AxumState<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = if request.uri().path() == "/api/v1/spec" {
        MAX_SPEC_BODY
    } else {
        max_body
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut response = match announced {
        Some(length) if length > limit as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is {length} bytes; this route takes at most {limit}"),
        )
        .into_response(),
        _ => next.run(request).await,
    };
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// The most results one request may carry.
pub const MAX_BATCH: usize = 10_000;
/// The most bytes of plugin output one result may carry.
pub const MAX_OUTPUT: usize = 64 * 1024;
const MAX_NAME: usize = 128;

type AppState = Arc<Shared>;

pub fn router(shared: AppState) -> Router {
    let max_body = shared.config.max_body;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/results", post(post_results))
        .route("/api/v1/results/{id}", get(get_result))
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/events/{check}/{entity}", get(get_event))
        .route("/api/v1/checks", get(list_checks))
        .route("/api/v1/checks/{name}/results", get(check_results))
        .route("/api/v1/entities", get(list_entities))
        .route("/api/v1/report", get(report))
        .route("/api/v1/handlers", get(list_handlers))
        .route(
            "/api/v1/handlers/{name}/deliveries",
            get(handler_deliveries),
        )
        .route("/api/v1/silences", get(list_silences).post(create_silence))
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(delete_silence),
        )
        .route("/api/v1/deployments", get(list_deployments))
        .route("/api/v1/deployments/{name}", get(get_deployment))
        .route(
            "/api/v1/spec",
            get(get_spec)
                .post(apply_spec)
                .layer(DefaultBodyLimit::max(MAX_SPEC_BODY)),
        )
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route(
            "/api/v1/entities/{name}",
            axum::routing::delete(delete_entity),
        )
        .route("/api/v1/agent/enroll", post(enroll))
        .route("/api/v1/agent/checks", get(agent_checks))
        .route("/api/v1/agent/keepalive", post(agent_keepalive))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(shared)
}

/// An error answer: a status and a message that says what and where.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A body that is not what the route takes. serde's message quotes the input (a field
    /// name, a whole string value): it is cut short and its control characters shown escaped,
    /// so an answer never echoes megabytes or raw bytes of what was sent.
    fn invalid(what: &str, error: &serde_json::Error) -> ApiError {
        let message = error.to_string();
        let mut end = message.len().min(300);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < message.len() { "…" } else { "" };
        ApiError::bad_request(format!(
            "invalid {what}: {}{cut}",
            mdd_core::terminal::printable(&message[..end])
        ))
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    fn store(error: &StoreError) -> ApiError {
        let status = if error.is_capacity() {
            StatusCode::INSUFFICIENT_STORAGE
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        ApiError::new(status, format!("not stored: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Checks the bearer token for `needed`; reads pass without one under `--public-read`.
/// The token the request carries (None only for a public read without one).
fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    needed: Role,
    route: &str,
) -> ApiResult<Option<crate::auth::TokenEntry>> {
    let has_token = headers.contains_key(header::AUTHORIZATION);
    if needed == Role::Read && shared.config.public_read && !has_token {
        return Ok(None);
    }
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(secret) = secret else {
        // Mutual TLS: a verified client certificate stands for an agent bound to its name,
        // as an entity-bound agent token does. Only the listener sets this header.
        if let Some(name) = headers
            .get(crate::listen::CLIENT_CERTIFICATE_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|name| valid_name(name))
        {
            if !Role::Agent.allows(needed) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "a client certificate authenticates an agent; this needs a token with the {} role",
                        needed.as_str()
                    ),
                ));
            }
            return Ok(Some(crate::auth::TokenEntry::for_certificate(name)));
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a token is required: send `Authorization: Bearer <token>` (mdd --token or MDD_TOKEN)",
        ));
    };
    let now = now_ms();
    match shared.token(secret) {
        Some(token) if token.expired(now) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "this token expired at {}; make another with `mdd token create`",
                timestamp(token.expires_at.unwrap_or(now))
            ),
        )),
        Some(token) if token.role.allows(needed) => {
            token
                .last_used
                .store(now, std::sync::atomic::Ordering::Relaxed);
            Ok(Some(token))
        }
        Some(token) => {
            tracing::warn!(
                route,
                token = token.id,
                role = token.role.as_str(),
                "token lacks the role for this request"
            );
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this needs a token with the {} role; this token has {}",
                    needed.as_str(),
                    token.role.as_str()
                ),
            ))
        }
        None => {
            // The secret itself is never logged.
            tracing::warn!(route, "rejected a request with an unknown token");
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "unknown token"))
        }
    }
}

async fn healthz(AxumState(shared): AxumState<AppState>) -> Json<serde_json::Value> {
    let checks = shared.checks();
    Json(json!({
        "status": "ok",
        "revision": checks.revision,
        "checks": checks.checks().len(),
        "events": shared.events_count(),
        "server": shared.server_id,
        "once_only_work": shared.holds_once_only_work(),
    }))
}

async fn metrics(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Read, "/metrics")?;
    let format = crate::metrics::Format::from_accept(
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
    );
    let checks = shared.checks();
    let (events, deployments) = {
        let events = shared.fresh_events().await;
        let tracks = shared.deployments_snapshot();
        let clock = shared.clock();
        let mut resolver = StateResolver::new(&checks, &events, clock);
        let mut samples: Vec<crate::metrics::EventSample> = events
            .values()
            .filter_map(|cached| {
                // Like the events list: only checks that are in the spec, and keepalives.
                let config = checks.get(&cached.event.check);
                if config.is_none() && cached.event.check != crate::keepalive::KEEPALIVE_CHECK {
                    return None;
                }
                Some(crate::metrics::EventSample {
                    check: cached.event.check.clone(),
                    entity: cached.event.entity.clone(),
                    state: resolver.state_of(cached, config).0,
                    executed_at: Some(cached.event.executed_at),
                })
            })
            .collect();
        // Checks that never reported are events too, pending (or stale once overdue).
        for check in checks.checks() {
            let has_event = events
                .range((check.name.clone(), String::new())..)
                .next()
                .is_some_and(|((c, _), _)| *c == check.name);
            if !has_event {
                samples.push(crate::metrics::EventSample {
                    check: check.name.clone(),
                    entity: String::new(),
                    state: resolver.absent(check).state,
                    executed_at: None,
                });
            }
        }
        let mut views = crate::deployments::Views::new(&checks, &events, &tracks, clock);
        let deployments: Vec<crate::metrics::DeploymentSample> = checks
            .spec
            .deployments
            .iter()
            .map(|d| {
                let summary = views.summary(d);
                crate::metrics::DeploymentSample {
                    name: summary.name,
                    done: summary.done,
                    green: summary.green,
                    total: summary.total,
                }
            })
            .collect();
        (samples, deployments)
    };
    let connections = crate::metrics::ConnectionSample {
        open: shared
            .connections
            .open
            .load(std::sync::atomic::Ordering::Relaxed),
        refused: shared
            .connections
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        timed_out: shared
            .connections
            .timed_out
            .load(std::sync::atomic::Ordering::Relaxed),
    };
    let text = shared
        .metrics
        .render(format, &events, &deployments, connections);
    Ok(([(header::CONTENT_TYPE, format.content_type())], text).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsRequest {
    results: Vec<ResultIn>,
}

/// One result as producers send it. `output` is what a Nagios plugin prints (summary, long
/// output, perfdata after `|`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultIn {
    id: String,
    check: String,
    #[serde(default)]
    entity: Option<String>,
    status: i64,
    #[serde(default)]
    output: String,
    /// RFC 3339; defaults to the time the server received it.
    #[serde(default)]
    executed_at: Option<String>,
    #[serde(default)]
    duration_ms: Option<f64>,
    #[serde(default)]
    exit_code: Option<i32>,
}

fn valid_name(text: &str) -> bool {
    mdd_core::spec::is_valid_entity_name(text)
}

async fn post_results(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<crate::ingest::IngestOutcome>> {
    let started = Instant::now();
    let token = authorize(&shared, &headers, Role::Agent, "/api/v1/results")?;
    let request: ResultsRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("results payload", &e))?;
    if request.results.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} results in one request; send at most {MAX_BATCH} per request",
                request.results.len()
            ),
        ));
    }
    let received_at = now_ms();
    let mut checks = shared.checks();
    // A check this server does not know yet may have been applied through another server of
    // the cluster a moment ago: look before refusing (the follower would take it within 250 ms).
    if shared.store.is_shared()
        && request
            .results
            .iter()
            .any(|r| checks.get(&r.check).is_none())
    {
        if let Err(e) = crate::follow::catch_up_spec(&shared).await {
            tracing::warn!("cannot read the newest spec: {e}");
        }
        checks = shared.checks();
    }
    let mut results = Vec::with_capacity(request.results.len());
    let bound = token.and_then(|t| t.entity.filter(|_| t.role == Role::Agent));
    for (i, r) in request.results.into_iter().enumerate() {
        let result = validate_result(i, r, &checks, &shared.config.entity, received_at)?;
        if let Some(own) = &bound {
            // A bound agent token reports for its own entity, and for the proxy entities its
            // checks name; nothing else.
            let proxy = checks.get(&result.check).and_then(|c| c.entity.as_deref());
            if result.entity != *own && proxy != Some(result.entity.as_str()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "results[{i}].entity: this token reports only for `{own}` and the proxy entities its checks name, not `{}`",
                        truncate(&result.entity)
                    ),
                ));
            }
        }
        results.push(result);
    }
    let outcome = shared
        .ingest(results)
        .await
        .map_err(|e| ApiError::store(&e))?;
    shared.metrics.observe_route("/api/v1/results", started);
    Ok(Json(outcome))
}

fn validate_result(
    i: usize,
    r: ResultIn,
    checks: &CheckSet,
    default_entity: &str,
    received_at: i64,
) -> ApiResult<StoredResult> {
    let at = |field: &str, message: String| {
        ApiError::bad_request(format!("results[{i}].{field}: {message}"))
    };
    if !valid_name(&r.id) {
        return Err(at(
            "id",
            format!(
                "`{}` must be 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - :",
                truncate(&r.id)
            ),
        ));
    }
    if checks.get(&r.check).is_none() {
        return Err(at(
            "check",
            format!(
                "unknown check `{}` (not in the applied spec)",
                truncate(&r.check)
            ),
        ));
    }
    let entity = r.entity.unwrap_or_else(|| default_entity.to_string());
    if !valid_name(&entity) {
        return Err(at(
            "entity",
            format!(
                "`{}` must be 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - :",
                truncate(&entity)
            ),
        ));
    }
    if !(0..=255).contains(&r.status) {
        return Err(at(
            "status",
            format!("{} is not an exit status (0-255)", r.status),
        ));
    }
    if r.output.len() > MAX_OUTPUT {
        return Err(at(
            "output",
            format!("{} bytes; at most {MAX_OUTPUT}", r.output.len()),
        ));
    }
    let executed_at = match &r.executed_at {
        None => received_at,
        Some(text) => result_time(text, received_at).map_err(|e| at("executed_at", e))?,
    };
    let duration_ms = r.duration_ms.unwrap_or(0.0);
    if !duration_ms.is_finite() || duration_ms < 0.0 {
        return Err(at("duration_ms", "must be a positive number".into()));
    }
    let status = Status::from_exit_code(i32::try_from(r.status).ok());
    let parsed = PluginOutput::parse(&r.output);
    let mut long_output = parsed.long_output;
    if let Some(note) = mdd_core::plugin_output::perfdata_note(&parsed.perfdata_errors) {
        if !long_output.is_empty() {
            long_output.push('\n');
        }
        long_output.push_str(&note);
    }
    Ok(StoredResult {
        id: r.id,
        check: r.check,
        entity,
        status,
        summary: parsed.summary,
        long_output,
        perfdata: parsed.perfdata,
        duration_ms,
        exit_code: r.exit_code,
        executed_at,
        received_at,
        output: r.output,
    })
}

/// A result's time: RFC 3339, and no further ahead of this server's clock than
/// `MAX_CLOCK_SKEW` (a producer's clock can be off by a little, not by years: one result dated
/// 2999 would otherwise make every later one "out of order").
fn result_time(text: &str, now: i64) -> Result<i64, String> {
    let skew = mdd_core::event::MAX_CLOCK_SKEW;
    let limit = now.saturating_add(i64::try_from(skew.as_millis()).unwrap_or(0));
    let latest = || {
        format!(
            "results may be dated at most {} after this server's clock (now {}), so no later than {}",
            mdd_core::format_duration(skew),
            timestamp(now),
            timestamp(limit)
        )
    };
    match text.parse::<jiff::Timestamp>() {
        Ok(time) if time.as_millisecond() > limit => {
            let ahead = std::time::Duration::from_millis(
                u64::try_from(time.as_millisecond() - now).unwrap_or(u64::MAX),
            );
            let ahead = if ahead.as_secs() >= 2 * 86_400 {
                format!("{} days", ahead.as_secs() / 86_400)
            } else {
                mdd_core::format_duration(ahead)
            };
            Err(format!(
                "`{}` is {ahead} ahead of this server's clock: {}; is the producer's clock right?",
                truncate(text),
                latest()
            ))
        }
        Ok(time) => Ok(time.as_millisecond()),
        // Well-formed but past what any clock can mean (jiff stops before 9999-12-31).
        Err(e) if e.to_string().contains("range") || e.to_string().contains("overflow") => {
            Err(format!(
                "`{}` is too far in the future: {}",
                truncate(text),
                latest()
            ))
        }
        Err(e) => Err(format!("`{}` is not an RFC 3339 time: {e}", truncate(text))),
    }
}

/// Hostile payloads can carry megabytes in a name: quote only the start, with control
/// characters shown escaped (an answer never echoes input raw).
fn truncate(text: &str) -> String {
    if text.len() <= 80 {
        return mdd_core::terminal::printable(text).into_owned();
    }
    let mut end = 80;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", mdd_core::terminal::printable(&text[..end]))
}

async fn get_result(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Read, "/api/v1/results/{id}")?;
    match shared.store.result(&id).await {
        Ok(Some(result)) => Ok(Json(crate::view::ResultView::new(&result)).into_response()),
        Ok(None) => Err(ApiError::not_found(format!(
            "no result `{}`",
            truncate(&id)
        ))),
        Err(e) => Err(ApiError::store(&e)),
    }
}

/// The filters of GET /api/v1/events, from a query string where keys may repeat.
#[derive(Debug, Default)]
struct EventFilter {
    labels: BTreeMap<String, String>,
    states: Vec<State>,
    owner: Option<String>,
    entity: Option<String>,
    check: Option<String>,
}

impl EventFilter {
    fn parse(query: Option<&str>) -> ApiResult<EventFilter> {
        let mut filter = EventFilter::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "label" => {
                    let (k, v) = value.split_once('=').ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "label=`{}` must be KEY=VALUE",
                            truncate(&value)
                        ))
                    })?;
                    filter.labels.insert(k.to_string(), v.to_string());
                }
                "state" => {
                    for name in value.split(',') {
                        filter.states.push(
                            name.parse()
                                .map_err(|e: String| ApiError::bad_request(truncate(&e)))?,
                        );
                    }
                }
                "owner" => filter.owner = Some(value.into_owned()),
                "entity" => filter.entity = Some(value.into_owned()),
                "check" => filter.check = Some(value.into_owned()),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown filter `{}`: use label, state, owner, entity, check",
                        truncate(other)
                    )));
                }
            }
        }
        Ok(filter)
    }
}

/// One entry of the events list: an event, or a check that never reported.
#[derive(Serialize)]
#[serde(untagged)]
// Nearly every entry is an event: boxing them would cost an allocation each in a list of
// ten thousand, to save space only in the rare pending entries.
#[allow(clippy::large_enum_variant)]
enum ListEntry<'a> {
    Event(EventView<'a>),
    Pending {
        check: &'a str,
        entity: Option<&'a str>,
        /// `blocked` while a dependency does not pass, else `pending`, or `stale` once a
        /// ttl has gone by without a first result.
        state: State,
        since: crate::view::Time,
        summary: String,
        /// Why it has no result yet, in words.
        reason: String,
        blocked_by: Vec<String>,
        owner: Option<&'a str>,
        labels: &'a BTreeMap<String, String>,
    },
}

async fn list_events(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let started = Instant::now();
    authorize(&shared, &headers, Role::Read, "/api/v1/events")?;
    let filter = EventFilter::parse(query.as_deref())?;
    let checks = shared.checks();
    // A snapshot: listing 50,000 events must not hold the lock the writer needs.
    let events = shared.fresh_events().await;
    let now = now_ms();
    let mut resolver = StateResolver::new(&checks, &events, shared.clock_at(now));
    let silences = shared.silences_read();
    let mut views: Vec<ListEntry<'_>> = Vec::new();
    for ((check, entity), cached) in events.iter() {
        if filter.check.as_ref().is_some_and(|c| c != check)
            || filter.entity.as_ref().is_some_and(|e| e != entity)
        {
            continue;
        }
        // Events of checks no longer in the spec stay stored (their history can still be
        // read one by one) but are not listed: a pruned check is gone from the picture.
        // Keepalives are built in: they have no check in the spec.
        let config = checks.get(check);
        if config.is_none() && check != crate::keepalive::KEEPALIVE_CHECK {
            continue;
        }
        if !filter.labels.is_empty() && !config.is_some_and(|c| c.matches_labels(&filter.labels)) {
            continue;
        }
        if let Some(owner) = &filter.owner
            && config.and_then(|c| c.owner.as_ref()) != Some(owner)
        {
            continue;
        }
        let resolved = resolver.resolve(cached, config);
        if !filter.states.is_empty() && !filter.states.contains(&resolved.state) {
            continue;
        }
        let mut view = EventView::new(cached, config, resolved, false);
        if !silences.is_empty() {
            view.silenced_by = crate::silences::silencing(
                &silences,
                &crate::silences::target(&checks, check, entity),
                now,
            )
            .into_iter()
            .map(str::to_string)
            .collect();
        }
        views.push(ListEntry::Event(view));
    }
    // Checks that never reported are events too, in the pending state: in a deployment that
    // is just starting, they are most of what there is to see.
    if filter.entity.is_none() {
        let agents = crate::checks::AgentSubscriptions::of(&shared);
        for check in checks.checks() {
            let has_event = events
                .range((check.name.clone(), String::new())..)
                .next()
                .is_some_and(|((c, _), _)| *c == check.name);
            if has_event
                || filter.check.as_ref().is_some_and(|c| *c != check.name)
                || (!filter.labels.is_empty() && !check.matches_labels(&filter.labels))
                || filter
                    .owner
                    .as_ref()
                    .is_some_and(|o| check.owner.as_ref() != Some(o))
            {
                continue;
            }
            let resolved = resolver.absent(check);
            if !filter.states.is_empty() && !filter.states.contains(&resolved.state) {
                continue;
            }
            let reason = match resolved.state {
                State::Blocked => {
                    format!("it waits for {} to pass", resolved.blocked_by.join(", "))
                }
                _ => agents.why_no_result(check),
            };
            views.push(ListEntry::Pending {
                check: &check.name,
                entity: None,
                state: resolved.state,
                since: crate::view::Time(resolved.since),
                summary: match resolved.state {
                    State::Stale => format!("no result within its ttl: {reason}"),
                    State::Blocked => {
                        format!("blocked by {}", resolved.blocked_by.join(", "))
                    }
                    _ => format!("no result yet: {reason}"),
                },
                reason,
                blocked_by: resolved.blocked_by,
                owner: check.owner.as_deref(),
                labels: &check.labels,
            });
        }
    }
    #[derive(Serialize)]
    struct EventList<'a> {
        events: Vec<ListEntry<'a>>,
    }
    // Serialized straight from the views into a buffer sized for them: going through
    // serde_json::Value would copy every event into a map first.
    let mut body = Vec::with_capacity(64 + views.len() * 512);
    if let Err(e) = serde_json::to_writer(&mut body, &EventList { events: views }) {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode events: {e}"),
        ));
    }
    let response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    shared.metrics.observe_route("/api/v1/events", started);
    Ok(response)
}

async fn get_event(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    Path((check, entity)): Path<(String, String)>,
) -> ApiResult<Response> {
    authorize(
        &shared,
        &headers,
        Role::Read,
        "/api/v1/events/{check}/{entity}",
    )?;
    let checks = shared.checks();
    let key = (check.clone(), entity.clone());
    let events = shared.fresh_event(&key).await;
    let Some(cached) = events.get(&key) else {
        return Err(ApiError::not_found(format!(
            "no event for check `{}` on entity `{}`",
            truncate(&check),
            truncate(&entity)
        )));
    };
    let mut resolver = StateResolver::new(&checks, &events, shared.clock());
    let config = checks.get(&cached.event.check);
    let resolved = resolver.resolve(cached, config);
    let mut view = EventView::new(cached, config, resolved, true);
    view.silenced_by = crate::silences::silencing(
        &shared.silences_read(),
        &crate::silences::target(&checks, &check, &entity),
        now_ms(),
    )
    .into_iter()
    .map(str::to_string)
    .collect();
    Ok(Json(view).into_response())
}

/// How often things break over one window, per check, per owner, and the worst ten.
pub async fn breakage_report(
    shared: &Shared,
    window: std::time::Duration,
) -> Result<serde_json::Value, StoreError> {
    let now = now_ms();
    let from = now - i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
    let (incidents, flaps) = shared.store.incidents_since(from).await?;
    let checks = shared.checks();
    let context = report_context(shared, &checks);
    let per_check = {
        let events = shared.fresh_events().await;
        let has_event = |check: &str, entity: &str| {
            events.contains_key(&(check.to_string(), entity.to_string()))
        };
        mdd_core::incident::attributed(
            &incidents,
            &flaps,
            from,
            now,
            &mdd_core::incident::Attribution {
                checks: &context,
                has_event: &has_event,
            },
        )
    };
    let owner_of = |check: &str| checks.get(check).and_then(|c| c.owner.as_deref());
    let per_owner = mdd_core::incident::by_owner(&per_check, owner_of);
    let row = |name_key: &str, name: &str, b: &mdd_core::incident::Breakage| {
        let mut value = json!({
            "incidents": b.incidents,
            "failing_ms": b.failing_ms,
            "mttr_ms": b.mttr_ms,
            "flaps": b.flaps,
            "open": b.open,
        });
        value[name_key] = json!(name);
        value
    };
    // Availability from results over the same window: per check, and per deployment as the
    // share of its checks' time that was OK.
    let caps: Vec<(&str, i64)> = checks
        .checks()
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                i64::try_from(c.effective_ttl().as_millis()).unwrap_or(i64::MAX),
            )
        })
        .collect();
    let uptime = shared.store.availability(&caps, from, now).await?;
    let share = |ok: i64, total: i64| (total > 0).then(|| ok as f64 / total as f64);
    let availability_of = |check: &str| uptime.get(check).and_then(|&(ok, total)| share(ok, total));
    let deployments: Vec<serde_json::Value> = checks
        .spec
        .deployments
        .iter()
        .map(|d| {
            let (ok, total) = crate::deployments::selected(&checks, d)
                .filter_map(|c| uptime.get(&c.name))
                .fold((0, 0), |(o, t), (ok, total)| (o + ok, t + total));
            json!({ "deployment": d.name, "availability": share(ok, total) })
        })
        .collect();
    let top: Vec<serde_json::Value> = mdd_core::incident::top_offenders(&per_check, 10)
        .into_iter()
        .map(|(check, b)| {
            let mut value = row("check", check, b);
            value["owner"] = json!(owner_of(check));
            value["availability"] = json!(availability_of(check));
            value
        })
        .collect();
    Ok(json!({
        "window": mdd_core::format_duration(window),
        "from": timestamp(from),
        "to": timestamp(now),
        "counts": mdd_core::incident::COUNTS,
        "top_offenders": top,
        "checks": per_check.iter().map(|(c, b)| {
            let mut value = row("check", c, b);
            value["owner"] = json!(owner_of(c));
            value["availability"] = json!(availability_of(c));
            value
        }).collect::<Vec<_>>(),
        "deployments": deployments,
        "owners": per_owner.iter().map(|(o, b)| row("owner", o, b)).collect::<Vec<_>>(),
    }))
}

/// What the report needs of every check: when its bring-up ended (its first green in the
/// deployments that select it) and what it depends on.
fn report_context(
    shared: &Shared,
    checks: &CheckSet,
) -> BTreeMap<String, mdd_core::incident::CheckContext> {
    let tracks = shared.deployments_snapshot();
    let mut context: BTreeMap<String, mdd_core::incident::CheckContext> = checks
        .checks()
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                mdd_core::incident::CheckContext {
                    bring_up_until: None,
                    depends_on: c.depends_on.clone(),
                },
            )
        })
        .collect();
    for deployment in &checks.spec.deployments {
        let track = tracks.get(&deployment.name);
        for check in checks.selected(&deployment.name) {
            let green = track
                .and_then(|t| t.checks.get(&check.name))
                .and_then(|c| c.first_green_at)
                .unwrap_or(i64::MAX);
            if let Some(entry) = context.get_mut(&check.name) {
                entry.bring_up_until = Some(entry.bring_up_until.map_or(green, |b| b.min(green)));
            }
        }
    }
    context
}

/// The standard windows of the report.
pub const REPORT_WINDOWS: [(&str, u64); 3] =
    [("24h", 86_400), ("7d", 7 * 86_400), ("30d", 30 * 86_400)];

async fn report(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Read, "/api/v1/report")?;
    let mut window = None;
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "window" => {
                let duration = mdd_core::parse_duration(&value).map_err(|e| {
                    ApiError::bad_request(format!("window: {}", truncate(&e.to_string())))
                })?;
                if duration.is_zero() || duration > std::time::Duration::from_secs(366 * 86_400) {
                    return Err(ApiError::bad_request("window: between 1s and 366d"));
                }
                window = Some(duration);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{}`: use window",
                    truncate(other)
                )));
            }
        }
    }
    let body = match window {
        Some(window) => breakage_report(&shared, window)
            .await
            .map_err(|e| ApiError::store(&e))?,
        None => {
            let mut windows = serde_json::Map::new();
            for (name, seconds) in REPORT_WINDOWS {
                let mut one = breakage_report(&shared, std::time::Duration::from_secs(seconds))
                    .await
                    .map_err(|e| ApiError::store(&e))?;
                one["window"] = json!(name);
                windows.insert(name.to_string(), one);
            }
            json!({ "windows": windows })
        }
    };
    Ok(Json(body).into_response())
}

async fn list_handlers(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Read, "/api/v1/handlers")?;
    let checks = shared.checks();
    let list: Vec<serde_json::Value> = checks
        .spec
        .handlers
        .iter()
        .map(|h| {
            let (kind, target) = h.kind.describe();
            let recent: Vec<_> = shared.deliveries.of(&h.name).into_iter().take(20).collect();
            json!({ "name": h.name, "type": kind, "target": target, "recent": recent })
        })
        .collect();
    Ok(Json(json!({ "handlers": list })).into_response())
}

async fn handler_deliveries(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    authorize(
        &shared,
        &headers,
        Role::Read,
        "/api/v1/handlers/{name}/deliveries",
    )?;
    if !shared.checks().spec.handlers.iter().any(|h| h.name == name) {
        return Err(ApiError::not_found(format!(
            "no handler `{}`",
            truncate(&name)
        )));
    }
    Ok(Json(json!({ "deliveries": shared.deliveries.of(&name) })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceRequest {
    check: Option<String>,
    entity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    owner: Option<String>,
    reason: String,
    /// RFC 3339; default now.
    starts_at: Option<String>,
    /// RFC 3339.
    expires_at: Option<String>,
    /// A duration from the start instead of `expires_at`, like `2h`.
    #[serde(rename = "for")]
    duration: Option<String>,
    #[serde(default)]
    until_resolved: bool,
}

fn silence_view(s: &mdd_core::silence::Silence, now: i64) -> serde_json::Value {
    json!({
        "id": s.id,
        "check": s.check,
        "entity": s.entity,
        "labels": s.labels,
        "owner": s.owner,
        "reason": s.reason,
        "creator": s.creator,
        "starts_at": timestamp(s.starts_at),
        "expires_at": s.expires_at.map(timestamp),
        "until_resolved": s.until_resolved,
        "active": s.is_active(now),
    })
}

async fn create_silence(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let token = authorize(&shared, &headers, Role::Admin, "/api/v1/silences")?;
    let request: SilenceRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("silence", &e))?;
    let now = now_ms();
    let time = |field: &str, text: &str| {
        text.parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "{field}: `{}` is not an RFC 3339 time: {e}",
                    truncate(text)
                ))
            })
    };
    let starts_at = match &request.starts_at {
        Some(text) => time("starts_at", text)?,
        None => now,
    };
    let expires_at = match (&request.expires_at, &request.duration) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give `expires_at` or `for`, not both",
            ));
        }
        (Some(text), None) => Some(time("expires_at", text)?),
        (None, Some(text)) => {
            let duration = mdd_core::parse_duration(text)
                .map_err(|e| ApiError::bad_request(format!("for: {}", truncate(&e.to_string()))))?;
            Some(starts_at.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)))
        }
        (None, None) => None,
    };
    for (field, value) in [("check", &request.check), ("entity", &request.entity)] {
        if let Some(value) = value
            && !valid_name(value)
        {
            return Err(ApiError::bad_request(format!(
                "{field}: `{}` must be 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - :",
                truncate(value)
            )));
        }
    }
    if request.reason.len() > 1024 {
        return Err(ApiError::bad_request("reason: at most 1,024 bytes"));
    }
    // A silence of a name that exists nowhere silences nothing, and says so now rather than
    // leave an operator believing a page is quiet: a typo is refused.
    if let Some(check) = &request.check {
        let checks = shared.checks();
        if checks.get(check).is_none() && check != crate::keepalive::KEEPALIVE_CHECK {
            return Err(ApiError::bad_request(format!(
                "check: `{}` is not a check of the applied spec",
                truncate(check)
            )));
        }
    }
    if let Some(entity) = &request.entity {
        let known = *entity == shared.config.entity
            || shared
                .checks()
                .checks()
                .iter()
                .any(|c| c.entity.as_deref() == Some(entity.as_str()))
            || shared.events_read().keys().any(|(_, e)| e == entity)
            || shared
                .store
                .entities()
                .await
                .map_err(|e| ApiError::store(&e))?
                .iter()
                .any(|e| e.name == *entity);
        if !known {
            return Err(ApiError::bad_request(format!(
                "entity: `{}` is not an entity this server knows (none reported as it, and no check names it)",
                truncate(entity)
            )));
        }
    }
    let silence = mdd_core::silence::Silence {
        id: uuid::Uuid::now_v7().to_string(),
        check: request.check,
        entity: request.entity,
        labels: request.labels,
        owner: request.owner,
        reason: request.reason,
        creator: token.map_or_else(|| "anonymous".to_string(), |t| t.name),
        starts_at,
        expires_at,
        until_resolved: request.until_resolved,
    };
    let view = silence_view(&silence, now);
    crate::silences::add(&shared, silence)
        .await
        .map_err(|e| match e {
            crate::silences::AddError::Invalid(e) => ApiError::bad_request(e.to_string()),
            crate::silences::AddError::Store(e) => ApiError::store(&e),
        })?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list_silences(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Read, "/api/v1/silences")?;
    let now = now_ms();
    let list: Vec<serde_json::Value> = shared
        .silences_read()
        .iter()
        .filter(|s| !s.has_expired(now))
        .map(|s| silence_view(s, now))
        .collect();
    Ok(Json(json!({ "silences": list })).into_response())
}

async fn delete_silence(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Admin, "/api/v1/silences/{id}")?;
    let existed = crate::silences::end(&shared, &id)
        .await
        .map_err(|e| ApiError::store(&e))?;
    if !existed {
        return Err(ApiError::not_found(format!(
            "no silence `{}`",
            truncate(&id)
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_deployments(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Read, "/api/v1/deployments")?;
    let checks = shared.checks();
    let events = shared.fresh_events().await;
    let tracks = shared.deployments_snapshot();
    let mut views = crate::deployments::Views::new(&checks, &events, &tracks, shared.clock());
    let list: Vec<crate::deployments::Summary> = checks
        .spec
        .deployments
        .iter()
        .map(|d| views.summary(d))
        .collect();
    Ok(Json(json!({ "revision": checks.revision, "deployments": list })).into_response())
}

async fn get_deployment(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Read, "/api/v1/deployments/{name}")?;
    let checks = shared.checks();
    let Some(deployment) = checks.spec.deployments.iter().find(|d| d.name == name) else {
        return Err(ApiError::not_found(format!(
            "no deployment `{}` in the applied spec",
            truncate(&name)
        )));
    };
    let events = shared.fresh_events().await;
    let tracks = shared.deployments_snapshot();
    let mut views = crate::deployments::Views::new(&checks, &events, &tracks, shared.clock())
        .with_agents(crate::checks::AgentSubscriptions::of(&shared));
    Ok(Json(views.detail(deployment)).into_response())
}

#[derive(Serialize)]
struct CheckView<'a> {
    name: &'a str,
    description: Option<&'a str>,
    owner: Option<&'a str>,
    runbook: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
    depends_on: &'a [String],
    subscriptions: &'a [String],
    probe: &'static str,
    target: String,
    interval_ms: u128,
    timeout_ms: u128,
    ttl_ms: u128,
    source: String,
}

async fn list_checks(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Read, "/api/v1/checks")?;
    let checks = shared.checks();
    let views: Vec<CheckView<'_>> = checks
        .checks()
        .iter()
        .map(|c| CheckView {
            name: &c.name,
            description: c.description.as_deref(),
            owner: c.owner.as_deref(),
            runbook: c.runbook.as_deref(),
            labels: &c.labels,
            depends_on: &c.depends_on,
            subscriptions: &c.subscriptions,
            probe: c.probe.kind(),
            target: c.probe.target(),
            interval_ms: c.interval.as_millis(),
            timeout_ms: c.timeout.as_millis(),
            ttl_ms: c.effective_ttl().as_millis(),
            source: format!("{}:{}", c.source.file, c.source.line),
        })
        .collect();
    Ok(Json(json!({ "revision": checks.revision, "checks": views })).into_response())
}

async fn check_results(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    authorize(
        &shared,
        &headers,
        Role::Read,
        "/api/v1/checks/{name}/results",
    )?;
    let now = now_ms();
    let (mut from, mut to, mut entity, mut limit) = (now - 24 * 3600 * 1000, now, None, 100u32);
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let time = |v: &str| {
            v.parse::<jiff::Timestamp>()
                .map(|t| t.as_millisecond())
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "{}=`{}` is not an RFC 3339 time: {e}",
                        truncate(&key),
                        truncate(v)
                    ))
                })
        };
        match key.as_ref() {
            "from" => from = time(&value)?,
            "to" => to = time(&value)?,
            "entity" => entity = Some(value.into_owned()),
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=10_000).contains(l))
                    .ok_or_else(|| ApiError::bad_request("limit must be 1 to 10000"))?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{}`: use from, to, entity, limit",
                    truncate(other)
                )));
            }
        }
    }
    let results = shared
        .store
        .results(&name, entity.as_deref(), from, to, limit)
        .await
        .map_err(|e| ApiError::store(&e))?;
    // A check that is not in the spec (and never was, or its results are gone) is not there
    // at all: say so rather than answer an empty list. A pruned check's results stay readable.
    let known = shared.checks().get(&name).is_some() || name == crate::keepalive::KEEPALIVE_CHECK;
    if !known
        && results.is_empty()
        && !shared
            .store
            .has_results(&name)
            .await
            .map_err(|e| ApiError::store(&e))?
    {
        return Err(ApiError::not_found(format!(
            "no check `{}`: it is not in the applied spec and has no stored results",
            truncate(&name)
        )));
    }
    let results: Vec<crate::view::ResultView<'_>> =
        results.iter().map(crate::view::ResultView::new).collect();
    Ok(Json(json!({
        "check": name,
        "from": timestamp(from),
        "to": timestamp(to),
        "results": results,
    }))
    .into_response())
}

async fn list_entities(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Read, "/api/v1/entities")?;
    let entities = shared
        .store
        .entities()
        .await
        .map_err(|e| ApiError::store(&e))?;
    let views: Vec<serde_json::Value> = entities
        .into_iter()
        .map(|e| {
            let info: Option<serde_json::Value> =
                e.info.as_deref().and_then(|i| serde_json::from_str(i).ok());
            json!({
                "name": e.name,
                "first_seen": timestamp(e.first_seen),
                "last_seen": timestamp(e.last_seen),
                "last_keepalive": e.last_keepalive.map(timestamp),
                "agent": info,
            })
        })
        .collect();
    Ok(Json(json!({ "entities": views })).into_response())
}

async fn get_spec(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Read, "/api/v1/spec")?;
    let checks = shared.checks();
    Ok(
        Json(json!({ "revision": checks.revision, "files": checks.files_for_storage() }))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    files: Vec<mdd_storage::SpecFile>,
    #[serde(default)]
    dry_run: bool,
    /// Remove the files (and so the checks) that this request does not name.
    #[serde(default)]
    prune: bool,
}

async fn apply_spec(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Admin, "/api/v1/spec")?;
    let request: ApplyRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("apply payload", &e))?;
    let _serialised = shared.apply_lock.lock().await;
    let named: Vec<String> = request.files.iter().map(|f| f.file.clone()).collect();
    // Compare and swap on the revision this apply is made on: when another server stored a
    // newer one first, the apply is made again on top of it (a re-base), a few times at most.
    let mut tries = 0;
    let (revision, diff, warnings) = loop {
        tries += 1;
        let current = shared.checks();
        let mut files = if request.prune {
            BTreeMap::new()
        } else {
            current.files.clone()
        };
        for file in &request.files {
            files.insert(file.file.clone(), file.text.clone());
        }
        let candidate = match CheckSet::parse(current.revision, files) {
            Ok(candidate) => candidate,
            Err(mut errors) => {
                for error in &mut errors.0 {
                    hint_at_prune(error, &named);
                }
                let list: Vec<serde_json::Value> = errors
                    .0
                    .iter()
                    .map(|e| {
                        json!({
                            "file": e.file, "line": e.line, "column": e.column,
                            "field": e.field, "check": e.check, "message": e.message,
                            "text": e.to_string(),
                        })
                    })
                    .collect();
                return Err(ApiError {
                    status: StatusCode::BAD_REQUEST,
                    body: json!({
                        "error": format!("the spec has {}; nothing was changed", mdd_core::words::count(list.len(), "error")),
                        "errors": list,
                    }),
                });
            }
        };
        let applied_at = now_ms();
        let candidate = candidate.dated_after(Some(&current), applied_at);
        let diff = SpecDiff::between(&current, &candidate);
        let mut warnings = crate::checks::AgentSubscriptions::of(&shared).warnings(&candidate);
        warnings.extend(crate::signing::secret_warnings(&candidate.spec.handlers));
        if candidate.files == current.files {
            break (current.revision, diff, warnings);
        }
        if request.dry_run {
            let next = shared
                .store
                .next_revision()
                .await
                .map_err(|e| ApiError::store(&e))?;
            break (next, diff, warnings);
        }
        match shared
            .store
            .apply_spec_on(current.revision, &candidate.files_for_storage(), applied_at)
            .await
            .map_err(|e| ApiError::store(&e))?
        {
            mdd_storage::SpecApplied::Stored(revision) => {
                let mut candidate = candidate;
                candidate.revision = revision;
                shared.set_checks(candidate);
                break (revision, diff, warnings);
            }
            mdd_storage::SpecApplied::Moved { head } => {
                if tries >= crate::APPLY_TRIES {
                    return Err(ApiError {
                        status: StatusCode::CONFLICT,
                        body: json!({
                            "error": format!(
                                "the spec moved under this apply {tries} times in a row (revision {head} now, applied through other servers); nothing was changed by this one: apply again"
                            ),
                            "revision": head,
                        }),
                    });
                }
                crate::follow::catch_up_spec_locked(&shared)
                    .await
                    .map_err(|e| ApiError::store(&e))?;
            }
        }
    };
    Ok(Json(json!({
        "revision": revision,
        "dry_run": request.dry_run,
        "added": diff.added,
        "changed": diff.changed,
        "removed": diff.removed,
        "unchanged": diff.unchanged,
        "deployments": diff.deployments,
        "handlers": diff.handlers,
        "warnings": warnings,
    }))
    .into_response())
}

/// A name defined twice, once in a file this apply names and once in a file applied before
/// that it does not: say how to replace the old file instead of adding to it.
fn hint_at_prune(error: &mut mdd_core::SpecError, named: &[String]) {
    if !error.message.starts_with("duplicate ") {
        return;
    }
    let Some((_, at)) = error.message.split_once("already used at ") else {
        return;
    };
    let other = at.rsplit_once(':').map_or(at, |(file, _)| file).to_string();
    let old = match (named.contains(&error.file), named.contains(&other)) {
        (true, false) => other,
        (false, true) => error.file.clone(),
        _ => return,
    };
    error.message.push_str(&format!(
        " (`{old}` was applied before and this apply does not name it: if it is the same file \
         under another name, or its definitions moved, apply again with --prune so the applied \
         files become exactly the ones given; otherwise rename one of the two)"
    ));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    role: Role,
    #[serde(default)]
    name: String,
    /// For agent tokens: the only entity it may report for.
    #[serde(default)]
    entity: Option<String>,
    /// How long it lives, like `24h` (default: for ever).
    #[serde(default)]
    expires: Option<String>,
    /// Enrollment tokens: how many agents may enroll with it (default: any number).
    #[serde(default)]
    uses: Option<u32>,
    /// Enrollment tokens: subscriptions and labels the agents that enroll get.
    #[serde(default)]
    subscriptions: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

async fn create_token(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Admin, "/api/v1/tokens")?;
    let request: TokenRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("token request", &e))?;
    if let Some(entity) = &request.entity {
        if request.role != Role::Agent {
            return Err(ApiError::bad_request(
                "only agent tokens are bound to an entity",
            ));
        }
        if !valid_name(entity) {
            return Err(ApiError::bad_request(format!(
                "entity: `{}` must be 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - :",
                truncate(entity)
            )));
        }
    }
    let enrolling = request.role == Role::Enroll;
    if !enrolling
        && (request.uses.is_some()
            || !request.subscriptions.is_empty()
            || !request.labels.is_empty())
    {
        return Err(ApiError::bad_request(
            "uses, subscriptions and labels are for enrollment tokens (role enroll)",
        ));
    }
    if request.uses == Some(0) {
        return Err(ApiError::bad_request("uses: at least 1"));
    }
    for subscription in &request.subscriptions {
        if !valid_name(subscription) {
            return Err(ApiError::bad_request(format!(
                "subscriptions: `{}` must be 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - :",
                truncate(subscription)
            )));
        }
    }
    let now = now_ms();
    let expires_at = match &request.expires {
        Some(text) => {
            let lives = mdd_core::parse_duration(text).map_err(|e| {
                ApiError::bad_request(format!("expires: {}", truncate(&e.to_string())))
            })?;
            if lives.is_zero() {
                return Err(ApiError::bad_request("expires: more than 0"));
            }
            Some(now.saturating_add(i64::try_from(lives.as_millis()).unwrap_or(i64::MAX)))
        }
        None => None,
    };
    let (secret, id) = shared
        .create_token_with(crate::NewToken {
            role: request.role,
            name: request.name.clone(),
            entity: request.entity.clone(),
            expires_at,
            uses: request.uses.map(i64::from),
            grants: crate::auth::Grants {
                subscriptions: request.subscriptions.clone(),
                labels: request.labels.clone(),
            },
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": secret, "id": id, "role": request.role, "name": request.name,
            "entity": request.entity, "expires_at": expires_at.map(timestamp),
            "uses": request.uses, "subscriptions": request.subscriptions, "labels": request.labels,
        })),
    )
        .into_response())
}

/// `GET /api/v1/tokens` (admin): every token, without its secret (which is never stored).
async fn list_tokens(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Admin, "/api/v1/tokens")?;
    let now = now_ms();
    let list: Vec<serde_json::Value> = shared
        .token_list()
        .iter()
        .map(|t| {
            let used = t.last_used.load(std::sync::atomic::Ordering::Relaxed);
            json!({
                "id": t.id, "name": t.name, "role": t.role, "entity": t.entity,
                "created_at": timestamp(t.created_at),
                "last_used_at": (used > 0).then(|| timestamp(used)),
                "expires_at": t.expires_at.map(timestamp),
                "expired": t.expired(now),
                "uses_left": t.uses_left,
                "subscriptions": t.grants.subscriptions, "labels": t.grants.labels,
            })
        })
        .collect();
    Ok(Json(json!({ "tokens": list })).into_response())
}

/// `DELETE /api/v1/tokens/{id}` (admin): refused from the next request on, dashboard sessions
/// signed in with it included. Agents it enrolled keep their own tokens.
async fn revoke_token(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Admin, "/api/v1/tokens/{id}")?;
    if shared
        .revoke_token(&id)
        .await
        .map_err(|e| ApiError::store(&e))?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no token `{}`", truncate(&id))))
    }
}

/// `DELETE /api/v1/entities/{name}` (admin): the entity and its events go (its results stay
/// until retention); an agent still running under that name registers it again.
async fn delete_entity(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Admin, "/api/v1/entities/{name}")?;
    let known = shared
        .store
        .entities()
        .await
        .map_err(|e| ApiError::store(&e))?
        .iter()
        .any(|e| e.name == name)
        || shared.events_read().keys().any(|(_, e)| *e == name);
    if !known {
        return Err(ApiError::not_found(format!(
            "no entity `{}`",
            truncate(&name)
        )));
    }
    shared.keepalives().remove(&name);
    shared
        .forget_entity(&name)
        .await
        .map_err(|e| ApiError::store(&e))?;
    shared.changed();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    /// The entity to register: the agent's host name by default.
    name: String,
    /// Subscriptions and labels the agent asks for besides what the token grants.
    #[serde(default)]
    subscriptions: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// `POST /api/v1/agent/enroll` (enrollment token): registers the agent's entity and answers
/// with an agent token bound to it, which the agent keeps and uses from then on.
async fn enroll(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let Some(token) = authorize(&shared, &headers, Role::Enroll, "/api/v1/agent/enroll")? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "an enrollment token is required",
        ));
    };
    let request: EnrollRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("enrollment", &e))?;
    if !valid_name(&request.name) {
        return Err(ApiError::bad_request(format!(
            "name: `{}` must be 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - :",
            truncate(&request.name)
        )));
    }
    if token.uses_left.is_some_and(|n| n <= 0) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this enrollment token has no use left; make another with `mdd token create --role enroll`",
        ));
    }
    // A name held by an agent alive now is refused: two hosts would report as one.
    let now = now_ms();
    let live = shared.keepalives().get(&request.name).is_some_and(|w| {
        w.reported == mdd_core::Status::Ok && (now - w.last) as f64 <= w.info.warning_s * 1000.0
    });
    if live {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "an agent alive now already reports as `{}`: give this host another --name, or delete the entity first (mdd entity delete {})",
                truncate(&request.name),
                truncate(&request.name)
            ),
        ));
    }
    let secret = shared
        .enroll(&token, &request.name)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let Some(secret) = secret else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this enrollment token has no use left; make another with `mdd token create --role enroll`",
        ));
    };
    let mut subscriptions = token.grants.subscriptions.clone();
    for s in request.subscriptions {
        if !subscriptions.contains(&s) {
            subscriptions.push(s);
        }
    }
    let mut labels = request.labels;
    labels.extend(token.grants.labels.clone());
    tracing::info!(
        entity = request.name,
        enrolled_with = token.name,
        "an agent enrolled"
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": secret, "entity": request.name,
            "subscriptions": subscriptions, "labels": labels,
        })),
    )
        .into_response())
}

/// The longest an agent's long-poll is held open.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The checks for a set of subscriptions, and a version that changes exactly when they do.
fn checks_for<'a>(
    checks: &'a CheckSet,
    subscriptions: &[String],
) -> (String, Vec<&'a mdd_core::spec::Check>) {
    let selected: Vec<&mdd_core::spec::Check> = checks
        .checks()
        .iter()
        .filter(|c| c.subscriptions.iter().any(|s| subscriptions.contains(s)))
        .collect();
    // FNV-1a over the JSON of exactly these checks: applies that change other checks leave
    // this version alone, so they wake no agent that does not run them.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in serde_json::to_vec(&selected).unwrap_or_default() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (format!("{hash:016x}"), selected)
}

/// `GET /api/v1/agent/checks?subscriptions=a,b&after=VERSION&wait=30s`: the checks an agent
/// with these subscriptions runs. When `after` is the current version, the answer waits (up to
/// `wait`, at most 60 s) for the set to change, so an apply reaches agents at once without
/// polling storms.
async fn agent_checks(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    authorize(&shared, &headers, Role::Agent, "/api/v1/agent/checks")?;
    let mut subscriptions: Vec<String> = Vec::new();
    let mut after = None;
    let mut wait = std::time::Duration::ZERO;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "subscriptions" => subscriptions.extend(
                value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "after" => after = Some(value.into_owned()),
            "wait" => {
                wait = mdd_core::parse_duration(&value)
                    .map_err(|e| {
                        ApiError::bad_request(format!("wait: {}", truncate(&e.to_string())))
                    })?
                    .min(MAX_WAIT);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{}`: use subscriptions, after, wait",
                    truncate(other)
                )));
            }
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut revisions = shared.watch_revision();
    loop {
        let checks = shared.checks();
        let (version, selected) = checks_for(&checks, &subscriptions);
        if after.as_deref() != Some(version.as_str()) {
            return Ok(Json(json!({
                "version": version,
                "revision": checks.revision,
                "checks": selected,
            }))
            .into_response());
        }
        drop(selected);
        tokio::select! {
            changed = revisions.changed() => {
                if changed.is_err() {
                    return Ok(Json(json!({ "version": version, "unchanged": true })).into_response());
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(Json(json!({ "version": version, "unchanged": true })).into_response());
            }
            _ = shared.shutdown.cancelled() => {
                return Ok(Json(json!({ "version": version, "unchanged": true })).into_response());
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepaliveRequest {
    entity: String,
    #[serde(default)]
    subscriptions: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    facts: BTreeMap<String, serde_json::Value>,
    interval_s: f64,
    warning_s: f64,
    critical_s: f64,
    #[serde(default)]
    deregister: bool,
}

/// `POST /api/v1/agent/keepalive`: an agent saying it is alive, with what it is.
async fn agent_keepalive(
    AxumState(shared): AxumState<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let token = authorize(&shared, &headers, Role::Agent, "/api/v1/agent/keepalive")?;
    let request: KeepaliveRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("keepalive", &e))?;
    if let Some(own) = token.and_then(|t| t.entity.filter(|_| t.role == Role::Agent))
        && own != request.entity
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this token keeps only `{own}` alive, not `{}`",
                truncate(&request.entity)
            ),
        ));
    }
    if !valid_name(&request.entity) {
        return Err(ApiError::bad_request(format!(
            "entity: `{}` must be 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - :",
            truncate(&request.entity)
        )));
    }
    let info = crate::keepalive::AgentInfo {
        subscriptions: request.subscriptions,
        labels: request.labels,
        facts: request.facts,
        interval_s: request.interval_s,
        warning_s: request.warning_s,
        critical_s: request.critical_s,
        deregister: request.deregister,
    };
    info.validate().map_err(ApiError::bad_request)?;
    crate::keepalive::receive(&shared, &request.entity, info)
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(Json(json!({ "ok": true })).into_response())
}
