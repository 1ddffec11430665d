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
        })
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

/// What an apply changed, by check name.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpecDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
}

impl SpecDiff {
    pub fn between(old: &CheckSet, new: &CheckSet) -> SpecDiff {
        let mut diff = SpecDiff::default();
        for check in new.checks() {
            match old.get(&check.name) {
                None => diff.added.push(check.name.clone()),
                Some(before) if !same_check(before, check) => diff.changed.push(check.name.clone()),
                Some(_) => diff.unchanged += 1,
            }
        }
        for check in old.checks() {
            if new.get(&check.name).is_none() {
                diff.removed.push(check.name.clone());
            }
        }
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Equal in everything but where they were written: moving a check between files or lines is
/// not a change.
fn same_check(a: &Check, b: &Check) -> bool {
    let mut b = b.clone();
    b.source = a.source.clone();
    *a == b
}
