//! NRPE configs: each `command[name]=command line` becomes a command check for the agents of
//! one subscription (NRPE ran it on the host it watches; an mdd agent there does the same).
//! `include`/`include_dir` are for the binary to follow; the daemon's own settings are noted.

use std::time::Duration;

use crate::Options;
use crate::from_nagios::Include;
use crate::model::{Import, ImportedCheck, Origin};
use crate::nagios::Note;

/// The `include=` and `include_dir=` lines of an NRPE config, in order.
pub fn includes(text: &str) -> Vec<Include> {
    text.lines()
        .filter_map(|line| line.trim().split_once('='))
        .filter_map(|(key, value)| match key.trim() {
            "include" => Some(Include::File(value.trim().to_string())),
            "include_dir" => Some(Include::Dir(value.trim().to_string())),
            _ => None,
        })
        .collect()
}

/// The commands of every file, in order (a later definition of a name replaces an earlier one,
/// as NRPE's does).
pub(crate) fn convert(files: &[(String, String)], options: &Options, subscription: &str) -> Import {
    let mut notes: Vec<Note> = Vec::new();
    let mut checks: Vec<ImportedCheck> = Vec::new();
    let mut timeout = Duration::from_secs(60);
    for (file, text) in files {
        let mut daemon_settings = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let origin = Origin::new(file, n + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                notes.push(origin.note(format!("`{line}` is not a `key=value` line: left out")));
                continue;
            };
            let key = key.trim();
            if let Some(name) = key
                .strip_prefix("command[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                if let Some(check) = command(
                    name,
                    value.trim(),
                    &origin,
                    options,
                    subscription,
                    &mut notes,
                ) {
                    checks.retain(|c| c.key != check.key);
                    checks.push(check);
                }
                continue;
            }
            match key {
                "include" | "include_dir" => {}
                "command_timeout" => match value.trim().parse::<u64>() {
                    Ok(seconds) if seconds > 0 => timeout = Duration::from_secs(seconds),
                    _ => notes.push(origin.note(format!(
                        "`{line}` is not a number of seconds: the default 60s is used"
                    ))),
                },
                "dont_blame_nrpe" if value.trim() == "1" => notes.push(origin.note(
                    "`dont_blame_nrpe=1` is not carried over: mdd checks take no arguments from whoever asks",
                )),
                other => daemon_settings.push(other.to_string()),
            }
        }
        if !daemon_settings.is_empty() {
            notes.push(Note {
                file: file.clone(),
                line: 1,
                message: format!(
                    "{} configure the NRPE daemon and are not carried over: mdd agents pull their checks from the server ({})",
                    mdd_core::words::count(daemon_settings.len(), "setting"),
                    daemon_settings.join(", ")
                ),
            });
        }
    }
    for check in &mut checks {
        if check.command.is_some() {
            check.timeout = Some(timeout);
        }
    }
    Import {
        format: "nrpe".into(),
        inputs: files.iter().map(|(f, _)| f.clone()).collect(),
        checks,
        handlers: Vec::new(),
        silences: Vec::new(),
        notes,
        datacenter: options.datacenter.clone(),
    }
}

fn command(
    name: &str,
    line: &str,
    origin: &Origin,
    options: &Options,
    subscription: &str,
    notes: &mut Vec<Note>,
) -> Option<ImportedCheck> {
    let what = format!("NRPE command `{name}`");
    if line.contains("$ARG") {
        notes.push(origin.note(format!(
            "{what} takes its arguments from the caller ($ARGn$, dont_blame_nrpe): not carried over; write the arguments into the command"
        )));
        return None;
    }
    let argv = match crate::command::argv(line) {
        Ok(argv) => argv,
        Err(why) => {
            notes.push(origin.note(format!("{what}: {why}: not carried over")));
            return None;
        }
    };
    if argv.through_shell {
        notes.push(origin.note(format!(
            "{what} runs through `sh -c`: its command line needs a shell (`{line}`)"
        )));
    }
    let mut check = ImportedCheck {
        key: format!("nrpe\u{0}{name}"),
        name: name.to_string(),
        what,
        origin: Some(origin.clone()),
        subscriptions: vec![subscription.to_string()],
        group: Some(subscription.to_string()),
        command: Some(argv.argv),
        ..ImportedCheck::default()
    };
    if let Some(datacenter) = &options.datacenter {
        check.labels.insert("datacenter".into(), datacenter.clone());
    }
    Some(check)
}
