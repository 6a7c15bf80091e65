package agentproto

// Task error codes: how a task ended badly, as the agent reports it and
// the vault acts on it. Each is in the error table (errors.go) with its
// cause and action; code that sets or matches one uses these names.
const (
	CodePrerequisitesFailed  = "prerequisites_failed"
	CodeDiskUnreadable       = "disk_unreadable"
	CodeDiskResized          = "disk_resized"
	CodeReplicaMissing       = "replica_missing"
	CodeReplicaMismatch      = "replica_mismatch"
	CodeTargetUnavailable    = "target_unavailable"
	CodeTargetNotWritable    = "target_not_writable"
	CodeTargetFull           = "target_full"
	CodeTargetNotSupported   = "target_not_supported"
	CodeStorageAccessDenied  = "storage_access_denied"
	CodeStorageSASExpired    = "storage_sas_expired"
	CodeStorageThrottled     = "storage_throttled"
	CodeStorageTimeout       = "storage_timeout"
	CodeStorageConflict      = "storage_conflict"
	CodeStorageUnavailable   = "storage_unavailable"
	CodeStorageCredentials   = "storage_credentials_unavailable"
	CodeStorageRejected      = "storage_rejected"
	CodeVMNotFound           = "vm_not_found"
	CodeInvalidPayload       = "invalid_payload"
	CodeUnknownTaskKind      = "unknown_task_kind"
	CodeAgentRestarted       = "agent_restarted"
	CodeTaskFailed           = "task_failed"
	CodeLeaseExpired         = "lease_expired"
	CodeCancelled            = "cancelled"
	CodeProtectionDisabled   = "protection_disabled"
	CodeHostRevoked          = "host_revoked"
	CodeReplicaLocked        = "replica_locked"
	CodePointNotFound        = "point_not_found"
	CodeDiskRemoved          = "disk_removed"
	CodeInconsistentPoints   = "inconsistent_points"
	CodeAppConsistencyMissed = "app_consistency_missed"
	CodeReplicaAliased       = "replica_aliased"
	CodeReplicaShared        = "replica_shared"
	CodeAgentUpgradeRequired = "agent_upgrade_required"
	CodeReplicaClaimed       = "replica_location_claimed"
	// Recovery (failover) tasks.
	CodeVMNotMaterialized    = "vm_not_materialized"
	CodeVMWillNotStop        = "vm_will_not_stop"
	CodeVMStartFailed        = "vm_start_failed"
	CodeRecoveryHostFull     = "recovery_host_full"
	CodeRecoveryVMExists     = "recovery_vm_exists"
	CodeHostDisconnected     = "host_disconnected"
	CodeVMRunning            = "vm_running"
	CodeScriptFailed         = "script_failed"
	CodeFailbackDiskMismatch = "failback_disk_mismatch"
	// Rebuilding the vault from replica storage (lifeboat-vault rebuild).
	CodeRebuildNotATarget  = "rebuild_not_a_target"
	CodeRebuildNoManifests = "rebuild_no_manifests"
	CodeRebuildVaultInUse  = "rebuild_vault_in_use"
	CodeAwaitingHost       = "awaiting_host"
	CodeReplicaUndescribed = "replica_undescribed"
)

// Vault start-up: the database's schema is not one this vault runs on.
const (
	CodeSchemaTooNew       = "schema_too_new"
	CodeSchemaDiverged     = "schema_diverged"
	CodeSchemaUnrecognized = "schema_unrecognized"
)
