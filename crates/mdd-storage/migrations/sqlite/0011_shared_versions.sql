-- What every server of a cluster follows: a version per kind of shared configuration, moved by
-- triggers in the same transaction as the change, so no write path can forget to. A server
-- polls this one small table and reloads what moved (on SQLite there is one server, and it
-- reads back its own changes).
CREATE TABLE shared_versions (
    name     TEXT PRIMARY KEY NOT NULL,
    version  INTEGER NOT NULL
);
INSERT INTO shared_versions (name, version)
VALUES ('spec', 0), ('tokens', 0), ('silences', 0), ('sessions', 0);

-- Dashboard sessions, by the SHA-256 of the cookie (a reader of the database cannot sign in
-- with what it finds), so that a session made on one server is valid on all.
CREATE TABLE sessions (
    id_hash     BLOB PRIMARY KEY NOT NULL,
    token_id    TEXT NOT NULL,
    role        TEXT NOT NULL,
    name        TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE TRIGGER spec_revisions_moved AFTER INSERT ON spec_revisions
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'spec'; END;

CREATE TRIGGER tokens_added AFTER INSERT ON tokens
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'tokens'; END;
CREATE TRIGGER tokens_removed AFTER DELETE ON tokens
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'tokens'; END;
-- Not on last_used_at: that is written every 30 s by every server and changes no decision.
CREATE TRIGGER tokens_changed AFTER UPDATE OF role, name, entity, expires_at, uses_left, grants ON tokens
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'tokens'; END;

CREATE TRIGGER silences_added AFTER INSERT ON silences
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'silences'; END;
CREATE TRIGGER silences_changed AFTER UPDATE ON silences
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'silences'; END;
CREATE TRIGGER silences_removed AFTER DELETE ON silences
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'silences'; END;

CREATE TRIGGER sessions_removed AFTER DELETE ON sessions
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'sessions'; END;
