//! A YAML document as a tree of nodes that remember their line and column.
//!
//! The spec is not deserialized straight into typed structs: serde stops at the first error,
//! and a spec author deserves every error in the file at once. So YAML is first read into this
//! tree (syntax errors, duplicate keys and resource budgets are enforced here by serde-saphyr),
//! and `parse` then walks it, collecting every problem with its position.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// The YAML word for this kind of value, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            line: u32::try_from(spanned.referenced.line()).unwrap_or(u32::MAX),
            column: u32::try_from(spanned.referenced.column()).unwrap_or(u32::MAX),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(i128::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

/// Why a document could not be read as YAML at all.
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// How much one spec file may hold. A legitimate spec of 12,000 checks is 2.3 MB and about
/// 240,000 YAML nodes (serde-saphyr's default budget of 250,000 refused it); this fits 100,000
/// checks (some 20 MB) in one file and still refuses a hostile one (a billion laughs, deep
/// nesting) long before it eats the machine.
fn budget() -> serde_saphyr::Budget {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 4_000_000;
    budget.max_events = 10_000_000;
    budget.max_total_scalar_bytes = 256 * 1024 * 1024;
    budget
}

pub(crate) fn read(text: &str) -> Result<Node, SyntaxError> {
    read_within(text, budget())
}

fn read_within(text: &str, budget: serde_saphyr::Budget) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        budget: Some(budget),
        // YAML 1.2: `y`, `no`, `on` are strings (subscriptions and labels are full of them),
        // only `true` and `false` are booleans.
        strict_booleans: true,
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|error| {
        let location = error.location();
        let rendered = error.render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        });
        let message = strip_location_suffix(&rendered);
        let message = if message.to_lowercase().contains("budget") {
            format!(
                "the file is too large to read as one spec ({message}); split it into several files: mdd reads any number of them as one spec"
            )
        } else {
            message
        };
        SyntaxError {
            line: location.map_or(1, |l| u32::try_from(l.line()).unwrap_or(u32::MAX)),
            column: location.map_or(1, |l| u32::try_from(l.column()).unwrap_or(u32::MAX)),
            message,
        }
    })
}

/// serde-saphyr appends " at line L, column C" to messages; mdd prints positions its own way.
fn strip_location_suffix(message: &str) -> String {
    let message = message.trim();
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_the_budget_is_told_to_split() {
        let mut small = serde_saphyr::Budget::default();
        small.max_nodes = 50;
        let text: String = (0..100).map(|i| format!("- item{i}\n")).collect();
        let error = read_within(&text, small).expect_err("over budget");
        assert!(
            error
                .message
                .starts_with("the file is too large to read as one spec")
                && error.message.contains("split it into several files"),
            "{}",
            error.message
        );
    }

    #[test]
    fn yaml_1_1_booleans_are_strings() {
        let node = read("[y, no, on, off, yes, true, false]").expect("parses");
        let Value::Seq(items) = node.value else {
            panic!("a sequence");
        };
        let kinds: Vec<String> = items
            .iter()
            .map(|n| match &n.value {
                Value::Str(s) => format!("str {s}"),
                Value::Bool(b) => format!("bool {b}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "str y",
                "str no",
                "str on",
                "str off",
                "str yes",
                "bool true",
                "bool false"
            ]
        );
    }
}
