package tasks

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// Replication cycles of a QEMU VM through the qemu driver: the first
// sends what the disk holds, the next exactly what the guest wrote, and
// each point is the disk at its capture.
func TestReplicationCyclesOfAQEMUVMSendTheDiskThenOnlyItsWrites(t *testing.T) {
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
	cycle := func(point string, wantSent int64) {
		t.Helper()
		res := h.replicate(t, point)
		if res.BytesSent != wantSent || res.Consistency != replica.ConsistencyCrash || res.Capture != driver.MethodFleece {
			t.Fatalf("cycle %s: sent %d (want %d), %s by %s", point, res.BytesSent, wantSent, res.Consistency, res.Capture)
		}
		if !bytes.Equal(h.readPoint(t, point), want) {
			t.Fatalf("point %s is not the disk at its capture", point)
		}
	}
	write(0x11, 0, 1*MiB)
	cycle("p1", 1*MiB)
	write(0x22, 5*MiB, 64*KiB)
	write(0x33, 12*MiB+4*KiB, 4*KiB)
	cycle("p2", 64*KiB+4*KiB)
	cycle("p3", 0)
}
