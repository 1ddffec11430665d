//! An [`Import`] written as spec YAML: one file, or one per group. The same import always
//! gives the same bytes (no times, no hash order); each check carries a comment naming what
//! it was and the file and line it came from.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::model::{Import, ImportedCheck, spec_name};

/// The file that holds the deployment and the handlers when the spec is written per group.
pub const SHARED_FILE: &str = "deployment-and-handlers.yaml";
/// The file of the checks that belong to no group.
pub const UNGROUPED_FILE: &str = "ungrouped.yaml";

/// The whole import as one spec file.
pub fn one_file(import: &Import) -> String {
    let mut out = header(import);
    shared_part(import, &mut out);
    checks_part(import.checks.iter(), &mut out);
    out
}

/// One file per group (a Nagios host group, a Sensu subscription, …), named after it, and
/// one for the deployment and handlers when there are any. Names are in order.
pub fn per_group(import: &Import) -> Vec<(String, String)> {
    let mut groups: BTreeMap<String, Vec<&ImportedCheck>> = BTreeMap::new();
    for check in &import.checks {
        let file = match &check.group {
            Some(group) => format!("{}.yaml", spec_name(group)),
            None => UNGROUPED_FILE.to_string(),
        };
        groups.entry(file).or_default().push(check);
    }
    let mut files = Vec::new();
    let mut shared = String::new();
    shared_part(import, &mut shared);
    if !shared.is_empty() {
        files.push((SHARED_FILE.to_string(), header(import) + &shared));
    }
    for (file, checks) in groups {
        let mut out = header(import);
        checks_part(checks.into_iter(), &mut out);
        files.push((file, out));
    }
    files.sort();
    files
}

fn header(import: &Import) -> String {
    let mut out = format!("# Imported by `mdd import {}` from ", import.format);
    match import.inputs.as_slice() {
        [one] => out.push_str(one),
        inputs => {
            let _ = write!(out, "{} files:", inputs.len());
            for input in inputs {
                let _ = write!(out, "\n#   {input}");
            }
        }
    }
    out.push('\n');
    if !import.notes.is_empty() {
        let _ = writeln!(
            out,
            "# {} not carried over; `mdd import` listed each on stderr.",
            mdd_core::words::count(import.notes.len(), "thing")
        );
    }
    out
}

fn shared_part(import: &Import, out: &mut String) {
    if let Some(datacenter) = &import.datacenter {
        let _ = writeln!(
            out,
            "deployments:\n  - name: {}\n    description: {}\n    selector: {{ datacenter: {} }}",
            scalar(&spec_name(datacenter)),
            scalar(&format!(
                "Every check imported from {}, green when the datacenter works",
                import.format
            )),
            scalar(datacenter)
        );
    }
    if !import.handlers.is_empty() {
        out.push_str("handlers:\n");
        for handler in &import.handlers {
            if let Some(origin) = &handler.origin {
                let _ = writeln!(out, "  # from {}:{}", origin.file, origin.line);
            }
            let _ = writeln!(
                out,
                "  - name: {}\n    type: command",
                scalar(&handler.name)
            );
            if let Some(timeout) = handler.timeout {
                let _ = writeln!(out, "    timeout: {}", duration(timeout));
            }
            let _ = writeln!(out, "    command: {}", list(&handler.command));
        }
    }
}

fn checks_part<'a>(checks: impl Iterator<Item = &'a ImportedCheck>, out: &mut String) {
    let mut first = true;
    for check in checks {
        if first {
            out.push_str("checks:\n");
            first = false;
        }
        match &check.origin {
            Some(origin) => {
                let _ = writeln!(
                    out,
                    "  # {}, from {}:{}",
                    one_line(&check.what),
                    origin.file,
                    origin.line
                );
            }
            None => {
                let _ = writeln!(out, "  # {}", one_line(&check.what));
            }
        }
        let _ = writeln!(out, "  - name: {}", scalar(&check.name));
        let fields = [
            ("description", check.description.as_deref()),
            ("owner", check.owner.as_deref()),
            ("runbook", check.runbook.as_deref()),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                let _ = writeln!(out, "    {field}: {}", scalar(value));
            }
        }
        if !check.labels.is_empty() {
            let labels: Vec<String> = check
                .labels
                .iter()
                .map(|(k, v)| format!("{}: {}", scalar(k), scalar(v)))
                .collect();
            let _ = writeln!(out, "    labels: {{ {} }}", labels.join(", "));
        }
        if !check.depends_on.is_empty() {
            let deps: Vec<String> = check.depends_on.iter().cloned().collect();
            let _ = writeln!(out, "    depends_on: {}", list(&deps));
        }
        let durations = [
            ("interval", check.interval),
            ("timeout", check.timeout),
            ("ttl", check.ttl),
        ];
        for (field, value) in durations {
            if let Some(value) = value {
                let _ = writeln!(out, "    {field}: {}", duration(value));
            }
        }
        if !check.subscriptions.is_empty() {
            let _ = writeln!(out, "    subscriptions: {}", list(&check.subscriptions));
        }
        if let Some(entity) = &check.entity {
            let _ = writeln!(out, "    entity: {}", scalar(entity));
        }
        if !check.handlers.is_empty() {
            let _ = writeln!(out, "    handlers: {}", list(&check.handlers));
        }
        if let Some((low, high)) = check.flap {
            let _ = writeln!(
                out,
                "    low_flap_threshold: {low}\n    high_flap_threshold: {high}"
            );
        }
        if let Some(command) = &check.command {
            let _ = writeln!(out, "    command: {}", list(command));
        }
    }
}

/// A comment stays one line whatever the input's names hold.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A duration as the spec reads it, exactly: `5m`, `1h30m`, `90s` is `1m30s`, `1500ms`.
pub fn duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let secs = d.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s")] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

/// A YAML flow list of strings, each read back exactly as it is.
pub fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| scalar(s)).collect();
    format!("[{}]", items.join(", "))
}

/// A string as YAML reads it back exactly: plain when nothing in it could be read as
/// anything else (a number, a boolean, null, YAML syntax), else quoted.
pub fn scalar(s: &str) -> String {
    let plain_start = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '/' | '_' | '$'));
    let plain_rest = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-' | '$' | '+' | '@'));
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | ".inf" | ".nan"
    );
    let integer = s == "0"
        || (s.starts_with(|c: char| c.is_ascii_digit() && c != '0')
            && s.chars().all(|c| c.is_ascii_digit())
            && s.len() < 16);
    // `-w` is a string, `-1` a number; `127.0.0.1` a string, `1.5` a number.
    let option = s.len() > 1
        && s.starts_with('-')
        && s[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '-');
    let dotted = s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.matches('.').count() >= 2
        && !s.ends_with('.');
    if ((plain_start || option) && plain_rest && !reserved) || integer || dotted {
        s.to_string()
    } else if s.chars().any(char::is_control) {
        // JSON's string syntax is YAML's double-quoted scalar.
        serde_json::Value::String(s.to_string()).to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_read_back_as_written() {
        let cases = [
            "plain",
            "/usr/lib/nagios/plugins/check_ping",
            "5",
            "007",
            "1.50",
            "0x10",
            "true",
            "Yes",
            "null",
            "~",
            "-w",
            "100.0,20%",
            "a b",
            "it's",
            "line\nbreak",
            "tab\t",
            "",
            "#hash",
            "key: value",
            "[x]",
            "{x}",
            "*",
            "&a",
            "!tag",
            "%",
            "@at",
            "`b`",
            "-",
            "$USER1$",
            "1e3",
            ".5",
            "+1",
            "-1",
            "a,b",
            "--",
            "--long-option",
            "-H",
            "127.0.0.1",
            "1.2.3.",
            "-.5",
            "-inf",
            "-",
            "- a",
        ];
        let yaml = format!(
            "checks:\n  - name: a\n    command: {}\n",
            list(&cases.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        );
        let spec =
            mdd_core::spec::load_one("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let mdd_core::spec::Probe::Command(command) = &spec.checks[0].probe else {
            panic!("a command");
        };
        assert_eq!(command.argv, cases, "{yaml}");
    }

    #[test]
    fn durations_are_exact() {
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        for d in [1, 59, 61, 3601, 86_400, 90_061] {
            let d = Duration::from_secs(d);
            assert_eq!(mdd_core::duration::parse_duration(&duration(d)), Ok(d));
        }
    }
}
