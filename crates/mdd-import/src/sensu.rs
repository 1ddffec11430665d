//! Sensu Go resources (`sensuctl dump` YAML or JSON) and Sensu Classic JSON (a config file and
//! `conf.d`, deep-merged in load order as Sensu merges them) made into checks, command
//! handlers and silences.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::Options;
use crate::command;
use crate::model::{Import, ImportedCheck, ImportedHandler, Origin, label_key};
use crate::nagios::{Note, ParseError};

/// One resource and where it starts.
struct Resource {
    value: Value,
    origin: Origin,
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

/// The resources of one file: a JSON stream or array, or YAML documents.
fn resources(file: &str, text: &str) -> Result<Vec<Resource>, ParseError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut out = Vec::new();
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        loop {
            let start = stream.byte_offset();
            match stream.next() {
                None => break,
                Some(Ok(Value::Array(items))) => {
                    let line = line_of(
                        text,
                        start + (text[start..].len() - text[start..].trim_start().len()),
                    );
                    out.extend(items.into_iter().map(|value| Resource {
                        value,
                        origin: Origin::new(file, line),
                    }));
                }
                Some(Ok(value)) => {
                    let skipped = text[start..].len() - text[start..].trim_start().len();
                    out.push(Resource {
                        value,
                        origin: Origin::new(file, line_of(text, start + skipped)),
                    });
                }
                Some(Err(e)) => {
                    return Err(ParseError {
                        file: file.to_string(),
                        line: e.line(),
                        column: e.column(),
                        message: format!("not valid JSON: {e}"),
                    });
                }
            }
        }
        return Ok(out);
    }
    let documents: Vec<serde_saphyr::Spanned<Value>> =
        serde_saphyr::from_multiple(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
            ParseError {
                file: file.to_string(),
                line,
                column,
                message: format!("not valid YAML: {}", first_line(&e.to_string())),
            }
        })?;
    Ok(documents
        .into_iter()
        .filter(|d| !d.value.is_null())
        .map(|d| Resource {
            origin: Origin::new(file, d.defined.line() as usize),
            value: d.value,
        })
        .collect())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn string<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn strings(map: &Map<String, Value>, key: &str) -> Vec<String> {
    match map.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn seconds(map: &Map<String, Value>, key: &str) -> Option<Duration> {
    map.get(key)
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
}

/// Whether a field holds something (not null, false, 0, "" or empty).
fn is_set(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Bool(true)) => true,
    }
}

/// A Sensu command: Sensu runs it with `sh -c`, so what needs the shell keeps it.
fn argv(line: &str) -> Result<(Vec<String>, bool), String> {
    let line = line.trim();
    command::argv(line).map(|a| (a.argv, a.through_shell))
}

/// A subscription as mdd names them (`[A-Za-z0-9._:-]`).
fn subscription(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn flap(spec: &Map<String, Value>) -> Option<(u32, u32)> {
    let low = spec.get("low_flap_threshold").and_then(Value::as_u64)?;
    let high = spec.get("high_flap_threshold").and_then(Value::as_u64)?;
    (low > 0 && high > low && high <= 100).then_some((low as u32, high as u32))
}

/// Fields of a Sensu check the import reads (or that hold nothing mdd would need).
const KNOWN_CHECK_FIELDS: &[&str] = &[
    "command",
    "interval",
    "timeout",
    "ttl",
    "subscriptions",
    "proxy_entity_name",
    "source",
    "handlers",
    "handler",
    "low_flap_threshold",
    "high_flap_threshold",
    "publish",
    "standalone",
    "dependencies",
    "playbook",
    "runbook",
    "owner",
    "contact",
    "description",
    "notes",
    "name",
    "namespace",
];

/// Fields of a Sensu check mdd has no place for, with why.
const CHECK_FIELDS_LEFT_OUT: &[(&str, &str)] = &[
    (
        "cron",
        "mdd runs checks at an interval, not on a cron schedule",
    ),
    (
        "round_robin",
        "mdd runs a check on every agent of its subscriptions",
    ),
    ("check_hooks", "mdd has no check hooks"),
    ("hooks", "mdd has no check hooks"),
    (
        "proxy_requests",
        "mdd has no proxy requests: write one check per proxy entity",
    ),
    (
        "runtime_assets",
        "mdd has no assets: install the plugin on the agents' hosts",
    ),
    ("output_metric_format", "mdd reads Nagios perfdata only"),
    ("output_metric_handlers", "mdd has no metric handlers"),
    ("output_metric_tags", "mdd has no metric handlers"),
    ("output_metric_thresholds", "mdd has no metric thresholds"),
    (
        "subdue",
        "mdd has no subdues: a silence mutes notifications",
    ),
    (
        "subdues",
        "mdd has no subdues: a silence mutes notifications",
    ),
    (
        "secrets",
        "mdd has no secrets provider: give the agent the environment",
    ),
    ("env_vars", "mdd sets no per-check environment"),
    (
        "pipelines",
        "mdd has no pipelines: handlers and their filters",
    ),
    ("stdin", "mdd closes a plugin's stdin"),
    ("extended_attributes", "mdd has no extended attributes"),
    ("aggregate", "mdd has no aggregates"),
    ("aggregates", "mdd has no aggregates"),
    ("type", "mdd has no metric checks"),
    ("extension", "mdd has no extensions"),
    (
        "handle",
        "mdd notifies handlers of every check that names them",
    ),
    (
        "occurrences",
        "occurrences are a handler's `filter.occurrences` in mdd",
    ),
    (
        "refresh",
        "reminders are a handler's `filter.reminder` in mdd",
    ),
    ("auto_resolve", "mdd resolves when the check passes again"),
    ("force_resolve", "mdd resolves when the check passes again"),
    ("contacts", "notifications are handlers in mdd"),
    (
        "ttl_status",
        "a stale check in mdd is stale, not a chosen status",
    ),
    ("silenced", "silences are made with `mdd silence add`"),
    ("scheduler", "mdd's server or agents schedule their checks"),
    (
        "max_output_size",
        "mdd caps plugin output itself (`--output-limit`)",
    ),
    ("discard_output", "mdd keeps plugin output"),
];

fn left_out(spec: &Map<String, Value>, origin: &Origin, what: &str, notes: &mut Vec<Note>) {
    for (field, why) in CHECK_FIELDS_LEFT_OUT {
        let value = spec.get(*field);
        // Sensu Classic's `type: standard` is the default: nothing is lost.
        let default_type = *field == "type" && value.and_then(Value::as_str) == Some("standard");
        if is_set(value) && !default_type {
            notes.push(origin.note(format!("{what}: `{field}` is not carried over: {why}")));
        }
    }
}

struct Converted {
    checks: Vec<ImportedCheck>,
    handlers: Vec<ImportedHandler>,
    silences: Vec<(Origin, Vec<String>)>,
    notes: Vec<Note>,
}

/// Sensu Go resources from every file, in order.
pub(crate) fn sensu_go(
    files: &[(String, String)],
    options: &Options,
) -> Result<Import, ParseError> {
    let mut all = Vec::new();
    for (file, text) in files {
        all.extend(resources(file, text)?);
    }
    let mut out = Converted {
        checks: Vec::new(),
        handlers: Vec::new(),
        silences: Vec::new(),
        notes: Vec::new(),
    };
    let handler_names: BTreeSet<String> = all
        .iter()
        .filter(|r| kind(&r.value) == Some("Handler"))
        .filter(|r| handler_type(&r.value) == "pipe")
        .filter_map(|r| name(&r.value).map(str::to_string))
        .collect();
    for resource in &all {
        let origin = &resource.origin;
        let Some(object) = resource.value.as_object() else {
            out.notes
                .push(origin.note("a resource that is not a mapping is not carried over"));
            continue;
        };
        let spec = object.get("spec").and_then(Value::as_object);
        let metadata = object.get("metadata").and_then(Value::as_object);
        let (Some(kind), Some(name), Some(spec)) =
            (kind(&resource.value), name(&resource.value), spec)
        else {
            out.notes.push(
                origin.note(
                    "a resource without `type`, `metadata.name` and `spec` is not carried over",
                ),
            );
            continue;
        };
        match kind {
            "CheckConfig" => {
                let what = format!("Sensu Go check `{name}`");
                let mut check = ImportedCheck {
                    key: format!("check\u{0}{name}"),
                    name: name.to_string(),
                    what: what.clone(),
                    origin: Some(origin.clone()),
                    ..ImportedCheck::default()
                };
                if let Some(metadata) = metadata {
                    metadata_into(metadata, &mut check, origin, &mut out.notes);
                }
                check_spec_into(spec, &mut check, origin, &handler_names, options, &mut out.notes);
                if let Some(check) = finish_check(check, spec, origin, &mut out.notes) {
                    out.checks.push(check);
                }
            }
            "Handler" => {
                if let Some(handler) = handler(name, spec, origin, &mut out.notes) {
                    out.handlers.push(handler);
                }
            }
            "Silenced" => silenced(spec, origin, &mut out),
            other => out.notes.push(origin.note(format!(
                "the {other} `{name}` is not carried over: {}",
                match other {
                    "HookConfig" => "mdd has no check hooks",
                    "EventFilter" => "handler filters in mdd are states, occurrences, reminder, owners and labels",
                    "Mutator" => "mdd has no mutators: handlers get the event as mdd writes it",
                    "Asset" => "mdd has no assets: install plugins on the agents' hosts",
                    "Entity" => "entities come with the agents and proxy checks",
                    _ => "mdd has no equivalent",
                }
            ))),
        }
    }
    Ok(Import {
        format: "sensu-go".into(),
        inputs: files.iter().map(|(f, _)| f.clone()).collect(),
        checks: out.checks,
        handlers: out.handlers,
        silences: out.silences,
        notes: out.notes,
        datacenter: options.datacenter.clone(),
    })
}

fn kind(value: &Value) -> Option<&str> {
    value.get("type").and_then(Value::as_str)
}

fn name(value: &Value) -> Option<&str> {
    value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

fn handler_type(value: &Value) -> &str {
    value
        .get("spec")
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("pipe")
}

/// Labels as labels; the annotations mdd has fields for (runbook, owner, description) into
/// them.
fn metadata_into(
    metadata: &Map<String, Value>,
    check: &mut ImportedCheck,
    origin: &Origin,
    notes: &mut Vec<Note>,
) {
    if let Some(namespace) = string(metadata, "namespace").filter(|n| *n != "default") {
        check
            .labels
            .insert("sensu/namespace".into(), namespace.to_string());
    }
    if let Some(Value::Object(labels)) = metadata.get("labels") {
        for (key, value) in labels {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            check.labels.insert(label_key(key), value);
        }
    }
    if let Some(Value::Object(annotations)) = metadata.get("annotations") {
        for (key, value) in annotations {
            let Some(value) = value.as_str() else {
                continue;
            };
            let short = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
            match short.as_str() {
                "runbook" | "runbook_url" | "runbook-url" | "playbook" => {
                    check.runbook = Some(value.to_string());
                }
                "owner" | "team" => check.owner = Some(value.to_string()),
                "description" | "summary" | "notes" => check.description = Some(value.to_string()),
                _ => notes.push(origin.note(format!(
                    "{}: the annotation `{key}` is not carried over: mdd has no field for it",
                    check.what
                ))),
            }
        }
    }
}

fn check_spec_into(
    spec: &Map<String, Value>,
    check: &mut ImportedCheck,
    origin: &Origin,
    handler_names: &BTreeSet<String>,
    options: &Options,
    notes: &mut Vec<Note>,
) {
    let what = check.what.clone();
    check.interval = seconds(spec, "interval");
    check.timeout = seconds(spec, "timeout");
    check.ttl = seconds(spec, "ttl");
    for name in strings(spec, "subscriptions") {
        let name = match name.strip_prefix("roundrobin:") {
            Some(plain) => {
                notes.push(origin.note(format!(
                    "{what}: the round-robin subscription `{name}` is `{plain}` in mdd, where every agent of it runs the check"
                )));
                plain.to_string()
            }
            None => name,
        };
        let name = subscription(&name);
        if !check.subscriptions.contains(&name) {
            check.subscriptions.push(name);
        }
    }
    if let Some(runbook) = string(spec, "runbook").or_else(|| string(spec, "playbook")) {
        check.runbook = Some(runbook.to_string());
    }
    if let Some(owner) = string(spec, "owner").or_else(|| string(spec, "contact")) {
        check.owner = Some(owner.to_string());
    }
    if let Some(description) = string(spec, "description").or_else(|| string(spec, "notes")) {
        check.description = Some(description.to_string());
    }
    for key in spec.keys() {
        let known = KNOWN_CHECK_FIELDS.contains(&key.as_str())
            || CHECK_FIELDS_LEFT_OUT.iter().any(|(field, _)| field == key);
        if !known {
            notes.push(origin.note(format!(
                "{what}: `{key}` is not carried over: mdd has no such field (a custom attribute only Sensu's handlers read)"
            )));
        }
    }
    check.group = check.subscriptions.first().cloned();
    check.entity = string(spec, "proxy_entity_name")
        .or_else(|| string(spec, "source"))
        .map(subscription);
    check.flap = flap(spec);
    if let Some(datacenter) = &options.datacenter {
        check.labels.insert("datacenter".into(), datacenter.clone());
    }
    let mut handlers = strings(spec, "handlers");
    if let Some(one) = string(spec, "handler") {
        handlers.push(one.to_string());
    }
    for handler in handlers {
        if handler_names.contains(&handler) {
            if !check.handlers.contains(&handler) {
                check.handlers.push(handler);
            }
        } else {
            notes.push(origin.note(format!(
                "{what} names the handler `{handler}`, which is not a pipe handler defined here: left out"
            )));
        }
    }
    if let Some(command) = string(spec, "command") {
        if command.contains("{{") || command.contains(":::") {
            notes.push(origin.note(format!(
                "{what}: its command uses token substitution (`{}`), which mdd does not do: the command is kept as written, fill the values in",
                command.trim()
            )));
        }
        match argv(command) {
            Ok((words, through_shell)) => {
                if through_shell {
                    notes.push(origin.note(format!(
                        "{what} runs through `sh -c`: its command line needs a shell (`{}`)",
                        command.trim()
                    )));
                }
                check.command = Some(words);
            }
            Err(why) => notes.push(origin.note(format!("{what}: {why}: not carried over"))),
        }
    }
}

/// A check with no command, or not published, is push-only (with a ttl); None when there is
/// nothing to run and nothing to push.
fn finish_check(
    mut check: ImportedCheck,
    spec: &Map<String, Value>,
    origin: &Origin,
    notes: &mut Vec<Note>,
) -> Option<ImportedCheck> {
    let what = check.what.clone();
    let published = spec.get("publish").and_then(Value::as_bool).unwrap_or(true);
    let standalone = spec
        .get("standalone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    left_out(spec, origin, &what, notes);
    if is_set(spec.get("cron")) && check.interval.is_none() {
        check.interval = Some(Duration::from_secs(60));
        notes.push(origin.note(format!(
            "{what} ran on a cron schedule: it runs every 1m in mdd"
        )));
    }
    if check.command.is_none() {
        if string(spec, "command").is_none() {
            notes.push(origin.note(format!("{what} has no command: not carried over")));
        }
        return None;
    }
    if !published && !standalone {
        let every = check.interval.unwrap_or(mdd_core::spec::DEFAULT_INTERVAL);
        let ttl = check.ttl.unwrap_or(every * 2);
        if check.ttl.is_none() {
            notes.push(origin.note(format!(
                "{what} is not published (run on request only): push-only in mdd, with a ttl of twice its interval, {}",
                crate::write::duration(ttl)
            )));
        } else {
            notes.push(origin.note(format!(
                "{what} is not published (run on request only): push-only in mdd; its command is left out"
            )));
        }
        check.command = None;
        check.ttl = Some(ttl);
        check.interval = None;
        check.timeout = None;
        check.subscriptions.clear();
    }
    Some(check)
}

fn handler(
    name: &str,
    spec: &Map<String, Value>,
    origin: &Origin,
    notes: &mut Vec<Note>,
) -> Option<ImportedHandler> {
    let what = format!("the handler `{name}`");
    let kind = string(spec, "type").unwrap_or("pipe");
    if kind != "pipe" {
        notes.push(origin.note(format!(
            "{what} is a {kind} handler: not carried over (mdd has command and webhook handlers)"
        )));
        return None;
    }
    let Some(command) = string(spec, "command") else {
        notes.push(origin.note(format!("{what} has no command: not carried over")));
        return None;
    };
    let (words, through_shell) = match argv(command) {
        Ok(words) => words,
        Err(why) => {
            notes.push(origin.note(format!("{what}: {why}: not carried over")));
            return None;
        }
    };
    if through_shell {
        notes.push(origin.note(format!(
            "{what} runs through `sh -c`: its command line needs a shell"
        )));
    }
    for (field, why) in [
        (
            "filters",
            "mdd's handler filters are states, occurrences, reminder, owners and labels",
        ),
        (
            "filter",
            "mdd's handler filters are states, occurrences, reminder, owners and labels",
        ),
        ("mutator", "mdd has no mutators"),
        (
            "env_vars",
            "mdd sets no per-handler environment: give it to the server",
        ),
        (
            "runtime_assets",
            "mdd has no assets: install the handler on the server's host",
        ),
        ("secrets", "mdd has no secrets provider"),
        ("severities", "use the handler's `filter.states` in mdd"),
        (
            "handle_silenced",
            "mdd never notifies about silenced events",
        ),
        (
            "handle_flapping",
            "mdd notifies the start and end of flapping",
        ),
    ] {
        if is_set(spec.get(field)) {
            notes.push(origin.note(format!("{what}: `{field}` is not carried over: {why}")));
        }
    }
    Some(ImportedHandler {
        name: name.to_string(),
        origin: Some(origin.clone()),
        command: words,
        timeout: seconds(spec, "timeout"),
    })
}

/// A silence becomes the `mdd silence add` that makes it, where its selector maps.
fn silenced(spec: &Map<String, Value>, origin: &Origin, out: &mut Converted) {
    let mut argv: Vec<String> = vec!["mdd".into(), "silence".into(), "add".into()];
    if let Some(check) = string(spec, "check").filter(|c| *c != "*") {
        argv.extend(["--check".into(), crate::model::spec_name(check)]);
    }
    if let Some(sub) = string(spec, "subscription").filter(|s| *s != "*") {
        match sub.strip_prefix("entity:") {
            Some(entity) => argv.extend(["--entity".into(), entity.to_string()]),
            None => {
                out.notes.push(origin.note(format!(
                    "a silence of the subscription `{sub}` is not carried over: mdd silences by check, entity, label or owner"
                )));
                return;
            }
        }
    }
    if argv.len() == 3 {
        out.notes
            .push(origin.note("a silence of everything is not carried over"));
        return;
    }
    let reason = string(spec, "reason").unwrap_or("imported from Sensu");
    argv.extend(["--reason".into(), reason.to_string()]);
    let on_resolve = spec
        .get("expire_on_resolve")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let expire = spec.get("expire").and_then(Value::as_i64).unwrap_or(-1);
    if on_resolve {
        argv.push("--until-resolved".into());
    } else if expire > 0 {
        argv.extend(["--for".into(), format!("{expire}s")]);
    } else {
        out.notes.push(origin.note(
            "a silence that never expires: mdd silences end, so it is made for 30d".to_string(),
        ));
        argv.extend(["--for".into(), "30d".into()]);
    }
    out.silences.push((origin.clone(), argv));
}

/// Sensu Classic's merge: mappings merge key by key, lists are joined without repeats, and
/// anything else is replaced by the later file's value.
pub fn deep_merge(base: &mut Value, later: Value) {
    match (base, later) {
        (Value::Object(base), Value::Object(later)) => {
            for (key, value) in later {
                match base.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(later)) => {
            for item in later {
                if !base.contains(&item) {
                    base.push(item);
                }
            }
        }
        (base, later) => *base = later,
    }
}

/// The line of every key of a JSON document's top two levels (`["checks"]`,
/// `["checks", "disk"]`), the first time each is written.
fn key_lines(text: &str) -> BTreeMap<Vec<String>, usize> {
    let mut lines = BTreeMap::new();
    // Per open container: whether it is an object, and the key being read in it.
    let mut stack: Vec<(bool, Option<String>)> = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut line = 1;
    while let Some((_, c)) = chars.next() {
        match c {
            '\n' => line += 1,
            '{' => stack.push((true, None)),
            '[' => stack.push((false, None)),
            '}' | ']' => {
                stack.pop();
            }
            ',' => {
                if let Some(top) = stack.last_mut() {
                    top.1 = None;
                }
            }
            '"' => {
                let mut string = String::new();
                let at = line;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                string.push(escaped);
                            }
                        }
                        '"' => break,
                        '\n' => {
                            line += 1;
                            string.push(c);
                        }
                        c => string.push(c),
                    }
                }
                let is_key = matches!(stack.last(), Some((true, None)));
                if is_key {
                    if let Some(top) = stack.last_mut() {
                        top.1 = Some(string);
                    }
                    let path: Vec<String> = stack.iter().filter_map(|(_, k)| k.clone()).collect();
                    if path.len() <= 2 && path.len() == stack.len() {
                        lines.entry(path).or_insert(at);
                    }
                }
            }
            _ => {}
        }
    }
    lines
}

/// Sensu Classic JSON files, merged in the order given (a config file first, then `conf.d`'s
/// files in name order, as Sensu loads them).
pub(crate) fn sensu_classic(
    files: &[(String, String)],
    options: &Options,
    standalone_subscription: &str,
) -> Result<Import, ParseError> {
    let mut merged = Value::Object(Map::new());
    // Where each check and handler was first defined.
    let mut origins: BTreeMap<(String, String), Origin> = BTreeMap::new();
    let mut section_origins: BTreeMap<String, Origin> = BTreeMap::new();
    for (file, text) in files {
        let lines = key_lines(text);
        let value: Value = serde_json::from_str(text).map_err(|e| ParseError {
            file: file.clone(),
            line: e.line(),
            column: e.column(),
            message: format!("not valid JSON: {e}"),
        })?;
        if !value.is_object() {
            return Err(ParseError {
                file: file.clone(),
                line: 1,
                column: 1,
                message: "a Sensu configuration file holds one JSON object".into(),
            });
        }
        for section in ["checks", "handlers"] {
            if let Some(Value::Object(items)) = value.get(section) {
                for name in items.keys() {
                    origins
                        .entry((section.to_string(), name.clone()))
                        .or_insert_with(|| {
                            let at = lines.get(&vec![section.to_string(), name.clone()]);
                            Origin::new(file, at.copied().unwrap_or(1))
                        });
                }
            }
        }
        if let Value::Object(sections) = &value {
            for key in sections.keys() {
                section_origins.entry(key.clone()).or_insert_with(|| {
                    Origin::new(file, lines.get(&vec![key.clone()]).copied().unwrap_or(1))
                });
            }
        }
        deep_merge(&mut merged, value);
    }
    let mut notes = Vec::new();
    let mut handlers = Vec::new();
    let empty = Map::new();
    let handler_defs = merged
        .get("handlers")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut pipe_handlers = BTreeSet::new();
    for (name, spec) in handler_defs {
        let origin = origins
            .get(&("handlers".to_string(), name.clone()))
            .cloned()
            .unwrap_or_else(|| Origin::new("?", 1));
        let Some(spec) = spec.as_object() else {
            continue;
        };
        if let Some(handler) = handler(name, spec, &origin, &mut notes) {
            pipe_handlers.insert(name.clone());
            handlers.push(handler);
        }
    }
    let mut checks = Vec::new();
    let check_defs = merged
        .get("checks")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (name, spec) in check_defs {
        let origin = origins
            .get(&("checks".to_string(), name.clone()))
            .cloned()
            .unwrap_or_else(|| Origin::new("?", 1));
        let Some(spec) = spec.as_object() else {
            notes.push(origin.note(format!("the check `{name}` is not a JSON object")));
            continue;
        };
        let what = format!("Sensu check `{name}`");
        let mut check = ImportedCheck {
            key: format!("check\u{0}{name}"),
            name: name.clone(),
            what: what.clone(),
            origin: Some(origin.clone()),
            ..ImportedCheck::default()
        };
        let mut spec = spec.clone();
        // Classic's `subscribers` are Go's `subscriptions`; `source` its proxy entity.
        if let Some(subscribers) = spec.remove("subscribers") {
            spec.insert("subscriptions".into(), subscribers);
        }
        check_spec_into(
            &spec,
            &mut check,
            &origin,
            &pipe_handlers,
            options,
            &mut notes,
        );
        let standalone = spec
            .get("standalone")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if standalone {
            check.subscriptions = vec![standalone_subscription.to_string()];
            check.group = Some(standalone_subscription.to_string());
            notes.push(origin.note(format!(
                "{what} is standalone (run by every client that defines it): it runs on agents with the subscription `{standalone_subscription}`"
            )));
        }
        for dependency in strings(&spec, "dependencies") {
            match dependency.split_once('/') {
                Some((client, dep_check)) => {
                    notes.push(origin.note(format!(
                        "{what} depends on `{dependency}`: mdd depends on the check `{dep_check}` wherever it runs, not on the client `{client}` only"
                    )));
                    check.depends_on.insert(format!("check\u{0}{dep_check}"));
                }
                None => {
                    check.depends_on.insert(format!("check\u{0}{dependency}"));
                }
            }
        }
        // Classic checks without an interval ran every 60 s.
        if check.interval.is_none() && !is_set(spec.get("cron")) {
            check.interval = Some(Duration::from_secs(60));
        }
        if let Some(check) = finish_check(check, &spec, &origin, &mut notes) {
            checks.push(check);
        }
    }
    if let Value::Object(sections) = &merged {
        for key in sections
            .keys()
            .filter(|k| !matches!(k.as_str(), "checks" | "handlers"))
        {
            let origin = section_origins
                .get(key)
                .cloned()
                .unwrap_or_else(|| Origin::new("?", 1));
            notes.push(origin.note(format!(
                "the `{key}` section is not carried over: it configures Sensu itself"
            )));
        }
    }
    Ok(Import {
        format: "sensu-classic".into(),
        inputs: files.iter().map(|(f, _)| f.clone()).collect(),
        checks,
        handlers,
        silences: Vec::new(),
        notes,
        datacenter: options.datacenter.clone(),
    })
}
