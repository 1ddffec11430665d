//! What each page shows, worked out from the server's state into plain values for the
//! templates (which only lay them out).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use askama::Template;
use mdd_core::{State, Status};

use super::svg;
use crate::deployments::{self, Views};
use crate::view::StateResolver;
use crate::{CachedEvent, Shared, now_ms};

/// Percent-encodes text for a URL query value.
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A time a person reads in a table, to the second (UTC): changes a few seconds apart must
/// not read the same.
fn since_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A time as a person reads it in a table: how long ago ("3 min ago"), with the exact time to
/// the second on hover and in `datetime` for tools. Drawn as a `<time>` element; everything in
/// it is digits and words of ours, so it is HTML-safe as it is.
#[derive(Debug, Clone)]
pub struct When {
    iso: String,
    exact: String,
    ago: String,
}

impl When {
    pub fn at(ms: i64, now: i64) -> When {
        let iso = jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        When {
            iso,
            exact: since_text(ms),
            ago: ago(now - ms),
        }
    }
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<time datetime=\"{}\" title=\"{} UTC\">{}</time>",
            self.iso, self.exact, self.ago
        )
    }
}

impl askama::filters::HtmlSafe for When {}

/// "just now", "40 s ago", "3 min ago", "5 h ago", "2 d ago"; a time ahead (a clock off) says
/// "in 3 min".
pub fn ago(ms: i64) -> String {
    let (seconds, ahead) = if ms < 0 {
        (ms.unsigned_abs() / 1000, true)
    } else {
        (ms.unsigned_abs() / 1000, false)
    };
    let amount = match seconds {
        0..=4 => return "just now".into(),
        s if s < 60 => format!("{s} s"),
        s if s < 3_600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    };
    if ahead {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A state shown by colour (CSS class) and by mark and word, never by colour alone.
#[derive(Debug, Clone)]
pub struct Badge {
    pub class: &'static str,
    pub mark: &'static str,
    pub word: &'static str,
}

impl Badge {
    fn of(state: State) -> Badge {
        Badge {
            class: mdd_docs::state_class(state),
            mark: state.mark(),
            word: state.as_str(),
        }
    }
}

pub struct StateCount {
    pub badge: Badge,
    pub count: usize,
}

fn counts_of(counts: &BTreeMap<State, usize>) -> Vec<StateCount> {
    let mut list: Vec<StateCount> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| StateCount {
            badge: Badge::of(*state),
            count: *n,
        })
        .collect();
    list.sort_by_key(|c| std::cmp::Reverse(c.badge.word == "passing"));
    list
}

#[derive(Template)]
#[template(path = "message.html")]
struct Message<'a> {
    title: &'a str,
    text: &'a str,
}

pub fn message(title: &str, text: &str) -> Result<String, askama::Error> {
    Message { title, text }.render()
}

#[derive(Template)]
#[template(path = "login.html")]
struct Login<'a> {
    next: &'a str,
    error: Option<&'a str>,
}

pub fn login(next: &str, error: Option<&str>) -> Result<String, askama::Error> {
    Login { next, error }.render()
}

pub struct DeploymentRow {
    pub name: String,
    pub href: String,
    pub description: String,
    pub green: usize,
    pub total: usize,
    pub percent: usize,
    pub phase: String,
    pub badge: Badge,
    pub counts: Vec<StateCount>,
}

pub struct Tile {
    pub label: String,
    pub href: String,
    pub badge: Badge,
    pub passing: usize,
    pub total: usize,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    checks: usize,
    passing: usize,
    totals: Vec<StateCount>,
    agents: usize,
    alive: usize,
    silences: usize,
    stale: usize,
    deployments: Vec<DeploymentRow>,
    tiles: Vec<(String, Vec<Tile>)>,
}

fn phase(summary: &deployments::Summary) -> String {
    if summary.done {
        let after = summary
            .time_to_done_ms
            .map(|ms| {
                mdd_core::format_duration(std::time::Duration::from_millis(
                    u64::try_from(ms.max(0)).unwrap_or(0),
                ))
            })
            .unwrap_or_default();
        if summary.open_regressions > 0 {
            format!("done after {after}, {} regressed", summary.open_regressions)
        } else {
            format!("done after {after}")
        }
    } else if summary.settles_at.is_some() {
        "all green, settling".to_string()
    } else {
        "in progress".to_string()
    }
}

fn deployment_row(summary: &deployments::Summary) -> DeploymentRow {
    let worst = summary
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .filter_map(|(name, _)| name.parse::<State>().ok())
        .max_by_key(|s| s.severity())
        .unwrap_or(State::Pending);
    let counts: BTreeMap<State, usize> = summary
        .counts
        .iter()
        .filter_map(|(name, n)| Some((name.parse::<State>().ok()?, *n)))
        .collect();
    DeploymentRow {
        name: summary.name.clone(),
        href: format!("/deployments/{}", encode(&summary.name)),
        description: summary.description.clone().unwrap_or_default(),
        green: summary.green,
        total: summary.total,
        percent: (summary.green * 100)
            .checked_div(summary.total)
            .unwrap_or(0),
        phase: phase(summary),
        badge: Badge::of(if summary.done && summary.open_regressions == 0 {
            State::Passing
        } else {
            worst
        }),
        counts: counts_of(&counts),
    }
}

pub fn overview(shared: &Shared) -> Result<String, askama::Error> {
    let checks = shared.checks();
    let events = shared.events_snapshot();
    let tracks = shared.deployments_snapshot();
    let now = now_ms();
    // One view for the whole page: states worked out for the totals are reused by the
    // deployments' summaries.
    let mut views = Views::new(&checks, &events, &tracks, shared.clock_at(now));
    // Checks, counted as the deployments count them (pending ones too), so a tile and its
    // deployment never disagree.
    let mut totals: BTreeMap<State, usize> = BTreeMap::new();
    // (label key, value) → (worst, passing, total) over the checks with that label.
    let mut by_label: BTreeMap<(&str, &str), (State, usize, usize)> = BTreeMap::new();
    for check in checks.checks() {
        let state = views.check_state(check);
        *totals.entry(state).or_default() += 1;
        for (key, value) in &check.labels {
            let entry =
                by_label
                    .entry((key.as_str(), value.as_str()))
                    .or_insert((State::Passing, 0, 0));
            if state.severity() > entry.0.severity() {
                entry.0 = state;
            }
            entry.1 += usize::from(state == State::Passing);
            entry.2 += 1;
        }
    }
    // Agents: alive is a keepalive event passing now.
    let (mut agents, mut alive) = (0, 0);
    for cached in events
        .values()
        .filter(|c| c.event.check == crate::keepalive::KEEPALIVE_CHECK)
    {
        agents += 1;
        alive += usize::from(views.state_of(cached, None).0 == State::Passing);
    }
    let silences = shared
        .silences_read()
        .iter()
        .filter(|s| s.is_active(now))
        .count();
    let deployments = checks
        .spec
        .deployments
        .iter()
        .map(|d| deployment_row(&views.summary(d)))
        .collect();
    let mut tiles: BTreeMap<String, Vec<Tile>> = BTreeMap::new();
    for ((key, value), (worst, passing, total)) in by_label {
        tiles.entry(key.to_string()).or_default().push(Tile {
            label: value.to_string(),
            href: format!("/events?label={}", encode(&format!("{key}={value}"))),
            badge: Badge::of(worst),
            passing,
            total,
        });
    }
    let stale = totals.get(&State::Stale).copied().unwrap_or(0);
    Overview {
        checks: checks.checks().len(),
        passing: totals.get(&State::Passing).copied().unwrap_or(0),
        totals: counts_of(&totals),
        agents,
        alive,
        silences,
        stale,
        deployments,
        // A label with very many values (a host name) is not a datacenter: leave it out.
        tiles: tiles
            .into_iter()
            .filter(|(_, values)| values.len() <= 60)
            .collect(),
    }
    .render()
}

pub struct Cell {
    pub name: String,
    pub href: String,
    pub badge: Badge,
    pub detail: String,
}

pub struct TreeRow {
    pub depth: usize,
    pub name: String,
    pub href: String,
    pub badge: Badge,
    pub note: String,
}

pub struct TimelineRow {
    pub at: When,
    pub check: String,
    pub href: String,
    pub badge: Badge,
}

#[derive(Template)]
#[template(path = "deployment.html")]
struct DeploymentPage {
    row: DeploymentRow,
    selector: String,
    settle: String,
    started: When,
    /// Share of the time its checks were OK, from their results.
    availability: String,
    owners: Vec<(String, Vec<Cell>)>,
    tree: Vec<TreeRow>,
    graph: String,
    burn_up: String,
    timeline: Vec<TimelineRow>,
    regressions: Vec<TimelineRow>,
}

pub fn deployment(
    shared: &Shared,
    name: &str,
    availability: String,
) -> Option<Result<String, askama::Error>> {
    let checks = shared.checks();
    let deployment = checks.spec.deployments.iter().find(|d| d.name == name)?;
    let now = now_ms();
    // What the page needs of the live state, taken under the locks and nothing more: the
    // drawing below runs without them, so ingestion never waits for a page.
    let agents = crate::checks::AgentSubscriptions::of(shared);
    let (detail, track) = {
        let events = shared.events_snapshot();
        let tracks = shared.deployments_snapshot();
        let mut views =
            Views::new(&checks, &events, &tracks, shared.clock_at(now)).with_agents(agents);
        (views.detail(deployment), tracks.get(name).cloned())
    };
    let track = track.as_ref();
    let check_href = |name: &str| format!("/checks/{}", encode(name));
    let state_of = |text: &str| text.parse::<State>().unwrap_or(State::Unknown);

    let mut owners: BTreeMap<String, Vec<Cell>> = BTreeMap::new();
    for c in &detail.checks {
        let state = state_of(c.state);
        owners
            .entry(c.owner.clone().unwrap_or_else(|| "(no owner)".into()))
            .or_default()
            .push(Cell {
                name: c.name.clone(),
                href: check_href(&c.name),
                badge: Badge::of(state),
                detail: if state == State::Blocked {
                    format!("blocked by {}", c.blocked_by.join(", "))
                } else {
                    c.output.lines().next().unwrap_or_default().to_string()
                },
            });
    }

    // The dependency tree: each check under the first of its dependencies in this deployment.
    let selected: BTreeSet<&str> = detail.checks.iter().map(|c| c.name.as_str()).collect();
    let parent = |c: &deployments::CheckProgress| {
        c.depends_on
            .iter()
            .find(|d| selected.contains(d.as_str()))
            .cloned()
    };
    // Each check's children, worked out once: looking them up per check was quadratic (2 s
    // at 4,000 checks, 20 s at 10,000).
    let mut children: HashMap<String, Vec<&deployments::CheckProgress>> = HashMap::new();
    for c in &detail.checks {
        if let Some(p) = parent(c) {
            children.entry(p).or_default().push(c);
        }
    }
    let mut tree = Vec::new();
    let mut stack: Vec<(usize, &deployments::CheckProgress)> = detail
        .checks
        .iter()
        .filter(|c| parent(c).is_none())
        .rev()
        .map(|c| (0, c))
        .collect();
    while let Some((depth, c)) = stack.pop() {
        let state = state_of(c.state);
        tree.push(TreeRow {
            depth: depth.min(8),
            name: c.name.clone(),
            href: check_href(&c.name),
            badge: Badge::of(state),
            note: c
                .time_to_green_ms
                .map(|ms| {
                    format!(
                        "green after {}",
                        mdd_core::format_duration(std::time::Duration::from_millis(
                            u64::try_from(ms).unwrap_or(0)
                        ))
                    )
                })
                .unwrap_or_default(),
        });
        if depth < 32
            && let Some(kids) = children.get(&c.name)
        {
            for child in kids.iter().rev() {
                stack.push((depth + 1, child));
            }
        }
    }

    // The same graph as the living document's, of this deployment's checks, coloured live.
    let sub_spec = mdd_core::Spec {
        checks: deployments::selected(&checks, deployment)
            .cloned()
            .collect(),
        deployments: Vec::new(),
        handlers: Vec::new(),
    };
    let live: BTreeMap<String, mdd_docs::Live> = detail
        .checks
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                mdd_docs::Live {
                    state: state_of(c.state),
                    since: None,
                },
            )
        })
        .collect();
    let graph = if sub_spec.checks.iter().any(|c| !c.depends_on.is_empty()) {
        mdd_docs::Document::new(&sub_spec, Some(&live), None)
            .dependency_graph(&|name| format!("/checks/{}", encode(name)))
    } else {
        String::new()
    };

    let started_at = track.map_or(now, |t| t.started_at);
    let mut green = 0usize;
    let mut points = Vec::new();
    let mut transitions: Vec<&mdd_core::deployment::Transition> = track
        .map(|t| t.timeline.iter().collect())
        .unwrap_or_default();
    transitions.sort_by_key(|t| t.at);
    for t in &transitions {
        green = if t.passing {
            green + 1
        } else {
            green.saturating_sub(1)
        };
        points.push((t.at.max(started_at), green.min(detail.summary.total)));
    }
    let moments = svg::Moments {
        done_at: track.and_then(|t| t.done_at),
        settle_ms: i64::try_from(deployment.settle.as_millis()).unwrap_or(i64::MAX),
        regressions: track
            .map(|t| t.regressions.iter().map(|r| r.at).collect())
            .unwrap_or_default(),
    };
    let burn_up = svg::burn_up(
        &points,
        detail.summary.total,
        started_at,
        now.max(started_at + 1),
        &moments,
    );
    let timeline = transitions
        .iter()
        .rev()
        .take(200)
        .map(|t| TimelineRow {
            at: When::at(t.at, now),
            check: t.check.clone(),
            href: check_href(&t.check),
            badge: Badge::of(if t.passing {
                State::Passing
            } else {
                State::Failing
            }),
        })
        .collect();
    let regressions = track
        .map(|t| {
            t.open_regressions()
                .map(|r| TimelineRow {
                    at: When::at(r.at, now),
                    check: r.check.clone(),
                    href: check_href(&r.check),
                    badge: Badge::of(State::Failing),
                })
                .collect()
        })
        .unwrap_or_default();
    let selector = if deployment.selector.is_empty() {
        "every check".to_string()
    } else {
        deployment
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(
        DeploymentPage {
            row: deployment_row(&detail.summary),
            selector,
            settle: mdd_core::format_duration(deployment.settle),
            started: When::at(started_at, now),
            availability,
            owners: owners.into_iter().collect(),
            tree,
            graph,
            burn_up,
            timeline,
            regressions,
        }
        .render(),
    )
}

pub struct EntityEvent {
    pub entity: String,
    pub badge: Badge,
    pub since: When,
    pub output: String,
    pub strip: Vec<(Badge, String)>,
}

#[derive(Template)]
#[template(path = "check.html")]
struct CheckPage {
    name: String,
    description: String,
    owner: String,
    runbook: String,
    kind: &'static str,
    target: String,
    labels: Vec<(String, String)>,
    depends_on: Vec<(String, String)>,
    dependents: Vec<(String, String)>,
    deployments: Vec<(String, String)>,
    badge: Badge,
    entities: Vec<EntityEvent>,
    /// For a check with no result at all: why, and since when.
    no_result: String,
    charts: Vec<String>,
    changes: Vec<(When, String, Badge)>,
    availability: String,
    /// Where the check runs, in words; and whether this viewer may run it now.
    runs: String,
    can_run: bool,
    csrf: String,
    run_href: String,
    /// The viewer may silence and end silences.
    can_write: bool,
    silence_href: String,
    silences: Vec<SilenceRow>,
}

pub struct SilenceRow {
    pub reason: String,
    pub creator: String,
    pub until: String,
    pub end_href: String,
}

pub async fn check(
    shared: &Shared,
    name: &str,
    viewer: &super::Viewer,
    availability: String,
) -> Option<Result<String, askama::Error>> {
    let checks = shared.checks();
    let config = checks.get(name)?.clone();
    let now = now_ms();
    let (badge, entities, no_result, derived) = {
        let events = shared.events_read();
        let mut resolver = StateResolver::new(&checks, &events, shared.clock_at(now));
        let absent = resolver.absent(&config);
        let mut worst = absent.state;
        let mut list = Vec::new();
        // Each entity's state now and since when: the last changes end with it.
        let mut derived: Vec<(i64, String, State)> = Vec::new();
        let mine: Vec<&CachedEvent> = events
            .range((config.name.clone(), String::new())..)
            .take_while(|((c, _), _)| *c == config.name)
            .map(|(_, e)| &**e)
            .collect();
        for (i, cached) in mine.iter().enumerate() {
            let resolved = resolver.resolve(cached, Some(&config));
            let (state, blockers) = (resolved.state, resolved.blocked_by);
            if i == 0 || state.severity() > worst.severity() {
                worst = state;
            }
            derived.push((resolved.since, cached.event.entity.clone(), state));
            list.push(EntityEvent {
                entity: cached.event.entity.clone(),
                badge: Badge::of(state),
                since: When::at(resolved.since, now),
                output: if state == State::Blocked {
                    format!("blocked by {}", blockers.join(", "))
                } else {
                    cached.summary.clone()
                },
                strip: cached
                    .event
                    .history
                    .iter()
                    .map(|h| (Badge::of(h.status.state()), svg::short_time(h.executed_at)))
                    .collect(),
            });
        }
        let no_result = if list.is_empty() && absent.state == State::Blocked {
            format!(
                "No result yet: blocked by {} since {} UTC (it is looked at once that passes).",
                absent.blocked_by.join(", "),
                since_text(absent.since)
            )
        } else if list.is_empty() {
            let reason = crate::checks::AgentSubscriptions::of(shared).why_no_result(&config);
            format!(
                "No result yet: {reason} ({} since {} UTC).",
                absent.state.as_str(),
                since_text(absent.since)
            )
        } else {
            String::new()
        };
        (Badge::of(worst), list, no_result, derived)
    };

    // The last day of results: perfdata over time, and the changes of status.
    let results = shared
        .store
        .results(&config.name, None, now - 24 * 3600 * 1000, now, 2000)
        .await
        .unwrap_or_default();
    // label → (unit, points, the latest warning and critical thresholds given).
    #[allow(clippy::type_complexity)]
    let mut series: BTreeMap<String, (String, Vec<(i64, f64)>, Option<f64>, Option<f64>)> =
        BTreeMap::new();
    let mut changes = Vec::new();
    let mut last: BTreeMap<&str, Status> = BTreeMap::new();
    for result in results.iter().rev() {
        for datum in &result.perfdata {
            // `U` (no value) leaves a gap rather than a made-up point.
            let Some(value) = datum.value else { continue };
            if series.len() < 6 || series.contains_key(&datum.label) {
                let entry = series
                    .entry(datum.label.clone())
                    .or_insert_with(|| (datum.uom.clone(), Vec::new(), None, None));
                entry.1.push((result.executed_at, value));
                // A range's line is where it ends (or starts, for `10:`).
                let line = |r: &mdd_core::threshold::Range| r.end.or(r.start);
                if let Some(w) = datum.warn.as_ref().and_then(line) {
                    entry.2 = Some(w);
                }
                if let Some(c) = datum.crit.as_ref().and_then(line) {
                    entry.3 = Some(c);
                }
            }
        }
        if last.get(result.entity.as_str()) != Some(&result.status) {
            changes.push((
                When::at(result.executed_at, now),
                result.entity.clone(),
                Badge::of(result.status.state()),
            ));
        }
        last.insert(&result.entity, result.status);
    }
    changes.reverse();
    // What results said is not all: an entity blocked, stale, silenced or flapping now shows
    // that as its latest change, so the list ends where the header is.
    for (since, entity, state) in derived.into_iter().rev() {
        let latest = changes.iter().find(|(_, e, _)| *e == entity);
        if latest.is_none_or(|(_, _, badge)| badge.word != state.as_str()) {
            changes.insert(0, (When::at(since, now), entity, Badge::of(state)));
        }
    }
    changes.truncate(20);
    let charts = series
        .iter()
        .map(|(label, (unit, points, warn, crit))| svg::series(label, unit, points, *warn, *crit))
        .collect();
    let link = |n: &str| (n.to_string(), format!("/checks/{}", encode(n)));
    Some(
        CheckPage {
            name: config.name.clone(),
            description: config.description.clone().unwrap_or_default(),
            owner: config.owner.clone().unwrap_or_default(),
            runbook: config
                .runbook
                .clone()
                .filter(|r| r.starts_with("https://") || r.starts_with("http://"))
                .unwrap_or_default(),
            kind: config.probe.kind(),
            target: config.probe.target(),
            labels: config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            depends_on: config.depends_on.iter().map(|d| link(d)).collect(),
            dependents: checks
                .checks()
                .iter()
                .filter(|c| c.depends_on.contains(&config.name))
                .map(|c| link(&c.name))
                .collect(),
            deployments: checks
                .spec
                .deployments
                .iter()
                .filter(|d| config.matches_labels(&d.selector))
                .map(|d| (d.name.clone(), format!("/deployments/{}", encode(&d.name))))
                .collect(),
            badge,
            entities,
            no_result,
            charts,
            changes,
            availability,
            runs: if config.is_push_only() {
                "reported from outside (mdd result, a cron job)".to_string()
            } else if config.subscriptions.is_empty() {
                format!(
                    "every {} on this server",
                    mdd_core::format_duration(config.interval)
                )
            } else {
                format!(
                    "every {} on agents subscribed to {}",
                    mdd_core::format_duration(config.interval),
                    config.subscriptions.join(", ")
                )
            },
            can_write: viewer.can_write(),
            silence_href: format!("/checks/{}/silence", encode(&config.name)),
            silences: {
                let silences = shared.silences_read();
                silences
                    .iter()
                    .filter(|s| {
                        s.is_active(now)
                            && s.check.as_deref().is_none_or(|c| c == config.name)
                            && s.owner
                                .as_deref()
                                .is_none_or(|o| config.owner.as_deref() == Some(o))
                            && s.labels
                                .iter()
                                .all(|(k, v)| config.labels.get(k) == Some(v))
                    })
                    .map(|s| SilenceRow {
                        reason: s.reason.clone(),
                        creator: s.creator.clone(),
                        until: match s.expires_at {
                            Some(at) => format!("until {} UTC", since_text(at)),
                            None => "until it passes again".to_string(),
                        },
                        end_href: format!("/silences/{}/end", encode(&s.id)),
                    })
                    .collect()
            },
            can_run: viewer.can_write() && crate::scheduler::runs_here(&config),
            csrf: viewer.csrf.clone().unwrap_or_default(),
            run_href: format!("/checks/{}/run", encode(&config.name)),
        }
        .render(),
    )
}

pub struct EntityRow {
    pub name: String,
    pub badge: Badge,
    pub last_seen: When,
    pub last_keepalive: Option<When>,
    pub subscriptions: String,
    pub labels: String,
    pub facts: String,
}

#[derive(Template)]
#[template(path = "entities.html")]
struct EntitiesPage {
    entities: Vec<EntityRow>,
}

pub async fn entities(shared: &Shared) -> Result<String, askama::Error> {
    let records = shared.store.entities().await.unwrap_or_default();
    let events = shared.events_snapshot();
    let now = now_ms();
    let rows = records
        .into_iter()
        .map(|e| {
            let info: serde_json::Value = e
                .info
                .as_deref()
                .and_then(|i| serde_json::from_str(i).ok())
                .unwrap_or_default();
            let keepalive = events
                .get(&(
                    crate::keepalive::KEEPALIVE_CHECK.to_string(),
                    e.name.clone(),
                ))
                .map(|k| k.event.own_state(now, None, shared.outage));
            let join = |v: &serde_json::Value| {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let labels = info["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let facts = &info["facts"];
            let facts = [
                facts["hostname"].as_str().unwrap_or_default().to_string(),
                format!(
                    "{} {}",
                    facts["os"].as_str().unwrap_or_default(),
                    facts["arch"].as_str().unwrap_or_default()
                ),
                facts["agent_version"]
                    .as_str()
                    .map(|v| format!("agent {v}"))
                    .unwrap_or_default(),
                join(&facts["addresses"]),
            ]
            .into_iter()
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect::<Vec<_>>()
            .join(" · ");
            EntityRow {
                name: e.name,
                badge: Badge::of(keepalive.unwrap_or(State::Passing)),
                last_seen: When::at(e.last_seen, now),
                last_keepalive: e.last_keepalive.map(|at| When::at(at, now)),
                subscriptions: join(&info["subscriptions"]),
                labels,
                facts,
            }
        })
        .collect();
    EntitiesPage { entities: rows }.render()
}

pub struct EventRow {
    /// The reasons of the silences over it, if any.
    pub silenced: String,
    pub check: String,
    pub href: String,
    pub entity: String,
    pub owner: String,
    pub badge: Badge,
    pub since: When,
    pub output: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    rows: Vec<EventRow>,
    /// Where this page starts and ends (1-based) among the `shown` events that match.
    first: usize,
    last: usize,
    shown: usize,
    /// Links to the pages before and after (empty when there is none).
    previous: String,
    next: String,
    total: usize,
    state: String,
    owner: String,
    label: String,
    text: String,
    states: Vec<&'static str>,
}

/// Rows of the events page per page: a page of 10,000 events would take seconds to draw.
const EVENTS_PER_PAGE: usize = 500;

pub fn events(shared: &Shared, query: &str) -> Result<String, askama::Error> {
    let (mut state, mut owner, mut label, mut text) =
        (String::new(), String::new(), String::new(), String::new());
    let mut page = 1usize;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "state" => state = value.into_owned(),
            "owner" => owner = value.into_owned(),
            "label" => label = value.into_owned(),
            "q" => text = value.into_owned(),
            "page" => page = value.parse().unwrap_or(1).max(1),
            _ => {}
        }
    }
    let selector: BTreeMap<String, String> = label
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let needle = text.to_lowercase();
    let checks = shared.checks();
    let events = shared.events_snapshot();
    let silences = shared.silences_read();
    let now = now_ms();
    let mut resolver = StateResolver::new(&checks, &events, shared.clock_at(now));
    let agents = crate::checks::AgentSubscriptions::of(shared);
    let wanted = |check: Option<&mdd_core::Check>, event_state: State| {
        let event_owner = check.and_then(|c| c.owner.as_deref()).unwrap_or_default();
        (state.is_empty() || event_state.as_str() == state)
            && (owner.is_empty() || event_owner == owner)
            && (selector.is_empty() || check.is_some_and(|c| c.matches_labels(&selector)))
    };
    let matches_text = |check: &str, entity: &str, output: &str| {
        needle.is_empty()
            || format!("{check} {entity} {output}")
                .to_lowercase()
                .contains(&needle)
    };
    // Everything that matches, as (state, check, entity, output, since): sorted worst first
    // before a page is cut from it, so a failing event is never left off for a passing one.
    let mut matching: Vec<(State, &str, &str, String, i64)> = Vec::new();
    let mut total = 0;
    for cached in events.values() {
        let config = checks.get(&cached.event.check);
        if config.is_none() && cached.event.check != crate::keepalive::KEEPALIVE_CHECK {
            continue;
        }
        total += 1;
        let resolved = resolver.resolve(cached, config);
        if !wanted(config, resolved.state) {
            continue;
        }
        let output = if resolved.state == State::Blocked {
            format!("blocked by {}", resolved.blocked_by.join(", "))
        } else {
            cached.summary.clone()
        };
        if !matches_text(&cached.event.check, &cached.event.entity, &output) {
            continue;
        }
        matching.push((
            resolved.state,
            &cached.event.check,
            &cached.event.entity,
            output,
            resolved.since,
        ));
    }
    // Checks that never reported are on the page too, as in the API.
    for check in checks.checks() {
        let has_event = events
            .range((check.name.clone(), String::new())..)
            .next()
            .is_some_and(|((c, _), _)| *c == check.name);
        if has_event {
            continue;
        }
        total += 1;
        let resolved = resolver.absent(check);
        let output = format!("no result yet: {}", agents.why_no_result(check));
        if wanted(Some(check), resolved.state) && matches_text(&check.name, "", &output) {
            matching.push((resolved.state, &check.name, "", output, resolved.since));
        }
    }
    matching.sort_by(|a, b| {
        b.0.severity()
            .cmp(&a.0.severity())
            .then_with(|| a.1.cmp(b.1))
            .then_with(|| a.2.cmp(b.2))
    });
    let shown = matching.len();
    let pages = shown.div_ceil(EVENTS_PER_PAGE).max(1);
    let page = page.min(pages);
    let first = (page - 1) * EVENTS_PER_PAGE;
    let rows: Vec<EventRow> = matching
        .into_iter()
        .skip(first)
        .take(EVENTS_PER_PAGE)
        .map(|(event_state, check, entity, output, since)| {
            let target = crate::silences::target(&checks, check, entity);
            let silenced = silences
                .iter()
                .filter(|s| s.is_active(now) && s.matches(&target))
                .map(|s| s.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            EventRow {
                silenced,
                check: check.to_string(),
                href: format!("/checks/{}", encode(check)),
                entity: entity.to_string(),
                owner: checks
                    .get(check)
                    .and_then(|c| c.owner.clone())
                    .unwrap_or_default(),
                badge: Badge::of(event_state),
                since: When::at(since, now),
                output,
            }
        })
        .collect();
    // The page is drawn without the locks.
    drop(silences);
    drop(events);
    let link = |to: usize| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("state", &state),
            ("owner", &owner),
            ("label", &label),
            ("q", &text),
        ] {
            if !value.is_empty() {
                query.append_pair(key, value);
            }
        }
        query.append_pair("page", &to.to_string());
        format!("/events?{}", query.finish())
    };
    EventsPage {
        first: if rows.is_empty() { 0 } else { first + 1 },
        last: first + rows.len(),
        shown,
        previous: if page > 1 {
            link(page - 1)
        } else {
            String::new()
        },
        next: if page < pages {
            link(page + 1)
        } else {
            String::new()
        },
        rows,
        total,
        state,
        owner,
        label,
        text,
        states: State::ALL.iter().map(|s| s.as_str()).collect(),
    }
    .render()
}

/// The living document of the applied spec, with live states.
pub fn docs(shared: &Shared) -> String {
    let checks = shared.checks();
    let now = now_ms();
    let states = {
        let events = shared.events_snapshot();
        deployments::check_states(&checks, &events, shared.clock_at(now))
    };
    let live: BTreeMap<String, mdd_docs::Live> = states
        .into_iter()
        .map(|(name, state)| {
            (
                name,
                mdd_docs::Live {
                    state: state.state,
                    since: Some(format!("{} UTC", since_text(state.since))),
                },
            )
        })
        .collect();
    mdd_docs::Document::new(
        &checks.spec,
        Some(&live),
        Some(format!("this server at {} UTC", svg::short_time(now))),
    )
    .render_html(mdd_docs::Styles::Link("/static/docs.css"))
    // Served by the dashboard: a way back to it (the document itself also stands alone).
    .replacen(
        "<body class=\"docs\">\n",
        "<body class=\"docs\">\n<nav class=\"back\"><a href=\"/\">← Dashboard</a> · <a href=\"/events\">Events</a></nav>\n",
        1,
    )
}

pub struct ReportRow {
    pub name: String,
    pub href: String,
    pub owner: String,
    pub incidents: u64,
    pub failing: String,
    pub mttr: String,
    pub flaps: u64,
    pub open: u64,
    /// Share of the window its results said OK.
    pub availability: String,
}

pub struct ReportWindow {
    pub name: &'static str,
    pub top: Vec<ReportRow>,
    pub owners: Vec<ReportRow>,
    /// (deployment, its availability over the window).
    pub deployments: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    windows: Vec<ReportWindow>,
    /// What the report counts, in words.
    counts: &'static str,
}

fn report_rows(list: &serde_json::Value, key: &str) -> Vec<ReportRow> {
    let human = |ms: Option<i64>| {
        ms.map(|ms| {
            mdd_core::format_duration(std::time::Duration::from_millis(
                u64::try_from(ms.max(0)).unwrap_or(0),
            ))
        })
        .unwrap_or_else(|| "-".to_string())
    };
    list.as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let name = row[key].as_str().unwrap_or_default().to_string();
            ReportRow {
                href: if key == "check" {
                    format!("/checks/{}", encode(&name))
                } else {
                    format!("/events?owner={}", encode(&name))
                },
                name,
                owner: row["owner"].as_str().unwrap_or_default().to_string(),
                incidents: row["incidents"].as_u64().unwrap_or(0),
                failing: human(row["failing_ms"].as_i64()),
                mttr: human(row["mttr_ms"].as_i64()),
                flaps: row["flaps"].as_u64().unwrap_or(0),
                open: row["open"].as_u64().unwrap_or(0),
                availability: crate::view::percent(row["availability"].as_f64()),
            }
        })
        .collect()
}

/// How often things break, over the standard windows.
pub async fn report(shared: &Shared) -> Result<String, askama::Error> {
    let mut windows = Vec::new();
    for (name, seconds) in crate::api::REPORT_WINDOWS {
        let window = crate::api::breakage_report(shared, std::time::Duration::from_secs(seconds))
            .await
            .unwrap_or_default();
        let mut owners = report_rows(&window["owners"], "owner");
        owners.sort_by_key(|o| std::cmp::Reverse(o.incidents));
        let deployments = window["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["deployment"].as_str().unwrap_or_default().to_string(),
                    crate::view::percent(d["availability"].as_f64()),
                )
            })
            .collect();
        windows.push(ReportWindow {
            name,
            top: report_rows(&window["top_offenders"], "check"),
            owners,
            deployments,
        });
    }
    ReportPage {
        windows,
        counts: mdd_core::incident::COUNTS,
    }
    .render()
}

pub struct HandlerView {
    pub name: String,
    pub kind: &'static str,
    pub target: String,
    pub deliveries: Vec<crate::notify::Delivery>,
    /// Since the server started: delivered, failed after every attempt, dropped (queue full).
    pub ok: u64,
    pub failed: u64,
    pub dropped: u64,
}

#[derive(Template)]
#[template(path = "handlers.html")]
struct HandlersPage {
    handlers: Vec<HandlerView>,
}

/// Each handler with its latest deliveries.
pub fn handlers(shared: &Shared) -> Result<String, askama::Error> {
    let checks = shared.checks();
    let handlers = checks
        .spec
        .handlers
        .iter()
        .map(|h| {
            let (kind, target) = h.kind.describe();
            let count = |outcome| shared.metrics.delivered_count(&h.name, outcome);
            HandlerView {
                name: h.name.clone(),
                kind,
                target,
                ok: count("ok"),
                failed: count("failed"),
                dropped: count("dropped"),
                deliveries: shared
                    .deliveries
                    .of(&h.name)
                    .into_iter()
                    .take(100)
                    .collect(),
            }
        })
        .collect();
    HandlersPage { handlers }.render()
}

#[cfg(test)]
mod tests {
    use super::{When, ago};

    #[test]
    fn ages_are_said_in_the_unit_a_person_uses() {
        assert_eq!(ago(1_200), "just now");
        assert_eq!(ago(42_000), "42 s ago");
        assert_eq!(ago(3 * 60_000 + 5_000), "3 min ago");
        assert_eq!(ago(5 * 3_600_000), "5 h ago");
        assert_eq!(ago(3 * 86_400_000), "3 d ago");
        assert_eq!(ago(-180_000), "in 3 min");
        let at = 1_796_131_697_000; // 2026-12-01 13:28:17 UTC
        assert_eq!(
            When::at(at, at + 65_000).to_string(),
            "<time datetime=\"2026-12-01T13:28:17Z\" title=\"2026-12-01 13:28:17 UTC\">1 min ago</time>"
        );
    }
}
