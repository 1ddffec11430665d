-- Who wrote an event last (the server's name): a server's change feed leaves out what it wrote
-- itself, which it holds in memory already. Its feed reads by transaction id from a snapshot
-- (the transactions that had not ended then), so a row is read once.
ALTER TABLE events ADD COLUMN changed_by TEXT NOT NULL DEFAULT '';
