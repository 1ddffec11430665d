//! The applied check set: spec files, parsed and indexed, swapped whole on every apply.

use std::collections::BTreeMap;

use foldhash::HashMap as FastMap;

use mdd_core::spec::{self, Check, Spec, SpecErrors, SpecSource};
use mdd_storage::SpecFile;

#[derive(Debug)]
pub struct CheckSet {
    /// The stored revision these checks came from (0: nothing applied yet).
    pub revision: i64,
    /// The spec files, by file name.
    pub files: BTreeMap<String, String>,
    pub spec: Spec,
    /// Looked up for every event of every page: a fast hash (names are ours, not hostile keys).
    by_name: FastMap<String, usize>,
    /// For each deployment (in spec order), the indices of the checks it selects: worked out
    /// once per apply, so pages listing hundreds of deployments do not match labels per request.
    selections: Vec<Vec<usize>>,
    /// When each check first appeared in an applied spec (ms): a check that never reported is
    /// pending since then, and stale a ttl later.
    added_at: FastMap<String, i64>,
}

impl CheckSet {
    pub fn empty() -> CheckSet {
        CheckSet {
            revision: 0,
            files: BTreeMap::new(),
            spec: Spec {
                checks: Vec::new(),
                deployments: Vec::new(),
                handlers: Vec::new(),
            },
            by_name: FastMap::default(),
            selections: Vec::new(),
            added_at: FastMap::default(),
        }
    }

    /// Parses and validates a whole set of files.
    pub fn parse(revision: i64, files: BTreeMap<String, String>) -> Result<CheckSet, SpecErrors> {
        let sources: Vec<SpecSource<'_>> = files
            .iter()
            .map(|(file, text)| SpecSource { file, text })
            .collect();
        let spec = spec::load(&sources)?;
        let by_name = spec
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let selections = spec
            .deployments
            .iter()
            .map(|d| {
                spec.checks
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.matches_labels(&d.selector))
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        Ok(CheckSet {
            revision,
            files,
            spec,
            by_name,
            selections,
            added_at: FastMap::default(),
        })
    }

    /// Dates every check: those `previous` had keep their date, the others are new at `now`.
    pub fn dated_after(mut self, previous: Option<&CheckSet>, now: i64) -> CheckSet {
        self.added_at = self
            .spec
            .checks
            .iter()
            .map(|c| {
                let at = previous
                    .and_then(|p| p.added_at.get(&c.name).copied())
                    .unwrap_or(now);
                (c.name.clone(), at)
            })
            .collect();
        self
    }

    /// When a check first appeared (its revision's time for those loaded at start).
    pub fn added_at(&self, name: &str) -> i64 {
        self.added_at.get(name).copied().unwrap_or(i64::MIN)
    }

    /// The checks a deployment selects (none for a name not in the spec).
    pub fn selected(&self, deployment: &str) -> impl Iterator<Item = &Check> {
        self.spec
            .deployments
            .iter()
            .position(|d| d.name == deployment)
            .and_then(|i| self.selections.get(i))
            .into_iter()
            .flatten()
            .map(|&i| &self.spec.checks[i])
    }

    pub fn get(&self, name: &str) -> Option<&Check> {
        self.by_name.get(name).map(|&i| &self.spec.checks[i])
    }

    pub fn checks(&self) -> &[Check] {
        &self.spec.checks
    }

    pub fn files_for_storage(&self) -> Vec<SpecFile> {
        self.files
            .iter()
            .map(|(file, text)| SpecFile {
                file: file.clone(),
                text: text.clone(),
            })
            .collect()
    }
}

/// What an apply changed: checks (at the top, as the API has always said it), deployments
/// and handlers, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpecDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    pub deployments: NamedDiff,
    pub handlers: NamedDiff,
}

/// What changed in one kind of named thing.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NamedDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
}

impl NamedDiff {
    fn between<'a, T: PartialEq + 'a>(
        old: impl IntoIterator<Item = (&'a str, &'a T)>,
        new: impl IntoIterator<Item = (&'a str, &'a T)>,
        same: impl Fn(&T, &T) -> bool,
    ) -> NamedDiff {
        let old: BTreeMap<&str, &T> = old.into_iter().collect();
        let new: Vec<(&str, &T)> = new.into_iter().collect();
        let mut diff = NamedDiff::default();
        for (name, item) in &new {
            match old.get(name) {
                None => diff.added.push(name.to_string()),
                Some(before) if !same(before, item) => diff.changed.push(name.to_string()),
                Some(_) => diff.unchanged += 1,
            }
        }
        for name in old.keys() {
            if !new.iter().any(|(n, _)| n == name) {
                diff.removed.push(name.to_string());
            }
        }
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl SpecDiff {
    pub fn between(old: &CheckSet, new: &CheckSet) -> SpecDiff {
        let checks = NamedDiff::between(
            old.checks().iter().map(|c| (c.name.as_str(), c)),
            new.checks().iter().map(|c| (c.name.as_str(), c)),
            same_check,
        );
        SpecDiff {
            added: checks.added,
            changed: checks.changed,
            removed: checks.removed,
            unchanged: checks.unchanged,
            deployments: NamedDiff::between(
                old.spec.deployments.iter().map(|d| (d.name.as_str(), d)),
                new.spec.deployments.iter().map(|d| (d.name.as_str(), d)),
                |a, b| a == b,
            ),
            handlers: NamedDiff::between(
                old.spec.handlers.iter().map(|h| (h.name.as_str(), h)),
                new.spec.handlers.iter().map(|h| (h.name.as_str(), h)),
                |a, b| a == b,
            ),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.deployments.is_empty()
            && self.handlers.is_empty()
    }
}

/// Equal in everything but where they were written: moving a check between files or lines is
/// not a change.
fn same_check(a: &Check, b: &Check) -> bool {
    let mut b = b.clone();
    b.source = a.source.clone();
    *a == b
}

/// The subscriptions of the agents the server knows (from their keepalives), to say why a
/// check has no result.
pub struct AgentSubscriptions {
    /// Subscription → how many known agents have it.
    agents: std::collections::HashMap<String, usize>,
}

impl AgentSubscriptions {
    pub fn of(shared: &crate::Shared) -> AgentSubscriptions {
        let mut agents = std::collections::HashMap::new();
        for watch in shared.keepalives().values() {
            for subscription in &watch.info.subscriptions {
                *agents.entry(subscription.clone()).or_insert(0) += 1;
            }
        }
        AgentSubscriptions { agents }
    }

    /// The subscriptions of `check` that no known agent has (all of them when it names some
    /// and none is served).
    pub fn unserved<'a>(&self, check: &'a Check) -> Vec<&'a str> {
        check
            .subscriptions
            .iter()
            .filter(|s| !self.agents.contains_key(s.as_str()))
            .map(String::as_str)
            .collect()
    }

    /// What an operator should hear before applying `checks`: subscriptions no known agent
    /// has, whose checks will go stale a ttl after the apply unless an agent starts.
    pub fn warnings(&self, checks: &CheckSet) -> Vec<String> {
        let mut unserved: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for check in checks.checks() {
            for subscription in self.unserved(check) {
                unserved.entry(subscription).or_default().push(&check.name);
            }
        }
        unserved
            .into_iter()
            .filter(|(_, names)| {
                // A check with another subscription that is served runs anyway.
                names.iter().any(|name| {
                    checks
                        .get(name)
                        .is_some_and(|c| self.unserved(c).len() == c.subscriptions.len())
                })
            })
            .map(|(subscription, names)| {
                let shown: Vec<&str> = names.iter().take(5).copied().collect();
                let more = names.len().saturating_sub(shown.len());
                let list = if more > 0 {
                    format!("{} and {more} more", shown.join(", "))
                } else {
                    shown.join(", ")
                };
                format!(
                    "no agent known to this server is subscribed to `{subscription}`: {list} will go stale a ttl after this apply unless one starts"
                )
            })
            .collect()
    }

    /// Why a check has no result yet, in words an operator can act on.
    pub fn why_no_result(&self, check: &Check) -> String {
        if check.is_push_only() {
            return "waiting for a result to be pushed (`mdd result` or POST /api/v1/results)"
                .to_string();
        }
        if check.subscriptions.is_empty() {
            return "waiting for the server's first run".to_string();
        }
        let served: usize = check
            .subscriptions
            .iter()
            .filter_map(|s| self.agents.get(s))
            .sum();
        if served == 0 {
            let names: Vec<String> = check
                .subscriptions
                .iter()
                .map(|s| format!("`{s}`"))
                .collect();
            let noun = if names.len() == 1 {
                "subscribed to"
            } else {
                "subscribed to any of"
            };
            return format!("no agent {noun} {}", names.join(", "));
        }
        let agents = if served == 1 { "agent" } else { "agents" };
        format!("waiting for the first result from {served} subscribed {agents}")
    }
}
