//! Tokens: 256-bit random secrets, stored only as SHA-256, compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read the API.
    Read,
    /// Report results (and read).
    Agent,
    /// Everything: apply specs, create tokens.
    Admin,
    /// Only enroll an agent (`POST /api/v1/agent/enroll`), which gets a token of its own.
    Enroll,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Agent => "agent",
            Role::Admin => "admin",
            Role::Enroll => "enroll",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "agent" => Some(Role::Agent),
            "admin" => Some(Role::Admin),
            "enroll" => Some(Role::Enroll),
            _ => None,
        }
    }

    /// Read < agent < admin; an enrollment token enrolls and does nothing else, and nothing
    /// else enrolls.
    pub fn allows(self, needed: Role) -> bool {
        let rank = |role: Role| match role {
            Role::Read => 0,
            Role::Agent => 1,
            Role::Admin => 2,
            Role::Enroll => 3,
        };
        match (self, needed) {
            (Role::Enroll, Role::Enroll) => true,
            (Role::Enroll, _) | (_, Role::Enroll) => false,
            (have, want) => rank(have) >= rank(want),
        }
    }
}

/// What an enrollment token grants the agents that enroll with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub subscriptions: Vec<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub hash: [u8; 32],
    pub id: String,
    pub role: Role,
    pub name: String,
    /// An agent token bound to an entity reports only for it (and its checks' proxy entities).
    pub entity: Option<String>,
    pub created_at: i64,
    /// Refused after this (ms).
    pub expires_at: Option<i64>,
    /// Enrollment tokens: uses left (None: any number).
    pub uses_left: Option<i64>,
    pub grants: Grants,
    /// When it was last used (ms), shared by every copy of the entry; written to the store
    /// now and then.
    pub last_used: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl TokenEntry {
    /// What a verified client certificate named `entity` may do: what an agent token bound
    /// to that entity may.
    pub fn for_certificate(entity: &str) -> TokenEntry {
        TokenEntry {
            hash: [0; 32],
            id: format!("certificate:{entity}"),
            role: Role::Agent,
            name: format!("client certificate {entity}"),
            entity: Some(entity.to_string()),
            created_at: 0,
            expires_at: None,
            uses_left: None,
            grants: Grants::default(),
            last_used: std::sync::Arc::default(),
        }
    }

    /// Whether it is past its expiry at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.trim().as_bytes()).into()
}

/// A new secret: `mdd_` and 64 hex digits of OS randomness.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut secret = String::with_capacity(68);
    secret.push_str("mdd_");
    for byte in bytes {
        secret.push_str(&format!("{byte:02x}"));
    }
    Ok(secret)
}

/// Finds the token whose hash matches, looking at every entry so that timing says nothing about
/// which (or whether one) matched.
pub fn find<'a>(tokens: &'a [TokenEntry], secret: &str) -> Option<&'a TokenEntry> {
    let wanted = hash(secret);
    let mut found = None;
    for entry in tokens {
        if bool::from(entry.hash.ct_eq(&wanted)) {
            found = Some(entry);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_found_by_hash() {
        let a = new_secret().expect("random");
        let b = new_secret().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 68);
        let tokens = vec![TokenEntry {
            hash: hash(&a),
            id: "t1".into(),
            role: Role::Agent,
            name: "agent".into(),
            entity: None,
            created_at: 0,
            expires_at: None,
            uses_left: None,
            grants: Grants::default(),
            last_used: Default::default(),
        }];
        assert_eq!(find(&tokens, &a).map(|t| t.id.as_str()), Some("t1"));
        assert!(find(&tokens, &b).is_none());
        assert!(find(&tokens, "").is_none());
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Admin.allows(Role::Agent));
        assert!(Role::Agent.allows(Role::Read));
        assert!(!Role::Read.allows(Role::Agent));
        assert!(!Role::Agent.allows(Role::Admin));
        assert!(Role::Enroll.allows(Role::Enroll));
        assert!(!Role::Enroll.allows(Role::Read), "enrolling is all it does");
        assert!(
            !Role::Admin.allows(Role::Enroll),
            "enrolling takes an enrollment token"
        );
    }
}
