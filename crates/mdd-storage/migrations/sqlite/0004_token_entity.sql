-- An agent token may be bound to one entity: it can then report only for that entity and the
-- proxy entities its checks name.
ALTER TABLE tokens ADD COLUMN entity TEXT;
