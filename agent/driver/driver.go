// Package driver is what the agent asks of a hypervisor (DESIGN.md §6):
// list VMs and their disks, capture all disks of a VM at one instant (or
// say truthfully that it could not), report which extents changed since
// the last acknowledged capture, release a capture with or without
// acknowledging it, power VMs off and on, materialize a VM from disk
// images on a recovery host, and remove a VM it materialized.
//
// The block engine (package replicate) reads a VM's disks only through a
// Capture: no other code opens a protected VM's disks.
package driver

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Driver is one hypervisor's view of a host.
type Driver interface {
	// Name is the driver's name as agents report it (filedisk, qemu).
	Name() string
	// Check says whether the driver can work on this host now; the
	// message summarizes what it found (for the prerequisites job).
	Check(ctx context.Context) (string, error)
	// DataDir is where the host keeps VM disks: its free space is a
	// prerequisite, and captures may use it.
	DataDir() string
	// Recover removes what an agent that stopped mid-capture left behind
	// (clones, overlays, exports). It runs once at start.
	Recover(ctx context.Context) error
	// Inventory lists every VM with its disks.
	Inventory(ctx context.Context) ([]agentproto.VM, error)
	// CheckVM says whether a VM's disks can be captured: each is there,
	// readable, and of the size the vault expects.
	CheckVM(ctx context.Context, vmID string, disks []DiskRef) error
	// Capture takes all of a VM's disks at one instant where it can, and
	// says what it got. The caller reads every disk, calls ReadDone, makes
	// the recovery point, then calls Release(true); on any failure,
	// Release(false).
	Capture(ctx context.Context, req CaptureRequest) (Capture, error)
	// PowerState is Running, Off or Unknown (agentproto's VM states).
	PowerState(ctx context.Context, vmID string) (string, error)
	// Shutdown stops a VM gracefully and waits until it is off, at most
	// timeout; an error means it may still run (planned failover must not
	// go on then), and is a *agentproto.TaskError CodeVMWillNotStop when
	// the VM did not stop. A VM that is off already is success.
	Shutdown(ctx context.Context, vmID string, timeout time.Duration) error
	// Start powers a VM on.
	Start(ctx context.Context, vmID string, opts StartOptions) error
	// Materialize creates a VM on this host from disk images (a recovery
	// point, on a recovery host) and returns it as the inventory will list
	// it. It does not start it. The VM records what it was made of (the
	// spec's SourceVMID, PointID and Test), so that only VMs Lifeboat made
	// are ever replaced or removed, and so that a VM made of the same
	// before (a task run again, a job restarted after its VM would not
	// start) is returned as it is, with Existing set, instead of refused.
	//
	// Errors a caller acts on are *agentproto.TaskError: CodeRecoveryVMExists
	// (the name or id is taken and Replace is not set, or not by a VM of this
	// source), CodeVMNotMaterialized (Replace of a VM Lifeboat did not
	// make), CodeVMWillNotStop (the VM to replace runs and did not stop),
	// CodeRecoveryHostFull (no room for the disks; nothing is left behind).
	Materialize(ctx context.Context, spec MaterializeSpec) (Materialized, error)
	// Remove stops a VM that Materialize made (waiting at most timeout,
	// as Shutdown) and deletes it with its disks. Any other VM is refused
	// with a *agentproto.TaskError CodeVMNotMaterialized: Lifeboat deletes
	// only what it made. A VM that is gone already is success.
	Remove(ctx context.Context, vmID string, timeout time.Duration) error
	// WriteBack makes the disks of an existing VM, which must be off,
	// equal to disk images (a failback to the original VM), writing only
	// the blocks that differ. A running VM is refused with
	// CodeVMRunning.
	WriteBack(ctx context.Context, vmID string, disks []MaterializeDisk) (Materialized, error)
}

// InstantMaterializer is a driver that can start a recovered VM before its
// disks are on the host (instant failover): the VM runs at once on the
// point's disks, read through spec's readers, while they are copied to
// local disks in the background.
type InstantMaterializer interface {
	// MaterializeInstant makes the VM as Materialize does (the same
	// records, the same refusals, Existing for a VM made of the same point
	// before, which it goes on copying), starts it (isolated when asked),
	// calls started once it runs, and returns once every disk is local
	// (the copy's progress is what it read of the readers): the VM then runs from its own disks alone
	// and the readers are read no more. An error after started leaves the
	// VM running on what it has, and a call again with the same spec goes
	// on with the copy.
	MaterializeInstant(ctx context.Context, spec MaterializeSpec, opts StartOptions, started func(agentproto.VM)) (Materialized, error)
}

// ErrCancelled is the cause (context.Cause) of a task's context when the
// vault cancelled the task, as against the agent stopping or a later
// attempt taking over: a driver undoes then what it would otherwise leave
// for the task's next run to go on with.
var ErrCancelled = errors.New("cancelled by the vault")

// ErrVMNotFound is wrapped by the errors of a driver's calls that name a
// VM the host does not have.
var ErrVMNotFound = errors.New("no such VM on this host")

// DiskRef is one disk of a VM as the vault knows it.
type DiskRef struct {
	ID        string // the replica's id for the disk
	Path      string // where the host's driver finds it
	SizeBytes int64
}

// CaptureRequest asks for a capture of a VM's disks.
type CaptureRequest struct {
	VMID  string // the VM's id on this host
	Disks []DiskRef
	// AppConsistent asks the driver to quiesce the guest for the capture
	// (a freeze command, a guest agent). A driver that cannot makes the
	// best capture it can and says so in the Result's Note.
	AppConsistent bool
}

// Capture is a VM's disks held for reading.
type Capture interface {
	// Disks are the captured disks, in the request's order.
	Disks() []CapturedDisk
	// ReadDone is called once the last byte was read, before the point is
	// made: a quiesced guest resumes now, and the capture settles how
	// consistent what was read is, and its time.
	ReadDone() Result
	// Release ends the capture. ack says the recovery point was made: the
	// driver may forget the changes it reported. Without ack it keeps them
	// for the next capture, so no write is lost. Temporary files go either
	// way.
	Release(ack bool) error
}

// CapturedDisk is one disk of a capture.
type CapturedDisk struct {
	ID     string
	Source replicate.Source
}

// Result is what a capture turned out to be, known once its disks were
// read.
type Result struct {
	// Consistency is replica.ConsistencyApp, ConsistencyCrash or
	// ConsistencyInconsistent: the truth, never more.
	Consistency string
	// Time is the capture instant; for an inconsistent capture, when the
	// read ended.
	Time time.Time
	// ReadStartedAt is set for an inconsistent capture: when the read began.
	ReadStartedAt *time.Time
	// Method says how the disks were held: freeze, reflink, powered_off,
	// unchanged (nothing wrote during the read), live, fleece.
	Method string
	// Note says why the capture is less consistent than asked, in words
	// for the operator; empty when it is what was asked.
	Note string
}

// Capture methods.
const (
	MethodFreeze     = "freeze"
	MethodReflink    = "reflink"
	MethodPoweredOff = "powered_off"
	MethodUnchanged  = "unchanged"
	MethodLive       = "live"
	// MethodFleece: the disks were read as at one instant while the VM
	// ran, through copy-before-write overlays (qemu's fleecing).
	MethodFleece = "fleece"
)

// StartOptions tune how a VM starts.
type StartOptions struct {
	// Isolated starts it without a network, or on an isolated one (a test
	// failover).
	Isolated bool
}

// MaterializeSpec is a VM to create from disk images.
type MaterializeSpec struct {
	ID   string // the new VM's id on this host
	Name string // its name (filedisk: its directory)
	// SourceVMID (the vault's id of the protected VM) and PointID (the
	// recovery point read) are what the VM is made of; both are required.
	SourceVMID string
	PointID    string
	// Test marks a test failover's VM.
	Test  bool
	Disks []MaterializeDisk
	// Replace allows a VM of this id that Materialize made of the same
	// source VM to be stopped and overwritten (the operator picked another
	// recovery point after a failover).
	Replace bool
}

// Materialized is what Materialize made.
type Materialized struct {
	VM agentproto.VM // as the inventory lists it
	// BytesWritten counts the disk data written: runs of zeros stay holes.
	BytesWritten int64
	// Existing says the VM was made of the same source VM and point
	// before, and was returned as it is: nothing was read or written.
	Existing bool
}

// MaterializeDisk is one disk image to write.
type MaterializeDisk struct {
	Name      string // file name (filedisk: NAME.img)
	SizeBytes int64
	Data      io.ReaderAt
}
