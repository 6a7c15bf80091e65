package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// recoverySite is a source host and a recovery host, each with its agent
// running with start and stop commands that log what they did, and a
// policy and a directory target to protect the source's VMs with.
type recoverySite struct {
	v                       *e2eVault
	srcRoot, drRoot         string
	srcLog, drLog           string
	src, dr                 *proc
	srcHostID, drHostID     string
	drState                 string
	policyID, targetID, dir string
}

// hookCommands are filedisk start and stop commands that log each call to
// log, and whose stop fails for the VM named refuse (its guest ignores the
// shutdown).
func hookCommands(log, refuse string) (start, stop string) {
	start = `echo "start $LIFEBOAT_VM_ID isolated=$LIFEBOAT_ISOLATED" >> ` + log
	stop = fmt.Sprintf(`if [ "$LIFEBOAT_VM_ID" = %q ]; then echo "the guest ignored the shutdown" >&2; exit 1; fi; echo "stop $LIFEBOAT_VM_ID" >> %s`, refuse, log)
	return start, stop
}

func newRecoverySite(t *testing.T, vms map[string][]byte, running ...string) *recoverySite {
	t.Helper()
	_, agentBin := binaries(t)
	s := &recoverySite{v: newE2EVault(t), srcRoot: t.TempDir(), drRoot: t.TempDir(), dir: t.TempDir()}
	s.srcLog, s.drLog = filepath.Join(t.TempDir(), "src.log"), filepath.Join(t.TempDir(), "dr.log")
	for name, disk := range vms {
		os.MkdirAll(filepath.Join(s.srcRoot, name), 0o755)
		replaceFile(t, filepath.Join(s.srcRoot, name, "disk0.img"), disk)
	}
	for _, name := range running {
		os.WriteFile(filepath.Join(s.srcRoot, name, "running"), nil, 0o644)
	}
	// Not written for longer than a file's times can be trusted to show a
	// write: the running VMs' first cycles find them unchanged during the
	// read, so their points are crash-consistent.
	time.Sleep(replica.QuietFor + 500*time.Millisecond)
	srcState, _ := registerHost(t, s.v, "Primary", "hv-src")
	drState, _ := registerHost(t, s.v, "Recovery", "hv-dr")
	s.drState = drState
	start, stop := hookCommands(s.srcLog, "stubborn")
	s.src = startProc(t, agentBin, "run", "--state-dir", srcState, "--vm-root", s.srcRoot, "--start-command", start, "--stop-command", stop)
	start, stop = hookCommands(s.drLog, "")
	s.dr = startProc(t, agentBin, "run", "--state-dir", drState, "--vm-root", s.drRoot, "--start-command", start, "--stop-command", stop)
	var hosts struct {
		Items []struct{ ID, Name, State string }
	}
	eventually(t, "both hosts are connected", func() bool {
		s.v.do(http.MethodGet, "/api/v1/hosts", nil, &hosts)
		n := 0
		for _, h := range hosts.Items {
			if h.State == "Connected" {
				n++
			}
		}
		return n == 2
	}, s.v.proc, s.src, s.dr)
	for _, h := range hosts.Items {
		if h.Name == "hv-src" {
			s.srcHostID = h.ID
		} else {
			s.drHostID = h.ID
		}
	}
	var policy, target struct{ ID string }
	s.v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0,`+closedResyncWindow()+`}`), &policy)
	body, _ := json.Marshal(map[string]string{"name": "nas", "kind": "directory", "path": s.dir})
	s.v.do(http.MethodPost, "/api/v1/targets", body, &target)
	s.policyID, s.targetID = policy.ID, target.ID
	return s
}

type recoveryVM struct {
	ID, DiskID string
}

// protect protects the source host's VM of that name and waits for its
// first point.
func (s *recoverySite) protect(t *testing.T, name string) recoveryVM {
	t.Helper()
	var vms struct {
		Items []struct {
			ID, Name string
			HostID   string `json:"host_id"`
			Disks    []struct{ ID string }
		}
	}
	var vm recoveryVM
	eventually(t, "VM "+name+" is listed", func() bool {
		s.v.do(http.MethodGet, "/api/v1/vms?host_id="+s.srcHostID, nil, &vms)
		for _, it := range vms.Items {
			if it.Name == name && len(it.Disks) == 1 {
				vm = recoveryVM{ID: it.ID, DiskID: it.Disks[0].ID}
				return true
			}
		}
		return false
	}, s.v.proc, s.src)
	body, _ := json.Marshal(map[string]string{"policy_id": s.policyID, "target_id": s.targetID})
	var accepted struct {
		JobID string `json:"job_id"`
	}
	if status := s.v.do(http.MethodPost, "/api/v1/vms/"+vm.ID+"/protection", body, &accepted); status != http.StatusAccepted {
		t.Fatalf("protect %s: %d", name, status)
	}
	if job := s.waitJob(t, accepted.JobID); job.State != "Succeeded" {
		t.Fatalf("protect %s: %+v", name, job)
	}
	return vm
}

// waitJob waits up to 90 s for a job to end.
func (s *recoverySite) waitJob(t *testing.T, id string) e2eJob {
	t.Helper()
	return s.waitJobState(t, id, "")
}

// waitJobState waits up to 120 s for a job to be in a state ("": any end)
// and fails if it ends in another.
func (s *recoverySite) waitJobState(t *testing.T, id, want string) e2eJob {
	t.Helper()
	var job e2eJob
	eventuallyWithin(t, 120*time.Second, "job "+id+" reaches "+want, func() bool {
		job = e2eJob{}
		s.v.do(http.MethodGet, "/api/v1/jobs/"+id, nil, &job)
		return job.State == want || job.ended()
	}, s.v.proc, s.src, s.dr)
	if want != "" && job.State != want {
		t.Fatalf("job %s is %s, want %s: %+v\n%s%s", id, job.State, want, job, s.src.out.String(), s.dr.out.String())
	}
	return job
}

// start posts a recovery call and returns its job once it ended.
func (s *recoverySite) run(t *testing.T, path string, body any) e2eJob {
	t.Helper()
	b, _ := json.Marshal(body)
	var accepted struct {
		JobID string `json:"job_id"`
		Error struct{ Code, Message string }
	}
	if status := s.v.do(http.MethodPost, path, b, &accepted); status != http.StatusAccepted {
		t.Fatalf("POST %s: %d %+v", path, status, accepted.Error)
	}
	return s.waitJob(t, accepted.JobID)
}

type recoveryState struct {
	ProtectionState string `json:"protection_state"`
	Recovery        struct {
		TestFailover *struct {
			PointID string `json:"point_id"`
		} `json:"test_failover"`
		LastDrill *struct{ Notes string } `json:"last_drill"`
		Failover  *struct {
			Kind    string
			PointID string `json:"point_id"`
		}
	}
}

func (s *recoverySite) vm(t *testing.T, id string) recoveryState {
	t.Helper()
	var out recoveryState
	s.v.do(http.MethodGet, "/api/v1/vms/"+id, nil, &out)
	return out
}

func (s *recoverySite) points(t *testing.T, vmID string) e2ePoints {
	t.Helper()
	var p e2ePoints
	s.v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &p)
	return p
}

// bytesSent is what the protection of a VM sent so far.
func (s *recoverySite) bytesSent(t *testing.T, vmID string) int64 {
	t.Helper()
	var v struct {
		BytesSent *int64 `json:"bytes_sent"`
	}
	s.v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &v)
	if v.BytesSent == nil {
		t.Fatalf("VM %s is not protected", vmID)
	}
	return *v.BytesSent
}

// vmOn waits for a host to list a VM of that name and returns its id.
func (s *recoverySite) vmOn(t *testing.T, hostID, name string) string {
	t.Helper()
	var id string
	eventually(t, "host lists VM "+name, func() bool {
		var vms struct{ Items []struct{ ID, Name string } }
		s.v.do(http.MethodGet, "/api/v1/vms?host_id="+hostID, nil, &vms)
		for _, it := range vms.Items {
			if it.Name == name {
				id = it.ID
				return true
			}
		}
		return false
	}, s.v.proc, s.dr)
	return id
}

func fileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The full circle on a directory target with real agents: a test failover
// makes an isolated copy equal to the point and its cleanup records the
// drill; a planned failover shuts the source down and the last write is
// on the recovery side; commit keeps that point. A planned failover whose
// source will not stop fails and leaves it running; an unplanned one with
// the source's agent killed recovers from the replica.
func TestRecoveryOnADirectoryTargetWithRealAgents(t *testing.T) {
	t.Parallel() // waits for cycles and jobs on two agents
	app := make([]byte, 8<<20)
	rand.Read(app[1<<20 : 3<<20])
	stubborn := make([]byte, 4<<20)
	rand.Read(stubborn[:1<<20])
	s := newRecoverySite(t, map[string][]byte{"app": app, "stubborn": stubborn}, "app", "stubborn")
	vm := s.protect(t, "app")
	other := s.protect(t, "stubborn")
	first := s.points(t, vm.ID).Items[0].ID

	// Test failover: <vm>-test on the recovery host, isolated, equal to the
	// point; the source keeps running.
	job := s.run(t, "/api/v1/vms/"+vm.ID+"/test-failover", map[string]string{"recovery_point": "latest_processed", "recovery_host_id": s.drHostID})
	if job.State != "Succeeded" {
		t.Fatalf("test failover: %+v\n%s", job, s.dr.out.String())
	}
	testDisk := filepath.Join(s.drRoot, "app-test", "disk0.img")
	if got := fileBytes(t, testDisk); !bytes.Equal(got, readReplicaPoint(t, s.dir, vm.ID, first, vm.DiskID)) || !bytes.Equal(got, app) {
		t.Fatal("the test VM's disk differs from the recovery point")
	}
	if _, err := os.Stat(filepath.Join(s.drRoot, "app-test", "running")); err != nil {
		t.Fatalf("the test VM was not started: %v", err)
	}
	if log := string(fileBytes(t, s.drLog)); !strings.Contains(log, "isolated=1") {
		t.Fatalf("the test VM was not started isolated: %q", log)
	}
	if _, err := os.Stat(filepath.Join(s.srcRoot, "app", "running")); err != nil {
		t.Fatal("a test failover stopped the source VM")
	}
	if st := s.vm(t, vm.ID); st.ProtectionState != "Protected" || st.Recovery.TestFailover == nil || st.Recovery.TestFailover.PointID != first {
		t.Fatalf("after the test failover: %+v", st)
	}
	// Cleanup with notes: the test VM is gone, the drill is recorded.
	if job := s.run(t, "/api/v1/vms/"+vm.ID+"/test-failover/cleanup", map[string]string{"notes": "booted; the service answered"}); job.State != "Succeeded" {
		t.Fatalf("cleanup: %+v\n%s", job, s.dr.out.String())
	}
	if _, err := os.Stat(filepath.Join(s.drRoot, "app-test")); !os.IsNotExist(err) {
		t.Fatalf("the test VM is still there: %v", err)
	}
	if st := s.vm(t, vm.ID); st.Recovery.TestFailover != nil || st.Recovery.LastDrill == nil || st.Recovery.LastDrill.Notes != "booted; the service answered" {
		t.Fatalf("after the cleanup: %+v", st)
	}

	// A write, then a planned failover: the source is shut down, the final
	// cycle sends the write, and the recovered VM has it.
	marker := bytes.Repeat([]byte{0xCD}, 4096)
	copy(app[5<<20:], marker)
	replaceFile(t, filepath.Join(s.srcRoot, "app", "disk0.img"), app)
	job = s.run(t, "/api/v1/vms/"+vm.ID+"/failover", map[string]string{"type": "planned", "recovery_host_id": s.drHostID})
	if job.State != "Succeeded" || len(job.Steps) != 3 {
		t.Fatalf("planned failover: %+v\n%s%s", job, s.src.out.String(), s.dr.out.String())
	}
	if _, err := os.Stat(filepath.Join(s.srcRoot, "app", "running")); !os.IsNotExist(err) {
		t.Fatal("the source VM still runs after a planned failover")
	}
	if !strings.Contains(string(fileBytes(t, s.srcLog)), "stop app") {
		t.Fatal("the source's stop command did not run")
	}
	if got := fileBytes(t, filepath.Join(s.drRoot, "app", "disk0.img")); !bytes.Equal(got, app) {
		t.Fatal("the recovered VM lacks the last write before the shutdown")
	}
	st := s.vm(t, vm.ID)
	if st.ProtectionState != "FailedOver" || st.Recovery.Failover == nil || st.Recovery.Failover.Kind != "planned" {
		t.Fatalf("after the planned failover: %+v", st)
	}
	if !strings.Contains(string(fileBytes(t, s.drLog)), "isolated=0") {
		t.Fatal("the recovered VM was not started")
	}
	// Commit keeps the point the VM runs from, the newest, and deletes the
	// older ones from the target.
	if job := s.run(t, "/api/v1/vms/"+vm.ID+"/failover/commit", nil); job.State != "Succeeded" {
		t.Fatalf("commit: %+v", job)
	}
	if pts := s.points(t, vm.ID); len(pts.Items) != 1 || pts.Items[0].ID != st.Recovery.Failover.PointID {
		t.Fatalf("points after commit: %+v, the VM runs from %s", pts, st.Recovery.Failover.PointID)
	}
	if got := readReplicaPoint(t, s.dir, vm.ID, st.Recovery.Failover.PointID, vm.DiskID); !bytes.Equal(got, app) {
		t.Fatal("the committed point changed")
	}
	if st := s.vm(t, vm.ID); st.ProtectionState != "Committed" {
		t.Fatalf("after commit: %s", st.ProtectionState)
	}

	// Re-protect: the recovered VM, written on the recovery side, is
	// replicated into the same replicas, and only what changed travels.
	recovered := filepath.Join(s.drRoot, "app", "disk0.img")
	onRecovery := fileBytes(t, recovered)
	rand.Read(onRecovery[6<<20 : 6<<20+64<<10])
	replaceFile(t, recovered, onRecovery)
	sentBefore := s.bytesSent(t, vm.ID)
	recoveredID := s.vmOn(t, s.drHostID, "app")
	if job := s.run(t, "/api/v1/vms/"+vm.ID+"/reprotect", nil); job.State != "Succeeded" {
		t.Fatalf("re-protect: %+v\n%s", job, s.dr.out.String())
	}
	if st := s.vm(t, recoveredID); st.ProtectionState != "Protected" {
		t.Fatalf("after re-protect the recovered VM is %s", st.ProtectionState)
	}
	if sent := s.bytesSent(t, recoveredID) - sentBefore; sent < 64<<10 || sent > 128<<10 {
		t.Fatalf("re-protect sent %d bytes for 64 KiB changed on an 8 MiB disk", sent)
	}

	// Fail back to the original VM: a last write on the recovery side, the
	// recovered VM shut down, a final cycle, and only the blocks that
	// differ written into the original disk.
	copy(onRecovery[7<<20:], bytes.Repeat([]byte{0xEF}, 4096))
	replaceFile(t, recovered, onRecovery)
	job = s.run(t, "/api/v1/vms/"+recoveredID+"/failover", map[string]string{"type": "planned"})
	if job.State != "Succeeded" {
		t.Fatalf("failback: %+v\n%s%s", job, s.src.out.String(), s.dr.out.String())
	}
	if got := fileBytes(t, filepath.Join(s.srcRoot, "app", "disk0.img")); !bytes.Equal(got, onRecovery) {
		t.Fatal("the original VM lacks the writes made on the recovery side")
	}
	if msg := job.Steps[len(job.Steps)-1].Message; !strings.Contains(msg, fmt.Sprintf("(%d bytes) written", 64<<10+4096)) {
		t.Fatalf("failback wrote other than the 68 KiB that differ: %q", msg)
	}
	if _, err := os.Stat(filepath.Join(s.srcRoot, "app", "running")); err != nil {
		t.Fatal("the original VM was not started after the failback")
	}
	if job := s.run(t, "/api/v1/vms/"+recoveredID+"/failover/commit", nil); job.State != "Succeeded" {
		t.Fatalf("commit of the failback: %+v", job)
	}
	// Re-protect in the original direction: Protected again, sending
	// nothing, since the original now equals the point.
	sentBefore = s.bytesSent(t, recoveredID)
	if job := s.run(t, "/api/v1/vms/"+recoveredID+"/reprotect", nil); job.State != "Succeeded" {
		t.Fatalf("re-protect in the original direction: %+v\n%s", job, s.src.out.String())
	}
	if st := s.vm(t, vm.ID); st.ProtectionState != "Protected" {
		t.Fatalf("the original VM is %s after re-protect", st.ProtectionState)
	}
	if sent := s.bytesSent(t, vm.ID) - sentBefore; sent > 64<<10 {
		t.Fatalf("re-protect in the original direction sent %d bytes; nothing differed", sent)
	}

	// A source that will not stop: the planned failover fails, says why,
	// and the VM goes on running and replicating.
	job = s.run(t, "/api/v1/vms/"+other.ID+"/failover", map[string]string{"type": "planned", "recovery_host_id": s.drHostID})
	if job.State != "Failed" || job.Error == nil || job.Error.Code != "vm_will_not_stop" || !strings.Contains(job.Error.Message, "ignored the shutdown") {
		t.Fatalf("failover of a VM that will not stop: %+v", job)
	}
	if _, err := os.Stat(filepath.Join(s.srcRoot, "stubborn", "running")); err != nil {
		t.Fatal("the VM that would not stop is marked stopped")
	}
	if _, err := os.Stat(filepath.Join(s.drRoot, "stubborn")); !os.IsNotExist(err) {
		t.Fatal("a VM was made on the recovery host although the source runs")
	}
	if st := s.vm(t, other.ID); st.ProtectionState != "Protected" {
		t.Fatalf("after the failed failover: %s", st.ProtectionState)
	}

	// A write, replicated in a crash-consistent point (a cycle that read
	// the disk while it was being written makes an inconsistent one first);
	// then the source host dies: an unplanned failover to "latest" recovers
	// from the newest consistent point on the target, which has the write.
	copy(stubborn[2<<20:], bytes.Repeat([]byte{0x77}, 4096))
	replaceFile(t, filepath.Join(s.srcRoot, "stubborn", "disk0.img"), stubborn)
	had := s.points(t, other.ID).Items[0].ID
	eventuallyWithin(t, 100*time.Second, "a crash-consistent point of stubborn after its write", func() bool {
		pts := s.points(t, other.ID)
		return len(pts.Items) > 0 && pts.Items[0].ID != had && pts.Items[0].Consistency == "crash"
	}, s.v.proc, s.src)
	s.src.kill()
	eventually(t, "the source host is disconnected", func() bool {
		var h struct{ State string }
		s.v.do(http.MethodGet, "/api/v1/hosts/"+s.srcHostID, nil, &h)
		return h.State == "Disconnected"
	}, s.v.proc)
	newest := s.points(t, other.ID).Items[0].ID
	job = s.run(t, "/api/v1/vms/"+other.ID+"/failover", map[string]any{"type": "unplanned", "recovery_point": "latest",
		"recovery_host_id": s.drHostID, "shut_down_source": true})
	if job.State != "Succeeded" {
		t.Fatalf("unplanned failover: %+v\n%s", job, s.dr.out.String())
	}
	if got := fileBytes(t, filepath.Join(s.drRoot, "stubborn", "disk0.img")); !bytes.Equal(got, readReplicaPoint(t, s.dir, other.ID, newest, other.DiskID)) ||
		!bytes.Equal(got, stubborn) {
		t.Fatal("the VM recovered after its host died differs from its newest point, or lacks the write replicated before")
	}
}

// replicaDigest is a digest of every file under a VM's replica directory
// but its points' manifests: what a recovery must never change.
func replicaDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(filepath.Join(dir, "disks"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fmt.Fprintf(h, "%s\n", path)
		h.Write(fileBytes(t, path))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// The recovery host's agent is killed while it starts the recovered VM:
// the job fails saying the host stopped answering, the replica is as it
// was, and once the agent is back, restarting the job finishes it.
func TestARecoveryHostKilledMidFailoverFailsTheJobAndARestartFinishesIt(t *testing.T) {
	t.Parallel()
	_, agentBin := binaries(t)
	app := make([]byte, 8<<20)
	rand.Read(app[:2<<20])
	s := newRecoverySite(t, map[string][]byte{"app": app})
	vm := s.protect(t, "app")
	// The source is off and unchanged: its cycles write nothing more.
	before := replicaDigest(t, filepath.Join(s.dir, vm.ID))

	// The recovery host's agent starts VMs slowly; it is killed meanwhile.
	s.dr.kill()
	drState := s.drState
	started := filepath.Join(t.TempDir(), "starting")
	slow := startProc(t, agentBin, "run", "--state-dir", drState, "--vm-root", s.drRoot,
		"--start-command", "touch "+started+"; sleep 60")
	eventually(t, "the recovery host is back", func() bool {
		var h struct{ State string }
		s.v.do(http.MethodGet, "/api/v1/hosts/"+s.drHostID, nil, &h)
		return h.State == "Connected"
	}, s.v.proc, slow)
	b, _ := json.Marshal(map[string]string{"type": "unplanned", "recovery_point": "latest_processed", "recovery_host_id": s.drHostID})
	var accepted struct {
		JobID string `json:"job_id"`
	}
	if status := s.v.do(http.MethodPost, "/api/v1/vms/"+vm.ID+"/failover", b, &accepted); status != http.StatusAccepted {
		t.Fatalf("failover: %d", status)
	}
	eventually(t, "the recovered VM is being started", func() bool {
		_, err := os.Stat(started)
		return err == nil
	}, s.v.proc, slow)
	slow.kill()
	job := s.waitJob(t, accepted.JobID)
	if job.State != "Failed" || job.Error == nil || job.Error.Code != "host_disconnected" || !strings.Contains(job.Error.Message, "hv-dr stopped answering") {
		t.Fatalf("job after the recovery host died: %+v", job)
	}
	if st := s.vm(t, vm.ID); st.ProtectionState != "Protected" {
		t.Fatalf("after the failed failover the VM is %s", st.ProtectionState)
	}
	if after := replicaDigest(t, filepath.Join(s.dir, vm.ID)); after != before {
		t.Fatal("the failed failover changed the replica")
	}

	// The agent is back (starting VMs at once now): restart goes on from
	// the failed step and finishes.
	start, stop := hookCommands(s.drLog, "")
	back := startProc(t, agentBin, "run", "--state-dir", drState, "--vm-root", s.drRoot, "--start-command", start, "--stop-command", stop)
	eventually(t, "the recovery host is back again", func() bool {
		var h struct{ State string }
		s.v.do(http.MethodGet, "/api/v1/hosts/"+s.drHostID, nil, &h)
		return h.State == "Connected"
	}, s.v.proc, back)
	s.dr = back
	job = s.run(t, "/api/v1/jobs/"+accepted.JobID+"/restart", nil)
	if job.State != "Succeeded" {
		t.Fatalf("restarted job: %+v\n%s", job, back.out.String())
	}
	if got := fileBytes(t, filepath.Join(s.drRoot, "app", "disk0.img")); !bytes.Equal(got, app) {
		t.Fatal("the recovered VM differs from the source")
	}
	if _, err := os.Stat(filepath.Join(s.drRoot, "app", "running")); err != nil {
		t.Fatal("the recovered VM was not started")
	}
	if st := s.vm(t, vm.ID); st.ProtectionState != "FailedOver" {
		t.Fatalf("after the restart the VM is %s", st.ProtectionState)
	}
	if after := replicaDigest(t, filepath.Join(s.dir, vm.ID)); after != before {
		t.Fatal("the recovery changed the replica")
	}
}
