package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// e2eVMProtection is the part of the API's VM these tests read.
type e2eVMProtection struct {
	ProtectionState string  `json:"protection_state"`
	PolicyID        *string `json:"policy_id"`
	TargetID        *string `json:"target_id"`
	ReplicaLocation *string `json:"replica_location"`
	BytesSent       *int64  `json:"bytes_sent"`
	PausedBy        *string `json:"paused_by"`
	Health          *string `json:"health"`
}

func TestAPolicyChangeOnAProtectedVMSendsNoFullCopyOnlyTheChangedBlocks(t *testing.T) {
	t.Parallel()
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registeredAgent(t, v)
	vmRoot := t.TempDir()
	disk := filepath.Join(vmRoot, "app", "disk0.img")
	os.MkdirAll(filepath.Dir(disk), 0o755)
	source := make([]byte, 8<<20)
	rand.Read(source[:4<<20]) // 4 MiB of data a full copy would send again
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
	// Both policies copy every 15 minutes: no scheduled cycle runs during
	// the test; Replicate now starts the one after the change.
	var slow, gold, target struct{ ID string }
	targetDir := filepath.Join(t.TempDir(), "nas")
	slow.ID, target.ID = protectOnDirectory(t, v, vmID, `{"name":"slow","copy_frequency_seconds":900,"retention_hours":24,"app_consistent_frequency_hours":0,`+closedResyncWindow()+`}`,
		targetDir, agent)
	v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"gold","copy_frequency_seconds":900,"retention_hours":12,"app_consistent_frequency_hours":0,`+closedResyncWindow()+`}`), &gold)
	if gold.ID == "" {
		t.Fatal("policy gold not created")
	}
	var vm e2eVMProtection
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	location := filepath.Join(targetDir, vmID)
	if vm.PolicyID == nil || *vm.PolicyID != slow.ID || vm.TargetID == nil || *vm.TargetID != target.ID ||
		vm.ReplicaLocation == nil || *vm.ReplicaLocation != location {
		t.Fatalf("the VM's policy, target and replica location: %+v, want %s, %s, %s", vm, slow.ID, target.ID, location)
	}
	if _, err := os.Stat(filepath.Join(location, "disks", diskID+".vhd")); err != nil {
		t.Fatalf("no replica where the API says it is: %v", err)
	}
	initial := *vm.BytesSent
	if initial < 4<<20 {
		t.Fatalf("the initial copy sent %d bytes, less than the data", initial)
	}

	// Another target is refused here (a move is its own call, below); the policy alone changes.
	other := map[string]string{"name": "other", "kind": "directory", "path": t.TempDir()}
	var otherTarget struct{ ID string }
	body, _ := json.Marshal(other)
	v.do(http.MethodPost, "/api/v1/targets", body, &otherTarget)
	body, _ = json.Marshal(map[string]string{"policy_id": gold.ID, "target_id": otherTarget.ID})
	var problem struct{ Error struct{ Code string } }
	if status := v.do(http.MethodPut, "/api/v1/vms/"+vmID+"/protection", body, &problem); status != http.StatusConflict || problem.Error.Code != "target_change_not_supported" {
		t.Fatalf("a change of target: %d %+v", status, problem)
	}
	body, _ = json.Marshal(map[string]string{"policy_id": gold.ID})
	if status := v.do(http.MethodPut, "/api/v1/vms/"+vmID+"/protection", body, &vm); status != http.StatusOK || vm.PolicyID == nil || *vm.PolicyID != gold.ID {
		t.Fatalf("change policy: %d %+v", status, vm)
	}

	// A write, then the next cycle: it sends the changed blocks, not the disk.
	copy(source[5<<20:], bytes.Repeat([]byte{0xCD}, 70000))
	os.WriteFile(disk, source, 0o644)
	var now struct {
		PointID       string `json:"point_id"`
		AlreadyQueued bool   `json:"already_queued"`
	}
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/replicate-now", nil, &now); status != http.StatusAccepted || now.PointID == "" || now.AlreadyQueued {
		t.Fatalf("replicate now: %d %+v", status, now)
	}
	var points struct{ Items []struct{ ID string } }
	eventually(t, "the cycle after the change makes its point", func() bool {
		v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
		return len(points.Items) == 2 && points.Items[0].ID == now.PointID
	}, v.proc, agent)
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	sent := *vm.BytesSent - initial
	t.Logf("initial copy %d bytes; the cycle after the policy change %d bytes for 70000 changed", initial, sent)
	if sent <= 0 || sent > 256<<10 {
		t.Fatalf("the cycle after the policy change sent %d bytes; want the changed blocks only (70000 bytes changed, a full copy is %d)", sent, initial)
	}
	if got := readReplicaPoint(t, targetDir, vmID, now.PointID, diskID); !bytes.Equal(got, source) {
		t.Fatal("the point after the policy change differs from the source")
	}
	if *vm.ReplicaLocation != location || vm.ProtectionState != "Protected" {
		t.Fatalf("after the change: %+v", vm)
	}

	// Paused, the VM takes no cycle, not even asked for.
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/pause", nil, &vm); status != http.StatusOK || vm.PausedBy == nil || *vm.PausedBy != "admin" ||
		vm.Health == nil || *vm.Health != "Warning" {
		t.Fatalf("pause: %d %+v", status, vm)
	}
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/replicate-now", nil, &problem); status != http.StatusConflict || problem.Error.Code != "replication_paused" {
		t.Fatalf("replicate now while paused: %d %+v", status, problem)
	}
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/resume", nil, &vm); status != http.StatusOK || vm.PausedBy != nil {
		t.Fatalf("resume: %d %+v", status, vm)
	}
}

func TestAMovedVMIsSeededOnItsNewTargetThenReplicatesThereAndItsOldReplicaIsDeleted(t *testing.T) {
	t.Parallel()
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registeredAgent(t, v)
	vmRoot := t.TempDir()
	disk := filepath.Join(vmRoot, "app", "disk0.img")
	os.MkdirAll(filepath.Dir(disk), 0o755)
	source := make([]byte, 8<<20)
	rand.Read(source[:4<<20])
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
	var newTarget struct{ ID string }
	oldDir, newDir := filepath.Join(t.TempDir(), "old"), t.TempDir()
	protectOnDirectory(t, v, vmID, `{"name":"slow","copy_frequency_seconds":900,"retention_hours":24,"app_consistent_frequency_hours":0,`+closedResyncWindow()+`}`,
		oldDir, agent)
	body, _ := json.Marshal(map[string]string{"name": filepath.Base(newDir), "kind": "directory", "path": newDir})
	v.do(http.MethodPost, "/api/v1/targets", body, &newTarget)
	var accepted struct {
		JobID string `json:"job_id"`
	}
	var vm e2eVMProtection
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	initial := *vm.BytesSent

	// A write before the move: the seed carries it.
	copy(source[6<<20:], bytes.Repeat([]byte{0x11}, 50000))
	os.WriteFile(disk, source, 0o644)
	body, _ = json.Marshal(map[string]string{"target_id": newTarget.ID, "old_replica": "delete"})
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/protection/move", body, &accepted); status != http.StatusAccepted {
		t.Fatalf("move: %d", status)
	}
	if job := v.waitJob(accepted.JobID, agent); job.State != "Succeeded" || len(job.Steps) != 4 {
		t.Fatalf("move: %+v\n%s", job, agent.out.String())
	}
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	location := filepath.Join(newDir, vmID)
	if *vm.TargetID != newTarget.ID || *vm.ReplicaLocation != location || vm.ProtectionState != "Protected" {
		t.Fatalf("after the move: %+v", vm)
	}
	seedSent := *vm.BytesSent - initial
	if seedSent < 4<<20 {
		t.Fatalf("the seed sent %d bytes, less than the disk's data: the new target is not a whole copy", seedSent)
	}
	if _, err := os.Stat(filepath.Join(oldDir, vmID)); !os.IsNotExist(err) {
		t.Fatalf("the old replica is still there: %v", err)
	}
	var points struct{ Items []struct{ ID string } }
	v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
	if len(points.Items) != 1 {
		t.Fatalf("points after the move: %+v, want the seed alone", points.Items)
	}
	if got := readReplicaPoint(t, newDir, vmID, points.Items[0].ID, diskID); !bytes.Equal(got, source) {
		t.Fatal("the seed's point differs from the source")
	}

	// The next cycle goes to the new target and sends only what changed.
	copy(source[7<<20:], bytes.Repeat([]byte{0x22}, 30000))
	os.WriteFile(disk, source, 0o644)
	var now struct {
		PointID string `json:"point_id"`
	}
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/replicate-now", nil, &now); status != http.StatusAccepted {
		t.Fatalf("replicate now: %d", status)
	}
	eventually(t, "the cycle after the move makes its point", func() bool {
		v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
		return len(points.Items) == 2 && points.Items[0].ID == now.PointID
	}, v.proc, agent)
	before := *vm.BytesSent
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	if sent := *vm.BytesSent - before; sent <= 0 || sent > 256<<10 {
		t.Fatalf("the cycle after the move sent %d bytes for 30000 changed", sent)
	}
	if got := readReplicaPoint(t, newDir, vmID, now.PointID, diskID); !bytes.Equal(got, source) {
		t.Fatal("the point after the move differs from the source")
	}
}
