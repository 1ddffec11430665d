//! The spec: the checks a deployment depends on, as written in YAML and validated.
//!
//! `load` takes the text of one or more files and returns either a [`Spec`] or *every* problem
//! found, each with file, line, column and field.

mod graph_check;
mod node;
mod parse;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use parse::{DEFAULT_INTERVAL, DEFAULT_TIMEOUT, PROBE_KINDS};

/// The built-in check of agents' keepalives; no spec check may take this name.
pub const KEEPALIVE_CHECK: &str = "keepalive";

/// Whether `name` can name an entity (or a result id): 1 to 128 of `A-Z a-z 0-9 . _ - :`.
/// The spec and the API accept exactly the same names.
pub fn is_valid_entity_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// A validated set of checks (and deployments) from one or more spec files.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub checks: Vec<Check>,
    pub deployments: Vec<Deployment>,
    pub handlers: Vec<Handler>,
}

/// One monitor of one integration point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub runbook: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub depends_on: Vec<String>,
    #[serde(with = "crate::result::duration_ms", rename = "interval_ms")]
    pub interval: Duration,
    #[serde(with = "crate::result::duration_ms", rename = "timeout_ms")]
    pub timeout: Duration,
    pub subscriptions: Vec<String>,
    /// A proxy entity: the endpoint this check is about, when it runs no agent itself
    /// (`entity: ldap.ams1`). Results are reported for it instead of for where the check ran.
    #[serde(default)]
    pub entity: Option<String>,
    /// How long an event of this check stays fresh without a new result. Defaults to
    /// 2 × interval + timeout for checks with a probe; required for push-only checks.
    #[serde(with = "optional_duration_ms", rename = "ttl_ms")]
    pub ttl: Option<Duration>,
    /// Flap detection thresholds in percent (0 disables).
    pub flap: crate::event::FlapThresholds,
    /// Handlers that notify about this check (besides those whose own selector picks it).
    #[serde(default)]
    pub handlers: Vec<String>,
    pub probe: Probe,
    /// Where the check was written, so reports can point back at it.
    pub source: Source,
}

impl Check {
    /// How long a result stays fresh: the `ttl` set, or two missed runs and a timeout.
    pub fn effective_ttl(&self) -> Duration {
        self.ttl
            .unwrap_or_else(|| crate::event::default_ttl(self.interval, self.timeout))
    }

    /// Whether results come from outside (`mdd result`, a cron job) instead of a probe.
    pub fn is_push_only(&self) -> bool {
        matches!(self.probe, Probe::Push)
    }

    /// Whether every `key=value` in `selector` is among this check's labels.
    pub fn matches_labels(&self, selector: &BTreeMap<String, String>) -> bool {
        selector
            .iter()
            .all(|(key, value)| self.labels.get(key) == Some(value))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

/// How a check is executed: exactly one per check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    Command(CommandProbe),
    Http(HttpProbe),
    Tcp(TcpProbe),
    Dns(DnsProbe),
    Tls(TlsProbe),
    /// No probe: results are pushed (`mdd result`, the API) and the check goes stale when they
    /// stop coming within its `ttl`. For cron jobs and CI pipelines that report in.
    Push,
}

impl Probe {
    /// The probe's name as written in the spec.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Command(_) => "command",
            Probe::Http(_) => "http",
            Probe::Tcp(_) => "tcp",
            Probe::Dns(_) => "dns",
            Probe::Tls(_) => "tls",
            Probe::Push => "push",
        }
    }

    /// What the probe looks at, in one line, for reports and docs.
    pub fn target(&self) -> String {
        match self {
            Probe::Command(c) => c.argv.join(" "),
            Probe::Http(h) => format!("{} {}", h.method, h.url),
            Probe::Tcp(t) => format!("{}:{}", t.host, t.port),
            Probe::Dns(d) => match &d.server {
                Some(server) => format!("{} {} @{server}", d.record_type, d.name),
                None => format!("{} {}", d.record_type, d.name),
            },
            Probe::Tls(t) => format!("{}:{}", t.host, t.port),
            Probe::Push => "results pushed from outside".to_string(),
        }
    }
}

/// Runs a Nagios plugin (or any program). Never through a shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandProbe {
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpProbe {
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Accepted status codes; empty means any 2xx.
    pub status: Vec<u16>,
    pub body_contains: Option<String>,
    pub body_regex: Option<String>,
    #[serde(with = "optional_duration_ms", rename = "max_latency_ms")]
    pub max_latency: Option<Duration>,
    pub follow_redirects: bool,
    /// A PEM file of CA certificates to trust instead of the system's, resolved against the
    /// spec file's folder.
    pub ca: Option<PathBuf>,
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpProbe {
    pub host: String,
    pub port: u16,
    pub send: Option<String>,
    pub expect: Option<String>,
    #[serde(with = "optional_duration_ms", rename = "max_latency_ms")]
    pub max_latency: Option<Duration>,
}

/// The DNS record types a `dns` probe can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    A,
    Aaaa,
    Cname,
    Mx,
    Ns,
    Ptr,
    Soa,
    Srv,
    Txt,
    Caa,
}

impl RecordType {
    pub const ALL: [RecordType; 10] = [
        RecordType::A,
        RecordType::Aaaa,
        RecordType::Cname,
        RecordType::Mx,
        RecordType::Ns,
        RecordType::Ptr,
        RecordType::Soa,
        RecordType::Srv,
        RecordType::Txt,
        RecordType::Caa,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
            RecordType::Mx => "MX",
            RecordType::Ns => "NS",
            RecordType::Ptr => "PTR",
            RecordType::Soa => "SOA",
            RecordType::Srv => "SRV",
            RecordType::Txt => "TXT",
            RecordType::Caa => "CAA",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsProbe {
    pub name: String,
    pub record_type: RecordType,
    /// The server to ask; `None` asks the system's resolvers.
    pub server: Option<std::net::SocketAddr>,
    /// Values that must all be among the answers.
    pub expect: Vec<String>,
    #[serde(with = "optional_duration_ms", rename = "max_latency_ms")]
    pub max_latency: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsProbe {
    pub host: String,
    pub port: u16,
    pub server_name: String,
    pub warn_days: u32,
    pub crit_days: u32,
    pub ca: Option<PathBuf>,
    pub insecure: bool,
}

/// A named rollout: the checks its selector picks, done when all pass for `settle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub name: String,
    pub description: Option<String>,
    pub selector: BTreeMap<String, String>,
    #[serde(with = "crate::result::duration_ms", rename = "settle_ms")]
    pub settle: Duration,
}

/// Where notifications about events go: a webhook or a command, with the filter that decides
/// which changes it hears about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handler {
    pub name: String,
    pub kind: HandlerKind,
    #[serde(with = "crate::result::duration_ms", rename = "timeout_ms")]
    pub timeout: Duration,
    pub filter: HandlerFilter,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HandlerKind {
    /// POSTs the event as JSON.
    Webhook {
        url: String,
        headers: BTreeMap<String, String>,
        /// A file on the server's host holding the key deliveries are signed with, as
        /// Standard Webhooks specifies (`whsec_` and base64, or base64).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_file: Option<String>,
    },
    /// Runs a program (no shell) with the event as JSON on stdin, in the shape Sensu Go
    /// handlers read.
    Command { argv: Vec<String> },
}

impl HandlerKind {
    /// Its type as the spec spells it, and where it delivers (the URL, or the command line),
    /// for listings.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            HandlerKind::Webhook { url, .. } => ("webhook", url.clone()),
            HandlerKind::Command { argv } => ("command", flow_list(argv)),
        }
    }
}

/// A command as the spec writes it: a YAML flow list, each argument quoted when it has to be
/// (`[python3, -c, 'import sys; print(1)']`), so an argument with a space reads as one.
pub fn flow_list(argv: &[String]) -> String {
    let item = |arg: &String| {
        let plain = !arg.is_empty()
            && !arg.starts_with(|c: char| "-?:!&*|>'\"%@`#".contains(c) && c != '-')
            && !arg.chars().any(|c| " ,[]{}#'\"\t\n".contains(c))
            && !arg.contains(": ");
        if plain {
            arg.clone()
        } else {
            format!("'{}'", arg.replace('\'', "''"))
        }
    };
    format!("[{}]", argv.iter().map(item).collect::<Vec<_>>().join(", "))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerFilter {
    /// The states that notify (empty: any change); a resolution always does.
    pub states: Vec<crate::State>,
    /// Notify only from this many occurrences in a row (at least 1).
    pub occurrences: u32,
    /// While still failing, notify again at most this often.
    #[serde(with = "optional_duration_ms", rename = "reminder_ms")]
    pub reminder: Option<Duration>,
    /// A selector: checks with one of these owners...
    pub owners: Vec<String>,
    /// ...and/or with all of these labels. With either, the handler applies to every check
    /// it selects, named in the check's `handlers` or not.
    pub labels: BTreeMap<String, String>,
}

impl Handler {
    /// Whether this handler notifies about `check`.
    pub fn applies_to(&self, check: &Check) -> bool {
        if check.handlers.contains(&self.name) {
            return true;
        }
        let f = &self.filter;
        let has_selector = !f.owners.is_empty() || !f.labels.is_empty();
        has_selector
            && (f.owners.is_empty() || check.owner.as_ref().is_some_and(|o| f.owners.contains(o)))
            && check.matches_labels(&f.labels)
    }
}

/// `Option<Duration>` as milliseconds or null, for the JSON form of checks.
mod optional_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_secs_f64() * 1000.0).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|ms| Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// One problem in a spec, pointing at where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// The field's path, like `checks[2].tcp.port`; empty for problems with the whole document.
    pub field: String,
    /// The check's name, when the problem is inside a check that has one.
    pub check: Option<String>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}", self.field)?;
            if let Some(check) = &self.check {
                write!(f, " (check {check})")?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a set of spec files, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// One spec file's name (as it should appear in errors) and its text.
#[derive(Debug, Clone)]
pub struct SpecSource<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

/// Parses and validates one or more spec files as one set of checks. Check names are unique
/// across all files and `depends_on` may name a check in any of them. Each file's `defaults`
/// apply to that file's checks only.
pub fn load(sources: &[SpecSource<'_>]) -> Result<Spec, SpecErrors> {
    let mut errors = Vec::new();
    let mut checks = Vec::new();
    let mut deployments = Vec::new();
    let mut handlers = Vec::new();
    let mut check_fields = Vec::new();
    for source in sources {
        let parsed = parse::parse_file(source.file, source.text);
        errors.extend(parsed.errors);
        checks.extend(parsed.checks);
        check_fields.extend(parsed.check_fields);
        deployments.extend(parsed.deployments);
        handlers.extend(parsed.handlers);
    }
    graph_check::check_references(&checks, &check_fields, &deployments, &mut errors);
    graph_check::check_handlers(&check_fields, &handlers, &mut errors);
    if errors.is_empty() {
        Ok(Spec {
            checks,
            deployments: deployments.into_iter().map(|d| d.deployment).collect(),
            handlers: handlers.into_iter().map(|h| h.handler).collect(),
        })
    } else {
        errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Err(SpecErrors(errors))
    }
}

/// Parses one spec file.
pub fn load_one(file: &str, text: &str) -> Result<Spec, SpecErrors> {
    load(&[SpecSource { file, text }])
}

#[cfg(test)]
mod tests;
