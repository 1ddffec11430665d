-- What every server of a cluster follows: a version per kind of shared configuration, moved by
-- triggers in the same transaction as the change, so no write path can forget to. A server
-- polls this one small table and reloads what moved. The bump also sends a NOTIFY on
-- `mdd_shared` for followers that listen; polling stays the rule (a NOTIFY is lost while a
-- follower is disconnected, and through poolers).
CREATE TABLE shared_versions (
    name     TEXT PRIMARY KEY NOT NULL,
    version  BIGINT NOT NULL
);
INSERT INTO shared_versions (name, version)
VALUES ('spec', 0), ('tokens', 0), ('silences', 0), ('sessions', 0);

-- Dashboard sessions, by the SHA-256 of the cookie (a reader of the database cannot sign in
-- with what it finds), so that a session made on one server is valid on all.
CREATE TABLE sessions (
    id_hash     BYTEA PRIMARY KEY NOT NULL,
    token_id    TEXT NOT NULL,
    role        TEXT NOT NULL,
    name        TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE FUNCTION mdd_shared_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE shared_versions SET version = version + 1 WHERE name = TG_ARGV[0];
    PERFORM pg_notify('mdd_shared', TG_ARGV[0]);
    RETURN NULL;
END
$$;

CREATE TRIGGER spec_revisions_moved AFTER INSERT ON spec_revisions
FOR EACH STATEMENT EXECUTE FUNCTION mdd_shared_moved('spec');
CREATE TRIGGER tokens_added_or_removed AFTER INSERT OR DELETE ON tokens
FOR EACH STATEMENT EXECUTE FUNCTION mdd_shared_moved('tokens');
-- Not on last_used_at: that is written every 30 s by every server and changes no decision.
CREATE TRIGGER tokens_changed AFTER UPDATE OF role, name, entity, expires_at, uses_left, grants ON tokens
FOR EACH STATEMENT EXECUTE FUNCTION mdd_shared_moved('tokens');
CREATE TRIGGER silences_moved AFTER INSERT OR UPDATE OR DELETE ON silences
FOR EACH STATEMENT EXECUTE FUNCTION mdd_shared_moved('silences');
-- By row: dropping expired sessions that are not there moves nothing.
CREATE TRIGGER sessions_removed AFTER DELETE ON sessions
FOR EACH ROW EXECUTE FUNCTION mdd_shared_moved('sessions');
