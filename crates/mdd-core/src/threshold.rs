//! Nagios threshold ranges (`10`, `10:`, `~:10`, `10:20`, `@10:20`) as defined by the
//! Monitoring Plugins development guidelines.

use std::fmt;

/// A threshold range. A value *alerts* when it lies outside `start..=end`, or inside it when the
/// range was written with a leading `@`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Range {
    /// `None` is negative infinity (`~`).
    pub start: Option<f64>,
    /// `None` is positive infinity (an empty end, as in `10:`).
    pub end: Option<f64>,
    /// `@`: alert when the value is inside the range instead of outside.
    pub inside: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("empty range")]
    Empty,
    #[error("`{0}` is not a number")]
    NotANumber(String),
    #[error("range `{0}` starts after it ends")]
    Inverted(String),
}

impl Range {
    /// Parses the range syntax. `10` means `0:10`.
    pub fn parse(text: &str) -> Result<Range, RangeError> {
        let text = text.trim();
        let (inside, body) = match text.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if body.is_empty() {
            return Err(RangeError::Empty);
        }
        let (start, end) = match body.split_once(':') {
            None => (Some(0.0), Some(parse_number(body)?)),
            Some((start, end)) => {
                let start = match start {
                    "~" => None,
                    "" => Some(0.0),
                    s => Some(parse_number(s)?),
                };
                let end = match end {
                    "" => None,
                    e => Some(parse_number(e)?),
                };
                (start, end)
            }
        };
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(RangeError::Inverted(text.to_string()));
        }
        Ok(Range { start, end, inside })
    }

    /// Whether `value` should raise an alert under this range.
    pub fn alerts(&self, value: f64) -> bool {
        let above_start = self.start.is_none_or(|s| value >= s);
        let below_end = self.end.is_none_or(|e| value <= e);
        let within = above_start && below_end;
        if self.inside { within } else { !within }
    }

    /// A range that alerts above `limit`: what `max_latency` and similar settings mean.
    pub fn at_most(limit: f64) -> Range {
        Range {
            start: None,
            end: Some(limit),
            inside: false,
        }
    }
}

/// Parses a perfdata or threshold number. Some plugins print a decimal comma under a non-C
/// locale; it is accepted so that their perfdata is not lost.
pub(crate) fn parse_number(text: &str) -> Result<f64, RangeError> {
    let normalized;
    let candidate = if text.contains(',') && !text.contains('.') {
        normalized = text.replace(',', ".");
        normalized.as_str()
    } else {
        text
    };
    match candidate.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        _ => Err(RangeError::NotANumber(text.to_string())),
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inside {
            f.write_str("@")?;
        }
        match (self.start, self.end) {
            (Some(s), Some(e)) if s == 0.0 && !self.inside => write!(f, "{e}"),
            (start, end) => {
                match start {
                    None => f.write_str("~")?,
                    Some(s) => write!(f, "{s}")?,
                }
                f.write_str(":")?;
                if let Some(e) = end {
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked table of the Monitoring Plugins guidelines: range, values that alert, values
    /// that do not.
    #[test]
    fn guideline_table() {
        let table: &[(&str, &[f64], &[f64])] = &[
            ("10", &[-1.0, 10.5, 11.0], &[0.0, 5.0, 10.0]),
            ("10:", &[-5.0, 9.99], &[10.0, 1e9]),
            ("~:10", &[10.01, 1e9], &[-1e9, 0.0, 10.0]),
            ("10:20", &[9.0, 21.0], &[10.0, 15.0, 20.0]),
            ("@10:20", &[10.0, 15.0, 20.0], &[9.99, 20.01]),
            ("-5:-1", &[0.0, -6.0], &[-5.0, -1.0]),
            ("1e1:2e1", &[9.0], &[10.0, 20.0]),
        ];
        for (text, alerting, quiet) in table {
            let range = Range::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            for v in *alerting {
                assert!(range.alerts(*v), "{text} should alert for {v}");
            }
            for v in *quiet {
                assert!(!range.alerts(*v), "{text} should not alert for {v}");
            }
        }
    }

    #[test]
    fn rejects_malformed_ranges() {
        assert_eq!(Range::parse(""), Err(RangeError::Empty));
        assert_eq!(Range::parse("@"), Err(RangeError::Empty));
        assert!(matches!(
            Range::parse("abc"),
            Err(RangeError::NotANumber(_))
        ));
        assert!(matches!(
            Range::parse("20:10"),
            Err(RangeError::Inverted(_))
        ));
        assert!(matches!(
            Range::parse("1:2:3"),
            Err(RangeError::NotANumber(_))
        ));
        assert!(matches!(
            Range::parse("inf"),
            Err(RangeError::NotANumber(_))
        ));
    }

    #[test]
    fn displays_in_the_syntax_it_parses() {
        for text in ["10", "10:", "~:10", "10:20", "@10:20", "@0:5", "~:"] {
            let range = Range::parse(text).expect("valid");
            assert_eq!(Range::parse(&range.to_string()), Ok(range), "{text}");
        }
        assert_eq!(Range::parse("10").expect("valid").to_string(), "10");
    }

    #[test]
    fn accepts_a_decimal_comma() {
        assert_eq!(
            Range::parse("0,5"),
            Ok(Range {
                start: Some(0.0),
                end: Some(0.5),
                inside: false
            })
        );
    }
}
