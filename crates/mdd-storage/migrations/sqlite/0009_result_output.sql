-- What the plugin printed, as it printed it: handlers get it whole (Sensu's check.output),
-- summary, long output and perfdata stay parsed beside it. Results stored before this have
-- none; readers then write it out from the parsed parts.
ALTER TABLE results ADD COLUMN output TEXT NOT NULL DEFAULT '';
