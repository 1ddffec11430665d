//! The HTTP client every command that talks to a server uses: `--server`/`MDD_SERVER`,
//! `--token`/`MDD_TOKEN`, errors that say what the server said.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// What went wrong, when the server answered with an error.
#[derive(Debug)]
pub struct ServerSaid {
    pub status: u16,
    pub body: serde_json::Value,
}

impl std::fmt::Display for ServerSaid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.body.get("error").and_then(|e| e.as_str()) {
            Some(message) => write!(f, "server answered {}: {message}", self.status),
            None => write!(f, "server answered {}", self.status),
        }
    }
}

impl std::error::Error for ServerSaid {}

impl Client {
    /// A client for the server, token and CA of a command's arguments.
    pub fn from_args(args: &crate::cli::ClientArgs) -> Result<Client> {
        Client::new(&args.server, args.token.clone(), args.ca.as_deref())
    }

    pub fn new(
        server: &str,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> Result<Client> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("mdd/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("--ca: cannot read {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca: {} is not a PEM certificate file", ca.display()))?;
            if certs.is_empty() {
                bail!("--ca: {} holds no certificate", ca.display());
            }
            // The CAs given, and only those: a server certificate from anyone else is refused.
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().context("cannot set up the HTTP client")?;
        Ok(Client {
            base: server.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let body = serde_json::to_vec(body).context("cannot encode the request")?;
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    /// DELETE: success is the status alone (204, no body).
    pub async fn delete(&self, path: &str) -> Result<()> {
        let _: serde_json::Value = self
            .send(self.http.delete(format!("{}{path}", self.base)))
            .await?;
        Ok(())
    }

    async fn send<T: DeserializeOwned>(&self, mut request: reqwest::RequestBuilder) -> Result<T> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the mdd server at {}", self.base))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("the server at {} broke off its answer", self.base))?;
        if !status.is_success() {
            let body = serde_json::from_slice(&bytes).unwrap_or_else(
                |_| serde_json::json!({ "error": String::from_utf8_lossy(&bytes) }),
            );
            return Err(ServerSaid {
                status: status.as_u16(),
                body,
            }
            .into());
        }
        // An empty answer (204) reads as JSON null.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        match serde_json::from_slice(bytes) {
            Ok(value) => Ok(value),
            Err(e) => bail!(
                "the server at {} answered something mdd cannot read: {e}",
                self.base
            ),
        }
    }
}
