//! Where mdd keeps what it knows: results, events, spec revisions, entities and tokens.
//!
//! An embedded SQLite file in the data directory (WAL, `synchronous=FULL`, versioned
//! migrations), so `mdd server` needs zero set-up and an acknowledged result survives a crash.
//! Writes come from one writer at a time and arrive in groups (one transaction, one fsync per
//! group) so that durability does not cost throughput.
//!
//! Owns SQL and nothing else: it does not decide what a result means (that is the core's event
//! state machine, driven by the server) and knows nothing of HTTP.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use mdd_core::Status;
use mdd_core::perfdata::PerfDatum;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, QueryBuilder, Row, SqlitePool};

/// The database file inside the data directory.
pub const DB_FILE: &str = "mdd.db";

/// SQLite allows 32,766 bound parameters per statement; results have 12 columns.
const RESULT_ROWS_PER_INSERT: usize = 2_000;
/// On PostgreSQL, how far (ms) an entity's `last_seen` may lag its newest result before a
/// group moves it (see `Store::upsert_entities_pg`).
const LAST_SEEN_STEP: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The inner errors are part of the message, not error sources, so that a chain printed
    // with `{:#}` says it once.
    #[error("cannot use data directory {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the disk holding {path} is full: {detail}")]
    DiskFull { path: PathBuf, detail: String },
    #[error("{path} is read-only: {detail}")]
    ReadOnly { path: PathBuf, detail: String },
    #[error("database {path}: {error}")]
    Database { path: PathBuf, error: sqlx::Error },
    #[error("cannot upgrade database {path}: {error}")]
    Migrate {
        path: PathBuf,
        error: sqlx::migrate::MigrateError,
    },
    #[error("database {path} holds data mdd cannot read: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "data directory {path} is in use by {holder}; two servers on one directory would diverge. Stop it, or give this one another --data"
    )]
    InUse { path: PathBuf, holder: String },
}

impl StoreError {
    /// The store cannot take more writes until an operator acts (disk full, read-only).
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull { .. } | StoreError::ReadOnly { .. }
        )
    }
}

/// One result as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    pub id: String,
    pub check: String,
    pub entity: String,
    pub status: Status,
    pub summary: String,
    #[serde(default)]
    pub long_output: String,
    #[serde(default)]
    pub perfdata: Vec<PerfDatum>,
    pub duration_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// ms since the epoch, by the producer's clock.
    pub executed_at: i64,
    /// ms since the epoch, by the server's clock.
    pub received_at: i64,
    /// What the plugin printed, as it printed it (summary, long output and perfdata are
    /// parsed from it).
    #[serde(default)]
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRecord {
    pub name: String,
    pub first_seen: i64,
    pub last_seen: i64,
    /// What the entity's agent said of itself in its last keepalive (JSON), if it has one.
    pub info: Option<String>,
    pub last_keepalive: Option<i64>,
}

/// One file of an applied spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecFile {
    pub file: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecRevision {
    pub revision: i64,
    pub applied_at: i64,
    pub files: Vec<SpecFile>,
}

/// What an apply on top of a given revision came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecApplied {
    /// Stored as this revision.
    Stored(i64),
    /// Another apply (through another server) stored a newer revision first: nothing was
    /// stored, and the caller re-bases on `head` or gives up.
    Moved { head: i64 },
}

/// A dashboard session as stored: by the hash of its cookie, never the cookie itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id_hash: Vec<u8>,
    pub token_id: String,
    pub role: String,
    pub name: String,
    pub csrf: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRecord {
    pub id: String,
    pub role: String,
    pub name: String,
    pub created_at: i64,
    /// The only entity an agent token may report for, when it is bound to one.
    pub entity: Option<String>,
    pub last_used_at: Option<i64>,
    /// After this it is refused.
    pub expires_at: Option<i64>,
    /// Enrollment tokens: how many more agents may enroll with it (None: any number).
    pub uses_left: Option<i64>,
    /// Enrollment tokens: what enrolled agents get (JSON), as the server wrote it.
    pub grants: Option<String>,
}

/// The latest state of a (check, entity) pair as stored: the fields queries filter on, and the
/// server's full event as an opaque JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub check: String,
    pub entity: String,
    pub status: Status,
    pub executed_at: i64,
    pub last_result_id: String,
    pub body: String,
}

/// A stored event with its version (one up with every fold that wrote it).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedEvent {
    pub row: EventRow,
    pub version: i64,
    /// The caller said it holds this version already: the body is left out (empty).
    pub known: bool,
}

/// What a fold hands back to be written: events, incident changes, and whatever the caller
/// wants back once committed.
#[derive(Debug)]
pub struct FoldOutput<T> {
    pub events: Vec<EventRow>,
    pub incidents: Vec<mdd_core::incident::IncidentChange>,
    /// Notices for the notifier (opaque bodies), kept until the notifier takes them.
    pub notices: Vec<String>,
    pub value: T,
}

/// A committed fold: the new result ids, the version each written event has now, and the
/// caller's value.
#[derive(Debug)]
pub struct Folded<T> {
    pub inserted: HashSet<String>,
    pub versions: HashMap<(String, String), i64>,
    pub value: T,
}

/// Everything one group commit writes, in one transaction.
#[derive(Debug, Default)]
pub struct Commit<'a> {
    pub results: &'a [&'a StoredResult],
    /// (name, seen at) for every entity a result named.
    pub entities: &'a [(&'a str, i64)],
}

/// The stored events and the last result (by rowid) they include.
#[derive(Debug, Default)]
pub struct EventCheckpoint {
    pub events: Vec<EventRow>,
    pub through_rowid: i64,
}

/// SQLite allows 32,766 bound parameters per statement; event rows have 6 columns.
const EVENT_ROWS_PER_UPSERT: usize = 5_000;

/// One attempt to deliver a notification, as the delivery log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub handler: String,
    /// Unix milliseconds.
    pub at: i64,
    pub check: String,
    pub entity: String,
    pub kind: String,
    pub attempt: u32,
    pub outcome: String,
    pub latency_ms: f64,
    pub output: String,
}

/// A handler's record of an incident it was told about and not yet told is resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifiedRow {
    pub handler: String,
    pub check: String,
    pub entity: String,
    pub status: Status,
    pub notified_at: i64,
}

/// A delivery decided and not yet finished: kept until it is delivered or given up, so a
/// server that starts (or takes over) after a crash delivers it, with the same id.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    /// The notification's id (`webhook-id`): with the handler, the row's key.
    pub id: String,
    pub handler: String,
    pub kind: String,
    pub check: String,
    pub entity: String,
    pub body: Vec<u8>,
    pub decided_at: i64,
}

/// What the notifier wrote since its last write, stored in one transaction: so a record of
/// what a handler was told is never stored without the delivery that tells it.
#[derive(Debug, Default)]
pub struct NotificationChanges<'a> {
    /// New entries of the delivery log.
    pub deliveries: &'a [DeliveryRow],
    /// Incident records upserted.
    pub notified: &'a [NotifiedRow],
    /// Incident records deleted: (handler, check, entity).
    pub resolved: &'a [(String, String, String)],
    /// Deliveries decided.
    pub due: &'a [DueDelivery],
    /// Deliveries finished: (id, handler).
    pub done: &'a [(String, String)],
}

impl NotificationChanges<'_> {
    fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
            && self.notified.is_empty()
            && self.resolved.is_empty()
            && self.due.is_empty()
            && self.done.is_empty()
    }
}

/// The database behind a store: the embedded SQLite file, or a PostgreSQL server.
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's pool, whichever kind it is: the same code is
/// compiled once per database, so each query is typed for the one it runs on.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// The first two columns of one row, as a pair.
macro_rules! decode_pairs_row {
    ($store:expr, $row:expr) => {
        (|| -> Result<_, StoreError> {
            Ok((
                $row.try_get(0).map_err(|e| $store.err(e))?,
                $row.try_get(1).map_err(|e| $store.err(e))?,
            ))
        })()
    };
}

/// The first two columns of every row, as a pair each.
macro_rules! decode_pairs {
    ($store:expr, $rows:expr) => {
        $rows
            .iter()
            .map(|row| decode_pairs_row!($store, row))
            .collect()
    };
}

/// Inserts results in a transaction, leaving out the ids already stored; the new ids. In
/// the order of their ids: two servers storing the same ids at once (a retry sent to both)
/// then wait for each other in one order, never in a circle.
macro_rules! insert_results {
    ($store:expr, $tx:ident, $results:expr) => {{
        let mut inserted = HashSet::with_capacity($results.len());
        let mut by_id: Vec<&StoredResult> = $results.to_vec();
        by_id.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        for chunk in by_id.chunks(RESULT_ROWS_PER_INSERT) {
            let mut query = QueryBuilder::new(
                "INSERT INTO results (id, check_name, entity, status, summary, long_output, perfdata, duration_ms, exit_code, executed_at, received_at, output) ",
            );
            let mut encode_error = None;
            query.push_values(chunk, |mut row, r| {
                let perfdata = serde_json::to_string(&r.perfdata).unwrap_or_else(|e| {
                    encode_error = Some(e.to_string());
                    "[]".into()
                });
                row.push_bind(&r.id)
                    .push_bind(&r.check)
                    .push_bind(&r.entity)
                    .push_bind(r.status.exit_code())
                    .push_bind(&r.summary)
                    .push_bind(&r.long_output)
                    .push_bind(perfdata)
                    .push_bind(r.duration_ms)
                    .push_bind(r.exit_code)
                    .push_bind(r.executed_at)
                    .push_bind(r.received_at)
                    .push_bind(&r.output);
            });
            if let Some(detail) = encode_error {
                return Err(StoreError::Corrupt {
                    path: $store.path.clone(),
                    detail: format!("cannot encode perfdata: {detail}"),
                });
            }
            query.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
            let rows = query
                .build()
                .fetch_all(&mut *$tx)
                .await
                .map_err(|e| $store.err(e))?;
            for row in rows {
                inserted.insert(row.try_get::<String, _>(0).map_err(|e| $store.err(e))?);
            }
        }
        inserted
    }};
}

/// Records when entities were seen, in a transaction, in the order of their names: every
/// group of every server takes the entities' row locks in one order, so two never deadlock.
macro_rules! upsert_entities {
    ($store:expr, $tx:ident, $entities:expr) => {
        let mut by_name: Vec<&(&str, i64)> = $entities.iter().collect();
        by_name.sort_unstable();
        for (name, seen) in by_name {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO entities (name, first_seen, last_seen) VALUES ($1, $2, $2)
                 ON CONFLICT (name) DO UPDATE SET last_seen = {}(entities.last_seen, excluded.last_seen)",
                $store.greatest()
            )))
            .bind(name)
            .bind(seen)
            .execute(&mut *$tx)
            .await
            .map_err(|e| $store.err(e))?;
        }
    };
}

/// Records incident changes in a transaction; safe to repeat.
macro_rules! record_incidents_in {
    ($store:expr, $tx:ident, $changes:expr) => {
        for change in $changes {
            use mdd_core::incident::IncidentChange;
            let query = match change {
                IncidentChange::Opened { check, entity, at } => sqlx::query(
                    "INSERT INTO incidents (check_name, entity, started_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(check)
                .bind(entity)
                .bind(at),
                IncidentChange::Closed { check, entity, at } => sqlx::query(
                    "UPDATE incidents SET ended_at = $3
                     WHERE check_name = $1 AND entity = $2 AND ended_at IS NULL AND started_at <= $3",
                )
                .bind(check)
                .bind(entity)
                .bind(at),
                IncidentChange::Flapped { check, entity, at } => sqlx::query(
                    "INSERT INTO flaps (check_name, entity, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(check)
                .bind(entity)
                .bind(at),
            };
            query.execute(&mut *$tx).await.map_err(|e| $store.err(e))?;
        }
    };
}

/// A stored result from a row of `SELECT id, check_name, entity, status, summary, long_output,
/// perfdata, duration_ms, exit_code, executed_at, received_at, output`, on either database.
macro_rules! decode_result {
    ($store:expr, $row:expr) => {{
        let row = $row;
        let get = |e: sqlx::Error| $store.err(e);
        let decoded: Result<StoredResult, StoreError> = (|| {
            let perfdata: String = row.try_get(6).map_err(get)?;
            Ok(StoredResult {
                id: row.try_get(0).map_err(get)?,
                check: row.try_get(1).map_err(get)?,
                entity: row.try_get(2).map_err(get)?,
                status: Status::from_exit_code(Some(row.try_get(3).map_err(get)?)),
                summary: row.try_get(4).map_err(get)?,
                long_output: row.try_get(5).map_err(get)?,
                perfdata: serde_json::from_str(&perfdata).map_err(|e| StoreError::Corrupt {
                    path: $store.path.clone(),
                    detail: format!("perfdata of a result: {e}"),
                })?,
                duration_ms: row.try_get(7).map_err(get)?,
                exit_code: row.try_get(8).map_err(get)?,
                executed_at: row.try_get(9).map_err(get)?,
                received_at: row.try_get(10).map_err(get)?,
                output: row.try_get(11).map_err(get)?,
            })
        })();
        decoded
    }};
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// The SQLite file, or the PostgreSQL server's URL (without a password), for messages.
    path: PathBuf,
    /// Held (locked) for as long as any handle on the store lives: a second server on the
    /// same directory would silently diverge from the first. (None on PostgreSQL.)
    lock: Option<std::sync::Arc<File>>,

    /// Taken by every write, in turn. SQLite has one writer; left to its busy handler, a
    /// writer retrying with back-off loses to one taking the lock again at once (a group
    /// commit waited 300 ms behind a checkpoint's transactions). A queue is fair.
    writes: std::sync::Arc<tokio::sync::Mutex<()>>,

    /// Whose folds this handle writes (`changed_by` on PostgreSQL): its change feed leaves
    /// them out, the writer having them already. Unique per handle unless `writing_as` names it.
    writer: std::sync::Arc<str>,

    /// How compare and swap has fared lately (see `SwapOdds`).
    swaps: std::sync::Arc<SwapOdds>,
}

/// Dead rows a churned table may hold before `vacuum_churned` vacuums it (or a quarter of its
/// live rows, if that is more).
const VACUUM_AFTER_DEAD_ROWS: i64 = 2_000;

/// The tables folds churn, with the statement that vacuums each (outside any transaction:
/// VACUUM refuses to run in one, so they go by the simple protocol, as constants).
const CHURNED_TABLES: [(&str, &str); 3] = [
    ("events", "VACUUM (SKIP_LOCKED) events"),
    ("incidents", "VACUUM (SKIP_LOCKED) incidents"),
    ("notices", "VACUUM (SKIP_LOCKED) notices"),
];

/// The events with their versions, as `Store::versioned_event` decodes them; a statement
/// goes on with a join or a condition.
const VERSIONED_EVENTS: &str =
    "SELECT check_name, entity, status, executed_at, last_result_id, body, version FROM events";

/// The change feed's condition: the rows written by the transactions from `$1` on or among
/// `$2` (a `FeedPosition`), by another handle than `$3`, placeholders left out.
const CHANGED_SINCE: &str = "WHERE (changed_xid >= $1 OR changed_xid = ANY($2))
     AND changed_by <> $3 AND body <> ''";

/// The events of the pairs `$1`, `$2` with the version of each the caller holds, `$3` (-1:
/// none), as `Store::versioned_event` decodes them and whether that version is the stored one,
/// in which case the body is left out; placeholders (no body yet) are left out. A statement
/// may go on with an order and a lock.
const HELD_EVENTS: &str = "SELECT check_name, entity, status, executed_at, last_result_id,
         CASE WHEN version = k.v THEN '' ELSE body END, version, version = k.v
     FROM events JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS k(c, e, v)
         ON check_name = k.c AND entity = k.e
     WHERE body <> ''";

/// A name no other store handle has: for handles nobody named.
fn fresh_writer() -> std::sync::Arc<str> {
    static HANDLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let handle = HANDLES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{handle}-{nanos}", std::process::id()).into()
}

/// Where a change feed of the events stands: every transaction that wrote an event and had
/// ended when it was read has been read. Taken from a snapshot: the transactions from
/// `next_xid` on had not begun, those in `running` had not ended; the next read takes the
/// rows those wrote and nothing else, so no row is read twice and none is skipped, however
/// late a transaction commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedPosition {
    next_xid: i64,
    running: Vec<i64>,
}

/// The (check, entity) pairs of the results whose ids are in `ids`, in key order: the order
/// every fold locks events in.
fn new_pairs<'a>(
    results: &[&'a StoredResult],
    ids: &HashSet<String>,
) -> std::collections::BTreeSet<(&'a str, &'a str)> {
    results
        .iter()
        .filter(|r| ids.contains(&r.id))
        .map(|r| (r.check.as_str(), r.entity.as_str()))
        .collect()
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Results as the twelve arrays a PostgreSQL insert unnests (`$1` to `$12`), in the order of
/// their ids.
struct ResultColumns<'a> {
    ids: Vec<&'a str>,
    checks: Vec<&'a str>,
    entities: Vec<&'a str>,
    statuses: Vec<i32>,
    summaries: Vec<&'a str>,
    long_outputs: Vec<&'a str>,
    perfdata: Vec<String>,
    durations: Vec<f64>,
    exit_codes: Vec<Option<i32>>,
    executed: Vec<i64>,
    received: Vec<i64>,
    outputs: Vec<&'a str>,
}

impl<'a> ResultColumns<'a> {
    fn of(path: &Path, results: &[&'a StoredResult]) -> Result<ResultColumns<'a>, StoreError> {
        let mut by_id: Vec<&StoredResult> = results.to_vec();
        by_id.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut perfdata = Vec::with_capacity(by_id.len());
        for r in &by_id {
            perfdata.push(
                serde_json::to_string(&r.perfdata).map_err(|e| StoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!("cannot encode perfdata: {e}"),
                })?,
            );
        }
        let text = |f: fn(&'a StoredResult) -> &'a str| -> Vec<&'a str> {
            by_id.iter().map(|r| f(r)).collect()
        };
        Ok(ResultColumns {
            ids: text(|r| &r.id),
            checks: text(|r| &r.check),
            entities: text(|r| &r.entity),
            statuses: by_id.iter().map(|r| r.status.exit_code()).collect(),
            summaries: text(|r| &r.summary),
            long_outputs: text(|r| &r.long_output),
            perfdata,
            durations: by_id.iter().map(|r| r.duration_ms).collect(),
            exit_codes: by_id.iter().map(|r| r.exit_code).collect(),
            executed: by_id.iter().map(|r| r.executed_at).collect(),
            received: by_id.iter().map(|r| r.received_at).collect(),
            outputs: text(|r| &r.output),
        })
    }

    fn bind<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.checks)
            .bind(&self.entities)
            .bind(&self.statuses)
            .bind(&self.summaries)
            .bind(&self.long_outputs)
            .bind(&self.perfdata)
            .bind(&self.durations)
            .bind(&self.exit_codes)
            .bind(&self.executed)
            .bind(&self.received)
            .bind(&self.outputs)
    }
}

/// Event rows as the six arrays a PostgreSQL update unnests, in their order.
struct EventColumns<'a> {
    checks: Vec<&'a str>,
    entities: Vec<&'a str>,
    statuses: Vec<i32>,
    executed: Vec<i64>,
    last_results: Vec<&'a str>,
    bodies: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    fn of(events: &'a [EventRow]) -> EventColumns<'a> {
        EventColumns {
            checks: events.iter().map(|e| e.check.as_str()).collect(),
            entities: events.iter().map(|e| e.entity.as_str()).collect(),
            statuses: events.iter().map(|e| e.status.exit_code()).collect(),
            executed: events.iter().map(|e| e.executed_at).collect(),
            last_results: events.iter().map(|e| e.last_result_id.as_str()).collect(),
            bodies: events.iter().map(|e| e.body.as_str()).collect(),
        }
    }

    fn bind<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.checks)
            .bind(&self.entities)
            .bind(&self.statuses)
            .bind(&self.executed)
            .bind(&self.last_results)
            .bind(&self.bodies)
    }
}

/// Whether a fold tries compare and swap: while the events a server holds are the stored ones
/// (each server folds events of its own, as agents spread over servers do) nearly every swap
/// is written; while other servers fold the same events, most find them moved, and a miss
/// costs a fold and a transaction for nothing, holding locks others wait on. So a handle
/// tries while most of its recent swaps were written (a moving average), and otherwise one
/// group in 16, to notice when they would be again.
#[derive(Debug)]
struct SwapOdds {
    /// The share of recent swaps written, in thousandths.
    written: std::sync::atomic::AtomicU32,
    groups: std::sync::atomic::AtomicU32,
}

impl Default for SwapOdds {
    fn default() -> Self {
        SwapOdds {
            written: std::sync::atomic::AtomicU32::new(1_000),
            groups: std::sync::atomic::AtomicU32::new(0),
        }
    }
}

impl SwapOdds {
    fn worth_trying(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.written.load(Relaxed) >= 500 || self.groups.fetch_add(1, Relaxed).is_multiple_of(16)
    }

    fn written(&self, written: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        // A server's writer folds one group at a time; a lost update of the average (another
        // caller on the same handle) is harmless.
        let share = self.written.load(Relaxed);
        let now = share - share / 8 + if written { 125 } else { 0 };
        self.written.store(now.min(1_000), Relaxed);
    }
}

/// A group folded from the events its caller holds, before its transaction: every id taken
/// as new, each pair with the version it was folded from.
struct Guessed<T> {
    ids: HashSet<String>,
    keys: Vec<((String, String), i64)>,
    output: FoldOutput<T>,
}

impl Store {
    /// Names whose folds this handle writes: a server gives its own name, so its change feed
    /// leaves out what it wrote (and had in memory already).
    pub fn writing_as(mut self, name: &str) -> Store {
        self.writer = name.into();
        self
    }

    async fn write_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// Opens (creating if needed) the store in `dir` and brings its schema up to date.
    pub async fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|error| StoreError::DataDir {
            path: dir.to_path_buf(),
            error,
        })?;
        check_writable(dir)?;
        let lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        make_private(dir, &path)?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|error| StoreError::Database {
                path: path.clone(),
                error,
            })?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it returns, so an acknowledged result survives
            // a power cut, not only a crash. Group commits keep the fsyncs few.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // 64 MiB of page cache per connection: result inserts touch several B-trees at
            // random places (ids, checks), and a miss costs a read.
            .pragma("cache_size", "-65536")
            .foreign_keys(true)
            // sqlx logs a slow statement with its whole text: a group insert is megabytes of
            // placeholders. Slowness shows in `mdd_ingest_commit_seconds` instead.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| classify(&path, source))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|error| StoreError::Migrate {
                path: path.clone(),
                error,
            })?;
        Ok(Store {
            pool: Pool::Sqlite(pool),
            path,
            lock: Some(std::sync::Arc::new(lock)),
            writes: std::sync::Arc::default(),
            writer: fresh_writer(),
            swaps: std::sync::Arc::default(),
        })
    }

    /// Connects to a PostgreSQL server (`postgres://user@host/db`, or a unix socket:
    /// `postgres:///db?host=/run/postgresql`) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let shown = PathBuf::from(redact(url));
        let options = PgConnectOptions::from_str(url)
            .map_err(|error| StoreError::Database {
                path: shown.clone(),
                error,
            })?
            .application_name("mdd")
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|error| StoreError::Database {
                path: shown.clone(),
                error,
            })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|error| StoreError::Migrate {
                path: shown.clone(),
                error,
            })?;
        Ok(Store {
            pool: Pool::Postgres(pool),
            path: shown,
            lock: None,
            writes: std::sync::Arc::default(),
            writer: fresh_writer(),
            swaps: std::sync::Arc::default(),
        })
    }

    fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// The larger of two values, as this database spells it.
    fn greatest(&self) -> &'static str {
        if self.is_postgres() {
            "GREATEST"
        } else {
            "max"
        }
    }

    /// The smaller of two values.
    fn least(&self) -> &'static str {
        if self.is_postgres() { "LEAST" } else { "min" }
    }

    /// The column that numbers results in the order they were stored.
    fn seq(&self) -> &'static str {
        if self.is_postgres() { "seq" } else { "rowid" }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: sqlx::Error) -> StoreError {
        if self.is_postgres() {
            classify_postgres(&self.path, source)
        } else {
            classify(&self.path, source)
        }
    }

    /// Writes a group in one transaction; when this returns Ok, all of it is on disk. Returns
    /// the ids that were new (a result whose id is already stored is left as it was).
    pub async fn commit(&self, commit: Commit<'_>) -> Result<HashSet<String>, StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            let inserted = insert_results!(self, tx, commit.results);
            upsert_entities!(self, tx, commit.entities);
            tx.commit().await.map_err(|e| self.err(e))?;
            Ok(inserted)
        })
    }

    /// Writes a group and folds it into its events in one transaction, for several servers on
    /// one database (PostgreSQL): the results are inserted (the ids already stored are left
    /// out), the events of the new results' (check, entity) pairs are locked in key order (a
    /// placeholder row for a pair that has none, so two servers folding a new pair queue on it
    /// too; see `lock_events_pg`) and handed to `fold` with the new ids; what it returns is
    /// written, each event one version up, with its incident changes, and committed. Ok means
    /// on disk, and the events are exactly what folding every result in commit order gives.
    ///
    /// `known` says which version of a pair's event the caller holds already (in memory): an
    /// event stored at that version is handed over without its body (`known`), so a server
    /// folding the events it wrote last reads and decodes none of them. First (unless that has
    /// been missing lately, see `SwapOdds`), the group is folded from the events the caller
    /// holds, before the transaction, every result taken as new and every pair it holds none
    /// of as new too, and written by compare and swap (`swap_events_pg`): one statement
    /// inserts the results and upserts the events, if every id was new, every event held is
    /// at the version held and none other was made meanwhile; otherwise the transaction is
    /// rolled back and the group goes the locked way. `fold` may thus be called twice; only
    /// the output written is returned.
    pub async fn commit_folding<T, F, K>(
        &self,
        commit: Commit<'_>,
        known: K,
        mut fold: F,
    ) -> Result<Folded<T>, StoreError>
    where
        F: FnMut(&HashSet<String>, Vec<VersionedEvent>) -> Result<FoldOutput<T>, String>,
        K: Fn(&str, &str) -> Option<i64>,
    {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: "folding in the transaction is for PostgreSQL; SQLite checkpoints".into(),
            });
        };
        let mut guess = if self.swaps.worth_trying() {
            self.fold_from_held(commit.results, &known, &mut fold)
        } else {
            None
        };
        // At most three times: after a compare and swap that did not write; when an event
        // the caller holds is found gone (its entity deleted through another server
        // meanwhile), making placeholders.
        let mut caller_holds_rows = true;
        let (mut tx, inserted, checks, entities, stored, mut placeholders) = loop {
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            // Entities, results, events: every fold takes its locks in this order. Entities
            // before the events are locked: every statement between their lock and the commit
            // holds up the folds of other servers that name the same events. (An entity's row
            // is locked at most once a second, see `upsert_entities_pg`.)
            self.upsert_entities_pg(&mut tx, commit.entities).await?;
            let inserted = match guess.take() {
                Some(guessed) => {
                    match self
                        .swap_events_pg(&mut tx, commit.results, &guessed)
                        .await?
                    {
                        Some(versions) => {
                            self.swaps.written(true);
                            self.finish_fold_pg(tx, &guessed.output).await?;
                            return Ok(Folded {
                                inserted: guessed.ids,
                                versions,
                                value: guessed.output.value,
                            });
                        }
                        None => {
                            // Undone whole (results, events written), and the locked way.
                            self.swaps.written(false);
                            tx.rollback().await.map_err(|e| self.err(e))?;
                            continue;
                        }
                    }
                }
                None => self.insert_results_pg(&mut tx, commit.results).await?,
            };
            let keys = new_pairs(commit.results, &inserted);
            let checks: Vec<&str> = keys.iter().map(|(c, _)| *c).collect();
            let entities: Vec<&str> = keys.iter().map(|(_, e)| *e).collect();
            // The version of each pair's event the caller holds (-1: none).
            let held: Vec<i64> = keys
                .iter()
                .map(|(check, entity)| known(check, entity).unwrap_or(-1))
                .collect();
            let existing = caller_holds_rows && held.iter().all(|v| *v >= 0);
            match self
                .lock_events_pg(&mut tx, &checks, &entities, &held, existing)
                .await?
            {
                Some((stored, placeholders)) => {
                    break (tx, inserted, checks, entities, stored, placeholders);
                }
                None => {
                    tx.rollback().await.map_err(|e| self.err(e))?;
                    caller_holds_rows = false;
                }
            }
        };
        let output = fold(&inserted, stored).map_err(|detail| StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        })?;
        let mut versions = HashMap::with_capacity(output.events.len());
        if !output.events.is_empty() {
            let rows = sqlx::query(
                "UPDATE events SET status = u.status, executed_at = u.executed_at,
                     last_result_id = u.last_result_id, body = u.body, version = events.version + 1,
                     changed_xid = pg_current_xact_id()::text::bigint, changed_by = $7
                 FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::text[])
                     AS u(check_name, entity, status, executed_at, last_result_id, body)
                 WHERE events.check_name = u.check_name AND events.entity = u.entity
                 RETURNING events.check_name, events.entity, events.version",
            );
            let rows = EventColumns::of(&output.events)
                .bind(rows)
                .bind(&*self.writer)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            for row in rows {
                let key = (
                    row.try_get::<String, _>(0).map_err(|e| self.err(e))?,
                    row.try_get::<String, _>(1).map_err(|e| self.err(e))?,
                );
                placeholders.remove(&key);
                versions.insert(key, row.try_get::<i64, _>(2).map_err(|e| self.err(e))?);
            }
        }
        if !placeholders.is_empty() {
            // A placeholder nothing was folded into (every result out of order) goes again.
            sqlx::query(
                "DELETE FROM events WHERE body = ''
                 AND (check_name, entity) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            )
            .bind(&checks)
            .bind(&entities)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        self.finish_fold_pg(tx, &output).await?;
        Ok(Folded {
            inserted,
            versions,
            value: output.value,
        })
    }

    /// The group folded before its transaction, every result taken as new, from the events
    /// the caller holds (a pair it holds none of is taken as new too), if the fold writes an
    /// event of every pair (and memory did not move meanwhile: the fold says so by failing).
    fn fold_from_held<T, F, K>(
        &self,
        results: &[&StoredResult],
        known: &K,
        fold: &mut F,
    ) -> Option<Guessed<T>>
    where
        F: FnMut(&HashSet<String>, Vec<VersionedEvent>) -> Result<FoldOutput<T>, String>,
        K: Fn(&str, &str) -> Option<i64>,
    {
        let ids: HashSet<String> = results.iter().map(|r| r.id.clone()).collect();
        let pairs = new_pairs(results, &ids);
        let mut keys = Vec::with_capacity(pairs.len());
        let mut stored = Vec::with_capacity(pairs.len());
        for (check, entity) in &pairs {
            let held = known(check, entity);
            keys.push(((check.to_string(), entity.to_string()), held.unwrap_or(-1)));
            let Some(version) = held else { continue };
            stored.push(VersionedEvent {
                row: EventRow {
                    check: check.to_string(),
                    entity: entity.to_string(),
                    status: Status::Ok,
                    executed_at: 0,
                    last_result_id: String::new(),
                    body: String::new(),
                },
                version,
                known: true,
            });
        }
        let output = fold(&ids, stored).ok()?;
        let written: std::collections::BTreeSet<(&str, &str)> = output
            .events
            .iter()
            .map(|e| (e.check.as_str(), e.entity.as_str()))
            .collect();
        (written.len() == output.events.len() && written == pairs).then_some(Guessed {
            ids,
            keys,
            output,
        })
    }

    /// Inserts the results and writes the events a fold before the transaction gave, in one
    /// statement (the baseline's own shape: an insert of the results, then an upsert of the
    /// events in key order), if every id was new, every event held is still at the version
    /// held and no other has been made meanwhile. Each event's row is locked in key order as
    /// it is written or found moved. Returns the versions written, or None when one was not
    /// written, and the transaction is to be rolled back.
    async fn swap_events_pg<T>(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        results: &[&StoredResult],
        guessed: &Guessed<T>,
    ) -> Result<Option<HashMap<(String, String), i64>>, StoreError> {
        let columns = ResultColumns::of(&self.path, results)?;
        let held: HashMap<(&str, &str), i64> = guessed
            .keys
            .iter()
            .map(|((c, e), v)| ((c.as_str(), e.as_str()), *v))
            .collect();
        // The version each event is written at: one up from the one held; 1 for a new one.
        let versions: Vec<i64> = guessed
            .output
            .events
            .iter()
            .map(|e| {
                held.get(&(e.check.as_str(), e.entity.as_str()))
                    .copied()
                    .unwrap_or(-1)
                    .max(0)
                    + 1
            })
            .collect();
        // The events' insert refers to `ins` in a condition on none of its rows, checked once
        // before it takes any: the results are inserted first, in the order every fold takes
        // its locks. A row that is there already is locked by `ON CONFLICT`, and written only
        // if it is at the version held (a row made meanwhile is never at version 0: a
        // placeholder is gone by its commit).
        let query = sqlx::query(
            "WITH ins AS (
                 INSERT INTO results (id, check_name, entity, status, summary, long_output,
                     perfdata, duration_ms, exit_code, executed_at, received_at, output)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[],
                     $6::text[], $7::text[], $8::float8[], $9::int[], $10::bigint[],
                     $11::bigint[], $12::text[])
                 ON CONFLICT (id) DO NOTHING RETURNING id)
             INSERT INTO events (check_name, entity, status, executed_at, last_result_id, body,
                 version, changed_xid, changed_by)
             SELECT u.c, u.e, u.s, u.x, u.l, u.b, u.v, pg_current_xact_id()::text::bigint, $20
             FROM unnest($13::text[], $14::text[], $15::int[], $16::bigint[], $17::text[],
                 $18::text[], $19::bigint[]) AS u(c, e, s, x, l, b, v)
             WHERE (SELECT count(*) FROM ins) = $21
             ORDER BY u.c, u.e
             ON CONFLICT (check_name, entity) DO UPDATE SET status = excluded.status,
                 executed_at = excluded.executed_at, last_result_id = excluded.last_result_id,
                 body = excluded.body, version = excluded.version,
                 changed_xid = excluded.changed_xid, changed_by = excluded.changed_by
             WHERE events.version + 1 = excluded.version
             RETURNING check_name, entity, version",
        );
        let rows = EventColumns::of(&guessed.output.events)
            .bind(columns.bind(query))
            .bind(&versions)
            .bind(&*self.writer)
            .bind(i64::try_from(guessed.ids.len()).unwrap_or(i64::MAX))
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        if rows.len() != guessed.output.events.len() {
            return Ok(None);
        }
        let mut written = HashMap::with_capacity(rows.len());
        for row in rows {
            let key = (
                row.try_get::<String, _>(0).map_err(|e| self.err(e))?,
                row.try_get::<String, _>(1).map_err(|e| self.err(e))?,
            );
            written.insert(key, row.try_get::<i64, _>(2).map_err(|e| self.err(e))?);
        }
        Ok(Some(written))
    }

    /// A fold's incident changes and notices, and the commit.
    async fn finish_fold_pg<T>(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        output: &FoldOutput<T>,
    ) -> Result<(), StoreError> {
        self.record_incidents_pg(&mut tx, &output.incidents).await?;
        if !output.notices.is_empty() {
            sqlx::query("INSERT INTO notices (body) SELECT * FROM unnest($1::text[])")
                .bind(&output.notices)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Locks the events of these pairs (sorted) in key order and reads them, bodies left out
    /// where the version is the one `held`, with the placeholders made for pairs with no
    /// event. `existing`: the caller holds an event of every pair, so every row exists and
    /// one statement locks and reads them (the sort is below the lock: rows are locked as the
    /// sorted rows come; a row another fold moved meanwhile is locked and read as that fold
    /// left it); None if one is missing after all (nothing made). Otherwise one statement
    /// makes the placeholders and locks every row in the same order, and the next reads them.
    /// Every fold locks in key order, whichever way: folds over overlapping pairs queue on the
    /// first pair they share and never deadlock.
    #[allow(clippy::type_complexity)]
    async fn lock_events_pg(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        checks: &[&str],
        entities: &[&str],
        held: &[i64],
        existing: bool,
    ) -> Result<Option<(Vec<VersionedEvent>, HashSet<(String, String)>)>, StoreError> {
        let mut stored = Vec::new();
        let mut placeholders: HashSet<(String, String)> = HashSet::new();
        if checks.is_empty() {
            return Ok(Some((stored, placeholders)));
        }
        let read = |stored: &mut Vec<VersionedEvent>, rows: &[sqlx::postgres::PgRow]| {
            for row in rows {
                let mut event = self.versioned_event(row)?;
                event.known = row.try_get(7).map_err(|e| self.err(e))?;
                stored.push(event);
            }
            Ok::<_, StoreError>(())
        };
        if existing {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{HELD_EVENTS} ORDER BY check_name, entity FOR UPDATE OF events"
            )))
            .bind(checks)
            .bind(entities)
            .bind(held)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
            if rows.len() < checks.len() {
                return Ok(None);
            }
            read(&mut stored, &rows)?;
            return Ok(Some((stored, placeholders)));
        }
        // `DO UPDATE … WHERE false` locks an existing row and writes nothing; the statement
        // returns the placeholders it made.
        let made = sqlx::query(
            "INSERT INTO events (check_name, entity, status, executed_at, last_result_id, body, version)
             SELECT c, e, 0, 0, '', '', 0 FROM unnest($1::text[], $2::text[]) AS k(c, e)
             ORDER BY c, e
             ON CONFLICT (check_name, entity) DO UPDATE SET version = events.version WHERE false
             RETURNING check_name, entity",
        )
        .bind(checks)
        .bind(entities)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        for row in &made {
            placeholders.insert(decode_pairs_row!(self, row)?);
        }
        if made.len() < checks.len() {
            // The rows locked, as the last fold to hold them left them (a new snapshot).
            let rows = sqlx::query(HELD_EVENTS)
                .bind(checks)
                .bind(entities)
                .bind(held)
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| self.err(e))?;
            read(&mut stored, &rows)?;
        }
        Ok(Some((stored, placeholders)))
    }

    /// Inserts results in one statement of a constant text (arrays, not a row of parameters
    /// per result, so PostgreSQL plans it once per connection), in the order of their ids so
    /// that two servers storing the same ids lock them in one order. Returns the ids that were
    /// new.
    async fn insert_results_pg(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        results: &[&StoredResult],
    ) -> Result<HashSet<String>, StoreError> {
        let columns = ResultColumns::of(&self.path, results)?;
        let query = sqlx::query(
            "INSERT INTO results (id, check_name, entity, status, summary, long_output, perfdata,
                 duration_ms, exit_code, executed_at, received_at, output)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[],
                 $6::text[], $7::text[], $8::float8[], $9::int[], $10::bigint[], $11::bigint[],
                 $12::text[])
             ON CONFLICT (id) DO NOTHING RETURNING id",
        );
        let rows = columns
            .bind(query)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).map_err(|e| self.err(e)))
            .collect()
    }

    /// Records incident changes in at most three statements, whatever their number (one a
    /// change cost a round trip each: most of a group's time when many events change): the
    /// incidents opened, then every open incident closed by the first close at or after its
    /// start (what applying the changes one by one gives, an event's opens and closes
    /// alternating), then the flaps. Safe to repeat, as `record_incidents_in!`.
    async fn record_incidents_pg(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        changes: &[mdd_core::incident::IncidentChange],
    ) -> Result<(), StoreError> {
        use mdd_core::incident::IncidentChange;
        #[derive(Default)]
        struct Columns<'a> {
            checks: Vec<&'a str>,
            entities: Vec<&'a str>,
            at: Vec<i64>,
        }
        impl<'a> Columns<'a> {
            fn push(&mut self, check: &'a str, entity: &'a str, at: i64) {
                self.checks.push(check);
                self.entities.push(entity);
                self.at.push(at);
            }
        }
        let (mut opened, mut closed, mut flapped) =
            (Columns::default(), Columns::default(), Columns::default());
        for change in changes {
            match change {
                IncidentChange::Opened { check, entity, at } => opened.push(check, entity, *at),
                IncidentChange::Closed { check, entity, at } => closed.push(check, entity, *at),
                IncidentChange::Flapped { check, entity, at } => flapped.push(check, entity, *at),
            }
        }
        // Openings and closings in one statement (a group's incident changes are in most of
        // its folds): the update closes the incidents open before, each at the first closing
        // after it began; an incident opened in this group is inserted closed already, at the
        // first closing after its opening, if any (the statement's parts see one snapshot,
        // so the update does not see the rows the insert makes). An incident stored already
        // is left as it is by the insert, and closed by the update.
        if !opened.at.is_empty() || !closed.at.is_empty() {
            sqlx::query(
                "WITH c AS (SELECT * FROM unnest($4::text[], $5::text[], $6::bigint[]) AS c(c, e, at)),
                 closed AS (
                     UPDATE incidents AS i SET ended_at = u.ended
                     FROM (SELECT i.check_name, i.entity, i.started_at, min(c.at) AS ended
                           FROM incidents AS i
                           JOIN c ON i.check_name = c.c AND i.entity = c.e AND i.started_at <= c.at
                           WHERE i.ended_at IS NULL
                           GROUP BY 1, 2, 3) AS u
                     WHERE i.check_name = u.check_name AND i.entity = u.entity
                         AND i.started_at = u.started_at AND i.ended_at IS NULL)
                 INSERT INTO incidents (check_name, entity, started_at, ended_at)
                 SELECT o.c, o.e, o.at,
                     (SELECT min(c.at) FROM c WHERE c.c = o.c AND c.e = o.e AND c.at >= o.at)
                 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS o(c, e, at)
                 ORDER BY 1, 2, 3
                 ON CONFLICT DO NOTHING",
            )
            .bind(&opened.checks)
            .bind(&opened.entities)
            .bind(&opened.at)
            .bind(&closed.checks)
            .bind(&closed.entities)
            .bind(&closed.at)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        if !flapped.at.is_empty() {
            sqlx::query(
                "INSERT INTO flaps (check_name, entity, at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ORDER BY 1, 2, 3
                 ON CONFLICT DO NOTHING",
            )
            .bind(&flapped.checks)
            .bind(&flapped.entities)
            .bind(&flapped.at)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Records when entities were seen: a new one is inserted, a known one's `last_seen` moved
    /// when it is more than `LAST_SEEN_STEP` behind. Every server's groups name the same
    /// entities: were each to update their rows, all of them would queue on those rows' locks
    /// from one commit to the next (an update locks a row until the commit; a row the update's
    /// condition leaves out is not locked, and an insert that finds the row does nothing).
    /// Rows are taken in the order of their names, so two transactions never deadlock.
    async fn upsert_entities_pg(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        entities: &[(&str, i64)],
    ) -> Result<(), StoreError> {
        if entities.is_empty() {
            return Ok(());
        }
        // The latest sighting of each name, one row per name.
        let mut latest: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for (name, seen) in entities {
            let at = latest.entry(name).or_insert(*seen);
            *at = (*at).max(*seen);
        }
        let names: Vec<&str> = latest.keys().copied().collect();
        let seen: Vec<i64> = latest.values().copied().collect();
        sqlx::query(
            "UPDATE entities SET last_seen = u.s
             FROM (SELECT * FROM unnest($1::text[], $2::bigint[]) AS u(n, s) ORDER BY n) AS u
             WHERE entities.name = u.n AND entities.last_seen < u.s - $3",
        )
        .bind(&names)
        .bind(&seen)
        .bind(LAST_SEEN_STEP)
        .execute(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        sqlx::query(
            "INSERT INTO entities (name, first_seen, last_seen)
             SELECT n, s, s FROM unnest($1::text[], $2::bigint[]) AS u(n, s) ORDER BY n
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&names)
        .bind(&seen)
        .execute(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The oldest notices folds left for the notifier (PostgreSQL; none on SQLite), with their
    /// numbers for `drop_notices`.
    pub async fn notices(&self, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query("SELECT seq, body FROM notices ORDER BY seq LIMIT $1")
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
        decode_pairs!(self, rows)
    }

    /// Forgets notices the notifier has taken.
    pub async fn drop_notices(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        sqlx::query("DELETE FROM notices WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every stored event (PostgreSQL; none on SQLite), and where the change feed goes on from.
    pub async fn all_events(&self) -> Result<(FeedPosition, Vec<VersionedEvent>), StoreError> {
        self.read_feed(None).await
    }

    /// The events other handles wrote since `from` (see [`FeedPosition`]), and where the next
    /// read goes on from. What this handle wrote itself is left out: its writer has it.
    pub async fn events_changed_since(
        &self,
        from: &FeedPosition,
    ) -> Result<(FeedPosition, Vec<VersionedEvent>), StoreError> {
        self.read_feed(Some(from)).await
    }

    /// Vacuums the tables folds churn (events, incidents, the notices outbox) when dead rows
    /// have piled up in them, and says which it vacuumed (PostgreSQL; none on SQLite). Every
    /// fold leaves a dead version of each event it wrote, and of each incident it closed:
    /// thousands a second under load, which every lookup of their indexes then steps over (a
    /// closed incident stays in the index of open ones until a vacuum), while autovacuum wakes
    /// once a minute by default. Safe on any server: a table being vacuumed is skipped.
    pub async fn vacuum_churned(&self) -> Result<Vec<String>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        let tables: Vec<&str> = CHURNED_TABLES.iter().map(|(table, _)| *table).collect();
        let churned: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_stat_user_tables
             WHERE schemaname = current_schema() AND relname = ANY($1)
                 AND n_dead_tup > greatest($2, n_live_tup / 4)
             ORDER BY relname",
        )
        .bind(&tables)
        .bind(VACUUM_AFTER_DEAD_ROWS)
        .fetch_all(pool)
        .await
        .map_err(|e| self.err(e))?;
        for (_, vacuum) in CHURNED_TABLES
            .iter()
            .filter(|(table, _)| churned.iter().any(|c| c == table))
        {
            sqlx::raw_sql(*vacuum)
                .execute(pool)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(churned)
    }

    /// The stored events of these (check, entity) pairs (PostgreSQL; none on SQLite).
    pub async fn events_of(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<VersionedEvent>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        let checks: Vec<&str> = keys.iter().map(|(c, _)| c.as_str()).collect();
        let entities: Vec<&str> = keys.iter().map(|(_, e)| e.as_str()).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{VERSIONED_EVENTS} JOIN unnest($1::text[], $2::text[]) AS k(c, e)
                 ON check_name = k.c AND entity = k.e
             WHERE body <> ''"
        )))
        .bind(&checks)
        .bind(&entities)
        .fetch_all(pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(|row| self.versioned_event(row)).collect()
    }

    /// Which events other handles wrote since `from`, by key and version only (see
    /// [`FeedPosition`]), and where the next read goes on from: for a server that reads the
    /// bodies only when they are asked for, so that events nobody looks at cost no transfer
    /// and no decoding.
    pub async fn event_versions_changed_since(
        &self,
        from: &FeedPosition,
    ) -> Result<(FeedPosition, Vec<(String, String, i64)>), StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok((FeedPosition::default(), Vec::new()));
        };
        let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
        let next = self.feed_snapshot(&mut tx).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT check_name, entity, version FROM events {CHANGED_SINCE}"
        )))
        .bind(from.next_xid)
        .bind(&from.running)
        .bind(&*self.writer)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        let versions = rows
            .iter()
            .map(|row| {
                let get = |e: sqlx::Error| self.err(e);
                Ok((
                    row.try_get(0).map_err(get)?,
                    row.try_get(1).map_err(get)?,
                    row.try_get(2).map_err(get)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((next, versions))
    }

    /// Makes `tx` read one snapshot, and says where a feed read from it goes on from.
    async fn feed_snapshot(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<FeedPosition, StoreError> {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        let row = sqlx::query(
            "SELECT pg_snapshot_xmax(s)::text::bigint,
                 coalesce((SELECT array_agg(x::text::bigint) FROM pg_snapshot_xip(s) AS x), '{}')
             FROM pg_current_snapshot() AS s",
        )
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| self.err(e))?;
        Ok(FeedPosition {
            next_xid: row.try_get(0).map_err(|e| self.err(e))?,
            running: row.try_get(1).map_err(|e| self.err(e))?,
        })
    }

    async fn read_feed(
        &self,
        from: Option<&FeedPosition>,
    ) -> Result<(FeedPosition, Vec<VersionedEvent>), StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok((FeedPosition::default(), Vec::new()));
        };
        // The rows and the position from one snapshot.
        let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
        let next = self.feed_snapshot(&mut tx).await?;
        let rows = match from {
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{VERSIONED_EVENTS} WHERE body <> ''"
                )))
                .fetch_all(&mut *tx)
                .await
            }
            Some(from) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{VERSIONED_EVENTS} {CHANGED_SINCE}"
                )))
                .bind(from.next_xid)
                .bind(&from.running)
                .bind(&*self.writer)
                .fetch_all(&mut *tx)
                .await
            }
        }
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        let events = rows
            .iter()
            .map(|row| self.versioned_event(row))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((next, events))
    }

    /// An event from a row of [`VERSIONED_EVENTS`].
    fn versioned_event(&self, row: &sqlx::postgres::PgRow) -> Result<VersionedEvent, StoreError> {
        let get = |e: sqlx::Error| self.err(e);
        Ok(VersionedEvent {
            row: EventRow {
                check: row.try_get(0).map_err(get)?,
                entity: row.try_get(1).map_err(get)?,
                status: Status::from_exit_code(Some(row.try_get(2).map_err(get)?)),
                executed_at: row.try_get(3).map_err(get)?,
                last_result_id: row.try_get(4).map_err(get)?,
                body: row.try_get(5).map_err(get)?,
            },
            version: row.try_get(6).map_err(get)?,
            known: false,
        })
    }

    /// The sequence number of the newest stored result (0 for none): what the events include
    /// once every result up to it has been folded into them.
    pub async fn newest_result_seq(&self) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT coalesce(max({}), 0) FROM results", self.seq())))
                .fetch_one(pool)
                .await
                .map_err(|e| self.err(e))?
                .try_get(0)
                .map_err(|e| self.err(e))
        })
    }

    /// Writes the events that changed since the last checkpoint, and records that the stored
    /// events now include every result up to the newest stored. Call it only while nothing
    /// else stores results (at start), so that "newest stored" is exactly what they include.
    pub async fn checkpoint_events(&self, events: &[EventRow]) -> Result<i64, StoreError> {
        let through = self.newest_result_seq().await?;
        self.checkpoint_events_through(events, through).await?;
        Ok(through)
    }

    /// Writes `events` and records, in the same transaction, that the stored events include
    /// every result up to sequence number `through` (from [`Store::newest_result_seq`], taken
    /// when the events were). Results stored meanwhile are replayed after a crash; the
    /// recorded sequence never goes backwards.
    pub async fn checkpoint_events_through(
        &self,
        events: &[EventRow],
        through: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            for chunk in events.chunks(EVENT_ROWS_PER_UPSERT) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO events (check_name, entity, status, executed_at, last_result_id, body) ",
                );
                query.push_values(chunk, |mut row, e| {
                    row.push_bind(&e.check)
                        .push_bind(&e.entity)
                        .push_bind(e.status.exit_code())
                        .push_bind(e.executed_at)
                        .push_bind(&e.last_result_id)
                        .push_bind(&e.body);
                });
                query.push(
                    " ON CONFLICT (check_name, entity) DO UPDATE SET
                       status = excluded.status, executed_at = excluded.executed_at,
                       last_result_id = excluded.last_result_id, body = excluded.body",
                );
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO checkpoints (name, value) VALUES ('events', $1)
                 ON CONFLICT (name) DO UPDATE SET value = {}(checkpoints.value, excluded.value)",
                self.greatest()
            )))
            .bind(through)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            tx.commit().await.map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    /// Records that the server was up at `at` (ms), so that the next start knows how long it
    /// was down.
    pub async fn mark_alive(&self, at: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO checkpoints (name, value) VALUES ('alive', $1)
                 ON CONFLICT (name) DO UPDATE SET value = {}(checkpoints.value, excluded.value)",
                self.greatest()
            )))
            .bind(at)
            .execute(pool)
            .await
            .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    /// The last time a server on this store said it was up (None for a store that never ran
    /// one, or ran one older than this record).
    pub async fn last_alive(&self) -> Result<Option<i64>, StoreError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT value FROM checkpoints WHERE name = 'alive'")
                .fetch_optional(pool)
                .await
                .map_err(|e| self.err(e))?
                .map(|row| row.try_get(0))
                .transpose()
                .map_err(|e| self.err(e))
        })
    }

    /// Results stored after `rowid`, oldest first, to bring checkpointed events up to date.
    pub async fn results_after(
        &self,
        rowid: i64,
        limit: u32,
    ) -> Result<Vec<(i64, StoredResult)>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id, check_name, entity, status, summary, long_output, perfdata, duration_ms, exit_code, executed_at, received_at, output, {seq}
                 FROM results WHERE {seq} > $1 ORDER BY {seq} LIMIT $2",
                seq = self.seq()
            )))
            .bind(rowid)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            rows.iter()
                .map(|row| {
                    let rowid: i64 = row.try_get(12).map_err(|e| self.err(e))?;
                    Ok((rowid, decode_result!(self, row)?))
                })
                .collect()
        })
    }

    /// Every stored event and the result they are complete through.
    pub async fn load_event_checkpoint(&self) -> Result<EventCheckpoint, StoreError> {
        on_pool!(self, pool => {
            let through: Option<i64> =
                sqlx::query("SELECT value FROM checkpoints WHERE name = 'events'")
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| self.err(e))?
                    .map(|row| row.try_get(0))
                    .transpose()
                    .map_err(|e| self.err(e))?;
            Ok(EventCheckpoint {
                events: self.load_events().await?,
                through_rowid: through.unwrap_or(0),
            })
        })
    }

    /// Every event, for the server to keep in memory.
    async fn load_events(&self) -> Result<Vec<EventRow>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT check_name, entity, status, executed_at, last_result_id, body FROM events WHERE body <> ''",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            rows.iter()
                .map(|row| {
                    let get = |e: sqlx::Error| self.err(e);
                    Ok(EventRow {
                        check: row.try_get(0).map_err(get)?,
                        entity: row.try_get(1).map_err(get)?,
                        status: Status::from_exit_code(Some(row.try_get(2).map_err(get)?)),
                        executed_at: row.try_get(3).map_err(get)?,
                        last_result_id: row.try_get(4).map_err(get)?,
                        body: row.try_get(5).map_err(get)?,
                    })
                })
                .collect()
        })
    }

    /// Results of a check (optionally one entity) executed in `[from, to]`, newest first.
    pub async fn results(
        &self,
        check: &str,
        entity: Option<&str>,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<StoredResult>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT id, check_name, entity, status, summary, long_output, perfdata, duration_ms, exit_code, executed_at, received_at, output
                 FROM results
                 WHERE check_name = $1 AND ($2 IS NULL OR entity = $2) AND executed_at BETWEEN $3 AND $4
                 ORDER BY executed_at DESC LIMIT $5",
            )
            .bind(check)
            .bind(entity)
            .bind(from)
            .bind(to)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            rows.iter().map(|row| decode_result!(self, row)).collect()
        })
    }

    pub async fn result(&self, id: &str) -> Result<Option<StoredResult>, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query(
                "SELECT id, check_name, entity, status, summary, long_output, perfdata, duration_ms, exit_code, executed_at, received_at, output
                 FROM results WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(|e| self.err(e))?;
            row.map(|row| decode_result!(self, &row)).transpose()
        })
    }

    /// Whether any result of `check` is stored.
    pub async fn has_results(&self, check: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM results WHERE check_name = $1)")
                .bind(check)
                .fetch_one(pool)
                .await
                .map_err(|e| self.err(e))?;
            row.try_get::<bool, _>(0).map_err(|e| self.err(e))
        })
    }

    pub async fn count_results(&self) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT count(*) FROM results")
                .fetch_one(pool)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|e| self.err(e))
        })
    }

    pub async fn entities(&self) -> Result<Vec<EntityRecord>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT name, first_seen, last_seen, info, last_keepalive FROM entities ORDER BY name",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            rows.iter()
                .map(|row| {
                    Ok(EntityRecord {
                        name: row.try_get(0).map_err(|e| self.err(e))?,
                        first_seen: row.try_get(1).map_err(|e| self.err(e))?,
                        last_seen: row.try_get(2).map_err(|e| self.err(e))?,
                        info: row.try_get(3).map_err(|e| self.err(e))?,
                        last_keepalive: row.try_get(4).map_err(|e| self.err(e))?,
                    })
                })
                .collect()
        })
    }

    /// Records an agent's keepalive: what it says of itself, and when.
    pub async fn record_keepalive(
        &self,
        name: &str,
        info: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO entities (name, first_seen, last_seen, info, last_keepalive) VALUES ($1, $2, $2, $3, $2)
                 ON CONFLICT (name) DO UPDATE SET last_seen = {}(entities.last_seen, excluded.last_seen),
                   info = excluded.info, last_keepalive = excluded.last_keepalive",
                self.greatest()
            )))
            .bind(name)
            .bind(at)
            .bind(info)
            .execute(pool)
            .await
            .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    /// Removes an entity and its events (a `deregister` agent that went away). Its results stay
    /// until retention removes them.
    pub async fn delete_entity(&self, name: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            // The entity's row first, then its events: the order folds lock them in.
            for sql in [
                "DELETE FROM entities WHERE name = $1",
                "DELETE FROM events WHERE entity = $1",
            ] {
                sqlx::query(sql)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            tx.commit().await.map_err(|e| self.err(e))
        })
    }

    /// Which of `names` still have events stored (an entity deleted through another server has
    /// none, one that reported since has some).
    pub async fn entities_with_events(
        &self,
        names: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        on_pool!(self, pool => {
            let mut found = HashSet::new();
            for name in names {
                let row = sqlx::query("SELECT 1 FROM events WHERE entity = $1 LIMIT 1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| self.err(e))?;
                if row.is_some() {
                    found.insert(name.clone());
                }
            }
            Ok(found)
        })
    }

    /// How much of `from..to` each check spent OK, from its results: a result's status holds
    /// until its entity's next result (the last one until `to`), but an OK stops counting as
    /// OK after the check's `cap` (its ttl: silence is not uptime). Returns, per check that
    /// has results in the window, (ms OK, ms covered by results), summed over its entities.
    pub async fn availability(
        &self,
        checks: &[(&str, i64)],
        from: i64,
        to: i64,
    ) -> Result<HashMap<String, (i64, i64)>, StoreError> {
        on_pool!(self, pool => {
            let mut answer = HashMap::new();
            // SQLite takes at most 32,766 bound values; 2 per check and 2 more.
            for chunk in checks.chunks(10_000) {
                let mut query = QueryBuilder::new("WITH caps(name, cap) AS (");
                query.push_values(chunk, |mut row, (name, cap)| {
                    row.push_bind(*name).push_bind(*cap);
                });
                query.push(format!(
                    "), spans AS (SELECT r.check_name AS name, r.status AS status, caps.cap AS cap, \
                     {}(coalesce(LEAD(r.executed_at) OVER (PARTITION BY r.check_name, r.entity ORDER BY r.executed_at), ",
                    self.least()
                ));
                query.push_bind(to);
                query.push("), ");
                query.push_bind(to);
                query.push(") - r.executed_at AS span FROM results r JOIN caps ON caps.name = r.check_name WHERE r.executed_at >= ");
                query.push_bind(from);
                query.push(" AND r.executed_at <= ");
                query.push_bind(to);
                // Sums as BIGINT: PostgreSQL sums BIGINTs into NUMERIC.
                query.push(format!(
                    ") SELECT name, CAST(coalesce(sum(CASE WHEN status = 0 THEN {}(span, cap) ELSE 0 END), 0) AS BIGINT), \
                     CAST(coalesce(sum(span), 0) AS BIGINT) FROM spans GROUP BY name",
                    self.least()
                ));
                let rows = query
                    .build()
                    .fetch_all(pool)
                    .await
                    .map_err(|e| self.err(e))?;
                for row in rows {
                    let name: String = row.try_get(0).map_err(|e| self.err(e))?;
                    let ok: i64 = row.try_get(1).map_err(|e| self.err(e))?;
                    let total: i64 = row.try_get(2).map_err(|e| self.err(e))?;
                    answer.insert(name, (ok, total));
                }
            }
            Ok(answer)
        })
    }

    /// Deletes results received before `before` (ms since the epoch); returns how many.
    /// Events keep pointing at their last result, which retention never removes, and results
    /// not yet in an event checkpoint are never removed either.
    pub async fn prune_results(&self, before: i64) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            // On PostgreSQL events are written with their results: nothing waits for a
            // checkpoint.
            let checkpointed = if self.is_postgres() {
                String::new()
            } else {
                format!("AND {} <= (SELECT value FROM checkpoints WHERE name = 'events')", self.seq())
            };
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM results WHERE received_at < $1
                 AND id NOT IN (SELECT last_result_id FROM events)
                 {checkpointed}"
            )))
            .bind(before)
            .execute(pool)
            .await
            .map_err(|e| self.err(e))?;
            Ok(done.rows_affected())
        })
    }

    /// Writes deployment tracks (name, JSON) and forgets the deployments named in `removed`,
    /// in one transaction.
    pub async fn save_deployment_tracks(
        &self,
        tracks: &[(String, String)],
        removed: &[String],
        at: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            for (name, track) in tracks {
                sqlx::query(
                    "INSERT INTO deployment_tracks (name, track, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET track = excluded.track, updated_at = excluded.updated_at",
                )
                .bind(name)
                .bind(track)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            }
            for name in removed {
                sqlx::query("DELETE FROM deployment_tracks WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            tx.commit().await.map_err(|e| self.err(e))
        })
    }

    /// Every stored deployment track: (name, JSON).
    pub async fn deployment_tracks(&self) -> Result<Vec<(String, String)>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT name, track FROM deployment_tracks ORDER BY name")
                .fetch_all(pool)
                .await
                .map_err(|e| self.err(e))?;
            decode_pairs!(self, rows)
        })
    }

    /// Stores a silence (its JSON), replacing one with the same id.
    pub async fn save_silence(
        &self,
        id: &str,
        body: &str,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            sqlx::query(
                "INSERT INTO silences (id, body, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, expires_at = excluded.expires_at",
            )
            .bind(id)
            .bind(body)
            .bind(expires_at)
            .execute(pool)
            .await
            .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    /// Deletes silences by id; returns how many there were.
    pub async fn delete_silences(&self, ids: &[String]) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            let mut deleted = 0;
            for id in ids {
                deleted += sqlx::query("DELETE FROM silences WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?
                    .rows_affected();
            }
            tx.commit().await.map_err(|e| self.err(e))?;
            Ok(deleted)
        })
    }

    /// Every stored silence (JSON bodies).
    pub async fn silences(&self) -> Result<Vec<String>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT body FROM silences ORDER BY id")
                .fetch_all(pool)
                .await
                .map_err(|e| self.err(e))?;
            rows.into_iter()
                .map(|row| row.try_get(0).map_err(|e| self.err(e)))
                .collect()
        })
    }

    /// Records incidents opening and closing and flaps starting, in one transaction. Safe to
    /// repeat (a replay after a crash records the same changes again): an incident is keyed by
    /// its start, and a close only ends the one still open.
    pub async fn record_incidents(
        &self,
        changes: &[mdd_core::incident::IncidentChange],
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            if changes.is_empty() {
                return Ok(());
            }
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            record_incidents_in!(self, tx, changes);
            tx.commit().await.map_err(|e| self.err(e))
        })
    }

    /// [`Store::record_incidents`] as a fold on PostgreSQL records them (batched).
    #[cfg(test)]
    async fn record_incidents_batched(
        &self,
        changes: &[mdd_core::incident::IncidentChange],
    ) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return self.record_incidents(changes).await;
        };
        let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
        self.record_incidents_pg(&mut tx, changes).await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Incidents that were going at some point since `from` (still open, or ended after it),
    /// and the flap starts since `from`.
    #[allow(clippy::type_complexity)]
    pub async fn incidents_since(
        &self,
        from: i64,
    ) -> Result<
        (
            Vec<mdd_core::incident::Incident>,
            Vec<(String, String, i64)>,
        ),
        StoreError,
    > {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT check_name, entity, started_at, ended_at FROM incidents
                 WHERE ended_at IS NULL OR ended_at >= $1 ORDER BY started_at",
            )
            .bind(from)
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            let incidents = rows
                .into_iter()
                .map(|row| {
                    Ok(mdd_core::incident::Incident {
                        check: row.try_get(0).map_err(|e| self.err(e))?,
                        entity: row.try_get(1).map_err(|e| self.err(e))?,
                        started_at: row.try_get(2).map_err(|e| self.err(e))?,
                        ended_at: row.try_get(3).map_err(|e| self.err(e))?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let rows = sqlx::query("SELECT check_name, entity, at FROM flaps WHERE at >= $1")
                .bind(from)
                .fetch_all(pool)
                .await
                .map_err(|e| self.err(e))?;
            let flaps = rows
                .into_iter()
                .map(|row| {
                    Ok((
                        row.try_get(0).map_err(|e| self.err(e))?,
                        row.try_get(1).map_err(|e| self.err(e))?,
                        row.try_get(2).map_err(|e| self.err(e))?,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok((incidents, flaps))
        })
    }

    /// Writes what the notifier changed in one transaction: delivery log entries, incident
    /// records upserted and deleted, deliveries decided and finished. Each handler touched
    /// keeps only its newest `keep_per_handler` deliveries.
    pub async fn save_notifications(
        &self,
        changes: &NotificationChanges<'_>,
        keep_per_handler: usize,
    ) -> Result<(), StoreError> {
        let NotificationChanges {
            deliveries,
            notified,
            resolved,
            due,
            done,
        } = *changes;
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            if changes.is_empty() {
                return Ok(());
            }
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            // 9 columns a row, well under SQLite's bound-parameter limit.
            for chunk in deliveries.chunks(1_000) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO deliveries (handler, at, check_name, entity, kind, attempt, outcome, latency_ms, output) ",
                );
                query.push_values(chunk, |mut row, d| {
                    row.push_bind(&d.handler)
                        .push_bind(d.at)
                        .push_bind(&d.check)
                        .push_bind(&d.entity)
                        .push_bind(&d.kind)
                        .push_bind(i64::from(d.attempt))
                        .push_bind(&d.outcome)
                        .push_bind(d.latency_ms)
                        .push_bind(&d.output);
                });
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            let touched: std::collections::BTreeSet<&str> =
                deliveries.iter().map(|d| d.handler.as_str()).collect();
            let keep = i64::try_from(keep_per_handler).unwrap_or(i64::MAX);
            for handler in touched {
                sqlx::query(
                    "DELETE FROM deliveries WHERE handler = $1 AND id <=
                     (SELECT id FROM deliveries WHERE handler = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                )
                .bind(handler)
                .bind(keep)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            }
            // Many rows per statement: the write lock is shared with result ingestion, so the less
            // time spent holding it the better.
            for chunk in notified.chunks(1_000) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO notified (handler, check_name, entity, status, notified_at) ",
                );
                query.push_values(chunk, |mut row, n| {
                    row.push_bind(&n.handler)
                        .push_bind(&n.check)
                        .push_bind(&n.entity)
                        .push_bind(n.status.exit_code())
                        .push_bind(n.notified_at);
                });
                query.push(
                    " ON CONFLICT (handler, check_name, entity)
                     DO UPDATE SET status = excluded.status, notified_at = excluded.notified_at",
                );
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            for chunk in resolved.chunks(1_000) {
                let mut query = QueryBuilder::new(
                    "DELETE FROM notified WHERE (handler, check_name, entity) IN (",
                );
                let mut keys = query.separated(", ");
                for (handler, check, entity) in chunk {
                    keys.push("(")
                        .push_bind_unseparated(handler)
                        .push_unseparated(", ")
                        .push_bind_unseparated(check)
                        .push_unseparated(", ")
                        .push_bind_unseparated(entity)
                        .push_unseparated(")");
                }
                query.push(")");
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            // 7 columns a row. A delivery decided twice (a catch-up after a restart decides
            // what was decided before) is one row.
            for chunk in due.chunks(1_000) {
                let mut query = QueryBuilder::new(
                    "INSERT INTO due_deliveries (id, handler, kind, check_name, entity, body, decided_at) ",
                );
                query.push_values(chunk, |mut row, d| {
                    row.push_bind(&d.id)
                        .push_bind(&d.handler)
                        .push_bind(&d.kind)
                        .push_bind(&d.check)
                        .push_bind(&d.entity)
                        .push_bind(&d.body)
                        .push_bind(d.decided_at);
                });
                query.push(" ON CONFLICT (id, handler) DO NOTHING");
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            for chunk in done.chunks(1_000) {
                let mut query =
                    QueryBuilder::new("DELETE FROM due_deliveries WHERE (id, handler) IN (");
                let mut keys = query.separated(", ");
                for (id, handler) in chunk {
                    keys.push("(")
                        .push_bind_unseparated(id)
                        .push_unseparated(", ")
                        .push_bind_unseparated(handler)
                        .push_unseparated(")");
                }
                query.push(")");
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            tx.commit().await.map_err(|e| self.err(e))
        })
    }

    /// The deliveries decided and not finished, in the order they were decided.
    pub async fn due_deliveries(&self) -> Result<Vec<DueDelivery>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT id, handler, kind, check_name, entity, body, decided_at
                 FROM due_deliveries ORDER BY decided_at, id, handler",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            rows.into_iter()
                .map(|row| {
                    let get = |e| self.err(e);
                    Ok(DueDelivery {
                        id: row.try_get(0).map_err(get)?,
                        handler: row.try_get(1).map_err(get)?,
                        kind: row.try_get(2).map_err(get)?,
                        check: row.try_get(3).map_err(get)?,
                        entity: row.try_get(4).map_err(get)?,
                        body: row.try_get(5).map_err(get)?,
                        decided_at: row.try_get(6).map_err(get)?,
                    })
                })
                .collect()
        })
    }

    /// The newest `keep_per_handler` deliveries of each handler, oldest first.
    pub async fn deliveries(
        &self,
        keep_per_handler: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT handler, at, check_name, entity, kind, attempt, outcome, latency_ms, output
                 FROM (SELECT *, row_number() OVER (PARTITION BY handler ORDER BY id DESC) AS newest
                       FROM deliveries) AS d
                 WHERE newest <= $1 ORDER BY id",
            )
            .bind(i64::try_from(keep_per_handler).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            rows.into_iter()
                .map(|row| {
                    let get = |e| self.err(e);
                    Ok(DeliveryRow {
                        handler: row.try_get(0).map_err(get)?,
                        at: row.try_get(1).map_err(get)?,
                        check: row.try_get(2).map_err(get)?,
                        entity: row.try_get(3).map_err(get)?,
                        kind: row.try_get(4).map_err(get)?,
                        attempt: u32::try_from(row.try_get::<i64, _>(5).map_err(get)?)
                            .unwrap_or(u32::MAX),
                        outcome: row.try_get(6).map_err(get)?,
                        latency_ms: row.try_get(7).map_err(get)?,
                        output: row.try_get(8).map_err(get)?,
                    })
                })
                .collect()
        })
    }

    /// Every incident a handler was told about and not yet told is resolved.
    pub async fn notified(&self) -> Result<Vec<NotifiedRow>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT handler, check_name, entity, status, notified_at FROM notified
                 ORDER BY handler, check_name, entity",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            rows.into_iter()
                .map(|row| {
                    let get = |e| self.err(e);
                    Ok(NotifiedRow {
                        handler: row.try_get(0).map_err(get)?,
                        check: row.try_get(1).map_err(get)?,
                        entity: row.try_get(2).map_err(get)?,
                        status: Status::from_exit_code(Some(row.try_get(3).map_err(get)?)),
                        notified_at: row.try_get(4).map_err(get)?,
                    })
                })
                .collect()
        })
    }

    /// Stores a new spec revision and returns its number.
    pub async fn apply_spec(&self, files: &[SpecFile], applied_at: i64) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let files = serde_json::to_string(files).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("cannot encode the spec: {e}"),
            })?;
            let row = sqlx::query(
                "INSERT INTO spec_revisions (applied_at, files) VALUES ($1, $2) RETURNING revision",
            )
            .bind(applied_at)
            .bind(files)
            .fetch_one(pool)
            .await
            .map_err(|e| self.err(e))?;
            row.try_get(0).map_err(|e| self.err(e))
        })
    }

    /// Stores a new spec revision if the newest stored one is still `base` (compare and swap:
    /// two applies through two servers never lose each other's files).
    pub async fn apply_spec_on(
        &self,
        base: i64,
        files: &[SpecFile],
        applied_at: i64,
    ) -> Result<SpecApplied, StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let files = serde_json::to_string(files).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("cannot encode the spec: {e}"),
            })?;
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            // Applies queue on the spec's row of shared_versions (PostgreSQL); SQLite has one
            // writer at a time anyway.
            if self.is_postgres() {
                sqlx::query("SELECT version FROM shared_versions WHERE name = 'spec' FOR UPDATE")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            let head: i64 = sqlx::query("SELECT coalesce(max(revision), 0) FROM spec_revisions")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.err(e))?
                .try_get(0)
                .map_err(|e| self.err(e))?;
            if head != base {
                return Ok(SpecApplied::Moved { head });
            }
            let row = sqlx::query(
                "INSERT INTO spec_revisions (applied_at, files) VALUES ($1, $2) RETURNING revision",
            )
            .bind(applied_at)
            .bind(files)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            let revision: i64 = row.try_get(0).map_err(|e| self.err(e))?;
            tx.commit().await.map_err(|e| self.err(e))?;
            Ok(SpecApplied::Stored(revision))
        })
    }

    /// The newest stored revision's number (0 before the first apply).
    pub async fn spec_head(&self) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT coalesce(max(revision), 0) FROM spec_revisions")
                .fetch_one(pool)
                .await
                .map_err(|e| self.err(e))?
                .try_get(0)
                .map_err(|e| self.err(e))
        })
    }

    /// The version of each kind of shared state (`spec`, `tokens`, `silences`, `sessions`,
    /// `deployments`, `entities`): it moves with every change, whichever server makes it.
    pub async fn shared_versions(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT name, version FROM shared_versions")
                .fetch_all(pool)
                .await
                .map_err(|e| self.err(e))?;
            decode_pairs!(self, rows)
        })
    }

    /// Takes or renews the lease `name` for `holder` for `ttl_ms` by the database's clock;
    /// its epoch when held (it goes up whenever the lease changes hands), None while another
    /// holder's lease runs. On SQLite it is always granted: one server has the directory.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let (now, free) = if self.is_postgres() {
                (
                    "(extract(epoch from clock_timestamp()) * 1000)::bigint",
                    "leases.expires_at < (extract(epoch from clock_timestamp()) * 1000)::bigint",
                )
            } else {
                ("CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)", "1 = 1")
            };
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, {now} + $3)
                 ON CONFLICT (name) DO UPDATE SET
                     epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch
                                  ELSE leases.epoch + 1 END,
                     holder = excluded.holder,
                     expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR {free}
                 RETURNING epoch"
            )))
            .bind(name)
            .bind(holder)
            .bind(ttl_ms)
            .fetch_optional(pool)
            .await
            .map_err(|e| self.err(e))?;
            row.map(|row| row.try_get(0).map_err(|e| self.err(e))).transpose()
        })
    }

    /// Who holds the lease `name` and for how many more ms by the database's clock (negative
    /// once it has run out), if anyone took it and nobody gave it up since.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        on_pool!(self, pool => {
            let now = if self.is_postgres() {
                "(extract(epoch from clock_timestamp()) * 1000)::bigint"
            } else {
                "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
            };
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT holder, expires_at - {now} FROM leases WHERE name = $1"
            )))
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(|e| self.err(e))?;
            row.map(|row| -> Result<(String, i64), StoreError> {
                Ok((
                    row.try_get(0).map_err(|e| self.err(e))?,
                    row.try_get(1).map_err(|e| self.err(e))?,
                ))
            })
            .transpose()
        })
    }

    /// Gives a lease up (a server stopping), so another takes it at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await
                .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    /// Whether several servers may share this store (PostgreSQL), so that what the others
    /// wrote must be read back.
    pub fn is_shared(&self) -> bool {
        self.is_postgres()
    }

    /// Stores a dashboard session, and drops the ones that have expired.
    pub async fn save_session(&self, session: &SessionRecord, now: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            sqlx::query(
                "INSERT INTO sessions (id_hash, token_id, role, name, csrf, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&session.id_hash)
            .bind(&session.token_id)
            .bind(&session.role)
            .bind(&session.name)
            .bind(&session.csrf)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            tx.commit().await.map_err(|e| self.err(e))
        })
    }

    /// The session with this hash, if it is stored.
    pub async fn session(&self, id_hash: &[u8]) -> Result<Option<SessionRecord>, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query(
                "SELECT id_hash, token_id, role, name, csrf, expires_at FROM sessions WHERE id_hash = $1",
            )
            .bind(id_hash)
            .fetch_optional(pool)
            .await
            .map_err(|e| self.err(e))?;
            let Some(row) = row else { return Ok(None) };
            let get = |e: sqlx::Error| self.err(e);
            Ok(Some(SessionRecord {
                id_hash: row.try_get(0).map_err(get)?,
                token_id: row.try_get(1).map_err(get)?,
                role: row.try_get(2).map_err(get)?,
                name: row.try_get(3).map_err(get)?,
                csrf: row.try_get(4).map_err(get)?,
                expires_at: row.try_get(5).map_err(get)?,
            }))
        })
    }

    /// Ends a session (signing out).
    pub async fn delete_session(&self, id_hash: &[u8]) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                .bind(id_hash)
                .execute(pool)
                .await
                .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    /// The revision the next `apply_spec` will get.
    pub async fn next_revision(&self) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
            // Revisions are never reused, even after a failed apply: the sequence says what
            // comes next, not the newest row.
            let sql = if self.is_postgres() {
                "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END
                 FROM spec_revisions_revision_seq"
            } else {
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'spec_revisions'), 0)
                        + 1"
            };
            let row = sqlx::query(sql)
            .fetch_one(pool)
            .await
            .map_err(|e| self.err(e))?;
            row.try_get(0).map_err(|e| self.err(e))
        })
    }

    pub async fn latest_spec(&self) -> Result<Option<SpecRevision>, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query(
                "SELECT revision, applied_at, files FROM spec_revisions ORDER BY revision DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await
            .map_err(|e| self.err(e))?;
            let Some(row) = row else { return Ok(None) };
            let files: String = row.try_get(2).map_err(|e| self.err(e))?;
            Ok(Some(SpecRevision {
                revision: row.try_get(0).map_err(|e| self.err(e))?,
                applied_at: row.try_get(1).map_err(|e| self.err(e))?,
                files: serde_json::from_str(&files).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("a spec revision: {e}"),
                })?,
            }))
        })
    }

    /// Stores a token: its hash (never the secret) and its record.
    pub async fn create_token(&self, hash: &[u8], token: &TokenRecord) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            sqlx::query(
                "INSERT INTO tokens (id, hash, role, name, created_at, entity, expires_at, uses_left, grants)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&token.id)
            .bind(hash)
            .bind(&token.role)
            .bind(&token.name)
            .bind(token.created_at)
            .bind(&token.entity)
            .bind(token.expires_at)
            .bind(token.uses_left)
            .bind(&token.grants)
            .execute(pool)
            .await
            .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    /// Every token's hash with its record, for the server to check tokens against in memory.
    pub async fn tokens(&self) -> Result<Vec<(Vec<u8>, TokenRecord)>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT hash, id, role, name, created_at, entity, last_used_at, expires_at, uses_left, grants FROM tokens",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| self.err(e))?;
            rows.iter()
                .map(|row| {
                    let get = |e: sqlx::Error| self.err(e);
                    Ok((
                        row.try_get(0).map_err(get)?,
                        TokenRecord {
                            id: row.try_get(1).map_err(get)?,
                            role: row.try_get(2).map_err(get)?,
                            name: row.try_get(3).map_err(get)?,
                            created_at: row.try_get(4).map_err(get)?,
                            entity: row.try_get(5).map_err(get)?,
                            last_used_at: row.try_get(6).map_err(get)?,
                            expires_at: row.try_get(7).map_err(get)?,
                            uses_left: row.try_get(8).map_err(get)?,
                            grants: row.try_get(9).map_err(get)?,
                        },
                    ))
                })
                .collect()
        })
    }

    /// Removes a token; false if there was none with that id.
    pub async fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let done = sqlx::query("DELETE FROM tokens WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map_err(|e| self.err(e))?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Records when tokens were last used, in one transaction.
    pub async fn token_uses(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            if used.is_empty() {
                return Ok(());
            }
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            for (id, at) in used {
                sqlx::query(
                    sqlx::AssertSqlSafe(format!(
                    "UPDATE tokens SET last_used_at = {}(coalesce(last_used_at, 0), $2) WHERE id = $1",
                    self.greatest()
                )),
                )
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            }
            tx.commit().await.map_err(|e| self.err(e))
        })
    }

    /// Takes one use of an enrollment token and stores the agent token it makes, in one
    /// transaction: false (and nothing stored) when it has no use left.
    pub async fn enroll(
        &self,
        enroll_id: &str,
        agent_hash: &[u8],
        agent: &TokenRecord,
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
            let taken = sqlx::query(
                "UPDATE tokens SET uses_left = uses_left - 1 WHERE id = $1 AND (uses_left IS NULL OR uses_left > 0)",
            )
            .bind(enroll_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            if taken.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO tokens (id, hash, role, name, created_at, entity, expires_at, uses_left, grants)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&agent.id)
            .bind(agent_hash)
            .bind(&agent.role)
            .bind(&agent.name)
            .bind(agent.created_at)
            .bind(&agent.entity)
            .bind(agent.expires_at)
            .bind(agent.uses_left)
            .bind(&agent.grants)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            tx.commit().await.map_err(|e| self.err(e))?;
            Ok(true)
        })
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
        if let Some(lock) = &self.lock {
            let _ = lock.unlock();
        }
    }
}

/// Names the conditions an operator must act on (full disk, read-only files) instead of
/// reporting them as generic database errors.
fn classify(path: &Path, source: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &source {
        let primary = db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        let detail = db.message().to_string();
        match primary {
            Some(13) => {
                return StoreError::DiskFull {
                    path: path.to_path_buf(),
                    detail,
                };
            }
            Some(8) => {
                return StoreError::ReadOnly {
                    path: path.to_path_buf(),
                    detail,
                };
            }
            _ => {}
        }
    }
    if let sqlx::Error::Io(io) = &source
        && io.raw_os_error() == Some(28)
    {
        return StoreError::DiskFull {
            path: path.to_path_buf(),
            detail: io.to_string(),
        };
    }
    StoreError::Database {
        path: path.to_path_buf(),
        error: source,
    }
}

/// PostgreSQL's own words for a full disk (53100) and a read-only server (25006) become the
/// errors an operator acts on, like SQLite's.
fn classify_postgres(path: &Path, source: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &source {
        let detail = db.message().to_string();
        match db.code().as_deref() {
            Some("53100") => {
                return StoreError::DiskFull {
                    path: path.to_path_buf(),
                    detail,
                };
            }
            Some("25006") => {
                return StoreError::ReadOnly {
                    path: path.to_path_buf(),
                    detail,
                };
            }
            _ => {}
        }
    }
    StoreError::Database {
        path: path.to_path_buf(),
        error: source,
    }
}

/// A database URL with its password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Fails early, and in words, when the data directory cannot be written: SQLite would only say
/// "unable to open database file".
/// The file whose lock says a server uses the directory; it names that server's process.
const LOCK_FILE: &str = "mdd.lock";

/// Takes the directory's lock, or says which process holds it. The lock is the kernel's
/// (`flock`): it ends with the process however it ends, `kill -9` included, so a stale lock
/// file never keeps a server from starting.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let failed = |error| StoreError::DataDir {
        path: dir.to_path_buf(),
        error,
    };
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut said = String::new();
            let _ = std::io::Read::read_to_string(&mut file, &mut said);
            return Err(StoreError::InUse {
                path: dir.to_path_buf(),
                holder: describe_holder(said.trim()),
            });
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(failed(error)),
    }
    use std::io::{Seek, Write};
    let me = format!(
        "{}
",
        std::process::id()
    );
    file.set_len(0)
        .and_then(|()| file.seek(std::io::SeekFrom::Start(0)).map(|_| ()))
        .and_then(|()| file.write_all(me.as_bytes()))
        .map_err(failed)?;
    Ok(file)
}

/// "process 1234 (mdd server --data /var/lib/mdd)" from the pid in the lock file.
fn describe_holder(pid: &str) -> String {
    let Ok(pid) = pid.parse::<u32>() else {
        return "another process".to_string();
    };
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty());
    match command {
        Some(command) => format!("process {pid} ({command})"),
        None => format!("process {pid}"),
    }
}

/// The data directory holds token hashes and every result: only the server's user may read
/// it. The directory becomes 0700 and the database files 0600 (made so before SQLite creates
/// the database, whose journal files then take its mode).
fn make_private(dir: &Path, db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |error| StoreError::DataDir {
        path: dir.to_path_buf(),
        error,
    };
    // A directory the server's user does not own (one its group may write) stays as it is:
    // the database files below are private all the same.
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(1) => {}
        Err(e) => return Err(failed(e)),
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(db)
        .map_err(failed)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(())
}

fn check_writable(dir: &Path) -> Result<(), StoreError> {
    let probe = dir.join(".mdd-write-check");
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e)
            if e.raw_os_error() == Some(30) || e.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(StoreError::ReadOnly {
                path: dir.to_path_buf(),
                detail: format!("cannot write there ({e}); mdd needs to write its database"),
            })
        }
        Err(e) if e.raw_os_error() == Some(28) => Err(StoreError::DiskFull {
            path: dir.to_path_buf(),
            detail: e.to_string(),
        }),
        Err(error) => Err(StoreError::DataDir {
            path: dir.to_path_buf(),
            error,
        }),
    }
}

#[cfg(test)]
mod tests;
