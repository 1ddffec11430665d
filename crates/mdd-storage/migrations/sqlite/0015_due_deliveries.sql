-- Deliveries decided and not yet finished (delivered, or given up after the last attempt):
-- written in the same transaction as the record of what the handler was told, deleted once the
-- delivery ends. A server that starts (or takes over the once-only work) delivers what is
-- left here, so a decision made just before a crash is still delivered, with the same id.
CREATE TABLE due_deliveries (
    id         TEXT NOT NULL,
    handler    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    check_name TEXT NOT NULL,
    entity     TEXT NOT NULL,
    body       BLOB NOT NULL,
    decided_at INTEGER NOT NULL,
    PRIMARY KEY (id, handler)
);
