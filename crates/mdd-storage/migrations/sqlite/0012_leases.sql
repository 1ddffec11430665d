-- Once-only work (the server's own checks, the keepalive watchdog, retention) is done by the
-- holder of a lease. On SQLite there is only ever one server (the data directory's lock), so
-- the lease is always granted: one code path for both databases.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
