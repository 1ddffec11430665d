-- What each deployment has been through (first green per check, done, regressions), as the
-- JSON of mdd_core::deployment::Track: written when it changes, read at start.
CREATE TABLE deployment_tracks (
    name TEXT PRIMARY KEY NOT NULL,
    track TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
