package models

import (
	"time"
)

// The database structs. They are separate from the API's JSON types and the
// views' models: converters in handlers translate, so a column rename never
// changes the API. Every table has a string primary key made by NewID.

// Site gathers hosts, usually one per datacenter or location.
type Site struct {
	ID          string `gorm:"primaryKey;size:40"`
	Name        string `gorm:"size:100;not null;uniqueIndex"`
	Description string `gorm:"size:500"`
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Host states.
const (
	HostConnected    = "Connected"
	HostDisconnected = "Disconnected"
)

// Host is a hypervisor host running one agent. Its identity is the client
// certificate the vault signed at registration.
type Host struct {
	ID              string `gorm:"primaryKey;size:40"`
	SiteID          string `gorm:"size:40;not null;index"`
	Name            string `gorm:"size:200;not null"`
	State           string `gorm:"size:20;not null;default:Disconnected"`
	AgentVersion    string `gorm:"size:50"`
	ProtocolVersion int
	Driver          string `gorm:"size:30"`
	// Features are what the agent said it can do (task kinds and more),
	// space-separated; empty until its first heartbeat says.
	Features        string `gorm:"size:2000"`
	LastHeartbeat   *time.Time
	CertSerial      string `gorm:"size:80;index"`
	CertFingerprint string `gorm:"size:80"`
	CertNotAfter    *time.Time
	RevokedAt       *time.Time
	// RebuiltAt marks a host the vault knows only from replica storage
	// (lifeboat-vault rebuild): no agent has registered as it. Its VMs move
	// to the host that registers under its name and reports them.
	RebuiltAt *time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
}

// RegistrationKey is a one-time secret that lets one agent register into a
// site. Only a hash of the secret is stored.
type RegistrationKey struct {
	ID           string    `gorm:"primaryKey;size:40"`
	SiteID       string    `gorm:"size:40;not null;index"`
	SecretHash   string    `gorm:"size:64;not null;uniqueIndex"`
	ExpiresAt    time.Time `gorm:"not null"`
	UsedAt       *time.Time
	UsedByHostID string `gorm:"size:40"`
	CreatedBy    string `gorm:"size:100"`
	CreatedAt    time.Time
}

// VM power states as agents report them.
const (
	PowerRunning = "Running"
	PowerOff     = "Off"
	PowerUnknown = "Unknown"
)

// VM is a virtual machine discovered on a host. ExternalID is the stable id
// the host's driver gives it; MissingSince is set when the host stops
// reporting it (a protected VM is never silently deleted).
type VM struct {
	ID           string `gorm:"primaryKey;size:40"`
	HostID       string `gorm:"size:40;not null;uniqueIndex:idx_vm_host_external"`
	ExternalID   string `gorm:"size:200;not null;uniqueIndex:idx_vm_host_external"`
	Name         string `gorm:"size:200;not null;index"`
	PowerState   string `gorm:"size:20;not null;default:Unknown"`
	MissingSince *time.Time
	Disks        []Disk `gorm:"foreignKey:VMID;constraint:OnDelete:CASCADE"`
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Disk is one virtual disk of a VM.
type Disk struct {
	ID        string `gorm:"primaryKey;size:40"`
	VMID      string `gorm:"size:40;not null;index"`
	Path      string `gorm:"size:1000;not null"`
	SizeBytes int64  `gorm:"not null"`
	Format    string `gorm:"size:20"`
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Policy is a replication policy; see policy.go for its rules.
type Policy struct {
	ID                          string `gorm:"primaryKey;size:40"`
	Name                        string `gorm:"size:100;not null;uniqueIndex"`
	CopyFrequencySeconds        int    `gorm:"not null"`
	RetentionHours              int    `gorm:"not null"`
	AppConsistentFrequencyHours int    `gorm:"not null"`
	InitialReplicationStart     *time.Time
	ResyncWindowStart           string `gorm:"size:5;not null"`
	ResyncWindowEnd             string `gorm:"size:5;not null"`
	WorkHoursStart              string `gorm:"size:5;not null"`
	WorkHoursEnd                string `gorm:"size:5;not null"`
	WorkHoursMbps               int    `gorm:"not null"` // 0 = unlimited
	OffHoursMbps                int    `gorm:"not null"` // 0 = unlimited
	CreatedAt                   time.Time
	UpdatedAt                   time.Time
}

// Target kinds.
const (
	TargetAzureBlob = "azure_blob"
	TargetDirectory = "directory"
)

// Azure credential kinds.
const (
	CredentialAccountKey = "account_key"
	CredentialSAS        = "sas"
)

// Target is replica storage. Azure credentials are stored sealed with the
// vault key (see secrets.go); they are never returned by the API.
type Target struct {
	ID               string `gorm:"primaryKey;size:40"`
	Name             string `gorm:"size:100;not null;uniqueIndex"`
	Kind             string `gorm:"size:20;not null"`
	AccountURL       string `gorm:"size:500"`
	Container        string `gorm:"size:63"`
	CredentialKind   string `gorm:"size:20"`
	CredentialSealed []byte
	Path             string `gorm:"size:1000"`
	// CreatePath: a directory target's path may be created on a host that
	// lacks it. Off by default, so that a typo or a share not mounted
	// fails the protection check instead of silently filling the host's
	// own disk.
	CreatePath bool `gorm:"not null;default:false"`
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Protection states (DESIGN.md §3).
const (
	StateUnprotected         = "Unprotected"
	StateEnablingProtection  = "EnablingProtection"
	StateInitialReplication  = "InitialReplication"
	StateProtected           = "Protected"
	StateResyncRequired      = "ResyncRequired"
	StateResynchronizing     = "Resynchronizing"
	StateFailingOver         = "FailingOver"
	StateFailedOver          = "FailedOver"
	StateCommitted           = "Committed"
	StateReprotecting        = "Reprotecting"
	StateDisablingProtection = "DisablingProtection"
)

// Health values.
const (
	HealthNormal   = "Normal"
	HealthWarning  = "Warning"
	HealthCritical = "Critical"
)

// Protection ties a VM to a policy and a target. One per VM.
type Protection struct {
	ID       string `gorm:"primaryKey;size:40"`
	VMID     string `gorm:"size:40;not null;uniqueIndex"`
	PolicyID string `gorm:"size:40;not null;index"`
	TargetID string `gorm:"size:40;not null;index"`
	// ReplicaKey names the VM's replicas on the target: the vault's VM id.
	// LegacyReplicaKey is where replicas made before that live (the
	// host-local VM id, on a directory target) until the agent moves them.
	ReplicaKey          string `gorm:"size:200;not null;default:''"`
	LegacyReplicaKey    string `gorm:"size:200;not null;default:''"`
	State               string `gorm:"size:30;not null;index:idx_protections_state"`
	TestFailover        bool   `gorm:"not null;default:false"`
	Health              string `gorm:"size:20;not null;default:Normal"`
	HealthReasons       string `gorm:"type:text"` // JSON array of strings
	LastErrorCode       string `gorm:"size:80"`
	LastErrorMessage    string `gorm:"size:2000"`
	FirstFailureAt      *time.Time
	NextRetryAt         *time.Time
	LastRecoveryPointAt *time.Time
	LastCycleAt         *time.Time // when the last replication cycle ended, well or not
	Failures            int        `gorm:"not null;default:0"` // consecutive failed cycles
	BytesSent           int64      `gorm:"not null;default:0"`
	LastCycleBytes      int64      `gorm:"not null;default:0"` // sent by the last successful cycle
	LastCycleSeconds    float64    `gorm:"not null;default:0"` // its transfer time
	// The test failover of the VM, while TestFailover is set: the test
	// VM's host, its id there, the point it was made from and when.
	TestFailoverHostID  string `gorm:"size:40;not null;default:''"`
	TestFailoverVMID    string `gorm:"size:200;not null;default:''"`
	TestFailoverPointID string `gorm:"size:40;not null;default:''"`
	TestFailoverAt      *time.Time
	// The last drill: a test failover that succeeded and was cleaned up.
	LastDrillAt      *time.Time
	LastDrillPointID string `gorm:"size:40;not null;default:''"`
	LastDrillNotes   string `gorm:"size:2000;not null;default:''"`
	// The failover, from FailingOver until the protection ends or is
	// re-protected: the recovery host, the VM's id there, the point it
	// runs from, planned or unplanned, and when it was failed over.
	FailoverHostID  string `gorm:"size:40;not null;default:''"`
	FailoverVMID    string `gorm:"size:200;not null;default:''"`
	FailoverPointID string `gorm:"size:40;not null;default:''"`
	FailoverKind    string `gorm:"size:20;not null;default:''"`
	FailedOverAt    *time.Time
	CommittedAt     *time.Time
	// HomeVMID is the VM first protected, while a re-protect has made the
	// failed-over VM the one replicated (VMID); a failback to it and the
	// re-protect after bring VMID back and clear it.
	HomeVMID string `gorm:"size:40;not null;default:''"`
	// PausedAt and PausedBy: replication is paused (pause.go): no cycle
	// or resync starts until a user resumes it.
	PausedAt  *time.Time
	PausedBy  string `gorm:"size:100;not null;default:''"`
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ReplicaDisk is the copy of one source disk on the target.
type ReplicaDisk struct {
	ID           string `gorm:"primaryKey;size:40"`
	ProtectionID string `gorm:"size:40;not null;index"`
	DiskID       string `gorm:"size:40;not null;index"`
	Name         string `gorm:"size:500;not null"` // blob or file name on the target
	SourcePath   string `gorm:"size:1000"`         // the source disk's path, kept after it is removed
	SizeBytes    int64  `gorm:"not null"`
	// CopiedAt is when a cycle first copied the disk (nil: it is new, and
	// the next cycle makes its replica and its initial copy).
	CopiedAt *time.Time
	// RemovedAt is when the VM stopped having the disk: it is no longer
	// replicated; points made before still hold it.
	RemovedAt *time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Recovery point consistency: the truth about the capture (DESIGN §6).
const (
	ConsistencyCrash        = "crash"
	ConsistencyApp          = "app"
	ConsistencyInconsistent = "inconsistent"
)

// RecoveryPoint is one point in time of all disks of a protected VM.
type RecoveryPoint struct {
	ID           string    `gorm:"primaryKey;size:40"`
	ProtectionID string    `gorm:"size:40;not null;index:idx_recovery_points_protection_time"`
	Time         time.Time `gorm:"not null;index;index:idx_recovery_points_protection_time"` // the capture instant
	// ReadStartedAt is when reading began, for a point whose disks were
	// read over a span (inconsistent).
	ReadStartedAt *time.Time
	Consistency   string `gorm:"size:20;not null"`
	Capture       string `gorm:"size:20"`   // how: freeze, reflink, powered_off, unchanged, live
	CaptureNote   string `gorm:"size:1000"` // why it is less consistent than asked
	// AppAsked: the cycle asked the agent for an app-consistent point (the
	// policy's app frequency was due). Such a point that is not app says
	// the host cannot quiesce the VM: the VM is Warning until one is.
	AppAsked  bool   `gorm:"not null;default:false"`
	SizeBytes int64  `gorm:"not null"`
	Manifest  string `gorm:"size:500"`
	Snapshots string `gorm:"type:text"` // JSON: disk id → snapshot id
	CreatedAt time.Time
}

// Job states (DESIGN.md §1).
const (
	JobNotStarted      = "NotStarted"
	JobInProgress      = "InProgress"
	JobSucceeded       = "Succeeded"
	JobFailed          = "Failed"
	JobCancelled       = "Cancelled"
	JobSuspended       = "Suspended"
	JobWaitingForInput = "WaitingForInput"
)

// JobStates lists every job state, in the order the portal offers them.
var JobStates = []string{JobNotStarted, JobInProgress, JobSucceeded, JobFailed, JobCancelled, JobSuspended, JobWaitingForInput}

// Job is one operation, made of steps.
type Job struct {
	ID           string `gorm:"primaryKey;size:40"`
	Type         string `gorm:"size:60;not null;index"`
	State        string `gorm:"size:20;not null;index"`
	TargetKind   string `gorm:"size:30"` // what it acts on: "vm", "host", "recovery_plan"
	TargetID     string `gorm:"size:40;index"`
	TargetName   string `gorm:"size:200"`
	CreatedBy    string `gorm:"size:100"`
	StartedAt    *time.Time
	EndedAt      *time.Time
	ErrorCode    string    `gorm:"size:80"`
	ErrorMessage string    `gorm:"size:2000"`
	ErrorAction  string    `gorm:"size:2000"`
	Notes        string    `gorm:"size:2000;not null;default:''"`     // the operator's, for a cleanup of a test failover
	ParentJobID  string    `gorm:"size:40;not null;default:'';index"` // the recovery plan's job a VM's job is part of
	Payload      string    `gorm:"type:text"`                         // a recovery plan's run: what was asked (JSON)
	Steps        []JobStep `gorm:"foreignKey:JobID;constraint:OnDelete:CASCADE"`
	CreatedAt    time.Time `gorm:"index"`
	UpdatedAt    time.Time
}

// JobStep is one step of a job.
type JobStep struct {
	ID       string `gorm:"primaryKey;size:40"`
	JobID    string `gorm:"size:40;not null;index"`
	Seq      int    `gorm:"not null"`
	Name     string `gorm:"size:200;not null"`
	State    string `gorm:"size:20;not null"`
	Progress int    `gorm:"not null;default:0"` // percent
	Message  string `gorm:"size:2000"`
	// A recovery plan's step: what it runs (PlanStepGroup, PlanStepScript,
	// PlanStepManual) and which group or action.
	PlanKind string `gorm:"size:10;not null;default:''"`
	PlanRef  string `gorm:"size:40;not null;default:''"`
	// Output is what a plan's script printed (its tail).
	Output    string `gorm:"type:text"`
	StartedAt *time.Time
	EndedAt   *time.Time
}

// Task states.
const (
	TaskWaiting   = "Waiting" // a later step's task: queued once the steps before it succeed
	TaskQueued    = "Queued"
	TaskLeased    = "Leased"
	TaskSucceeded = "Succeeded"
	TaskFailed    = "Failed"
	TaskCancelled = "Cancelled"
)

// Task is work for one host, dispatched by a job step and leased by the
// host's agent.
type Task struct {
	ID             string     `gorm:"primaryKey;size:40"`
	JobID          string     `gorm:"size:40;index"`
	StepID         string     `gorm:"size:40"`
	HostID         string     `gorm:"size:40;not null;index:idx_tasks_host_state"`
	ProtectionID   string     `gorm:"size:40;index:idx_tasks_protection_state"` // for replication tasks
	Kind           string     `gorm:"size:60;not null"`
	Payload        string     `gorm:"type:text"`
	State          string     `gorm:"size:20;not null;index:idx_tasks_host_state;index:idx_tasks_protection_state;index:idx_tasks_state_lease"`
	LeaseExpiresAt *time.Time `gorm:"index:idx_tasks_state_lease"`
	Attempts       int        `gorm:"not null;default:0"` // runs handed to the host
	// A task that failed recoverably waits until NotBefore (the back-off,
	// counted from FirstFailureAt over Failures failed runs).
	NotBefore      *time.Time `gorm:"index"`
	FirstFailureAt *time.Time
	Failures       int  `gorm:"not null;default:0"`
	Expiries       int  `gorm:"not null;default:0"` // leases that ran out
	CancelRequest  bool `gorm:"not null;default:false"`
	// The run's last progress report, and its speed through the bytes it
	// reports, averaged over the reports that moved them (progress.go).
	ProgressPercent int        `gorm:"not null;default:0"`
	ProgressMessage string     `gorm:"size:500;not null;default:''"`
	ProgressAttempt int        `gorm:"not null;default:0"` // the run the byte count is of
	BytesDone       int64      `gorm:"not null;default:0"`
	BytesTotal      int64      `gorm:"not null;default:0"`
	BytesAt         *time.Time // when BytesDone was reached
	SpeedSamples    int        `gorm:"not null;default:0"`
	BytesPerSecond  float64    `gorm:"not null;default:0"`
	Result          string     `gorm:"type:text"`
	ErrorCode       string     `gorm:"size:80"`
	ErrorMessage    string     `gorm:"size:2000"`
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// RecoveryPlan fails over many VMs in ordered groups.
type RecoveryPlan struct {
	ID          string      `gorm:"primaryKey;size:40"`
	Name        string      `gorm:"size:100;not null;uniqueIndex"`
	Description string      `gorm:"size:500"`
	Groups      []PlanGroup `gorm:"foreignKey:PlanID;constraint:OnDelete:CASCADE"`
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// PlanGroup is one ordered group of a recovery plan; its VMs fail over in
// parallel, between its pre and post actions.
type PlanGroup struct {
	ID      string        `gorm:"primaryKey;size:40"`
	PlanID  string        `gorm:"size:40;not null;index"`
	Seq     int           `gorm:"not null"`
	Name    string        `gorm:"size:100;not null"`
	VMs     []PlanGroupVM `gorm:"foreignKey:GroupID;constraint:OnDelete:CASCADE"`
	Actions []PlanAction  `gorm:"foreignKey:GroupID;constraint:OnDelete:CASCADE"`
}

// PlanGroupVM places one VM in one group. A VM belongs to at most one group
// of a plan (enforced by the store).
type PlanGroupVM struct {
	GroupID string `gorm:"primaryKey;size:40"`
	VMID    string `gorm:"primaryKey;size:40"`
	Seq     int    `gorm:"not null"`
}

// Plan action phases and kinds.
const (
	PhasePre     = "pre"
	PhasePost    = "post"
	ActionScript = "script"
	ActionManual = "manual"
)

// PlanAction runs before or after a group: a script on a host, or a manual
// action where the job waits for an operator.
type PlanAction struct {
	ID           string `gorm:"primaryKey;size:40"`
	GroupID      string `gorm:"size:40;not null;index"`
	Phase        string `gorm:"size:10;not null"`
	Seq          int    `gorm:"not null"`
	Kind         string `gorm:"size:10;not null"`
	Name         string `gorm:"size:100;not null"`
	Script       string `gorm:"size:1000"` // path of the script on the recovery host
	Instructions string `gorm:"size:2000"` // what the operator must do
}

// Roles, from least to most privileged.
const (
	RoleReader      = "Reader"
	RoleOperator    = "Operator"
	RoleContributor = "Contributor"
	RoleOwner       = "Owner"
)

// User is a person who logs in to the portal or the API.
type User struct {
	ID           string `gorm:"primaryKey;size:40"`
	Username     string `gorm:"size:64;not null;uniqueIndex"`
	PasswordHash string `gorm:"size:100;not null"`
	Role         string `gorm:"size:20;not null"`
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// APIToken is a bearer token for the API. Only its SHA-256 is stored.
type APIToken struct {
	ID         string    `gorm:"primaryKey;size:40"`
	UserID     string    `gorm:"size:40;not null;index"`
	Name       string    `gorm:"size:100;not null"`
	TokenHash  string    `gorm:"size:64;not null;uniqueIndex"`
	ExpiresAt  time.Time `gorm:"not null"`
	LastUsedAt *time.Time
	CreatedAt  time.Time
}

// Session is a portal login. Only the SHA-256 of the cookie value is stored.
type Session struct {
	ID        string    `gorm:"primaryKey;size:40"`
	UserID    string    `gorm:"size:40;not null;index"`
	TokenHash string    `gorm:"size:64;not null;uniqueIndex"`
	ExpiresAt time.Time `gorm:"not null"`
	CreatedAt time.Time
}

// AuditEvent records one change: who, what, when. Written in the same
// transaction as the change itself.
type AuditEvent struct {
	ID         string    `gorm:"primaryKey;size:40"`
	Time       time.Time `gorm:"not null;index"`
	ActorID    string    `gorm:"size:40"`
	Actor      string    `gorm:"size:100;not null"`
	Action     string    `gorm:"size:60;not null;index"`
	ObjectKind string    `gorm:"size:30;not null"`
	ObjectID   string    `gorm:"size:40"`
	ObjectName string    `gorm:"size:200"`
	Details    string    `gorm:"type:text"`
	RequestID  string    `gorm:"size:64"`
	RemoteAddr string    `gorm:"size:64"`
}

// Alert states and kinds.
const (
	AlertActive       = "Active"
	AlertAcknowledged = "Acknowledged"
	AlertResolved     = "Resolved"
)

// ContainerCleanup is an Azure container, emptied by an agent when a VM's
// protection was disabled with its data deleted, that the vault deletes
// (agents' SAS tokens cannot delete containers).
type ContainerCleanup struct {
	ID            string    `gorm:"primaryKey;size:40"`
	TargetID      string    `gorm:"size:40;not null"`
	Container     string    `gorm:"size:63;not null"`
	Attempts      int       `gorm:"not null;default:0"`
	LastError     string    `gorm:"size:1000"`
	NextAttemptAt time.Time `gorm:"index"`
	CreatedAt     time.Time
}

// Alert is something an administrator must look at.
type Alert struct {
	ID             string `gorm:"primaryKey;size:40"`
	Kind           string `gorm:"size:40;not null;index"`
	Severity       string `gorm:"size:20;not null"`
	ObjectKind     string `gorm:"size:30"`
	ObjectID       string `gorm:"size:40;index"`
	Message        string `gorm:"size:2000;not null"`
	State          string `gorm:"size:20;not null;index"`
	AcknowledgedBy string `gorm:"size:100"`
	AcknowledgedAt *time.Time
	ResolvedAt     *time.Time
	// ResolvedBy is who resolved it: a user's name, or ResolvedBySystem
	// when the vault did, its condition over.
	ResolvedBy string `gorm:"size:100"`
	// Delivery to the configured webhook and email: when it succeeded, or
	// how many attempts failed, the last error, and when to try again.
	DeliveredAt      *time.Time
	DeliveryAttempts int    `gorm:"not null;default:0"`
	DeliveryError    string `gorm:"size:1000"`
	NextDeliveryAt   *time.Time
	CreatedAt        time.Time `gorm:"index"`
	UpdatedAt        time.Time
}

// allModels lists every table, in an order that satisfies foreign keys.
func allModels() []any {
	return []any{
		&Site{}, &Host{}, &RegistrationKey{}, &VM{}, &Disk{}, &Policy{}, &Target{},
		&Protection{}, &ReplicaDisk{}, &RecoveryPoint{}, &Job{}, &JobStep{}, &Task{},
		&RecoveryPlan{}, &PlanGroup{}, &PlanGroupVM{}, &PlanAction{},
		&User{}, &APIToken{}, &Session{}, &AuditEvent{}, &Alert{}, &ContainerCleanup{},
		&RPOHistory{},
	}
}
