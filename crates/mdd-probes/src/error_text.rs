//! Turns error chains from the network stack into one readable line.

use std::error::Error;

/// Joins an error and its sources, skipping a source whose text is already contained in what was
/// said (reqwest and hyper often repeat their inner errors), and naming well-known failures the
/// way an operator says them.
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = current {
        let tls = rustls_error(e);
        let text = match (tls, e.downcast_ref::<std::io::Error>()) {
            (Some(tls), _) => tls_words(tls),
            (None, Some(io)) => io_words(io),
            (None, None) => library_words(e),
        };
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// What an error says of itself, without the wrappers HTTP libraries put around the cause:
/// reqwest's "error sending request for url (…)" (the caller knows the URL), hyper's "client
/// error (Connect)" and "tcp connect error". Nothing is said twice; the cause comes through.
fn library_words(e: &(dyn Error + 'static)) -> String {
    if let Some(request) = e.downcast_ref::<reqwest::Error>() {
        if request.is_timeout() {
            return "timed out".into();
        }
        if e.source().is_some() && (request.is_request() || request.is_connect()) {
            return String::new();
        }
    }
    let text = e.to_string();
    if text.starts_with("client error (") || text == "tcp connect error" {
        return String::new();
    }
    if text == "dns error" {
        return "cannot resolve the host name".into();
    }
    text
}

/// The TLS error in `e`, if it is one or an io::Error wrapping one (io::Error hides what it
/// wraps from `source()`, and TLS streams wrap their errors twice).
fn rustls_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
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

/// A TLS failure as an operator says it: what is wrong with whose certificate.
pub(crate) fn tls_words(error: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError};
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::ExpiredContext { time, not_after } => {
                let ago = time.as_secs().saturating_sub(not_after.as_secs());
                format!("the server's certificate expired {}", ago_words(ago))
            }
            CertificateError::Expired => "the server's certificate has expired".into(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (a clock is wrong, or it was issued for later)".into()
            }
            CertificateError::UnknownIssuer => {
                "the server's certificate is not from a trusted CA (unknown issuer; give its CA)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate is not valid for this host name".into()
            }
            CertificateError::BadSignature => "the server's certificate has a bad signature".into(),
            CertificateError::Revoked => "the server's certificate is revoked".into(),
            other => format!("the server's certificate is refused: {other:?}"),
        },
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRequired,
        ) => format!("the server refused our client certificate ({error})"),
        other => other.to_string(),
    }
}

/// "3 days ago", "5 hours ago", "2 minutes ago", "40 seconds ago": the unit a person uses.
fn ago_words(seconds: u64) -> String {
    let (n, unit) = match seconds {
        s if s >= 2 * 86_400 => (s / 86_400, "days"),
        s if s >= 2 * 3_600 => (s / 3_600, "hours"),
        s if s >= 2 * 60 => (s / 60, "minutes"),
        s => (s, if s == 1 { "second" } else { "seconds" }),
    };
    format!("{n} {unit} ago")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(super::ago_words(3 * 86_400 + 5), "3 days ago");
        assert_eq!(super::ago_words(86_400 + 7_200), "26 hours ago");
        assert_eq!(super::ago_words(150), "2 minutes ago");
        assert_eq!(super::ago_words(1), "1 second ago");
    }
}
