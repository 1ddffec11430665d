-- What agents say about themselves in keepalives (subscriptions, labels, host facts, their
-- keepalive timeouts), as JSON, and when the last keepalive came.
ALTER TABLE entities ADD COLUMN info TEXT;
ALTER TABLE entities ADD COLUMN last_keepalive INTEGER;
