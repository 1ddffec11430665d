//! Silences: "we know, stop telling us". A silence matches events by check, entity, label
//! selector and owner (all that are given must match), from a start time until an expiry or
//! until what it matches is passing again. Silenced events are still evaluated and shown,
//! marked; only notifications stop. Pure: the caller passes `now`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub reason: String,
    /// Who made it: the name of the token used.
    pub creator: String,
    /// ms since the epoch.
    pub starts_at: i64,
    /// ms since the epoch; none with `until_resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Ends on its own once every event it matches is passing.
    #[serde(default)]
    pub until_resolved: bool,
}

/// What a silence is matched against: one event with its check's spec facts.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub check: &'a str,
    pub entity: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub owner: Option<&'a str>,
}

/// Why a silence request cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    #[error("a silence must say what it silences: a check, an entity, labels or an owner")]
    MatchesEverything,
    #[error("a silence needs a reason, so the next person knows why it is quiet")]
    NoReason,
    #[error("a silence needs an expiry or `until_resolved`, or it would be forgotten")]
    NoEnd,
    #[error("the expiry is not after the start")]
    EndsBeforeStart,
}

impl Silence {
    /// Checks what a request asks for before it is stored.
    pub fn validate(&self) -> Result<(), SilenceError> {
        if self.check.is_none()
            && self.entity.is_none()
            && self.labels.is_empty()
            && self.owner.is_none()
        {
            return Err(SilenceError::MatchesEverything);
        }
        if self.reason.trim().is_empty() {
            return Err(SilenceError::NoReason);
        }
        match self.expires_at {
            None if !self.until_resolved => Err(SilenceError::NoEnd),
            Some(end) if end <= self.starts_at => Err(SilenceError::EndsBeforeStart),
            _ => Ok(()),
        }
    }

    /// Whether it is in force at `now` (started, not expired).
    pub fn is_active(&self, now: i64) -> bool {
        self.starts_at <= now && self.expires_at.is_none_or(|end| now < end)
    }

    /// Whether it has expired by `now` (and can be forgotten).
    pub fn has_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|end| now >= end)
    }

    /// Whether it covers this event (regardless of time).
    pub fn matches(&self, target: &Target<'_>) -> bool {
        self.check.as_deref().is_none_or(|c| c == target.check)
            && self.entity.as_deref().is_none_or(|e| e == target.entity)
            && self
                .owner
                .as_deref()
                .is_none_or(|o| target.owner == Some(o))
            && self
                .labels
                .iter()
                .all(|(k, v)| target.labels.and_then(|l| l.get(k)) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence() -> Silence {
        Silence {
            id: "s1".into(),
            check: None,
            entity: None,
            labels: BTreeMap::new(),
            owner: None,
            reason: "maintenance".into(),
            creator: "ops".into(),
            starts_at: 1_000,
            expires_at: Some(2_000),
            until_resolved: false,
        }
    }

    fn target<'a>(labels: &'a BTreeMap<String, String>) -> Target<'a> {
        Target {
            check: "ams1-dns",
            entity: "ns1",
            labels: Some(labels),
            owner: Some("team-dns"),
        }
    }

    #[test]
    fn every_given_field_must_match() {
        let labels: BTreeMap<String, String> = [("dc".to_string(), "ams1".to_string())].into();
        let cases: [(Silence, bool); 7] = [
            (
                Silence {
                    check: Some("ams1-dns".into()),
                    ..silence()
                },
                true,
            ),
            (
                Silence {
                    check: Some("other".into()),
                    ..silence()
                },
                false,
            ),
            (
                Silence {
                    entity: Some("ns1".into()),
                    ..silence()
                },
                true,
            ),
            (
                Silence {
                    owner: Some("team-dns".into()),
                    ..silence()
                },
                true,
            ),
            (
                Silence {
                    owner: Some("team-web".into()),
                    ..silence()
                },
                false,
            ),
            (
                Silence {
                    labels: labels.clone(),
                    check: Some("ams1-dns".into()),
                    ..silence()
                },
                true,
            ),
            (
                Silence {
                    labels: [("dc".to_string(), "fra1".to_string())].into(),
                    ..silence()
                },
                false,
            ),
        ];
        for (silence, expected) in cases {
            assert_eq!(silence.matches(&target(&labels)), expected, "{silence:?}");
        }
    }

    #[test]
    fn time_bounds() {
        let s = silence();
        assert!(!s.is_active(999));
        assert!(s.is_active(1_000));
        assert!(s.is_active(1_999));
        assert!(!s.is_active(2_000));
        assert!(s.has_expired(2_000));
        let open = Silence {
            expires_at: None,
            until_resolved: true,
            ..silence()
        };
        assert!(open.is_active(i64::MAX) && !open.has_expired(i64::MAX));
    }

    #[test]
    fn requests_that_cannot_be_taken() {
        assert_eq!(silence().validate(), Err(SilenceError::MatchesEverything));
        let scoped = Silence {
            check: Some("x".into()),
            ..silence()
        };
        assert_eq!(scoped.validate(), Ok(()));
        assert_eq!(
            Silence {
                reason: " ".into(),
                ..scoped.clone()
            }
            .validate(),
            Err(SilenceError::NoReason)
        );
        assert_eq!(
            Silence {
                expires_at: None,
                ..scoped.clone()
            }
            .validate(),
            Err(SilenceError::NoEnd)
        );
        assert_eq!(
            Silence {
                expires_at: Some(500),
                ..scoped
            }
            .validate(),
            Err(SilenceError::EndsBeforeStart)
        );
    }
}
