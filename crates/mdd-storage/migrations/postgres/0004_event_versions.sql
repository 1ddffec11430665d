-- Events are folded in the transaction that stores their results (several servers on one
-- database): each carries a version, one up with every fold that writes it, and the id of the
-- transaction that wrote it last, which is what every server's change feed reads by.
ALTER TABLE events ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN changed_xid BIGINT NOT NULL DEFAULT pg_current_xact_id()::text::bigint;
CREATE INDEX events_changed_xid ON events (changed_xid);
