//! The stored body of an event: a [`CachedEvent`] as JSON, every field at one level.
//!
//! Every fold writes the bodies of the events it moved, and on a store shared by several
//! servers every other server reads and decodes them from the change feed, so the body's size
//! is paid in the database's log, its pages, the feed's transfer and both codecs. The history
//! was two thirds of it as `{"status", "executed_at"}` objects; it is stored as
//! `history_steps`, `[exit code, ms]` pairs whose first ms is a time since the epoch and each
//! later one the step from the one before (`[[0,1700000000000],[2,354]]`), a sixth of that.
//! Bodies written before (with `history`) still decode, so a store and its checkpoints carry
//! over; a server older than this one cannot read the new bodies, so a cluster is upgraded
//! whole (docs/cluster.md).

use mdd_core::event::{Event, HistoryEntry};
use mdd_core::perfdata::PerfDatum;
use mdd_core::status::Status;
use serde::de::Error as _;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::CachedEvent;

impl Serialize for CachedEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = &self.event;
        BodyRef {
            check: &event.check,
            entity: &event.entity,
            status: event.status,
            last_result_id: &event.last_result_id,
            executed_at: event.executed_at,
            occurrences: event.occurrences,
            occurrences_watermark: event.occurrences_watermark,
            history_steps: Steps(&event.history),
            total_state_change: event.total_state_change,
            flapping: event.flapping,
            first_seen: event.first_seen,
            last_ok: event.last_ok,
            last_state_change: event.last_state_change,
            summary: &self.summary,
            long_output: &self.long_output,
            perfdata: &self.perfdata,
            duration_ms: self.duration_ms,
            output: &self.output,
            fresh_since: self.fresh_since,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CachedEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<CachedEvent, D::Error> {
        let body = Body::deserialize(deserializer)?;
        let history = match (body.history_steps, body.history) {
            (Some(StoredSteps(history)), _) | (None, Some(history)) => history,
            (None, None) => return Err(D::Error::missing_field("history_steps")),
        };
        Ok(CachedEvent {
            event: Event {
                check: body.check,
                entity: body.entity,
                status: body.status,
                last_result_id: body.last_result_id,
                executed_at: body.executed_at,
                occurrences: body.occurrences,
                occurrences_watermark: body.occurrences_watermark,
                history,
                total_state_change: body.total_state_change,
                flapping: body.flapping,
                first_seen: body.first_seen,
                last_ok: body.last_ok,
                last_state_change: body.last_state_change,
            },
            summary: body.summary,
            long_output: body.long_output,
            perfdata: body.perfdata,
            duration_ms: body.duration_ms,
            output: body.output,
            fresh_since: body.fresh_since,
            version: 0,
        })
    }
}

/// The body as it is written, borrowing from the event.
#[derive(Serialize)]
struct BodyRef<'a> {
    check: &'a str,
    entity: &'a str,
    status: Status,
    last_result_id: &'a str,
    executed_at: i64,
    occurrences: u32,
    occurrences_watermark: u32,
    history_steps: Steps<'a>,
    total_state_change: u32,
    flapping: bool,
    first_seen: i64,
    last_ok: Option<i64>,
    last_state_change: Option<i64>,
    summary: &'a str,
    long_output: &'a str,
    perfdata: &'a [PerfDatum],
    duration_ms: f64,
    #[serde(skip_serializing_if = "str::is_empty")]
    output: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fresh_since: Option<i64>,
}

/// The body as it is read, this server's and older ones' (fields it does not name are
/// ignored, as a newer server's would be).
#[derive(Deserialize)]
struct Body {
    check: String,
    entity: String,
    status: Status,
    last_result_id: String,
    executed_at: i64,
    occurrences: u32,
    occurrences_watermark: u32,
    #[serde(default)]
    history_steps: Option<StoredSteps>,
    /// Bodies written before `history_steps`.
    #[serde(default)]
    history: Option<Vec<HistoryEntry>>,
    total_state_change: u32,
    flapping: bool,
    first_seen: i64,
    last_ok: Option<i64>,
    last_state_change: Option<i64>,
    summary: String,
    #[serde(default)]
    long_output: String,
    #[serde(default)]
    perfdata: Vec<PerfDatum>,
    duration_ms: f64,
    #[serde(default)]
    output: String,
    #[serde(default)]
    fresh_since: Option<i64>,
}

/// A history written as steps.
struct Steps<'a>(&'a [HistoryEntry]);

impl Serialize for Steps<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        let mut previous = 0i64;
        for entry in self.0 {
            // Wrapping both ways: any times come back as they went.
            seq.serialize_element(&(
                entry.status.exit_code(),
                entry.executed_at.wrapping_sub(previous),
            ))?;
            previous = entry.executed_at;
        }
        seq.end()
    }
}

/// A history read from steps.
struct StoredSteps(Vec<HistoryEntry>);

impl<'de> Deserialize<'de> for StoredSteps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StoredSteps, D::Error> {
        let steps = Vec::<(i32, i64)>::deserialize(deserializer)?;
        let mut at = 0i64;
        let history = steps
            .into_iter()
            .map(|(code, step)| {
                if !(0..=3).contains(&code) {
                    return Err(D::Error::custom(format!(
                        "history_steps: {code} is not an exit code (0-3)"
                    )));
                }
                at = at.wrapping_add(step);
                Ok(HistoryEntry {
                    status: Status::from_exit_code(Some(code)),
                    executed_at: at,
                })
            })
            .collect::<Result<Vec<_>, D::Error>>()?;
        Ok(StoredSteps(history))
    }
}

#[cfg(test)]
mod tests {
    use crate::CachedEvent;

    /// A body as this server writes it, with every field the event has.
    fn stored_body() -> serde_json::Value {
        serde_json::json!({
            "check": "db", "entity": "web-1", "status": "critical", "last_result_id": "r-9",
            "executed_at": 1_700_000_000_500i64, "occurrences": 3, "occurrences_watermark": 4,
            "history_steps": [[0, 1_700_000_000_000i64], [3, 250], [2, 250]],
            "total_state_change": 12, "flapping": true, "first_seen": 1_600_000_000_000i64,
            "last_ok": 1_700_000_000_000i64, "last_state_change": null,
            "summary": "CRITICAL - down", "long_output": "line 2",
            "perfdata": [{"label": "time", "value": 0.5, "uom": "s",
                          "warn": {"start": 0.0, "end": 1.0, "inside": false},
                          "crit": {"start": null, "end": 2.0, "inside": true}, "min": 0.0}],
            "duration_ms": 12.5, "output": "CRITICAL - down | time=0.5s;1;2;0",
            "fresh_since": 1_650_000_000_000i64
        })
    }

    /// The same event as a server before `history_steps` wrote it.
    fn older_body() -> serde_json::Value {
        let mut body = stored_body();
        let fields = body.as_object_mut().expect("an object");
        fields.remove("history_steps");
        fields.insert(
            "history".into(),
            serde_json::json!([{"status": "ok", "executed_at": 1_700_000_000_000i64},
                               {"status": "unknown", "executed_at": 1_700_000_000_250i64},
                               {"status": "critical", "executed_at": 1_700_000_000_500i64}]),
        );
        body
    }

    #[test]
    fn an_event_body_decodes_to_what_it_was_encoded_from() {
        let decoded: CachedEvent =
            serde_json::from_value(stored_body()).expect("a stored body decodes");
        assert_eq!(decoded.event.occurrences_watermark, 4);
        let history: Vec<(mdd_core::Status, i64)> = decoded
            .event
            .history
            .iter()
            .map(|h| (h.status, h.executed_at))
            .collect();
        assert_eq!(
            history,
            [
                (mdd_core::Status::Ok, 1_700_000_000_000),
                (mdd_core::Status::Unknown, 1_700_000_000_250),
                (mdd_core::Status::Critical, 1_700_000_000_500)
            ]
        );
        assert_eq!(decoded.event.last_ok, Some(1_700_000_000_000));
        assert_eq!(decoded.event.last_state_change, None);
        assert_eq!(decoded.perfdata[0].label, "time");
        assert_eq!(decoded.fresh_since, Some(1_650_000_000_000));
        let encoded = serde_json::to_value(&decoded).expect("encodes");
        assert_eq!(encoded, stored_body(), "encoding gives the body back");
        let again: CachedEvent = serde_json::from_value(encoded).expect("decodes again");
        assert_eq!(again, decoded);
    }

    #[test]
    fn a_body_with_the_history_as_objects_decodes_to_the_same_event() {
        let older: CachedEvent = serde_json::from_value(older_body()).expect("decodes");
        let newer: CachedEvent = serde_json::from_value(stored_body()).expect("decodes");
        assert_eq!(older, newer);
        // And is written in steps from then on.
        let encoded = serde_json::to_value(&older).expect("encodes");
        assert!(encoded.get("history").is_none());
        assert_eq!(encoded, stored_body());
    }

    #[test]
    fn steps_give_back_any_times_even_far_apart_or_backwards() {
        let mut event: CachedEvent = serde_json::from_value(stored_body()).expect("decodes");
        for (entry, at) in event.event.history.iter_mut().zip([i64::MAX, i64::MIN, -5]) {
            entry.executed_at = at;
        }
        let text = serde_json::to_string(&event).expect("encodes");
        let back: CachedEvent = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, event);
    }

    #[test]
    fn the_history_is_a_fraction_of_what_it_was() {
        let mut event: CachedEvent = serde_json::from_value(stored_body()).expect("decodes");
        event.event.history = (0..21)
            .map(|n| mdd_core::event::HistoryEntry {
                status: if n % 7 == 0 {
                    mdd_core::Status::Critical
                } else {
                    mdd_core::Status::Ok
                },
                executed_at: 1_796_202_579_312 + n * 367,
            })
            .collect();
        let steps = serde_json::to_string(&event).expect("encodes").len();
        let mut older = serde_json::to_value(&event).expect("encodes");
        let fields = older.as_object_mut().expect("an object");
        fields.remove("history_steps");
        fields.insert(
            "history".into(),
            serde_json::to_value(&event.event.history).expect("encodes"),
        );
        let objects = serde_json::to_string(&older).expect("encodes").len();
        assert!(steps * 2 < objects, "{steps} bytes against {objects}");
    }

    #[test]
    fn an_event_body_from_an_older_or_newer_server_decodes() {
        // Older: none of the fields added since; newer: one this server does not know.
        let mut body = older_body();
        let fields = body.as_object_mut().expect("an object");
        for added in ["long_output", "perfdata", "output", "fresh_since"] {
            fields.remove(added);
        }
        fields.insert("added_later".into(), serde_json::json!({"any": [1, 2]}));
        let decoded: CachedEvent = serde_json::from_value(body).expect("decodes without them");
        assert!(decoded.output.is_empty() && decoded.perfdata.is_empty());
        assert_eq!(decoded.fresh_since, None);
        // A field the event needs is still needed, and named.
        let mut body = stored_body();
        body.as_object_mut()
            .expect("an object")
            .remove("history_steps");
        let error = serde_json::from_value::<CachedEvent>(body).expect_err("no history");
        assert!(error.to_string().contains("history_steps"), "{error}");
        let mut body = stored_body();
        body["history_steps"] = serde_json::json!([[7, 1]]);
        let error = serde_json::from_value::<CachedEvent>(body).expect_err("not a status");
        assert!(error.to_string().contains("exit code"), "{error}");
    }
}
