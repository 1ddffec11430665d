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

/// What the report counts, in words; the API, `mdd report` and the dashboard show it.
pub const COUNTS: &str = "An incident is a check on an entity turning from OK to anything else \
after its first green in its deployments (red during bring-up is expected, not an incident), \
while every check it depends on passes: time blocked behind a failing dependency belongs to \
that dependency, the root cause. A check that keeps failing once its dependency recovers \
starts an incident of its own then. Failing time is the time in the window spent in such \
incidents; MTTR is from an incident's start to its end, over those that ended in the window; \
flaps are starts of flap detection outside bring-up and blocked time.";

/// What the report needs to know of a check besides its incidents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckContext {
    /// Red before this moment is bring-up, not an incident: the first time it was green in the
    /// deployments that select it (`i64::MAX` while it never was). None for a check that no
    /// deployment selects.
    pub bring_up_until: Option<i64>,
    pub depends_on: Vec<String>,
}

/// Everything [`attributed`] looks at besides the incidents.
pub struct Attribution<'a> {
    pub checks: &'a BTreeMap<String, CheckContext>,
    /// Whether (check, entity) has an event: a dependency with one on the entity blocks it by
    /// that event; one without blocks it when any of its events is not OK (as states do).
    pub has_event: &'a dyn Fn(&str, &str) -> bool,
}

/// Half-open time spans, sorted and disjoint.
type Spans = Vec<(i64, i64)>;

fn union(mut spans: Spans) -> Spans {
    spans.retain(|(a, b)| a < b);
    spans.sort_unstable();
    let mut out: Spans = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// `span` minus every span of `cut` (sorted, disjoint).
fn subtract(span: (i64, i64), cut: &Spans) -> Spans {
    let mut out = Vec::new();
    let mut start = span.0;
    for &(a, b) in cut {
        if b <= start || a >= span.1 {
            continue;
        }
        if a > start {
            out.push((start, a));
        }
        start = start.max(b);
        if start >= span.1 {
            break;
        }
    }
    if start < span.1 {
        out.push((start, span.1));
    }
    out
}

/// When checks were not OK, per (check, entity), from their incidents and their dependencies'.
struct Down<'a> {
    own: BTreeMap<(&'a str, &'a str), Spans>,
    entities: BTreeMap<&'a str, Vec<&'a str>>,
    attribution: &'a Attribution<'a>,
    memo: BTreeMap<(String, String), Spans>,
}

impl<'a> Down<'a> {
    fn new(incidents: &'a [Incident], now: i64, attribution: &'a Attribution<'a>) -> Down<'a> {
        let mut own: BTreeMap<(&str, &str), Spans> = BTreeMap::new();
        let mut entities: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for incident in incidents {
            let end = incident.ended_at.unwrap_or(now).min(now);
            own.entry((incident.check.as_str(), incident.entity.as_str()))
                .or_default()
                .push((incident.started_at, end));
            let list = entities.entry(incident.check.as_str()).or_default();
            if !list.contains(&incident.entity.as_str()) {
                list.push(incident.entity.as_str());
            }
        }
        for spans in own.values_mut() {
            *spans = union(std::mem::take(spans));
        }
        Down {
            own,
            entities,
            attribution,
            memo: BTreeMap::new(),
        }
    }

    /// When what `check` depends on kept it from passing on `entity`.
    fn blocking(&mut self, check: &str, entity: &str, depth: usize) -> Spans {
        let deps = self
            .attribution
            .checks
            .get(check)
            .map(|c| c.depends_on.clone())
            .unwrap_or_default();
        let mut spans = Vec::new();
        // Specs have no cycles; the bound guards against data from an older spec.
        if depth > 16 {
            return spans;
        }
        for dep in deps {
            if (self.attribution.has_event)(&dep, entity) {
                spans.extend(self.not_passing(&dep, entity, depth + 1));
            } else {
                let elsewhere: Vec<String> = self
                    .entities
                    .get(dep.as_str())
                    .map(|list| list.iter().map(|e| e.to_string()).collect())
                    .unwrap_or_default();
                for other in elsewhere {
                    spans.extend(self.not_passing(&dep, &other, depth + 1));
                }
            }
        }
        union(spans)
    }

    /// When `check` did not pass on `entity`: its own incidents, and when it was blocked.
    fn not_passing(&mut self, check: &str, entity: &str, depth: usize) -> Spans {
        let key = (check.to_string(), entity.to_string());
        if let Some(known) = self.memo.get(&key) {
            return known.clone();
        }
        let mut spans = self.own.get(&(check, entity)).cloned().unwrap_or_default();
        spans.extend(self.blocking(check, entity, depth));
        let spans = union(spans);
        self.memo.insert(key, spans.clone());
        spans
    }
}

/// Breakage per check over `[from, now]` as MDD means it (see [`COUNTS`]): bring-up red is
/// left out, and so is time blocked behind a failing dependency, which is its root cause's.
pub fn attributed(
    incidents: &[Incident],
    flaps: &[(String, String, i64)],
    from: i64,
    now: i64,
    attribution: &Attribution<'_>,
) -> BTreeMap<String, Breakage> {
    let mut down = Down::new(incidents, now, attribution);
    let mut out: BTreeMap<String, Breakage> = BTreeMap::new();
    let bring_up = |check: &str| {
        attribution
            .checks
            .get(check)
            .and_then(|c| c.bring_up_until)
            .unwrap_or(i64::MIN)
    };
    for incident in incidents {
        let end = incident.ended_at.unwrap_or(now).min(now);
        let start = incident.started_at.max(bring_up(&incident.check));
        if start >= end {
            continue;
        }
        let blocked = down.blocking(&incident.check, &incident.entity, 0);
        let own = subtract((start, end), &blocked);
        // Never its own (bring-up or blocked all along): its root cause's, not its.
        let Some(&(own_start, _)) = own.first() else {
            continue;
        };
        let entry = out.entry(incident.check.clone()).or_default();
        if (from..=now).contains(&own_start) {
            entry.incidents += 1;
        }
        for (a, b) in &own {
            let overlap = (*b).min(now) - (*a).max(from);
            if overlap > 0 {
                entry.failing_ms += overlap;
            }
        }
        match incident.ended_at {
            Some(ended) if ended >= from && ended <= now => {
                entry.recovered += 1;
                entry.recovery_total_ms += ended - own_start;
                entry.mttr_ms = Some(entry.recovery_total_ms / i64::from(entry.recovered));
            }
            None => entry.open += 1,
            Some(_) => {}
        }
    }
    for (check, entity, at) in flaps {
        if !(from..=now).contains(at) || *at < bring_up(check) {
            continue;
        }
        let blocked = down.blocking(check, entity, 0);
        if blocked.iter().any(|(a, b)| a <= at && at < b) {
            continue;
        }
        out.entry(check.clone()).or_default().flaps += 1;
    }
    out.retain(|_, b| *b != Breakage::default());
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
        let checks = BTreeMap::new();
        let has_event = |_: &str, _: &str| true;
        let attribution = Attribution {
            checks: &checks,
            has_event: &has_event,
        };
        let per_check = attributed(&incidents, &flaps, 100, 1000, &attribution);
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

    fn context(bring_up_until: Option<i64>, depends_on: &[&str]) -> CheckContext {
        CheckContext {
            bring_up_until,
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn bring_up_and_blocked_time_are_not_incidents() {
        // dns is red from 0 to 100 during bring-up, green at 100, fails 500-700 in production.
        // ldap (behind dns, same entity) is red 0-150 (bring-up, first green at 150) and
        // 510-800: blocked while dns fails, its own from 700 to 800.
        // web is in no deployment and behind ldap: red 520-560 is blocked, never its own.
        let incidents = [
            incident("dns", "a", 0, Some(100)),
            incident("dns", "a", 500, Some(700)),
            incident("ldap", "a", 0, Some(150)),
            incident("ldap", "a", 510, Some(800)),
            incident("web", "a", 520, Some(560)),
        ];
        let checks: BTreeMap<String, CheckContext> = [
            ("dns".to_string(), context(Some(100), &[])),
            ("ldap".to_string(), context(Some(150), &["dns"])),
            ("web".to_string(), context(None, &["ldap"])),
        ]
        .into_iter()
        .collect();
        let has_event = |_: &str, entity: &str| entity == "a";
        let attribution = Attribution {
            checks: &checks,
            has_event: &has_event,
        };
        let flaps = [
            ("ldap".to_string(), "a".to_string(), 50),  // bring-up
            ("ldap".to_string(), "a".to_string(), 600), // blocked
            ("ldap".to_string(), "a".to_string(), 750), // its own
        ];
        let report = attributed(&incidents, &flaps, 0, 1_000, &attribution);
        let dns = &report["dns"];
        assert_eq!(
            (dns.incidents, dns.failing_ms, dns.mttr_ms),
            (1, 200, Some(200))
        );
        let ldap = &report["ldap"];
        assert_eq!(
            (ldap.incidents, ldap.failing_ms, ldap.mttr_ms, ldap.flaps),
            (1, 100, Some(100), 1),
            "its own from 700, when dns recovered"
        );
        assert!(!report.contains_key("web"), "only ever blocked: {report:?}");
        let top = top_offenders(&report, 10);
        assert_eq!(top[0].0, "dns");
    }

    #[test]
    fn a_check_never_green_in_its_deployment_is_still_coming_up() {
        let incidents = [incident("vault", "a", 0, None)];
        let checks: BTreeMap<String, CheckContext> =
            [("vault".to_string(), context(Some(i64::MAX), &[]))]
                .into_iter()
                .collect();
        let has_event = |_: &str, _: &str| true;
        let attribution = Attribution {
            checks: &checks,
            has_event: &has_event,
        };
        assert!(attributed(&incidents, &[], 0, 1_000, &attribution).is_empty());
        // Outside any deployment, the same red is an incident, still open.
        let checks: BTreeMap<String, CheckContext> = [("vault".to_string(), context(None, &[]))]
            .into_iter()
            .collect();
        let attribution = Attribution {
            checks: &checks,
            has_event: &has_event,
        };
        let report = attributed(&incidents, &[], 0, 1_000, &attribution);
        assert_eq!(
            (
                report["vault"].incidents,
                report["vault"].failing_ms,
                report["vault"].open
            ),
            (1, 1_000, 1)
        );
    }

    #[test]
    fn a_dependency_elsewhere_blocks_while_any_of_its_entities_fails() {
        // db runs on the server only; api on web1 is blocked while db fails there.
        let incidents = [
            incident("db", "server", 100, Some(200)),
            incident("api", "web1", 100, Some(300)),
        ];
        let checks: BTreeMap<String, CheckContext> = [
            ("db".to_string(), context(None, &[])),
            ("api".to_string(), context(None, &["db"])),
        ]
        .into_iter()
        .collect();
        let has_event = |check: &str, entity: &str| (check == "db") == (entity == "server");
        let attribution = Attribution {
            checks: &checks,
            has_event: &has_event,
        };
        let report = attributed(&incidents, &[], 0, 1_000, &attribution);
        assert_eq!(
            (report["api"].incidents, report["api"].failing_ms),
            (1, 100)
        );
        assert_eq!(report["db"].failing_ms, 100);
    }

    #[test]
    fn spans_union_and_subtract() {
        assert_eq!(
            union(vec![(5, 9), (0, 3), (2, 4), (9, 9)]),
            [(0, 4), (5, 9)]
        );
        assert_eq!(subtract((0, 10), &vec![(2, 3), (5, 12)]), [(0, 2), (3, 5)]);
        assert_eq!(subtract((0, 10), &vec![]), [(0, 10)]);
        assert!(subtract((4, 6), &vec![(0, 10)]).is_empty());
    }
}
