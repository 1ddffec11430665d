//! Nagios and Naemon object definitions: `define TYPE { key value … }` blocks, and the
//! template inheritance Nagios applies to them.
//!
//! Inheritance as Nagios documents it: an object takes what it does not set from the templates
//! it `use`s, leftmost first and each template with its own templates before the next one; a
//! value starting with `+` adds to what is inherited (joined with a comma); `null` stops a value
//! from being inherited; `register 0` makes a template only, never an object; `name` names a
//! template and is not inherited.

use std::collections::{BTreeMap, HashMap};

/// A parse error, at the file, line and column where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// One `define` block as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// `host`, `service`, `command`, … as written after `define`.
    pub kind: String,
    /// Directives in the order written: (name, value, line).
    pub directives: Vec<(String, String, usize)>,
    pub file: String,
    pub line: usize,
}

impl Definition {
    /// The value of `key` as written here (the last one when repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.directives
            .iter()
            .rev()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }
}

/// Reads the definitions of one object file. Comments start with `#` or `;` (a `;` inside a
/// value starts a comment too, unless written `\;`).
pub fn parse(file: &str, text: &str) -> Result<Vec<Definition>, ParseError> {
    let error = |line: usize, column: usize, message: String| ParseError {
        file: file.to_string(),
        line,
        column,
        message,
    };
    let mut definitions = Vec::new();
    let mut open: Option<Definition> = None;
    for (number, raw) in logical_lines(text) {
        let raw = raw.as_str();
        let line = strip_comment(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let column = raw.len() - raw.trim_start().len() + 1;
        let mut body = trimmed;
        if open.is_none() {
            let Some(rest) = trimmed.strip_prefix("define") else {
                return Err(error(
                    number,
                    column,
                    format!("expected `define TYPE {{`, found `{}`", shorten(trimmed)),
                ));
            };
            let Some((kind, after)) = rest.split_once('{') else {
                return Err(error(
                    number,
                    column,
                    "`define TYPE` must be followed by `{` on the same line".into(),
                ));
            };
            let kind = kind.trim();
            if kind.is_empty() || kind.contains(char::is_whitespace) {
                return Err(error(
                    number,
                    column,
                    format!("`{}` is not an object type", shorten(kind)),
                ));
            }
            open = Some(Definition {
                kind: kind.to_string(),
                directives: Vec::new(),
                file: file.to_string(),
                line: number,
            });
            // Nagios ignores what follows `{`: refused rather than ignored, so that nothing
            // written is lost without a word.
            let after = after.trim();
            if !after.is_empty() {
                let at = raw.find('{').map_or(column, |b| b + 2);
                return Err(error(
                    number,
                    at,
                    format!(
                        "`{}` after `{{` is ignored by Nagios: put it on a line of its own",
                        shorten(after)
                    ),
                ));
            }
            body = after;
        }
        if let Some(definition) = open.as_mut() {
            // As in Nagios, only a line that is just `}` closes: a value may end in `}`
            // (`$(echo ${HOME})`).
            let (directive, closes) = if body == "}" {
                ("", true)
            } else {
                (body, false)
            };
            if !directive.is_empty() {
                let (key, value) = match directive.split_once(char::is_whitespace) {
                    Some((key, value)) => (key, value.trim()),
                    None => (directive, ""),
                };
                if key.starts_with("define") {
                    return Err(error(
                        number,
                        column,
                        format!(
                            "`define` inside the {} defined at line {}: a `}}` is missing",
                            definition.kind, definition.line
                        ),
                    ));
                }
                definition
                    .directives
                    .push((key.to_string(), value.replace("\\;", ";"), number));
            }
            if closes && let Some(done) = open.take() {
                definitions.push(done);
            }
        }
    }
    if let Some(unclosed) = open {
        return Err(error(
            unclosed.line,
            1,
            format!(
                "the {} defined here is never closed with `}}`",
                unclosed.kind
            ),
        ));
    }
    Ok(definitions)
}

/// Lines as Nagios reads them, each with the number of its first physical line: a line ending
/// in `\` goes on with the next one, whose leading blanks are dropped (as Nagios'
/// `mmap_fgets_multiline` does: `one\` then `  two` reads `onetwo`).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, physical) in text.lines().enumerate() {
        let physical = physical.strip_suffix('\r').unwrap_or(physical);
        let (start, mut joined) = match pending.take() {
            Some((start, so_far)) => (start, so_far + physical.trim_start_matches([' ', '\t'])),
            None => (index + 1, physical.to_string()),
        };
        if joined.ends_with('\\') {
            joined.pop();
            pending = Some((start, joined));
        } else {
            lines.push((start, joined));
        }
    }
    if let Some(last) = pending {
        lines.push(last);
    }
    lines
}

/// The line without its comment: from an unescaped `;`, or a line starting with `#`.
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b';' && (i == 0 || bytes[i - 1] != b'\\') {
            return &line[..i];
        }
    }
    line
}

fn shorten(text: &str) -> String {
    text.chars().take(60).collect()
}

/// An object with its inheritance applied: every directive it ends up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: String,
    pub values: BTreeMap<String, String>,
    pub file: String,
    pub line: usize,
}

/// What could not be carried out while resolving, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Applies template inheritance: the registered objects, each with what it inherits, and notes
/// for what could not be resolved (a template named nowhere, a loop of templates).
pub fn resolve(definitions: &[Definition]) -> (Vec<Object>, Vec<Note>) {
    let mut templates: HashMap<(&str, &str), &Definition> = HashMap::new();
    for d in definitions {
        if let Some(name) = d.get("name") {
            templates.insert((d.kind.as_str(), name), d);
        }
    }
    let mut notes = Vec::new();
    let mut objects = Vec::new();
    for d in definitions {
        if d.get("register").is_some_and(|r| r.trim() == "0") {
            continue;
        }
        let mut values = BTreeMap::new();
        for (key, value) in inherited(d, &templates, &mut Vec::new(), &mut notes) {
            // `null` cancels the value (the key is left out, inherited or not).
            if value != "null" {
                values.insert(key, value);
            }
        }
        values.remove("name");
        values.remove("use");
        values.remove("register");
        objects.push(Object {
            kind: d.kind.clone(),
            values,
            file: d.file.clone(),
            line: d.line,
        });
    }
    (objects, notes)
}

/// The values `d` ends up with, `+` additions not yet marked (a leading `+` is kept off).
fn inherited<'a>(
    d: &'a Definition,
    templates: &HashMap<(&str, &str), &'a Definition>,
    path: &mut Vec<(&'a str, &'a str)>,
    notes: &mut Vec<Note>,
) -> BTreeMap<String, String> {
    // What the templates give, leftmost first: a key set by an earlier template wins.
    let mut from_templates: BTreeMap<String, String> = BTreeMap::new();
    for name in d
        .get("use")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let key = (d.kind.as_str(), name);
        let Some(template) = templates.get(&key) else {
            notes.push(Note {
                file: d.file.clone(),
                line: d.line,
                message: format!(
                    "uses the {} template `{name}`, which is defined nowhere",
                    d.kind
                ),
            });
            continue;
        };
        if path.len() >= 64 {
            notes.push(Note {
                file: d.file.clone(),
                line: d.line,
                message: format!(
                    "the {} templates nest deeper than 64 at `{name}`: the rest is left out",
                    d.kind
                ),
            });
            continue;
        }
        if path.contains(&key) {
            notes.push(Note {
                file: d.file.clone(),
                line: d.line,
                message: format!("the {} templates loop through `{name}`", d.kind),
            });
            continue;
        }
        path.push(key);
        for (k, v) in inherited(template, templates, path, notes) {
            from_templates.entry(k).or_insert(v);
        }
        path.pop();
    }
    let mut values = from_templates;
    for (key, value, _) in &d.directives {
        let merged = match value.strip_prefix('+') {
            Some(added) => match values.get(key) {
                Some(base) if !base.is_empty() && base != "null" => format!("{base},{added}"),
                _ => added.to_string(),
            },
            None => value.clone(),
        };
        values.insert(key.clone(), merged);
    }
    values
}

/// Test configs written compactly (`define host { host_name a }`) as Nagios reads them: a
/// directive after `{` and a `}` after a directive each moved to a line of their own.
#[cfg(test)]
pub(crate) fn spread(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_string();
        if line.trim_start().starts_with("define")
            && let Some(at) = line.find('{')
            && !line[at + 1..].trim().is_empty()
        {
            line = format!("{}{{\n{}", &line[..at], line[at + 1..].trim());
        }
        if line.trim() != "}"
            && let Some(stripped) = line.trim_end().strip_suffix('}')
            && !stripped.trim_end().ends_with('$')
            && !stripped.trim_end().ends_with('{')
        {
            line = format!("{}\n}}", stripped.trim_end());
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(path: &str) -> String {
        // Copied from the shared corpus with their licenses (corpus/SOURCES.md), so a clone
        // of the repository tests on its own.
        let file = format!("{}/corpus/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    fn object<'a>(objects: &'a [Object], kind: &str, key: &str, value: &str) -> &'a Object {
        objects
            .iter()
            .find(|o| o.kind == kind && o.values.get(key).map(String::as_str) == Some(value))
            .unwrap_or_else(|| panic!("no {kind} with {key} {value}: {objects:#?}"))
    }

    #[test]
    fn nagios_cores_own_fixture_resolves() {
        let text = corpus("nagios/nagioscore-t-etc/minimal.cfg");
        let definitions = parse("minimal.cfg", &text).expect("parses");
        let (objects, notes) = resolve(&definitions);
        assert!(notes.is_empty(), "{notes:#?}");
        // The template is not an object.
        assert!(objects.iter().all(|o| !o.values.contains_key("name")));
        assert_eq!(
            objects.len(),
            definitions
                .iter()
                .filter(|d| d.get("register") != Some("0"))
                .count()
        );
        let important = object(
            &objects,
            "service",
            "service_description",
            "Uses important check command",
        );
        // Its own check_command wins over the template's.
        assert_eq!(
            important.values["check_command"],
            "check_me!with some parameters"
        );
        assert_eq!(important.values["host_name"], "host1,host2");
        assert_eq!(important.file, "minimal.cfg");
        let host3 = object(&objects, "host", "host_name", "host3");
        // `+` with nothing inherited is the value itself.
        assert_eq!(host3.values["hostgroups"], "hosts-with-master-service");
        assert_eq!(host3.values["address"], "192.168.2.3");
    }

    #[test]
    fn continued_lines_join_as_nagios_joins_them() {
        let text = corpus("nagios/nagioscore-t-etc/minimal.cfg");
        let (objects, _) = resolve(&parse("minimal.cfg", &text).expect("parses"));
        let command = |name: &str| {
            object(&objects, "command", "command_name", name).values["command_line"].clone()
        };
        assert_eq!(
            command("with_continuation_lines"),
            "$USER1$/check_foo onetwo"
        );
        assert_eq!(
            command("multiple_continuation_lines_with_spaces_intermingled"),
            "check_nrpe_arg!30!check_fs_ping!/mnt/account-p,/mnt/prepro-p,/mnt/webapp-ssl,/mnt/rollout-p"
        );
        // No directive was made of a continued line.
        assert!(objects.iter().all(|o| !o.values.contains_key("two")));
    }

    #[test]
    fn naemons_dependency_fixture_parses() {
        let file = "nagios/naemon-t-etc-service-dependencies/service-dependencies.cfg";
        let definitions = parse(file, &corpus(file)).expect("parses");
        assert!(definitions.iter().any(|d| d.kind == "servicedependency"));
        let (objects, notes) = resolve(&definitions);
        assert!(notes.is_empty(), "{notes:#?}");
        assert!(objects.iter().any(|o| o.kind == "service"));
        // Its main config is not an object file, and is told apart at its first line.
        let main = "nagios/naemon-t-etc-service-dependencies/naemon-service-dependencies.cfg";
        let refused = parse(main, &corpus(main)).expect_err("a main config");
        assert_eq!((refused.line, refused.column), (1, 1));
        assert!(refused.message.contains("log_file="), "{refused}");
    }

    #[test]
    fn inheritance_follows_nagios_rules() {
        let text = "
# templates
define service {
    name            generic
    check_interval  5
    contacts        ops
    notes           from generic
    register        0
}
define service {
    name            web-template
    use             generic
    check_interval  1   ; a comment after a value
    contacts        +web
    register        0
}
define service {
    name            db-template
    check_interval  10
    notes           from db
    register        0
}
define service {
    host_name            web1
    service_description  HTTP
    use                  web-template,db-template
    contacts             +oncall
    notes                null
    check_command        check_http!-u /a\\;b
}";
        let (objects, notes) =
            resolve(&parse("t.cfg", &crate::nagios::spread(text)).expect("parses"));
        assert!(notes.is_empty(), "{notes:#?}");
        assert_eq!(objects.len(), 1);
        let http = &objects[0].values;
        // Leftmost template (with its own template) wins over the next one.
        assert_eq!(http["check_interval"], "1");
        // `+` adds along the chain.
        assert_eq!(http["contacts"], "ops,web,oncall");
        // `null` stops inheritance.
        assert!(!http.contains_key("notes"), "{http:?}");
        // An escaped `;` is kept, a bare one starts a comment.
        assert_eq!(http["check_command"], "check_http!-u /a;b");
        assert_eq!(objects[0].line, 23);
    }

    #[test]
    fn mistakes_are_named_by_file_line_and_column() {
        let unclosed = parse("a.cfg", "define host {\n  host_name x\n").expect_err("unclosed");
        assert_eq!((unclosed.line, unclosed.column), (1, 1));
        assert!(unclosed.message.contains("never closed"), "{unclosed}");
        let nested = parse(
            "a.cfg",
            "define host {\n  host_name x\n  define service {\n}\n",
        )
        .expect_err("nested");
        assert_eq!(
            nested.to_string(),
            "a.cfg:3:3: `define` inside the host defined at line 1: a `}` is missing"
        );
        let after_brace = parse("a.cfg", "define host { host_name x\n}\n").expect_err("after {");
        assert_eq!(
            after_brace.to_string(),
            "a.cfg:1:14: `host_name x` after `{` is ignored by Nagios: put it on a line of its own"
        );
        // Only a `}` alone closes, as in Nagios: a value may end in one.
        let braces = parse(
            "a.cfg",
            "define command {\n command_name c\n command_line echo ${HOME} }\n}\n",
        )
        .expect("parses");
        assert_eq!(braces[0].get("command_line"), Some("echo ${HOME} }"));
        let stray = parse("a.cfg", "\n\n    host_name x\n").expect_err("stray");
        assert_eq!((stray.line, stray.column), (3, 5));
        let (_, notes) = resolve(
            &parse("a.cfg", "define host {\n use missing\n host_name h\n}\n").expect("parses"),
        );
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0]
                .message
                .contains("`missing`, which is defined nowhere"),
            "{notes:?}"
        );
        let looped = "define host {\n name a\n use b\n register 0\n}\ndefine host {\n name b\n use a\n register 0\n}\ndefine host {\n host_name h\n use a\n}\n";
        let (objects, notes) = resolve(&parse("l.cfg", &spread(looped)).expect("parses"));
        assert_eq!(objects.len(), 1);
        assert!(
            notes.iter().any(|n| n.message.contains("loop")),
            "{notes:?}"
        );
    }
}
