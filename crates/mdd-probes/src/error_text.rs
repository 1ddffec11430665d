//! Turns error chains from the network stack into one readable line.

use std::error::Error;

/// Joins an error and its sources, skipping a source whose text is already contained in what was
/// said (reqwest and hyper often repeat their inner errors), and naming well-known failures the
/// way an operator says them.
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io_words(io),
            None => e.to_string(),
        };
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

pub(crate) fn io_words(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset by peer".into(),
        ErrorKind::TimedOut => "timed out".into(),
        ErrorKind::HostUnreachable => "host unreachable".into(),
        ErrorKind::NetworkUnreachable => "network unreachable".into(),
        ErrorKind::UnexpectedEof => "connection closed by peer".into(),
        _ => error.to_string(),
    }
}
