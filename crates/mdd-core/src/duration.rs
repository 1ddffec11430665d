//! Durations as people write them in a spec: `250ms`, `30s`, `5m`, `1h`, `1h30m`, `2d`.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error(
        "`{0}` is not a duration: expected a number followed by a unit (ms, s, m, h, d), like 250ms, 30s, 5m, 1h30m"
    )]
    Malformed(String),
    #[error("`{input}` has unknown unit `{unit}`: use ms, s, m, h or d")]
    UnknownUnit { input: String, unit: String },
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// Parses a duration such as `250ms`, `30s`, `1m30s` or `1.5s`. Whitespace between parts is
/// allowed (`1m 30s`). A bare number is rejected: a unit is always required so that `30` never
/// silently means 30 milliseconds to one reader and 30 seconds to another.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(input.to_string());
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(malformed());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| malformed())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(malformed());
        }
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let seconds_per_unit = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => {
                return Err(DurationError::UnknownUnit {
                    input: input.to_string(),
                    unit: unit.to_string(),
                });
            }
        };
        let part = Duration::try_from_secs_f64(number * seconds_per_unit)
            .map_err(|_| DurationError::Overflow(input.to_string()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| DurationError::Overflow(input.to_string()))?;
    }
    Ok(total)
}

/// Formats a duration the way a person reads it: `12ms`, `1.2s`, `5m`, `1h30m`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let secs = duration.as_secs();
    if secs < 60 {
        let tenths = (millis % 1000) / 100;
        return if tenths == 0 {
            format!("{secs}s")
        } else {
            format!("{secs}.{tenths}s")
        };
    }
    let (hours, minutes, seconds) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_combinations() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("2d", Duration::from_secs(172_800)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m 30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            (" 10s ", Duration::from_secs(10)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        for bad in ["30", "s", "abc", "10 s x", "-5s", "1..2s", "5sm"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
        assert!(matches!(
            parse_duration("5y"),
            Err(DurationError::UnknownUnit { unit, .. }) if unit == "y"
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(format_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(5430)), "1h30m30s");
    }
}
