//! The dashboard: server-rendered HTML pages at `/`, readable without JavaScript; a small
//! script swaps in a fresh copy of the page's main part every two seconds.
//!
//! Pages are askama templates (`templates/`, type-checked at compile time, auto-escaped) fed
//! by the same views as the API (`view`, `deployments`); charts are SVG drawn here (`svg`).
//! Access follows the API's rules: with `--public-read` anyone may read; otherwise `/login`
//! takes a token and keeps an HttpOnly, SameSite=Strict session cookie. Responses carry a
//! strict content security policy (no inline script or style, nothing from elsewhere).

mod pages;
pub mod svg;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::Role;
use crate::{Shared, now_ms};

/// How long a sign-in lasts.
const SESSION_MS: i64 = 12 * 3600 * 1000;
const COOKIE: &str = "mdd_session";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Clone)]
pub struct Dashboard {
    shared: Arc<Shared>,
    /// Session id → the session: a cache of the store's sessions (read through on a miss, so a
    /// session made on another server of the cluster is valid here), dropped whenever a session
    /// ends anywhere.
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// The shared sessions generation the cache was filled under.
    sessions_seen: Arc<std::sync::atomic::AtomicU64>,
    /// Pages drawn at once: half the cores (at least one). Ten tabs on a deployment of 50,000
    /// checks wait their turn instead of taking every core from ingestion and the API.
    drawing: Arc<tokio::sync::Semaphore>,
    /// Availability texts by page, worked out at most once a minute: 30 days of results are
    /// not read again for every redraw of a live page.
    availability: Arc<Mutex<HashMap<String, (std::time::Instant, String)>>>,
}

/// How long an availability text is reused.
const AVAILABILITY_FRESH: std::time::Duration = std::time::Duration::from_secs(60);

impl Dashboard {
    /// "24h 99.82 % · 7d 99.90 % · 30d —" for `checks`, from their results.
    async fn availability(&self, key: &str, checks: &[mdd_core::spec::Check]) -> String {
        if let Some((at, text)) = self
            .availability
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            && at.elapsed() < AVAILABILITY_FRESH
        {
            return text.clone();
        }
        let refs: Vec<&mdd_core::spec::Check> = checks.iter().collect();
        let text = crate::view::availability(&self.shared.store, &refs, now_ms())
            .await
            .into_iter()
            .map(|(window, share)| format!("{window} {}", crate::view::percent(share)))
            .collect::<Vec<_>>()
            .join(" · ");
        let mut cache = self.availability.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key.to_string(), (std::time::Instant::now(), text.clone()));
        text
    }
}

#[derive(Clone)]
struct Session {
    /// The token signed in with: the session ends when it is revoked or expires.
    token_id: String,
    role: Role,
    /// The name of the token signed in with: the creator of what this session writes.
    name: String,
    expires_at: i64,
    /// Sent back with every form that writes: a page on another site cannot know it.
    csrf: String,
}

/// Who is reading, and what they may do.
#[derive(Clone, Default)]
pub struct Viewer {
    pub role: Option<Role>,
    /// Who, for what they write: the token's name.
    pub name: String,
    /// The session's form token, when signed in with a session (not a bearer token).
    pub csrf: Option<String>,
}

impl Viewer {
    pub fn can_write(&self) -> bool {
        self.role.is_some_and(|r| r.allows(Role::Admin))
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let state = Dashboard {
        shared,
        sessions: Arc::new(Mutex::new(HashMap::new())),
        sessions_seen: Arc::default(),
        drawing: Arc::new(tokio::sync::Semaphore::new((cores / 2).max(1))),
        availability: Arc::default(),
    };
    Router::new()
        .route("/", get(overview))
        .route("/deployments/{name}", get(deployment))
        .route("/checks/{name}", get(check))
        .route("/checks/{name}/run", post(run_now))
        .route("/checks/{name}/silence", post(silence_check))
        .route("/silences/{id}/end", post(end_silence))
        .route("/entities", get(entities))
        .route("/events", get(events))
        .route("/docs", get(docs))
        .route("/report", get(report))
        .route("/handlers", get(handlers))
        .route("/static/docs.css", get(docs_stylesheet))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/static/mdd.css", get(stylesheet))
        .route("/static/live.js", get(script))
        .route("/static/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            sessions_read_through,
        ))
        .with_state(state)
}

/// Before a page sees the request: drops the cached sessions if one ended anywhere, and reads
/// the request's session from the store when it is not cached (made through another server).
async fn sessions_read_through(
    AxumState(dash): AxumState<Dashboard>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let generation = dash.shared.sessions_generation();
    if dash
        .sessions_seen
        .swap(generation, std::sync::atomic::Ordering::Relaxed)
        != generation
    {
        dash.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
    if let Some(id) = session_cookie(request.headers()).map(str::to_string) {
        let cached = dash
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id);
        if !cached {
            match dash.shared.store.session(&crate::auth::hash(&id)).await {
                Ok(Some(stored)) => {
                    if let Some(role) = Role::parse(&stored.role) {
                        dash.sessions
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(
                                id,
                                Session {
                                    token_id: stored.token_id,
                                    role,
                                    name: stored.name,
                                    expires_at: stored.expires_at,
                                    csrf: stored.csrf,
                                },
                            );
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot read a dashboard session: {e}"),
            }
        }
    }
    next.run(request).await
}

impl Dashboard {
    /// The role of whoever asks: a session cookie, a bearer token, or anyone with --public-read.
    fn reader(&self, headers: &HeaderMap) -> Option<Role> {
        self.viewer(headers).role
    }

    fn viewer(&self, headers: &HeaderMap) -> Viewer {
        if let Some(id) = session_cookie(headers) {
            let now = now_ms();
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let shared = &self.shared;
            sessions.retain(|_, session| {
                session.expires_at > now && shared.token_exists(&session.token_id)
            });
            if let Some(session) = sessions.get(id) {
                return Viewer {
                    role: Some(session.role),
                    name: session.name.clone(),
                    csrf: Some(session.csrf.clone()),
                };
            }
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let now = now_ms();
        if let Some(token) = bearer
            .and_then(|secret| self.shared.token(secret.trim()))
            .filter(|t| !t.expired(now) && t.role != Role::Enroll)
        {
            return Viewer {
                role: Some(token.role),
                name: token.name,
                csrf: None,
            };
        }
        Viewer {
            role: self.shared.config.public_read.then_some(Role::Read),
            name: String::new(),
            csrf: None,
        }
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// A page with the dashboard's security headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn render(page: Result<String, askama::Error>) -> Response {
    match page {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => {
            tracing::error!("cannot render a dashboard page: {e}");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>mdd</title><p>This page could not be drawn; the server log says why.</p>".into(),
            )
        }
    }
}

fn not_found(what: &str) -> Response {
    render(pages::message("Not found", what)).with_status(StatusCode::NOT_FOUND)
}

trait WithStatus {
    fn with_status(self, status: StatusCode) -> Response;
}

impl WithStatus for Response {
    fn with_status(mut self, status: StatusCode) -> Response {
        *self.status_mut() = status;
        self
    }
}

/// Sends a reader without access to the sign-in page, remembering where they were going.
fn sign_in_first(path: &str) -> Response {
    let target = format!("/login?next={}", pages::encode(path));
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

macro_rules! require_reader {
    ($dash:expr, $headers:expr, $path:expr) => {
        if $dash.reader(&$headers).is_none() {
            return sign_in_first(&$path);
        }
    };
}

/// How long a page may be answered "not modified" while nothing it shows changed: times it
/// shows (ages, settle countdowns, staleness) move on their own.
const FRESH_FOR_MS: i64 = 15_000;

/// A page's version for this viewer: what the server shows, the time bucket, and the viewer's
/// session (a page carries its form token). A browser that has it is told "not modified".
fn etag(dash: &Dashboard, headers: &HeaderMap) -> String {
    let viewer = dash.viewer(headers);
    let session = viewer.csrf.as_deref().unwrap_or("-");
    format!(
        "\"{}-{}-{}\"",
        dash.shared.version(),
        now_ms() / FRESH_FOR_MS,
        &session[..session.len().min(12)]
    )
}

/// Draws a page off the async workers (a page of 50,000 checks takes a while; ingestion and
/// the API must not wait for it), unless the browser already has this version of it.
async fn page(
    dash: &Dashboard,
    headers: &HeaderMap,
    draw: impl FnOnce(&Shared) -> Response + Send + 'static,
) -> Response {
    // Drawn from the events as stored, whichever server folded them: read before the tag,
    // which moves with what was read.
    dash.shared.catch_up_events_or_say().await;
    let tag = etag(dash, headers);
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == tag);
    let mut response = if known {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let shared = Arc::clone(&dash.shared);
        let Ok(_turn) = dash.drawing.acquire().await else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        match tokio::task::spawn_blocking(move || draw(&shared)).await {
            Ok(response) => response,
            Err(e) => {
                tracing::error!("drawing a page failed: {e}");
                render(pages::message("Not drawn", "This page could not be drawn."))
                    .with_status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    };
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

async fn overview(AxumState(dash): AxumState<Dashboard>, headers: HeaderMap) -> Response {
    require_reader!(dash, headers, "/");
    page(&dash, &headers, |shared| render(pages::overview(shared))).await
}

async fn deployment(
    AxumState(dash): AxumState<Dashboard>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    require_reader!(dash, headers, format!("/deployments/{name}"));
    let selected: Vec<mdd_core::spec::Check> = {
        let checks = dash.shared.checks();
        checks
            .spec
            .deployments
            .iter()
            .find(|d| d.name == name)
            .map(|d| crate::deployments::selected(&checks, d).cloned().collect())
            .unwrap_or_default()
    };
    let availability = dash
        .availability(&format!("deployment/{name}"), &selected)
        .await;
    page(&dash, &headers, move |shared| {
        match pages::deployment(shared, &name, availability) {
            Some(page) => render(page),
            None => not_found(&format!(
                "There is no deployment `{name}` in the applied spec."
            )),
        }
    })
    .await
}

async fn check(
    AxumState(dash): AxumState<Dashboard>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    require_reader!(dash, headers, format!("/checks/{name}"));
    let viewer = dash.viewer(&headers);
    let config = dash.shared.checks().get(&name).cloned();
    let availability = match &config {
        Some(check) => {
            dash.availability(&format!("check/{name}"), std::slice::from_ref(check))
                .await
        }
        None => String::new(),
    };
    dash.shared.catch_up_events_or_say().await;
    match pages::check(&dash.shared, &name, &viewer, availability).await {
        Some(page) => render(page),
        None => not_found(&format!("There is no check `{name}` in the applied spec.")),
    }
}

/// "Run now": a write, so it needs write rights and, with a session cookie (which a browser
/// sends along with requests other sites make), the session's form token and a same-origin
/// request. A bearer token is not sent by browsers on their own, so it needs neither.
/// The checks every dashboard write makes: write rights and, with a session cookie (which a
/// browser sends along with requests other sites make), the session's form token and a
/// same-origin request. A bearer token is not sent by browsers on their own: it needs neither.
#[allow(clippy::result_large_err)]
fn writer(dash: &Dashboard, headers: &HeaderMap, body: &[u8]) -> Result<Viewer, Response> {
    let viewer = dash.viewer(headers);
    if !viewer.can_write() {
        return Err(render(pages::message(
            "Not allowed",
            "This needs an admin token: sign in with one.",
        ))
        .with_status(StatusCode::FORBIDDEN));
    }
    if let Some(expected) = &viewer.csrf {
        let sent = form_urlencoded::parse(body)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let same_token: bool =
            subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), expected.as_bytes()).into();
        if !same_token || !same_origin(headers) {
            return Err(render(pages::message(
                "Refused",
                "This request did not come from this dashboard's own page.",
            ))
            .with_status(StatusCode::FORBIDDEN));
        }
    }
    Ok(viewer)
}

fn back_to(path: String) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&path) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// "Run now" on a check's page.
async fn run_now(
    AxumState(dash): AxumState<Dashboard>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(refused) = writer(&dash, &headers, &body) {
        return refused;
    }
    let checks = dash.shared.checks();
    let Some(check) = checks.get(&name).filter(|c| crate::scheduler::runs_here(c)) else {
        return not_found(&format!(
            "There is no check `{name}` that this server runs itself."
        ));
    };
    if let Err(e) = crate::scheduler::run_now(&dash.shared, check).await {
        return render(pages::message("Not stored", &e))
            .with_status(StatusCode::SERVICE_UNAVAILABLE);
    }
    back_to(format!("/checks/{}", pages::encode(&name)))
}

/// "Silence" on a check's page: a reason and how long (or until it passes again).
async fn silence_check(
    AxumState(dash): AxumState<Dashboard>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let viewer = match writer(&dash, &headers, &body) {
        Ok(viewer) => viewer,
        Err(refused) => return refused,
    };
    if dash.shared.checks().get(&name).is_none() {
        return not_found(&format!("There is no check `{name}` in the applied spec."));
    }
    let (mut reason, mut duration) = (String::new(), String::new());
    for (key, value) in form_urlencoded::parse(&body) {
        match key.as_ref() {
            "reason" => reason = value.trim().chars().take(1024).collect(),
            "for" => duration = value.into_owned(),
            _ => {}
        }
    }
    let now = now_ms();
    let (expires_at, until_resolved) = if duration == "until-resolved" {
        (None, true)
    } else {
        match mdd_core::parse_duration(&duration) {
            Ok(d) => (
                Some(now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
                false,
            ),
            Err(e) => {
                return render(pages::message("Not silenced", &format!("for: {e}")))
                    .with_status(StatusCode::BAD_REQUEST);
            }
        }
    };
    let silence = mdd_core::silence::Silence {
        id: uuid::Uuid::now_v7().to_string(),
        check: Some(name.clone()),
        entity: None,
        labels: Default::default(),
        owner: None,
        reason,
        creator: viewer.name,
        starts_at: now,
        expires_at,
        until_resolved,
    };
    if let Err(e) = crate::silences::add(&dash.shared, silence).await {
        return render(pages::message("Not silenced", &e.to_string()))
            .with_status(StatusCode::BAD_REQUEST);
    }
    back_to(format!("/checks/{}", pages::encode(&name)))
}

/// "End" on a silence shown on a check's page.
async fn end_silence(
    AxumState(dash): AxumState<Dashboard>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(refused) = writer(&dash, &headers, &body) {
        return refused;
    }
    let back = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "back")
        .map(|(_, v)| v.into_owned())
        .filter(|b| b.starts_with("/checks/"))
        .unwrap_or_else(|| "/".to_string());
    match crate::silences::end(&dash.shared, &id).await {
        Ok(true) => back_to(back),
        Ok(false) => not_found("That silence has already ended."),
        Err(e) => render(pages::message("Not ended", &e.to_string()))
            .with_status(StatusCode::SERVICE_UNAVAILABLE),
    }
}

/// Whether the browser says the request comes from a page of this server (Origin, or failing
/// that Referer, naming the Host it was sent to). Browsers always send one of them on a POST.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    origin.is_some_and(|o| {
        let rest = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
            .unwrap_or("");
        rest.split('/').next() == Some(host)
    })
}

async fn entities(AxumState(dash): AxumState<Dashboard>, headers: HeaderMap) -> Response {
    require_reader!(dash, headers, "/entities");
    dash.shared.catch_up_events_or_say().await;
    render(pages::entities(&dash.shared).await)
}

async fn events(
    AxumState(dash): AxumState<Dashboard>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let path = match &query {
        Some(q) => format!("/events?{q}"),
        None => "/events".to_string(),
    };
    require_reader!(dash, headers, path);
    page(&dash, &headers, move |shared| {
        render(pages::events(shared, query.as_deref().unwrap_or("")))
    })
    .await
}

async fn docs(AxumState(dash): AxumState<Dashboard>, headers: HeaderMap) -> Response {
    require_reader!(dash, headers, "/docs");
    page(&dash, &headers, |shared| {
        html(StatusCode::OK, pages::docs(shared))
    })
    .await
}

async fn report(AxumState(dash): AxumState<Dashboard>, headers: HeaderMap) -> Response {
    require_reader!(dash, headers, "/report");
    render(pages::report(&dash.shared).await)
}

async fn handlers(AxumState(dash): AxumState<Dashboard>, headers: HeaderMap) -> Response {
    require_reader!(dash, headers, "/handlers");
    // Deliveries are not a change of what the other pages show: this one is always drawn.
    let shared = Arc::clone(&dash.shared);
    match tokio::task::spawn_blocking(move || render(pages::handlers(&shared))).await {
        Ok(response) => response,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn login_form(RawQuery(query): RawQuery) -> Response {
    let next = next_from(query.as_deref().unwrap_or(""));
    render(pages::login(&next, None))
}

/// Where to go after signing in: only a path on this server, never another site.
fn next_from(query: &str) -> String {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .filter(|v| is_local_path(v))
        .unwrap_or_else(|| "/".to_string())
}

/// A path on this server, as a browser will read it in a `Location`: one leading `/` not
/// followed by another or by `\`, and only visible ASCII. Browsers drop tabs and new lines
/// from URLs (`/<TAB>/evil.example` becomes `//evil.example`, another site) and read `\` as
/// `/`, so any of those makes it not a local path.
fn is_local_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && bytes.iter().all(|b| b.is_ascii_graphic() && *b != b'\\')
}

async fn login(AxumState(dash): AxumState<Dashboard>, body: Bytes) -> Response {
    let mut token = String::new();
    let mut next = "/".to_string();
    for (key, value) in form_urlencoded::parse(&body) {
        match key.as_ref() {
            "token" => token = value.trim().to_string(),
            "next" => next = next_from(&format!("next={}", pages::encode(&value))),
            _ => {}
        }
    }
    let now = now_ms();
    let Some(entry) = dash
        .shared
        .token(&token)
        .filter(|t| !t.expired(now) && t.role != Role::Enroll)
    else {
        return render(pages::login(&next, Some("That token is not valid.")))
            .with_status(StatusCode::UNAUTHORIZED);
    };
    let mut id = [0u8; 32];
    let mut csrf = [0u8; 32];
    if getrandom::fill(&mut id).is_err() || getrandom::fill(&mut csrf).is_err() {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            "<!doctype html><title>mdd</title><p>No randomness for a session; try again.</p>"
                .into(),
        );
    }
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let id = hex(&id);
    let session = Session {
        token_id: entry.id.clone(),
        role: entry.role,
        name: entry.name.clone(),
        expires_at: now + SESSION_MS,
        csrf: hex(&csrf),
    };
    let stored = mdd_storage::SessionRecord {
        id_hash: crate::auth::hash(&id).to_vec(),
        token_id: session.token_id.clone(),
        role: session.role.as_str().to_string(),
        name: session.name.clone(),
        csrf: session.csrf.clone(),
        expires_at: session.expires_at,
    };
    // Stored before the cookie is given: whichever server the next request reaches knows it.
    if let Err(e) = dash.shared.store.save_session(&stored, now).await {
        tracing::warn!("cannot store a dashboard session: {e}");
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            "<!doctype html><title>mdd</title><p>The session could not be stored; try again.</p>"
                .into(),
        );
    }
    dash.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), session);
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_MS / 1000
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let (Ok(cookie), Ok(location)) =
        (HeaderValue::from_str(&cookie), HeaderValue::from_str(&next))
    {
        headers.insert(header::SET_COOKIE, cookie);
        headers.insert(header::LOCATION, location);
    }
    response
}

async fn logout(AxumState(dash): AxumState<Dashboard>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        // Ended in the store first: every server drops it from its cache when it sees that.
        if let Err(e) = dash
            .shared
            .store
            .delete_session(&crate::auth::hash(id))
            .await
        {
            tracing::warn!("cannot end a dashboard session in the store: {e}");
        }
        dash.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/login"));
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("mdd_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

async fn stylesheet() -> Response {
    static_file(
        "text/css; charset=utf-8",
        include_str!("../../static/mdd.css"),
    )
}

async fn script() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../static/live.js"),
    )
}

async fn docs_stylesheet() -> Response {
    static_file("text/css; charset=utf-8", mdd_docs::STYLESHEET)
}

async fn favicon() -> Response {
    static_file("image/svg+xml", include_str!("../../static/favicon.svg"))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_on_this_server_are_followed_after_sign_in() {
        for (next, expected) in [
            ("/deployments/ams1", "/deployments/ams1"),
            ("/events?state=failing", "/events?state=failing"),
            ("/%09/evil.example/x", "/%09/evil.example/x"), // still encoded: a path here
            ("/\t/evil.example/x", "/"),
            ("//evil.example/x", "/"),
            ("/\\evil.example", "/"),
            ("\\\\evil.example", "/"),
            ("https://evil.example/", "/"),
            ("/ok\r\nSet-Cookie: x=1", "/"),
            ("/a b", "/"),
            ("", "/"),
        ] {
            let query = format!("next={}", pages::encode(next));
            assert_eq!(next_from(&query), expected, "{next:?}");
        }
    }
}
