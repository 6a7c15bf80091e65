-- Version 1, the baseline: the schema GORM's AutoMigrate made up to commit
-- e50ba32, the last vault before versioned migrations (dumped from a database
-- it created, one column a line). Never edit an applied migration: add one.

CREATE TABLE `sites` (
  `id` text,
  `name` text NOT NULL,
  `description` text,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `hosts` (
  `id` text,
  `site_id` text NOT NULL,
  `name` text NOT NULL,
  `state` text NOT NULL DEFAULT "Disconnected",
  `agent_version` text,
  `protocol_version` integer,
  `driver` text,
  `features` text,
  `last_heartbeat` datetime,
  `cert_serial` text,
  `cert_fingerprint` text,
  `cert_not_after` datetime,
  `revoked_at` datetime,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `registration_keys` (
  `id` text,
  `site_id` text NOT NULL,
  `secret_hash` text NOT NULL,
  `expires_at` datetime NOT NULL,
  `used_at` datetime,
  `used_by_host_id` text,
  `created_by` text,
  `created_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `vms` (
  `id` text,
  `host_id` text NOT NULL,
  `external_id` text NOT NULL,
  `name` text NOT NULL,
  `power_state` text NOT NULL DEFAULT "Unknown",
  `missing_since` datetime,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `disks` (
  `id` text,
  `vm_id` text NOT NULL,
  `path` text NOT NULL,
  `size_bytes` integer NOT NULL,
  `format` text,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`),
  CONSTRAINT `fk_vms_disks` FOREIGN KEY (`vm_id`) REFERENCES `vms`(`id`) ON DELETE CASCADE
);
CREATE TABLE `policies` (
  `id` text,
  `name` text NOT NULL,
  `copy_frequency_seconds` integer NOT NULL,
  `retention_hours` integer NOT NULL,
  `app_consistent_frequency_hours` integer NOT NULL,
  `initial_replication_start` datetime,
  `resync_window_start` text NOT NULL,
  `resync_window_end` text NOT NULL,
  `work_hours_start` text NOT NULL,
  `work_hours_end` text NOT NULL,
  `work_hours_mbps` integer NOT NULL,
  `off_hours_mbps` integer NOT NULL,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `targets` (
  `id` text,
  `name` text NOT NULL,
  `kind` text NOT NULL,
  `account_url` text,
  `container` text,
  `credential_kind` text,
  `credential_sealed` blob,
  `path` text,
  `create_path` numeric NOT NULL DEFAULT false,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `protections` (
  `id` text,
  `vm_id` text NOT NULL,
  `policy_id` text NOT NULL,
  `target_id` text NOT NULL,
  `replica_key` text NOT NULL DEFAULT "",
  `legacy_replica_key` text NOT NULL DEFAULT "",
  `state` text NOT NULL,
  `test_failover` numeric NOT NULL DEFAULT false,
  `health` text NOT NULL DEFAULT "Normal",
  `health_reasons` text,
  `last_error_code` text,
  `last_error_message` text,
  `first_failure_at` datetime,
  `next_retry_at` datetime,
  `last_recovery_point_at` datetime,
  `last_cycle_at` datetime,
  `failures` integer NOT NULL DEFAULT 0,
  `bytes_sent` integer NOT NULL DEFAULT 0,
  `last_cycle_bytes` integer NOT NULL DEFAULT 0,
  `last_cycle_seconds` real NOT NULL DEFAULT 0,
  `test_failover_host_id` text NOT NULL DEFAULT "",
  `test_failover_vm_id` text NOT NULL DEFAULT "",
  `test_failover_point_id` text NOT NULL DEFAULT "",
  `test_failover_at` datetime,
  `last_drill_at` datetime,
  `last_drill_point_id` text NOT NULL DEFAULT "",
  `last_drill_notes` text NOT NULL DEFAULT "",
  `failover_host_id` text NOT NULL DEFAULT "",
  `failover_vm_id` text NOT NULL DEFAULT "",
  `failover_point_id` text NOT NULL DEFAULT "",
  `failover_kind` text NOT NULL DEFAULT "",
  `failed_over_at` datetime,
  `committed_at` datetime,
  `home_vm_id` text NOT NULL DEFAULT "",
  `paused_at` datetime,
  `paused_by` text NOT NULL DEFAULT "",
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `replica_disks` (
  `id` text,
  `protection_id` text NOT NULL,
  `disk_id` text NOT NULL,
  `name` text NOT NULL,
  `source_path` text,
  `size_bytes` integer NOT NULL,
  `copied_at` datetime,
  `removed_at` datetime,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `recovery_points` (
  `id` text,
  `protection_id` text NOT NULL,
  `time` datetime NOT NULL,
  `read_started_at` datetime,
  `consistency` text NOT NULL,
  `capture` text,
  `capture_note` text,
  `app_asked` numeric NOT NULL DEFAULT false,
  `size_bytes` integer NOT NULL,
  `manifest` text,
  `snapshots` text,
  `created_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `jobs` (
  `id` text,
  `type` text NOT NULL,
  `state` text NOT NULL,
  `target_kind` text,
  `target_id` text,
  `target_name` text,
  `created_by` text,
  `started_at` datetime,
  `ended_at` datetime,
  `error_code` text,
  `error_message` text,
  `error_action` text,
  `notes` text NOT NULL DEFAULT "",
  `parent_job_id` text NOT NULL DEFAULT "",
  `payload` text,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `job_steps` (
  `id` text,
  `job_id` text NOT NULL,
  `seq` integer NOT NULL,
  `name` text NOT NULL,
  `state` text NOT NULL,
  `progress` integer NOT NULL DEFAULT 0,
  `message` text,
  `plan_kind` text NOT NULL DEFAULT "",
  `plan_ref` text NOT NULL DEFAULT "",
  `output` text,
  `started_at` datetime,
  `ended_at` datetime,
  PRIMARY KEY (`id`),
  CONSTRAINT `fk_jobs_steps` FOREIGN KEY (`job_id`) REFERENCES `jobs`(`id`) ON DELETE CASCADE
);
CREATE TABLE `tasks` (
  `id` text,
  `job_id` text,
  `step_id` text,
  `host_id` text NOT NULL,
  `protection_id` text,
  `kind` text NOT NULL,
  `payload` text,
  `state` text NOT NULL,
  `lease_expires_at` datetime,
  `attempts` integer NOT NULL DEFAULT 0,
  `not_before` datetime,
  `first_failure_at` datetime,
  `failures` integer NOT NULL DEFAULT 0,
  `expiries` integer NOT NULL DEFAULT 0,
  `cancel_request` numeric NOT NULL DEFAULT false,
  `progress_percent` integer NOT NULL DEFAULT 0,
  `progress_message` text NOT NULL DEFAULT "",
  `progress_attempt` integer NOT NULL DEFAULT 0,
  `bytes_done` integer NOT NULL DEFAULT 0,
  `bytes_total` integer NOT NULL DEFAULT 0,
  `bytes_at` datetime,
  `speed_samples` integer NOT NULL DEFAULT 0,
  `bytes_per_second` real NOT NULL DEFAULT 0,
  `result` text,
  `error_code` text,
  `error_message` text,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `recovery_plans` (
  `id` text,
  `name` text NOT NULL,
  `description` text,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `plan_groups` (
  `id` text,
  `plan_id` text NOT NULL,
  `seq` integer NOT NULL,
  `name` text NOT NULL,
  PRIMARY KEY (`id`),
  CONSTRAINT `fk_recovery_plans_groups` FOREIGN KEY (`plan_id`) REFERENCES `recovery_plans`(`id`) ON DELETE CASCADE
);
CREATE TABLE `plan_group_vms` (
  `group_id` text,
  `vm_id` text,
  `seq` integer NOT NULL,
  PRIMARY KEY (`group_id`,`vm_id`),
  CONSTRAINT `fk_plan_groups_vms` FOREIGN KEY (`group_id`) REFERENCES `plan_groups`(`id`) ON DELETE CASCADE
);
CREATE TABLE `plan_actions` (
  `id` text,
  `group_id` text NOT NULL,
  `phase` text NOT NULL,
  `seq` integer NOT NULL,
  `kind` text NOT NULL,
  `name` text NOT NULL,
  `script` text,
  `instructions` text,
  PRIMARY KEY (`id`),
  CONSTRAINT `fk_plan_groups_actions` FOREIGN KEY (`group_id`) REFERENCES `plan_groups`(`id`) ON DELETE CASCADE
);
CREATE TABLE `users` (
  `id` text,
  `username` text NOT NULL,
  `password_hash` text NOT NULL,
  `role` text NOT NULL,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `api_tokens` (
  `id` text,
  `user_id` text NOT NULL,
  `name` text NOT NULL,
  `token_hash` text NOT NULL,
  `expires_at` datetime NOT NULL,
  `last_used_at` datetime,
  `created_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `sessions` (
  `id` text,
  `user_id` text NOT NULL,
  `token_hash` text NOT NULL,
  `expires_at` datetime NOT NULL,
  `created_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `audit_events` (
  `id` text,
  `time` datetime NOT NULL,
  `actor_id` text,
  `actor` text NOT NULL,
  `action` text NOT NULL,
  `object_kind` text NOT NULL,
  `object_id` text,
  `object_name` text,
  `details` text,
  `request_id` text,
  `remote_addr` text,
  PRIMARY KEY (`id`)
);
CREATE TABLE `alerts` (
  `id` text,
  `kind` text NOT NULL,
  `severity` text NOT NULL,
  `object_kind` text,
  `object_id` text,
  `message` text NOT NULL,
  `state` text NOT NULL,
  `acknowledged_by` text,
  `acknowledged_at` datetime,
  `resolved_at` datetime,
  `resolved_by` text,
  `delivered_at` datetime,
  `delivery_attempts` integer NOT NULL DEFAULT 0,
  `delivery_error` text,
  `next_delivery_at` datetime,
  `created_at` datetime,
  `updated_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `container_cleanups` (
  `id` text,
  `target_id` text NOT NULL,
  `container` text NOT NULL,
  `attempts` integer NOT NULL DEFAULT 0,
  `last_error` text,
  `next_attempt_at` datetime,
  `created_at` datetime,
  PRIMARY KEY (`id`)
);
CREATE TABLE `rpo_history` (
  `id` text,
  `vm_id` text NOT NULL,
  `time` datetime NOT NULL,
  `hour` datetime NOT NULL,
  `hourly` numeric NOT NULL DEFAULT false,
  `max_rpo_seconds` real NOT NULL,
  `rpo_seconds` real NOT NULL,
  `cycles` integer NOT NULL DEFAULT 0,
  `baseline` numeric NOT NULL DEFAULT false,
  `bytes_sent` integer NOT NULL DEFAULT 0,
  `transfer_seconds` real NOT NULL DEFAULT 0,
  PRIMARY KEY (`id`)
);
CREATE UNIQUE INDEX `idx_sites_name` ON `sites`(`name`);
CREATE INDEX `idx_hosts_cert_serial` ON `hosts`(`cert_serial`);
CREATE INDEX `idx_hosts_site_id` ON `hosts`(`site_id`);
CREATE UNIQUE INDEX `idx_registration_keys_secret_hash` ON `registration_keys`(`secret_hash`);
CREATE INDEX `idx_registration_keys_site_id` ON `registration_keys`(`site_id`);
CREATE INDEX `idx_vms_name` ON `vms`(`name`);
CREATE UNIQUE INDEX `idx_vm_host_external` ON `vms`(`host_id`,`external_id`);
CREATE INDEX `idx_disks_vm_id` ON `disks`(`vm_id`);
CREATE UNIQUE INDEX `idx_policies_name` ON `policies`(`name`);
CREATE UNIQUE INDEX `idx_targets_name` ON `targets`(`name`);
CREATE INDEX `idx_protections_target_id` ON `protections`(`target_id`);
CREATE INDEX `idx_protections_policy_id` ON `protections`(`policy_id`);
CREATE UNIQUE INDEX `idx_protections_vm_id` ON `protections`(`vm_id`);
CREATE INDEX `idx_replica_disks_disk_id` ON `replica_disks`(`disk_id`);
CREATE INDEX `idx_replica_disks_protection_id` ON `replica_disks`(`protection_id`);
CREATE INDEX `idx_recovery_points_time` ON `recovery_points`(`time`);
CREATE INDEX `idx_recovery_points_protection_id` ON `recovery_points`(`protection_id`);
CREATE INDEX `idx_jobs_created_at` ON `jobs`(`created_at`);
CREATE INDEX `idx_jobs_parent_job_id` ON `jobs`(`parent_job_id`);
CREATE INDEX `idx_jobs_target_id` ON `jobs`(`target_id`);
CREATE INDEX `idx_jobs_state` ON `jobs`(`state`);
CREATE INDEX `idx_jobs_type` ON `jobs`(`type`);
CREATE INDEX `idx_job_steps_job_id` ON `job_steps`(`job_id`);
CREATE INDEX `idx_tasks_not_before` ON `tasks`(`not_before`);
CREATE INDEX `idx_tasks_state` ON `tasks`(`state`);
CREATE INDEX `idx_tasks_protection_id` ON `tasks`(`protection_id`);
CREATE INDEX `idx_tasks_host_id` ON `tasks`(`host_id`);
CREATE INDEX `idx_tasks_job_id` ON `tasks`(`job_id`);
CREATE UNIQUE INDEX `idx_recovery_plans_name` ON `recovery_plans`(`name`);
CREATE INDEX `idx_plan_groups_plan_id` ON `plan_groups`(`plan_id`);
CREATE INDEX `idx_plan_actions_group_id` ON `plan_actions`(`group_id`);
CREATE UNIQUE INDEX `idx_users_username` ON `users`(`username`);
CREATE UNIQUE INDEX `idx_api_tokens_token_hash` ON `api_tokens`(`token_hash`);
CREATE INDEX `idx_api_tokens_user_id` ON `api_tokens`(`user_id`);
CREATE UNIQUE INDEX `idx_sessions_token_hash` ON `sessions`(`token_hash`);
CREATE INDEX `idx_sessions_user_id` ON `sessions`(`user_id`);
CREATE INDEX `idx_audit_events_action` ON `audit_events`(`action`);
CREATE INDEX `idx_audit_events_time` ON `audit_events`(`time`);
CREATE INDEX `idx_alerts_created_at` ON `alerts`(`created_at`);
CREATE INDEX `idx_alerts_state` ON `alerts`(`state`);
CREATE INDEX `idx_alerts_object_id` ON `alerts`(`object_id`);
CREATE INDEX `idx_alerts_kind` ON `alerts`(`kind`);
CREATE INDEX `idx_container_cleanups_next_attempt_at` ON `container_cleanups`(`next_attempt_at`);
CREATE INDEX `idx_rpo_history_time` ON `rpo_history`(`time`);
CREATE INDEX `idx_rpo_history_vm_time` ON `rpo_history`(`vm_id`,`time`);
