-- Every result ever ingested (until retention prunes it). The id is chosen by the producer,
-- so a replayed batch stores nothing twice.
CREATE TABLE results (
    id          TEXT PRIMARY KEY NOT NULL,
    check_name  TEXT NOT NULL,
    entity      TEXT NOT NULL,
    status      INTEGER NOT NULL,
    summary     TEXT NOT NULL,
    long_output TEXT NOT NULL,
    perfdata    TEXT NOT NULL,          -- JSON array of perfdata items
    duration_ms REAL NOT NULL,
    exit_code   INTEGER,
    executed_at INTEGER NOT NULL,       -- ms since the epoch, by the producer's clock
    received_at INTEGER NOT NULL        -- ms since the epoch, by the server's clock
);
CREATE INDEX results_by_check ON results (check_name, entity, executed_at);
CREATE INDEX results_by_received ON results (received_at);

-- The latest state of each (check, entity) pair: the event state machine's output, as JSON,
-- with the fields queries filter on copied into columns.
CREATE TABLE events (
    check_name      TEXT NOT NULL,
    entity          TEXT NOT NULL,
    status          INTEGER NOT NULL,
    executed_at     INTEGER NOT NULL,
    last_result_id  TEXT NOT NULL,
    body            TEXT NOT NULL,
    PRIMARY KEY (check_name, entity)
);

CREATE TABLE entities (
    name        TEXT PRIMARY KEY NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
);

-- Every applied spec, newest last. `files` is a JSON array of {file, text}.
CREATE TABLE spec_revisions (
    revision    INTEGER PRIMARY KEY AUTOINCREMENT,
    applied_at  INTEGER NOT NULL,
    files       TEXT NOT NULL
);

-- API tokens, stored only as SHA-256 of the secret.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    hash        BLOB NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
