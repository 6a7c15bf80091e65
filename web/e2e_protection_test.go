package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// openReplicaPoint opens a disk at a recovery point straight from the
// directory target, as a recovery would, until the test ends.
func openReplicaPoint(t *testing.T, targetDir, vmID, pointID, diskID string) (io.ReaderAt, int64) {
	t.Helper()
	r, err := dirtarget.OpenExisting(targetDir, vmID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	pr, size, err := r.ReadPoint(pointID, diskID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close() })
	return pr, size
}

// readReplicaPoint reads a disk at a recovery point whole.
func readReplicaPoint(t *testing.T, targetDir, vmID, pointID, diskID string) []byte {
	t.Helper()
	pr, size := openReplicaPoint(t, targetDir, vmID, pointID, diskID)
	b, err := io.ReadAll(io.NewSectionReader(pr, 0, size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestProtectedVMReplicatesToADirectoryWithPointsEqualToTheSource(t *testing.T) {
	t.Parallel() // mostly waits for 30-second cycles
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registeredAgent(t, v)
	vmRoot := t.TempDir()
	disk := filepath.Join(vmRoot, "app", "disk0.img")
	os.MkdirAll(filepath.Dir(disk), 0o755)
	source := make([]byte, 6<<20) // mostly zeros, some data
	rand.Read(source[1<<20 : 2<<20])
	os.WriteFile(disk, source, 0o644)
	// Not written for longer than a file's times can be trusted to show a
	// write: the initial copy of this VM (no "running" marker: off), read
	// without a freeze, finds it unchanged, so crash-consistent.
	time.Sleep(replica.QuietFor + 500*time.Millisecond)
	quiesceLog := filepath.Join(t.TempDir(), "quiesce.log")
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot,
		"--freeze-command", `echo "freeze $LIFEBOAT_VM_ID" >> `+quiesceLog, "--thaw-command", `echo "thaw $LIFEBOAT_VM_ID" >> `+quiesceLog)

	var vms struct {
		Items []struct {
			ID    string
			Disks []struct{ ID string }
		}
	}
	eventually(t, "the VM is listed", func() bool {
		v.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 1
	}, v.proc, agent)
	vmID, diskID := vms.Items[0].ID, vms.Items[0].Disks[0].ID
	var policy, target struct{ ID string }
	v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":1,`+closedResyncWindow()+`}`), &policy)
	targetDir := t.TempDir()
	body, _ := json.Marshal(map[string]string{"name": "nas", "kind": "directory", "path": targetDir})
	v.do(http.MethodPost, "/api/v1/targets", body, &target)
	body, _ = json.Marshal(map[string]string{"policy_id": policy.ID, "target_id": target.ID})
	var accepted struct {
		JobID string `json:"job_id"`
	}
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/protection", body, &accepted); status != http.StatusAccepted {
		t.Fatalf("enable protection: %d", status)
	}
	var job e2eJob
	eventually(t, "the Enable protection job succeeds", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, nil, &job)
		return job.State == "Succeeded" || job.State == "Failed"
	}, v.proc, agent)
	if job.State != "Succeeded" || len(job.Steps) != 4 {
		t.Fatalf("job: %+v\n%s", job, agent.out.String())
	}
	var vm struct {
		ProtectionState string `json:"protection_state"`
	}
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	if vm.ProtectionState != "Protected" {
		t.Fatalf("protection state %q", vm.ProtectionState)
	}
	var points struct {
		Items []struct {
			ID          string
			SizeBytes   int64 `json:"size_bytes"`
			Consistency string
			Capture     string
		}
	}
	v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
	if len(points.Items) != 1 || points.Items[0].SizeBytes != int64(len(source)) {
		t.Fatalf("points after initial replication: %+v", points)
	}
	first := points.Items[0].ID
	if got := readReplicaPoint(t, targetDir, vmID, first, diskID); !bytes.Equal(got, source) {
		t.Fatal("the initial recovery point differs from the source disk")
	}
	// Only data was sent, not the zeros.
	if fi, _ := os.Stat(filepath.Join(targetDir, vmID, "disks", diskID+".vhd")); fi == nil {
		t.Fatal("no replica file")
	}

	// A write between cycles: the next scheduled cycle (30 s) makes a new
	// point with it, and the first point still reads as before.
	before := bytes.Clone(source)
	copy(source[4<<20:], bytes.Repeat([]byte{0xAB}, 70000))
	os.WriteFile(disk, source, 0o644)
	eventually45 := time.Now().Add(50 * time.Second)
	for time.Now().Before(eventually45) {
		v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
		if len(points.Items) == 2 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(points.Items) != 2 {
		t.Fatalf("no second point within 50 s:\n%s", agent.out.String())
	}
	if got := readReplicaPoint(t, targetDir, vmID, points.Items[0].ID, diskID); !bytes.Equal(got, source) {
		t.Fatal("the second point differs from the source after the write")
	}
	if got := readReplicaPoint(t, targetDir, vmID, first, diskID); !bytes.Equal(got, before) {
		t.Fatal("the first point changed after the second cycle")
	}
	// The policy wants an app-consistent point each hour and there was none:
	// the scheduled cycle quiesced the VM with the freeze and thaw commands.
	if points.Items[0].Consistency != "app" || points.Items[1].Consistency != "crash" || points.Items[1].Capture != "powered_off" {
		t.Fatalf("consistency: newest %q, initial %q", points.Items[0].Consistency, points.Items[1].Consistency)
	}
	if log, _ := os.ReadFile(quiesceLog); string(log) != "freeze app\nthaw app\n" {
		t.Fatalf("quiesce commands ran as %q", log)
	}

	// Verify: the newest point reads back clean; after rot in the replica,
	// the job fails naming the offset, and the VM needs a resync.
	verify := func() e2eJob {
		var accepted struct {
			JobID string `json:"job_id"`
		}
		if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/recovery-points/"+points.Items[0].ID+"/verify", nil, &accepted); status != http.StatusAccepted {
			t.Fatalf("verify: %d", status)
		}
		var job e2eJob
		eventually(t, "the verify job ends", func() bool {
			v.do(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, nil, &job)
			return job.State == "Succeeded" || job.State == "Failed"
		}, v.proc, agent)
		return job
	}
	if clean := verify(); clean.State != "Succeeded" {
		t.Fatalf("verify of a clean point: %+v", clean)
	}
	replica := filepath.Join(targetDir, vmID, "disks", diskID+".vhd")
	f, _ := os.OpenFile(replica, os.O_RDWR, 0)
	f.WriteAt([]byte{0x5A}, 1<<20+12345) // inside block 259, data the point reads from the replica
	f.Close()
	verify()
	var jobs struct {
		Items []struct {
			State string
			Error *struct{ Code, Message string }
		}
	}
	v.do(http.MethodGet, "/api/v1/jobs?type=Verify%20recovery%20point", nil, &jobs)
	if len(jobs.Items) == 0 || jobs.Items[0].State != "Failed" || jobs.Items[0].Error == nil || jobs.Items[0].Error.Code != "replica_mismatch" ||
		!strings.Contains(jobs.Items[0].Error.Message, "offset 1060864") {
		t.Fatalf("verify after corruption: %+v", jobs.Items)
	}
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	if vm.ProtectionState != "ResyncRequired" {
		t.Fatalf("after a verify mismatch the VM is %s, want ResyncRequired", vm.ProtectionState)
	}
	out, err := exec.Command(agentBin, "verify", "--target-dir", targetDir, "--vm", vmID).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "MISMATCH disk "+diskID+" offset 1060864") {
		t.Fatalf("lifeboat-agent verify: %v\n%s", err, out)
	}

	// Resynchronize: exactly the rotten block is sent again, from hashes
	// alone, and the VM is Protected with a clean new point.
	var sent struct {
		BytesSent *int64 `json:"bytes_sent"`
	}
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &sent)
	sentBefore := *sent.BytesSent
	var resync struct {
		JobID string `json:"job_id"`
	}
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/resync", nil, &resync); status != http.StatusAccepted {
		t.Fatalf("resync: %d", status)
	}
	eventually(t, "the resync job ends", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+resync.JobID, nil, &job)
		return job.State == "Succeeded" || job.State == "Failed"
	}, v.proc, agent)
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &sent)
	if job.State != "Succeeded" || vm.ProtectionState != "Protected" || *sent.BytesSent-sentBefore != 4096 {
		t.Fatalf("after resync: job %s, VM %s, %d bytes sent (want the one 4 KiB block)", job.State, vm.ProtectionState, *sent.BytesSent-sentBefore)
	}
	if out, err := exec.Command(agentBin, "verify", "--target-dir", targetDir, "--vm", vmID).CombinedOutput(); err != nil {
		t.Fatalf("verify after resync: %v\n%s", err, out)
	}
	v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
	if got := readReplicaPoint(t, targetDir, vmID, points.Items[0].ID, diskID); !bytes.Equal(got, source) {
		t.Fatal("the point made by the resync differs from the source")
	}
}

func TestCyclesFailWhileTheTargetIsAwayAndNoChangeIsMissingOnceItIsBack(t *testing.T) {
	t.Parallel() // mostly waits for cycles and the one-minute retry
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registeredAgent(t, v)
	vmRoot := t.TempDir()
	disk := filepath.Join(vmRoot, "db", "disk0.img")
	os.MkdirAll(filepath.Dir(disk), 0o755)
	source := make([]byte, 2<<20)
	rand.Read(source[:1<<20])
	os.WriteFile(disk, source, 0o644)
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	var vms struct {
		Items []struct {
			ID    string
			Disks []struct{ ID string }
		}
	}
	eventually(t, "the VM is listed", func() bool {
		v.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 1
	}, v.proc, agent)
	vmID, diskID := vms.Items[0].ID, vms.Items[0].Disks[0].ID
	var policy, target struct{ ID string }
	v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0}`), &policy)
	targetDir := t.TempDir()
	body, _ := json.Marshal(map[string]string{"name": "nas", "kind": "directory", "path": targetDir})
	v.do(http.MethodPost, "/api/v1/targets", body, &target)
	body, _ = json.Marshal(map[string]string{"policy_id": policy.ID, "target_id": target.ID})
	v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/protection", body, nil)
	var vm struct {
		ProtectionState string   `json:"protection_state"`
		Health          *string  `json:"health"`
		HealthReasons   []string `json:"health_reasons"`
	}
	eventually(t, "protected", func() bool {
		v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
		return vm.ProtectionState == "Protected"
	}, v.proc, agent)

	// The NAS goes away; the VM keeps writing.
	replicas := targetDir // the whole share, as when a NAS goes away
	if err := os.Rename(replicas, replicas+".unmounted"); err != nil {
		t.Fatal(err)
	}
	copy(source[1<<20:], bytes.Repeat([]byte{0x42}, 300000))
	os.WriteFile(disk, source, 0o644)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
		if vm.Health != nil && *vm.Health == "Warning" && len(vm.HealthReasons) > 0 && strings.Contains(vm.HealthReasons[0], "target_unavailable") {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if vm.Health == nil || *vm.Health != "Warning" || len(vm.HealthReasons) == 0 || !strings.Contains(vm.HealthReasons[0], "target_unavailable") {
		t.Fatalf("a cycle with the target away must fail recoverably: %+v\n%s", vm, agent.out.String())
	}
	if _, err := os.Stat(replicas); err == nil {
		t.Fatal("the failed cycle created an empty replica where the target should be")
	}
	// It comes back: the retry (1 minute after the first failure) sends the change.
	os.Rename(replicas+".unmounted", replicas)
	var points struct{ Items []struct{ ID string } }
	deadline = time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
		if len(points.Items) == 2 {
			break
		}
		time.Sleep(time.Second)
	}
	if len(points.Items) != 2 {
		t.Fatalf("no new point after the target came back:\n%s", agent.out.String())
	}
	if got := readReplicaPoint(t, targetDir, vmID, points.Items[0].ID, diskID); !bytes.Equal(got, source) {
		t.Fatal("a change made while the target was away is missing")
	}
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	if vm.Health == nil || *vm.Health != "Normal" {
		t.Fatalf("health after recovery: %+v", vm)
	}
}

// allocated is how many bytes of a sparse file hold data.
func allocated(t *testing.T, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestAgentKilledDuringInitialReplicationResumesWithoutResendingMuch(t *testing.T) {
	t.Parallel()
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registeredAgent(t, v)
	vmRoot := t.TempDir()
	disk := filepath.Join(vmRoot, "big", "disk0.img")
	os.MkdirAll(filepath.Dir(disk), 0o755)
	const size, data = 256 << 20, 128 << 20 // half of it data, in 8 MiB stripes
	f, _ := os.Create(disk)
	f.Truncate(size)
	stripe := make([]byte, 8<<20)
	for off := int64(0); off < size; off += 16 << 20 {
		rand.Read(stripe)
		f.WriteAt(stripe, off)
	}
	f.Close()
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	var vms struct {
		Items []struct {
			ID    string
			Disks []struct{ ID string }
		}
	}
	eventually(t, "the VM is listed", func() bool {
		v.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 1
	}, v.proc, agent)
	vmID, diskID := vms.Items[0].ID, vms.Items[0].Disks[0].ID
	// 200 Mbit/s at all hours: the copy takes about 5 s, long enough to be
	// interrupted.
	var policy, target struct{ ID string }
	v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"slow","copy_frequency_seconds":900,"retention_hours":24,"app_consistent_frequency_hours":0,
		"bandwidth":{"work_hours":{"start":"08:00","end":"18:00"},"work_hours_mbps":200,"off_hours_mbps":200}}`), &policy)
	targetDir := t.TempDir()
	body, _ := json.Marshal(map[string]string{"name": "nas", "kind": "directory", "path": targetDir})
	v.do(http.MethodPost, "/api/v1/targets", body, &target)
	body, _ = json.Marshal(map[string]string{"policy_id": policy.ID, "target_id": target.ID})
	var accepted struct {
		JobID string `json:"job_id"`
	}
	v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/protection", body, &accepted)

	replica := filepath.Join(targetDir, vmID, "disks", diskID+".vhd")
	eventually(t, "the initial copy is under way", func() bool { return allocated(t, replica) > data/5 }, v.proc, agent)
	agent.kill() // kill -9 in the middle of the copy
	before := allocated(t, replica)
	if before >= data {
		t.Fatalf("the copy ended before the kill (%d bytes); the test proves nothing", before)
	}
	agent = startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	var job e2eJob
	eventually(t, "the job completes after the restart", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, nil, &job)
		return job.State == "Succeeded" || job.State == "Failed"
	}, v.proc, agent)
	if job.State != "Succeeded" {
		t.Fatalf("job: %+v", job)
	}
	var vm struct {
		BytesSent *int64 `json:"bytes_sent"`
	}
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	total := before + *vm.BytesSent
	if total > data*5/4 {
		t.Fatalf("sent %d before the kill and %d after: %.2f × the disk's data, want ≤ 1.25", before, *vm.BytesSent, float64(total)/data)
	}
	source, _ := os.ReadFile(disk)
	var points struct{ Items []struct{ ID string } }
	v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
	if got := readReplicaPoint(t, targetDir, vmID, points.Items[0].ID, diskID); !bytes.Equal(got, source) {
		t.Fatal("the initial point differs from the source")
	}
	t.Logf("sent %d MiB before the kill, %d MiB after: %.2f × the data", before>>20, *vm.BytesSent>>20, float64(total)/data)
}

// closedResyncWindow is a policy's "resync_window" member for a window that
// opens hours from now (the vault reads it on the local clock), so a VM that
// needs a resync waits for one instead of getting it at once, whatever the
// time of day the test runs.
func closedResyncWindow() string {
	start := time.Now().Add(3 * time.Hour)
	return fmt.Sprintf(`"resync_window":{"start":%q,"end":%q}`, start.Format("15:04"), start.Add(time.Hour).Format("15:04"))
}
