//! `mdd silence add|list|delete`: "we know, stop telling us", with a reason and an end.

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::{SilenceCommand, exit};
use crate::client::Client;

pub fn silence(command: SilenceCommand) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match command {
            SilenceCommand::Add(args) => {
                let client = Client::from_args(&args.client)?;
                let labels: serde_json::Map<String, serde_json::Value> = args
                    .labels
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                let body = json!({
                    "check": args.check,
                    "entity": args.entity,
                    "labels": labels,
                    "owner": args.owner,
                    "reason": args.reason,
                    "starts_at": args.start,
                    "for": args.duration,
                    "until_resolved": args.until_resolved,
                });
                let answer: serde_json::Value = client.post("/api/v1/silences", &body).await?;
                println!("{}", answer["id"].as_str().unwrap_or_default());
                Ok(exit::OK)
            }
            SilenceCommand::List(args) => {
                let client = Client::from_args(&args.client)?;
                let answer: serde_json::Value = client.get("/api/v1/silences").await?;
                let list = answer["silences"].as_array().cloned().unwrap_or_default();
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                    return Ok(exit::OK);
                }
                if list.is_empty() {
                    println!("no silences");
                }
                for s in list {
                    let mut scope = Vec::new();
                    for field in ["check", "entity", "owner"] {
                        if let Some(v) = s[field].as_str() {
                            scope.push(format!("{field}={v}"));
                        }
                    }
                    for (k, v) in s["labels"].as_object().into_iter().flatten() {
                        scope.push(format!("label {k}={}", v.as_str().unwrap_or_default()));
                    }
                    let end = match s["expires_at"].as_str() {
                        Some(at) => format!("until {at}"),
                        None => "until resolved".to_string(),
                    };
                    println!(
                        "{}  {}  {}{}  — {} (by {})",
                        s["id"].as_str().unwrap_or_default(),
                        scope.join(" "),
                        end,
                        if s["active"] == true {
                            ""
                        } else {
                            " (not started)"
                        },
                        s["reason"].as_str().unwrap_or_default(),
                        s["creator"].as_str().unwrap_or_default()
                    );
                }
                Ok(exit::OK)
            }
            SilenceCommand::Delete(args) => {
                let client = Client::from_args(&args.client)?;
                client
                    .delete(&format!(
                        "/api/v1/silences/{}",
                        crate::serve::encode(&args.id)
                    ))
                    .await?;
                Ok(exit::OK)
            }
        }
    })
}
