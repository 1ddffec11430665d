//! Walks a YAML node tree into checks, collecting every problem with its position.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::node::{self, Node, Value};
use super::{
    Check, CommandProbe, Deployment, DnsProbe, Handler, HandlerFilter, HandlerKind, HttpProbe,
    Probe, RecordType, Source, SpecError, TcpProbe, TlsProbe,
};
use crate::duration::parse_duration;

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_SETTLE: Duration = Duration::from_secs(600);
/// The probe kinds, in the order they are documented. Adding a probe means adding it here and in
/// [`parse_probe`].
pub const PROBE_KINDS: [&str; 5] = ["command", "http", "tcp", "dns", "tls"];
const MAX_NAME_LEN: usize = 128;
/// Compiled-size limit for `body_regex`, so a hostile spec cannot make the regex engine eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A name in the spec and where it was written, for checks that reference each other.
#[derive(Debug, Clone)]
pub(crate) struct NameRef {
    pub name: String,
    pub line: u32,
    pub column: u32,
}

/// A deployment with where its name was written.
#[derive(Debug, Clone)]
pub(crate) struct ParsedDeployment {
    pub deployment: Deployment,
    pub file: String,
    pub path: String,
    pub name_at: NameRef,
}

/// A handler with where its name was written.
#[derive(Debug, Clone)]
pub(crate) struct ParsedHandler {
    pub handler: Handler,
    pub file: String,
    pub path: String,
    pub name_at: NameRef,
}

/// What cross-file validation needs to know about one check entry, even an invalid one, so that
/// one broken check does not cause a cascade of "unknown check" errors in the checks using it.
#[derive(Debug, Clone)]
pub(crate) struct CheckRefs {
    pub file: String,
    pub path: String,
    pub name: Option<NameRef>,
    pub depends_on: Vec<NameRef>,
    pub handlers: Vec<NameRef>,
}

#[derive(Debug, Default)]
pub(crate) struct ParsedFile {
    pub checks: Vec<Check>,
    pub check_fields: Vec<CheckRefs>,
    pub deployments: Vec<ParsedDeployment>,
    pub handlers: Vec<ParsedHandler>,
    pub errors: Vec<SpecError>,
}

struct Ctx<'a> {
    file: &'a str,
    dir: PathBuf,
    errors: Vec<SpecError>,
    /// The name of the check being parsed, to name it in errors.
    check: Option<String>,
}

impl Ctx<'_> {
    fn error(&mut self, at: &Node, field: &str, message: impl Into<String>) {
        self.error_at(at.line, at.column, field, message);
    }

    fn error_at(&mut self, line: u32, column: u32, field: &str, message: impl Into<String>) {
        self.errors.push(SpecError {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            check: self.check.clone(),
            message: message.into(),
        });
    }
}

pub(crate) fn parse_file(file: &str, text: &str) -> ParsedFile {
    let mut ctx = Ctx {
        file,
        dir: Path::new(file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        errors: Vec::new(),
        check: None,
    };
    let root = match node::read(text) {
        Ok(root) => root,
        Err(e) => {
            ctx.error_at(e.line, e.column, "", e.message);
            return ParsedFile {
                errors: ctx.errors,
                ..ParsedFile::default()
            };
        }
    };
    let mut parsed = ParsedFile::default();
    if root.value == Value::Null {
        // An empty file is a valid spec with no checks.
        return parsed;
    }
    let Some(mut top) = Fields::of(&mut ctx, &root, "") else {
        parsed.errors = ctx.errors;
        return parsed;
    };
    let defaults = match top.get("defaults") {
        Some(node) => parse_defaults(&mut ctx, node),
        None => Defaults::default(),
    };
    if let Some(checks) = top.get("checks")
        && let Some(items) = list(&mut ctx, checks, "checks")
    {
        for (i, item) in items.iter().enumerate() {
            let path = format!("checks[{i}]");
            let (check, refs) = parse_check(&mut ctx, item, &path, &defaults);
            parsed.checks.extend(check);
            parsed.check_fields.push(refs);
        }
    }
    if let Some(deployments) = top.get("deployments")
        && let Some(items) = list(&mut ctx, deployments, "deployments")
    {
        for (i, item) in items.iter().enumerate() {
            let path = format!("deployments[{i}]");
            if let Some(parsed_deployment) = parse_deployment(&mut ctx, item, &path) {
                parsed.deployments.push(parsed_deployment);
            }
        }
    }
    if let Some(handlers) = top.get("handlers")
        && let Some(items) = list(&mut ctx, handlers, "handlers")
    {
        for (i, item) in items.iter().enumerate() {
            let path = format!("handlers[{i}]");
            if let Some(handler) = parse_handler(&mut ctx, item, &path) {
                parsed.handlers.push(handler);
            }
        }
    }
    top.finish(&mut ctx, "");
    parsed.errors = ctx.errors;
    parsed
}

struct Defaults {
    interval: Duration,
    timeout: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

fn parse_defaults(ctx: &mut Ctx, node: &Node) -> Defaults {
    let mut defaults = Defaults::default();
    let Some(mut fields) = Fields::of(ctx, node, "defaults") else {
        return defaults;
    };
    if let Some(d) = fields
        .get("interval")
        .and_then(|n| positive_duration(ctx, n, "defaults.interval"))
    {
        defaults.interval = d;
    }
    if let Some(d) = fields
        .get("timeout")
        .and_then(|n| positive_duration(ctx, n, "defaults.timeout"))
    {
        defaults.timeout = d;
    }
    fields.finish(ctx, "defaults");
    defaults
}

fn parse_check(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    defaults: &Defaults,
) -> (Option<Check>, CheckRefs) {
    ctx.check = None;
    let mut refs = CheckRefs {
        file: ctx.file.to_string(),
        path: path.to_string(),
        name: None,
        depends_on: Vec::new(),
        handlers: Vec::new(),
    };
    let errors_before = ctx.errors.len();
    let Some(mut fields) = Fields::of(ctx, node, path) else {
        return (None, refs);
    };
    let name = match fields.get("name") {
        Some(n) => name_field(ctx, n, &format!("{path}.name"))
            .filter(|name| {
                let reserved = name == super::KEEPALIVE_CHECK;
                if reserved {
                    ctx.error(
                        n,
                        &format!("{path}.name"),
                        "`keepalive` is reserved for agents' keepalives",
                    );
                }
                !reserved
            })
            .inspect(|name| {
                refs.name = Some(NameRef {
                    name: name.clone(),
                    line: n.line,
                    column: n.column,
                });
            }),
        None => {
            ctx.error(node, path, "missing required field `name`");
            None
        }
    };
    ctx.check = name.clone();
    let description = fields
        .get("description")
        .and_then(|n| string(ctx, n, &format!("{path}.description")));
    let owner = fields
        .get("owner")
        .and_then(|n| string(ctx, n, &format!("{path}.owner")));
    let runbook = fields
        .get("runbook")
        .and_then(|n| non_empty_string(ctx, n, &format!("{path}.runbook")));
    let labels = fields
        .get("labels")
        .map(|n| label_map(ctx, n, &format!("{path}.labels")))
        .unwrap_or_default();
    if let Some(n) = fields.get("depends_on") {
        let field = format!("{path}.depends_on");
        if let Some(items) = list(ctx, n, &field) {
            for (i, item) in items.iter().enumerate() {
                if let Some(dep) = name_field(ctx, item, &format!("{field}[{i}]")) {
                    refs.depends_on.push(NameRef {
                        name: dep,
                        line: item.line,
                        column: item.column,
                    });
                }
            }
        }
    }
    if let Some(n) = fields.get("handlers") {
        let field = format!("{path}.handlers");
        if let Some(items) = list(ctx, n, &field) {
            for (i, item) in items.iter().enumerate() {
                if let Some(handler) = name_field(ctx, item, &format!("{field}[{i}]")) {
                    refs.handlers.push(NameRef {
                        name: handler,
                        line: item.line,
                        column: item.column,
                    });
                }
            }
        }
    }
    let interval = fields
        .get("interval")
        .and_then(|n| positive_duration(ctx, n, &format!("{path}.interval")))
        .unwrap_or(defaults.interval);
    let timeout = fields
        .get("timeout")
        .and_then(|n| positive_duration(ctx, n, &format!("{path}.timeout")))
        .unwrap_or(defaults.timeout);
    let subscriptions = fields
        .get("subscriptions")
        .map(|n| string_list(ctx, n, &format!("{path}.subscriptions")))
        .unwrap_or_default();
    let entity = fields
        .get("entity")
        .and_then(|n| entity_name(ctx, n, &format!("{path}.entity")));
    let ttl = fields
        .get("ttl")
        .and_then(|n| positive_duration(ctx, n, &format!("{path}.ttl")));
    let mut percent = |key: &'static str| match fields.get(key) {
        None => Some(0),
        Some(n) => match n.value {
            Value::Int(p) if (0..=100).contains(&p) => u32::try_from(p).ok(),
            _ => {
                ctx.error(
                    n,
                    &format!("{path}.{key}"),
                    format!("expected a percentage (0-100), found {}", describe(n)),
                );
                None
            }
        },
    };
    let low_flap = percent("low_flap_threshold");
    let high_flap = percent("high_flap_threshold");
    let flap = match (low_flap, high_flap) {
        (Some(low), Some(high)) if low > high => {
            ctx.error(
                node,
                &format!("{path}.low_flap_threshold"),
                format!(
                    "low_flap_threshold ({low}) must not be above high_flap_threshold ({high})"
                ),
            );
            None
        }
        (Some(low), Some(high)) => Some(crate::event::FlapThresholds { low, high }),
        _ => None,
    };

    let mut probe_nodes = Vec::new();
    for kind in PROBE_KINDS {
        if let Some(n) = fields.get_with_key(kind) {
            probe_nodes.push((kind, n));
        }
    }
    let probe = match probe_nodes.as_slice() {
        [] if ttl.is_some() => Some(Probe::Push),
        [] => {
            ctx.error(
                node,
                path,
                format!(
                    "no probe: a check needs exactly one of {} (or only a `ttl`, for results pushed from outside)",
                    PROBE_KINDS.join(", ")
                ),
            );
            None
        }
        [(kind, (_, n))] => parse_probe(ctx, kind, n, &format!("{path}.{kind}")),
        [(first, _), rest @ ..] => {
            for (kind, (key, _)) in rest {
                ctx.error(
                    key,
                    &format!("{path}.{kind}"),
                    format!("a check has exactly one probe, this one already has `{first}`"),
                );
            }
            None
        }
    };
    fields.finish(ctx, path);
    let check = match (name, probe, flap) {
        (Some(name), Some(probe), Some(flap)) if ctx.errors.len() == errors_before => Some(Check {
            name,
            description,
            owner,
            runbook,
            labels,
            depends_on: refs.depends_on.iter().map(|d| d.name.clone()).collect(),
            interval,
            timeout,
            subscriptions,
            entity,
            ttl,
            flap,
            handlers: refs.handlers.iter().map(|h| h.name.clone()).collect(),
            probe,
            source: Source {
                file: ctx.file.to_string(),
                line: node.line,
                column: node.column,
            },
        }),
        _ => None,
    };
    (check, refs)
}

fn parse_probe(ctx: &mut Ctx, kind: &str, node: &Node, path: &str) -> Option<Probe> {
    match kind {
        "command" => parse_command(ctx, node, path).map(Probe::Command),
        "http" => parse_http(ctx, node, path).map(Probe::Http),
        "tcp" => parse_tcp(ctx, node, path).map(Probe::Tcp),
        "dns" => parse_dns(ctx, node, path).map(Probe::Dns),
        "tls" => parse_tls(ctx, node, path).map(Probe::Tls),
        _ => None,
    }
}

fn parse_command(ctx: &mut Ctx, node: &Node, path: &str) -> Option<CommandProbe> {
    let argv = match &node.value {
        Value::Str(line) => match shlex::split(line) {
            Some(words) => words,
            None => {
                ctx.error(
                    node,
                    path,
                    "cannot split the command line: a quote is not closed or a backslash ends it",
                );
                return None;
            }
        },
        Value::Seq(items) => {
            // Arguments are often numbers (`[check_dummy, 0, ok]`) or YAML booleans
            // (`[true]`): take scalars as written rather than rejecting them.
            let mut words = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match &item.value {
                    Value::Str(s) => words.push(s.clone()),
                    Value::Int(n) => words.push(n.to_string()),
                    Value::Float(x) => words.push(x.to_string()),
                    Value::Bool(b) => words.push(b.to_string()),
                    _ => ctx.error(
                        item,
                        &format!("{path}[{i}]"),
                        format!("expected an argument, found {}", describe(item)),
                    ),
                }
            }
            if words.len() != items.len() {
                return None;
            }
            words
        }
        other => {
            ctx.error(
                node,
                path,
                format!(
                    "expected a command line or a list of arguments, found {}",
                    other.kind()
                ),
            );
            return None;
        }
    };
    match argv.first() {
        None => {
            ctx.error(node, path, "the command is empty");
            None
        }
        Some(program) if program.is_empty() => {
            ctx.error(node, path, "the program name is empty");
            None
        }
        Some(_) if argv.iter().any(|a| a.contains('\0')) => {
            ctx.error(node, path, "an argument contains a NUL byte");
            None
        }
        Some(_) => Some(CommandProbe { argv }),
    }
}

fn parse_http(ctx: &mut Ctx, node: &Node, path: &str) -> Option<HttpProbe> {
    let mut f = Fields::of(ctx, node, path)?;
    let errors_before = ctx.errors.len();
    let url = match f.get("url") {
        Some(n) => string(ctx, n, &format!("{path}.url")).and_then(|text| {
            match url::Url::parse(&text) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some(text)
                }
                Ok(u) => {
                    ctx.error(
                        n,
                        &format!("{path}.url"),
                        format!("`{text}` must be an http:// or https:// URL with a host (scheme is `{}`)", u.scheme()),
                    );
                    None
                }
                Err(e) => {
                    ctx.error(n, &format!("{path}.url"), format!("`{text}` is not a URL: {e}"));
                    None
                }
            }
        }),
        None => {
            ctx.error(node, path, "missing required field `url`");
            None
        }
    };
    let method = match f.get("method") {
        Some(n) => string(ctx, n, &format!("{path}.method")).and_then(|m| {
            if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) {
                Some(m.to_ascii_uppercase())
            } else {
                ctx.error(
                    n,
                    &format!("{path}.method"),
                    format!("`{m}` is not an HTTP method (like GET, HEAD, POST)"),
                );
                None
            }
        }),
        None => Some("GET".to_string()),
    };
    let mut headers = BTreeMap::new();
    if let Some(n) = f.get("headers") {
        let field = format!("{path}.headers");
        for (key, (key_node, value)) in string_map(ctx, n, &field, false) {
            let valid_name = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name {
                ctx.error(
                    &key_node,
                    &format!("{field}.{key}"),
                    "not a valid HTTP header name",
                );
            } else if value.contains(['\r', '\n', '\0']) {
                ctx.error(
                    &key_node,
                    &format!("{field}.{key}"),
                    "a header value cannot contain line breaks",
                );
            } else {
                headers.insert(key, value);
            }
        }
    }
    let body = f
        .get("body")
        .and_then(|n| string(ctx, n, &format!("{path}.body")));
    let mut status = Vec::new();
    if let Some(n) = f.get("status") {
        let field = format!("{path}.status");
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        for item in items {
            match &item.value {
                Value::Int(code) if (100..=599).contains(code) => {
                    status.push(u16::try_from(*code).unwrap_or_default())
                }
                Value::Int(code) => ctx.error(
                    item,
                    &field,
                    format!("{code} is not an HTTP status (100-599)"),
                ),
                other => ctx.error(
                    item,
                    &field,
                    format!("expected a status code like 200, found {}", other.kind()),
                ),
            }
        }
    }
    let body_contains = f
        .get("body_contains")
        .and_then(|n| non_empty_string(ctx, n, &format!("{path}.body_contains")));
    let body_regex = f.get("body_regex").and_then(|n| {
        let field = format!("{path}.body_regex");
        let pattern = string(ctx, n, &field)?;
        match regex::RegexBuilder::new(&pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(_) => Some(pattern),
            Err(e) => {
                // The regex crate's message spans several lines with a caret diagram; its last
                // line says what is wrong, which is what fits in a one-line error.
                let text = e.to_string();
                let reason = text.lines().last().unwrap_or_default();
                let reason = reason.strip_prefix("error: ").unwrap_or(reason);
                ctx.error(n, &field, format!("invalid regular expression: {reason}"));
                None
            }
        }
    });
    let max_latency = f
        .get("max_latency")
        .and_then(|n| positive_duration(ctx, n, &format!("{path}.max_latency")));
    let follow_redirects = f
        .get("follow_redirects")
        .and_then(|n| boolean(ctx, n, &format!("{path}.follow_redirects")))
        .unwrap_or(true);
    let ca = f
        .get("ca")
        .and_then(|n| file_path(ctx, n, &format!("{path}.ca")));
    let insecure = f
        .get("insecure")
        .and_then(|n| boolean(ctx, n, &format!("{path}.insecure")))
        .unwrap_or(false);
    f.finish(ctx, path);
    if ctx.errors.len() != errors_before {
        return None;
    }
    Some(HttpProbe {
        url: url?,
        method: method?,
        headers,
        body,
        status,
        body_contains,
        body_regex,
        max_latency,
        follow_redirects,
        ca,
        insecure,
    })
}

fn parse_tcp(ctx: &mut Ctx, node: &Node, path: &str) -> Option<TcpProbe> {
    let mut f = Fields::of(ctx, node, path)?;
    let errors_before = ctx.errors.len();
    let host = required(ctx, &mut f, node, path, "host", host);
    let port = required(ctx, &mut f, node, path, "port", port);
    let send = f
        .get("send")
        .and_then(|n| string(ctx, n, &format!("{path}.send")));
    let expect = f
        .get("expect")
        .and_then(|n| non_empty_string(ctx, n, &format!("{path}.expect")));
    let max_latency = f
        .get("max_latency")
        .and_then(|n| positive_duration(ctx, n, &format!("{path}.max_latency")));
    f.finish(ctx, path);
    if ctx.errors.len() != errors_before {
        return None;
    }
    Some(TcpProbe {
        host: host?,
        port: port?,
        send,
        expect,
        max_latency,
    })
}

fn parse_dns(ctx: &mut Ctx, node: &Node, path: &str) -> Option<DnsProbe> {
    let mut f = Fields::of(ctx, node, path)?;
    let errors_before = ctx.errors.len();
    let name = required(ctx, &mut f, node, path, "name", host);
    let record_type = match f.get("type") {
        Some(n) => string(ctx, n, &format!("{path}.type")).and_then(|t| {
            let found = RecordType::ALL
                .into_iter()
                .find(|r| r.as_str().eq_ignore_ascii_case(&t));
            if found.is_none() {
                let names: Vec<_> = RecordType::ALL.iter().map(|r| r.as_str()).collect();
                ctx.error(
                    n,
                    &format!("{path}.type"),
                    format!(
                        "unknown record type `{t}`: expected one of {}",
                        names.join(", ")
                    ),
                );
            }
            found
        }),
        None => Some(RecordType::A),
    };
    let server = f.get("server").and_then(|n| {
        let field = format!("{path}.server");
        let text = string(ctx, n, &field)?;
        let parsed = text
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
        if parsed.is_none() {
            ctx.error(
                n,
                &field,
                format!("`{text}` is not an IP address with an optional port (like 10.0.0.53, 127.0.0.1:5353 or [::1]:53)"),
            );
        }
        parsed
    });
    let expect = f
        .get("expect")
        .map(|n| match &n.value {
            Value::Str(s) => vec![s.clone()],
            _ => string_list(ctx, n, &format!("{path}.expect")),
        })
        .unwrap_or_default();
    let max_latency = f
        .get("max_latency")
        .and_then(|n| positive_duration(ctx, n, &format!("{path}.max_latency")));
    f.finish(ctx, path);
    if ctx.errors.len() != errors_before {
        return None;
    }
    Some(DnsProbe {
        name: name?,
        record_type: record_type?,
        server,
        expect,
        max_latency,
    })
}

fn parse_tls(ctx: &mut Ctx, node: &Node, path: &str) -> Option<TlsProbe> {
    let mut f = Fields::of(ctx, node, path)?;
    let errors_before = ctx.errors.len();
    let host = required(ctx, &mut f, node, path, "host", host);
    let port = f
        .get("port")
        .map(|n| port(ctx, n, &format!("{path}.port")))
        .unwrap_or(Some(443));
    let server_name = f
        .get("server_name")
        .and_then(|n| self::host(ctx, n, &format!("{path}.server_name")));
    let days = |ctx: &mut Ctx, f: &mut Fields, key: &'static str, default: u32| match f.get(key) {
        None => Some(default),
        Some(n) => match n.value {
            Value::Int(d) if (0..=36_500).contains(&d) => u32::try_from(d).ok(),
            _ => {
                ctx.error(
                    n,
                    &format!("{path}.{key}"),
                    format!("expected a number of days (0-36500), found {}", describe(n)),
                );
                None
            }
        },
    };
    let warn_days = days(ctx, &mut f, "warn_days", 14);
    let crit_days = days(ctx, &mut f, "crit_days", 7);
    if let (Some(w), Some(c)) = (warn_days, crit_days)
        && c > w
    {
        ctx.error(
            node,
            &format!("{path}.crit_days"),
            format!("crit_days ({c}) must not be more than warn_days ({w})"),
        );
    }
    let ca = f
        .get("ca")
        .and_then(|n| file_path(ctx, n, &format!("{path}.ca")));
    let insecure = f
        .get("insecure")
        .and_then(|n| boolean(ctx, n, &format!("{path}.insecure")))
        .unwrap_or(false);
    f.finish(ctx, path);
    if ctx.errors.len() != errors_before {
        return None;
    }
    let host = host?;
    Some(TlsProbe {
        server_name: server_name.unwrap_or_else(|| host.clone()),
        host,
        port: port?,
        warn_days: warn_days?,
        crit_days: crit_days?,
        ca,
        insecure,
    })
}

/// The `name` every named entry (deployment, handler) must have, with where it was written.
fn required_name(ctx: &mut Ctx, name: Option<&Node>, node: &Node, path: &str) -> Option<NameRef> {
    let Some(n) = name else {
        ctx.error(node, path, "missing required field `name`");
        return None;
    };
    name_field(ctx, n, &format!("{path}.name")).map(|name| NameRef {
        name,
        line: n.line,
        column: n.column,
    })
}

/// How long a handler may take by default.
const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(10);

fn parse_handler(ctx: &mut Ctx, node: &Node, path: &str) -> Option<ParsedHandler> {
    ctx.check = None;
    let mut f = Fields::of(ctx, node, path)?;
    let errors_before = ctx.errors.len();
    let name = required_name(ctx, f.get("name"), node, path);
    let kind_text = match f.get("type") {
        Some(n) => string(ctx, n, &format!("{path}.type")).map(|t| (t, n)),
        None => {
            ctx.error(
                node,
                path,
                "missing required field `type` (webhook or command)",
            );
            None
        }
    };
    let url = f.get("url");
    let headers = f.get("headers");
    let secret_file = f.get("secret_file");
    let command = f.get("command");
    let kind = match kind_text {
        Some((t, _)) if t == "webhook" => {
            if let Some(n) = command {
                ctx.error(
                    n,
                    &format!("{path}.command"),
                    "a webhook handler has a `url`, not a `command`",
                );
            }
            let url = match url {
                Some(n) => string(ctx, n, &format!("{path}.url")).filter(|text| {
                    let ok = url::Url::parse(text).is_ok_and(|u| {
                        matches!(u.scheme(), "http" | "https") && u.host().is_some()
                    });
                    if !ok {
                        ctx.error(
                            n,
                            &format!("{path}.url"),
                            format!("`{text}` must be an http:// or https:// URL with a host"),
                        );
                    }
                    ok
                }),
                None => {
                    ctx.error(node, path, "a webhook handler needs a `url`");
                    None
                }
            };
            let headers_node = headers;
            let headers = headers
                .map(|n| label_map(ctx, n, &format!("{path}.headers")))
                .unwrap_or_default();
            for name in headers.keys() {
                if name.to_ascii_lowercase().starts_with("webhook-") {
                    ctx.error(
                        headers_node.unwrap_or(node),
                        &format!("{path}.headers"),
                        format!("`{name}`: webhook-id, webhook-timestamp and webhook-signature are set by mdd"),
                    );
                }
            }
            let secret_file = secret_file.and_then(|n| {
                let field = format!("{path}.secret_file");
                string(ctx, n, &field).filter(|text| {
                    let absolute = text.starts_with('/');
                    if !absolute {
                        ctx.error(
                            n,
                            &field,
                            format!("`{text}` must be an absolute path on the server's host"),
                        );
                    }
                    absolute
                })
            });
            url.map(|url| HandlerKind::Webhook {
                url,
                headers,
                secret_file,
            })
        }
        Some((t, _)) if t == "command" => {
            for (key, n) in [
                ("url", url),
                ("headers", headers),
                ("secret_file", secret_file),
            ] {
                if let Some(n) = n {
                    ctx.error(
                        n,
                        &format!("{path}.{key}"),
                        format!("a command handler has a `command`, not `{key}`"),
                    );
                }
            }
            match command {
                Some(n) => parse_command(ctx, n, &format!("{path}.command"))
                    .map(|c| HandlerKind::Command { argv: c.argv }),
                None => {
                    ctx.error(node, path, "a command handler needs a `command`");
                    None
                }
            }
        }
        Some((t, n)) => {
            ctx.error(
                n,
                &format!("{path}.type"),
                format!("unknown handler type `{t}`: use webhook or command"),
            );
            None
        }
        None => None,
    };
    let timeout = f
        .get("timeout")
        .and_then(|n| positive_duration(ctx, n, &format!("{path}.timeout")))
        .unwrap_or(DEFAULT_HANDLER_TIMEOUT);
    let filter = match f.get("filter") {
        Some(n) => parse_handler_filter(ctx, n, &format!("{path}.filter")),
        None => Some(HandlerFilter {
            occurrences: 1,
            ..HandlerFilter::default()
        }),
    };
    f.finish(ctx, path);
    if ctx.errors.len() != errors_before {
        return None;
    }
    let name_at = name?;
    Some(ParsedHandler {
        handler: Handler {
            name: name_at.name.clone(),
            kind: kind?,
            timeout,
            filter: filter?,
        },
        file: ctx.file.to_string(),
        path: path.to_string(),
        name_at,
    })
}

fn parse_handler_filter(ctx: &mut Ctx, node: &Node, path: &str) -> Option<HandlerFilter> {
    let mut f = Fields::of(ctx, node, path)?;
    let mut states = Vec::new();
    if let Some(n) = f.get("states") {
        let field = format!("{path}.states");
        for (i, word) in string_list(ctx, n, &field).into_iter().enumerate() {
            match word.parse::<crate::State>() {
                Ok(state) => states.push(state),
                Err(_) => {
                    let names: Vec<&str> = crate::State::ALL.iter().map(|s| s.as_str()).collect();
                    ctx.error(
                        n,
                        &format!("{field}[{i}]"),
                        format!("unknown state `{word}`: use {}", names.join(", ")),
                    );
                }
            }
        }
    }
    let occurrences = match f.get("occurrences") {
        None => 1,
        Some(n) => match n.value {
            Value::Int(k) if (1..=1_000_000).contains(&k) => u32::try_from(k).unwrap_or(1),
            _ => {
                ctx.error(
                    n,
                    &format!("{path}.occurrences"),
                    format!("expected a count of at least 1, found {}", describe(n)),
                );
                1
            }
        },
    };
    let reminder = f
        .get("reminder")
        .and_then(|n| positive_duration(ctx, n, &format!("{path}.reminder")));
    let owners = f
        .get("owners")
        .map(|n| string_list(ctx, n, &format!("{path}.owners")))
        .unwrap_or_default();
    let labels = f
        .get("labels")
        .map(|n| label_map(ctx, n, &format!("{path}.labels")))
        .unwrap_or_default();
    f.finish(ctx, path);
    Some(HandlerFilter {
        states,
        occurrences,
        reminder,
        owners,
        labels,
    })
}

fn parse_deployment(ctx: &mut Ctx, node: &Node, path: &str) -> Option<ParsedDeployment> {
    ctx.check = None;
    let mut f = Fields::of(ctx, node, path)?;
    let errors_before = ctx.errors.len();
    let name = required_name(ctx, f.get("name"), node, path);
    let description = f
        .get("description")
        .and_then(|n| string(ctx, n, &format!("{path}.description")));
    let selector = f
        .get("selector")
        .map(|n| label_map(ctx, n, &format!("{path}.selector")))
        .unwrap_or_default();
    let settle = f
        .get("settle")
        .and_then(|n| duration(ctx, n, &format!("{path}.settle")))
        .unwrap_or(DEFAULT_SETTLE);
    f.finish(ctx, path);
    if ctx.errors.len() != errors_before {
        return None;
    }
    let name_at = name?;
    Some(ParsedDeployment {
        deployment: Deployment {
            name: name_at.name.clone(),
            description,
            selector,
            settle,
        },
        file: ctx.file.to_string(),
        path: path.to_string(),
        name_at,
    })
}

// ---- The fields of a mapping, tracking which were read so the rest can be reported. ----

pub(crate) struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
    asked: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    fn of(ctx: &mut Ctx, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            ctx.error(
                node,
                path,
                format!("expected a mapping of fields, found {}", describe(node)),
            );
            return None;
        };
        let mut fields = Vec::new();
        for (key, value) in entries {
            match &key.value {
                Value::Str(name) => fields.push((name.as_str(), key, value)),
                _ => ctx.error(
                    key,
                    path,
                    format!("field names must be strings, found {}", key.value.kind()),
                ),
            }
        }
        Some(Fields {
            entries: fields,
            asked: Vec::new(),
        })
    }

    fn get(&mut self, name: &'static str) -> Option<&'n Node> {
        self.get_with_key(name).map(|(_, value)| value)
    }

    fn get_with_key(&mut self, name: &'static str) -> Option<(&'n Node, &'n Node)> {
        self.asked.push(name);
        self.entries
            .iter()
            .find(|(key, _, _)| *key == name)
            .map(|(_, key, value)| (*key, *value))
    }

    /// Reports every field that was never asked for: a typo must not be silently ignored.
    fn finish(self, ctx: &mut Ctx, path: &str) {
        for (name, key, _) in &self.entries {
            if !self.asked.contains(name) {
                let field = if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
                let mut hint = did_you_mean(name, &self.asked);
                if hint.is_empty() {
                    hint = format!(" (known fields: {})", self.asked.join(", "));
                }
                ctx.error(key, &field, format!("unknown field `{name}`{hint}"));
            }
        }
    }
}

/// The known name closest to a misspelt one, if it is close enough to be what was meant.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

/// " (did you mean `x`?)" when a known name is close to the unknown one, else nothing.
pub(crate) fn did_you_mean(name: &str, known: &[&str]) -> String {
    closest(name, known)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

// ---- Typed readers. Each reports its own error and returns None on failure. ----

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => format!("the string `{s}`"),
        Value::Int(i) => format!("the integer {i}"),
        Value::Float(x) => format!("the number {x}"),
        Value::Bool(b) => format!("the boolean {b}"),
        other => other.kind().to_string(),
    }
}

fn required<'n, T>(
    ctx: &mut Ctx,
    fields: &mut Fields<'n>,
    parent: &Node,
    path: &str,
    key: &'static str,
    read: fn(&mut Ctx, &Node, &str) -> Option<T>,
) -> Option<T> {
    match fields.get(key) {
        Some(n) => read(ctx, n, &format!("{path}.{key}")),
        None => {
            ctx.error(parent, path, format!("missing required field `{key}`"));
            None
        }
    }
}

fn string(ctx: &mut Ctx, node: &Node, field: &str) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        _ => {
            ctx.error(
                node,
                field,
                format!("expected a string, found {}", describe(node)),
            );
            None
        }
    }
}

fn non_empty_string(ctx: &mut Ctx, node: &Node, field: &str) -> Option<String> {
    let s = string(ctx, node, field)?;
    if s.is_empty() {
        ctx.error(node, field, "must not be empty");
        return None;
    }
    Some(s)
}

fn name_field(ctx: &mut Ctx, node: &Node, field: &str) -> Option<String> {
    let name = string(ctx, node, field)?;
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        ctx.error(
            node,
            field,
            format!("`{name}` is not a valid name: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -"),
        );
        return None;
    }
    Some(name)
}

/// Entity names: what results may carry (the API accepts the same characters).
fn entity_name(ctx: &mut Ctx, node: &Node, field: &str) -> Option<String> {
    let name = string(ctx, node, field)?;
    if !super::is_valid_entity_name(&name) {
        ctx.error(
            node,
            field,
            format!("`{name}` is not a valid entity name: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ - :"),
        );
        return None;
    }
    Some(name)
}

fn host(ctx: &mut Ctx, node: &Node, field: &str) -> Option<String> {
    let host = non_empty_string(ctx, node, field)?;
    if host.contains(|c: char| c.is_whitespace() || c == '/') {
        ctx.error(
            node,
            field,
            format!("`{host}` is not a host name or address"),
        );
        return None;
    }
    Some(host)
}

fn port(ctx: &mut Ctx, node: &Node, field: &str) -> Option<u16> {
    match node.value {
        Value::Int(p) if (1..=65535).contains(&p) => u16::try_from(p).ok(),
        Value::Int(p) => {
            ctx.error(node, field, format!("port {p} is out of range (1-65535)"));
            None
        }
        _ => {
            ctx.error(
                node,
                field,
                format!("expected a port number (1-65535), found {}", describe(node)),
            );
            None
        }
    }
}

fn boolean(ctx: &mut Ctx, node: &Node, field: &str) -> Option<bool> {
    match node.value {
        Value::Bool(b) => Some(b),
        _ => {
            ctx.error(
                node,
                field,
                format!("expected true or false, found {}", describe(node)),
            );
            None
        }
    }
}

fn duration(ctx: &mut Ctx, node: &Node, field: &str) -> Option<Duration> {
    match &node.value {
        Value::Str(text) => match parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.error(node, field, e.to_string());
                None
            }
        },
        _ => {
            ctx.error(
                node,
                field,
                format!(
                    "expected a duration with a unit (like 250ms, 30s, 5m), found {}",
                    describe(node)
                ),
            );
            None
        }
    }
}

fn positive_duration(ctx: &mut Ctx, node: &Node, field: &str) -> Option<Duration> {
    let d = duration(ctx, node, field)?;
    if d.is_zero() {
        ctx.error(node, field, "must be longer than zero");
        return None;
    }
    Some(d)
}

fn file_path(ctx: &mut Ctx, node: &Node, field: &str) -> Option<PathBuf> {
    let text = non_empty_string(ctx, node, field)?;
    let path = PathBuf::from(text);
    Some(if path.is_relative() {
        ctx.dir.join(path)
    } else {
        path
    })
}

fn list<'n>(ctx: &mut Ctx, node: &'n Node, field: &str) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        Value::Null => Some(&[]),
        _ => {
            ctx.error(
                node,
                field,
                format!("expected a list, found {}", describe(node)),
            );
            None
        }
    }
}

fn string_list(ctx: &mut Ctx, node: &Node, field: &str) -> Vec<String> {
    let Some(items) = list(ctx, node, field) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| string(ctx, item, &format!("{field}[{i}]")))
        .collect()
}

/// A mapping of string keys to scalar values; scalars that are not strings are taken as written
/// when `stringify` is set (label values like `rack: 12`).
fn string_map(
    ctx: &mut Ctx,
    node: &Node,
    field: &str,
    stringify: bool,
) -> Vec<(String, (Node, String))> {
    let entries = match &node.value {
        Value::Map(entries) => entries,
        Value::Null => return Vec::new(),
        _ => {
            ctx.error(
                node,
                field,
                format!("expected a mapping, found {}", describe(node)),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (key, value) in entries {
        let key_text = match &key.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) if stringify => i.to_string(),
            _ => {
                ctx.error(
                    key,
                    field,
                    format!("keys must be strings, found {}", describe(key)),
                );
                continue;
            }
        };
        let value_text = match &value.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) if stringify => i.to_string(),
            Value::Float(x) if stringify => x.to_string(),
            Value::Bool(b) if stringify => b.to_string(),
            _ => {
                ctx.error(
                    value,
                    &format!("{field}.{key_text}"),
                    format!("expected a string, found {}", describe(value)),
                );
                continue;
            }
        };
        if seen.insert(key_text.clone()) {
            out.push((key_text, (key.clone(), value_text)));
        }
    }
    out
}

fn label_map(ctx: &mut Ctx, node: &Node, field: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (key, (key_node, value)) in string_map(ctx, node, field, true) {
        let valid = !key.is_empty()
            && key.len() <= MAX_NAME_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if valid {
            labels.insert(key, value);
        } else {
            ctx.error(
                &key_node,
                &format!("{field}.{key}"),
                format!("`{key}` is not a valid label name: use A-Z a-z 0-9 . _ - /"),
            );
        }
    }
    labels
}
