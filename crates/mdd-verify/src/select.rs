//! Which checks a verify run covers: `--check` and `--label` filters, plus their dependencies.

use std::collections::{BTreeMap, HashSet};

use mdd_core::spec::Check;

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Check names; empty means all.
    pub names: Vec<String>,
    /// Every `key=value` must match; empty means all.
    pub labels: BTreeMap<String, String>,
}

/// What a selection came to.
#[derive(Debug, Clone, Default)]
pub struct Selected {
    /// The checks to run, in spec order.
    pub checks: Vec<Check>,
    /// Names asked for with `--check` that the spec does not have.
    pub unknown: Vec<String>,
    /// Selected push-only checks: verify cannot run them, so they are left out, and they do not
    /// block the checks that depend on them.
    pub push_only: Vec<String>,
}

/// The checks to run: those selected, plus everything they depend on (so that a blocked check
/// still shows its root cause), less push-only checks.
pub fn select(checks: &[Check], selection: &Selection) -> Selected {
    let known: HashSet<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    let unknown: Vec<String> = selection
        .names
        .iter()
        .filter(|n| !known.contains(n.as_str()))
        .cloned()
        .collect();
    let mut wanted: HashSet<&str> = checks
        .iter()
        .filter(|c| selection.names.is_empty() || selection.names.contains(&c.name))
        .filter(|c| c.matches_labels(&selection.labels))
        .map(|c| c.name.as_str())
        .collect();
    let by_name: std::collections::HashMap<&str, &Check> =
        checks.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut queue: Vec<&str> = wanted.iter().copied().collect();
    while let Some(name) = queue.pop() {
        if let Some(check) = by_name.get(name) {
            for dep in &check.depends_on {
                if wanted.insert(dep.as_str()) {
                    queue.push(dep.as_str());
                }
            }
        }
    }
    let (push_only, runnable): (Vec<&Check>, Vec<&Check>) = checks
        .iter()
        .filter(|c| wanted.contains(c.name.as_str()))
        .partition(|c| c.is_push_only());
    Selected {
        checks: runnable.into_iter().cloned().collect(),
        unknown,
        push_only: push_only.into_iter().map(|c| c.name.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> Vec<Check> {
        mdd_core::spec::load_one(
            "s.yaml",
            "checks:
  - { name: dns, labels: { dc: ams1 }, command: x }
  - { name: ldap, labels: { dc: ams1 }, depends_on: [dns], command: x }
  - { name: app, labels: { dc: fra1 }, depends_on: [ldap], command: x }
  - { name: other, labels: { dc: fra1 }, command: x }
  - { name: nightly-backup, depends_on: [dns], ttl: 25h }
",
        )
        .expect("valid")
        .checks
    }

    fn names(checks: &[Check]) -> Vec<&str> {
        checks.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn everything_by_default() {
        let selected = select(&checks(), &Selection::default());
        assert_eq!(names(&selected.checks), ["dns", "ldap", "app", "other"]);
        assert!(selected.unknown.is_empty());
        assert_eq!(selected.push_only, ["nightly-backup"]);
    }

    #[test]
    fn labels_select_and_dependencies_come_along() {
        let selection = Selection {
            labels: [("dc".to_string(), "fra1".to_string())].into(),
            ..Selection::default()
        };
        let selected = select(&checks(), &selection);
        assert_eq!(names(&selected.checks), ["dns", "ldap", "app", "other"]);
        let selection = Selection {
            names: vec!["ldap".into(), "nope".into()],
            ..Selection::default()
        };
        let selected = select(&checks(), &selection);
        assert_eq!(names(&selected.checks), ["dns", "ldap"]);
        assert_eq!(selected.unknown, ["nope"]);
    }
}
