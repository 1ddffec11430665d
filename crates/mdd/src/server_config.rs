//! The server's settings: flags, then environment variables (both through clap), then the
//! `--config` YAML file, then the defaults, merged into one `mdd_server::ServerConfig`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer};

use crate::cli::ServerArgs;

/// The `--config` file: the flags' names with `_` for `-`, durations as text (`14d`), TLS
/// under `tls:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    /// A PostgreSQL URL, like `--database`.
    database: Option<String>,
    /// Spec files, like `--spec`.
    spec: Option<Vec<PathBuf>>,
    public_read: Option<bool>,
    admin_token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    retention: Option<Duration>,
    name: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    event_checkpoint_interval: Option<Duration>,
    tls: Option<TlsSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

/// A duration as the flags take it; an error here carries the file's line and column.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    crate::cli::parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl ServerFile {
    fn read(path: &Path) -> Result<ServerFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read server config {}", path.display()))?;
        let options = serde_saphyr::options! { strict_booleans: true };
        let mut file: ServerFile = serde_saphyr::from_str_with_options(&text, options)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Relative paths in the file mean relative to the file, wherever the server starts.
        let folder = path.parent().unwrap_or(Path::new("."));
        let tls = file.tls.as_mut();
        let (cert, key, ca) = match tls {
            Some(t) => (t.cert.as_mut(), t.key.as_mut(), t.client_ca.as_mut()),
            None => (None, None, None),
        };
        for relative in [
            file.data.as_mut(),
            file.admin_token_file.as_mut(),
            cert,
            key,
            ca,
        ]
        .into_iter()
        .flatten()
        .chain(file.spec.iter_mut().flatten())
        {
            if relative.is_relative() {
                *relative = folder.join(&*relative);
            }
        }
        Ok(file)
    }
}

/// What `mdd server` runs with.
pub struct Settings {
    pub config: mdd_server::ServerConfig,
}

pub fn server_settings(args: ServerArgs) -> Result<Settings> {
    let (file, path) = match &args.config {
        Some(path) => (ServerFile::read(path)?, path.clone()),
        None => (ServerFile::default(), PathBuf::from("(no config file)")),
    };
    let data = args
        .data
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from("mdd-data"));
    let database = args.database.or(file.database);
    if let Some(url) = &database
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        bail!(
            "--database `{}`: give a PostgreSQL URL (postgres://user@host/db, or postgres:///db?host=/run/postgresql); without it the data directory's SQLite is used",
            mdd_server::redact_database_url(url)
        );
    }
    let admin_token = match args.admin_token_file.or(file.admin_token_file) {
        Some(token_file) => Some(
            std::fs::read_to_string(&token_file)
                .with_context(|| {
                    format!("cannot read the admin token file {}", token_file.display())
                })?
                .trim()
                .to_string(),
        ),
        None => std::env::var("MDD_ADMIN_TOKEN")
            .ok()
            .map(|t| t.trim().to_string()),
    };
    if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
        bail!("the admin token must be at least 16 characters");
    }
    let mut config = mdd_server::ServerConfig::new(data);
    config.database = database;
    if let Some(listen) = args.listen.or(file.listen) {
        config.listen = listen;
    }
    // Spec files on the command line replace the file's list rather than add to it, as every
    // other setting does.
    let specs = if args.specs.is_empty() {
        file.spec.unwrap_or_default()
    } else {
        args.specs
    };
    config.specs = specs
        .iter()
        .map(|spec| {
            let name = crate::spec_name::spec_name(spec)
                .with_context(|| format!("cannot read spec {}", spec.display()))?;
            Ok(mdd_server::SpecPath {
                name,
                path: spec.clone(),
            })
        })
        .collect::<Result<_>>()?;
    config.public_read = args.public_read || file.public_read.unwrap_or(false);
    config.admin_token = admin_token;
    if let Some(retention) = args.retention.or(file.retention) {
        config.retention = retention;
    }
    if let Some(name) = args.name.or(file.name) {
        config.entity = name;
    }
    if let Some(every) = args
        .event_checkpoint_interval
        .or(file.event_checkpoint_interval)
    {
        config.event_checkpoint_interval = every;
    }
    if let Some(idle) = args.idle_timeout.or(file.idle_timeout) {
        config.idle_timeout = idle;
    }
    let section = file.tls.unwrap_or_default();
    let cert = args.tls_cert.or(section.cert);
    let key = args.tls_key.or(section.key);
    let client_ca = args.tls_client_ca.or(section.client_ca);
    config.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(mdd_server::tls::TlsFiles {
            cert,
            key,
            client_ca,
        }),
        (None, None) if client_ca.is_some() => bail!(
            "a client CA needs TLS: give --tls-cert and --tls-key too (or `tls: {{cert, key}}` in {})",
            path.display()
        ),
        (None, None) => None,
        (Some(_), None) => bail!(
            "--tls-cert needs --tls-key (or `tls: {{key: …}}` in {})",
            path.display()
        ),
        (None, Some(_)) => bail!(
            "--tls-key needs --tls-cert (or `tls: {{cert: …}}` in {})",
            path.display()
        ),
    };
    Ok(Settings { config })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<ServerFile> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("server.yaml");
        std::fs::write(&path, text)?;
        ServerFile::read(&path)
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_field() {
        let unknown = read("listen: 127.0.0.1:1\nretension: 3d\n").expect_err("unknown field");
        let text = format!("{unknown:#}");
        assert!(text.contains("server.yaml"), "{text}");
        assert!(text.contains("retension"), "{text}");
        assert!(text.contains("line 2"), "{text}");

        let wrong = read("listen: 127.0.0.1:1\nretention: three days\n").expect_err("duration");
        let text = format!("{wrong:#}");
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("three days"), "{text}");

        let typed = read("public_read: yes\n").expect_err("YAML 1.2 booleans");
        assert!(format!("{typed:#}").contains("line 1"), "{typed:#}");

        let nested = read("tls:\n  cert: a.pem\n  keyfile: a.key\n").expect_err("nested");
        let text = format!("{nested:#}");
        assert!(
            text.contains("keyfile") && text.contains("line 3"),
            "{text}"
        );
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let file = read("data: d\nspec: [s.yaml]\ntls: { cert: c.pem, key: /abs/k.pem }\n")
            .expect("valid");
        assert!(file.data.expect("data").is_absolute());
        assert!(file.spec.expect("spec")[0].is_absolute());
        let tls = file.tls.expect("tls");
        assert!(tls.cert.expect("cert").is_absolute());
        assert_eq!(tls.key.expect("key"), PathBuf::from("/abs/k.pem"));
    }
}
