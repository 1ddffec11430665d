//! Webhook signatures as Standard Webhooks specifies them (<https://www.standardwebhooks.com>):
//! `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `id.timestamp.body`, keyed with the secret in a handler's `secret_file` (`whsec_` and
//! base64, as the spec's libraries take it). A receiver verifies with any of those libraries
//! and drops a repeated id.
//!
//! It owns reading secrets and making signatures; it does not send anything (`notify`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The most a secret file may hold: a key is 24 to 64 bytes; anything much bigger is not one.
const MAX_SECRET_FILE: u64 = 4096;

/// The key in a secret file: `whsec_` and base64, or base64; surrounding whitespace ignored.
pub fn read_secret(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut text = String::new();
    file.take(MAX_SECRET_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_secret(&text).map_err(|e| format!("{path}: {e}"))
}

fn parse_secret(text: &str) -> Result<Vec<u8>, String> {
    let encoded = text.trim();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    // Standard Webhooks' libraries take unpadded base64 too.
    let padded = match encoded.len() % 4 {
        2 => format!("{encoded}=="),
        3 => format!("{encoded}="),
        _ => encoded.to_string(),
    };
    let key = STANDARD.decode(padded).map_err(|_| {
        "not a webhook secret: want `whsec_` and base64 (e.g. `echo whsec_$(openssl rand -base64 32)`)"
            .to_string()
    })?;
    if key.len() < 16 {
        return Err(format!(
            "a secret of {} bytes is too short to sign with: want at least 16 (24 to 64 is usual)",
            key.len()
        ));
    }
    Ok(key)
}

/// What an apply should say about `handlers`' secrets: each one that cannot be used now,
/// whose deliveries fail (never go unsigned) until it can.
pub fn secret_warnings(handlers: &[mdd_core::spec::Handler]) -> Vec<String> {
    handlers
        .iter()
        .filter_map(|handler| match &handler.kind {
            mdd_core::spec::HandlerKind::Webhook {
                secret_file: Some(path),
                ..
            } => read_secret(path).err().map(|e| {
                format!(
                    "handler `{}`: secret_file: {e}; its deliveries fail until the server can read it",
                    handler.name
                )
            }),
            _ => None,
        })
        .collect()
}

/// The `webhook-signature` header's value for one delivery attempt.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_specification_example_does() {
        // The example in the Standard Webhooks specification.
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_that_are_not_are_refused() {
        assert!(parse_secret("hunter2").is_err());
        assert!(
            parse_secret("whsec_c2hvcnQ=")
                .expect_err("short")
                .contains("too short")
        );
        assert!(parse_secret("  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").is_ok());
        assert!(parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    }
}
