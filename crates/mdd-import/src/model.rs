//! What every format is converted into before it is written as a spec: checks and handlers
//! with where each came from, and notes on what could not be carried over. Names are made
//! valid and unique here, once for all formats, so that the same input always gives the same
//! names.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

pub use crate::nagios::Note;

/// Where something was written in the input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl Origin {
    pub fn new(file: &str, line: usize) -> Origin {
        Origin {
            file: file.to_string(),
            line,
        }
    }

    /// A note about this place.
    pub fn note(&self, message: impl Into<String>) -> Note {
        Note {
            file: self.file.clone(),
            line: self.line,
            message: message.into(),
        }
    }
}

/// One imported check, before its name is settled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportedCheck {
    /// Unique within the import; `depends_on` refers to these.
    pub key: String,
    /// The name it would like (made valid and unique by [`Import::finish`]).
    pub name: String,
    pub origin: Option<Origin>,
    /// What it was in the input, for the comment above it ("service `PING` on `localhost`").
    pub what: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub runbook: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Keys of the checks this one depends on.
    pub depends_on: BTreeSet<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub ttl: Option<Duration>,
    pub subscriptions: Vec<String>,
    pub entity: Option<String>,
    pub handlers: Vec<String>,
    /// Flap detection thresholds in percent (low, high).
    pub flap: Option<(u32, u32)>,
    /// None: push-only (then `ttl` is set).
    pub command: Option<Vec<String>>,
    /// Which file it goes to when the spec is written one file per group.
    pub group: Option<String>,
}

/// A command handler (Nagios notification commands are not carried over; Sensu's pipe
/// handlers are).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedHandler {
    pub name: String,
    pub origin: Option<Origin>,
    pub command: Vec<String>,
    pub timeout: Option<Duration>,
}

/// Everything converted from one input, and what was not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Import {
    pub format: String,
    /// The files read, in the order read.
    pub inputs: Vec<String>,
    pub checks: Vec<ImportedCheck>,
    pub handlers: Vec<ImportedHandler>,
    /// `mdd silence add` command lines for silences in the input (silences are not spec).
    pub silences: Vec<(Origin, Vec<String>)>,
    pub notes: Vec<Note>,
    pub datacenter: Option<String>,
}

/// A name the spec accepts: `[A-Za-z0-9._-]{1,128}`; anything else becomes `-`, runs of it
/// one, and none at either end.
pub fn spec_name(wanted: &str) -> String {
    let mut out = String::with_capacity(wanted.len());
    for c in wanted.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    let mut out = out.trim_end_matches('-').to_string();
    out.truncate(120);
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "check".to_string()
    } else {
        out
    }
}

/// A label key the spec accepts: `[A-Za-z0-9._/-]`.
pub fn label_key(wanted: &str) -> String {
    wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A key as a person reads it: `service\0web1\0Args` is `web1/Args`.
fn shown_key(key: &str) -> String {
    let mut parts: Vec<&str> = key.split('\u{0}').collect();
    if parts.len() > 1 {
        parts.remove(0);
    }
    parts.join("/")
}

impl Import {
    /// Settles names (valid, unique: a clash takes `-2`, `-3` in input order), turns
    /// dependency keys into names (dropping, with a note, those on checks not imported), sorts
    /// the checks by name, and puts the notes in file and line order.
    pub fn finish(&mut self) {
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut names: HashMap<String, String> = HashMap::new();
        for check in &mut self.checks {
            let base = spec_name(&check.name);
            let base = if base == mdd_core::spec::KEEPALIVE_CHECK {
                format!("{base}-imported")
            } else {
                base
            };
            let mut name = base.clone();
            let mut n = 2;
            while taken.contains(&name) {
                name = format!("{base}-{n}");
                n += 1;
            }
            taken.insert(name.clone());
            names.insert(check.key.clone(), name.clone());
            check.name = name;
        }
        let mut notes = Vec::new();
        for check in &mut self.checks {
            let mut resolved = BTreeSet::new();
            for key in &check.depends_on {
                match names.get(key) {
                    Some(name) if *name != check.name => {
                        resolved.insert(name.clone());
                    }
                    Some(_) => {}
                    None => {
                        if let Some(origin) = &check.origin {
                            notes.push(origin.note(format!(
                                "{} depends on `{}`, which was not imported: the dependency is left out",
                                check.what,
                                shown_key(key)
                            )));
                        }
                    }
                }
            }
            check.depends_on = resolved;
        }
        self.notes.extend(notes);
        self.checks.sort_by(|a, b| a.name.cmp(&b.name));
        self.handlers.sort_by(|a, b| a.name.cmp(&b.name));
        self.sort_notes();
    }

    /// Notes in file and line order, each once.
    pub fn sort_notes(&mut self) {
        self.notes.sort_by(|a, b| {
            (a.file.as_str(), a.line, a.message.as_str()).cmp(&(
                b.file.as_str(),
                b.line,
                b.message.as_str(),
            ))
        });
        self.notes.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_unique() {
        assert_eq!(
            spec_name("localhost/Current Load"),
            "localhost-current-load"
        );
        assert_eq!(spec_name("  ** "), "check");
        assert_eq!(spec_name("a..b_c"), "a..b_c");
        assert!(spec_name(&"x".repeat(300)).len() <= 128);
        let mut import = Import::default();
        for (key, name) in [
            ("1", "Web 1"),
            ("2", "web-1"),
            ("3", "web 1"),
            ("4", "keepalive"),
        ] {
            import.checks.push(ImportedCheck {
                key: key.into(),
                name: name.into(),
                depends_on: ["1".to_string(), "missing".to_string()].into(),
                origin: Some(Origin::new("f.cfg", 3)),
                what: format!("check {key}"),
                ..ImportedCheck::default()
            });
        }
        import.finish();
        let names: Vec<&str> = import.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["keepalive-imported", "web-1", "web-1-2", "web-1-3"]);
        // Each depends on the first (but the first not on itself); `missing` is noted.
        assert!(import.checks[1].depends_on.is_empty());
        assert_eq!(
            import.checks[2].depends_on.iter().collect::<Vec<_>>(),
            ["web-1"]
        );
        assert_eq!(import.notes.len(), 4, "{:#?}", import.notes);
        assert!(import.notes[0].message.contains("`missing`"));
    }
}
