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
            for name in ["24h", "7d", "30d"] {
                if let Some(window) = windows.get(name) {
                    println!("{}", render(window));
                }
            }
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
