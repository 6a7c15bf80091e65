package agentproto

// Task error codes: how a task ended badly, as the agent reports it and
// the vault acts on it. Each is in the error table (errors.go) with its
// cause and action; code that sets or matches one uses these names.
const (
	CodePrerequisitesFailed = "prerequisites_failed"
	CodeDiskUnreadable      = "disk_unreadable"
	CodeDiskResized         = "disk_resized"
	CodeReplicaMissing      = "replica_missing"
	CodeReplicaMismatch     = "replica_mismatch"
	CodeTargetUnavailable   = "target_unavailable"
	CodeTargetNotWritable   = "target_not_writable"
	CodeTargetFull          = "target_full"
	CodeTargetNotSupported  = "target_not_supported"
	CodeStorageAccessDenied = "storage_access_denied"
	CodeStorageSASExpired   = "storage_sas_expired"
	CodeStorageThrottled    = "storage_throttled"
	CodeStorageTimeout      = "storage_timeout"
	CodeStorageConflict     = "storage_conflict"
	CodeStorageUnavailable  = "storage_unavailable"
	CodeStorageCredentials  = "storage_credentials_unavailable"
	CodeStorageRejected     = "storage_rejected"
	CodeFreezeFailed        = "freeze_failed"
	CodeVMNotFound          = "vm_not_found"
	CodeInvalidPayload      = "invalid_payload"
	CodeUnknownTaskKind     = "unknown_task_kind"
	CodeAgentRestarted      = "agent_restarted"
	CodeTaskFailed          = "task_failed"
	CodeLeaseExpired        = "lease_expired"
	CodeCancelled           = "cancelled"
	CodeProtectionDisabled  = "protection_disabled"
	CodeHostRevoked         = "host_revoked"
	CodeReplicaLocked       = "replica_locked"
	CodePointNotFound       = "point_not_found"
)
