-- Version 2: indexes for the scheduler's and the agents' hot queries.
--  - protections by state: every scheduler pass reads the Protected VMs
--    (and those needing a resync); there was no index on state.
--  - tasks by host and state: each agent's poll leases its host's queued
--    tasks (and reads its cancel requests).
--  - tasks by protection and state: "is a task of this VM waiting or
--    running?", asked for every VM at every pass.
--  - tasks by state and lease expiry: the lease reaper's expired leases.
--  - recovery points by protection and time: a VM's points, newest first
--    (its last app-consistent point at every cycle, its points page).
-- The single-column indexes each of these begins with are dropped: the
-- composite one answers their queries, and tasks are written often.
CREATE INDEX `idx_protections_state` ON `protections`(`state`);
CREATE INDEX `idx_tasks_host_state` ON `tasks`(`host_id`,`state`);
DROP INDEX `idx_tasks_host_id`;
CREATE INDEX `idx_tasks_protection_state` ON `tasks`(`protection_id`,`state`);
DROP INDEX `idx_tasks_protection_id`;
CREATE INDEX `idx_tasks_state_lease` ON `tasks`(`state`,`lease_expires_at`);
DROP INDEX `idx_tasks_state`;
CREATE INDEX `idx_recovery_points_protection_time` ON `recovery_points`(`protection_id`,`time`);
DROP INDEX `idx_recovery_points_protection_id`;
