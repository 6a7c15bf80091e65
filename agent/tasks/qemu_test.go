package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/driver/qemu"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Replication cycles of a QEMU VM through the qemu driver: the first
// sends what the disk holds, the next exactly what the guest wrote, and
// each point is the disk at its capture.
func TestReplicationCyclesOfAQEMUVMSendTheDiskThenOnlyItsWrites(t *testing.T) {
	const MiB, KiB = 1 << 20, 1 << 10
	qmpDir, err := os.MkdirTemp("", "lbqmp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(qmpDir)
	work, err := os.MkdirTemp("", "lbwk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)
	vm := qemutest.Start(t, "-machine", "pc", "-accel", "tcg", "-S", "-qmp", "unix:"+filepath.Join(qmpDir, "vm1.qmp")+",server=on,wait=off")
	ctx := context.Background()
	m, err := qmp.Dial(ctx, vm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	exec := func(cmd string, args any, out any) {
		t.Helper()
		if err := m.Execute(ctx, cmd, args, out); err != nil {
			t.Fatal(err)
		}
	}
	img := vm.Image(t, "d0.qcow2", "qcow2", 16*MiB)
	exec("blockdev-add", map[string]any{"node-name": "d0", "driver": "qcow2", "file": map[string]any{"driver": "file", "filename": img}}, nil)
	exec("device_add", map[string]any{"driver": "virtio-blk-pci", "drive": "d0", "id": "dev-d0"}, nil)
	want := make([]byte, 16*MiB)
	write := func(pattern byte, off, length int64) {
		t.Helper()
		var out string
		exec("human-monitor-command", map[string]any{"command-line": fmt.Sprintf(
			"qemu-io -d /machine/peripheral/dev-d0/virtio-backend \"write -P %#x %d %d\"", pattern, off, length)}, &out)
		if out != "" {
			t.Fatalf("qemu-io: %q", out)
		}
		copy(want[off:off+length], bytes.Repeat([]byte{pattern}, int(length)))
	}

	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &qemu.Driver{QMPDir: qmpDir, WorkDir: work, StateDir: dir.Path}
	defer d.Close()
	if err := d.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	var drv driver.Driver = d
	ts := New(Deps{Driver: drv, State: dir, Version: "test"})
	target := filepath.Join(t.TempDir(), "nas")
	p := agentproto.ReplicationPayload{ProtectionID: "prot", VMID: "vm1", ReplicaKey: "vm_vm1", RetentionHours: 24,
		Disks: []agentproto.ReplicaDisk{{ReplicaID: "d0", Path: img, SizeBytes: 16 * MiB, New: true}}}
	p.Target.Kind, p.Target.Path = "directory", target
	task := func(kind, point string) agentproto.Task {
		q := p
		q.PointID = point
		b, _ := json.Marshal(q)
		return agentproto.Task{ID: "task_" + kind + point, Kind: kind, Payload: b, Attempt: 1}
	}
	if _, err := ts.createReplica(ctx, task(agentproto.TaskCreateReplica, ""), testReporter{t}); err != nil {
		t.Fatal(err)
	}
	cycle := func(point string, wantSent int64) {
		t.Helper()
		out, err := ts.replicate(ctx, task(agentproto.TaskReplicate, point), testReporter{t})
		if err != nil {
			t.Fatal(err)
		}
		res := out.(agentproto.ReplicateResult)
		if res.BytesSent != wantSent || res.Consistency != replica.ConsistencyCrash || res.Capture != driver.MethodFleece {
			t.Fatalf("cycle %s: sent %d (want %d), %s by %s", point, res.BytesSent, wantSent, res.Consistency, res.Capture)
		}
		r, err := dirtarget.OpenExisting(target, "vm_vm1")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		pr, size, err := r.ReadPoint(point, "d0")
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		got, _ := io.ReadAll(io.NewSectionReader(pr, 0, size))
		if !bytes.Equal(got, want) {
			t.Fatalf("point %s is not the disk at its capture", point)
		}
		p.Disks[0].New = false
	}
	write(0x11, 0, 1*MiB)
	cycle("p1", 1*MiB)
	write(0x22, 5*MiB, 64*KiB)
	write(0x33, 12*MiB+4*KiB, 4*KiB)
	cycle("p2", 64*KiB+4*KiB)
	cycle("p3", 0)
}
