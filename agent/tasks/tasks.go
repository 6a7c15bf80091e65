// Package tasks implements the work the vault gives an agent, one file per
// kind of task: the host's prerequisites check, the protection check,
// creating replicas, a replication cycle, a resync, verifying a recovery
// point and deleting a VM's replica data; and for recovery, making a VM of
// a point (materialize.go), shutting VMs down, starting and removing them
// (power.go), and committing a point (commit.go). The runner (package
// runner) leases, persists and reports them; these only do the work.
package tasks

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Reporter is how a task tells the vault where it is.
type Reporter interface {
	// Set records the task's progress; the runner reports it to the vault.
	Set(agentproto.Progress)
	// Log is the task's logger: it names the task and its kind.
	Log() *slog.Logger
}

// Func runs one kind of task and returns the result to send (marshalled
// to JSON), or an error (an *agentproto.TaskError says whether it may be
// retried).
type Func func(ctx context.Context, t agentproto.Task, rep Reporter) (any, error)

// Clock measures the host's clock against the vault's.
type Clock interface {
	// ClockSkew is the vault's clock minus the host's.
	ClockSkew(ctx context.Context) (time.Duration, error)
}

// Deps are what the tasks need of the agent.
type Deps struct {
	Driver driver.Driver
	State  *state.Dir
	Vault  *client.Client // storage credentials
	Clock  Clock
	// Throttles are the host's bandwidth buckets, shared by its cycles.
	Throttles *replicate.Throttles
	// StorageConcurrency is how many page writes to Azure Blob storage
	// are in flight per disk.
	StorageConcurrency int
	// Version is the agent's version, for messages.
	Version string
}

// Tasks runs the agent's kinds of task.
type Tasks struct {
	d Deps
}

// New makes the tasks over their dependencies.
func New(d Deps) *Tasks {
	if d.Throttles == nil {
		d.Throttles = replicate.NewThrottles()
	}
	return &Tasks{d: d}
}

// Kinds maps each task kind this agent runs to its function.
func (ts *Tasks) Kinds() map[string]Func {
	return map[string]Func{
		agentproto.TaskCheckPrerequisites: ts.checkPrerequisites,
		agentproto.TaskProtectionCheck:    ts.protectionCheck,
		agentproto.TaskCreateReplica:      ts.createReplica,
		agentproto.TaskReplicate:          ts.replicate,
		agentproto.TaskVerify:             ts.verify,
		agentproto.TaskResync:             ts.resync,
		agentproto.TaskDeleteReplica:      ts.deleteReplica,
		agentproto.TaskMaterialize:        ts.materialize,
		agentproto.TaskShutdownVM:         ts.shutdownVM,
		agentproto.TaskStartVM:            ts.startVM,
		agentproto.TaskRemoveVM:           ts.removeVM,
		agentproto.TaskCommitPoint:        ts.commitPoint,
		agentproto.TaskRunScript:          ts.runScript,
	}
}

// Idempotent reports whether a task of a kind may simply run again after
// an agent restart. Every kind here may: a replication cycle writes only
// blocks whose hashes differ, and makes its point, with its id, only at
// its end (a point made already is found and reported).
//
// The recovery kinds too. A materialize cut short left only a hidden
// directory, which the driver's Recover removes; one that got as far as
// making the VM finds it made of the same source and point and keeps it
// as it is (a guest that ran since is not rewritten), and starts it only
// if it is not running. A shutdown finds the VM off, a start finds it
// running (and does not start it twice), a removal finds it gone; a
// commit finds the older points deleted already.
func Idempotent(kind string) bool {
	switch kind {
	case agentproto.TaskCheckPrerequisites, agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica, agentproto.TaskReplicate,
		agentproto.TaskVerify, agentproto.TaskResync, agentproto.TaskDeleteReplica,
		agentproto.TaskMaterialize, agentproto.TaskShutdownVM, agentproto.TaskStartVM, agentproto.TaskRemoveVM, agentproto.TaskCommitPoint:
		return true
	}
	return false
}

// replicationPayload reads the payload of a protection task.
func replicationPayload(t agentproto.Task) (agentproto.ReplicationPayload, error) {
	var p agentproto.ReplicationPayload
	if err := json.Unmarshal(t.Payload, &p); err != nil {
		return p, &agentproto.TaskError{Code: agentproto.CodeInvalidPayload, Message: "the task's payload cannot be read: " + err.Error()}
	}
	return p, nil
}

// diskRefs are the payload's disks as the driver takes them.
func diskRefs(p agentproto.ReplicationPayload) []driver.DiskRef {
	out := make([]driver.DiskRef, 0, len(p.Disks))
	for _, d := range p.Disks {
		out = append(out, driver.DiskRef{ID: d.ReplicaID, Path: d.Path, SizeBytes: d.SizeBytes})
	}
	return out
}
