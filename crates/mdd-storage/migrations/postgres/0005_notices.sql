-- What handlers may need to hear, written by the fold that made the change, in its own
-- transaction (an outbox): the server doing the once-only work takes them in order and decides
-- each once, whichever server folded it. SQLite has one server, whose writer hands notices to
-- its notifier directly.
CREATE TABLE notices (
    seq   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body  TEXT NOT NULL
);
