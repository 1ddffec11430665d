//! The agent's settings: flags, then environment variables (both through clap), then the
//! `--config` YAML file, then the defaults, merged into one `mdd_agent::AgentConfig`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cli::AgentArgs;

/// The `--config` file: the flags' names with `_` for `-`, durations as text (`20s`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    server: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    enroll_token: Option<String>,
    enroll_token_file: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    name: Option<String>,
    subscriptions: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    data: Option<PathBuf>,
    ca: Option<PathBuf>,
    spool_limit_mib: Option<u64>,
    keepalive: Option<String>,
    keepalive_warning: Option<String>,
    keepalive_critical: Option<String>,
    deregister: Option<bool>,
}

impl AgentFile {
    fn read(path: &Path) -> Result<AgentFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read agent config {}", path.display()))?;
        // YAML 1.2, as the spec: a subscription or label called `no` or `on` is a string.
        let options = serde_saphyr::options! { strict_booleans: true };
        let mut file: AgentFile = serde_saphyr::from_str_with_options(&text, options)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Relative paths in the file mean relative to the file, wherever the agent is started.
        let folder = path.parent().unwrap_or(Path::new("."));
        for relative in [
            &mut file.token_file,
            &mut file.enroll_token_file,
            &mut file.cert,
            &mut file.key,
            &mut file.data,
            &mut file.ca,
        ]
        .into_iter()
        .flatten()
        {
            if relative.is_relative() {
                *relative = folder.join(&*relative);
            }
        }
        Ok(file)
    }
}

fn duration(
    flag: Option<Duration>,
    file: Option<&str>,
    key: &str,
    path: &Path,
    default: Duration,
) -> Result<Duration> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(text)) => crate::cli::parse_duration(text)
            .map_err(|e| anyhow::anyhow!("{}: {key}: {e}", path.display())),
        (None, None) => Ok(default),
    }
}

fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token.to_string())
}

pub fn agent_config(args: AgentArgs) -> Result<mdd_agent::AgentConfig> {
    let (file, path) = match &args.config {
        Some(path) => (AgentFile::read(path)?, path.clone()),
        None => (AgentFile::default(), PathBuf::from("(no config file)")),
    };
    let server = args
        .server
        .or(file.server)
        .context("no server: pass --server URL (or MDD_SERVER, or `server:` in --config)")?;
    let servers = mdd_agent::Servers::parse(&server);
    if servers.urls().is_empty() {
        anyhow::bail!(
            "--server `{server}` names no server: give one URL or several, comma separated"
        );
    }
    for url in servers.urls() {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("--server: `{url}` is not an http:// or https:// URL");
        }
    }
    // Flags, then the environment, then the file: MDD_TOKEN set in a shell does not clash
    // with a --token-file on the command line.
    let from_env = std::env::var("MDD_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    // No token at all is settled when the agent starts: one kept from an earlier enrollment,
    // an enrollment now, or a client certificate (`mdd_agent::credentials`).
    let token = match (args.token, &args.token_file, from_env) {
        (Some(token), _, _) => Some(token),
        (None, Some(token_file), _) => Some(read_token(token_file)?),
        (None, None, Some(token)) => Some(token),
        (None, None, None) => match (file.token, &file.token_file) {
            (Some(token), _) => Some(token),
            (None, Some(token_file)) => Some(
                read_token(token_file)
                    .with_context(|| format!("{}: token_file", path.display()))?,
            ),
            (None, None) => None,
        },
    };
    let enroll_token = match (args.enroll_token, &args.enroll_token_file) {
        (Some(token), _) => Some(token.trim().to_string()),
        (None, Some(file)) => Some(read_token(file)?),
        (None, None) => match (file.enroll_token, &file.enroll_token_file) {
            (Some(token), _) => Some(token.trim().to_string()),
            (None, Some(token_file)) => Some(
                read_token(token_file)
                    .with_context(|| format!("{}: enroll_token_file", path.display()))?,
            ),
            (None, None) => None,
        },
    }
    .filter(|t| !t.is_empty());
    let client_cert = match (args.cert, args.key, file.cert, file.key) {
        (Some(cert), Some(key), _, _) => Some((cert, key)),
        (None, None, Some(cert), Some(key)) => Some((cert, key)),
        (None, None, Some(_), None) => bail!("{}: cert needs key", path.display()),
        (None, None, None, Some(_)) => bail!("{}: key needs cert", path.display()),
        _ => None,
    };
    for file in client_cert.iter().flat_map(|(c, k)| [c, k]) {
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    let (name, from) = match (args.name, file.name) {
        (Some(name), _) => (name, "--name".to_string()),
        (None, Some(name)) => (name, format!("{}: name", path.display())),
        (None, None) => (
            nix::unistd::gethostname()
                .context("cannot read this host's name; pass --name")?
                .to_string_lossy()
                .into_owned(),
            "this host's name".to_string(),
        ),
    };
    if !mdd_core::spec::is_valid_entity_name(&name) {
        let name = mdd_core::terminal::printable(&name);
        bail!(
            "{from}: `{name}` cannot be an entity name: use letters, digits, `.`, `_` and `-` (pass --name)"
        );
    }
    let data = args
        .data
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from("mdd-agent-data"));
    let mut config = mdd_agent::AgentConfig::new(server, token, name, data);
    config.enroll_token = enroll_token;
    config.client_cert = client_cert;
    config.subscriptions = args
        .subscriptions
        .or(file.subscriptions)
        .unwrap_or_default();
    // A CA file that cannot be read is said now, naming where it was given, rather than when
    // the agent first connects.
    config.ca = match (args.ca, file.ca) {
        (Some(ca), _) => {
            std::fs::metadata(&ca)
                .with_context(|| format!("--ca: cannot read {}", ca.display()))?;
            Some(ca)
        }
        (None, Some(ca)) => {
            std::fs::metadata(&ca)
                .with_context(|| format!("{}: ca: cannot read {}", path.display(), ca.display()))?;
            Some(ca)
        }
        (None, None) => None,
    };
    config.spool_limit = args
        .spool_limit_mib
        .or(file.spool_limit_mib)
        .unwrap_or(100)
        .saturating_mul(1024 * 1024);
    config.labels = match args.labels {
        Some(labels) => labels.into_iter().collect(),
        None => file.labels.unwrap_or_default(),
    };
    config.keepalive_every = duration(
        args.keepalive,
        file.keepalive.as_deref(),
        "keepalive",
        &path,
        config.keepalive_every,
    )?;
    config.keepalive_warning = duration(
        args.keepalive_warning,
        file.keepalive_warning.as_deref(),
        "keepalive_warning",
        &path,
        config.keepalive_warning,
    )?;
    config.keepalive_critical = duration(
        args.keepalive_critical,
        file.keepalive_critical.as_deref(),
        "keepalive_critical",
        &path,
        config.keepalive_critical,
    )?;
    config.deregister = args.deregister || file.deregister.unwrap_or(false);
    if config.keepalive_warning >= config.keepalive_critical {
        bail!("the keepalive warning threshold must be shorter than the critical one");
    }
    if config.keepalive_every.is_zero() {
        bail!("the keepalive interval must be more than 0");
    }
    Ok(config)
}
