-- Deployment tracks are written by the server doing the once-only work; the others follow
-- them like the rest of the shared configuration.
INSERT INTO shared_versions (name, version) VALUES ('deployments', 0);
CREATE TRIGGER deployment_tracks_moved AFTER INSERT OR UPDATE OR DELETE ON deployment_tracks
FOR EACH STATEMENT EXECUTE FUNCTION mdd_shared_moved('deployments');
