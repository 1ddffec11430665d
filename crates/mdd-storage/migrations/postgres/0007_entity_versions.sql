-- An entity deleted through one server of a cluster: the others drop its events too.
INSERT INTO shared_versions (name, version) VALUES ('entities', 0);
CREATE TRIGGER entities_removed AFTER DELETE ON entities
FOR EACH STATEMENT EXECUTE FUNCTION mdd_shared_moved('entities');
