//! Nagios/Naemon objects made into mdd checks: each host with a check command and each
//! service on each of its hosts becomes a check about that host (a proxy entity, run where
//! the server runs, as Nagios ran it), with the same plugin and argv, its interval, owner,
//! runbook, groups as labels and its dependencies; what has no mdd equivalent becomes a note
//! at the line that wrote it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::command::{self, Macros};
use crate::expand::{self, Instance};
use crate::model::{Import, ImportedCheck, Origin, label_key};
use crate::nagios::{self, Definition, Note, Object, ParseError};
use crate::{Options, OwnerFrom};

/// What a main config (`nagios.cfg`) says that the import needs, paths as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MainConfig {
    /// `cfg_file` and `cfg_dir` lines in the order written, which is the order Nagios reads
    /// them in (the first definition of a name wins).
    pub includes: Vec<Include>,
    pub resource_files: Vec<String>,
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Include {
    File(String),
    Dir(String),
}

/// The global settings that change what a check becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Seconds in one "time unit" of `check_interval` (60 by default).
    pub interval_length: u64,
    pub service_check_timeout: Duration,
    pub host_check_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            interval_length: 60,
            service_check_timeout: Duration::from_secs(60),
            host_check_timeout: Duration::from_secs(30),
        }
    }
}

/// Whether `text` is a main config rather than object definitions.
pub fn is_main_config(text: &str) -> bool {
    text.lines().map(str::trim_start).any(|line| {
        ["cfg_file=", "cfg_dir=", "resource_file="]
            .iter()
            .any(|key| line.starts_with(key))
    })
}

/// Whether `text` holds only `$USERn$=` lines (and comments): a resource file.
pub fn is_resource_file(text: &str) -> bool {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .peekable();
    lines.peek().is_some() && lines.all(|l| l.starts_with("$USER"))
}

/// Reads a main config's `key=value` lines.
pub fn main_config(file: &str, text: &str) -> (MainConfig, Vec<Note>) {
    let mut config = MainConfig::default();
    let mut notes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let value = value.trim().to_string();
        let seconds = |notes: &mut Vec<Note>| match value.parse::<u64>() {
            Ok(s) if s > 0 => Some(s),
            _ => {
                notes.push(Note {
                    file: file.to_string(),
                    line: n + 1,
                    message: format!(
                        "`{key}={value}` is not a number of seconds: the default is used"
                    ),
                });
                None
            }
        };
        match key.trim() {
            "cfg_file" => config.includes.push(Include::File(value)),
            "cfg_dir" => config.includes.push(Include::Dir(value)),
            "resource_file" => config.resource_files.push(value),
            "interval_length" => {
                if let Some(s) = seconds(&mut notes) {
                    config.settings.interval_length = s;
                }
            }
            "service_check_timeout" => {
                if let Some(s) = seconds(&mut notes) {
                    config.settings.service_check_timeout = Duration::from_secs(s);
                }
            }
            "host_check_timeout" => {
                if let Some(s) = seconds(&mut notes) {
                    config.settings.host_check_timeout = Duration::from_secs(s);
                }
            }
            _ => {}
        }
    }
    (config, notes)
}

/// `$USERn$=value` lines of a resource file.
pub fn resource_macros(file: &str, text: &str, into: &mut BTreeMap<u32, String>) -> Vec<Note> {
    let mut notes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let parsed = line.split_once('=').and_then(|(key, value)| {
            let number = key
                .trim()
                .strip_prefix("$USER")?
                .strip_suffix('$')?
                .parse::<u32>()
                .ok()?;
            Some((number, value.trim().to_string()))
        });
        match parsed {
            Some((number, value)) => {
                into.insert(number, value);
            }
            None => notes.push(Note {
                file: file.to_string(),
                line: n + 1,
                message: format!("`{line}` is not a `$USERn$=value` line: left out"),
            }),
        }
    }
    notes
}

/// The object files of one import, with the resource macros and settings around them.
pub struct NagiosInput<'a> {
    /// (file as shown in notes, text), in the order Nagios reads them.
    pub object_files: &'a [(String, String)],
    pub user_macros: BTreeMap<u32, String>,
    pub settings: Settings,
}

/// Why a directive has no place in mdd, or None when the import uses it.
fn not_carried(kind: &str, key: &str) -> Option<&'static str> {
    let used: &[&str] = match kind {
        "host" => &[
            "host_name",
            "alias",
            "address",
            "check_command",
            "check_interval",
            "normal_check_interval",
            "parents",
            "hostgroups",
            "contacts",
            "contact_groups",
            "notes",
            "notes_url",
            "action_url",
            "display_name",
            "active_checks_enabled",
            "check_freshness",
            "freshness_threshold",
            "flap_detection_enabled",
            "low_flap_threshold",
            "high_flap_threshold",
            "passive_checks_enabled",
        ],
        "service" => &[
            "host_name",
            "hostgroup_name",
            "service_description",
            "check_command",
            "check_interval",
            "normal_check_interval",
            "servicegroups",
            "contacts",
            "contact_groups",
            "notes",
            "notes_url",
            "action_url",
            "display_name",
            "active_checks_enabled",
            "passive_checks_enabled",
            "check_freshness",
            "freshness_threshold",
            "flap_detection_enabled",
            "low_flap_threshold",
            "high_flap_threshold",
        ],
        _ => return None,
    };
    if used.contains(&key) || matches!(key, "name" | "use" | "register") || key.starts_with('_') {
        return None;
    }
    Some(match key {
        "retry_interval" | "retry_check_interval" => {
            "mdd runs a check at one interval, failing or not"
        }
        "max_check_attempts" => {
            "mdd has no soft states; a handler's `filter.occurrences` notifies from the Nth failure in a row"
        }
        k if k.starts_with("notification") || k == "first_notification_delay" => {
            "notifications are handlers in mdd (`handlers:` with a filter)"
        }
        "check_period" => {
            "mdd has no time periods: checks run at all times (a silence mutes notifications)"
        }
        k if k.starts_with("event_handler") => {
            "mdd has no event handlers; a command handler runs on changes"
        }
        "icon_image" | "icon_image_alt" | "vrml_image" | "statusmap_image" | "2d_coords"
        | "3d_coords" => "a drawing hint for Nagios' web pages; mdd draws its own graph",
        "is_volatile"
        | "obsess_over_service"
        | "obsess_over_host"
        | "obsess"
        | "stalking_options"
        | "process_perf_data"
        | "retain_status_information"
        | "retain_nonstatus_information"
        | "initial_state"
        | "parallelize_check"
        | "failure_prediction_enabled"
        | "flap_detection_options"
        | "hourly_value"
        | "importance"
        | "check_timeout" => "mdd has no equivalent",
        _ => "mdd has no equivalent",
    })
}

/// Kinds of definitions the import reads; any other is noted once per definition.
const READ_KINDS: &[&str] = &[
    "host",
    "service",
    "command",
    "hostgroup",
    "servicegroup",
    "servicedependency",
    "hostdependency",
    "contact",
    "contactgroup",
];

fn why_kind_left_out(kind: &str) -> &'static str {
    match kind {
        "timeperiod" => "mdd has no time periods: checks run at all times",
        "hostescalation" | "serviceescalation" => {
            "escalations have no equivalent: handlers' filters choose who hears what"
        }
        "hostextinfo" | "serviceextinfo" => "display hints have no equivalent in mdd",
        _ => "it has no equivalent in mdd",
    }
}

fn list(value: Option<&String>) -> Vec<String> {
    value
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn custom_vars(object: &Object) -> BTreeMap<String, String> {
    object
        .values
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix('_')
                .map(|k| (k.to_ascii_uppercase(), v.clone()))
        })
        .collect()
}

/// Minutes in Nagios' time unit, as a duration (fractions allowed: `0.5` is 30 s).
fn units(value: Option<&String>, unit: u64) -> Option<Duration> {
    let n: f64 = value?.trim().parse().ok()?;
    (n.is_finite() && n > 0.0)
        .then(|| Duration::from_millis((n * unit as f64 * 1000.0).round() as u64))
}

fn flap(object: &Object) -> Option<(u32, u32)> {
    if object
        .values
        .get("flap_detection_enabled")
        .map(|v| v.trim())
        == Some("0")
    {
        return None;
    }
    let percent = |key: &str| -> Option<u32> {
        let value: f64 = object.values.get(key)?.trim().parse().ok()?;
        (0.0..=100.0).contains(&value).then(|| value.round() as u32)
    };
    match (
        percent("low_flap_threshold"),
        percent("high_flap_threshold"),
    ) {
        (Some(low), Some(high)) if low > 0 && high > low => Some((low, high)),
        _ => None,
    }
}

pub(crate) fn convert(input: &NagiosInput<'_>, options: &Options) -> Result<Import, ParseError> {
    let mut definitions: Vec<Definition> = Vec::new();
    for (file, text) in input.object_files {
        definitions.extend(nagios::parse(file, text)?);
    }
    let (objects, mut notes) = nagios::resolve(&definitions);
    for d in &definitions {
        if !READ_KINDS.contains(&d.kind.as_str()) {
            notes.push(Note {
                file: d.file.clone(),
                line: d.line,
                message: format!(
                    "the {} definition is not carried over: {}",
                    d.kind,
                    why_kind_left_out(&d.kind)
                ),
            });
            continue;
        }
        for (key, value, line) in &d.directives {
            if let Some(why) = not_carried(&d.kind, key) {
                notes.push(Note {
                    file: d.file.clone(),
                    line: *line,
                    message: format!("`{key} {value}` is not carried over: {why}"),
                });
            }
        }
    }

    let commands = first_of_each(&objects, "command", "command_name", &mut notes);
    let hosts: BTreeMap<&str, &Object> = first_of_each(&objects, "host", "host_name", &mut notes)
        .into_iter()
        .collect();
    let groups = expand::host_groups(&objects);
    let mut groups_of_host: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (group, members) in &groups {
        for host in members {
            groups_of_host
                .entry(host.as_str())
                .or_default()
                .insert(group.as_str());
        }
    }
    let (instances, expand_notes) = expand::services(&objects);
    notes.extend(expand_notes);
    let service_groups = expand::service_groups(&objects, &instances);
    let mut groups_of_service: HashMap<(&str, &str), BTreeSet<&str>> = HashMap::new();
    for (group, members) in &service_groups {
        for (host, service) in members {
            groups_of_service
                .entry((host.as_str(), service.as_str()))
                .or_default()
                .insert(group.as_str());
        }
    }
    let (service_deps, dep_notes) = expand::service_dependencies(&objects, &instances);
    notes.extend(dep_notes);
    let (parents, parent_notes) = expand::host_dependencies(&objects);
    notes.extend(parent_notes);
    let (host_deps, host_dep_notes) = expand::host_dependency_objects(&objects);
    notes.extend(host_dep_notes);

    let host_key = |host: &str| format!("host\u{0}{host}");
    let service_key = |host: &str, service: &str| format!("service\u{0}{host}\u{0}{service}");
    let has_check = |host: &Object| {
        host.values
            .get("check_command")
            .is_some_and(|c| !c.trim().is_empty())
    };

    let mut checks = Vec::new();
    let context = Context {
        input,
        options,
        commands: &commands,
    };
    for (name, host) in &hosts {
        if !has_check(host) {
            notes.push(Note {
                file: host.file.clone(),
                line: host.line,
                message: format!(
                    "host `{name}` has no check_command: no check for it (Nagios takes it as up), and its services depend on none"
                ),
            });
            continue;
        }
        let mut depends_on: BTreeSet<String> = BTreeSet::new();
        for parent in parents
            .get(*name)
            .into_iter()
            .flatten()
            .chain(host_deps.get(*name).into_iter().flatten())
        {
            if hosts.get(parent.as_str()).is_some_and(|p| has_check(p)) {
                depends_on.insert(host_key(parent));
            }
        }
        let groups: Vec<&str> = groups_of_host
            .get(name)
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        let macros = Macros {
            user: input.user_macros.clone(),
            host_name: name.to_string(),
            host_address: host.values.get("address").cloned().unwrap_or_default(),
            service_description: String::new(),
            host_vars: custom_vars(host),
            service_vars: BTreeMap::new(),
        };
        let mut check = ImportedCheck {
            key: host_key(name),
            name: name.to_string(),
            what: format!("host `{name}`"),
            depends_on,
            ..ImportedCheck::default()
        };
        if let Some(converted) =
            context.check(&mut check, host, None, &macros, &groups, &[], &mut notes)
        {
            checks.push(converted);
        }
    }
    for Instance { host, service } in &instances {
        let Some(host_object) = hosts.get(host.as_str()) else {
            continue;
        };
        let description = service
            .values
            .get("service_description")
            .cloned()
            .unwrap_or_default();
        if description.is_empty() {
            notes.push(Note {
                file: service.file.clone(),
                line: service.line,
                message: "a service without `service_description` is not carried over (Nagios refuses it too)".into(),
            });
            continue;
        }
        let mut depends_on: BTreeSet<String> = BTreeSet::new();
        if has_check(host_object) {
            depends_on.insert(host_key(host));
        }
        for (master_host, master_service) in service_deps
            .get(&(host.clone(), description.clone()))
            .into_iter()
            .flatten()
        {
            depends_on.insert(service_key(master_host, master_service));
        }
        let groups: Vec<&str> = groups_of_host
            .get(host.as_str())
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        let service_groups: Vec<&str> = groups_of_service
            .get(&(host.as_str(), description.as_str()))
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        let macros = Macros {
            user: input.user_macros.clone(),
            host_name: host.clone(),
            host_address: host_object
                .values
                .get("address")
                .cloned()
                .unwrap_or_default(),
            service_description: description.clone(),
            host_vars: custom_vars(host_object),
            service_vars: custom_vars(service),
        };
        let mut check = ImportedCheck {
            key: service_key(host, &description),
            name: format!("{host}-{description}"),
            what: format!("service `{description}` on host `{host}`"),
            depends_on,
            ..ImportedCheck::default()
        };
        if let Some(converted) = context.check(
            &mut check,
            service,
            Some(host_object),
            &macros,
            &groups,
            &service_groups,
            &mut notes,
        ) {
            checks.push(converted);
        }
    }
    Ok(Import {
        format: "nagios".into(),
        inputs: input.object_files.iter().map(|(f, _)| f.clone()).collect(),
        checks,
        handlers: Vec::new(),
        silences: Vec::new(),
        notes,
        datacenter: options.datacenter.clone(),
    })
}

/// Objects of `kind` by their `key`; as in Nagios, the first definition of a name wins and
/// a later one is noted.
fn first_of_each<'a>(
    objects: &'a [Object],
    kind: &str,
    key: &str,
    notes: &mut Vec<Note>,
) -> HashMap<&'a str, &'a Object> {
    let mut found: HashMap<&str, &Object> = HashMap::new();
    for object in objects.iter().filter(|o| o.kind == kind) {
        let Some(name) = object.values.get(key) else {
            continue;
        };
        match found.get(name.as_str()) {
            Some(first) => notes.push(Note {
                file: object.file.clone(),
                line: object.line,
                message: format!(
                    "a second {kind} `{name}`, which Nagios refuses: the first, at {}:{}, is used",
                    first.file, first.line
                ),
            }),
            None => {
                found.insert(name.as_str(), object);
            }
        }
    }
    found
}

struct Context<'a> {
    input: &'a NagiosInput<'a>,
    options: &'a Options,
    commands: &'a HashMap<&'a str, &'a Object>,
}

impl Context<'_> {
    /// Fills in `check` from a host or service `object` (`host` is the service's host, whose
    /// contacts a service without its own inherits, as Nagios' implied inheritance does).
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        check: &mut ImportedCheck,
        object: &Object,
        host: Option<&Object>,
        macros: &Macros,
        host_groups: &[&str],
        service_groups: &[&str],
        notes: &mut Vec<Note>,
    ) -> Option<ImportedCheck> {
        let origin = Origin::new(&object.file, object.line);
        let what = check.what.clone();
        let settings = &self.input.settings;
        check.origin = Some(origin.clone());
        check.entity = Some(entity_name(&macros.host_name));
        check.group = host_groups.first().map(|g| g.to_string());
        let get = |key: &str| object.values.get(key).filter(|v| !v.trim().is_empty());
        check.description = get("notes")
            .or_else(|| {
                object
                    .values
                    .get("alias")
                    .filter(|a| **a != macros.host_name && host.is_none())
            })
            .cloned();
        let url = |key: &str| {
            get(key).map(|u| command::expand(u, &[], macros).unwrap_or_else(|_| u.clone()))
        };
        check.runbook = url("notes_url").or_else(|| url("action_url"));
        // The chosen kind, else the other one; a service with neither takes its host's, as
        // Nagios' implied inheritance does.
        let (first, second) = match self.options.owner_from {
            OwnerFrom::ContactGroups => ("contact_groups", "contacts"),
            OwnerFrom::Contacts => ("contacts", "contact_groups"),
        };
        let owners_of = |o: &Object| -> Vec<String> {
            let chosen = list(o.values.get(first));
            if chosen.is_empty() {
                list(o.values.get(second))
            } else {
                chosen
            }
        };
        let mut owners = owners_of(object);
        if owners.is_empty()
            && let Some(host) = host
        {
            owners = owners_of(host);
        }
        if owners.len() > 1 {
            notes.push(origin.note(format!(
                "{what} has {} owners ({}): mdd keeps one, `{}`",
                owners.len(),
                owners.join(", "),
                owners[0]
            )));
        }
        check.owner = owners.first().cloned();
        for group in host_groups {
            check
                .labels
                .insert(label_key(&format!("hostgroup/{group}")), "member".into());
        }
        for group in service_groups {
            check
                .labels
                .insert(label_key(&format!("servicegroup/{group}")), "member".into());
        }
        if let Some(datacenter) = &self.options.datacenter {
            check.labels.insert("datacenter".into(), datacenter.clone());
        }
        let interval = units(
            object
                .values
                .get("check_interval")
                .or_else(|| object.values.get("normal_check_interval")),
            settings.interval_length,
        );
        check.interval =
            Some(interval.unwrap_or(Duration::from_secs(5 * settings.interval_length)));
        check.timeout = Some(if host.is_some() {
            settings.service_check_timeout
        } else {
            settings.host_check_timeout
        });
        check.flap = flap(object);

        let passive = object
            .values
            .get("active_checks_enabled")
            .is_some_and(|v| v.trim() == "0");
        if passive {
            let freshness = object
                .values
                .get("check_freshness")
                .is_some_and(|v| v.trim() == "1");
            let threshold = object
                .values
                .get("freshness_threshold")
                .and_then(|t| t.trim().parse::<u64>().ok())
                .filter(|t| *t > 0);
            let every = check.interval.unwrap_or(Duration::from_secs(300));
            check.ttl = Some(match (freshness, threshold) {
                (true, Some(seconds)) => Duration::from_secs(seconds),
                (true, None) => {
                    notes.push(origin.note(format!("{what} checks freshness with a threshold Nagios computes: its ttl is its check interval, {}", crate::write::duration(every))));
                    every
                }
                (false, _) => {
                    notes.push(origin.note(format!("{what} is passive without freshness checking, so Nagios never calls it stale; mdd needs a ttl: twice its check interval, {}", crate::write::duration(every * 2))));
                    every * 2
                }
            });
            if get("check_command").is_some() {
                notes.push(origin.note(format!("{what} is push-only in mdd: Nagios ran its check_command when results went stale; mdd marks it stale instead")));
            }
            check.interval = None;
            check.timeout = None;
            return Some(std::mem::take(check));
        }
        let Some(check_command) = get("check_command") else {
            notes.push(origin.note(format!("{what} has no check_command: not carried over")));
            return None;
        };
        let (command_name, args) = command::split_check_command(check_command);
        let Some(command) = self.commands.get(command_name.as_str()) else {
            notes.push(origin.note(format!(
                "{what} runs the command `{command_name}`, which is defined nowhere: not carried over"
            )));
            return None;
        };
        let Some(command_line) = command.values.get("command_line") else {
            notes.push(Note {
                file: command.file.clone(),
                line: command.line,
                message: format!("the command `{command_name}` has no command_line"),
            });
            return None;
        };
        // Nagios makes a $USERn$ no resource file sets empty; so does the import, and says so.
        let mut macros = macros.clone();
        // So does a custom variable the host or service does not have.
        for name in macro_names(command_line) {
            if let Some(n) = name
                .strip_prefix("USER")
                .and_then(|n| n.parse::<u32>().ok())
            {
                if let std::collections::btree_map::Entry::Vacant(unset) = macros.user.entry(n) {
                    notes.push(origin.note(format!(
                        "{what}: $USER{n}$ is set in no resource file: empty, as Nagios makes it"
                    )));
                    unset.insert(String::new());
                }
                continue;
            }
            for (prefix, vars, whose) in [
                ("_HOST", &mut macros.host_vars, "its host has"),
                ("_SERVICE", &mut macros.service_vars, "the service has"),
            ] {
                if let Some(var) = name.strip_prefix(prefix)
                    && !vars.contains_key(var)
                {
                    notes.push(origin.note(format!(
                        "{what}: ${name}$ names a custom variable {whose} not: empty, as Nagios makes it"
                    )));
                    vars.insert(var.to_string(), String::new());
                }
            }
        }
        let line = match command::expand(command_line, &args, &macros) {
            Ok(line) => line,
            Err(why) => {
                notes.push(origin.note(format!("{what}: {why}: not carried over")));
                return None;
            }
        };
        match command::argv(&line) {
            Ok(argv) => {
                if argv.through_shell {
                    notes.push(origin.note(format!(
                        "{what} runs through `sh -c`: its command line needs a shell (`{line}`)"
                    )));
                }
                check.command = Some(argv.argv);
            }
            Err(why) => {
                notes.push(origin.note(format!("{what}: {why}: not carried over")));
                return None;
            }
        }
        Some(std::mem::take(check))
    }
}

/// A host name as an entity name (`[A-Za-z0-9._:-]`, other characters become `-`).
pub(crate) fn entity_name(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if name.is_empty() { "host".into() } else { name }
}

/// The names of the macros `line` uses (`$USER1$` is `USER1`), as `command::expand` reads
/// them: `$$` is a dollar sign, a lone `$` is the shell's.
fn macro_names(line: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('$') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('$') else { break };
        if end > 0 {
            names.push(&after[..end]);
        }
        rest = &after[end + 1..];
    }
    names
}
