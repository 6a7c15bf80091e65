package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
)

// writePointImage writes a disk of a recovery point on the directory
// target to a raw image (sparse: chunks of zeros are skipped).
func writePointImage(t *testing.T, targetDir, vmID, pointID, diskID, out string) {
	t.Helper()
	pr, size := openReplicaPoint(t, targetDir, vmID, pointID, diskID)
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf, zero := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), size-off)]
		if _, err := io.ReadFull(io.NewSectionReader(pr, off, int64(len(b))), b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, zero[:len(b)]) {
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// An instant test failover onto a qemu recovery host: the recovery
// agent serves the point and starts the test VM on it at once; the guest
// boots within seconds while the job still copies its 3 GiB disk, and
// once the job is done the VM's own disk, with no backing, is the point.
func TestAnInstantTestFailoverBootsTheGuestWithinSecondsAndEndsWithItsDiskEqualToThePoint(t *testing.T) {
	s, _, drVMs := newQEMUSites(t, 3<<30)
	vm := s.protect(t, "guest")
	b, _ := json.Marshal(map[string]any{"recovery_point": "latest_processed", "recovery_host_id": s.drHostID, "instant": true})
	var accepted struct {
		JobID string `json:"job_id"`
		Error struct{ Code, Message string }
	}
	start := time.Now()
	if status := s.v.do(http.MethodPost, "/api/v1/vms/"+vm.ID+"/test-failover", b, &accepted); status != http.StatusAccepted {
		t.Fatalf("instant test failover: %d %+v", status, accepted.Error)
	}
	dir := filepath.Join(drVMs, "guest-test")
	var booted time.Duration
	eventuallyWithin(t, 2*time.Minute, "the instant test VM boots", func() bool {
		out, _ := os.ReadFile(filepath.Join(dir, "serial.log"))
		if !strings.Contains(string(out), qemutest.ReadyLine) {
			return false
		}
		booted = time.Since(start)
		return true
	}, s.dr)
	var during e2eJob
	s.v.do(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, nil, &during)
	if during.ended() {
		t.Fatalf("the job was over (%s) when the guest booted %v after its start: nothing shows the guest ran before its disk was copied", during.State, booted)
	}
	job := s.waitJobState(t, accepted.JobID, "")
	if job.State != "Succeeded" {
		t.Fatalf("instant test failover: %+v\n%s", job, s.dr.out.String())
	}
	t.Logf("the guest booted %v after the job's start; the job ended %v after it", booted, time.Since(start))
	disk := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "info", "-U", disk).CombinedOutput(); err != nil || strings.Contains(string(out), "backing file") {
		t.Fatalf("the test VM's disk after the job: %v\n%s", err, out)
	}
	point := s.vm(t, vm.ID).Recovery.TestFailover.PointID
	image := filepath.Join(t.TempDir(), "point.raw")
	writePointImage(t, s.dir, vm.ID, point, vm.DiskID, image)
	if out, err := exec.Command("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", disk, image).CombinedOutput(); err != nil {
		t.Fatalf("the test VM's disk is not point %s: %v\n%s", point, err, out)
	}
	if job := s.run(t, "/api/v1/vms/"+vm.ID+"/test-failover/cleanup", map[string]string{"notes": "instant"}); job.State != "Succeeded" {
		t.Fatalf("cleanup: %+v", job)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the test VM is still there: %v", err)
	}
}
