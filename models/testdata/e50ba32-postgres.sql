-- The previous release's database, with data: made by the vault of commit
-- e50ba32 (the last before versioned migrations) in a models test that
-- protected a VM through its cycles, with users, tokens, a plan and an
-- alert, then dumped with pg_dump --inserts (the schema
-- name stripped). The upgrade tests load it and
-- open it with this vault. Never regenerate it with a later vault.
--
-- PostgreSQL database dump
--


-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: SCHEMA; Type: SCHEMA; Schema: -; Owner: -
--



SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: alerts; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: api_tokens; Type: TABLE; Schema: SCHEMA; Owner: -
--

CREATE TABLE api_tokens (
    id character varying(40) NOT NULL,
    user_id character varying(40) NOT NULL,
    name character varying(100) NOT NULL,
    token_hash character varying(64) NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    last_used_at timestamp with time zone,
    created_at timestamp with time zone
);


--
-- Name: audit_events; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: container_cleanups; Type: TABLE; Schema: SCHEMA; Owner: -
--

CREATE TABLE container_cleanups (
    id character varying(40) NOT NULL,
    target_id character varying(40) NOT NULL,
    container character varying(63) NOT NULL,
    attempts bigint DEFAULT 0 NOT NULL,
    last_error character varying(1000),
    next_attempt_at timestamp with time zone,
    created_at timestamp with time zone
);


--
-- Name: disks; Type: TABLE; Schema: SCHEMA; Owner: -
--

CREATE TABLE disks (
    id character varying(40) NOT NULL,
    vm_id character varying(40) NOT NULL,
    path character varying(1000) NOT NULL,
    size_bytes bigint NOT NULL,
    format character varying(20),
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);


--
-- Name: hosts; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: job_steps; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: jobs; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: plan_actions; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: plan_group_vms; Type: TABLE; Schema: SCHEMA; Owner: -
--

CREATE TABLE plan_group_vms (
    group_id character varying(40) NOT NULL,
    vm_id character varying(40) NOT NULL,
    seq bigint NOT NULL
);


--
-- Name: plan_groups; Type: TABLE; Schema: SCHEMA; Owner: -
--

CREATE TABLE plan_groups (
    id character varying(40) NOT NULL,
    plan_id character varying(40) NOT NULL,
    seq bigint NOT NULL,
    name character varying(100) NOT NULL
);


--
-- Name: policies; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: protections; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: recovery_plans; Type: TABLE; Schema: SCHEMA; Owner: -
--

CREATE TABLE recovery_plans (
    id character varying(40) NOT NULL,
    name character varying(100) NOT NULL,
    description character varying(500),
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);


--
-- Name: recovery_points; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: registration_keys; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: replica_disks; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: rpo_history; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: sessions; Type: TABLE; Schema: SCHEMA; Owner: -
--

CREATE TABLE sessions (
    id character varying(40) NOT NULL,
    user_id character varying(40) NOT NULL,
    token_hash character varying(64) NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone
);


--
-- Name: sites; Type: TABLE; Schema: SCHEMA; Owner: -
--

CREATE TABLE sites (
    id character varying(40) NOT NULL,
    name character varying(100) NOT NULL,
    description character varying(500),
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);


--
-- Name: targets; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: tasks; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Name: users; Type: TABLE; Schema: SCHEMA; Owner: -
--

CREATE TABLE users (
    id character varying(40) NOT NULL,
    username character varying(64) NOT NULL,
    password_hash character varying(100) NOT NULL,
    role character varying(20) NOT NULL,
    created_at timestamp with time zone,
    updated_at timestamp with time zone
);


--
-- Name: vms; Type: TABLE; Schema: SCHEMA; Owner: -
--

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


--
-- Data for Name: alerts; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO alerts VALUES ('alert_01m99bcynheg4f901xygxxg3x5', 'HostDisconnected', 'Warning', 'host', 'host_01m99bcyk9txet41dtdcaszzhc', 'host hv has sent no heartbeat since its registration; check that its agent runs and can reach the vault', 'Active', '', NULL, NULL, '', NULL, 0, '', NULL, '2026-03-09 11:12:00+00', '2026-03-09 11:12:00+00');


--
-- Data for Name: api_tokens; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO api_tokens VALUES ('tok_01m99bcyn34pbaw2k4t20g3csr', 'user_01m99bcyn1yy142dztvmh4h085', 'ci', 'e407bfb4c341f7b677e0a96879206c98a29fa539fcc24a860da598f745f3f9d3', '2026-03-10 10:12:00+00', NULL, '2026-03-09 10:12:00+00');


--
-- Data for Name: audit_events; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO audit_events VALUES ('aud_01m99bcyk9txet41dtdavfabht', '2026-03-09 10:00:00+00', 'user_alice', 'alice', 'site.create', 'site', 'site_01m99bcyk8hy9sbq3f3p6n1jjk', 's', '{"ID":"site_01m99bcyk8hy9sbq3f3p6n1jjk","Name":"s","Description":"","CreatedAt":"2026-03-09T10:00:00Z","UpdatedAt":"2026-03-09T10:00:00Z"}', 'req-42', '192.0.2.7');
INSERT INTO audit_events VALUES ('aud_01m99bcyka2mfx8z4yjxg7n040', '2026-03-09 10:00:00+00', 'user_alice', 'alice', 'host.create', 'host', 'host_01m99bcyk9txet41dtdcaszzhc', 'hv', '{"site":"s"}', 'req-42', '192.0.2.7');
INSERT INTO audit_events VALUES ('aud_01m99bcykfx5e8rf1kd2xw779w', '2026-03-09 10:00:00+00', 'user_alice', 'alice', 'policy.create', 'policy', 'pol_01m99bcykej72rqpjjz272ec8c', 'p', '{"ID":"pol_01m99bcykej72rqpjjz272ec8c","Name":"p","CopyFrequencySeconds":300,"RetentionHours":24,"AppConsistentFrequencyHours":4,"InitialReplicationStart":null,"ResyncWindowStart":"18:30","ResyncWindowEnd":"06:00","WorkHoursStart":"08:00","WorkHoursEnd":"18:00","WorkHoursMbps":0,"OffHoursMbps":0,"CreatedAt":"2026-03-09T10:00:00Z","UpdatedAt":"2026-03-09T10:00:00Z"}', 'req-42', '192.0.2.7');
INSERT INTO audit_events VALUES ('aud_01m99bcykhdp16vn1py9bssed2', '2026-03-09 10:00:00+00', 'user_alice', 'alice', 'target.create', 'target', 'tgt_01m99bcykg4k129sygfam4nea1', 'nas', '{"account_url":"","container":"","create_path":"false","credential_kind":"","kind":"directory","path":"/srv/lifeboat/nas"}', 'req-42', '192.0.2.7');
INSERT INTO audit_events VALUES ('aud_01m99bcykv771cac5wer1y40v8', '2026-03-09 10:00:00+00', 'user_alice', 'alice', 'protection.enable', 'vm', 'vm_01m99bcykbd206hxby6fb0fpk1', 'vm web', '{"policy":"p","target":"nas"}', 'req-42', '192.0.2.7');
INSERT INTO audit_events VALUES ('aud_01m99bcyn1yy142dztvphb2tge', '2026-03-09 10:12:00+00', 'user_alice', 'alice', 'user.create', 'user', 'user_01m99bcyn1yy142dztvmh4h085', 'olivia', '{"role":"Owner"}', 'req-42', '192.0.2.7');
INSERT INTO audit_events VALUES ('aud_01m99bcyn2cz89ew36d0tqzksv', '2026-03-09 10:12:00+00', 'user_alice', 'alice', 'session.login', 'user', 'user_01m99bcyn1yy142dztvmh4h085', 'olivia', '', 'req-42', '192.0.2.7');
INSERT INTO audit_events VALUES ('aud_01m99bcyn34pbaw2k4t3vxy1v6', '2026-03-09 10:12:00+00', 'user_alice', 'alice', 'token.create', 'token', 'tok_01m99bcyn34pbaw2k4t20g3csr', 'ci', '{"user":"olivia"}', 'req-42', '192.0.2.7');
INSERT INTO audit_events VALUES ('aud_01m99bcyn4e5gag199x67c3gsj', '2026-03-09 10:12:00+00', 'user_alice', 'alice', 'registration_key.create', 'site', 'site_01m99bcyk8hy9sbq3f3p6n1jjk', 's', '{"expires_at":"2026-03-14T10:12:00Z","key_id":"rk_01m99bcyn4e5gag199x4qvmza4"}', 'req-42', '192.0.2.7');
INSERT INTO audit_events VALUES ('aud_01m99bcyn7nfbydtxc9k3m6efx', '2026-03-09 10:12:00+00', 'user_alice', 'alice', 'recovery_plan.create', 'recovery_plan', 'plan_01m99bcyn5r6f5trmwhn4cvtsz', 'web tier', '{"Name":"web tier","Description":"","Groups":[{"Name":"front","VMIDs":["vm_01m99bcykbd206hxby6fb0fpk1"],"Actions":[{"Phase":"post","Kind":"manual","Name":"check","Script":"","Instructions":"look at it"}]}]}', 'req-42', '192.0.2.7');


--
-- Data for Name: container_cleanups; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--



--
-- Data for Name: disks; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO disks VALUES ('disk_01m99bcykc986zfj0kjcez52dc', 'vm_01m99bcykbd206hxby6fb0fpk1', '/var/lib/vms/web.qcow2', 1073741824, 'qcow2', '2026-03-09 10:00:00+00', '2026-03-09 10:12:00+00');
INSERT INTO disks VALUES ('disk_01m99bcyncdqjbew7337jhbe59', 'vm_01m99bcyncdqjbew7335mkh0fx', '/var/lib/vms/db.qcow2', 1073741824, 'qcow2', '2026-03-09 10:12:00+00', '2026-03-09 10:12:00+00');


--
-- Data for Name: hosts; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO hosts VALUES ('host_01m99bcyk9txet41dtdcaszzhc', 'site_01m99bcyk8hy9sbq3f3p6n1jjk', 'hv', 'Disconnected', '', 0, '', '', NULL, '', '', NULL, NULL, '2026-03-09 10:00:00+00', '2026-03-09 11:12:00+00');


--
-- Data for Name: job_steps; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO job_steps VALUES ('step_01m99bcykspyfe7ng2w921k7ja', 'job_01m99bcykr3qrcx1ay4khppt17', 1, 'Prerequisites check', 'Succeeded', 100, 'done', '', '', '', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');
INSERT INTO job_steps VALUES ('step_01m99bcyktwpxt9hgeqew1ny3p', 'job_01m99bcykr3qrcx1ay4khppt17', 2, 'Create replication', 'Succeeded', 100, 'done', '', '', '', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');
INSERT INTO job_steps VALUES ('step_01m99bcyktwpxt9hgeqjdhqwt0', 'job_01m99bcykr3qrcx1ay4khppt17', 3, 'Start initial replication', 'Succeeded', 100, 'done', '', '', '', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');
INSERT INTO job_steps VALUES ('step_01m99bcykv771cac5wemjp1m1w', 'job_01m99bcykr3qrcx1ay4khppt17', 4, 'Finalize protection', 'Succeeded', 100, 'protected: replication runs at the policy''s copy frequency', '', '', '', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');


--
-- Data for Name: jobs; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO jobs VALUES ('job_01m99bcykr3qrcx1ay4khppt17', 'Enable protection', 'Succeeded', 'vm', 'vm_01m99bcykbd206hxby6fb0fpk1', 'vm web', 'alice', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00', '', '', '', '', '', '', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');


--
-- Data for Name: plan_actions; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO plan_actions VALUES ('act_01m99bcyn7nfbydtxc9hjrbvhs', 'grp_01m99bcyn6tj009ta550avzaz3', 'post', 1, 'manual', 'check', '', 'look at it');


--
-- Data for Name: plan_group_vms; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO plan_group_vms VALUES ('grp_01m99bcyn6tj009ta550avzaz3', 'vm_01m99bcykbd206hxby6fb0fpk1', 1);


--
-- Data for Name: plan_groups; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO plan_groups VALUES ('grp_01m99bcyn6tj009ta550avzaz3', 'plan_01m99bcyn5r6f5trmwhn4cvtsz', 1, 'front');


--
-- Data for Name: policies; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO policies VALUES ('pol_01m99bcykej72rqpjjz272ec8c', 'p', 300, 24, 4, NULL, '18:30', '06:00', '08:00', '18:00', 0, 0, '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');


--
-- Data for Name: protections; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO protections VALUES ('prot_01m99bcykmhn8td651bze4vfrm', 'vm_01m99bcykbd206hxby6fb0fpk1', 'pol_01m99bcykej72rqpjjz272ec8c', 'tgt_01m99bcykg4k129sygfam4nea1', 'vm_01m99bcykbd206hxby6fb0fpk1', '', 'Protected', false, 'Normal', '[]', '', '', NULL, NULL, '2026-03-09 10:06:00+00', '2026-03-09 10:06:00+00', 0, 8192, 4096, 0, '', '', '', NULL, NULL, '', '', '', '', '', '', NULL, NULL, '', NULL, '', '2026-03-09 10:00:00+00', '2026-03-09 10:06:00+00');


--
-- Data for Name: recovery_plans; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO recovery_plans VALUES ('plan_01m99bcyn5r6f5trmwhn4cvtsz', 'web tier', '', '2026-03-09 10:12:00+00', '2026-03-09 10:12:00+00');


--
-- Data for Name: recovery_points; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO recovery_points VALUES ('rp_01m99bcykv771cac5wee6x7pt4', 'prot_01m99bcykmhn8td651bze4vfrm', '2026-03-09 10:00:00+00', NULL, 'crash', '', '', false, 1073741824, '', '', '2026-03-09 10:00:00+00');
INSERT INTO recovery_points VALUES ('rp_01m99bcymj0bmj73ek6gyjzbyc', 'prot_01m99bcykmhn8td651bze4vfrm', '2026-03-09 10:06:00+00', NULL, 'app', '', '', true, 1073741824, '', '', '2026-03-09 10:06:00+00');


--
-- Data for Name: registration_keys; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO registration_keys VALUES ('rk_01m99bcyn4e5gag199x4qvmza4', 'site_01m99bcyk8hy9sbq3f3p6n1jjk', '892f4ad52fb0c3a113bdbadd32caad5723546c387fc4167f1f0d43ca8fb0723c', '2026-03-14 10:12:00+00', NULL, '', 'alice', '2026-03-09 10:12:00+00');


--
-- Data for Name: replica_disks; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO replica_disks VALUES ('rdisk_01m99bcykmhn8td651c1r2mwjh', 'prot_01m99bcykmhn8td651bze4vfrm', 'disk_01m99bcykc986zfj0kjcez52dc', 'disk_01m99bcykc986zfj0kjcez52dc', '/var/lib/vms/web.qcow2', 1073741824, '2026-03-09 10:00:00+00', NULL, '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');


--
-- Data for Name: rpo_history; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO rpo_history VALUES ('rpoh_01m99bcyma8ftyfht1zme80yka', 'vm_01m99bcykbd206hxby6fb0fpk1', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00', false, 0, 0, 1, true, 4096, 0);
INSERT INTO rpo_history VALUES ('rpoh_01m99bcyms8jwdktc86y28c8mb', 'vm_01m99bcykbd206hxby6fb0fpk1', '2026-03-09 10:06:00+00', '2026-03-09 10:00:00+00', false, 360, 0, 1, false, 4096, 0);


--
-- Data for Name: sessions; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO sessions VALUES ('sess_01m99bcyn2cz89ew36cyewn6hc', 'user_01m99bcyn1yy142dztvmh4h085', 'c2a7182dd3c99ab142e1106012a1bdb41154863415e5e3c7e14cb23764e24a88', '2026-03-09 22:12:00+00', '2026-03-09 10:12:00+00');


--
-- Data for Name: sites; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO sites VALUES ('site_01m99bcyk8hy9sbq3f3p6n1jjk', 's', '', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');


--
-- Data for Name: targets; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO targets VALUES ('tgt_01m99bcykg4k129sygfam4nea1', 'nas', 'directory', '', '', '', NULL, '/srv/lifeboat/nas', false, '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');


--
-- Data for Name: tasks; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO tasks VALUES ('task_01m99bcykspyfe7ng2wb0jskj0', 'job_01m99bcykr3qrcx1ay4khppt17', 'step_01m99bcykspyfe7ng2w921k7ja', 'host_01m99bcyk9txet41dtdcaszzhc', 'prot_01m99bcykmhn8td651bze4vfrm', 'protection_check', '{"protection_id":"prot_01m99bcykmhn8td651bze4vfrm","vm_id":"web","vm_name":"vm web","replica_key":"vm_01m99bcykbd206hxby6fb0fpk1","target":{"kind":"directory","path":"/srv/lifeboat/nas","must_exist":true},"disks":[{"replica_id":"disk_01m99bcykc986zfj0kjcez52dc","path":"/var/lib/vms/web.qcow2","size_bytes":1073741824,"new":true}],"retention_hours":24,"min_free_bytes":1073741824}', 'Succeeded', NULL, 1, NULL, NULL, 0, 0, false, 0, '', 0, 0, 0, NULL, 0, 0, '{}', '', '', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');
INSERT INTO tasks VALUES ('task_01m99bcyktwpxt9hgeqgy6220r', 'job_01m99bcykr3qrcx1ay4khppt17', 'step_01m99bcyktwpxt9hgeqew1ny3p', 'host_01m99bcyk9txet41dtdcaszzhc', 'prot_01m99bcykmhn8td651bze4vfrm', 'create_replica', '{"protection_id":"prot_01m99bcykmhn8td651bze4vfrm","vm_id":"web","vm_name":"vm web","replica_key":"vm_01m99bcykbd206hxby6fb0fpk1","target":{"kind":"directory","path":"/srv/lifeboat/nas","must_exist":true},"disks":[{"replica_id":"disk_01m99bcykc986zfj0kjcez52dc","path":"/var/lib/vms/web.qcow2","size_bytes":1073741824,"new":true}],"retention_hours":24,"min_free_bytes":1073741824}', 'Succeeded', NULL, 1, NULL, NULL, 0, 0, false, 0, '', 0, 0, 0, NULL, 0, 0, '{}', '', '', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');
INSERT INTO tasks VALUES ('task_01m99bcykv771cac5wej66s8he', 'job_01m99bcykr3qrcx1ay4khppt17', 'step_01m99bcyktwpxt9hgeqjdhqwt0', 'host_01m99bcyk9txet41dtdcaszzhc', 'prot_01m99bcykmhn8td651bze4vfrm', 'replicate', '{"protection_id":"prot_01m99bcykmhn8td651bze4vfrm","vm_id":"web","vm_name":"vm web","replica_key":"vm_01m99bcykbd206hxby6fb0fpk1","target":{"kind":"directory","path":"/srv/lifeboat/nas","must_exist":true},"disks":[{"replica_id":"disk_01m99bcykc986zfj0kjcez52dc","path":"/var/lib/vms/web.qcow2","size_bytes":1073741824,"new":true}],"point_id":"rp_01m99bcykv771cac5wee6x7pt4","retention_hours":24,"min_free_bytes":1073741824}', 'Succeeded', NULL, 1, NULL, NULL, 0, 0, false, 0, '', 0, 0, 0, NULL, 0, 0, '{"point_id":"rp_01m99bcykv771cac5wee6x7pt4","time":"2026-03-09T10:00:00Z","consistency":"crash","size_bytes":1073741824,"bytes_sent":4096,"pruned":null}', '', '', '2026-03-09 10:00:00+00', '2026-03-09 10:00:00+00');
INSERT INTO tasks VALUES ('task_01m99bcymk7kjn6nev26b68app', '', '', 'host_01m99bcyk9txet41dtdcaszzhc', 'prot_01m99bcykmhn8td651bze4vfrm', 'replicate', '{"protection_id":"prot_01m99bcykmhn8td651bze4vfrm","vm_id":"web","vm_name":"vm web","replica_key":"vm_01m99bcykbd206hxby6fb0fpk1","target":{"kind":"directory","path":"/srv/lifeboat/nas","must_exist":true},"disks":[{"replica_id":"disk_01m99bcykc986zfj0kjcez52dc","path":"/var/lib/vms/web.qcow2","size_bytes":1073741824}],"point_id":"rp_01m99bcymj0bmj73ek6gyjzbyc","retention_hours":24,"app_consistent":true,"resync_threshold_percent":50}', 'Succeeded', NULL, 1, NULL, NULL, 0, 0, false, 0, '', 0, 0, 0, NULL, 0, 0, '{"point_id":"rp_01m99bcymj0bmj73ek6gyjzbyc","time":"2026-03-09T10:06:00Z","consistency":"app","size_bytes":1073741824,"bytes_sent":4096,"pruned":null}', '', '', '2026-03-09 10:06:00+00', '2026-03-09 10:06:00+00');
INSERT INTO tasks VALUES ('task_01m99bcymzpc26xx371j2zh58w', '', '', 'host_01m99bcyk9txet41dtdcaszzhc', 'prot_01m99bcykmhn8td651bze4vfrm', 'replicate', '{"protection_id":"prot_01m99bcykmhn8td651bze4vfrm","vm_id":"web","vm_name":"vm web","replica_key":"vm_01m99bcykbd206hxby6fb0fpk1","target":{"kind":"directory","path":"/srv/lifeboat/nas","must_exist":true},"disks":[{"replica_id":"disk_01m99bcykc986zfj0kjcez52dc","path":"/var/lib/vms/web.qcow2","size_bytes":1073741824}],"point_id":"rp_01m99bcymzpc26xx371j16fpaa","retention_hours":24,"resync_threshold_percent":50}', 'Queued', NULL, 0, NULL, NULL, 0, 0, false, 0, '', 0, 0, 0, NULL, 0, 0, '', '', '', '2026-03-09 10:12:00+00', '2026-03-09 10:12:00+00');


--
-- Data for Name: users; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO users VALUES ('user_01m99bcyn1yy142dztvmh4h085', 'olivia', '$2a$04$kRsrS3lNnN.Wy9RBJOIVAu8rA7H8Kg0gfzX0OZgEq9nzBj1Z7tudG', 'Owner', '2026-03-09 10:12:00+00', '2026-03-09 10:12:00+00');


--
-- Data for Name: vms; Type: TABLE DATA; Schema: SCHEMA; Owner: -
--

INSERT INTO vms VALUES ('vm_01m99bcykbd206hxby6fb0fpk1', 'host_01m99bcyk9txet41dtdcaszzhc', 'web', 'vm web', 'Running', NULL, '2026-03-09 10:00:00+00', '2026-03-09 10:12:00+00');
INSERT INTO vms VALUES ('vm_01m99bcyncdqjbew7335mkh0fx', 'host_01m99bcyk9txet41dtdcaszzhc', 'db', 'vm db', 'Running', NULL, '2026-03-09 10:12:00+00', '2026-03-09 10:12:00+00');


--
-- Name: alerts alerts_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY alerts
    ADD CONSTRAINT alerts_pkey PRIMARY KEY (id);


--
-- Name: api_tokens api_tokens_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY api_tokens
    ADD CONSTRAINT api_tokens_pkey PRIMARY KEY (id);


--
-- Name: audit_events audit_events_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY audit_events
    ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id);


--
-- Name: container_cleanups container_cleanups_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY container_cleanups
    ADD CONSTRAINT container_cleanups_pkey PRIMARY KEY (id);


--
-- Name: disks disks_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY disks
    ADD CONSTRAINT disks_pkey PRIMARY KEY (id);


--
-- Name: hosts hosts_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY hosts
    ADD CONSTRAINT hosts_pkey PRIMARY KEY (id);


--
-- Name: job_steps job_steps_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY job_steps
    ADD CONSTRAINT job_steps_pkey PRIMARY KEY (id);


--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);


--
-- Name: plan_actions plan_actions_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY plan_actions
    ADD CONSTRAINT plan_actions_pkey PRIMARY KEY (id);


--
-- Name: plan_group_vms plan_group_vms_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY plan_group_vms
    ADD CONSTRAINT plan_group_vms_pkey PRIMARY KEY (group_id, vm_id);


--
-- Name: plan_groups plan_groups_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY plan_groups
    ADD CONSTRAINT plan_groups_pkey PRIMARY KEY (id);


--
-- Name: policies policies_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY policies
    ADD CONSTRAINT policies_pkey PRIMARY KEY (id);


--
-- Name: protections protections_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY protections
    ADD CONSTRAINT protections_pkey PRIMARY KEY (id);


--
-- Name: recovery_plans recovery_plans_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY recovery_plans
    ADD CONSTRAINT recovery_plans_pkey PRIMARY KEY (id);


--
-- Name: recovery_points recovery_points_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY recovery_points
    ADD CONSTRAINT recovery_points_pkey PRIMARY KEY (id);


--
-- Name: registration_keys registration_keys_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY registration_keys
    ADD CONSTRAINT registration_keys_pkey PRIMARY KEY (id);


--
-- Name: replica_disks replica_disks_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY replica_disks
    ADD CONSTRAINT replica_disks_pkey PRIMARY KEY (id);


--
-- Name: rpo_history rpo_history_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY rpo_history
    ADD CONSTRAINT rpo_history_pkey PRIMARY KEY (id);


--
-- Name: sessions sessions_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);


--
-- Name: sites sites_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY sites
    ADD CONSTRAINT sites_pkey PRIMARY KEY (id);


--
-- Name: targets targets_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY targets
    ADD CONSTRAINT targets_pkey PRIMARY KEY (id);


--
-- Name: tasks tasks_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY tasks
    ADD CONSTRAINT tasks_pkey PRIMARY KEY (id);


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- Name: vms vms_pkey; Type: CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY vms
    ADD CONSTRAINT vms_pkey PRIMARY KEY (id);


--
-- Name: idx_alerts_created_at; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_alerts_created_at ON alerts USING btree (created_at);


--
-- Name: idx_alerts_kind; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_alerts_kind ON alerts USING btree (kind);


--
-- Name: idx_alerts_object_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_alerts_object_id ON alerts USING btree (object_id);


--
-- Name: idx_alerts_state; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_alerts_state ON alerts USING btree (state);


--
-- Name: idx_api_tokens_token_hash; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE UNIQUE INDEX idx_api_tokens_token_hash ON api_tokens USING btree (token_hash);


--
-- Name: idx_api_tokens_user_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_api_tokens_user_id ON api_tokens USING btree (user_id);


--
-- Name: idx_audit_events_action; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_audit_events_action ON audit_events USING btree (action);


--
-- Name: idx_audit_events_time; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_audit_events_time ON audit_events USING btree ("time");


--
-- Name: idx_container_cleanups_next_attempt_at; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_container_cleanups_next_attempt_at ON container_cleanups USING btree (next_attempt_at);


--
-- Name: idx_disks_vm_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_disks_vm_id ON disks USING btree (vm_id);


--
-- Name: idx_hosts_cert_serial; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_hosts_cert_serial ON hosts USING btree (cert_serial);


--
-- Name: idx_hosts_site_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_hosts_site_id ON hosts USING btree (site_id);


--
-- Name: idx_job_steps_job_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_job_steps_job_id ON job_steps USING btree (job_id);


--
-- Name: idx_jobs_created_at; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_jobs_created_at ON jobs USING btree (created_at);


--
-- Name: idx_jobs_parent_job_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_jobs_parent_job_id ON jobs USING btree (parent_job_id);


--
-- Name: idx_jobs_state; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_jobs_state ON jobs USING btree (state);


--
-- Name: idx_jobs_target_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_jobs_target_id ON jobs USING btree (target_id);


--
-- Name: idx_jobs_type; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_jobs_type ON jobs USING btree (type);


--
-- Name: idx_plan_actions_group_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_plan_actions_group_id ON plan_actions USING btree (group_id);


--
-- Name: idx_plan_groups_plan_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_plan_groups_plan_id ON plan_groups USING btree (plan_id);


--
-- Name: idx_policies_name; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE UNIQUE INDEX idx_policies_name ON policies USING btree (name);


--
-- Name: idx_protections_policy_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_protections_policy_id ON protections USING btree (policy_id);


--
-- Name: idx_protections_target_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_protections_target_id ON protections USING btree (target_id);


--
-- Name: idx_protections_vm_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE UNIQUE INDEX idx_protections_vm_id ON protections USING btree (vm_id);


--
-- Name: idx_recovery_plans_name; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE UNIQUE INDEX idx_recovery_plans_name ON recovery_plans USING btree (name);


--
-- Name: idx_recovery_points_protection_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_recovery_points_protection_id ON recovery_points USING btree (protection_id);


--
-- Name: idx_recovery_points_time; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_recovery_points_time ON recovery_points USING btree ("time");


--
-- Name: idx_registration_keys_secret_hash; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE UNIQUE INDEX idx_registration_keys_secret_hash ON registration_keys USING btree (secret_hash);


--
-- Name: idx_registration_keys_site_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_registration_keys_site_id ON registration_keys USING btree (site_id);


--
-- Name: idx_replica_disks_disk_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_replica_disks_disk_id ON replica_disks USING btree (disk_id);


--
-- Name: idx_replica_disks_protection_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_replica_disks_protection_id ON replica_disks USING btree (protection_id);


--
-- Name: idx_rpo_history_time; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_rpo_history_time ON rpo_history USING btree ("time");


--
-- Name: idx_rpo_history_vm_time; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_rpo_history_vm_time ON rpo_history USING btree (vm_id, "time");


--
-- Name: idx_sessions_token_hash; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE UNIQUE INDEX idx_sessions_token_hash ON sessions USING btree (token_hash);


--
-- Name: idx_sessions_user_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_sessions_user_id ON sessions USING btree (user_id);


--
-- Name: idx_sites_name; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE UNIQUE INDEX idx_sites_name ON sites USING btree (name);


--
-- Name: idx_targets_name; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE UNIQUE INDEX idx_targets_name ON targets USING btree (name);


--
-- Name: idx_tasks_host_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_tasks_host_id ON tasks USING btree (host_id);


--
-- Name: idx_tasks_job_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_tasks_job_id ON tasks USING btree (job_id);


--
-- Name: idx_tasks_not_before; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_tasks_not_before ON tasks USING btree (not_before);


--
-- Name: idx_tasks_protection_id; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_tasks_protection_id ON tasks USING btree (protection_id);


--
-- Name: idx_tasks_state; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_tasks_state ON tasks USING btree (state);


--
-- Name: idx_users_username; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE UNIQUE INDEX idx_users_username ON users USING btree (username);


--
-- Name: idx_vm_host_external; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE UNIQUE INDEX idx_vm_host_external ON vms USING btree (host_id, external_id);


--
-- Name: idx_vms_name; Type: INDEX; Schema: SCHEMA; Owner: -
--

CREATE INDEX idx_vms_name ON vms USING btree (name);


--
-- Name: job_steps fk_jobs_steps; Type: FK CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY job_steps
    ADD CONSTRAINT fk_jobs_steps FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE;


--
-- Name: plan_actions fk_plan_groups_actions; Type: FK CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY plan_actions
    ADD CONSTRAINT fk_plan_groups_actions FOREIGN KEY (group_id) REFERENCES plan_groups(id) ON DELETE CASCADE;


--
-- Name: plan_group_vms fk_plan_groups_vms; Type: FK CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY plan_group_vms
    ADD CONSTRAINT fk_plan_groups_vms FOREIGN KEY (group_id) REFERENCES plan_groups(id) ON DELETE CASCADE;


--
-- Name: plan_groups fk_recovery_plans_groups; Type: FK CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY plan_groups
    ADD CONSTRAINT fk_recovery_plans_groups FOREIGN KEY (plan_id) REFERENCES recovery_plans(id) ON DELETE CASCADE;


--
-- Name: disks fk_vms_disks; Type: FK CONSTRAINT; Schema: SCHEMA; Owner: -
--

ALTER TABLE ONLY disks
    ADD CONSTRAINT fk_vms_disks FOREIGN KEY (vm_id) REFERENCES vms(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--


