package tasks

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// A move's seed of a QEMU VM into another target, through the qemu driver
// and its dirty bitmaps: the seed is a whole copy; a move that does not
// finish leaves the VM's next cycle to its old target with every write the
// old replica lacks (the seed kept the tracking for it); and the first
// cycle on a new target after a seed is exact too.
func TestAQEMUSeedCopiesWholeAndLeavesTheOldReplicasTrackingIntact(t *testing.T) {
	const MiB, KiB = 1 << 20, 1 << 10
	qmpDir, work := qemuDirs(t)
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
	h := newQEMUHost(t, qmpDir, work, img, 16*MiB)
	oldTarget := h.target
	cycle := func(point string, wantSent int64) {
		t.Helper()
		res := h.replicate(t, point)
		if wantSent >= 0 && res.BytesSent != wantSent {
			t.Fatalf("cycle %s: sent %d, want %d", point, res.BytesSent, wantSent)
		}
		if !bytes.Equal(h.readPoint(t, point), want) {
			t.Fatalf("point %s on %s is not the disk at its capture", point, h.target)
		}
	}
	// seed copies the VM into a new target, as a move does.
	seed := func(point string) {
		t.Helper()
		h.target = filepath.Join(t.TempDir(), "new-nas")
		h.p.Target.Path, h.p.Disks[0].New, h.p.KeepTracking = h.target, true, true
		if _, err := h.ts.createReplica(ctx, h.task(agentproto.TaskCreateReplica, ""), testReporter{t}); err != nil {
			t.Fatal(err)
		}
		res := h.replicate(t, point)
		h.p.KeepTracking = false
		if res.BytesSent < 1*MiB+64*KiB || !bytes.Equal(h.readPoint(t, point), want) {
			t.Fatalf("seed %s: sent %d, and the point is the disk: %v", point, res.BytesSent, bytes.Equal(h.readPoint(t, point), want))
		}
	}

	write(0x11, 0, 1*MiB)
	cycle("p1", 1*MiB)
	write(0x22, 5*MiB, 64*KiB) // the old replica lacks it
	seed("s1")
	// The move does not finish: the VM goes on with its old target, and
	// its next cycle sends what the old replica lacks, the seed's writes too.
	h.target, h.p.Target.Path = oldTarget, oldTarget
	write(0x33, 12*MiB+4*KiB, 4*KiB)
	cycle("p2", 64*KiB+4*KiB)
	// A move that finishes: its first cycle on the new target is exact.
	seed("s2")
	write(0x44, 9*MiB, 4*KiB)
	cycle("s3", -1)
}
