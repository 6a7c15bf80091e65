package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
	"github.com/lifeboat-dr/lifeboat/models"
)

// qemuWrite is a pattern written at an extent of a disk.
type qemuWrite struct {
	pattern     byte
	off, length int64
}

// qemuDiskAt is the disk's bytes [off, off+len(b)) after the writes.
func qemuDiskAt(b []byte, off int64, writes []qemuWrite) {
	clear(b)
	for _, w := range writes {
		start, end := max(w.off, off), min(w.off+w.length, off+int64(len(b)))
		for i := start; i < end; i++ {
			b[i-off] = w.pattern
		}
	}
}

// assertQEMUPoint checks, a chunk at a time, that a point's disk on the
// directory target is the disk after the writes.
func assertQEMUPoint(t *testing.T, targetDir, vmID, pointID, diskID string, size int64, writes []qemuWrite) {
	t.Helper()
	pr, got := openReplicaPoint(t, targetDir, vmID, pointID, diskID)
	if got != size {
		t.Fatalf("point %s: disk of %d bytes, want %d", pointID, got, size)
	}
	have, want := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(have)) {
		if _, err := io.ReadFull(io.NewSectionReader(pr, off, int64(len(have))), have); err != nil {
			t.Fatal(err)
		}
		qemuDiskAt(want, off, writes)
		if !bytes.Equal(have, want) {
			t.Fatalf("point %s differs from the disk in [%d, %d)", pointID, off, off+int64(len(have)))
		}
	}
}

// A real agent process (lifeboat-agent run --driver qemu) is killed with
// SIGKILL while the first cycle of a 1 GiB disk reads it: the capture it
// leaves in QEMU (a fleecing overlay, exports, frozen bitmaps) is removed
// by the restarted agent, whose cycle makes a point equal to the disk with
// the writes of before, during and after the killed cycle; nothing of a
// capture is left, and the next cycle sends exactly the next write.
func TestAQEMUAgentKilledMidReadRestartsLosingNoWriteAndLeavingNoOverlay(t *testing.T) {
	const size = 1 << 30
	qemutest.Require(t, qemutest.Binary, "qemu-img")
	v := newLiveVault(t)
	_, agentBin := binaries(t)
	// Unix socket paths are limited to 108 bytes: the QMP directory and
	// the agent's state directory (its captures' NBD sockets) are short.
	var qmpDir, stateDir string
	for _, d := range []*string{&qmpDir, &stateDir} {
		var err error
		if *d, err = os.MkdirTemp("", "lbe2e"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(*d) })
	}
	siteID, token := newAgentSite(t, v.testVault)
	keyFile := filepath.Join(t.TempDir(), "key.json")
	key, _ := json.Marshal(v.registrationKey(token, siteID))
	os.WriteFile(keyFile, key, 0o600)
	if out, err := exec.Command(agentBin, "register", "--key-file", keyFile, "--state-dir", stateDir, "--name", "kvm1").CombinedOutput(); err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	work := filepath.Join(stateDir, "qemu-captures")

	vm := qemutest.Start(t, "-machine", "pc", "-accel", "tcg", "-S", "-qmp", "unix:"+filepath.Join(qmpDir, "vm1.qmp")+",server=on,wait=off")
	img := vm.Image(t, "d0.qcow2", "qcow2", size)
	ctx := context.Background()
	m, err := qmp.Dial(ctx, vm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	qmpDo := func(cmd string, args, out any) {
		t.Helper()
		if err := m.Execute(ctx, cmd, args, out); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
	}
	qmpDo("blockdev-add", map[string]any{"node-name": "d0", "driver": "qcow2", "file": map[string]any{"driver": "file", "filename": img}}, nil)
	qmpDo("device_add", map[string]any{"driver": "virtio-blk-pci", "drive": "d0", "id": "dev-d0"}, nil)
	var writes []qemuWrite
	write := func(pattern byte, off, length int64) {
		t.Helper()
		var out string
		qmpDo("human-monitor-command", map[string]any{"command-line": fmt.Sprintf(
			"qemu-io -d /machine/peripheral/dev-d0/virtio-backend \"write -P %#x %d %d\"", pattern, off, length)}, &out)
		if out != "" {
			t.Fatalf("qemu-io: %q", out)
		}
		writes = append(writes, qemuWrite{pattern, off, length})
	}
	write(0x71, 0, 4<<20)
	write(0x72, 700<<20, 4<<20)

	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--driver", "qemu", "--qmp-dir", qmpDir, "--log-level", "debug")
	var vms struct {
		Items []struct {
			ID    string
			Disks []struct{ ID string }
		}
	}
	eventually(t, "the VM is listed", func() bool {
		v.api(http.MethodGet, "/api/v1/vms", token, nil, &vms)
		return len(vms.Items) == 1
	}, agent)
	vmID, diskID := vms.Items[0].ID, vms.Items[0].Disks[0].ID
	targetDir := t.TempDir()
	var policy, target struct{ ID string }
	v.api(http.MethodPost, "/api/v1/policies", token, `{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0}`, &policy)
	v.api(http.MethodPost, "/api/v1/targets", token, map[string]string{"name": "nas", "kind": "directory", "path": targetDir}, &target)
	if status := v.api(http.MethodPost, "/api/v1/vms/"+vmID+"/protection", token, map[string]string{"policy_id": policy.ID, "target_id": target.ID}, nil); status != http.StatusAccepted {
		t.Fatalf("enable protection: %d", status)
	}

	// The first cycle reads the whole disk: kill the agent once its
	// capture's overlay is there, after a write made during it.
	eventuallyWithin(t, 60*time.Second, "the first cycle's capture", func() bool {
		files, _ := filepath.Glob(filepath.Join(work, "vm1", "*.qcow2"))
		return len(files) > 0
	}, agent)
	write(0x73, 300<<20, 1<<20)
	agent.kill()
	var nodes []struct {
		NodeName string `json:"node-name"`
		File     string `json:"file"`
	}
	qmpDo("query-named-block-nodes", map[string]any{"flat": true}, &nodes)
	left := 0
	for _, n := range nodes {
		if strings.HasPrefix(n.File, work) {
			left++
		}
	}
	if points, _, _ := v.Store.ListRecoveryPoints(ctx, vmID, models.Page{Limit: 10}); left == 0 || len(points) != 0 {
		t.Fatalf("the agent was not killed mid-read: %d overlay nodes left, %d points made\n%s", left, len(points), agent.out)
	}
	write(0x74, 900<<20, 64<<10)

	agent = startProc(t, agentBin, "run", "--state-dir", stateDir, "--driver", "qemu", "--qmp-dir", qmpDir, "--log-level", "debug")
	eventuallyWithin(t, 90*time.Second, "protected after the restart", func() bool {
		p, err := v.Store.GetProtection(ctx, vmID)
		return err == nil && p.State == models.StateProtected
	}, agent)
	points, _, err := v.Store.ListRecoveryPoints(ctx, vmID, models.Page{Limit: 10})
	if err != nil || len(points) != 1 {
		t.Fatalf("points after the restart: %v %v", points, err)
	}
	assertQEMUPoint(t, targetDir, vmID, points[0].ID, diskID, size, writes)
	assertNoQEMUCaptureLeft(t, m, work)

	// Tracking goes on: the next cycle sends exactly the next write.
	write(0x75, 512<<20, 64<<10)
	v.advance(31 * time.Second)
	if _, err := v.Store.ScheduleReplications(ctx); err != nil {
		t.Fatal(err)
	}
	var newest []models.RecoveryPoint
	eventually(t, "the next point", func() bool {
		newest, _, _ = v.Store.ListRecoveryPoints(ctx, vmID, models.Page{Limit: 10})
		return len(newest) == 2
	}, agent)
	if p, err := v.Store.GetProtection(ctx, vmID); err != nil || p.LastCycleBytes != 64<<10 {
		t.Fatalf("the cycle after the restart's: %+v %v, want %d bytes sent", p, err, 64<<10)
	}
	assertQEMUPoint(t, targetDir, vmID, newest[0].ID, diskID, size, writes)
	assertNoQEMUCaptureLeft(t, m, work)
}

// assertNoQEMUCaptureLeft checks that no block export, job or node on a
// file of the work directory remains, nor any file in it, and that disk
// d0 has one Lifeboat bitmap, recording.
func assertNoQEMUCaptureLeft(t *testing.T, m *qmp.Monitor, work string) {
	t.Helper()
	ctx := context.Background()
	var exports, jobs []map[string]any
	m.Execute(ctx, "query-block-exports", nil, &exports)
	m.Execute(ctx, "query-jobs", nil, &jobs)
	if len(exports)+len(jobs) != 0 {
		t.Fatalf("exports %v and jobs %v left", exports, jobs)
	}
	var nodes []struct {
		NodeName string `json:"node-name"`
		File     string `json:"file"`
		Bitmaps  []struct {
			Name      string `json:"name"`
			Recording bool   `json:"recording"`
		} `json:"dirty-bitmaps"`
	}
	if err := m.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if strings.HasPrefix(n.File, work) {
			t.Fatalf("a capture's node is left: %s on %s", n.NodeName, n.File)
		}
		if n.NodeName != "d0" {
			continue
		}
		if len(n.Bitmaps) != 1 || !n.Bitmaps[0].Recording || !strings.HasPrefix(n.Bitmaps[0].Name, "lifeboat-") {
			t.Fatalf("disk d0's bitmaps: %+v, want one of Lifeboat's, recording", n.Bitmaps)
		}
	}
	var files []string
	filepath.WalkDir(work, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	if len(files) != 0 {
		t.Fatalf("files left in the capture work directory: %v", files)
	}
}
