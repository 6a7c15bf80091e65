-- Version 1, the baseline: the schema GORM's AutoMigrate made up to commit
-- e50ba32, the last vault before versioned migrations (pg_dump of a database
-- it created). Names are unqualified: the vault's schema is the first of its
-- search_path. Never edit an applied migration: add one.
CREATE TABLE alerts (
    id character varying(40) NOT NULL,
    kind character varying(40) NOT NULL,
    severity character varying(20) NOT NULL,
    object_kind character varying(30),
    object_id character varying(40),
    message character varying(2000) NOT NULL,
    state character varying(20) NOT NULL,
    acknowledged_by character varying(100),
    acknowledged_at timestamp with time zone,
    resolved_at timestamp with time zone,
    resolved_by character varying(100),
    delivered_at timestamp with time zone,
    delivery_attempts bigint DEFAULT 0 NOT NULL,
    delivery_error character varying(1000),
    next_delivery_at timestamp with time zone,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE api_tokens (
    id character varying(40) NOT NULL,
    user_id character varying(40) NOT NULL,
    name character varying(100) NOT NULL,
    token_hash character varying(64) NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    last_used_at timestamp with time zone,
    created_at timestamp with time zone
);

CREATE TABLE audit_events (
    id character varying(40) NOT NULL,
    "time" timestamp with time zone NOT NULL,
    actor_id character varying(40),
    actor character varying(100) NOT NULL,
    action character varying(60) NOT NULL,
    object_kind character varying(30) NOT NULL,
    object_id character varying(40),
    object_name character varying(200),
    details text,
    request_id character varying(64),
    remote_addr character varying(64)
);

CREATE TABLE container_cleanups (
    id character varying(40) NOT NULL,
    target_id character varying(40) NOT NULL,
    container character varying(63) NOT NULL,
    attempts bigint DEFAULT 0 NOT NULL,
    last_error character varying(1000),
    next_attempt_at timestamp with time zone,
    created_at timestamp with time zone
);

CREATE TABLE disks (
    id character varying(40) NOT NULL,
    vm_id character varying(40) NOT NULL,
    path character varying(1000) NOT NULL,
    size_bytes bigint NOT NULL,
    format character varying(20),
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE hosts (
    id character varying(40) NOT NULL,
    site_id character varying(40) NOT NULL,
    name character varying(200) NOT NULL,
    state character varying(20) DEFAULT 'Disconnected'::character varying NOT NULL,
    agent_version character varying(50),
    protocol_version bigint,
    driver character varying(30),
    features character varying(2000),
    last_heartbeat timestamp with time zone,
    cert_serial character varying(80),
    cert_fingerprint character varying(80),
    cert_not_after timestamp with time zone,
    revoked_at timestamp with time zone,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE job_steps (
    id character varying(40) NOT NULL,
    job_id character varying(40) NOT NULL,
    seq bigint NOT NULL,
    name character varying(200) NOT NULL,
    state character varying(20) NOT NULL,
    progress bigint DEFAULT 0 NOT NULL,
    message character varying(2000),
    plan_kind character varying(10) DEFAULT ''::character varying NOT NULL,
    plan_ref character varying(40) DEFAULT ''::character varying NOT NULL,
    output text,
    started_at timestamp with time zone,
    ended_at timestamp with time zone
);

CREATE TABLE jobs (
    id character varying(40) NOT NULL,
    type character varying(60) NOT NULL,
    state character varying(20) NOT NULL,
    target_kind character varying(30),
    target_id character varying(40),
    target_name character varying(200),
    created_by character varying(100),
    started_at timestamp with time zone,
    ended_at timestamp with time zone,
    error_code character varying(80),
    error_message character varying(2000),
    error_action character varying(2000),
    notes character varying(2000) DEFAULT ''::character varying NOT NULL,
    parent_job_id character varying(40) DEFAULT ''::character varying NOT NULL,
    payload text,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE plan_actions (
    id character varying(40) NOT NULL,
    group_id character varying(40) NOT NULL,
    phase character varying(10) NOT NULL,
    seq bigint NOT NULL,
    kind character varying(10) NOT NULL,
    name character varying(100) NOT NULL,
    script character varying(1000),
    instructions character varying(2000)
);

CREATE TABLE plan_group_vms (
    group_id character varying(40) NOT NULL,
    vm_id character varying(40) NOT NULL,
    seq bigint NOT NULL
);

CREATE TABLE plan_groups (
    id character varying(40) NOT NULL,
    plan_id character varying(40) NOT NULL,
    seq bigint NOT NULL,
    name character varying(100) NOT NULL
);

CREATE TABLE policies (
    id character varying(40) NOT NULL,
    name character varying(100) NOT NULL,
    copy_frequency_seconds bigint NOT NULL,
    retention_hours bigint NOT NULL,
    app_consistent_frequency_hours bigint NOT NULL,
    initial_replication_start timestamp with time zone,
    resync_window_start character varying(5) NOT NULL,
    resync_window_end character varying(5) NOT NULL,
    work_hours_start character varying(5) NOT NULL,
    work_hours_end character varying(5) NOT NULL,
    work_hours_mbps bigint NOT NULL,
    off_hours_mbps bigint NOT NULL,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE protections (
    id character varying(40) NOT NULL,
    vm_id character varying(40) NOT NULL,
    policy_id character varying(40) NOT NULL,
    target_id character varying(40) NOT NULL,
    replica_key character varying(200) DEFAULT ''::character varying NOT NULL,
    legacy_replica_key character varying(200) DEFAULT ''::character varying NOT NULL,
    state character varying(30) NOT NULL,
    test_failover boolean DEFAULT false NOT NULL,
    health character varying(20) DEFAULT 'Normal'::character varying NOT NULL,
    health_reasons text,
    last_error_code character varying(80),
    last_error_message character varying(2000),
    first_failure_at timestamp with time zone,
    next_retry_at timestamp with time zone,
    last_recovery_point_at timestamp with time zone,
    last_cycle_at timestamp with time zone,
    failures bigint DEFAULT 0 NOT NULL,
    bytes_sent bigint DEFAULT 0 NOT NULL,
    last_cycle_bytes bigint DEFAULT 0 NOT NULL,
    last_cycle_seconds numeric DEFAULT 0 NOT NULL,
    test_failover_host_id character varying(40) DEFAULT ''::character varying NOT NULL,
    test_failover_vm_id character varying(200) DEFAULT ''::character varying NOT NULL,
    test_failover_point_id character varying(40) DEFAULT ''::character varying NOT NULL,
    test_failover_at timestamp with time zone,
    last_drill_at timestamp with time zone,
    last_drill_point_id character varying(40) DEFAULT ''::character varying NOT NULL,
    last_drill_notes character varying(2000) DEFAULT ''::character varying NOT NULL,
    failover_host_id character varying(40) DEFAULT ''::character varying NOT NULL,
    failover_vm_id character varying(200) DEFAULT ''::character varying NOT NULL,
    failover_point_id character varying(40) DEFAULT ''::character varying NOT NULL,
    failover_kind character varying(20) DEFAULT ''::character varying NOT NULL,
    failed_over_at timestamp with time zone,
    committed_at timestamp with time zone,
    home_vm_id character varying(40) DEFAULT ''::character varying NOT NULL,
    paused_at timestamp with time zone,
    paused_by character varying(100) DEFAULT ''::character varying NOT NULL,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE recovery_plans (
    id character varying(40) NOT NULL,
    name character varying(100) NOT NULL,
    description character varying(500),
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE recovery_points (
    id character varying(40) NOT NULL,
    protection_id character varying(40) NOT NULL,
    "time" timestamp with time zone NOT NULL,
    read_started_at timestamp with time zone,
    consistency character varying(20) NOT NULL,
    capture character varying(20),
    capture_note character varying(1000),
    app_asked boolean DEFAULT false NOT NULL,
    size_bytes bigint NOT NULL,
    manifest character varying(500),
    snapshots text,
    created_at timestamp with time zone
);

CREATE TABLE registration_keys (
    id character varying(40) NOT NULL,
    site_id character varying(40) NOT NULL,
    secret_hash character varying(64) NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    used_at timestamp with time zone,
    used_by_host_id character varying(40),
    created_by character varying(100),
    created_at timestamp with time zone
);

CREATE TABLE replica_disks (
    id character varying(40) NOT NULL,
    protection_id character varying(40) NOT NULL,
    disk_id character varying(40) NOT NULL,
    name character varying(500) NOT NULL,
    source_path character varying(1000),
    size_bytes bigint NOT NULL,
    copied_at timestamp with time zone,
    removed_at timestamp with time zone,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE rpo_history (
    id character varying(40) NOT NULL,
    vm_id character varying(40) NOT NULL,
    "time" timestamp with time zone NOT NULL,
    hour timestamp with time zone NOT NULL,
    hourly boolean DEFAULT false NOT NULL,
    max_rpo_seconds numeric NOT NULL,
    rpo_seconds numeric NOT NULL,
    cycles bigint DEFAULT 0 NOT NULL,
    baseline boolean DEFAULT false NOT NULL,
    bytes_sent bigint DEFAULT 0 NOT NULL,
    transfer_seconds numeric DEFAULT 0 NOT NULL
);

CREATE TABLE sessions (
    id character varying(40) NOT NULL,
    user_id character varying(40) NOT NULL,
    token_hash character varying(64) NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone
);

CREATE TABLE sites (
    id character varying(40) NOT NULL,
    name character varying(100) NOT NULL,
    description character varying(500),
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE targets (
    id character varying(40) NOT NULL,
    name character varying(100) NOT NULL,
    kind character varying(20) NOT NULL,
    account_url character varying(500),
    container character varying(63),
    credential_kind character varying(20),
    credential_sealed bytea,
    path character varying(1000),
    create_path boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE tasks (
    id character varying(40) NOT NULL,
    job_id character varying(40),
    step_id character varying(40),
    host_id character varying(40) NOT NULL,
    protection_id character varying(40),
    kind character varying(60) NOT NULL,
    payload text,
    state character varying(20) NOT NULL,
    lease_expires_at timestamp with time zone,
    attempts bigint DEFAULT 0 NOT NULL,
    not_before timestamp with time zone,
    first_failure_at timestamp with time zone,
    failures bigint DEFAULT 0 NOT NULL,
    expiries bigint DEFAULT 0 NOT NULL,
    cancel_request boolean DEFAULT false NOT NULL,
    progress_percent bigint DEFAULT 0 NOT NULL,
    progress_message character varying(500) DEFAULT ''::character varying NOT NULL,
    progress_attempt bigint DEFAULT 0 NOT NULL,
    bytes_done bigint DEFAULT 0 NOT NULL,
    bytes_total bigint DEFAULT 0 NOT NULL,
    bytes_at timestamp with time zone,
    speed_samples bigint DEFAULT 0 NOT NULL,
    bytes_per_second numeric DEFAULT 0 NOT NULL,
    result text,
    error_code character varying(80),
    error_message character varying(2000),
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE users (
    id character varying(40) NOT NULL,
    username character varying(64) NOT NULL,
    password_hash character varying(100) NOT NULL,
    role character varying(20) NOT NULL,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

CREATE TABLE vms (
    id character varying(40) NOT NULL,
    host_id character varying(40) NOT NULL,
    external_id character varying(200) NOT NULL,
    name character varying(200) NOT NULL,
    power_state character varying(20) DEFAULT 'Unknown'::character varying NOT NULL,
    missing_since timestamp with time zone,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);

ALTER TABLE ONLY alerts
    ADD CONSTRAINT alerts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY api_tokens
    ADD CONSTRAINT api_tokens_pkey PRIMARY KEY (id);

ALTER TABLE ONLY audit_events
    ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY container_cleanups
    ADD CONSTRAINT container_cleanups_pkey PRIMARY KEY (id);

ALTER TABLE ONLY disks
    ADD CONSTRAINT disks_pkey PRIMARY KEY (id);

ALTER TABLE ONLY hosts
    ADD CONSTRAINT hosts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY job_steps
    ADD CONSTRAINT job_steps_pkey PRIMARY KEY (id);

ALTER TABLE ONLY jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY plan_actions
    ADD CONSTRAINT plan_actions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY plan_group_vms
    ADD CONSTRAINT plan_group_vms_pkey PRIMARY KEY (group_id, vm_id);

ALTER TABLE ONLY plan_groups
    ADD CONSTRAINT plan_groups_pkey PRIMARY KEY (id);

ALTER TABLE ONLY policies
    ADD CONSTRAINT policies_pkey PRIMARY KEY (id);

ALTER TABLE ONLY protections
    ADD CONSTRAINT protections_pkey PRIMARY KEY (id);

ALTER TABLE ONLY recovery_plans
    ADD CONSTRAINT recovery_plans_pkey PRIMARY KEY (id);

ALTER TABLE ONLY recovery_points
    ADD CONSTRAINT recovery_points_pkey PRIMARY KEY (id);

ALTER TABLE ONLY registration_keys
    ADD CONSTRAINT registration_keys_pkey PRIMARY KEY (id);

ALTER TABLE ONLY replica_disks
    ADD CONSTRAINT replica_disks_pkey PRIMARY KEY (id);

ALTER TABLE ONLY rpo_history
    ADD CONSTRAINT rpo_history_pkey PRIMARY KEY (id);

ALTER TABLE ONLY sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY sites
    ADD CONSTRAINT sites_pkey PRIMARY KEY (id);

ALTER TABLE ONLY targets
    ADD CONSTRAINT targets_pkey PRIMARY KEY (id);

ALTER TABLE ONLY tasks
    ADD CONSTRAINT tasks_pkey PRIMARY KEY (id);

ALTER TABLE ONLY users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);

ALTER TABLE ONLY vms
    ADD CONSTRAINT vms_pkey PRIMARY KEY (id);

CREATE INDEX idx_alerts_created_at ON alerts USING btree (created_at);

CREATE INDEX idx_alerts_kind ON alerts USING btree (kind);

CREATE INDEX idx_alerts_object_id ON alerts USING btree (object_id);

CREATE INDEX idx_alerts_state ON alerts USING btree (state);

CREATE UNIQUE INDEX idx_api_tokens_token_hash ON api_tokens USING btree (token_hash);

CREATE INDEX idx_api_tokens_user_id ON api_tokens USING btree (user_id);

CREATE INDEX idx_audit_events_action ON audit_events USING btree (action);

CREATE INDEX idx_audit_events_time ON audit_events USING btree ("time");

CREATE INDEX idx_container_cleanups_next_attempt_at ON container_cleanups USING btree (next_attempt_at);

CREATE INDEX idx_disks_vm_id ON disks USING btree (vm_id);

CREATE INDEX idx_hosts_cert_serial ON hosts USING btree (cert_serial);

CREATE INDEX idx_hosts_site_id ON hosts USING btree (site_id);

CREATE INDEX idx_job_steps_job_id ON job_steps USING btree (job_id);

CREATE INDEX idx_jobs_created_at ON jobs USING btree (created_at);

CREATE INDEX idx_jobs_parent_job_id ON jobs USING btree (parent_job_id);

CREATE INDEX idx_jobs_state ON jobs USING btree (state);

CREATE INDEX idx_jobs_target_id ON jobs USING btree (target_id);

CREATE INDEX idx_jobs_type ON jobs USING btree (type);

CREATE INDEX idx_plan_actions_group_id ON plan_actions USING btree (group_id);

CREATE INDEX idx_plan_groups_plan_id ON plan_groups USING btree (plan_id);

CREATE UNIQUE INDEX idx_policies_name ON policies USING btree (name);

CREATE INDEX idx_protections_policy_id ON protections USING btree (policy_id);

CREATE INDEX idx_protections_target_id ON protections USING btree (target_id);

CREATE UNIQUE INDEX idx_protections_vm_id ON protections USING btree (vm_id);

CREATE UNIQUE INDEX idx_recovery_plans_name ON recovery_plans USING btree (name);

CREATE INDEX idx_recovery_points_protection_id ON recovery_points USING btree (protection_id);

CREATE INDEX idx_recovery_points_time ON recovery_points USING btree ("time");

CREATE UNIQUE INDEX idx_registration_keys_secret_hash ON registration_keys USING btree (secret_hash);

CREATE INDEX idx_registration_keys_site_id ON registration_keys USING btree (site_id);

CREATE INDEX idx_replica_disks_disk_id ON replica_disks USING btree (disk_id);

CREATE INDEX idx_replica_disks_protection_id ON replica_disks USING btree (protection_id);

CREATE INDEX idx_rpo_history_time ON rpo_history USING btree ("time");

CREATE INDEX idx_rpo_history_vm_time ON rpo_history USING btree (vm_id, "time");

CREATE UNIQUE INDEX idx_sessions_token_hash ON sessions USING btree (token_hash);

CREATE INDEX idx_sessions_user_id ON sessions USING btree (user_id);

CREATE UNIQUE INDEX idx_sites_name ON sites USING btree (name);

CREATE UNIQUE INDEX idx_targets_name ON targets USING btree (name);

CREATE INDEX idx_tasks_host_id ON tasks USING btree (host_id);

CREATE INDEX idx_tasks_job_id ON tasks USING btree (job_id);

CREATE INDEX idx_tasks_not_before ON tasks USING btree (not_before);

CREATE INDEX idx_tasks_protection_id ON tasks USING btree (protection_id);

CREATE INDEX idx_tasks_state ON tasks USING btree (state);

CREATE UNIQUE INDEX idx_users_username ON users USING btree (username);

CREATE UNIQUE INDEX idx_vm_host_external ON vms USING btree (host_id, external_id);

CREATE INDEX idx_vms_name ON vms USING btree (name);

ALTER TABLE ONLY job_steps
    ADD CONSTRAINT fk_jobs_steps FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE;

ALTER TABLE ONLY plan_actions
    ADD CONSTRAINT fk_plan_groups_actions FOREIGN KEY (group_id) REFERENCES plan_groups(id) ON DELETE CASCADE;

ALTER TABLE ONLY plan_group_vms
    ADD CONSTRAINT fk_plan_groups_vms FOREIGN KEY (group_id) REFERENCES plan_groups(id) ON DELETE CASCADE;

ALTER TABLE ONLY plan_groups
    ADD CONSTRAINT fk_recovery_plans_groups FOREIGN KEY (plan_id) REFERENCES recovery_plans(id) ON DELETE CASCADE;

ALTER TABLE ONLY disks
    ADD CONSTRAINT fk_vms_disks FOREIGN KEY (vm_id) REFERENCES vms(id) ON DELETE CASCADE;
