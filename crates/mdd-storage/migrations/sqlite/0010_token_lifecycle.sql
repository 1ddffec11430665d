-- Token lifecycle: when a token was last used (written now and then, not on every request), when
-- it expires, how many uses an enrollment token has left, and what an enrollment grants the
-- agents that present it (JSON: {"subscriptions": [...], "labels": {...}}).
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN uses_left INTEGER;
ALTER TABLE tokens ADD COLUMN grants TEXT;
