-- How often things break: every incident (a check on an entity stopping being OK, until it is
-- OK again) and every start of flapping, recorded as results arrive. Kept beyond the results'
-- retention: they are small, and the 30-day report needs them.
CREATE TABLE incidents (
    check_name TEXT NOT NULL,
    entity TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    PRIMARY KEY (check_name, entity, started_at)
);
CREATE INDEX incidents_open ON incidents (check_name, entity) WHERE ended_at IS NULL;
CREATE INDEX incidents_ended ON incidents (ended_at);
CREATE TABLE flaps (
    check_name TEXT NOT NULL,
    entity TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (check_name, entity, at)
);
