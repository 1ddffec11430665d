//! The living document: a spec's integration points grouped by owner, each with what it is,
//! why it matters (what needs it, which deployments it belongs to), its runbook, probe target,
//! labels and dependencies (drawn), and, when a server is at hand, its live state and since when.
//!
//! Pure: takes a spec and optionally the live states, gives Markdown (that renders on a git
//! host, dependencies as a Mermaid diagram) or HTML (that prints well, dependencies as SVG).
//! Used by `mdd docs` and the dashboard's `/docs`. Must not do I/O.

mod html;
mod markdown;

pub use html::{STYLESHEET, escape, state_class};

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mdd_core::State;
use mdd_core::spec::{Check, Spec};

/// A check's state on a server, for the document.
#[derive(Debug, Clone)]
pub struct Live {
    pub state: State,
    /// When it entered that state, like `2026-11-26 19:00 UTC`.
    pub since: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

/// How the HTML gets its styles: inline for a standalone file, or a link (the dashboard, whose
/// content security policy allows no inline style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Styles<'a> {
    Inline,
    Link(&'a str),
}

pub struct Document<'a> {
    pub spec: &'a Spec,
    /// Live states by check name; None when rendered from files alone.
    pub live: Option<&'a BTreeMap<String, Live>>,
    /// Where the live states come from and when, for the header.
    pub source: Option<String>,
    /// Who depends on whom, worked out the first time it is needed: looking dependents up by
    /// scanning every check made a document of 10,000 checks take seconds.
    dependents: std::cell::OnceCell<HashMap<&'a str, Vec<&'a str>>>,
}

impl<'a> Document<'a> {
    pub fn new(
        spec: &'a Spec,
        live: Option<&'a BTreeMap<String, Live>>,
        source: Option<String>,
    ) -> Document<'a> {
        Document {
            spec,
            live,
            source,
            dependents: std::cell::OnceCell::new(),
        }
    }
}

impl Document<'_> {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Markdown => markdown::render(self),
            Format::Html => html::render(self, Styles::Inline),
        }
    }

    pub fn render_html(&self, styles: Styles<'_>) -> String {
        html::render(self, styles)
    }

    /// Only the dependency graph, as SVG (classes `graph`, `node s-<state>`, `edge`), for
    /// pages that style it themselves; `link` gives each check's node its target.
    pub fn dependency_graph(&self, link: &dyn Fn(&str) -> String) -> String {
        html::graph(self, link)
    }

    /// Owners in order (named ones alphabetically, then checks with no owner), with their checks.
    fn by_owner(&self) -> Vec<(&str, Vec<&Check>)> {
        let mut owners: BTreeMap<(bool, &str), Vec<&Check>> = BTreeMap::new();
        for check in &self.spec.checks {
            let owner = check.owner.as_deref();
            owners
                .entry((owner.is_none(), owner.unwrap_or(NO_OWNER)))
                .or_default()
                .push(check);
        }
        owners
            .into_iter()
            .map(|((_, owner), checks)| (owner, checks))
            .collect()
    }

    /// The checks that depend on `name`, in spec order.
    fn dependents(&self, name: &str) -> Vec<&str> {
        let index = self.dependents.get_or_init(|| {
            let mut index: HashMap<&str, Vec<&str>> = HashMap::new();
            for check in &self.spec.checks {
                for dep in &check.depends_on {
                    let list = index.entry(dep.as_str()).or_default();
                    // A check naming the same dependency twice is one dependent.
                    if list.last() != Some(&check.name.as_str()) {
                        list.push(check.name.as_str());
                    }
                }
            }
            index
        });
        index.get(name).cloned().unwrap_or_default()
    }

    fn deployments_of(&self, check: &Check) -> Vec<&str> {
        self.spec
            .deployments
            .iter()
            .filter(|d| check.matches_labels(&d.selector))
            .map(|d| d.name.as_str())
            .collect()
    }

    /// Why a check matters, in words: what needs it, directly and further down the chain.
    fn why(&self, check: &Check) -> String {
        let direct = self.dependents(&check.name);
        let mut all: BTreeSet<&str> = BTreeSet::new();
        let mut queue: Vec<&str> = direct.clone();
        while let Some(next) = queue.pop() {
            if all.insert(next) {
                queue.extend(self.dependents(next));
            }
        }
        let deployments = self.deployments_of(check);
        let mut parts = Vec::new();
        if !direct.is_empty() {
            let further = all.len() - direct.len();
            let mut needed = format!("Needed by {}", join(&direct));
            if further > 0 {
                needed.push_str(&format!(
                    " (and {further} more check{} through {})",
                    if further == 1 { "" } else { "s" },
                    if direct.len() == 1 { "it" } else { "them" }
                ));
            }
            parts.push(needed);
        }
        if !deployments.is_empty() {
            parts.push(format!(
                "{} deployment{} {} cannot be done without it",
                if parts.is_empty() { "The" } else { "the" },
                if deployments.len() == 1 { "" } else { "s" },
                join(&deployments)
            ));
        }
        if parts.is_empty() {
            "Nothing in this spec depends on it.".to_string()
        } else {
            parts.join("; ") + "."
        }
    }
}

const NO_OWNER: &str = "(no owner)";

/// Where and how often a check runs, in words.
fn runs(check: &Check) -> String {
    if check.is_push_only() {
        return format!(
            "reported from outside (mdd result, a cron job), at least every {}",
            mdd_core::format_duration(check.effective_ttl())
        );
    }
    let every = mdd_core::format_duration(check.interval);
    if check.subscriptions.is_empty() {
        format!("every {every} on the server")
    } else {
        format!(
            "every {every} on agents subscribed to {}",
            check.subscriptions.join(", ")
        )
    }
}

fn join(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// An anchor for a check's section: its name, which the spec keeps to a safe alphabet.
fn anchor(name: &str) -> String {
    let mut out = String::from("check-");
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c.to_ascii_lowercase()
        } else {
            '-'
        }
    }));
    out
}

#[cfg(test)]
mod tests;
