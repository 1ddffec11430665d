-- Once-only work (the server's own checks, the keepalive watchdog, retention) is done by the
-- holder of a lease, timed by the database's clock (servers' clocks differ). The epoch goes up
-- whenever the lease changes hands.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
