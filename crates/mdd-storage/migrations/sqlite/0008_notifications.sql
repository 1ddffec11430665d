-- What handlers were told. `deliveries` is each handler's delivery log (the newest few hundred
-- per handler are kept); `notified` holds the incidents a handler was told about and has not
-- yet been told are resolved, so that a restart neither forgets a resolution nor repeats an
-- incident.
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    handler TEXT NOT NULL,
    at INTEGER NOT NULL,
    check_name TEXT NOT NULL,
    entity TEXT NOT NULL,
    kind TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    output TEXT NOT NULL
);
CREATE INDEX deliveries_by_handler ON deliveries (handler, id);
CREATE TABLE notified (
    handler TEXT NOT NULL,
    check_name TEXT NOT NULL,
    entity TEXT NOT NULL,
    status INTEGER NOT NULL,
    notified_at INTEGER NOT NULL,
    PRIMARY KEY (handler, check_name, entity)
);
