-- Deliveries decided and not yet finished (delivered, or given up after the last attempt):
-- written in the same transaction as the record of what the handler was told, deleted once the
-- delivery ends. The server that takes over the once-only work delivers what is left here, so
-- a decision made by a server killed before delivering it is still delivered, with its id.
CREATE TABLE due_deliveries (
    id         TEXT NOT NULL,
    handler    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    check_name TEXT NOT NULL,
    entity     TEXT NOT NULL,
    body       BYTEA NOT NULL,
    decided_at BIGINT NOT NULL,
    PRIMARY KEY (id, handler)
);
