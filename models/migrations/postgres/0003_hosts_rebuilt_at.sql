-- Version 3: hosts known only from replica storage. lifeboat-vault
-- rebuild makes a host per host name the replicas record, marked with
-- the time of the rebuild until an agent registers under that name.
ALTER TABLE hosts ADD COLUMN rebuilt_at timestamp with time zone;
