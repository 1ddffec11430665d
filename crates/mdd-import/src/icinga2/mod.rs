//! Icinga 2 objects made into checks: every `Host` with a check command and every `Service`
//! (written as an object, or made by `apply Service` rules for the hosts their `assign where`
//! picks, `for` loops included) becomes a check with the argv Icinga would build from its
//! `CheckCommand` (`command`, `arguments` in Icinga's order with `set_if`, `repeat_key`,
//! `skip_key`, `key` and `separator`, macros resolved from the service's, the host's and the
//! command's `vars`). Groups become labels, notification users or groups the owner,
//! `apply Dependency` rules `depends_on`. What is not evaluated is reported where it is.

pub mod parse;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::Options;
use crate::model::{Import, ImportedCheck, Origin, label_key};
use crate::nagios::{Note, ParseError};
use parse::{Expr, FnStmt, Segment, Stmt};
pub use parse::{IncludeKind, Top};

/// One parsed file.
pub struct ParsedFile {
    pub file: String,
    pub tops: Vec<Top>,
}

/// Reads one file (the binary follows its includes, see [`includes`]).
pub fn parse_file(file: &str, text: &str) -> Result<ParsedFile, ParseError> {
    Ok(ParsedFile {
        file: file.to_string(),
        tops: parse::parse(file, text)?,
    })
}

/// The includes of a file, in order: (kind, path as written).
pub fn includes(parsed: &ParsedFile) -> Vec<(IncludeKind, String)> {
    parsed
        .tops
        .iter()
        .filter_map(|t| match t {
            Top::Include { kind, path, .. } => Some((*kind, path.clone())),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Array(Vec<Value>),
    Dict(BTreeMap<String, Value>),
    Lambda(String),
}

type Dict = BTreeMap<String, Value>;

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Num(n) => *n != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Lambda(_) => true,
        }
    }

    /// As Icinga writes a value into a command line: `3000.0` is `3000`.
    fn text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            // As Icinga's `Convert::ToString`: `1.5` is `1.500000`.
            Value::Num(n) => format!("{n:.6}"),
            Value::Str(s) => s.clone(),
            Value::Array(items) => items.iter().map(Value::text).collect::<Vec<_>>().join(","),
            Value::Dict(_) => "{…}".into(),
            Value::Lambda(_) => "{{…}}".into(),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key),
            _ => None,
        }
    }

    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    fn seconds(&self, key: &str) -> Option<Duration> {
        match self.get(key) {
            Some(Value::Num(n)) if n.is_finite() && *n > 0.0 => Some(Duration::from_secs_f64(*n)),
            _ => None,
        }
    }
}

fn add(left: Value, right: Value) -> Value {
    match (left, right) {
        (Value::Num(a), Value::Num(b)) => Value::Num(a + b),
        (Value::Array(mut a), Value::Array(b)) => {
            a.extend(b);
            Value::Array(a)
        }
        (Value::Dict(mut a), Value::Dict(b)) => {
            a.extend(b);
            Value::Dict(a)
        }
        (Value::Null, b) => b,
        (a, Value::Null) => a,
        (a, b) => Value::Str(a.text() + &b.text()),
    }
}

/// `*` and `?` as Icinga's `match()` reads them.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Resolves `macro("$x$")` inside functions.
type MacroFn<'a> = &'a dyn Fn(&str) -> Result<Value, String>;

struct Scope<'a> {
    constants: &'a Dict,
    locals: Dict,
    macros: Option<MacroFn<'a>>,
}

impl Scope<'_> {
    /// Runs a function's body: its value is what it returns, or its last expression's.
    fn call(&mut self, body: &[FnStmt], depth: usize) -> Result<Option<Value>, String> {
        if depth > 16 {
            return Err("a function nested too deep".into());
        }
        let mut last = None;
        for stmt in body {
            match stmt {
                FnStmt::Var(name, expr) => {
                    let value = self.eval(expr)?;
                    self.locals.insert(name.clone(), value);
                }
                FnStmt::Return(expr) => return Ok(Some(self.eval(expr)?)),
                FnStmt::Expr(expr) => last = Some(self.eval(expr)?),
                FnStmt::If(condition, yes, no) => {
                    let branch = if self.eval(condition)?.truthy() {
                        yes
                    } else {
                        no
                    };
                    if let Some(value) = self.call(branch, depth + 1)? {
                        return Ok(Some(value));
                    }
                }
            }
        }
        Ok(last.filter(|_| body.len() == 1))
    }
}

impl Scope<'_> {
    fn eval(&self, expr: &Expr) -> Result<Value, String> {
        Ok(match expr {
            Expr::Null => Value::Null,
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Num(n) => Value::Num(*n),
            Expr::Str(s) => Value::Str(s.clone()),
            Expr::Lambda(l) => Value::Lambda(l.clone()),
            Expr::Ident(name) => self
                .locals
                .get(name)
                .or_else(|| self.constants.get(name))
                .cloned()
                .unwrap_or_else(|| match name.as_str() {
                    // State and type names (`states = [ OK, Warning ]`) read as themselves.
                    n if n.starts_with(|c: char| c.is_ascii_uppercase()) => Value::Str(n.into()),
                    _ => Value::Null,
                }),
            Expr::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.eval(i))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Dict(stmts) => {
                let mut dict = Dict::new();
                for stmt in stmts {
                    if let Stmt::Assign {
                        target, op, value, ..
                    } = stmt
                    {
                        let value = self.eval(value)?;
                        self.assign(&mut dict, target, op, value)?;
                    }
                }
                Value::Dict(dict)
            }
            Expr::Member(base, name) => self.eval(base)?.get(name).cloned().unwrap_or(Value::Null),
            Expr::Index(base, index) => {
                let base = self.eval(base)?;
                match (base, self.eval(index)?) {
                    (Value::Dict(d), key) => d.get(&key.text()).cloned().unwrap_or(Value::Null),
                    (Value::Array(a), Value::Num(n)) if n >= 0.0 => {
                        a.get(n as usize).cloned().unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                }
            }
            Expr::Unary("!", inner) => Value::Bool(!self.eval(inner)?.truthy()),
            Expr::Unary(_, inner) => match self.eval(inner)? {
                Value::Num(n) => Value::Num(-n),
                other => return Err(format!("`-` of {}", other.text())),
            },
            Expr::Binary(op, left, right) => {
                let left_value = self.eval(left)?;
                match *op {
                    "&&" => {
                        return Ok(Value::Bool(
                            left_value.truthy() && self.eval(right)?.truthy(),
                        ));
                    }
                    "||" => {
                        return Ok(Value::Bool(
                            left_value.truthy() || self.eval(right)?.truthy(),
                        ));
                    }
                    _ => {}
                }
                let right = self.eval(right)?;
                match *op {
                    "==" => Value::Bool(left_value == right),
                    "!=" => Value::Bool(left_value != right),
                    "in" | "!in" => {
                        let found = match &right {
                            Value::Array(items) => items.contains(&left_value),
                            Value::Dict(d) => d.contains_key(&left_value.text()),
                            _ => false,
                        };
                        Value::Bool(found == (*op == "in"))
                    }
                    "+" => add(left_value, right),
                    "-" | "*" | "/" | "%" | "<" | ">" | "<=" | ">=" => match (left_value, right) {
                        (Value::Num(a), Value::Num(b)) => match *op {
                            "-" => Value::Num(a - b),
                            "*" => Value::Num(a * b),
                            "/" => Value::Num(a / b),
                            "%" => Value::Num(a % b),
                            "<" => Value::Bool(a < b),
                            ">" => Value::Bool(a > b),
                            "<=" => Value::Bool(a <= b),
                            _ => Value::Bool(a >= b),
                        },
                        (a, b) => return Err(format!("`{}` {op} `{}`", a.text(), b.text())),
                    },
                    other => return Err(format!("the operator `{other}`")),
                }
            }
            Expr::Ternary(condition, yes, no) => {
                if self.eval(condition)?.truthy() {
                    self.eval(yes)?
                } else {
                    self.eval(no)?
                }
            }
            Expr::Call(function, args) if matches!(function.as_ref(), Expr::Member(..)) => {
                let Expr::Member(base, method) = function.as_ref() else {
                    unreachable!("matched above")
                };
                let base = self.eval(base)?;
                let args: Vec<Value> = args
                    .iter()
                    .map(|a| self.eval(a))
                    .collect::<Result<_, _>>()?;
                match (method.as_str(), &base, args.as_slice()) {
                    ("trim", Value::Str(s), []) => Value::Str(s.trim().to_string()),
                    ("lower", Value::Str(s), []) => Value::Str(s.to_lowercase()),
                    ("upper", Value::Str(s), []) => Value::Str(s.to_uppercase()),
                    ("len", v, []) => Value::Num(match v {
                        Value::Array(a) => a.len() as f64,
                        Value::Dict(d) => d.len() as f64,
                        v => v.text().chars().count() as f64,
                    }),
                    ("contains", Value::Array(items), [x]) => Value::Bool(items.contains(x)),
                    ("contains", Value::Dict(d), [x]) => Value::Bool(d.contains_key(&x.text())),
                    ("contains", Value::Str(s), [x]) => Value::Bool(s.contains(&x.text())),
                    ("join", Value::Array(items), [sep]) => Value::Str(
                        items
                            .iter()
                            .map(Value::text)
                            .collect::<Vec<_>>()
                            .join(&sep.text()),
                    ),
                    (other, _, _) => return Err(format!("the method `{other}()`")),
                }
            }
            Expr::Call(function, args) => {
                let name = match function.as_ref() {
                    Expr::Ident(name) => name.as_str(),
                    _ => return Err("a call of a computed function".into()),
                };
                let args: Vec<Value> = args
                    .iter()
                    .map(|a| self.eval(a))
                    .collect::<Result<_, _>>()?;
                match (name, args.as_slice()) {
                    ("match", [Value::Str(pattern), value, ..]) => Value::Bool(match value {
                        Value::Array(items) => items.iter().any(|i| glob(pattern, &i.text())),
                        v => glob(pattern, &v.text()),
                    }),
                    ("regex", [Value::Str(pattern), value, ..]) => {
                        let re = regex::Regex::new(pattern)
                            .map_err(|e| format!("the regular expression `{pattern}`: {e}"))?;
                        Value::Bool(match value {
                            Value::Array(items) => items.iter().any(|i| re.is_match(&i.text())),
                            v => re.is_match(&v.text()),
                        })
                    }
                    ("len", [value]) => Value::Num(match value {
                        Value::Array(a) => a.len() as f64,
                        Value::Dict(d) => d.len() as f64,
                        v => v.text().chars().count() as f64,
                    }),
                    ("string", [value]) => Value::Str(value.text()),
                    ("typeof", [value]) => Value::Str(
                        match value {
                            Value::Null => "Object",
                            Value::Bool(_) => "Boolean",
                            Value::Num(_) => "Number",
                            Value::Str(_) => "String",
                            Value::Array(_) => "Array",
                            Value::Dict(_) => "Dictionary",
                            Value::Lambda(_) => "Function",
                        }
                        .into(),
                    ),
                    ("macro", [Value::Str(text)]) => match self.macros {
                        Some(macros) => macros(text)?,
                        None => return Err("`macro()` outside a command".into()),
                    },
                    (other, _) => return Err(format!("the function `{other}()`")),
                }
            }
        })
    }

    fn assign(
        &self,
        dict: &mut Dict,
        target: &[Segment],
        op: &str,
        value: Value,
    ) -> Result<(), String> {
        let mut keys = Vec::with_capacity(target.len());
        for segment in target {
            keys.push(match segment {
                Segment::Name(name) => name.clone(),
                Segment::Index(expr) => self.eval(expr)?.text(),
            });
        }
        let Some((last, path)) = keys.split_last() else {
            return Ok(());
        };
        let mut here = dict;
        for key in path {
            let entry = here
                .entry(key.clone())
                .or_insert_with(|| Value::Dict(Dict::new()));
            if !matches!(entry, Value::Dict(_)) {
                *entry = Value::Dict(Dict::new());
            }
            let Value::Dict(next) = entry else {
                unreachable!("made a dictionary above")
            };
            here = next;
        }
        let old = here.remove(last).unwrap_or(Value::Null);
        let new = match op {
            "+=" => add(old, value),
            "-=" => match (old, value) {
                (Value::Num(a), Value::Num(b)) => Value::Num(a - b),
                (Value::Array(a), Value::Array(b)) => {
                    Value::Array(a.into_iter().filter(|x| !b.contains(x)).collect())
                }
                (a, _) => a,
            },
            _ => value,
        };
        here.insert(last.clone(), new);
        Ok(())
    }
}

/// An object or template as written.
struct Definition<'a> {
    kind: &'a str,
    name: String,
    body: &'a [Stmt],
    origin: Origin,
}

struct Context<'a> {
    constants: Dict,
    templates: HashMap<(String, String), Definition<'a>>,
    notes: Vec<Note>,
}

impl Context<'_> {
    /// Runs a body on `dict`: assignments in order, each `import` running the template's body
    /// where it stands. Returns the `assign where` and `ignore where` conditions.
    fn run(
        &mut self,
        kind: &str,
        body: &[Stmt],
        dict: &mut Dict,
        locals: &Dict,
        origin: &Origin,
        depth: usize,
    ) -> (Vec<Expr>, Vec<Expr>) {
        let mut assign = Vec::new();
        let mut ignore = Vec::new();
        if depth > 32 {
            self.notes
                .push(origin.note("templates import each other in a loop"));
            return (assign, ignore);
        }
        for stmt in body {
            let mut scope_locals = locals.clone();
            // An object's own attributes are in scope too (`vars.x = name`).
            for (k, v) in dict.iter() {
                scope_locals.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let scope = Scope {
                constants: &self.constants,
                locals: scope_locals,
                macros: None,
            };
            match stmt {
                Stmt::Assign {
                    target,
                    op,
                    value,
                    line,
                } => {
                    let result = scope
                        .eval(value)
                        .and_then(|value| scope.assign(dict, target, op, value));
                    if let Err(what) = result {
                        self.notes
                            .push(Origin::new(&origin.file, *line).note(format!(
                                "{what} is not evaluated by the import: the attribute is left out"
                            )));
                    }
                }
                Stmt::Import(name, line) => {
                    let name = scope.eval(name).map(|v| v.text()).unwrap_or_default();
                    let key = (kind.to_string(), name.clone());
                    match self.templates.get(&key) {
                        Some(template) => {
                            let (body, template_origin) = (template.body, template.origin.clone());
                            let (more_assign, more_ignore) =
                                self.run(kind, body, dict, locals, &template_origin, depth + 1);
                            assign.extend(more_assign);
                            ignore.extend(more_ignore);
                        }
                        // Built into Icinga: how a command runs (a plugin, or a check inside
                        // Icinga, which has no `command` and is said so where it is used).
                        None if name.ends_with("-check-command")
                            || name.ends_with("-notification-command")
                            || name.ends_with("-event-command") => {}
                        None => self
                            .notes
                            .push(Origin::new(&origin.file, *line).note(format!(
                                "imports the {kind} template `{name}`, which is defined nowhere"
                            ))),
                    }
                }
                Stmt::AssignWhere(condition, _) => assign.push(condition.clone()),
                Stmt::IgnoreWhere(condition, _) => ignore.push(condition.clone()),
                Stmt::Other(what, line) => {
                    self.notes
                        .push(Origin::new(&origin.file, *line).note(format!(
                            "`{what} …` is not evaluated by the import: what it sets is left out"
                        )))
                }
            }
        }
        (assign, ignore)
    }

    /// Whether an apply rule or group applies: one `assign where` holds and no `ignore where`.
    fn applies(
        &mut self,
        assign: &[Expr],
        ignore: &[Expr],
        locals: &Dict,
        origin: &Origin,
    ) -> bool {
        let scope = Scope {
            constants: &self.constants,
            locals: locals.clone(),
            macros: None,
        };
        let test = |e: &Expr, notes: &mut Vec<Note>| match scope.eval(e) {
            Ok(v) => v.truthy(),
            Err(what) => {
                notes.push(origin.note(format!(
                    "a condition uses {what}, which the import does not evaluate: taken as false"
                )));
                false
            }
        };
        let mut notes = Vec::new();
        let yes = assign.iter().any(|e| test(e, &mut notes))
            && !ignore.iter().any(|e| test(e, &mut notes));
        self.notes.extend(notes);
        yes
    }
}

/// Why an attribute of a host or service has no place in mdd, or None when it is used.
fn not_carried(key: &str) -> Option<&'static str> {
    Some(match key {
        "import"
        | "address"
        | "address6"
        | "check_command"
        | "check_interval"
        | "vars"
        | "groups"
        | "display_name"
        | "notes"
        | "notes_url"
        | "action_url"
        | "enable_active_checks"
        | "enable_passive_checks"
        | "check_timeout"
        | "host_name"
        | "enable_flapping"
        | "flapping_threshold_low"
        | "flapping_threshold_high"
        | "name" => {
            return None;
        }
        "retry_interval" => "mdd runs a check at one interval, failing or not",
        "max_check_attempts" => {
            "mdd has no soft states; a handler's `filter.occurrences` notifies from the Nth failure in a row"
        }
        "check_period" => "mdd has no time periods: checks run at all times",
        "enable_notifications" => "notifications are handlers in mdd",
        "event_command" | "enable_event_handler" => "mdd has no event handlers",
        "command_endpoint" => {
            "mdd runs a check on the agents of its subscriptions: give the check one"
        }
        "zone" => "mdd has no zones",
        "icon_image" | "icon_image_alt" => "a drawing hint for Icinga's web pages",
        _ => "mdd has no equivalent",
    })
}

/// What the import needs besides the files: constants given on the command line (`NodeName`).
pub struct Icinga2Input<'a> {
    pub files: &'a [ParsedFile],
    pub defines: BTreeMap<String, String>,
}

struct Host {
    name: String,
    dict: Value,
    origin: Origin,
}

struct Service {
    host: String,
    name: String,
    dict: Value,
    origin: Origin,
}

pub(crate) fn convert(input: &Icinga2Input<'_>, options: &Options) -> Import {
    let mut context = Context {
        constants: input
            .defines
            .iter()
            .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
            .collect(),
        templates: HashMap::new(),
        notes: Vec::new(),
    };
    let mut objects: Vec<Definition<'_>> = Vec::new();
    let mut applies = Vec::new();
    for parsed in input.files {
        for top in &parsed.tops {
            match top {
                Top::Const(name, expr, line) => {
                    // A constant given on the command line wins, as `icinga2 -D` does.
                    if input.defines.contains_key(name) {
                        continue;
                    }
                    let scope = Scope {
                        constants: &context.constants,
                        locals: Dict::new(),
                        macros: None,
                    };
                    match scope.eval(expr) {
                        Ok(value) => {
                            context.constants.insert(name.clone(), value);
                        }
                        Err(what) => context.notes.push(
                            Origin::new(&parsed.file, *line)
                                .note(format!("the constant `{name}` uses {what}: not evaluated")),
                        ),
                    }
                }
                Top::Object {
                    template,
                    kind,
                    name,
                    body,
                    line,
                } => {
                    let scope = Scope {
                        constants: &context.constants,
                        locals: Dict::new(),
                        macros: None,
                    };
                    let name = scope.eval(name).map(|v| v.text()).unwrap_or_default();
                    let definition = Definition {
                        kind,
                        name: name.clone(),
                        body,
                        origin: Origin::new(&parsed.file, *line),
                    };
                    // Objects can be imported like templates (`import "ping"`).
                    context
                        .templates
                        .entry((kind.clone(), name))
                        .or_insert(Definition {
                            kind,
                            name: definition.name.clone(),
                            body,
                            origin: definition.origin.clone(),
                        });
                    if !*template {
                        objects.push(definition);
                    }
                }
                Top::Apply { line, .. } => applies.push((top, Origin::new(&parsed.file, *line))),
                Top::Include { .. } => {}
                Top::Other(what, line) => context.notes.push(
                    Origin::new(&parsed.file, *line)
                        .note(format!("`{what} …` is not evaluated by the import")),
                ),
            }
        }
    }
    // Attributes with no place in mdd, once where each is written.
    let host_or_service = |kind: &str| kind == "Host" || kind == "Service";
    let mut bodies: Vec<(&[Stmt], &Origin)> = Vec::new();
    for d in context.templates.values().chain(objects.iter()) {
        if host_or_service(d.kind) {
            bodies.push((d.body, &d.origin));
        }
    }
    for (top, origin) in &applies {
        if let Top::Apply { kind, body, .. } = top
            && kind == "Service"
        {
            bodies.push((body, origin));
        }
    }
    let mut attribute_notes = Vec::new();
    for (body, origin) in bodies {
        for stmt in body {
            if let Stmt::Assign {
                target: t, line, ..
            } = stmt
                && let Some(Segment::Name(key)) = t.first()
                && let Some(why) = not_carried(key)
            {
                attribute_notes.push(
                    Origin::new(&origin.file, *line)
                        .note(format!("`{key}` is not carried over: {why}")),
                );
            }
        }
    }
    context.notes.extend(attribute_notes);

    let mut hosts: Vec<Host> = Vec::new();
    let mut commands: HashMap<String, Value> = HashMap::new();
    let mut services: Vec<Service> = Vec::new();
    let mut host_groups: Vec<&Definition<'_>> = Vec::new();
    let mut service_groups: Vec<&Definition<'_>> = Vec::new();
    for d in &objects {
        let mut dict = Dict::from([("name".to_string(), Value::Str(d.name.clone()))]);
        match d.kind {
            "Host" => {
                context.run("Host", d.body, &mut dict, &Dict::new(), &d.origin, 0);
                hosts.push(Host {
                    name: d.name.clone(),
                    dict: Value::Dict(dict),
                    origin: d.origin.clone(),
                });
            }
            "CheckCommand" => {
                context.run(
                    "CheckCommand",
                    d.body,
                    &mut dict,
                    &Dict::new(),
                    &d.origin,
                    0,
                );
                commands.insert(d.name.clone(), Value::Dict(dict));
            }
            "Service" => {
                context.run("Service", d.body, &mut dict, &Dict::new(), &d.origin, 0);
                let host = Value::Dict(dict.clone())
                    .str("host_name")
                    .unwrap_or_default()
                    .to_string();
                services.push(Service {
                    host,
                    name: d.name.clone(),
                    dict: Value::Dict(dict),
                    origin: d.origin.clone(),
                });
            }
            "HostGroup" => host_groups.push(d),
            "ServiceGroup" => service_groups.push(d),
            // Owners are named by notifications; the users themselves are not needed.
            "User" | "UserGroup" => {}
            kind => context.notes.push(d.origin.note(format!(
                "the {kind} `{}` is not carried over: {}",
                d.name,
                match kind {
                    "TimePeriod" => "mdd has no time periods: checks run at all times",
                    "NotificationCommand" | "EventCommand" => {
                        "notifications are handlers in mdd (`handlers:` with a filter)"
                    }
                    "Zone"
                    | "Endpoint"
                    | "ApiListener"
                    | "IcingaApplication"
                    | "FileLogger"
                    | "CheckerComponent"
                    | "NotificationComponent"
                    | "SyslogLogger"
                    | "IdoMysqlConnection"
                    | "IdoPgsqlConnection"
                    | "InfluxdbWriter"
                    | "GraphiteWriter"
                    | "ExternalCommandListener"
                    | "LivestatusListener"
                    | "StatusDataWriter"
                    | "CompatLogger"
                    | "PerfdataWriter" => {
                        "it configures Icinga itself"
                    }
                    _ => "mdd has no equivalent",
                }
            ))),
        }
    }

    // Services from apply rules, for each host they pick.
    let mut notification_rules = Vec::new();
    let mut dependency_rules = Vec::new();
    for (top, origin) in &applies {
        let Top::Apply {
            kind,
            name,
            to,
            for_loop,
            body,
            ..
        } = top
        else {
            continue;
        };
        match kind.as_str() {
            "Service" => {}
            "Notification" => {
                notification_rules.push((to.clone(), body, origin.clone()));
                continue;
            }
            "Dependency" => {
                dependency_rules.push((to.clone(), body, origin.clone()));
                continue;
            }
            other => {
                context.notes.push(origin.note(format!(
                    "`apply {other}` is not carried over: {}",
                    match other {
                        "ScheduledDowntime" => "a downtime in mdd is a silence (`mdd silence add`)",
                        _ => "mdd has no equivalent",
                    }
                )));
                continue;
            }
        }
        let scope = Scope {
            constants: &context.constants,
            locals: Dict::new(),
            macros: None,
        };
        let prefix = name
            .as_ref()
            .map(|n| scope.eval(n).map(|v| v.text()).unwrap_or_default());
        for host in &hosts {
            let mut locals = Dict::from([("host".to_string(), host.dict.clone())]);
            let items: Vec<(String, Value, Dict)> = match for_loop {
                None => vec![(prefix.clone().unwrap_or_default(), Value::Null, Dict::new())],
                Some((key, value, over)) => {
                    let scope = Scope {
                        constants: &context.constants,
                        locals: locals.clone(),
                        macros: None,
                    };
                    match scope.eval(over) {
                        Ok(Value::Dict(d)) => d
                            .into_iter()
                            .map(|(k, v)| {
                                let mut loop_locals = Dict::new();
                                match value {
                                    Some(value) => {
                                        loop_locals.insert(key.clone(), Value::Str(k.clone()));
                                        loop_locals.insert(value.clone(), v.clone());
                                    }
                                    None => {
                                        loop_locals.insert(key.clone(), Value::Str(k.clone()));
                                    }
                                }
                                (
                                    format!("{}{k}", prefix.clone().unwrap_or_default()),
                                    v,
                                    loop_locals,
                                )
                            })
                            .collect(),
                        Ok(Value::Array(items)) if value.is_none() => items
                            .into_iter()
                            .map(|v| {
                                let loop_locals = Dict::from([(key.clone(), v.clone())]);
                                (
                                    format!("{}{}", prefix.clone().unwrap_or_default(), v.text()),
                                    v,
                                    loop_locals,
                                )
                            })
                            .collect(),
                        Ok(_) => Vec::new(),
                        Err(what) => {
                            context.notes.push(origin.note(format!(
                                "the rule's `for` uses {what}, which the import does not evaluate"
                            )));
                            Vec::new()
                        }
                    }
                }
            };
            for (service_name, _, loop_locals) in items {
                locals.extend(loop_locals);
                let mut dict = Dict::from([
                    ("name".to_string(), Value::Str(service_name.clone())),
                    ("host_name".to_string(), Value::Str(host.name.clone())),
                ]);
                let (assign, ignore) = context.run("Service", body, &mut dict, &locals, origin, 0);
                let picked = if for_loop.is_some() && assign.is_empty() {
                    // A `for` rule applies wherever its collection is, unless ignored.
                    !context.applies(&ignore, &[], &locals, origin)
                } else {
                    context.applies(&assign, &ignore, &locals, origin)
                };
                if picked {
                    services.push(Service {
                        host: host.name.clone(),
                        name: service_name,
                        dict: Value::Dict(dict),
                        origin: origin.clone(),
                    });
                }
            }
        }
    }

    // Groups: those objects name (`groups`) and those whose `assign where` picks them.
    let mut groups_of_host: HashMap<String, BTreeSet<String>> = HashMap::new();
    for host in &hosts {
        if let Some(Value::Array(groups)) = host.dict.get("groups") {
            groups_of_host
                .entry(host.name.clone())
                .or_default()
                .extend(groups.iter().map(Value::text));
        }
    }
    for group in &host_groups {
        let mut dict = Dict::new();
        let (assign, ignore) = context.run(
            "HostGroup",
            group.body,
            &mut dict,
            &Dict::new(),
            &group.origin,
            0,
        );
        for host in &hosts {
            let locals = Dict::from([("host".to_string(), host.dict.clone())]);
            if context.applies(&assign, &ignore, &locals, &group.origin) {
                groups_of_host
                    .entry(host.name.clone())
                    .or_default()
                    .insert(group.name.clone());
            }
        }
    }
    let host_dicts: HashMap<&str, &Value> =
        hosts.iter().map(|h| (h.name.as_str(), &h.dict)).collect();
    let mut groups_of_service: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    for service in &services {
        if let Some(Value::Array(groups)) = service.dict.get("groups") {
            groups_of_service
                .entry((service.host.clone(), service.name.clone()))
                .or_default()
                .extend(groups.iter().map(Value::text));
        }
    }
    for group in &service_groups {
        let mut dict = Dict::new();
        let (assign, ignore) = context.run(
            "ServiceGroup",
            group.body,
            &mut dict,
            &Dict::new(),
            &group.origin,
            0,
        );
        for service in &services {
            let host = host_dicts
                .get(service.host.as_str())
                .map_or(Value::Null, |h| (*h).clone());
            let locals = Dict::from([
                ("host".to_string(), host),
                ("service".to_string(), service.dict.clone()),
            ]);
            if context.applies(&assign, &ignore, &locals, &group.origin) {
                groups_of_service
                    .entry((service.host.clone(), service.name.clone()))
                    .or_default()
                    .insert(group.name.clone());
            }
        }
    }

    // Owners: the user groups (else users) the notification rules picking it notify.
    let mut owner_of: HashMap<(String, Option<String>), String> = HashMap::new();
    let targets: Vec<(String, Option<String>, Dict)> = hosts
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                None,
                Dict::from([("host".to_string(), h.dict.clone())]),
            )
        })
        .chain(services.iter().map(|s| {
            let host = host_dicts
                .get(s.host.as_str())
                .map_or(Value::Null, |h| (*h).clone());
            (
                s.host.clone(),
                Some(s.name.clone()),
                Dict::from([
                    ("host".to_string(), host),
                    ("service".to_string(), s.dict.clone()),
                ]),
            )
        }))
        .collect();
    for (to, body, origin) in &notification_rules {
        for (host, service, locals) in &targets {
            if (to.as_deref() == Some("Service")) != service.is_some() {
                continue;
            }
            let mut dict = Dict::new();
            let (assign, ignore) = context.run("Notification", body, &mut dict, locals, origin, 0);
            if !context.applies(&assign, &ignore, locals, origin) {
                continue;
            }
            let first = |key: &str| match dict.get(key) {
                Some(Value::Array(items)) => items.first().map(Value::text),
                Some(Value::Str(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            };
            if let Some(owner) = first("user_groups").or_else(|| first("users")) {
                owner_of
                    .entry((host.clone(), service.clone()))
                    .or_insert(owner);
            }
        }
    }

    // Dependencies: parents named by `apply Dependency` rules.
    let mut depends: HashMap<(String, Option<String>), BTreeSet<String>> = HashMap::new();
    for (to, body, origin) in &dependency_rules {
        for (host, service, locals) in &targets {
            if (to.as_deref() == Some("Service")) != service.is_some() {
                continue;
            }
            let mut dict = Dict::new();
            let (assign, ignore) = context.run("Dependency", body, &mut dict, locals, origin, 0);
            if !context.applies(&assign, &ignore, locals, origin) {
                continue;
            }
            let dict = Value::Dict(dict);
            let parent_host = dict.str("parent_host_name").unwrap_or(host).to_string();
            let parent = match dict.str("parent_service_name") {
                Some(parent_service) => service_key(&parent_host, parent_service),
                None => host_key(&parent_host),
            };
            depends
                .entry((host.clone(), service.clone()))
                .or_default()
                .insert(parent);
        }
    }

    let mut checks = Vec::new();
    for host in &hosts {
        let groups: Vec<String> = groups_of_host
            .get(&host.name)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default();
        let mut check = ImportedCheck {
            key: host_key(&host.name),
            name: host.name.clone(),
            what: format!("host `{}`", host.name),
            origin: Some(host.origin.clone()),
            depends_on: depends
                .remove(&(host.name.clone(), None))
                .unwrap_or_default(),
            owner: owner_of.get(&(host.name.clone(), None)).cloned(),
            ..ImportedCheck::default()
        };
        let resolver = Resolver {
            host: &host.dict,
            service: None,
            command: &Value::Null,
            constants: &context.constants,
        };
        if fill(
            &mut check,
            &host.dict,
            &resolver,
            &commands,
            &groups,
            &[],
            options,
            &mut context.notes,
        ) {
            checks.push(check);
        }
    }
    let imported_hosts: BTreeSet<String> = checks
        .iter()
        .map(|c: &ImportedCheck| c.key.clone())
        .collect();
    for service in &services {
        let Some(host) = host_dicts.get(service.host.as_str()) else {
            context.notes.push(service.origin.note(format!(
                "the service `{}` is on the host `{}`, which is defined nowhere",
                service.name, service.host
            )));
            continue;
        };
        let groups: Vec<String> = groups_of_host
            .get(&service.host)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default();
        let service_groups: Vec<String> = groups_of_service
            .get(&(service.host.clone(), service.name.clone()))
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default();
        let mut depends_on = depends
            .remove(&(service.host.clone(), Some(service.name.clone())))
            .unwrap_or_default();
        // Icinga does not check or notify a service whose host is down: its implicit
        // dependency on the host (when the host's check was carried over).
        if imported_hosts.contains(&host_key(&service.host)) {
            depends_on.insert(host_key(&service.host));
        }
        let mut check = ImportedCheck {
            key: service_key(&service.host, &service.name),
            name: format!("{}-{}", service.host, service.name),
            what: format!("service `{}` on host `{}`", service.name, service.host),
            origin: Some(service.origin.clone()),
            depends_on,
            owner: owner_of
                .get(&(service.host.clone(), Some(service.name.clone())))
                .cloned(),
            ..ImportedCheck::default()
        };
        let resolver = Resolver {
            host,
            service: Some(&service.dict),
            command: &Value::Null,
            constants: &context.constants,
        };
        if fill(
            &mut check,
            &service.dict,
            &resolver,
            &commands,
            &groups,
            &service_groups,
            options,
            &mut context.notes,
        ) {
            checks.push(check);
        }
    }
    Import {
        format: "icinga2".into(),
        inputs: input.files.iter().map(|f| f.file.clone()).collect(),
        checks,
        handlers: Vec::new(),
        silences: Vec::new(),
        notes: context.notes,
        datacenter: options.datacenter.clone(),
    }
}

fn host_key(host: &str) -> String {
    format!("host\u{0}{host}")
}

fn service_key(host: &str, service: &str) -> String {
    format!("service\u{0}{host}\u{0}{service}")
}

/// Looks macros up as Icinga does for a check: the service's, the host's and the command's
/// `vars`, then the objects' own attributes (`$address$`), `$host.x$`/`$service.x$` paths,
/// and constants.
struct Resolver<'a> {
    host: &'a Value,
    service: Option<&'a Value>,
    command: &'a Value,
    constants: &'a Dict,
}

/// A macro's value, or why there is none.
enum Looked {
    Found(Value),
    Missing,
    Unsupported(String),
}

impl Resolver<'_> {
    fn lookup(&self, name: &str, depth: usize) -> Looked {
        if depth > 8 {
            return Looked::Unsupported(format!("`${name}$`, which refers to itself"));
        }
        let found = if let Some((object, path)) = name.split_once('.') {
            let base = match object {
                "host" => Some(self.host),
                "service" => self.service,
                "command" => Some(self.command),
                _ => None,
            };
            base.and_then(|mut value| {
                for key in path.split('.') {
                    value = value.get(key)?;
                }
                Some(value.clone())
            })
        } else {
            let vars = |o: Option<&Value>| {
                o.and_then(|o| o.get("vars"))
                    .and_then(|v| v.get(name))
                    .cloned()
            };
            vars(self.service)
                .or_else(|| vars(Some(self.host)))
                .or_else(|| vars(Some(self.command)))
                .or_else(|| self.service.and_then(|s| s.get(name)).cloned())
                .or_else(|| self.host.get(name).cloned())
                .or_else(|| self.constants.get(name).cloned())
        };
        match found {
            None | Some(Value::Null) => Looked::Missing,
            Some(Value::Lambda(code)) => match self.call(&code, depth + 1) {
                Ok(Value::Null) => Looked::Missing,
                Ok(v) => Looked::Found(v),
                Err(why) => Looked::Unsupported(format!("`${name}$`, a function using {why}")),
            },
            Some(Value::Str(s)) if s.contains('$') => match self.expand(&s, depth + 1) {
                Ok(Some(v)) => Looked::Found(v),
                Ok(None) => Looked::Missing,
                Err(why) => Looked::Unsupported(why),
            },
            Some(v) => Looked::Found(v),
        }
    }

    /// Runs a function (`{{ … }}`) with `macro()` resolving here.
    fn call(&self, code: &str, depth: usize) -> Result<Value, String> {
        let body = parse::parse_function(code)?;
        let macros = |text: &str| -> Result<Value, String> {
            Ok(self.expand(text, depth + 1)?.unwrap_or(Value::Null))
        };
        let mut scope = Scope {
            constants: self.constants,
            locals: Dict::new(),
            macros: Some(&macros),
        };
        Ok(scope.call(&body, 0)?.unwrap_or(Value::Null))
    }

    /// A string with its macros resolved: a string that is one macro keeps the macro's value
    /// (a list, a boolean); None when a macro has no value.
    fn expand(&self, text: &str, depth: usize) -> Result<Option<Value>, String> {
        let trimmed = text.trim();
        if trimmed.len() > 2
            && trimmed.starts_with('$')
            && trimmed.ends_with('$')
            && !trimmed[1..trimmed.len() - 1].contains('$')
        {
            return match self.lookup(&trimmed[1..trimmed.len() - 1], depth) {
                Looked::Found(v) => Ok(Some(v)),
                Looked::Missing => Ok(None),
                Looked::Unsupported(why) => Err(why),
            };
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('$') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('$') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            if name.is_empty() {
                out.push('$');
            } else {
                match self.lookup(name, depth) {
                    Looked::Found(v) => out.push_str(&v.text()),
                    Looked::Missing => return Ok(None),
                    Looked::Unsupported(why) => return Err(why),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Some(Value::Str(out)))
    }
}

/// The command line Icinga would run for a check with `command` (a CheckCommand object).
fn command_line(command: &Value, resolver: &Resolver<'_>) -> Result<(Vec<String>, bool), String> {
    let resolver = Resolver {
        command,
        ..*resolver
    };
    let mut argv = Vec::new();
    let mut through_shell = false;
    match command.get("command") {
        Some(Value::Array(parts)) => {
            for part in parts {
                match part {
                    Value::Str(s) => match resolver.expand(s, 0)? {
                        Some(v) => argv.push(v.text()),
                        None => return Err(format!("`{s}` in its command has no value")),
                    },
                    other => argv.push(other.text()),
                }
            }
        }
        Some(Value::Str(line)) => {
            let line = resolver
                .expand(line, 0)?
                .map(|v| v.text())
                .ok_or_else(|| format!("`{line}` has no value"))?;
            let split = crate::command::argv(&line)?;
            through_shell = split.through_shell;
            argv.extend(split.argv);
        }
        _ => return Err("it has no `command` (it runs inside Icinga, not as a plugin)".into()),
    }
    let Some(Value::Dict(arguments)) = command.get("arguments") else {
        return Ok((argv, through_shell));
    };
    let mut ordered: Vec<(f64, &String, &Value)> = arguments
        .iter()
        .map(|(key, spec)| {
            let order = match spec.get("order") {
                Some(Value::Num(n)) => *n,
                _ => 0.0,
            };
            (order, key, spec)
        })
        .collect();
    ordered.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    for (_, key, spec) in ordered {
        let (value, set_if, required, skip_key, repeat_key, separator, key) = match spec {
            Value::Dict(d) => (
                d.get("value").cloned(),
                d.get("set_if").cloned(),
                d.get("required").is_some_and(Value::truthy),
                d.get("skip_key").is_some_and(Value::truthy),
                d.get("repeat_key").is_none_or(Value::truthy),
                d.get("separator").map(Value::text),
                d.get("key").map(Value::text).unwrap_or_else(|| key.clone()),
            ),
            other => (
                Some(other.clone()),
                None,
                false,
                false,
                true,
                None,
                key.clone(),
            ),
        };
        if let Some(condition) = set_if {
            let on = match condition {
                Value::Str(s) => match resolver.expand(&s, 0)? {
                    Some(Value::Str(s)) => !s.is_empty() && s != "false" && s != "0",
                    Some(v) => v.truthy(),
                    None => false,
                },
                Value::Lambda(code) => resolver
                    .call(&code, 0)
                    .map_err(|why| {
                        format!("the argument `{key}` is set by a function using {why}")
                    })?
                    .truthy(),
                v => v.truthy(),
            };
            if !on {
                continue;
            }
        }
        let resolved = match value {
            None => {
                argv.push(key);
                continue;
            }
            Some(Value::Str(s)) => resolver.expand(&s, 0)?,
            Some(Value::Lambda(code)) => Some(
                resolver
                    .call(&code, 0)
                    .map_err(|why| format!("the argument `{key}` is a function using {why}"))?,
            ),
            Some(other) => Some(other),
        };
        let values: Vec<String> = match resolved {
            None | Some(Value::Null) => {
                if required {
                    return Err(format!("the required argument `{key}` has no value"));
                }
                continue;
            }
            Some(Value::Bool(true)) => {
                argv.push(key);
                continue;
            }
            Some(Value::Bool(false)) => continue,
            Some(Value::Array(items)) => items.iter().map(Value::text).collect(),
            Some(v) => vec![v.text()],
        };
        if values.iter().all(String::is_empty) {
            continue;
        }
        if skip_key {
            argv.extend(values);
        } else if let Some(separator) = separator {
            argv.extend(values.iter().map(|v| format!("{key}{separator}{v}")));
        } else if repeat_key {
            for v in values {
                argv.push(key.clone());
                argv.push(v);
            }
        } else {
            argv.push(key);
            argv.extend(values);
        }
    }
    Ok((argv, through_shell))
}

/// `check_dummy STATE TEXT` for Icinga's built-in `dummy` command (`dummy_state`, default 0;
/// `dummy_text`, default "Check was successful.").
fn dummy_line(command: &Value, resolver: &Resolver<'_>) -> Result<(Vec<String>, bool), String> {
    let resolver = Resolver {
        command,
        ..*resolver
    };
    let var = |name: &str, default: &str| -> Result<String, String> {
        Ok(match resolver.lookup(name, 0) {
            Looked::Found(v) => v.text(),
            Looked::Missing => default.to_string(),
            Looked::Unsupported(why) => return Err(why),
        })
    };
    let plugins = resolver
        .constants
        .get("PluginDir")
        .map(Value::text)
        .unwrap_or_else(|| "/usr/lib/nagios/plugins".into());
    Ok((
        vec![
            format!("{plugins}/check_dummy"),
            var("dummy_state", "0")?,
            var("dummy_text", "Check was successful.")?,
        ],
        false,
    ))
}

/// Fills a check from a host or service; false (with a note) when it cannot be run.
#[allow(clippy::too_many_arguments)]
fn fill(
    check: &mut ImportedCheck,
    object: &Value,
    resolver: &Resolver<'_>,
    commands: &HashMap<String, Value>,
    host_groups: &[String],
    service_groups: &[String],
    options: &Options,
    notes: &mut Vec<Note>,
) -> bool {
    let origin = check.origin.clone().unwrap_or_else(|| Origin::new("?", 1));
    let what = check.what.clone();
    let host_name = resolver.host.str("name").unwrap_or_default().to_string();
    check.entity = Some(crate::from_nagios::entity_name(&host_name));
    check.group = host_groups.first().cloned();
    check.description = object.str("notes").map(str::to_string);
    let url = |key: &str| {
        object.str(key).map(|u| match resolver.expand(u, 0) {
            Ok(Some(v)) => v.text(),
            _ => u.to_string(),
        })
    };
    check.runbook = url("notes_url").or_else(|| url("action_url"));
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
    if let Some(datacenter) = &options.datacenter {
        check.labels.insert("datacenter".into(), datacenter.clone());
    }
    // Icinga's defaults: every 5 minutes, 60 s to finish.
    check.interval = Some(
        object
            .seconds("check_interval")
            .unwrap_or(Duration::from_secs(300)),
    );
    if object.get("enable_flapping").is_some_and(Value::truthy) {
        let percent = |key: &str| match object.get(key) {
            Some(Value::Num(n)) if (0.0..=100.0).contains(n) => Some(n.round() as u32),
            _ => None,
        };
        if let (Some(low), Some(high)) = (
            percent("flapping_threshold_low"),
            percent("flapping_threshold_high"),
        ) && low > 0
            && high > low
        {
            check.flap = Some((low, high));
        }
    }
    if object
        .get("enable_active_checks")
        .is_some_and(|v| !v.truthy())
    {
        let ttl = check.interval.unwrap_or(Duration::from_secs(300));
        notes.push(origin.note(format!(
            "{what} has active checks off: push-only in mdd, stale after its check interval, {}, as Icinga's freshness is",
            crate::write::duration(ttl)
        )));
        check.ttl = Some(ttl);
        check.interval = None;
        return true;
    }
    let Some(command_name) = object.str("check_command") else {
        notes.push(origin.note(format!("{what} has no check_command: not carried over")));
        return false;
    };
    let Some(command) = commands.get(command_name) else {
        notes.push(origin.note(format!(
            "{what} runs the CheckCommand `{command_name}`, which is defined nowhere (is the ITL included?): not carried over"
        )));
        return false;
    };
    let built = if command_name == "dummy" && command.get("command").is_none() {
        // Icinga's built-in dummy check is what the plugins' check_dummy does.
        dummy_line(command, resolver)
    } else {
        command_line(command, resolver)
    };
    match built {
        Ok((argv, through_shell)) => {
            if through_shell {
                notes.push(origin.note(format!(
                    "{what} runs through `sh -c`: its command line needs a shell"
                )));
            }
            check.command = Some(argv);
        }
        Err(why) => {
            notes.push(origin.note(format!(
                "{what} runs the CheckCommand `{command_name}`: {why}: not carried over"
            )));
            return false;
        }
    }
    check.timeout = Some(
        object
            .seconds("check_timeout")
            .or_else(|| command.seconds("timeout"))
            .unwrap_or(Duration::from_secs(60)),
    );
    true
}
