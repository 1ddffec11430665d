//! `mdd report`: how often things break — incidents, time failing, time to recover and flaps
//! per check and per owner over the last 24 h, 7 d and 30 d, worst first.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::{ReportArgs, exit};
use crate::client::Client;

fn human(ms: Option<i64>) -> String {
    ms.map(|ms| {
        mdd_core::format_duration(Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0)))
    })
    .unwrap_or_else(|| "-".to_string())
}

/// One window as a table: the top offenders and the owners.
pub fn render(window: &serde_json::Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "last {} ({} → {})",
        window["window"].as_str().unwrap_or_default(),
        window["from"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(16)
            .collect::<String>(),
        window["to"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(16)
            .collect::<String>()
    );
    let table = |out: &mut String, rows: &[serde_json::Value], key: &str, title: &str| {
        if rows.is_empty() {
            let _ = writeln!(out, "  {title}: nothing broke");
            return;
        }
        let _ = writeln!(
            out,
            "  {:<32} {:<16} {:>9} {:>10} {:>8} {:>6} {:>5}",
            title, "owner", "incidents", "failing", "mttr", "flaps", "open"
        );
        for row in rows {
            let _ = writeln!(
                out,
                "  {:<32} {:<16} {:>9} {:>10} {:>8} {:>6} {:>5}",
                mdd_core::terminal::printable(row[key].as_str().unwrap_or_default()),
                if key == "owner" {
                    "".into()
                } else {
                    mdd_core::terminal::printable(row["owner"].as_str().unwrap_or("-"))
                },
                row["incidents"].as_u64().unwrap_or(0),
                human(row["failing_ms"].as_i64()),
                human(row["mttr_ms"].as_i64()),
                row["flaps"].as_u64().unwrap_or(0),
                row["open"].as_u64().unwrap_or(0),
            );
        }
    };
    let top = window["top_offenders"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    table(&mut out, &top, "check", "top offenders");
    let mut owners = window["owners"].as_array().cloned().unwrap_or_default();
    owners.sort_by_key(|o| std::cmp::Reverse(o["failing_ms"].as_i64().unwrap_or(0)));
    table(&mut out, &owners, "owner", "by owner");
    out
}

/// Several windows next to each other: a row per check (then per owner) that broke in any of
/// them, worst in the shortest window first, with each window's figures in its own columns.
pub fn side_by_side(windows: &[&serde_json::Value]) -> String {
    let mut out = String::new();
    let section = |out: &mut String, list_key: &str, key: &str, title: &str| {
        // Every name any window lists, ranked by the first window that has it, then the next.
        let mut names: Vec<(String, String)> = Vec::new();
        for window in windows {
            let mut rows = window[list_key].as_array().cloned().unwrap_or_default();
            rows.sort_by_key(|r| std::cmp::Reverse(r["failing_ms"].as_i64().unwrap_or(0)));
            for row in rows {
                let name = row[key].as_str().unwrap_or_default().to_string();
                if !names.iter().any(|(n, _)| *n == name) {
                    let owner = row["owner"].as_str().unwrap_or("-").to_string();
                    names.push((name, owner));
                }
            }
        }
        if names.is_empty() {
            let _ = writeln!(out, "{title}: nothing broke");
            return;
        }
        let with_owner = key != "owner";
        let first = 28;
        let owner_width = if with_owner { 15 } else { 0 };
        let lead = first + 1 + owner_width + usize::from(with_owner);
        // Titles over each window's columns.
        let mut head = format!("{:<lead$}", "");
        for window in windows {
            let _ = write!(
                head,
                "| {:<33}",
                format!("last {}", window["window"].as_str().unwrap_or_default())
            );
        }
        let _ = writeln!(out, "{}", head.trim_end());
        let mut columns = format!("{:<first$} ", title);
        if with_owner {
            let _ = write!(columns, "{:<owner_width$} ", "owner");
        }
        for _ in windows {
            let _ = write!(
                columns,
                "| {:>9} {:>8} {:>7} {:>5} ",
                "incidents", "failing", "mttr", "flaps"
            );
        }
        let _ = writeln!(out, "{}", columns.trim_end());
        for (name, owner) in &names {
            let cut = |text: &str, width: usize| -> String {
                let text = mdd_core::terminal::printable(text).into_owned();
                if text.chars().count() > width {
                    let mut short: String = text.chars().take(width - 1).collect();
                    short.push('…');
                    short
                } else {
                    text
                }
            };
            let mut line = format!("{:<first$} ", cut(name, first));
            if with_owner {
                let _ = write!(line, "{:<owner_width$} ", cut(owner, owner_width));
            }
            for window in windows {
                let row = window[list_key]
                    .as_array()
                    .and_then(|rows| rows.iter().find(|r| r[key].as_str() == Some(name)));
                match row {
                    Some(row) => {
                        let open = row["open"].as_u64().unwrap_or(0);
                        let _ = write!(
                            line,
                            "| {:>9} {:>8} {:>7} {:>5} ",
                            format!(
                                "{}{}",
                                row["incidents"].as_u64().unwrap_or(0),
                                if open > 0 { "*" } else { "" }
                            ),
                            human(row["failing_ms"].as_i64()),
                            human(row["mttr_ms"].as_i64()),
                            row["flaps"].as_u64().unwrap_or(0),
                        );
                    }
                    None => {
                        let _ = write!(line, "| {:>9} {:>8} {:>7} {:>5} ", "-", "-", "-", "-");
                    }
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    };
    // Availability of each deployment, the windows side by side.
    let names: Vec<String> = windows
        .first()
        .and_then(|w| w["deployments"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|d| d["deployment"].as_str().map(str::to_string))
        .collect();
    if !names.is_empty() {
        let mut head = format!("{:<28}", "availability");
        for window in windows {
            let _ = write!(
                head,
                " | {:>9}",
                window["window"].as_str().unwrap_or_default()
            );
        }
        let _ = writeln!(out, "{}", head.trim_end());
        for name in &names {
            let mut line = format!("{:<28}", mdd_core::terminal::printable(name));
            for window in windows {
                let share = window["deployments"]
                    .as_array()
                    .and_then(|list| list.iter().find(|d| d["deployment"].as_str() == Some(name)))
                    .and_then(|d| d["availability"].as_f64());
                let _ = write!(line, " | {:>9}", mdd_server::view::percent(share));
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out.push('\n');
    }
    section(&mut out, "top_offenders", "check", "top offenders");
    out.push('\n');
    section(&mut out, "owners", "owner", "by owner");
    out.push_str("* one still open\n");
    out
}

pub fn report(args: ReportArgs) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = Client::from_args(&args.client)?;
    let path = match &args.window {
        Some(window) => format!("/api/v1/report?window={}", crate::serve::encode(window)),
        None => "/api/v1/report".to_string(),
    };
    let answer: serde_json::Value = runtime.block_on(client.get(&path))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(exit::OK);
    }
    let counts = match answer["windows"].as_object() {
        Some(windows) => {
            let list: Vec<&serde_json::Value> = ["24h", "7d", "30d"]
                .iter()
                .filter_map(|name| windows.get(*name))
                .collect();
            println!("{}", side_by_side(&list));
            windows
                .values()
                .find_map(|w| w["counts"].as_str())
                .map(str::to_string)
        }
        None => {
            println!("{}", render(&answer));
            answer["counts"].as_str().map(str::to_string)
        }
    };
    if let Some(counts) = counts {
        println!("{}", wrap(&counts, 96));
    }
    Ok(exit::OK)
}

/// Words wrapped at `width` columns.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}
