// Package agentproto holds the wire types of the agent endpoint, /agent/v1:
// registration, heartbeat, long-poll for tasks, task progress and results,
// and inventory. Both the vault and the agent import it; it imports only
// the standard library.
//
// Every call but Register travels over mutual TLS: the agent presents the
// client certificate the vault signed at registration, and the vault knows
// the host by it. Register itself is authenticated by the one-time secret of
// a registration key, and the agent authenticates the vault by pinning the
// SHA-256 fingerprint of the vault CA that the key carries.
package agentproto

import (
	"encoding/json"
	"time"
)

// ProtocolVersion is the version of this protocol. It only goes up; the
// vault accepts agents from MinProtocolVersion to ProtocolVersion.
//
//	1 (2026-11-28): registration, renewal, heartbeat, poll, progress, result, inventory.
//	2 (2026-11-28): tasks/{id}/storage-credentials: a SAS for a task on an Azure Blob target.
//	3 (2026-12-03): replicas named by the vault's VM id (ReplicationPayload.ReplicaKey,
//	   LegacyReplicaKey; feature replica_keys); disks added to a VM (ReplicaDisk.New);
//	   captures that say their consistency (inconsistent), instant and method
//	   (ReplicateResult.ReadStartedAt, Capture, CaptureNote); the attempt on progress and
//	   results; the vault sends no task kind an agent does not list in its features.
const ProtocolVersion = 3

// MinProtocolVersion is the oldest agent protocol the vault still serves.
const MinProtocolVersion = 1

// Paths of the agent endpoint.
const (
	PathRegister  = "/agent/v1/register"
	PathRenew     = "/agent/v1/renew"
	PathHeartbeat = "/agent/v1/heartbeat"
	PathPoll      = "/agent/v1/poll"
	PathInventory = "/agent/v1/inventory"
	// PathTaskPrefix is followed by a task id and "/progress" or "/result".
	PathTaskPrefix = "/agent/v1/tasks/"
)

// TaskProgressPath is where progress of task id is reported.
func TaskProgressPath(id string) string { return PathTaskPrefix + id + "/progress" }

// TaskResultPath is where the end of task id is reported.
func TaskResultPath(id string) string { return PathTaskPrefix + id + "/result" }

// TaskStorageCredentialsPath is where a task on an Azure Blob target gets
// its SAS tokens.
func TaskStorageCredentialsPath(id string) string {
	return PathTaskPrefix + id + "/storage-credentials"
}

// StorageCredentialsRequest asks for a SAS for the task's VM container
// (empty fields), or for one snapshot of one blob in it.
type StorageCredentialsRequest struct {
	Blob     string `json:"blob,omitempty"`
	Snapshot string `json:"snapshot,omitempty"`
}

// StorageCredentials is a SAS token for the VM's container, or for one
// snapshot in it, valid until ExpiresAt. Agents never get the account key.
type StorageCredentials struct {
	ContainerURL string    `json:"container_url"`
	SAS          string    `json:"sas"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// MaxRequestBytes bounds every request body of the agent endpoint.
const MaxRequestBytes = 1 << 20

// RegistrationKey is the JSON file an operator downloads from the portal and
// gives to `lifeboat-agent register`.
type RegistrationKey struct {
	VaultURL      string    `json:"vault_url"`
	CAFingerprint string    `json:"ca_fingerprint"` // hex SHA-256 of the vault CA certificate (DER)
	Secret        string    `json:"secret"`
	SiteID        string    `json:"site_id"`
	SiteName      string    `json:"site_name"`
	ExpiresAt     time.Time `json:"expires_at"`
}

// AgentInfo describes the agent in every call that can change it.
type AgentInfo struct {
	Version         string   `json:"version"`
	ProtocolVersion int      `json:"protocol_version"`
	Features        []string `json:"features"`
	Driver          string   `json:"driver"`
	Hostname        string   `json:"hostname"`
}

// RegisterRequest asks the vault to admit a host and sign its certificate.
type RegisterRequest struct {
	Secret string    `json:"secret"`
	Name   string    `json:"name"`
	CSR    string    `json:"csr"` // PEM "CERTIFICATE REQUEST"
	Agent  AgentInfo `json:"agent"`
}

// RegisterResponse carries the host's identity and credential.
type RegisterResponse struct {
	HostID      string    `json:"host_id"`
	SiteID      string    `json:"site_id"`
	Certificate string    `json:"certificate"` // PEM, signed by the vault CA
	CA          string    `json:"ca"`          // PEM of the vault CA
	Intervals   Intervals `json:"intervals"`
}

// RenewRequest asks for a new certificate for a new key, before the current
// one expires. It travels over mutual TLS with the current certificate.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// RenewResponse is the new certificate.
type RenewResponse struct {
	Certificate string `json:"certificate"`
}

// Intervals are how often the vault wants to hear from the agent.
type Intervals struct {
	HeartbeatSeconds int `json:"heartbeat_seconds"`
	PollWaitSeconds  int `json:"poll_wait_seconds"` // longest the vault holds a poll
	ProgressSeconds  int `json:"progress_seconds"`
}

// HeartbeatRequest says the agent is alive.
type HeartbeatRequest struct {
	Agent AgentInfo `json:"agent"`
	Time  time.Time `json:"time"` // the agent's clock, for skew checks
}

// HeartbeatResponse answers it.
type HeartbeatResponse struct {
	ServerTime time.Time `json:"server_time"`
	Intervals  Intervals `json:"intervals"`
}

// PollRequest asks for work; the vault holds it up to PollWaitSeconds when
// there is none.
type PollRequest struct {
	Agent   AgentInfo `json:"agent"`
	Running []string  `json:"running"` // ids of tasks the agent is running now
	Free    int       `json:"free"`    // how many more tasks it can take
}

// PollResponse carries new tasks and the ids of tasks to cancel.
type PollResponse struct {
	Tasks     []Task    `json:"tasks"`
	Cancel    []string  `json:"cancel"`
	Intervals Intervals `json:"intervals"`
}

// Task is work for this host, leased until LeaseExpiresAt; progress reports
// extend the lease.
type Task struct {
	ID             string          `json:"id"`
	Kind           string          `json:"kind"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	Attempt        int             `json:"attempt"`
	LeaseExpiresAt time.Time       `json:"lease_expires_at"`
}

// Features an agent may list in AgentInfo.Features, besides the task
// kinds it runs.
const (
	FeatureInventory = "inventory"
	// FeatureReplicaKeys: the agent keeps replicas under the payload's
	// ReplicaKey (the vault's VM id) and moves legacy ones there.
	FeatureReplicaKeys = "replica_keys"
	// FeatureInstantFailover: the agent's driver can start a recovered VM
	// at once on disks served from the recovery point while it copies
	// them to local disks (MaterializePayload.Instant).
	FeatureInstantFailover = "instant_failover"
	// FeatureMoveSeed: the agent can seed another target for a move: a
	// replicate task copies a disk marked New whole, whatever its driver's
	// change tracking says (tracked changes count from the disk's last
	// capture, into another replica), and with KeepTracking leaves that
	// tracking to the old replica (2026-12-07).
	FeatureMoveSeed = "move_seed"
)

// Task kinds.
const (
	TaskCheckPrerequisites = "check_prerequisites"
	// Protection: check, create the replicas, replicate (one cycle: initial
	// or delta, ending with a recovery point).
	TaskProtectionCheck = "protection_check"
	TaskCreateReplica   = "create_replica"
	TaskReplicate       = "replicate"
	// TaskVerify reads a recovery point back and checks every block
	// against its recorded hash (payload: ReplicationPayload with PointID).
	TaskVerify = "verify"
	// TaskResync repairs a replica: blocks whose stored content no longer
	// matches their recorded hash are marked unknown, then a cycle sends
	// every block that differs from the source, and makes a point.
	TaskResync = "resync"
	// TaskDeleteReplica deletes a VM's replicas and recovery points from
	// the target (protection disabled with its data deleted).
	TaskDeleteReplica = "delete_replica"
)

// VerifyResult is the result of TaskVerify.
type VerifyResult struct {
	PointID       string     `json:"point_id"`
	BlocksChecked int64      `json:"blocks_checked"`
	Mismatches    []Mismatch `json:"mismatches"`
}

// Mismatch is a block whose content no longer matches its hash.
type Mismatch struct {
	Disk   string `json:"disk"`
	Offset int64  `json:"offset"`
}

// ReplicationPayload is the payload of the protection tasks.
type ReplicationPayload struct {
	ProtectionID string `json:"protection_id"`
	VMID         string `json:"vm_id"` // the VM's id on the host
	VMName       string `json:"vm_name,omitempty"`
	// ReplicaKey names the VM's replicas on the target: the vault's id of
	// the VM, unique across hosts (protocol 2). LegacyReplicaKey, when set,
	// is where replicas made before that were kept (the host-local id):
	// the agent moves them to ReplicaKey.
	ReplicaKey       string `json:"replica_key,omitempty"`
	LegacyReplicaKey string `json:"legacy_replica_key,omitempty"`
	Target           struct {
		Kind string `json:"kind"`           // "directory" or "azure_blob"
		Path string `json:"path,omitempty"` // directory: where the VMs' replicas are
		// MustExist, directory: the path must be there already (the
		// target does not allow creating it); a host without it fails the
		// protection check. Absent from an older vault: created as before.
		MustExist bool `json:"must_exist,omitempty"`
		// InUse, directory: the vault knows replicas of other VMs there,
		// so the path must hold the target's marker file: an empty mount
		// point (the share not mounted) is not the target.
		InUse bool `json:"in_use,omitempty"`
		// azure_blob: the VM's container; the agent asks the vault for a
		// SAS to reach it (TaskStorageCredentialsPath).
		ContainerURL string `json:"container_url,omitempty"`
	} `json:"target"`
	Disks          []ReplicaDisk `json:"disks"`
	PointID        string        `json:"point_id,omitempty"` // replicate: the id of the point to create
	RetentionHours int           `json:"retention_hours"`    // replicate: prune points older than this
	MinFreeBytes   int64         `json:"min_free_bytes,omitempty"`
	// AppConsistent asks for an application-consistent point: the agent
	// quiesces the VM (filedisk: its freeze command) for the cycle. An agent
	// that cannot quiesce makes a crash-consistent point and says so.
	AppConsistent bool `json:"app_consistent,omitempty"`
	// CheckReplica, on a resync: read the replica back and resend blocks
	// whose content no longer matches their stored hash (the storage changed
	// them). Without it only the stored hashes are compared.
	CheckReplica bool `json:"check_replica,omitempty"`
	// KeepTracking, on a move's seed into another target: release the
	// capture without acknowledging it to the driver, so its change
	// tracking still describes the replica on the old target (which the VM
	// keeps if the move does not finish); the new replica's first cycle
	// then sends a superset of its changes, which is correct
	// (FeatureMoveSeed).
	KeepTracking bool `json:"keep_tracking,omitempty"`
	// KeepReplicaRoot, on a move's deletion of the old replica: the new
	// target's directory, whose replica of the VM must survive. The agent
	// deletes nothing when the old replica is that same directory, or holds
	// it (one path an alias of the other: a symlink, a second mount).
	KeepReplicaRoot string `json:"keep_replica_root,omitempty"`
	// ResyncThresholdPercent, on a scheduled cycle: when a disk's changes
	// since the last cycle reach this share of its size, the agent sends
	// nothing more and ends with CodeResyncRequired; the vault then runs a
	// resync in the policy's resync window. 0: no limit.
	ResyncThresholdPercent int `json:"resync_threshold_percent,omitempty"`
	// BandwidthMbps caps the cycle's writes, in Mbit/s (0: no limit): the
	// policy's limit for work or off hours at the time the cycle starts.
	BandwidthMbps int `json:"bandwidth_mbps,omitempty"`
	// KeepPoints are points retention must not delete: a recovery waits
	// to read them (a test failover queued beside the cycles).
	KeepPoints []string `json:"keep_points,omitempty"`
	// Descriptor says which VM the replicas are of; the agent keeps it
	// beside them (vm.json) whenever it differs from the stored one, so
	// that replica storage describes itself to a vault rebuilt without
	// its database (lifeboat-vault rebuild). Absent from an older vault.
	Descriptor *ReplicaDescriptor `json:"descriptor,omitempty"`
}

// ReplicaDescriptorFormat is the version of ReplicaDescriptor; it only
// goes up, and a reader takes the fields it knows.
const ReplicaDescriptorFormat = 1

// ReplicaDescriptor describes the VM whose replicas sit beside it on the
// target: the vault's ids, the host's, the disks and the policy. It holds
// no secret and nothing that changes every cycle.
type ReplicaDescriptor struct {
	Format int `json:"format"`
	// VaultVMID is the vault's id of the VM replicated now; ReplicaKey the
	// replicas' name on the target (the id of the VM first protected).
	VaultVMID    string `json:"vault_vm_id"`
	ReplicaKey   string `json:"replica_key"`
	ProtectionID string `json:"protection_id"`
	// ExternalID is the VM's id on its host (the driver's); with HostName
	// it finds the VM again when the host registers with a rebuilt vault.
	ExternalID string           `json:"external_id"`
	Name       string           `json:"name"`
	HostName   string           `json:"host_name"`
	SiteName   string           `json:"site_name"`
	TargetName string           `json:"target_name,omitempty"` // the vault's name of the target
	Disks      []DescribedDisk  `json:"disks"`
	Policy     *DescribedPolicy `json:"policy,omitempty"`
}

// DescribedDisk is one replicated disk of a ReplicaDescriptor.
type DescribedDisk struct {
	ReplicaID string `json:"replica_id"` // its replica's name on the target
	DiskID    string `json:"disk_id"`    // the vault's id of the source disk
	Path      string `json:"path"`       // the source disk on its host
	SizeBytes int64  `json:"size_bytes"`
	Format    string `json:"format,omitempty"`
}

// DescribedPolicy is the replication policy a VM was protected under.
type DescribedPolicy struct {
	Name                        string `json:"name"`
	CopyFrequencySeconds        int    `json:"copy_frequency_seconds"`
	RetentionHours              int    `json:"retention_hours"`
	AppConsistentFrequencyHours int    `json:"app_consistent_frequency_hours"`
	ResyncWindowStart           string `json:"resync_window_start"`
	ResyncWindowEnd             string `json:"resync_window_end"`
	WorkHoursStart              string `json:"work_hours_start"`
	WorkHoursEnd                string `json:"work_hours_end"`
	WorkHoursMbps               int    `json:"work_hours_mbps"`
	OffHoursMbps                int    `json:"off_hours_mbps"`
}

// ReplicaDisk is one source disk and its replica's id.
type ReplicaDisk struct {
	ReplicaID string `json:"replica_id"`
	Path      string `json:"path"`
	SizeBytes int64  `json:"size_bytes"`
	// New: the disk has no replica yet (it was added to a protected VM);
	// the cycle creates it, and its initial copy is not held to the
	// resync threshold.
	New bool `json:"new,omitempty"`
}

// ReplicateResult is the result of TaskReplicate.
type ReplicateResult struct {
	PointID string `json:"point_id"`
	// Time is the capture instant; for an inconsistent point, when the read
	// ended, and ReadStartedAt when it began.
	Time          time.Time  `json:"time"`
	ReadStartedAt *time.Time `json:"read_started_at,omitempty"`
	Consistency   string     `json:"consistency"` // app, crash or inconsistent
	// Capture says how the disks were held (freeze, reflink, powered_off,
	// unchanged, live); CaptureNote why the point is less consistent than
	// asked, if it is.
	Capture     string `json:"capture,omitempty"`
	CaptureNote string `json:"capture_note,omitempty"`
	SizeBytes   int64  `json:"size_bytes"` // the disks' total size at the point
	// DiskSizes is each replica's size at the point, by replica id: a disk
	// that grew has a larger replica now.
	DiskSizes map[string]int64 `json:"disk_sizes,omitempty"`
	BytesSent int64            `json:"bytes_sent"`
	// TransferSeconds is how long the cycle took from its first read to
	// its point: with BytesSent, the replication throughput.
	TransferSeconds float64  `json:"transfer_seconds,omitempty"`
	Pruned          []string `json:"pruned"` // point ids deleted by retention
	// Points are the ids of every recovery point on the target after the
	// task: the vault forgets any other it knows (one a run cut short
	// pruned without saying so). Empty from an agent that does not say.
	Points []string `json:"points,omitempty"`
	// Repaired counts the replica blocks a resync found changed by the
	// storage (and so sent again).
	Repaired int64 `json:"repaired_blocks,omitempty"`
}

// Progress is a task's progress report.
type Progress struct {
	// Attempt is the run that reports (Task.Attempt); the vault answers
	// CodeLeaseLost to a run it gave up on.
	Attempt    int    `json:"attempt,omitempty"`
	Step       string `json:"step"`
	Percent    int    `json:"percent"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Message    string `json:"message"`
}

// ProgressResponse tells the agent whether to go on.
type ProgressResponse struct {
	Cancel         bool      `json:"cancel"`
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
}

// Result ends a task: a result, or an error.
type Result struct {
	// Attempt is the run that ended (Task.Attempt): the vault refuses the
	// result of a run it gave up on (CodeLeaseLost), so one run is one
	// attempt.
	Attempt int             `json:"attempt,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *TaskError      `json:"error,omitempty"`
}

// TaskError is why a task failed. Recoverable errors may be retried.
type TaskError struct {
	Code        string `json:"code"`
	Message     string `json:"message"`
	Recoverable bool   `json:"recoverable"`
}

func (e *TaskError) Error() string { return e.Code + ": " + e.Message }

// Inventory is the complete list of a host's VMs.
type Inventory struct {
	VMs []VM `json:"vms"`
}

// Power states of a VM.
const (
	PowerRunning = "Running"
	PowerOff     = "Off"
	PowerUnknown = "Unknown"
)

// VM is one VM as the host's driver sees it.
type VM struct {
	ID         string `json:"id"` // stable on this host
	Name       string `json:"name"`
	PowerState string `json:"power_state"` // PowerRunning, PowerOff, PowerUnknown
	Disks      []Disk `json:"disks"`
}

// Disk is one virtual disk.
type Disk struct {
	Path      string `json:"path"`
	SizeBytes int64  `json:"size_bytes"`
	Format    string `json:"format"` // raw, qcow2, vhdx, ...
}

// PrerequisitesPayload is the payload of TaskCheckPrerequisites.
type PrerequisitesPayload struct {
	MinFreeBytes int64 `json:"min_free_bytes"`
}

// PrerequisitesResult is the result of TaskCheckPrerequisites.
type PrerequisitesResult struct {
	Checks []Check `json:"checks"`
}

// Check is one prerequisite and how it fared.
type Check struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// ErrorBody is every error answer of the agent endpoint.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the error inside ErrorBody.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes the agent acts on.
const (
	CodeUnauthenticated      = "unauthenticated"       // no, unknown or revoked certificate: stop; register again
	CodeIncompatibleProtocol = "incompatible_protocol" // upgrade the agent or the vault
	CodeRegistrationKey      = "registration_key_invalid"
	CodeLeaseLost            = "lease_lost" // the task is no longer this host's: drop it
	// CodeResyncRequired ends a scheduled cycle that found more pending
	// changes than its payload's ResyncThresholdPercent of a disk.
	CodeResyncRequired = "resync_required"
)

// Recovery task kinds (DESIGN.md §5a): the recovery host reads a point from
// the target and makes a VM of it; the source host shuts its VM down.
const (
	// TaskMaterialize creates a VM on the recovery host from a recovery
	// point (payload MaterializePayload, result MaterializeResult) and, when
	// asked, starts it. It only reads the replica.
	TaskMaterialize = "materialize"
	// TaskShutdownVM shuts a VM down gracefully and waits until it is off
	// (payload PowerPayload, result PowerResult). It fails, saying the VM
	// may still run, when it does not stop in time: a planned failover then
	// stops.
	TaskShutdownVM = "shutdown_vm"
	// TaskStartVM powers a VM on (payload PowerPayload, result PowerResult):
	// the source VM again after a failover that did not happen.
	TaskStartVM = "start_vm"
	// TaskRemoveVM stops and deletes a VM that a TaskMaterialize made
	// (payload PowerPayload): a test failover's cleanup. A VM Lifeboat did
	// not make is refused (CodeVMNotMaterialized).
	TaskRemoveVM = "remove_vm"
	// TaskCommitPoint keeps a recovery point and deletes the points older
	// than it from the target (payload ReplicationPayload with PointID,
	// result CommitResult): a failover's commit.
	TaskCommitPoint = "commit_point"
)

// MaterializePayload is the payload of TaskMaterialize.
type MaterializePayload struct {
	// Replication names the target, the replicas (ReplicaKey) and the
	// source VM's disks: a disk's file name on the recovery side is its
	// source file's name.
	Replication ReplicationPayload `json:"replication"`
	// PointID is the recovery point to read. The vault fills it in when it
	// hands the task out, from PointChoice, when the point is only known
	// then (the one a failover's final cycle made).
	PointID     string `json:"point_id"`
	PointChoice string `json:"point_choice,omitempty"`
	// VMID and VMName are the new VM's id and name on the recovery host.
	VMID   string `json:"vm_id"`
	VMName string `json:"vm_name"`
	// SourceVMID is the vault's id of the protected VM, recorded with the
	// new VM so that only VMs Lifeboat made are ever removed.
	SourceVMID string `json:"source_vm_id"`
	// Test marks a test failover's VM: it starts isolated.
	Test bool `json:"test,omitempty"`
	// Start starts the VM once its disks are written.
	Start bool `json:"start,omitempty"`
	// Replace allows a VM of this id that a materialize made before to be
	// stopped and overwritten (another recovery point after a failover).
	Replace bool `json:"replace,omitempty"`
	// WriteBack, for a failback to the original VM: VMID is a VM that
	// exists, is off, and has a disk file of each disk's name; only the
	// blocks of its disks that differ from the point are written.
	WriteBack bool `json:"write_back,omitempty"`
	// Instant starts the VM at once on disks read from the recovery point
	// while they are copied to local disks; the task ends when the copy
	// does (the VM runs from its own disks then). Only for agents listing
	// FeatureInstantFailover; Start must be set.
	Instant bool `json:"instant,omitempty"`
}

// MaterializeResult is the result of TaskMaterialize.
type MaterializeResult struct {
	VM      VM     `json:"vm"` // the new VM as the inventory lists it
	PointID string `json:"point_id"`
	// BytesWritten counts the data written (zero runs stay holes).
	BytesWritten int64   `json:"bytes_written"`
	BytesRead    int64   `json:"bytes_read"`
	Seconds      float64 `json:"seconds"`
	Started      bool    `json:"started"`
	Isolated     bool    `json:"isolated,omitempty"`
}

// PowerPayload names a VM on the host for TaskShutdownVM, TaskStartVM and
// TaskRemoveVM.
type PowerPayload struct {
	VMID string `json:"vm_id"`
	// TimeoutSeconds bounds a graceful shutdown (0: the agent's default,
	// 5 minutes).
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// PowerResult is what the power tasks found and left.
type PowerResult struct {
	WasRunning bool   `json:"was_running"`
	PowerState string `json:"power_state"` // after the task
}

// CommitResult is the result of TaskCommitPoint.
type CommitResult struct {
	PointID string   `json:"point_id"`
	Deleted []string `json:"deleted"` // the older points it deleted
	// Points are every recovery point on the target after the commit.
	Points []string `json:"points"`
}

// TaskRunScript runs a recovery plan's script on the recovery host
// (payload ScriptPayload, result ScriptResult). A script that exits with
// a status other than 0, or outlives its timeout, fails the task with
// CodeScriptFailed, its output's tail in the message. It is not run again
// by itself: a script may not be idempotent.
const TaskRunScript = "run_script"

// ScriptPayload is the payload of TaskRunScript.
type ScriptPayload struct {
	// Path is the script's absolute path on the host.
	Path string `json:"path"`
	// Context is given to the script on its standard input and in the
	// file LIFEBOAT_CONTEXT names: the plan, the failover type, the
	// direction, the group and the VM map (PlanContext).
	Context        json.RawMessage `json:"context"`
	TimeoutSeconds int             `json:"timeout_seconds"`
}

// ScriptResult is what a script printed (its last 64 KiB, stdout and
// stderr together) and its exit status.
type ScriptResult struct {
	ExitCode int    `json:"exit_code"`
	Output   string `json:"output"`
}

// PlanContext is what a recovery plan's script is told.
type PlanContext struct {
	Plan struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"plan"`
	JobID string `json:"job_id"`
	// FailoverType is test_failover, cleanup_test_failover,
	// planned_failover, unplanned_failover or commit.
	FailoverType string `json:"failover_type"`
	// Direction is primary_to_recovery, or recovery_to_primary for a
	// failback.
	Direction string `json:"direction"`
	Group     struct {
		Seq  int    `json:"seq"`
		Name string `json:"name"`
	} `json:"group"`
	Phase  string      `json:"phase"` // pre or post
	Action string      `json:"action"`
	VMs    []PlanVMMap `json:"vms"`
}

// PlanVMMap maps a VM of the plan to its recovered VM.
type PlanVMMap struct {
	SourceID       string `json:"source_id"`
	SourceName     string `json:"source_name"`
	RecoveryID     string `json:"recovery_id"`
	RecoveryName   string `json:"recovery_name"`
	RecoveryHostID string `json:"recovery_host_id"`
	Group          string `json:"group"`
}
