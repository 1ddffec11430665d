-- Silences (mdd_core::silence::Silence as JSON). Expired ones are deleted by the server.
CREATE TABLE silences (
    id TEXT PRIMARY KEY NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER
);
