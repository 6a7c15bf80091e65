package tasks

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/driver/qemu"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// qemuDirs makes a qemu driver's QMP and work directories, under the
// system's temporary directory (unix socket paths are limited to 108
// bytes; t.TempDir can be longer); they go when the test ends.
func qemuDirs(t *testing.T) (qmpDir, work string) {
	t.Helper()
	for _, d := range []*string{&qmpDir, &work} {
		var err error
		if *d, err = os.MkdirTemp("", "lbqemu"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(*d) })
	}
	return qmpDir, work
}

// qemuHost is a source host whose qemu driver finds its VMs' monitors in
// qmpDir, protecting VM "vm1", whose disk d0 is img, to a directory
// target: its replica is made.
type qemuHost struct {
	ts     *Tasks
	p      agentproto.ReplicationPayload
	target string
}

func newQEMUHost(t *testing.T, qmpDir, work, img string, size int64) *qemuHost {
	t.Helper()
	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &qemu.Driver{QMPDir: qmpDir, WorkDir: work, StateDir: dir.Path}
	t.Cleanup(func() { d.Close() })
	if err := d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := &qemuHost{ts: New(Deps{Driver: d, State: dir, Version: "test"}), target: filepath.Join(t.TempDir(), "nas")}
	h.p = agentproto.ReplicationPayload{ProtectionID: "prot", VMID: "vm1", ReplicaKey: "vm_vm1", RetentionHours: 24,
		Disks: []agentproto.ReplicaDisk{{ReplicaID: "d0", Path: img, SizeBytes: size, New: true}}}
	h.p.Target.Kind, h.p.Target.Path = "directory", h.target
	if _, err := h.ts.createReplica(context.Background(), h.task(agentproto.TaskCreateReplica, ""), testReporter{t}); err != nil {
		t.Fatal(err)
	}
	return h
}

// task is a task of the kind for the VM's replication, at point.
func (h *qemuHost) task(kind, point string) agentproto.Task {
	q := h.p
	q.PointID = point
	b, _ := json.Marshal(q)
	return agentproto.Task{ID: "task_" + kind + point, Kind: kind, Payload: b, Attempt: 1}
}

// replicate runs a cycle making point; the disk is not new after it.
func (h *qemuHost) replicate(t *testing.T, point string) agentproto.ReplicateResult {
	t.Helper()
	out, err := h.ts.replicate(context.Background(), h.task(agentproto.TaskReplicate, point), testReporter{t})
	if err != nil {
		t.Fatal(err)
	}
	h.p.Disks[0].New = false
	return out.(agentproto.ReplicateResult)
}

// readPoint reads disk d0 at a point from the target.
func (h *qemuHost) readPoint(t *testing.T, point string) []byte {
	t.Helper()
	r, err := dirtarget.OpenExisting(h.target, "vm_vm1")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	return replicatest.ReadPoint(t, r, point, "d0")
}
