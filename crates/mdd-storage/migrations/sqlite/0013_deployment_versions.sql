-- Deployment tracks are written by the server doing the once-only work; the others follow
-- them like the rest of the shared configuration.
INSERT INTO shared_versions (name, version) VALUES ('deployments', 0);
CREATE TRIGGER deployment_tracks_added AFTER INSERT ON deployment_tracks
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'deployments'; END;
CREATE TRIGGER deployment_tracks_changed AFTER UPDATE ON deployment_tracks
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'deployments'; END;
CREATE TRIGGER deployment_tracks_removed AFTER DELETE ON deployment_tracks
BEGIN UPDATE shared_versions SET version = version + 1 WHERE name = 'deployments'; END;
