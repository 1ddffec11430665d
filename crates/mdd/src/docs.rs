//! `mdd docs`: the living document of a spec, from files or from a server's applied spec,
//! with the server's live states when one is given.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use mdd_core::State;
use mdd_core::spec::{self, SpecSource};
use mdd_docs::{Document, Format, Live};

use crate::cli::{DocsArgs, DocsFormat, exit};
use crate::client::Client;

pub fn docs(args: DocsArgs) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = match &args.server {
        Some(server) => Some(Client::new(server, args.token.clone(), args.ca.as_deref())?),
        None => None,
    };
    let mut texts = Vec::new();
    for path in &args.specs {
        texts.push(crate::verify::read_spec(path)?);
    }
    if texts.is_empty() {
        // No files: document what the server has applied.
        let Some(client) = &client else {
            anyhow::bail!("name spec files, or a --server to document its applied spec");
        };
        let answer: serde_json::Value = runtime.block_on(client.get("/api/v1/spec"))?;
        for file in answer["files"].as_array().into_iter().flatten() {
            texts.push((
                file["file"].as_str().unwrap_or_default().to_string(),
                file["text"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    let sources: Vec<SpecSource<'_>> = texts
        .iter()
        .map(|(file, text)| SpecSource { file, text })
        .collect();
    let spec = match spec::load(&sources) {
        Ok(spec) => spec,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(exit::USAGE);
        }
    };
    let live = match &client {
        Some(client) => {
            let answer: serde_json::Value = runtime.block_on(client.get("/api/v1/events"))?;
            Some(live_states(&answer))
        }
        None => None,
    };
    let source = args.server.as_ref().map(|server| {
        format!(
            "{server} at {}",
            jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
        )
    });
    let document = Document::new(&spec, live.as_ref(), source);
    let text = document.render(match args.format {
        DocsFormat::Md => Format::Markdown,
        DocsFormat::Html => Format::Html,
    });
    match &args.output {
        Some(path) => crate::verify::write_file(path, &text)?,
        None => print!("{text}"),
    }
    Ok(exit::OK)
}

/// Each check's state: the worst over its entities, since it began (the same rule as the
/// server's deployment and docs pages: `mdd_core::deployment::combine`).
fn live_states(answer: &serde_json::Value) -> BTreeMap<String, Live> {
    use mdd_core::deployment::{CheckNow, combine};
    let mut worst: BTreeMap<String, CheckNow> = BTreeMap::new();
    for event in answer["events"].as_array().into_iter().flatten() {
        let (Some(check), Some(state)) = (
            event["check"].as_str(),
            event["state"]
                .as_str()
                .and_then(|s| s.parse::<State>().ok()),
        ) else {
            continue;
        };
        let since = event["since"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(i64::MIN, |t| t.as_millisecond());
        let here = CheckNow { state, since };
        let combined = match worst.get(check) {
            Some(known) => combine([*known, here]),
            None => Some(here),
        };
        if let Some(combined) = combined {
            worst.insert(check.to_string(), combined);
        }
    }
    worst
        .into_iter()
        .map(|(check, now)| {
            let since = jiff::Timestamp::from_millisecond(now.since)
                .ok()
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string());
            (
                check,
                Live {
                    state: now.state,
                    since,
                },
            )
        })
        .collect()
}
