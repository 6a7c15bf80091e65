-- Version 2: indexes for the scheduler's and the agents' hot queries (see
-- migrations/sqlite/0002_scheduler_indexes.sql for why each). Built inside
-- the migration's transaction, not CONCURRENTLY: the vault's tables are
-- metadata, small, and no vault serves while it migrates.
CREATE INDEX idx_protections_state ON protections USING btree (state);
CREATE INDEX idx_tasks_host_state ON tasks USING btree (host_id, state);
DROP INDEX idx_tasks_host_id;
CREATE INDEX idx_tasks_protection_state ON tasks USING btree (protection_id, state);
DROP INDEX idx_tasks_protection_id;
CREATE INDEX idx_tasks_state_lease ON tasks USING btree (state, lease_expires_at);
DROP INDEX idx_tasks_state;
CREATE INDEX idx_recovery_points_protection_time ON recovery_points USING btree (protection_id, "time");
DROP INDEX idx_recovery_points_protection_id;
