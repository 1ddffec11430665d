//! Enrollment: an agent trades a shared enrollment token, once, for a token of its own bound
//! to its entity, keeps it in a private file of its data directory and uses it from then on
//! (restarts included). Revoking or expiring the enrollment token leaves it working.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{AgentConfig, AgentError};

/// The file in the data directory that holds the agent's own token.
pub const TOKEN_FILE: &str = "agent-token.json";

/// What the server gave this agent when it enrolled.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Enrolled {
    token: String,
    entity: String,
    server: String,
    #[serde(default)]
    subscriptions: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    enrolled_at: String,
}

/// Settles which token the agent uses: one given outright; else the one kept from an earlier
/// enrollment; else one got now by enrolling (trying again while the server is unreachable,
/// until `shutdown`); else none, when a client certificate says who the agent is.
pub async fn credentials(
    config: &mut AgentConfig,
    shutdown: &CancellationToken,
) -> Result<(), AgentError> {
    if config.token.is_some() {
        return Ok(());
    }
    let path = config.data_dir.join(TOKEN_FILE);
    if let Some(enrolled) = read(&path)? {
        if enrolled.entity != config.name {
            return Err(AgentError::Enroll(format!(
                "{} holds the token this agent got by enrolling as `{}`, but it is now configured as `{}`: give it its old --name back, or delete {} and start it with an enrollment token to enroll again",
                path.display(),
                enrolled.entity,
                config.name,
                path.display()
            )));
        }
        tracing::debug!(path = %path.display(), "using the token kept from enrollment");
        adopt(config, enrolled, &path);
        return Ok(());
    }
    let Some(enroll_token) = config.enroll_token.clone() else {
        if config.client_cert.is_some() {
            return Ok(());
        }
        return Err(AgentError::Enroll(
            "no token: pass --token-file (an agent token: `mdd token create --role agent --entity NAME`), --enroll-token (an enrollment token: `mdd token create --role enroll`), or --cert/--key (a client certificate the server trusts)".into(),
        ));
    };
    let enrolled = enroll(config, &enroll_token, shutdown).await?;
    write(&path, &enrolled)?;
    tracing::info!(
        entity = enrolled.entity,
        path = %path.display(),
        "enrolled: this agent's own token is kept in its data directory"
    );
    adopt(config, enrolled, &path);
    Ok(())
}

/// Takes the kept token, and what the enrollment token granted, into the configuration.
fn adopt(config: &mut AgentConfig, enrolled: Enrolled, path: &Path) {
    config.token = Some(enrolled.token);
    for subscription in enrolled.subscriptions {
        if !config.subscriptions.contains(&subscription) {
            config.subscriptions.push(subscription);
        }
    }
    for (key, value) in enrolled.labels {
        config.labels.entry(key).or_insert(value);
    }
    config.token_hint = format!(
        "this agent's token (kept in {} since it enrolled) is no longer accepted, perhaps revoked: delete that file and start the agent with a new enrollment token (`mdd token create --role enroll`)",
        path.display()
    );
}

fn read(path: &Path) -> Result<Option<Enrolled>, AgentError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AgentError::Enroll(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        AgentError::Enroll(format!(
            "{} is not a token kept from enrollment ({e}): delete it to enroll again",
            path.display()
        ))
    })
}

/// Writes the token where only this user can read it, durably, whole or not at all.
fn write(path: &Path, enrolled: &Enrolled) -> Result<(), AgentError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let fail = |what: &str, e: std::io::Error| {
        AgentError::Enroll(format!(
            "enrolled, but cannot keep the token in {} ({what}: {e}); the enrollment token may need another use",
            path.display()
        ))
    };
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(|e| fail("creating its folder", e))?;
    let temp: PathBuf = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(enrolled).map_err(|e| fail("encoding", e.into()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| fail("creating it", e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fail("writing it", e))?;
    std::fs::rename(&temp, path).map_err(|e| fail("renaming it into place", e))?;
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// `POST /api/v1/agent/enroll` until the server answers; its refusals are final.
async fn enroll(
    config: &AgentConfig,
    enroll_token: &str,
    shutdown: &CancellationToken,
) -> Result<Enrolled, AgentError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: String,
        entity: String,
        #[serde(default)]
        subscriptions: Vec<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }
    let http = crate::client(config)?;
    let servers = crate::Servers::parse(&config.server);
    let body = serde_json::json!({
        "name": config.name,
        "subscriptions": config.subscriptions,
        "labels": config.labels,
    })
    .to_string();
    let mut backoff = Duration::from_secs(1);
    loop {
        let (used, url) = servers.url("/api/v1/agent/enroll");
        let sent = http
            .post(&url)
            .bearer_auth(enroll_token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .timeout(Duration::from_secs(30))
            .send();
        let sent = tokio::select! {
            _ = shutdown.cancelled() => return Err(AgentError::Stopped),
            sent = sent => sent,
        };
        let reason = match sent {
            Ok(response) if response.status().is_success() => {
                let answer: Answer = response
                    .bytes()
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|body| serde_json::from_slice(&body).map_err(|e| e.to_string()))
                    .map_err(|e| {
                        AgentError::Enroll(format!("the server's answer to enrollment: {e}"))
                    })?;
                return Ok(Enrolled {
                    token: answer.token,
                    entity: answer.entity,
                    server: config.server.clone(),
                    subscriptions: answer.subscriptions,
                    labels: answer.labels,
                    enrolled_at: jiff::Timestamp::now().to_string(),
                });
            }
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let said = response.text().await.unwrap_or_default();
                let said = serde_json::from_str::<serde_json::Value>(&said)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(said);
                let hint = match status {
                    reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                        "; make an enrollment token with `mdd token create --role enroll` and give it with --enroll-token (or `enroll_token:` in the config)"
                    }
                    _ => "",
                };
                return Err(AgentError::Enroll(format!(
                    "the server refused to enroll this agent as `{}` ({status}: {}){hint}",
                    config.name,
                    mdd_core::terminal::printable(said.trim())
                )));
            }
            Ok(response) => format!("the server answered {}", response.status()),
            Err(e) => {
                servers.failed(used);
                mdd_probes::describe_error(&e)
            }
        };
        tracing::warn!(
            "cannot enroll at {} yet: {reason}; trying again in {}",
            servers.urls()[used],
            mdd_core::format_duration(backoff)
        );
        tokio::select! {
            _ = shutdown.cancelled() => return Err(AgentError::Stopped),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
