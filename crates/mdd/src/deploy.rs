//! `mdd deploy list|status|watch`: how far along deployments are, from the server's API.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mdd_core::State;
use mdd_core::terminal::printable;
use serde::Deserialize;

use crate::cli::{DeployCommand, DeployFormat, exit};
use crate::client::Client;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
struct Summary {
    name: String,
    description: Option<String>,
    selector: BTreeMap<String, String>,
    settle_ms: u64,
    started_at: String,
    done: bool,
    done_at: Option<String>,
    time_to_done_ms: Option<i64>,
    settles_at: Option<String>,
    total: usize,
    green: usize,
    open_regressions: usize,
}

#[derive(Debug, Clone, Deserialize)]
struct CheckProgress {
    name: String,
    owner: Option<String>,
    state: String,
    since: Option<String>,
    #[serde(default)]
    blocked_by: Vec<String>,
    #[serde(default)]
    output: String,
    time_to_green_ms: Option<i64>,
    reds_after_green: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct Regression {
    check: String,
    at: String,
    resolved_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Detail {
    #[serde(flatten)]
    summary: Summary,
    checks: Vec<CheckProgress>,
    regressions: Vec<Regression>,
}

pub fn deploy(command: DeployCommand) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match command {
            DeployCommand::List(args) => {
                let client = Client::from_args(&args.client)?;
                let answer: serde_json::Value = client.get("/api/v1/deployments").await?;
                if args.format == DeployFormat::Json {
                    println!("{}", serde_json::to_string_pretty(&answer["deployments"])?);
                    return Ok(exit::OK);
                }
                let list: Vec<Summary> = serde_json::from_value(answer["deployments"].clone())
                    .context("the server's deployment list")?;
                print!("{}", render_list(&list));
                Ok(exit::OK)
            }
            DeployCommand::Status(args) => {
                let client = Client::from_args(&args.client)?;
                let (raw, detail) = fetch(&client, &args.name).await?;
                if args.format == DeployFormat::Json {
                    println!("{}", serde_json::to_string_pretty(&raw)?);
                } else {
                    print!("{}", render_detail(&detail));
                }
                Ok(
                    if detail.summary.done && detail.summary.open_regressions == 0 {
                        exit::OK
                    } else {
                        exit::NOT_GREEN
                    },
                )
            }
            DeployCommand::Watch(args) => watch(args).await,
        }
    })
}

async fn fetch(client: &Client, name: &str) -> Result<(serde_json::Value, Detail)> {
    let raw: serde_json::Value = client
        .get(&format!(
            "/api/v1/deployments/{}",
            crate::serve::encode(name)
        ))
        .await?;
    let detail: Detail =
        serde_json::from_value(raw.clone()).context("the server's deployment detail")?;
    Ok((raw, detail))
}

async fn watch(args: crate::cli::DeployWatchArgs) -> Result<u8> {
    let client = Client::from_args(&args.client)?;
    let started = Instant::now();
    let terminal = console::Term::stdout().is_term() && args.format == DeployFormat::Text;
    let mut last_line = String::new();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        // A server that is briefly away (a restart) does not end the watch; it is retried.
        let fetched = fetch(&client, &args.name).await;
        let (raw, detail) = match fetched {
            Ok(fetched) => fetched,
            Err(e) if started.elapsed() < args.timeout && is_transient(&e) => {
                eprintln!("mdd: {e:#}; retrying");
                tokio::time::sleep(args.every).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let done = detail.summary.done;
        let timed_out = started.elapsed() >= args.timeout;
        if args.format == DeployFormat::Json {
            if done || timed_out {
                println!("{}", serde_json::to_string_pretty(&raw)?);
            }
        } else if terminal {
            let term = console::Term::stdout();
            let _ = term.clear_screen();
            print!("{}", render_detail(&detail));
            std::io::stdout().flush()?;
        } else {
            let line = progress_line(&detail.summary);
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        if done {
            if !terminal && args.format == DeployFormat::Text {
                print!("{}", render_detail(&detail));
            }
            return Ok(exit::OK);
        }
        if timed_out {
            eprintln!(
                "mdd: deployment {} not done after {}",
                args.name,
                mdd_core::format_duration(args.timeout)
            );
            return Ok(exit::NOT_GREEN);
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(exit::INTERRUPTED),
            _ = tokio::time::sleep(args.every) => {}
        }
    }
}

/// Errors worth retrying while watching: the server unreachable or answering 5xx.
fn is_transient(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}");
    !(text.contains("404") || text.contains("401") || text.contains("403"))
}

fn bar(green: usize, total: usize, width: usize) -> String {
    let filled = (green * width).checked_div(total).unwrap_or(0).min(width);
    format!("[{}{}]", "█".repeat(filled), "░".repeat(width - filled))
}

fn human_ms(ms: i64) -> String {
    mdd_core::format_duration(Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0)))
}

fn phase(s: &Summary) -> String {
    if s.done {
        let after = s.time_to_done_ms.map(human_ms).unwrap_or_default();
        if s.open_regressions > 0 {
            format!("done after {after}, {} regressed", s.open_regressions)
        } else {
            format!("done after {after}")
        }
    } else if let Some(at) = &s.settles_at {
        format!("settling: done at {} if it stays green", short_time(at))
    } else {
        "in progress".to_string()
    }
}

fn progress_line(s: &Summary) -> String {
    format!(
        "{} {} {}/{} green · {}",
        s.name,
        bar(s.green, s.total, 20),
        s.green,
        s.total,
        phase(s)
    )
}

/// `2026-11-26T19:00:00.123Z` as `2026-11-26 19:00:00`.
fn short_time(rfc3339: &str) -> String {
    rfc3339
        .chars()
        .take(19)
        .collect::<String>()
        .replace('T', " ")
}

fn render_list(list: &[Summary]) -> String {
    if list.is_empty() {
        return "no deployments in the applied spec\n".to_string();
    }
    let width = list
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(4);
    let mut out = String::new();
    for s in list {
        let _ = writeln!(
            out,
            "{:<width$}  {} {:>4}/{:<4} {}",
            s.name,
            bar(s.green, s.total, 20),
            s.green,
            s.total,
            phase(s)
        );
    }
    out
}

fn mark(state: &str) -> &'static str {
    state.parse::<State>().map_or("?", State::mark)
}

fn render_detail(d: &Detail) -> String {
    let s = &d.summary;
    let mut out = String::new();
    let selector: Vec<String> = s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        out,
        "{}{} (selector {}, settle {})",
        s.name,
        s.description
            .as_deref()
            .map(|d| format!(" — {}", printable(d)))
            .unwrap_or_default(),
        if selector.is_empty() {
            "everything".to_string()
        } else {
            selector.join(",")
        },
        human_ms(i64::try_from(s.settle_ms).unwrap_or(i64::MAX))
    );
    let _ = writeln!(
        out,
        "{} {}/{} green · {} · started {} UTC",
        bar(s.green, s.total, 30),
        s.green,
        s.total,
        phase(s),
        short_time(&s.started_at)
    );
    let red: Vec<&CheckProgress> = d.checks.iter().filter(|c| c.state != "passing").collect();
    if !red.is_empty() {
        let _ = writeln!(out, "\nstill red ({}):", red.len());
        // Blocked checks are shown under a blocker that is itself listed; the rest by owner.
        let mut by_owner: BTreeMap<&str, Vec<&CheckProgress>> = BTreeMap::new();
        for c in red.iter().filter(|c| shown_under(c, &red).is_none()) {
            by_owner
                .entry(c.owner.as_deref().unwrap_or("(no owner)"))
                .or_default()
                .push(c);
        }
        for (owner, checks) in by_owner {
            let _ = writeln!(out, "  {}", printable(owner));
            for c in checks {
                render_red(&mut out, c, &red, 4);
            }
        }
    }
    let green: Vec<&CheckProgress> = d.checks.iter().filter(|c| c.state == "passing").collect();
    if !green.is_empty() {
        let _ = writeln!(out, "\ngreen ({}):", green.len());
        for c in green {
            let after = c
                .time_to_green_ms
                .map(|ms| format!("green after {}", human_ms(ms)))
                .unwrap_or_default();
            let reds = if c.reds_after_green > 0 {
                format!(", red again {}×", c.reds_after_green)
            } else {
                String::new()
            };
            let _ = writeln!(out, "  ✓ {}  {after}{reds}", c.name);
        }
    }
    let open: Vec<&Regression> = d
        .regressions
        .iter()
        .filter(|r| r.resolved_at.is_none())
        .collect();
    if !open.is_empty() {
        let _ = writeln!(out, "\nregressions since done:");
        for r in open {
            let _ = writeln!(out, "  ✗ {} since {} UTC", r.check, short_time(&r.at));
        }
    }
    out
}

/// The blocker a blocked check is drawn under: the first of its blockers that is itself red.
fn shown_under<'a>(check: &'a CheckProgress, red: &[&CheckProgress]) -> Option<&'a str> {
    if check.state != "blocked" {
        return None;
    }
    check
        .blocked_by
        .iter()
        .find(|b| red.iter().any(|r| r.name == **b))
        .map(String::as_str)
}

fn render_red(out: &mut String, c: &CheckProgress, red: &[&CheckProgress], indent: usize) {
    let since = c
        .since
        .as_deref()
        .map(|s| format!(" since {} UTC", short_time(s)))
        .unwrap_or_default();
    let detail = if c.state == "blocked" {
        format!("blocked by {}", c.blocked_by.join(", "))
    } else {
        printable(c.output.lines().next().unwrap_or_default()).into_owned()
    };
    let _ = writeln!(
        out,
        "{:indent$}{} {}  {}{since}  {detail}",
        "",
        mark(&c.state),
        c.name,
        c.state
    );
    // The spec has no dependency cycles, but a deep chain still stops somewhere.
    if indent > 40 {
        return;
    }
    for blocked in red
        .iter()
        .filter(|b| shown_under(b, red) == Some(c.name.as_str()))
    {
        render_red(out, blocked, red, indent + 2);
    }
}
