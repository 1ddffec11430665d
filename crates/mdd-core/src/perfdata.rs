//! Performance data, to the full Monitoring Plugins grammar:
//! `'label'=value[UOM];[warn];[crit];[min];[max]`, space separated, labels optionally quoted
//! (a quote inside a quoted label is doubled), `U` for a value that could not be determined.

use serde::{Deserialize, Serialize};

use crate::threshold::{Range, parse_number};

/// One perfdata item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfDatum {
    pub label: String,
    /// `None` when the plugin printed `U` (value undetermined).
    pub value: Option<f64>,
    /// Unit of measure as printed: `s`, `ms`, `%`, `B`, `KB`, `c`, … (empty when none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uom: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn: Option<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl PerfDatum {
    /// A datum with a value and unit and nothing else, as built-in probes report.
    pub fn new(label: impl Into<String>, value: f64, uom: impl Into<String>) -> PerfDatum {
        PerfDatum {
            label: label.into(),
            value: Some(value),
            uom: uom.into(),
            warn: None,
            crit: None,
            min: None,
            max: None,
        }
    }
}

impl std::fmt::Display for PerfDatum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self
            .label
            .chars()
            .any(|c| c.is_whitespace() || c == '=' || c == '\'')
        {
            write!(f, "'{}'=", self.label.replace('\'', "''"))?;
        } else {
            write!(f, "{}=", self.label)?;
        }
        match self.value {
            Some(v) => write!(f, "{v}{}", self.uom)?,
            None => f.write_str("U")?,
        }
        let fields = [
            self.warn.map(|r| r.to_string()),
            self.crit.map(|r| r.to_string()),
            self.min.map(|v| v.to_string()),
            self.max.map(|v| v.to_string()),
        ];
        let used = fields
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        for field in &fields[..used] {
            write!(f, ";{}", field.as_deref().unwrap_or(""))?;
        }
        Ok(())
    }
}

/// A perfdata item that could not be parsed. Perfdata errors never change a check's status:
/// the item is skipped and the error is kept so it can be shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("perfdata `{item}`: {reason}")]
pub struct PerfdataError {
    pub item: String,
    pub reason: String,
}

/// Parses a perfdata string into its items, collecting the items that are malformed.
pub fn parse_perfdata(text: &str) -> (Vec<PerfDatum>, Vec<PerfdataError>) {
    let mut data = Vec::new();
    let mut errors = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (item, remainder) = split_item(rest);
        match parse_item(item) {
            Ok(datum) => data.push(datum),
            Err(reason) => errors.push(PerfdataError {
                item: item.to_string(),
                reason,
            }),
        }
        rest = remainder.trim_start();
    }
    (data, errors)
}

/// Splits off one item: up to the first whitespace that is not inside a quoted label.
fn split_item(text: &str) -> (&str, &str) {
    let mut in_quotes = false;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if in_quotes => {
                if chars.peek().map(|&(_, n)| n) == Some('\'') {
                    chars.next();
                } else {
                    in_quotes = false;
                }
            }
            '\'' if i == 0 => in_quotes = true,
            c if c.is_whitespace() && !in_quotes => return (&text[..i], &text[i..]),
            _ => {}
        }
    }
    (text, "")
}

fn parse_item(item: &str) -> Result<PerfDatum, String> {
    let (label, after_label) = if let Some(quoted) = item.strip_prefix('\'') {
        let mut label = String::new();
        let mut chars = quoted.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().map(|&(_, n)| n) == Some('\'') {
                    label.push('\'');
                    chars.next();
                } else {
                    end = Some(i);
                    break;
                }
            } else {
                label.push(c);
            }
        }
        let end = end.ok_or("unterminated quoted label")?;
        let after = &quoted[end + 1..];
        let after = after
            .strip_prefix('=')
            .ok_or("expected `=` after the quoted label")?;
        (label, after)
    } else {
        let (label, after) = item.split_once('=').ok_or("expected `label=value`")?;
        (label.to_string(), after)
    };
    if label.is_empty() {
        return Err("empty label".into());
    }
    let mut fields = after_label.split(';');
    let value_field = fields.next().unwrap_or_default();
    let (value, uom) = parse_value(value_field)?;
    let mut range = |name: &str| -> Result<Option<Range>, String> {
        match fields.next() {
            None | Some("") => Ok(None),
            Some(text) => Range::parse(text)
                .map(Some)
                .map_err(|e| format!("{name} threshold: {e}")),
        }
    };
    let warn = range("warning")?;
    let crit = range("critical")?;
    let mut bound = |name: &str| -> Result<Option<f64>, String> {
        match fields.next() {
            None | Some("") => Ok(None),
            // A unit repeated on min/max (`0%`) is common in the wild; the number is what counts.
            Some(text) => parse_value(text)
                .and_then(|(v, _)| v.ok_or_else(|| format!("{name} is `U`")))
                .map(Some)
                .map_err(|e| format!("{name}: {e}")),
        }
    };
    let min = bound("min")?;
    let max = bound("max")?;
    Ok(PerfDatum {
        label,
        value,
        uom,
        warn,
        crit,
        min,
        max,
    })
}

/// Splits `12.5ms` into `(Some(12.5), "ms")`; `U` into `(None, "")`.
fn parse_value(text: &str) -> Result<(Option<f64>, String), String> {
    if text == "U" {
        return Ok((None, String::new()));
    }
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | ',' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(text.len());
    // An `e` that is not followed by a digit belongs to the unit, not an exponent.
    let mut number_end = number_end;
    while number_end > 0 && matches!(text.as_bytes()[number_end - 1], b'e' | b'E' | b'-' | b'+') {
        number_end -= 1;
    }
    let (number, uom) = text.split_at(number_end);
    if number.is_empty() {
        return Err(format!("value `{text}` is not a number"));
    }
    let value = parse_number(number).map_err(|e| e.to_string())?;
    Ok((Some(value), uom.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> PerfDatum {
        let (data, errors) = parse_perfdata(text);
        assert!(errors.is_empty(), "{text}: {errors:?}");
        assert_eq!(data.len(), 1, "{text}");
        data.into_iter().next().expect("one datum")
    }

    #[test]
    fn full_item() {
        let d = one("time=0.012s;0.5;1;0;10");
        assert_eq!(d.label, "time");
        assert_eq!(d.value, Some(0.012));
        assert_eq!(d.uom, "s");
        assert_eq!(d.warn, Some(Range::parse("0.5").expect("range")));
        assert_eq!(d.crit, Some(Range::parse("1").expect("range")));
        assert_eq!((d.min, d.max), (Some(0.0), Some(10.0)));
    }

    #[test]
    fn quoted_labels_with_spaces_and_quotes() {
        let (data, errors) = parse_perfdata("'disk usage /'=45%;80;90 'it''s'=1 plain=2c");
        assert!(errors.is_empty(), "{errors:?}");
        let labels: Vec<_> = data.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["disk usage /", "it's", "plain"]);
        assert_eq!(data[0].uom, "%");
        assert_eq!(data[2].uom, "c");
    }

    #[test]
    fn undetermined_values_and_range_syntax() {
        let d = one("load=U;@10:20;~:30;;");
        assert_eq!(d.value, None);
        assert!(d.warn.expect("warn").inside);
        assert_eq!(d.crit.expect("crit").start, None);
        assert_eq!((d.min, d.max), (None, None));
    }

    #[test]
    fn units_and_numbers_in_the_wild() {
        assert_eq!(one("size=1234B").uom, "B");
        assert_eq!(one("rx=1.5e3KB").value, Some(1500.0));
        assert_eq!(one("temp=-5").value, Some(-5.0));
        assert_eq!(one("pct=0,5%").value, Some(0.5));
        assert_eq!(one("/=2643MB;5948;5958;0;5968").max, Some(5968.0));
        assert_eq!(one("used=45%;80;90;0%;100%").max, Some(100.0));
        let d = one("x=5elephants");
        assert_eq!((d.value, d.uom.as_str()), (Some(5.0), "elephants"));
    }

    #[test]
    fn bad_items_are_reported_and_skipped() {
        let (data, errors) = parse_perfdata("good=1 bad worse=abc also=1;x 'open=3");
        assert_eq!(data.len(), 1, "{data:?}");
        assert_eq!(data[0].label, "good");
        let items: Vec<_> = errors.iter().map(|e| e.item.as_str()).collect();
        assert_eq!(items, ["bad", "worse=abc", "also=1;x", "'open=3"]);
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "time=0.012s;0.5;1;0;10",
            "'a b'=U",
            "x=1;;;0",
            "'it''s'=2c;@1:2",
        ] {
            let d = one(text);
            assert_eq!(one(&d.to_string()), d, "{text}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::parse_perfdata;
    use crate::plugin_output::PluginOutput;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_perfdata(&text);
            let _ = PluginOutput::parse(&text);
        }

        #[test]
        fn perfdata_shaped_text_never_panics(
            items in proptest::collection::vec(
                ("'?[a-z /']{0,6}'?", "=", "[-+0-9.,eEU]{0,8}", "[a-zA-Z%]{0,3}", "(;[-@~:0-9.,]{0,6}){0,5}"),
                0..6,
            )
        ) {
            let text: Vec<String> = items
                .into_iter()
                .map(|(l, eq, v, u, rest)| format!("{l}{eq}{v}{u}{rest}"))
                .collect();
            let (data, _) = parse_perfdata(&text.join(" "));
            for datum in data {
                // Whatever parsed must print back to something that parses to the same datum.
                let (again, errors) = parse_perfdata(&datum.to_string());
                prop_assert!(errors.is_empty(), "{datum} -> {errors:?}");
                prop_assert_eq!(again.len(), 1);
                prop_assert_eq!(&again[0], &datum);
            }
        }
    }
}
