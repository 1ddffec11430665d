//! Validation across checks: unique names, known dependencies, no cycles.

use std::collections::HashMap;

use super::parse::{CheckRefs, NameRef, ParsedDeployment, ParsedHandler, did_you_mean};
use super::{Check, SpecError};
use crate::graph::DependencyGraph;

pub(crate) fn check_references(
    checks: &[Check],
    refs: &[CheckRefs],
    deployments: &[ParsedDeployment],
    errors: &mut Vec<SpecError>,
) {
    let error = |r: &CheckRefs, at: &NameRef, field: String, message: String| SpecError {
        file: r.file.clone(),
        line: at.line,
        column: at.column,
        field,
        check: r.name.as_ref().map(|n| n.name.clone()),
        message,
    };

    let mut first_seen: HashMap<&str, &CheckRefs> = HashMap::new();
    for r in refs {
        let Some(name) = &r.name else { continue };
        match first_seen.get(name.name.as_str()) {
            Some(first) => {
                let first_at = first.name.as_ref().map_or(0, |n| n.line);
                errors.push(error(
                    r,
                    name,
                    format!("{}.name", r.path),
                    format!(
                        "duplicate check name `{}`: already used at {}:{first_at}",
                        name.name, first.file
                    ),
                ));
            }
            None => {
                first_seen.insert(&name.name, r);
            }
        }
    }

    let known: Vec<&str> = first_seen.keys().copied().collect();
    for r in refs {
        for (i, dep) in r.depends_on.iter().enumerate() {
            if !first_seen.contains_key(dep.name.as_str()) {
                errors.push(error(
                    r,
                    dep,
                    format!("{}.depends_on[{i}]", r.path),
                    format!(
                        "unknown check `{}`{}",
                        dep.name,
                        did_you_mean(&dep.name, &known)
                    ),
                ));
            }
        }
    }

    // Cycles are looked for among the checks that parsed; an invalid check already has an error.
    let graph = DependencyGraph::new(checks);
    for cycle in graph.cycles() {
        let closing = &checks[cycle[0]];
        let next = &checks[cycle[1 % cycle.len()]].name;
        let Some(r) = refs
            .iter()
            .find(|r| r.name.as_ref().is_some_and(|n| n.name == closing.name))
        else {
            continue;
        };
        let Some((i, at)) = r
            .depends_on
            .iter()
            .enumerate()
            .find(|(_, d)| &d.name == next)
        else {
            continue;
        };
        let mut path: Vec<&str> = cycle.iter().map(|&c| checks[c].name.as_str()).collect();
        path.push(&closing.name);
        errors.push(error(
            r,
            at,
            format!("{}.depends_on[{i}]", r.path),
            format!("dependency cycle: {}", path.join(" → ")),
        ));
    }

    let mut deployment_names: HashMap<&str, &ParsedDeployment> = HashMap::new();
    for parsed in deployments {
        let name = parsed.deployment.name.as_str();
        if let Some(first) = deployment_names.insert(name, parsed) {
            errors.push(SpecError {
                file: parsed.file.clone(),
                line: parsed.name_at.line,
                column: parsed.name_at.column,
                field: format!("{}.name", parsed.path),
                check: None,
                message: format!(
                    "duplicate deployment name `{name}`: already used at {}:{}",
                    first.file, first.name_at.line
                ),
            });
        }
    }
}

/// Handler names are unique, and every handler a check names exists.
pub(crate) fn check_handlers(
    refs: &[CheckRefs],
    handlers: &[ParsedHandler],
    errors: &mut Vec<SpecError>,
) {
    let mut first_seen: HashMap<&str, &ParsedHandler> = HashMap::new();
    for h in handlers {
        match first_seen.get(h.name_at.name.as_str()) {
            Some(first) => errors.push(SpecError {
                file: h.file.clone(),
                line: h.name_at.line,
                column: h.name_at.column,
                field: format!("{}.name", h.path),
                check: None,
                message: format!(
                    "duplicate handler name `{}`: already used at {}:{}",
                    h.name_at.name, first.file, first.name_at.line
                ),
            }),
            None => {
                first_seen.insert(&h.name_at.name, h);
            }
        }
    }
    let known: Vec<&str> = first_seen.keys().copied().collect();
    for r in refs {
        for (i, handler) in r.handlers.iter().enumerate() {
            if !first_seen.contains_key(handler.name.as_str()) {
                errors.push(SpecError {
                    file: r.file.clone(),
                    line: handler.line,
                    column: handler.column,
                    field: format!("{}.handlers[{i}]", r.path),
                    check: r.name.as_ref().map(|n| n.name.clone()),
                    message: format!(
                        "unknown handler `{}`{}",
                        handler.name,
                        did_you_mean(&handler.name, &known)
                    ),
                });
            }
        }
    }
}
