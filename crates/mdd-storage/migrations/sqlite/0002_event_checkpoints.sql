-- Events are derived from results. They are written as a checkpoint every second (and at
-- shutdown) instead of with every result; this records up to which result (rowid) the stored
-- events are complete, so a start after a crash replays only the results after it.
CREATE TABLE checkpoints (
    name    TEXT PRIMARY KEY NOT NULL,
    value   INTEGER NOT NULL
);
INSERT INTO checkpoints (name, value) SELECT 'events', coalesce(max(rowid), 0) FROM results;
