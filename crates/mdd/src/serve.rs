//! `mdd server` and the client commands that talk to it: apply, result, status, token.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::{ApplyArgs, ResultArgs, ServerArgs, StatusArgs, TokenCommand, exit};
use crate::client::{Client, ServerSaid};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn server(args: ServerArgs) -> Result<u8> {
    let crate::server_config::Settings { config } = crate::server_config::server_settings(args)?;
    let data = match &config.database {
        Some(url) => mdd_server::redact_database_url(url),
        None => config.data_dir.display().to_string(),
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let running = mdd_server::start(config, shutdown.clone())
            .await
            .context("cannot start the server")?;
        // The address a client on this host reaches it by: 0.0.0.0 is not one.
        let mut reach = running.addr;
        if reach.ip().is_unspecified() {
            reach.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        if let Some(secret) = &running.new_admin_token {
            eprintln!(
                "mdd: created the first admin token. It is shown once and stored only as a hash:"
            );
            eprintln!("  {secret}");
            eprintln!("mdd: to use it from this shell (mdd apply, mdd status, mdd token …):");
            eprintln!("  export MDD_SERVER={scheme}://{reach} MDD_TOKEN={secret}");
        }
        eprintln!(
            "mdd: serving on {scheme}://{} with data in {}",
            running.addr, data
        );
        tokio::spawn(handle_signals(running.shared.clone(), shutdown));
        running.finished().await;
        eprintln!("mdd: stopped; everything acknowledged is stored");
        Ok(exit::OK)
    })
}

/// SIGINT/SIGTERM stop the server gracefully; SIGHUP reloads the --spec files and the TLS
/// certificate.
async fn handle_signals(shared: std::sync::Arc<mdd_server::Shared>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                if let Some(tls) = &shared.tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("reloaded the TLS certificate"),
                        Err(e) => tracing::error!("TLS certificate not reloaded, the one in use stays: {e}"),
                    }
                }
                match mdd_server::reload_specs(&shared).await {
                    Ok(diff) => tracing::info!(
                        added = diff.added.len(), changed = diff.changed.len(), removed = diff.removed.len(),
                        "reloaded the spec files"
                    ),
                    Err(errors) => tracing::error!("spec files not reloaded, nothing changed:\n{errors}"),
                }
            }
        }
    }
    shutdown.cancel();
}

pub fn agent(args: crate::cli::AgentArgs) -> Result<u8> {
    let mut config = crate::agent_config::agent_config(args)?;
    // One thread does it all: an agent runs a few plugins a second and must stay small; a single
    // thread has no cross-thread wake-ups, no per-thread malloc arenas.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::verify::stop_on_signal(shutdown.clone()));
        match mdd_agent::credentials(&mut config, &shutdown).await {
            Ok(()) => {}
            Err(mdd_agent::AgentError::Stopped) => return Ok(exit::OK),
            Err(e) => return Err(e.into()),
        }
        eprintln!(
            "mdd: agent {} for {} with subscriptions [{}], spool in {}",
            config.name,
            config.server,
            config.subscriptions.join(", "),
            config.data_dir.display()
        );
        mdd_agent::run(config, shutdown)
            .await
            .context("the agent stopped")?;
        Ok(exit::OK)
    })
}

#[derive(Deserialize)]
struct ApplyAnswer {
    revision: i64,
    dry_run: bool,
    added: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
    unchanged: usize,
    #[serde(default)]
    deployments: NamedDiff,
    #[serde(default)]
    handlers: NamedDiff,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize, Default)]
struct NamedDiff {
    added: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
}

pub fn apply(args: ApplyArgs) -> Result<u8> {
    let mut files = Vec::new();
    for path in &args.specs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read spec {}", path.display()))?;
        let name = crate::spec_name::spec_name(path)
            .with_context(|| format!("cannot read spec {}", path.display()))?;
        files.push(json!({ "file": name, "text": text }));
    }
    let client = Client::from_args(&args.client)?;
    let body = json!({ "files": files, "dry_run": args.dry_run, "prune": args.prune });
    let answer: Result<ApplyAnswer> = runtime()?.block_on(client.post("/api/v1/spec", &body));
    match answer {
        Ok(answer) => {
            let mut out = std::io::stdout().lock();
            for (word, names) in [
                ("added", &answer.added),
                ("changed", &answer.changed),
                ("removed", &answer.removed),
            ] {
                for name in names {
                    writeln!(out, "{word:>8}  {name}")?;
                }
            }
            for (kind, diff) in [
                ("deployment", &answer.deployments),
                ("handler", &answer.handlers),
            ] {
                for (word, names) in [
                    ("added", &diff.added),
                    ("changed", &diff.changed),
                    ("removed", &diff.removed),
                ] {
                    for name in names {
                        writeln!(out, "{word:>8}  {kind} {name}")?;
                    }
                }
            }
            let verb = if answer.dry_run { "would be" } else { "now" };
            let others = |kind: &str, diff: &NamedDiff| {
                let changes = diff.added.len() + diff.changed.len() + diff.removed.len();
                (changes > 0).then(|| {
                    format!(
                        "; {kind}: {} added, {} changed, {} removed",
                        diff.added.len(),
                        diff.changed.len(),
                        diff.removed.len()
                    )
                })
            };
            writeln!(
                out,
                "{} added, {} changed, {} removed, {} unchanged{}{}; revision {verb} {}",
                answer.added.len(),
                answer.changed.len(),
                answer.removed.len(),
                answer.unchanged,
                others("deployments", &answer.deployments).unwrap_or_default(),
                others("handlers", &answer.handlers).unwrap_or_default(),
                answer.revision
            )?;
            for warning in &answer.warnings {
                eprintln!("mdd: warning: {warning}");
            }
            Ok(exit::OK)
        }
        Err(error) => match error.downcast_ref::<ServerSaid>() {
            Some(said) if said.status == 400 && said.body.get("errors").is_some() => {
                for e in said.body["errors"].as_array().into_iter().flatten() {
                    eprintln!("{}", e["text"].as_str().unwrap_or_default());
                }
                eprintln!("mdd: {said}");
                Ok(exit::USAGE)
            }
            _ => Err(error),
        },
    }
}

pub fn result(args: ResultArgs) -> Result<u8> {
    let entity = match args.entity {
        Some(e) => e,
        None => nix::unistd::gethostname()
            .context("cannot read this host's name; pass --entity")?
            .to_string_lossy()
            .into_owned(),
    };
    let id = args.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let body = json!({
        "results": [{
            "id": id, "check": args.check, "entity": entity, "status": args.status,
            "output": args.output, "executed_at": jiff::Timestamp::now().to_string(),
        }]
    });
    let client = Client::from_args(&args.client)?;
    let answer: serde_json::Value = runtime()?.block_on(client.post("/api/v1/results", &body))?;
    let stored = answer["stored"].as_u64().unwrap_or(0);
    println!(
        "{} result {id} for {} on {entity}",
        if stored == 1 { "stored" } else { "already had" },
        args.check
    );
    Ok(exit::OK)
}

pub fn status(args: StatusArgs) -> Result<u8> {
    let client = Client::from_args(&args.client)?;
    let mut query: Vec<String> = Vec::new();
    for (k, v) in &args.labels {
        query.push(format!("label={}", encode(&format!("{k}={v}"))));
    }
    for state in &args.states {
        query.push(format!("state={}", encode(state)));
    }
    let path = if query.is_empty() {
        "/api/v1/events".to_string()
    } else {
        format!("/api/v1/events?{}", query.join("&"))
    };
    let runtime = runtime()?;
    loop {
        let answer: serde_json::Value = runtime.block_on(client.get(&path))?;
        let events = answer["events"].as_array().cloned().unwrap_or_default();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&events)?);
            return Ok(exit::OK);
        }
        let table = render_table(&events);
        if args.watch {
            let term = console::Term::stdout();
            let _ = term.clear_screen();
            print!("{table}");
            std::io::stdout().flush()?;
            std::thread::sleep(Duration::from_secs(2));
        } else {
            print!("{table}");
            let all_passing = events.iter().all(|e| e["state"] == "passing");
            return Ok(if all_passing {
                exit::OK
            } else {
                exit::NOT_GREEN
            });
        }
    }
}

pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn render_table(events: &[serde_json::Value]) -> String {
    let state_of = |e: &serde_json::Value| -> mdd_core::State {
        e["state"]
            .as_str()
            .unwrap_or("unknown")
            .parse()
            .unwrap_or(mdd_core::State::Unknown)
    };
    // Worst first: what needs someone is at the top, whatever the server's order.
    let mut sorted: Vec<&serde_json::Value> = events.iter().collect();
    sorted.sort_by(|a, b| {
        state_of(b)
            .severity()
            .cmp(&state_of(a).severity())
            .then_with(|| a["check"].as_str().cmp(&b["check"].as_str()))
            .then_with(|| a["entity"].as_str().cmp(&b["entity"].as_str()))
    });
    let now = jiff::Timestamp::now();
    let rows: Vec<[String; 5]> = sorted
        .iter()
        .map(|e| {
            let state = state_of(e);
            let blocked_by: Vec<&str> = e["blocked_by"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b.as_str())
                .collect();
            let output = if state == mdd_core::State::Blocked && !blocked_by.is_empty() {
                format!("blocked by {}", blocked_by.join(", "))
            } else if e["check"] == "keepalive" {
                // An agent's row: when it was last heard from says more than its summary.
                let last = e["executed_at"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok());
                match last {
                    Some(at) => format!(
                        "last keepalive {} ago ({})",
                        mdd_core::format_duration(
                            now.duration_since(at)
                                .unsigned_abs()
                                .max(Duration::from_secs(1))
                        ),
                        at.strftime("%Y-%m-%d %H:%M:%S")
                    ),
                    None => e["summary"].as_str().unwrap_or_default().to_string(),
                }
            } else {
                e["summary"].as_str().unwrap_or_default().to_string()
            };
            [
                format!("{} {state}", state.mark()),
                mdd_core::terminal::printable(e["check"].as_str().unwrap_or_default()).into_owned(),
                mdd_core::terminal::printable(e["entity"].as_str().unwrap_or_default())
                    .into_owned(),
                e["since"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(19)
                    .collect::<String>()
                    .replace('T', " "),
                mdd_core::terminal::printable(&output).into_owned(),
            ]
        })
        .collect();
    let headers = ["STATE", "CHECK", "ENTITY", "SINCE (UTC)", "OUTPUT"];
    let mut widths = headers.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // The output column takes what the terminal has left; off a terminal, 100 characters.
    let before: usize = widths[..4].iter().map(|w| w + 2).sum();
    let room = match console::Term::stdout().size_checked() {
        Some((_, columns)) => usize::from(columns).saturating_sub(before).max(20),
        None => 100,
    };
    let mut out = String::new();
    let line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == 4 {
                if cell.chars().count() > room {
                    let cut: String = cell.chars().take(room.saturating_sub(1)).collect();
                    text.push_str(&cut);
                    text.push('…');
                } else {
                    text.push_str(cell);
                }
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    out.push_str(&line(headers));
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    let passing = events.iter().filter(|e| e["state"] == "passing").count();
    out.push_str(&format!("{passing} of {} passing\n", events.len()));
    out
}

pub fn token(command: TokenCommand) -> Result<u8> {
    match command {
        TokenCommand::Create {
            role,
            name,
            entity,
            expires,
            uses,
            subscriptions,
            labels,
            client,
        } => {
            let http = Client::from_args(&client)?;
            let labels: std::collections::BTreeMap<String, String> = labels.into_iter().collect();
            let body = json!({
                "role": role, "name": name, "entity": entity, "expires": expires, "uses": uses,
                "subscriptions": subscriptions, "labels": labels,
            });
            let answer: serde_json::Value =
                runtime()?.block_on(http.post("/api/v1/tokens", &body))?;
            println!("{}", answer["token"].as_str().unwrap_or_default());
            if role == "enroll" {
                eprintln!(
                    "mdd: on each host, put this in /etc/mdd/agent.yaml (or pass --enroll-token):\n  server: {}\n  enroll_token: {}",
                    client.server,
                    answer["token"].as_str().unwrap_or_default()
                );
            }
            Ok(exit::OK)
        }
        TokenCommand::List { json, client } => {
            let http = Client::from_args(&client)?;
            let answer: serde_json::Value = runtime()?.block_on(http.get("/api/v1/tokens"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer["tokens"])?);
                return Ok(exit::OK);
            }
            let rows: Vec<[String; 7]> = answer["tokens"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let text = |key: &str| {
                        mdd_core::terminal::printable(t[key].as_str().unwrap_or("-")).into_owned()
                    };
                    let time = |key: &str| {
                        t[key]
                            .as_str()
                            .map(|s| s.chars().take(19).collect::<String>().replace('T', " "))
                            .unwrap_or_else(|| "-".into())
                    };
                    let mut role = text("role");
                    if t["expired"] == true {
                        role.push_str(" (expired)");
                    } else if let Some(left) = t["uses_left"].as_i64() {
                        role.push_str(&format!(" ({left} uses left)"));
                    }
                    [
                        text("id"),
                        text("name"),
                        role,
                        text("entity"),
                        time("created_at"),
                        time("last_used_at"),
                        time("expires_at"),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "ID",
                        "NAME",
                        "ROLE",
                        "ENTITY",
                        "CREATED (UTC)",
                        "LAST USED",
                        "EXPIRES"
                    ],
                    &rows
                )
            );
            Ok(exit::OK)
        }
        TokenCommand::Revoke { id, client } => {
            let http = Client::from_args(&client)?;
            runtime()?.block_on(http.delete(&format!("/api/v1/tokens/{}", encode(&id))))?;
            println!("revoked {id}");
            Ok(exit::OK)
        }
    }
}

pub fn entity(command: crate::cli::EntityCommand) -> Result<u8> {
    use crate::cli::EntityCommand;
    match command {
        EntityCommand::List { json, client } => {
            let http = Client::from_args(&client)?;
            let answer: serde_json::Value = runtime()?.block_on(http.get("/api/v1/entities"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer["entities"])?);
                return Ok(exit::OK);
            }
            let rows: Vec<[String; 4]> = answer["entities"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let time = |key: &str| {
                        e[key]
                            .as_str()
                            .map(|s| s.chars().take(19).collect::<String>().replace('T', " "))
                            .unwrap_or_else(|| "-".into())
                    };
                    let subscriptions = e["agent"]["subscriptions"]
                        .as_array()
                        .map(|list| {
                            list.iter()
                                .filter_map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_else(|| "(no agent)".into());
                    [
                        mdd_core::terminal::printable(e["name"].as_str().unwrap_or_default())
                            .into_owned(),
                        time("last_seen"),
                        time("last_keepalive"),
                        mdd_core::terminal::printable(&subscriptions).into_owned(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["NAME", "LAST SEEN (UTC)", "LAST KEEPALIVE", "SUBSCRIPTIONS"],
                    &rows
                )
            );
            Ok(exit::OK)
        }
        EntityCommand::Delete { name, client } => {
            let http = Client::from_args(&client)?;
            runtime()?.block_on(http.delete(&format!("/api/v1/entities/{}", encode(&name))))?;
            println!("deleted {name}: its events are gone, its results stay until retention");
            Ok(exit::OK)
        }
    }
}

/// Columns padded to their widest cell, the last one as it is.
fn table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}
