//! HTML that prints well: one page, every check a block that does not break across pages,
//! dependencies as an SVG drawn here (columns by depth, arrows from what is needed to what
//! needs it). Everything shown is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mdd_core::spec::Check;

use crate::{Document, Styles, anchor, join};

pub const STYLESHEET: &str = include_str!("docs.css");

/// Escapes text for HTML and SVG content and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn link(name: &str) -> String {
    format!("<a href=\"#{}\">{}</a>", anchor(name), escape(name))
}

/// The CSS class that colours a state (`s-passing`, …), the same in the document and the
/// dashboard.
pub fn state_class(state: mdd_core::State) -> &'static str {
    use mdd_core::State;
    match state {
        State::Pending => "s-pending",
        State::Passing => "s-passing",
        State::Warning => "s-warning",
        State::Failing => "s-failing",
        State::Unknown => "s-unknown",
        State::Blocked => "s-blocked",
        State::Stale => "s-stale",
        State::Flapping => "s-flapping",
        State::Silenced => "s-silenced",
    }
}

/// A check's class in this document: its live state's, or pending without one.
fn live_class(doc: &Document<'_>, name: &str) -> &'static str {
    state_class(
        doc.live
            .and_then(|l| l.get(name))
            .map_or(mdd_core::State::Pending, |l| l.state),
    )
}

pub fn render(doc: &Document<'_>, styles: Styles<'_>) -> String {
    let spec = doc.spec;
    let owners = doc.by_owner();
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Integration points · mdd</title>\n",
    );
    match styles {
        Styles::Inline => {
            let _ = writeln!(out, "<style>\n{STYLESHEET}</style>");
        }
        Styles::Link(href) => {
            let _ = writeln!(out, "<link rel=\"stylesheet\" href=\"{}\">", escape(href));
        }
    }
    out.push_str(
        "</head>\n<body class=\"docs\">\n<main id=\"main\">\n<h1>Integration points</h1>\n",
    );
    let _ = writeln!(
        out,
        "<p class=\"lead\">The living document of this spec: {} integration point{}, owned by {} team{}.{}</p>",
        spec.checks.len(),
        if spec.checks.len() == 1 { "" } else { "s" },
        owners.len(),
        if owners.len() == 1 { "" } else { "s" },
        doc.source
            .as_deref()
            .map(|s| format!(" Live states from {}.", escape(s)))
            .unwrap_or_default()
    );

    if !spec.deployments.is_empty() {
        out.push_str("<h2>Deployments</h2>\n<ul>\n");
        for d in &spec.deployments {
            let count = spec
                .checks
                .iter()
                .filter(|c| c.matches_labels(&d.selector))
                .count();
            let selector: Vec<String> =
                d.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                out,
                "<li><strong>{}</strong>{}: {count} check{} ({}), done when all pass for {}.</li>",
                escape(&d.name),
                d.description
                    .as_deref()
                    .map(|t| format!(" — {}", escape(t)))
                    .unwrap_or_default(),
                if count == 1 { "" } else { "s" },
                if selector.is_empty() {
                    "every check".to_string()
                } else {
                    format!("selector <code>{}</code>", escape(&selector.join(", ")))
                },
                mdd_core::format_duration(d.settle)
            );
        }
        out.push_str("</ul>\n");
    }

    if spec.checks.iter().any(|c| !c.depends_on.is_empty()) {
        out.push_str(
            "<h2>Dependencies</h2>\n<p>An arrow goes from what is needed to what needs it.</p>\n",
        );
        out.push_str(&graph(doc, &|name| format!("#{}", anchor(name))));
    }

    out.push_str("<h2>Owners</h2>\n<ul class=\"owners\">\n");
    for (owner, checks) in &owners {
        let names: Vec<String> = checks.iter().map(|c| link(&c.name)).collect();
        let _ = writeln!(
            out,
            "<li><strong>{}</strong>: {}</li>",
            escape(owner),
            names.join(", ")
        );
    }
    out.push_str("</ul>\n");

    for (owner, checks) in owners {
        let _ = writeln!(out, "<section class=\"owner\">\n<h2>{}</h2>", escape(owner));
        for check in checks {
            render_check(doc, check, &mut out);
        }
        out.push_str("</section>\n");
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn render_check(doc: &Document<'_>, check: &Check, out: &mut String) {
    let live = doc.live.and_then(|l| l.get(&check.name));
    let _ = writeln!(
        out,
        "<article class=\"check\" id=\"{}\">",
        anchor(&check.name)
    );
    let state = match (doc.live, live) {
        (_, Some(live)) => format!(
            " <span class=\"state {}\">{} {}{}</span>",
            live_class(doc, &check.name),
            live.state.mark(),
            live.state.as_str(),
            live.since
                .as_deref()
                .map(|s| format!(" since {}", escape(s)))
                .unwrap_or_default()
        ),
        (Some(_), None) => " <span class=\"state s-pending\">… no result yet</span>".to_string(),
        (None, None) => String::new(),
    };
    let _ = writeln!(out, "<h3>{}{state}</h3>", escape(&check.name));
    if let Some(description) = &check.description {
        let _ = writeln!(out, "<p>{}</p>", escape(description));
    }
    let _ = writeln!(
        out,
        "<p class=\"why\"><em>Why it matters:</em> {}</p>",
        escape(&doc.why(check))
    );
    out.push_str("<dl>\n");
    let _ = writeln!(
        out,
        "<dt>Probe</dt><dd>{} <code>{}</code></dd>",
        check.probe.kind(),
        escape(&check.probe.target())
    );
    if let Some(runbook) = &check.runbook {
        if runbook.starts_with("https://") || runbook.starts_with("http://") {
            let _ = writeln!(
                out,
                "<dt>Runbook</dt><dd><a href=\"{0}\">{0}</a></dd>",
                escape(runbook)
            );
        } else {
            let _ = writeln!(out, "<dt>Runbook</dt><dd>{}</dd>", escape(runbook));
        }
    }
    if !check.labels.is_empty() {
        let labels: Vec<String> = check
            .labels
            .iter()
            .map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(v)))
            .collect();
        let _ = writeln!(out, "<dt>Labels</dt><dd>{}</dd>", labels.join(" "));
    }
    if !check.depends_on.is_empty() {
        let deps: Vec<String> = check.depends_on.iter().map(|d| link(d)).collect();
        let _ = writeln!(out, "<dt>Depends on</dt><dd>{}</dd>", deps.join(", "));
    }
    let needed_by: Vec<String> = doc
        .dependents(&check.name)
        .iter()
        .map(|d| link(d))
        .collect();
    if !needed_by.is_empty() {
        let _ = writeln!(out, "<dt>Needed by</dt><dd>{}</dd>", needed_by.join(", "));
    }
    let deployments = doc.deployments_of(check);
    if !deployments.is_empty() {
        let _ = writeln!(
            out,
            "<dt>Deployments</dt><dd>{}</dd>",
            escape(&join(&deployments))
        );
    }
    let _ = writeln!(out, "<dt>Runs</dt><dd>{}</dd>", escape(&crate::runs(check)));
    out.push_str("</dl>\n</article>\n");
}

/// The dependency graph as SVG: a column per depth (checks needing nothing on the left),
/// an arrow from each dependency to each check that needs it.
pub(crate) fn graph(doc: &Document<'_>, link: &dyn Fn(&str) -> String) -> String {
    let checks = &doc.spec.checks;
    let index: BTreeMap<&str, usize> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    // Depth = longest chain of dependencies below a check (specs have no cycles; the bound
    // guards anyway).
    let mut depth = vec![0usize; checks.len()];
    for _ in 0..checks.len().min(64) {
        let mut changed = false;
        for (i, check) in checks.iter().enumerate() {
            for dep in &check.depends_on {
                if let Some(&j) = index.get(dep.as_str())
                    && depth[j] + 1 > depth[i]
                {
                    depth[i] = depth[j] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let (box_w, box_h, gap_x, gap_y, pad) = (180.0, 30.0, 60.0, 14.0, 10.0);
    let mut row_in_column: BTreeMap<usize, usize> = BTreeMap::new();
    let mut position = vec![(0.0, 0.0); checks.len()];
    for (i, d) in depth.iter().enumerate() {
        let row = row_in_column.entry(*d).or_default();
        position[i] = (
            pad + *d as f64 * (box_w + gap_x),
            pad + *row as f64 * (box_h + gap_y),
        );
        *row += 1;
    }
    let columns = depth.iter().max().map_or(1, |d| d + 1);
    let rows = row_in_column.values().max().copied().unwrap_or(1);
    let width = 2.0 * pad + columns as f64 * box_w + (columns - 1) as f64 * gap_x;
    let height = 2.0 * pad + rows as f64 * box_h + (rows.saturating_sub(1)) as f64 * gap_y;
    // In a box that scrolls: shrunk to the page, a 200-check graph's names would be too small
    // to read.
    let mut svg = format!(
        "<div class=\"graph-box\"><svg class=\"graph\" width=\"{width}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"dependencies between the checks\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"6\" markerHeight=\"6\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\"/></marker></defs>\n"
    );
    for (i, check) in checks.iter().enumerate() {
        for dep in &check.depends_on {
            if let Some(&j) = index.get(dep.as_str()) {
                let (x1, y1) = (position[j].0 + box_w, position[j].1 + box_h / 2.0);
                let (x2, y2) = (position[i].0, position[i].1 + box_h / 2.0);
                let d = if depth[i] == depth[j] + 1 {
                    // Neighbouring columns: a curve through the gap between them.
                    format!(
                        "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
                        x1 + gap_x / 2.0,
                        x2 - gap_x / 2.0
                    )
                } else {
                    // Across columns: out into the gap, down to the lane under the source's
                    // row (no box is ever there), along it, and up or down the target's gap:
                    // an edge never passes behind a box it does not connect.
                    let lane = position[j].1 + box_h + gap_y / 2.0;
                    let (out_x, in_x) = (x1 + gap_x / 2.0, x2 - gap_x / 2.0);
                    format!("M{x1:.1},{y1:.1} H{out_x:.1} V{lane:.1} H{in_x:.1} V{y2:.1} H{x2:.1}")
                };
                let _ = writeln!(
                    svg,
                    "<path class=\"edge\" data-from=\"{}\" data-to=\"{}\" d=\"{d}\" marker-end=\"url(#arrow)\"/>",
                    escape(dep),
                    escape(&check.name)
                );
            }
        }
    }
    for (i, check) in checks.iter().enumerate() {
        let (x, y) = position[i];
        let mark = doc
            .live
            .and_then(|l| l.get(&check.name))
            .map(|l| format!("{} ", l.state.mark()))
            .unwrap_or_default();
        // What fits in the box at 12 px; the whole name on hover.
        let fits = 22usize.saturating_sub(mark.chars().count());
        let shown = if check.name.chars().count() > fits {
            let mut short: String = check.name.chars().take(fits.saturating_sub(1)).collect();
            short.push('…');
            short
        } else {
            check.name.clone()
        };
        let _ = writeln!(
            svg,
            "<a href=\"{}\"><title>{}</title><rect class=\"node {}\" data-check=\"{}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{box_w}\" height=\"{box_h}\" rx=\"4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}{}</text></a>",
            escape(&link(&check.name)),
            escape(&check.name),
            live_class(doc, &check.name),
            escape(&check.name),
            x + 8.0,
            y + box_h / 2.0 + 4.0,
            escape(&mark),
            escape(&shown)
        );
    }
    svg.push_str("</svg></div>\n");
    svg
}
