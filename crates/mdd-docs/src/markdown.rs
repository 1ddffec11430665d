//! Markdown that renders well on a git host: headings per owner and check, a table of facts
//! per check, dependencies as a Mermaid diagram (GitHub and GitLab draw it).

use std::fmt::Write as _;

use mdd_core::spec::Check;

use crate::{Document, anchor, join};

/// Text for a table cell or a line: no line breaks, no cell separators, no stray HTML.
fn inline(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn code(text: &str) -> String {
    // A code span that contains backticks needs a longer fence.
    let fence = if text.contains('`') { "``" } else { "`" };
    format!(
        "{fence}{}{fence}",
        inline(text).replace("\\|", "|").replace('|', "\\|")
    )
}

fn link(name: &str) -> String {
    format!("[{}](#{})", inline(name), anchor(name))
}

pub fn render(doc: &Document<'_>) -> String {
    let spec = doc.spec;
    let owners = doc.by_owner();
    let mut out = String::new();
    let _ = writeln!(out, "# Integration points\n");
    let _ = writeln!(
        out,
        "The living document of this spec: {} integration point{}, owned by {} team{}.",
        spec.checks.len(),
        if spec.checks.len() == 1 { "" } else { "s" },
        owners.len(),
        if owners.len() == 1 { "" } else { "s" },
    );
    if let Some(source) = &doc.source {
        let _ = writeln!(out, "Live states from {}.", inline(source));
    }
    out.push('\n');

    if !spec.deployments.is_empty() {
        let _ = writeln!(out, "## Deployments\n");
        for d in &spec.deployments {
            let selected: Vec<&str> = spec
                .checks
                .iter()
                .filter(|c| c.matches_labels(&d.selector))
                .map(|c| c.name.as_str())
                .collect();
            let selector: Vec<String> =
                d.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                out,
                "- **{}**{}: {} check{} ({}), done when all pass for {}.",
                inline(&d.name),
                d.description
                    .as_deref()
                    .map(|t| format!(" — {}", inline(t)))
                    .unwrap_or_default(),
                selected.len(),
                if selected.len() == 1 { "" } else { "s" },
                if selector.is_empty() {
                    "every check".to_string()
                } else {
                    format!("selector {}", code(&selector.join(", ")))
                },
                mdd_core::format_duration(d.settle)
            );
        }
        out.push('\n');
    }

    if spec.checks.iter().any(|c| !c.depends_on.is_empty()) {
        let _ = writeln!(out, "## Dependencies\n");
        let _ = writeln!(out, "An arrow goes from what is needed to what needs it.\n");
        let _ = writeln!(out, "```mermaid\ngraph LR");
        let id = |name: &str| {
            spec.checks
                .iter()
                .position(|c| c.name == name)
                .map_or_else(|| "unknown".to_string(), |i| format!("n{i}"))
        };
        for (i, check) in spec.checks.iter().enumerate() {
            let mark = doc
                .live
                .and_then(|l| l.get(&check.name))
                .map(|l| format!(" {}", l.state.mark()))
                .unwrap_or_default();
            // Mermaid labels in quotes; quotes inside become #quot;.
            let _ = writeln!(
                out,
                "  n{i}[\"{}{mark}\"]",
                check.name.replace('"', "#quot;")
            );
        }
        for check in &spec.checks {
            for dep in &check.depends_on {
                let _ = writeln!(out, "  {} --> {}", id(dep), id(&check.name));
            }
        }
        let _ = writeln!(out, "```\n");
    }

    let _ = writeln!(out, "## Owners\n");
    for (owner, checks) in &owners {
        let names: Vec<String> = checks.iter().map(|c| link(&c.name)).collect();
        let _ = writeln!(out, "- **{}**: {}", inline(owner), names.join(", "));
    }
    out.push('\n');

    for (owner, checks) in owners {
        let _ = writeln!(out, "## {}\n", inline(owner));
        for check in checks {
            render_check(doc, check, &mut out);
        }
    }
    out
}

fn render_check(doc: &Document<'_>, check: &Check, out: &mut String) {
    let _ = writeln!(out, "<a id=\"{}\"></a>", anchor(&check.name));
    let live = doc.live.and_then(|l| l.get(&check.name));
    let state = match (doc.live, live) {
        (_, Some(live)) => format!(
            " — {} {}{}",
            live.state.mark(),
            live.state.as_str(),
            live.since
                .as_deref()
                .map(|s| format!(" since {}", inline(s)))
                .unwrap_or_default()
        ),
        (Some(_), None) => " — … no result yet".to_string(),
        (None, None) => String::new(),
    };
    let _ = writeln!(out, "### {}{state}\n", inline(&check.name));
    if let Some(description) = &check.description {
        let _ = writeln!(out, "{}\n", inline(description));
    }
    let _ = writeln!(out, "*Why it matters:* {}\n", inline(&doc.why(check)));
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(
        out,
        "| Probe | {} {} |",
        check.probe.kind(),
        code(&check.probe.target())
    );
    if let Some(runbook) = &check.runbook {
        let _ = writeln!(
            out,
            "| Runbook | <{}> |",
            inline(runbook).replace(' ', "%20")
        );
    }
    if !check.labels.is_empty() {
        let labels: Vec<String> = check
            .labels
            .iter()
            .map(|(k, v)| code(&format!("{k}={v}")))
            .collect();
        let _ = writeln!(out, "| Labels | {} |", labels.join(" "));
    }
    if !check.depends_on.is_empty() {
        let deps: Vec<String> = check.depends_on.iter().map(|d| link(d)).collect();
        let _ = writeln!(out, "| Depends on | {} |", deps.join(", "));
    }
    let needed_by: Vec<String> = doc
        .dependents(&check.name)
        .iter()
        .map(|d| link(d))
        .collect();
    if !needed_by.is_empty() {
        let _ = writeln!(out, "| Needed by | {} |", needed_by.join(", "));
    }
    let deployments = doc.deployments_of(check);
    if !deployments.is_empty() {
        let _ = writeln!(out, "| Deployments | {} |", inline(&join(&deployments)));
    }
    let _ = writeln!(out, "| Runs | {} |", inline(&crate::runs(check)));
    out.push('\n');
}
