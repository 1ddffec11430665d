//! How often things break: incidents (a check on an entity turning from OK to anything else),
//! how long they lasted, and flaps, summed up over a window per check and per owner. This is
//! the record that tells a platform team which failures to automate away first.
//! Pure: the server records the changes as results arrive and passes them in with `now`.

use std::collections::BTreeMap;

use serde::Serialize;

/// One change worth keeping, as the event state machine saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentChange {
    /// It stopped being OK at `at`.
    Opened {
        check: String,
        entity: String,
        at: i64,
    },
    /// It was OK again at `at`.
    Closed {
        check: String,
        entity: String,
        at: i64,
    },
    /// Flap detection started at `at`.
    Flapped {
        check: String,
        entity: String,
        at: i64,
    },
}

/// A stored incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub check: String,
    pub entity: String,
    pub started_at: i64,
    /// None while it is still going.
    pub ended_at: Option<i64>,
}

/// The breakage of one check (or owner) over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Breakage {
    /// Incidents that started in the window.
    pub incidents: u32,
    /// Time spent not OK within the window (an entity-second counts once per entity).
    pub failing_ms: i64,
    /// Mean time to recovery of the incidents that ended in the window.
    pub mttr_ms: Option<i64>,
    /// Times flap detection started in the window.
    pub flaps: u32,
    /// Still not OK now.
    pub open: u32,
    #[serde(skip)]
    recovered: u32,
    #[serde(skip)]
    recovery_total_ms: i64,
}

impl Breakage {
    fn add_incident(&mut self, incident: &Incident, from: i64, now: i64) {
        let end = incident.ended_at.unwrap_or(now).min(now);
        if incident.started_at >= from && incident.started_at <= now {
            self.incidents += 1;
        }
        let overlap = end - incident.started_at.max(from);
        if overlap > 0 {
            self.failing_ms += overlap;
        }
        match incident.ended_at {
            Some(ended) if ended >= from && ended <= now => {
                self.recovered += 1;
                self.recovery_total_ms += ended - incident.started_at;
                self.mttr_ms = Some(self.recovery_total_ms / i64::from(self.recovered));
            }
            None => self.open += 1,
            Some(_) => {}
        }
    }

    fn merge(&mut self, other: &Breakage) {
        self.incidents += other.incidents;
        self.failing_ms += other.failing_ms;
        self.flaps += other.flaps;
        self.open += other.open;
        self.recovered += other.recovered;
        self.recovery_total_ms += other.recovery_total_ms;
        self.mttr_ms =
            (self.recovered > 0).then(|| self.recovery_total_ms / i64::from(self.recovered));
    }
}

/// Breakage per check over `[from, now]`, from the incidents and flap starts that touch it.
pub fn by_check(
    incidents: &[Incident],
    flaps: &[(String, String, i64)],
    from: i64,
    now: i64,
) -> BTreeMap<String, Breakage> {
    let mut out: BTreeMap<String, Breakage> = BTreeMap::new();
    for incident in incidents {
        if incident.ended_at.is_some_and(|e| e < from) || incident.started_at > now {
            continue;
        }
        out.entry(incident.check.clone())
            .or_default()
            .add_incident(incident, from, now);
    }
    for (check, _, at) in flaps {
        if (from..=now).contains(at) {
            out.entry(check.clone()).or_default().flaps += 1;
        }
    }
    out
}

/// The same summed per owner (`owner_of` names a check's owner).
pub fn by_owner<'a>(
    per_check: &BTreeMap<String, Breakage>,
    owner_of: impl Fn(&str) -> Option<&'a str>,
) -> BTreeMap<String, Breakage> {
    let mut out: BTreeMap<String, Breakage> = BTreeMap::new();
    for (check, breakage) in per_check {
        let owner = owner_of(check).unwrap_or("(no owner)").to_string();
        out.entry(owner).or_default().merge(breakage);
    }
    out
}

/// The worst first: most time failing, then most incidents, then most flaps.
pub fn top_offenders(per_check: &BTreeMap<String, Breakage>, n: usize) -> Vec<(&str, &Breakage)> {
    let mut list: Vec<(&str, &Breakage)> = per_check.iter().map(|(c, b)| (c.as_str(), b)).collect();
    list.sort_by(|a, b| {
        (b.1.failing_ms, b.1.incidents, b.1.flaps)
            .cmp(&(a.1.failing_ms, a.1.incidents, a.1.flaps))
            .then(a.0.cmp(b.0))
    });
    list.truncate(n);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(check: &str, entity: &str, start: i64, end: Option<i64>) -> Incident {
        Incident {
            check: check.into(),
            entity: entity.into(),
            started_at: start,
            ended_at: end,
        }
    }

    #[test]
    fn a_worked_window() {
        // Window [100, 1000].
        let incidents = [
            incident("dns", "a", 50, Some(150)), // started before: 50 ms inside, recovered inside
            incident("dns", "a", 200, Some(300)), // inside: 100 ms
            incident("dns", "b", 900, None),     // still open: 100 ms up to now
            incident("ldap", "a", 10, Some(90)), // over before the window
            incident("ldap", "a", 500, Some(2000)), // ends after now: 500 ms, not recovered yet
        ];
        let flaps = [
            ("dns".to_string(), "a".to_string(), 250),
            ("dns".to_string(), "a".to_string(), 50),
        ];
        let per_check = by_check(&incidents, &flaps, 100, 1000);
        let dns = &per_check["dns"];
        assert_eq!(dns.incidents, 2, "those that started in the window");
        assert_eq!(dns.failing_ms, 50 + 100 + 100);
        assert_eq!(dns.mttr_ms, Some((100 + 100) / 2));
        assert_eq!(dns.flaps, 1);
        assert_eq!(dns.open, 1);
        let ldap = &per_check["ldap"];
        assert_eq!(
            (ldap.incidents, ldap.failing_ms, ldap.mttr_ms),
            (1, 500, None)
        );

        let owners = by_owner(&per_check, |c| (c == "dns").then_some("network"));
        assert_eq!(owners["network"].failing_ms, 250);
        assert_eq!(owners["(no owner)"].incidents, 1);
        let top = top_offenders(&per_check, 1);
        assert_eq!(top[0].0, "ldap", "500 ms failing beats 250");
    }
}
