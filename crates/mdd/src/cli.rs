//! The command line: every subcommand, flag and exit code users script against.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The example spec shipped inside the binary: `mdd example`, `mdd verify --example`.
pub const EXAMPLE_SPEC: &str = include_str!("../../../examples/local.yaml");

/// Exit codes, documented in the README.
pub mod exit {
    /// Every selected check is green.
    pub const OK: u8 = 0;
    /// Something is not green (failing, unknown, blocked, or a warning without --allow-warning).
    pub const NOT_GREEN: u8 = 1;
    /// The spec is invalid, or the command line is.
    pub const USAGE: u8 = 2;
    /// Interrupted (Ctrl-C or SIGTERM); the partial report was still written.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, Parser)]
#[command(
    name = "mdd",
    version,
    about = "Monitoring Driven Deployment: monitors for every integration point, red until the datacenter works.",
    after_help = "Exit codes: 0 all green, 1 something not green, 2 invalid spec or usage, 130 interrupted.\nLogs: set MDD_LOG=debug (or info, warn) for more detail on stderr."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every check in the spec from this machine, like a test suite.
    Verify(VerifyArgs),
    /// Validate specs without running anything.
    Lint(LintArgs),
    /// Print the example spec, to start your own from.
    Example,
    /// Run the server: server-side checks, result ingestion, events, the HTTP API.
    Server(ServerArgs),
    /// Run an agent: pull the checks of its subscriptions from the server, run them here, report.
    Agent(AgentArgs),
    /// Push specs to a server: it validates, stores a new revision and reports what changed.
    Apply(ApplyArgs),
    /// Report a result for a check (a cron job, a CI pipeline, a script).
    Result(ResultArgs),
    /// Show events from a server as a table.
    Status(StatusArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List and forget entities (agents, proxy entities).
    #[command(subcommand)]
    Entity(EntityCommand),
    /// Follow deployments: how many of their checks are green, what still blocks, who owns it.
    #[command(subcommand)]
    Deploy(DeployCommand),
    /// Watch a datacenter come up: a server with an example deployment whose integration points
    /// (listeners on loopback) come up one by one over about two minutes. Open the printed URL.
    Demo(DemoArgs),
    /// The living document: every integration point by owner, with why it matters, runbook,
    /// target, labels, dependencies (drawn) and deployments; live states with --server.
    Docs(DocsArgs),
    /// Silence events: still evaluated and shown (marked), not notified.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// How often things break: incidents, time failing, time to recover and flaps per check
    /// and per owner over the last 24 h, 7 d and 30 d, worst first.
    Report(ReportArgs),
    /// Turn existing Nagios/Naemon, NRPE, Icinga 2 or Sensu configurations into an mdd spec
    /// that lints: the same plugins with the same arguments, owners, runbooks, groups and
    /// dependencies; what cannot be carried over is listed on stderr with file and line.
    Import(ImportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to standard output: `mdd man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
#[command(
    after_help = "PATH is a main config (nagios.cfg with its cfg_file, cfg_dir and resource_file; nrpe.cfg with its include and include_dir; a Sensu Classic config.json), object files, or directories of them.\nExit codes: 0 converted (notes or not), 2 an input could not be read or parsed."
)]
pub struct ImportArgs {
    #[arg(value_enum)]
    pub format: ImportFormat,
    /// Main configs, object files or directories.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Write the spec to FILE instead of standard output; to a directory (one that exists, or
    /// a path ending in `/`) one file per host group or subscription.
    #[arg(long, short, value_name = "FILE|DIR")]
    pub output: Option<PathBuf>,
    /// Label every check `datacenter: NAME` and add a deployment of that name.
    #[arg(long, value_name = "NAME")]
    pub datacenter: Option<String>,
    /// Where a Nagios check's owner comes from.
    #[arg(long, value_enum, default_value = "contactgroups")]
    pub owner_from: OwnerFromArg,
    /// The agent subscription NRPE commands (default `nrpe`) and Sensu Classic standalone
    /// checks (default `standalone`) become checks for.
    #[arg(long, value_name = "NAME")]
    pub subscription: Option<String>,
    /// NAME=VALUE (repeatable): an Icinga 2 constant, as `icinga2 -D` sets it (NodeName is
    /// this host's name unless given).
    #[arg(long = "define", short = 'D', value_parser = parse_label, value_name = "NAME=VALUE")]
    pub defines: Vec<(String, String)>,
    /// Where Icinga 2's `include <itl>` and the like are found.
    #[arg(long, default_value = "/usr/share/icinga2/include", value_name = "DIR")]
    pub include_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    Nagios,
    Icinga2,
    Nrpe,
    SensuGo,
    SensuClassic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OwnerFromArg {
    Contactgroups,
    Contacts,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// One window instead of 24h, 7d and 30d (like 90d).
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
    /// The server's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence what matches every given --check/--entity/--label/--owner; prints its id.
    Add(SilenceAddArgs),
    /// The silences in force or still to start.
    List(SilenceListArgs),
    /// End a silence now.
    Delete(SilenceDeleteArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("end").required(true).args(["duration", "until_resolved"])))]
pub struct SilenceAddArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long)]
    pub check: Option<String>,
    #[arg(long)]
    pub entity: Option<String>,
    /// KEY=VALUE (repeatable): the check's labels must have all of them.
    #[arg(long = "label", value_parser = parse_label, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,
    #[arg(long)]
    pub owner: Option<String>,
    /// Why: the next person to look will want to know.
    #[arg(long)]
    pub reason: String,
    /// How long, like 2h.
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Until every event it matches is passing again.
    #[arg(long)]
    pub until_resolved: bool,
    /// When it starts (RFC 3339; default now).
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
}

#[derive(Debug, Args)]
pub struct SilenceListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SilenceDeleteArgs {
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocsFormat {
    /// Markdown that renders on a git host (dependencies as a Mermaid diagram).
    Md,
    /// One HTML page that prints well (dependencies as SVG).
    Html,
}

#[derive(Debug, Args)]
pub struct DocsArgs {
    /// Spec files; none with --server documents the server's applied spec.
    #[arg(value_name = "SPEC")]
    pub specs: Vec<PathBuf>,
    /// A server to take live states (and, without files, the spec) from.
    #[arg(long, env = "MDD_SERVER")]
    pub server: Option<String>,
    /// A read token for the server.
    #[arg(long, env = "MDD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM file of CAs to trust for an https server instead of the system's.
    #[arg(long, env = "MDD_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "md")]
    pub format: DocsFormat,
    /// Write here (atomically) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address for the demo's server and dashboard (port 0: any free one).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: std::net::SocketAddr,
    /// Play the bring-up this many times faster (2 runs it in about a minute).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Every deployment with its progress.
    List(DeployListArgs),
    /// One deployment: still-red checks by owner (blocked ones under their blocker), green ones
    /// with their time to green. Exits 0 when it is done with nothing regressed, 1 otherwise.
    Status(DeployStatusArgs),
    /// Follow a deployment live until it is done (exit 0) or the timeout passes (exit 1):
    /// a pipeline can wait on a datacenter.
    Watch(DeployWatchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeployFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DeployListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: DeployFormat,
}

#[derive(Debug, Args)]
pub struct DeployStatusArgs {
    /// The deployment's name.
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: DeployFormat,
}

#[derive(Debug, Args)]
pub struct DeployWatchArgs {
    /// The deployment's name.
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Give up (exit 1) after this long.
    #[arg(long, value_parser = parse_duration, default_value = "6h", value_name = "DURATION")]
    pub timeout: Duration,
    /// How often to ask the server.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    pub every: Duration,
    /// text: a live view on a terminal, a line per change otherwise; json: the final state.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DeployFormat,
}

/// How to reach a server: every client command takes these.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long, env = "MDD_SERVER", default_value = "http://127.0.0.1:7700")]
    pub server: String,
    /// An API token (admin for apply and token, agent for result, read for status).
    #[arg(long, env = "MDD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM file of CAs to trust for an https server instead of the system's.
    #[arg(long, env = "MDD_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// Every setting can come from a flag, an environment variable or the `--config` file, in
/// that order of precedence; the defaults are in `server_config`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// A YAML file with any of the settings below (`listen: …`, `tls: {cert: …, key: …}`,
    /// `spec: [a.yaml]`); flags and environment variables override it.
    #[arg(long, env = "MDD_SERVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7700]. Loopback by default: expose it on
    /// purpose, with TLS.
    #[arg(long, env = "MDD_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Data directory (SQLite database inside) [default: mdd-data].
    #[arg(long, env = "MDD_DATA")]
    pub data: Option<PathBuf>,
    /// Keep everything in PostgreSQL instead of the data directory's SQLite:
    /// `postgres://user:password@host/db`, or over a unix socket
    /// `postgres:///db?host=/run/postgresql`.
    #[arg(long, env = "MDD_DATABASE", value_name = "URL")]
    pub database: Option<String>,
    /// Spec files to load at start and again on SIGHUP.
    #[arg(long = "spec", value_name = "SPEC")]
    pub specs: Vec<PathBuf>,
    /// Let anyone who can reach the server read (writes still need a token).
    #[arg(long)]
    pub public_read: bool,
    /// A file holding the first admin token, instead of letting mdd make one (also MDD_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// How long results are kept [default: 14d].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub retention: Option<Duration>,
    /// Entity name for the checks the server runs itself [default: mdd-server].
    #[arg(long)]
    pub name: Option<String>,
    /// How often changed events are checkpointed (results are always durable at once).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub event_checkpoint_interval: Option<Duration>,
    /// How long a connection may go without sending a whole request (idle, or trickling its
    /// headers, or its TLS handshake) before it is closed [default: 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); read again on SIGHUP and when
    /// the file changes. Needs --tls-key.
    #[arg(long, env = "MDD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "MDD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: agents may present a client certificate signed by these CAs (PEM) instead
    /// of a token; its name (first DNS name, else common name) is the entity it reports for.
    #[arg(long, env = "MDD_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Every setting can come from a flag, an environment variable or the `--config` file, in
/// that order of precedence; the defaults are in `agent_config`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// A YAML file with any of the settings below (`server: …`, `subscriptions: [a, b]`,
    /// `labels: {k: v}`, `token_file: …`); flags and environment variables override it.
    #[arg(long, env = "MDD_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The server's URL, or several comma separated (the servers of a cluster): the agent
    /// talks to one and moves to the next when it cannot be reached.
    #[arg(long, env = "MDD_SERVER", value_name = "URL[,URL...]")]
    pub server: Option<String>,
    /// An agent token (`mdd token create --role agent`); MDD_TOKEN in the environment is used
    /// when neither this nor --token-file is given (flags win over the environment).
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the agent token (keeps it out of `ps` and shell history).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// An enrollment token (`mdd token create --role enroll`): presented once, when the data
    /// directory holds no token of the agent's own; the token the server answers with is kept
    /// there (`agent-token.json`, private) and used from then on.
    #[arg(long, env = "MDD_ENROLL_TOKEN", conflicts_with = "enroll_token_file")]
    pub enroll_token: Option<String>,
    /// A file holding the enrollment token.
    #[arg(long, value_name = "FILE")]
    pub enroll_token_file: Option<PathBuf>,
    /// A client certificate (PEM) for servers that take one instead of a token (mutual TLS);
    /// its name is the entity the agent may report for. Needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The entity name this agent reports as [default: the host name].
    #[arg(long, env = "MDD_AGENT_NAME")]
    pub name: Option<String>,
    /// Subscriptions, comma separated: the agent runs the checks that list one of them.
    #[arg(long, env = "MDD_SUBSCRIPTIONS", value_delimiter = ',')]
    pub subscriptions: Option<Vec<String>>,
    /// Data directory for the offline spool [default: mdd-agent-data].
    #[arg(long, env = "MDD_DATA")]
    pub data: Option<PathBuf>,
    /// A PEM file of CAs to trust for the server instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The most the offline spool may hold, in MiB; past it the oldest results are dropped
    /// [default: 100].
    #[arg(long, value_name = "MIB")]
    pub spool_limit_mib: Option<u64>,
    /// Labels of this entity, comma separated.
    #[arg(long, env = "MDD_LABELS", value_delimiter = ',', value_parser = parse_label, value_name = "KEY=VALUE")]
    pub labels: Option<Vec<(String, String)>>,
    /// How often to send keepalives [default: 20s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub keepalive: Option<Duration>,
    /// Silence after which this agent's keepalive event turns WARNING [default: 120s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub keepalive_warning: Option<Duration>,
    /// Silence after which it turns CRITICAL [default: 180s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub keepalive_critical: Option<Duration>,
    /// Have the server remove this entity and its events when it goes away (ephemeral hosts).
    #[arg(long)]
    pub deregister: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Spec files (YAML).
    #[arg(value_name = "SPEC", required = true)]
    pub specs: Vec<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Show what would change without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the spec files (and their checks) that this apply does not name.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The check the result is for.
    #[arg(long)]
    pub check: String,
    /// Nagios exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    #[arg(long)]
    pub status: i64,
    /// What a plugin would print: summary, long output, perfdata after `|`.
    #[arg(long, default_value = "")]
    pub output: String,
    /// Where it ran (default: this host's name).
    #[arg(long)]
    pub entity: Option<String>,
    /// A unique id, so that sending the same result twice stores it once (default: a new UUID).
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only events whose check has this label (repeatable).
    #[arg(long = "label", value_parser = parse_label, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,
    /// Only events in this state (repeatable): passing, warning, failing, unknown, blocked, stale, flapping, pending.
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    /// Keep the table on screen, refreshed every 2 seconds.
    #[arg(long)]
    pub watch: bool,
    /// Print the events as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once and never stored.
    Create {
        /// admin, agent, read, or enroll (an agent presents it once, with --enroll-token, and
        /// gets a token of its own bound to its entity).
        #[arg(long)]
        role: String,
        /// A note to recognise it by.
        #[arg(long, default_value = "")]
        name: String,
        /// For agent tokens: the only entity it may report for (and its checks' proxy entities).
        #[arg(long)]
        entity: Option<String>,
        /// How long it lives, like 24h (default: for ever). Agents enrolled with an enrollment
        /// token keep working after it expires.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// Enrollment tokens: how many agents may enroll with it.
        #[arg(long, value_name = "N")]
        uses: Option<u32>,
        /// Enrollment tokens: subscriptions the agents that enroll get, comma separated.
        #[arg(long, value_delimiter = ',')]
        subscriptions: Vec<String>,
        /// Enrollment tokens: labels the agents that enroll get, comma separated.
        #[arg(long, value_delimiter = ',', value_parser = parse_label, value_name = "KEY=VALUE")]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every token: id, name, role, entity, created, last used, expiry (never a secret).
    List {
        /// The server's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token now: refused from the next request on, dashboard sessions included.
    Revoke {
        /// Its id (from `mdd token list`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EntityCommand {
    /// Every entity the server knows: agents and the entities results named.
    List {
        /// The server's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Forget an entity: it and its events go; its results stay until retention.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Spec files (YAML). `-` reads standard input.
    #[arg(value_name = "SPEC", required_unless_present = "example")]
    pub specs: Vec<PathBuf>,
    /// Use the example spec built into mdd (see `mdd example`).
    #[arg(long, conflicts_with = "specs")]
    pub example: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Re-run what is not green until all are green or this much time has passed (e.g. 30m).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub wait: Option<Duration>,
    /// Time between rounds while waiting.
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub every: Duration,
    /// Report format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Write the report to FILE; the terminal still shows the text report and progress.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only checks with this label (repeatable; all must match). Dependencies come along.
    #[arg(long = "label", value_parser = parse_label, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,
    /// Only this check (repeatable). Dependencies come along.
    #[arg(long = "check", value_name = "NAME")]
    pub checks: Vec<String>,
    /// How many checks may run at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: u16,
    /// Count warnings as passing.
    #[arg(long)]
    pub allow_warning: bool,
    /// When to colour the text report.
    #[arg(long, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
    /// Plain ASCII marks (ok/FAIL/WARN/UNKN/BLKD) instead of ✓ ✗ ! ? ⊘.
    #[arg(long)]
    pub ascii: bool,
    /// The most bytes kept of a plugin's stdout and of its stderr.
    #[arg(long, default_value_t = mdd_probes::DEFAULT_OUTPUT_LIMIT, value_name = "BYTES")]
    pub output_limit: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
    Junit,
    Tap,
}

impl From<FormatArg> for mdd_verify::Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Text => mdd_verify::Format::Text,
            FormatArg::Json => mdd_verify::Format::Json,
            FormatArg::Junit => mdd_verify::Format::Junit,
            FormatArg::Tap => mdd_verify::Format::Tap,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    mdd_core::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}
