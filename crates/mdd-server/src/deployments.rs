//! Deployments: what each one selects, how far along it is, and what it has been through.
//!
//! Once a second (and right after an apply) the state of every selected check, the worst over
//! its entities, is fed to the deployment's `mdd_core::deployment::Track`; tracks that changed
//! are stored (by the server doing the once-only work; the others of a cluster read them back
//! through `follow.rs`). Views are worked out on request from the live events plus the track, so counts
//! are never older than the events themselves.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mdd_core::State;
use mdd_core::deployment::{CheckNow, Regression, Track, Transition, combine};
use mdd_core::spec::{Check, Deployment};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::checks::CheckSet;
use crate::view::{Clock, StateResolver, timestamp};
use crate::{CachedEvent, Shared};

/// How often tracks are brought up to date.
const EVERY: Duration = Duration::from_secs(1);

/// The tracks, by deployment name.
pub type Tracks = BTreeMap<String, Track>;

/// Reads the stored tracks; one that cannot be read starts afresh (and says so).
pub async fn load(store: &mdd_storage::Store) -> Result<Tracks, mdd_storage::StoreError> {
    let mut tracks = Tracks::new();
    for (name, json) in store.deployment_tracks().await? {
        match serde_json::from_str::<Track>(&json) {
            Ok(track) => {
                tracks.insert(name, track);
            }
            Err(e) => tracing::error!(
                "the stored track of deployment {name} is unreadable ({e}); it starts afresh"
            ),
        }
    }
    Ok(tracks)
}

/// Keeps every deployment's track up to date until `shutdown`.
/// On the server doing the once-only work: in a cluster the others follow the stored tracks.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut revision = shared.watch_revision();
    let mut holding = shared.watch_once_only_work();
    loop {
        if *holding.borrow_and_update() {
            update(&shared).await;
            // Silences end on the same beat: expired ones, and resolved `until_resolved` ones.
            crate::silences::sweep(&shared).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
            _ = revision.changed() => {}
            moved = holding.changed() => if moved.is_err() { return },
        }
    }
}

/// One round: feeds every track, stores those that changed, forgets deployments that left the
/// spec.
pub async fn update(shared: &Shared) {
    let clock = shared.clock();
    let now = clock.now;
    let checks = shared.checks();
    // Every event is resolved for it: with no deployments in the spec nothing needs that.
    let current = if checks.spec.deployments.is_empty() {
        HashMap::new()
    } else {
        let events = shared.fresh_events().await;
        check_states(&checks, &events, clock)
    };
    let (changed, removed) = {
        let mut tracks = shared.deployments_write();
        let removed: Vec<String> = tracks
            .keys()
            .filter(|name| !checks.spec.deployments.iter().any(|d| &d.name == *name))
            .cloned()
            .collect();
        for name in &removed {
            tracks.remove(name);
        }
        let mut changed = Vec::new();
        for deployment in &checks.spec.deployments {
            let track = tracks
                .entry(deployment.name.clone())
                .or_insert_with(|| Track::new(now));
            let selected = selected_states(&checks, deployment, &current, clock);
            if track.observe(now, deployment.settle, &selected) {
                match serde_json::to_string(track) {
                    Ok(json) => changed.push((deployment.name.clone(), json)),
                    Err(e) => tracing::error!("cannot encode a deployment track: {e}"),
                }
            }
        }
        (changed, removed)
    };
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    shared.changed();
    if let Err(e) = shared
        .store
        .save_deployment_tracks(&changed, &removed, now)
        .await
    {
        // The tracks in memory are right; the next change stores them again.
        tracing::warn!("cannot store deployment progress: {e}");
    }
}

/// The state of every check that has events: the worst over its entities.
pub fn check_states(
    checks: &CheckSet,
    events: &crate::Events,
    clock: Clock,
) -> HashMap<String, CheckNow> {
    let mut resolver = StateResolver::new(checks, events, clock);
    check_states_with(&mut resolver, checks, events)
}

/// The same, with a resolver that may already know some states (a page that worked out
/// every event's state for its own use shares them).
fn check_states_with<'a>(
    resolver: &mut StateResolver<'a>,
    checks: &'a CheckSet,
    events: &'a crate::Events,
) -> HashMap<String, CheckNow> {
    let mut per_check: HashMap<String, CheckNow> = HashMap::new();
    for cached in events.values() {
        let config = checks.get(&cached.event.check);
        if config.is_none() {
            continue;
        }
        let resolved = resolver.resolve(cached, config);
        let here = CheckNow {
            state: resolved.state,
            since: resolved.since,
        };
        match per_check.get_mut(cached.event.check.as_str()) {
            Some(entry) => {
                if let Some(worst) = combine([*entry, here]) {
                    *entry = worst;
                }
            }
            None => {
                per_check.insert(cached.event.check.clone(), here);
            }
        }
    }
    per_check
}

/// The checks a deployment selects, as they are now; one without any event yet is pending
/// (stale once a ttl has gone by without a first result).
fn selected_states(
    checks: &CheckSet,
    deployment: &Deployment,
    current: &HashMap<String, CheckNow>,
    clock: Clock,
) -> BTreeMap<String, CheckNow> {
    let absent = StateResolver::new(checks, &EMPTY, clock);
    selected(checks, deployment)
        .map(|check| {
            let state = current.get(&check.name).copied().unwrap_or_else(|| {
                let resolved = absent.absent_alone(check);
                CheckNow {
                    state: resolved.state,
                    since: resolved.since,
                }
            });
            (check.name.clone(), state)
        })
        .collect()
}

/// No events, for resolving checks that have none.
static EMPTY: std::sync::LazyLock<crate::Events> = std::sync::LazyLock::new(crate::Events::new);

/// The checks whose labels match the deployment's selector (all of them for an empty one).
pub fn selected<'a>(
    checks: &'a CheckSet,
    deployment: &'a Deployment,
) -> impl Iterator<Item = &'a Check> {
    checks.selected(&deployment.name)
}

/// A deployment in a list.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub name: String,
    pub description: Option<String>,
    pub selector: BTreeMap<String, String>,
    pub settle_ms: u128,
    pub started_at: String,
    pub done: bool,
    pub done_at: Option<String>,
    /// From the first apply to done.
    pub time_to_done_ms: Option<i64>,
    /// Every check passes but not yet for `settle`: when it will be done if nothing changes.
    pub settles_at: Option<String>,
    /// How many checks it selects.
    pub total: usize,
    pub green: usize,
    /// Checks per state, every state present (0 when none).
    pub counts: BTreeMap<&'static str, usize>,
    pub open_regressions: usize,
}

/// One check of a deployment, with what the deployment remembers of it.
#[derive(Debug, Serialize)]
pub struct CheckProgress {
    pub name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub runbook: Option<String>,
    pub target: String,
    pub depends_on: Vec<String>,
    pub state: &'static str,
    pub since: Option<String>,
    /// The dependencies keeping it blocked.
    pub blocked_by: Vec<String>,
    /// The output of its worst entity's last result.
    pub output: String,
    pub entities: Vec<EntityState>,
    pub first_green_at: Option<String>,
    /// From the deployment's start to the first green.
    pub time_to_green_ms: Option<i64>,
    pub reds_after_green: u32,
}

#[derive(Debug, Serialize)]
pub struct EntityState {
    pub entity: String,
    pub state: &'static str,
}

/// A deployment with all of its checks.
#[derive(Debug, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub summary: Summary,
    pub checks: Vec<CheckProgress>,
    pub timeline: Vec<TimelineEntry>,
    pub regressions: Vec<RegressionView>,
}

#[derive(Debug, Serialize)]
pub struct TimelineEntry {
    pub at: String,
    pub check: String,
    pub passing: bool,
}

#[derive(Debug, Serialize)]
pub struct RegressionView {
    pub check: String,
    pub at: String,
    pub resolved_at: Option<String>,
}

/// The live view of deployments: worked out from the events as they are now and the tracks.
pub struct Views<'a> {
    checks: &'a CheckSet,
    events: &'a crate::Events,
    tracks: &'a Tracks,
    now: i64,
    resolver: StateResolver<'a>,
    /// Every check's state, worked out in one pass the first time a summary needs it: a list
    /// of hundreds of deployments then costs one pass over the events, not one per deployment.
    per_check: Option<HashMap<String, CheckNow>>,
    /// The known agents, to say why a check has no result (details only).
    agents: Option<crate::checks::AgentSubscriptions>,
}

impl<'a> Views<'a> {
    pub fn new(
        checks: &'a CheckSet,
        events: &'a crate::Events,
        tracks: &'a Tracks,
        clock: Clock,
    ) -> Views<'a> {
        Views {
            checks,
            events,
            tracks,
            now: clock.now,
            resolver: StateResolver::new(checks, events, clock),
            per_check: None,
            agents: None,
        }
    }

    /// Says why checks without results have none, from what these agents run.
    pub fn with_agents(mut self, agents: crate::checks::AgentSubscriptions) -> Views<'a> {
        self.agents = Some(agents);
        self
    }

    /// What a check with no event at all shows: pending, or stale once it is overdue.
    fn absent(&mut self, check: &'a Check) -> CheckNow {
        let resolved = self.resolver.absent(check);
        CheckNow {
            state: resolved.state,
            since: resolved.since,
        }
    }

    /// An event's state, remembered for the rest of this view (summaries reuse it).
    pub fn state_of(
        &mut self,
        cached: &'a CachedEvent,
        config: Option<&'a Check>,
    ) -> (State, Vec<String>) {
        self.resolver.state_of(cached, config)
    }

    /// Every entity's state for a check, and the worst of them with the event behind it.
    fn check_now(
        &mut self,
        check: &'a Check,
    ) -> (
        Option<CheckNow>,
        Vec<EntityState>,
        Vec<String>,
        Option<&'a CachedEvent>,
    ) {
        let mut entities = Vec::new();
        let mut worst: Option<CheckNow> = None;
        let mut worst_event = None;
        let mut blocked_by = Vec::new();
        let events = self.events;
        for ((_, entity), cached) in events
            .range((check.name.clone(), String::new())..)
            .take_while(|((name, _), _)| *name == check.name)
        {
            let resolved = self.resolver.resolve(cached, Some(check));
            let (state, blockers) = (resolved.state, resolved.blocked_by);
            let here = CheckNow {
                state,
                since: resolved.since,
            };
            let combined = match worst {
                Some(w) => combine([w, here]),
                None => Some(here),
            };
            if worst.is_none_or(|w| state.severity() > w.state.severity()) {
                worst_event = Some(cached);
            }
            for blocker in blockers {
                if !blocked_by.contains(&blocker) {
                    blocked_by.push(blocker);
                }
            }
            worst = combined;
            entities.push(EntityState {
                entity: entity.clone(),
                state: state.as_str(),
            });
        }
        (worst, entities, blocked_by, worst_event.map(|e| &**e))
    }

    /// A check's state as deployments count it: the worst over its entities, or pending (stale
    /// once overdue) when nothing reported; the overview's counts agree with the deployments'.
    pub fn check_state(&mut self, check: &'a Check) -> State {
        if self.per_check.is_none() {
            let states = check_states_with(&mut self.resolver, self.checks, self.events);
            self.per_check = Some(states);
        }
        match self.per_check.as_ref().and_then(|p| p.get(&check.name)) {
            Some(now) => now.state,
            None => self.absent(check).state,
        }
    }

    pub fn summary(&mut self, deployment: &'a Deployment) -> Summary {
        let checks = self.checks;
        let mut counts: BTreeMap<&'static str, usize> =
            State::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mut total = 0;
        let mut all_green_since: Option<i64> = Some(i64::MIN);
        if self.per_check.is_none() {
            let states = check_states_with(&mut self.resolver, checks, self.events);
            self.per_check = Some(states);
        }
        for check in selected(checks, deployment) {
            total += 1;
            let now = match self.per_check.as_ref().and_then(|p| p.get(&check.name)) {
                Some(now) => *now,
                None => self.absent(check),
            };
            *counts.entry(now.state.as_str()).or_default() += 1;
            all_green_since = match all_green_since {
                Some(latest) if now.state == State::Passing => Some(latest.max(now.since)),
                _ => None,
            };
        }
        let track = self.tracks.get(&deployment.name);
        let started_at = track.map_or(self.now, |t| t.started_at);
        let done_at = track.and_then(|t| t.done_at);
        let settle_ms = i64::try_from(deployment.settle.as_millis()).unwrap_or(i64::MAX);
        let settles_at = match (done_at, all_green_since) {
            (None, Some(since)) if total > 0 => {
                Some(timestamp(since.max(started_at).saturating_add(settle_ms)))
            }
            _ => None,
        };
        Summary {
            name: deployment.name.clone(),
            description: deployment.description.clone(),
            selector: deployment.selector.clone(),
            settle_ms: deployment.settle.as_millis(),
            started_at: timestamp(started_at),
            done: done_at.is_some(),
            done_at: done_at.map(timestamp),
            time_to_done_ms: done_at.map(|d| d - started_at),
            settles_at,
            total,
            green: counts.get("passing").copied().unwrap_or(0),
            counts,
            open_regressions: track.map_or(0, |t| t.open_regressions().count()),
        }
    }

    pub fn detail(&mut self, deployment: &'a Deployment) -> Detail {
        let summary = self.summary(deployment);
        let track = self.tracks.get(&deployment.name);
        let started_at = track.map_or(self.now, |t| t.started_at);
        let checks = self.checks;
        let mut progress = Vec::new();
        for check in selected(checks, deployment) {
            let (now, entities, blocked_by, worst_event) = self.check_now(check);
            let output = match (worst_event, &self.agents) {
                (Some(event), _) => event.summary.clone(),
                (None, Some(agents)) => format!("no result yet: {}", agents.why_no_result(check)),
                (None, None) => String::new(),
            };
            let now = now.unwrap_or_else(|| self.absent(check));
            let remembered = track.and_then(|t| t.checks.get(&check.name));
            let first_green_at = remembered.and_then(|c| c.first_green_at);
            progress.push(CheckProgress {
                name: check.name.clone(),
                description: check.description.clone(),
                owner: check.owner.clone(),
                runbook: check.runbook.clone(),
                target: check.probe.target(),
                depends_on: check.depends_on.clone(),
                state: now.state.as_str(),
                since: Some(timestamp(now.since)),
                blocked_by,
                output,
                entities,
                first_green_at: first_green_at.map(timestamp),
                time_to_green_ms: first_green_at.map(|g| (g - started_at).max(0)),
                reds_after_green: remembered.map_or(0, |c| c.reds_after_green),
            });
        }
        let timeline = track
            .map(|t| t.timeline.iter().map(timeline_entry).collect())
            .unwrap_or_default();
        let regressions = track
            .map(|t| t.regressions.iter().map(regression_view).collect())
            .unwrap_or_default();
        Detail {
            summary,
            checks: progress,
            timeline,
            regressions,
        }
    }
}

fn timeline_entry(t: &Transition) -> TimelineEntry {
    TimelineEntry {
        at: timestamp(t.at),
        check: t.check.clone(),
        passing: t.passing,
    }
}

fn regression_view(r: &Regression) -> RegressionView {
    RegressionView {
        check: r.check.clone(),
        at: timestamp(r.at),
        resolved_at: r.resolved_at.map(timestamp),
    }
}
