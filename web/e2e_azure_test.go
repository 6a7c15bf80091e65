package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
)

func readAzurePoint(t *testing.T, s *blobtarget.Replica, pointID, diskID string) []byte {
	t.Helper()
	pr, size, err := s.OpenPoint(pointID, diskID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.NewSectionReader(pr, 0, size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestA2DiskVMReplicatesToAzureBlobWithPointsEqualToTheSource(t *testing.T) {
	t.Parallel() // mostly waits for 30-second cycles
	az := azuritetest.Start(t)
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registeredAgent(t, v)
	vmRoot := t.TempDir()
	os.MkdirAll(filepath.Join(vmRoot, "db"), 0o755)
	disks := map[string][]byte{"disk0.img": make([]byte, 6<<20), "disk1.img": make([]byte, 3<<20+512)}
	for name, b := range disks {
		rand.Read(b[1<<20 : 2<<20])
		os.WriteFile(filepath.Join(vmRoot, "db", name), b, 0o644)
	}
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot, "--storage-concurrency", "4")

	var vms struct {
		Items []struct {
			ID    string
			Disks []struct{ ID, Path string }
		}
	}
	eventually(t, "the VM is listed", func() bool {
		v.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 1 && len(vms.Items[0].Disks) == 2
	}, v.proc, agent)
	vmID := vms.Items[0].ID
	diskOf := map[string]string{} // file name → disk id
	for _, d := range vms.Items[0].Disks {
		diskOf[filepath.Base(d.Path)] = d.ID
	}
	var policy, target struct{ ID string }
	v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0}`), &policy)
	body, _ := json.Marshal(map[string]string{"name": "azure", "kind": "azure_blob", "account_url": az.AccountURL(),
		"container": "lifeboat", "account_key": azuritetest.Key})
	if status := v.do(http.MethodPost, "/api/v1/targets", body, &target); status != http.StatusCreated {
		t.Fatalf("create the Azure target: %d", status)
	}
	body, _ = json.Marshal(map[string]string{"policy_id": policy.ID, "target_id": target.ID})
	var accepted struct {
		JobID string `json:"job_id"`
	}
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/protection", body, &accepted); status != http.StatusAccepted {
		t.Fatalf("enable protection: %d", status)
	}
	var job e2eJob
	eventually(t, "the Enable protection job ends", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, nil, &job)
		return job.State == "Succeeded" || job.State == "Failed"
	}, v.proc, agent)
	if job.State != "Succeeded" {
		t.Fatalf("job: %+v\n%s", job, agent.out.String())
	}
	var vm struct {
		ProtectionState string `json:"protection_state"`
		BytesSent       int64  `json:"bytes_sent"`
		LastCycle       *struct {
			BytesSent  int64   `json:"bytes_sent"`
			Throughput float64 `json:"throughput_bytes_per_second"`
		} `json:"last_cycle"`
	}
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	if vm.ProtectionState != "Protected" || vm.BytesSent != 2<<20 || vm.LastCycle == nil || vm.LastCycle.BytesSent != 2<<20 || vm.LastCycle.Throughput <= 0 {
		t.Fatalf("after initial replication: %+v (want 2 MiB sent: the data, not the zeros)", vm)
	}
	// The agent's log never shows a SAS signature or the key.
	if strings.Contains(agent.out.String(), "sig=") || strings.Contains(v.proc.out.String(), "sig=") || strings.Contains(v.proc.out.String(), azuritetest.Key) {
		t.Fatal("a SAS signature or the account key reached a log")
	}

	store, err := blobtarget.Open(t.Context(), "db", &azuritetest.KeyCredentials{AccountURL: az.AccountURL(), Container: "lifeboat-" + strings.TrimPrefix(vmID, "vm_"), Key: azuritetest.Key}, blobtarget.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var points struct {
		Items []struct{ ID string }
	}
	v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
	if len(points.Items) != 1 {
		t.Fatalf("points: %+v", points)
	}
	first := points.Items[0].ID
	before := map[string][]byte{}
	for name, b := range disks {
		if got := readAzurePoint(t, store, first, diskOf[name]); !bytes.Equal(got, b) {
			t.Fatalf("the initial point of %s differs from the source", name)
		}
		before[name] = bytes.Clone(b)
	}

	// Writes to both disks: the next cycle's point has them, the first
	// point is unchanged.
	for name, b := range disks {
		rand.Read(b[2<<20+4096 : 2<<20+70000])
		os.WriteFile(filepath.Join(vmRoot, "db", name), b, 0o644)
	}
	deadline := time.Now().Add(70 * time.Second) // the next 30-second cycle, with room
	for len(points.Items) != 2 && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
	}
	if len(points.Items) != 2 {
		t.Fatalf("no second point within 70 s:\n%s", agent.out.String())
	}
	for name, b := range disks {
		if got := readAzurePoint(t, store, points.Items[0].ID, diskOf[name]); !bytes.Equal(got, b) {
			t.Fatalf("the second point of %s differs from the source", name)
		}
		if got := readAzurePoint(t, store, first, diskOf[name]); !bytes.Equal(got, before[name]) {
			t.Fatalf("the first point of %s changed", name)
		}
	}

	// Verify reads the point's snapshots back through SAS tokens the vault
	// issues for them.
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/recovery-points/"+first+"/verify", nil, &accepted); status != http.StatusAccepted {
		t.Fatalf("verify: %d", status)
	}
	eventually(t, "the verify job ends", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, nil, &job)
		return job.State == "Succeeded" || job.State == "Failed"
	}, v.proc, agent)
	if job.State != "Succeeded" {
		t.Fatalf("verify of a clean Azure point: %+v\n%s", job, agent.out.String())
	}

	// Disable protection, deleting the data: the job's agent task empties
	// the VM's container, and the VM is Unprotected.
	if status := v.do(http.MethodDelete, "/api/v1/vms/"+vmID+"/protection?replica_data=delete", nil, &accepted); status != http.StatusAccepted {
		t.Fatalf("disable with delete: %d", status)
	}
	eventually(t, "the Disable protection job ends", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, nil, &job)
		return job.State == "Succeeded" || job.State == "Failed"
	}, v.proc, agent)
	v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
	if job.State != "Succeeded" || vm.ProtectionState != "Unprotected" {
		t.Fatalf("after disable with delete: job %+v, VM %s", job, vm.ProtectionState)
	}
	// The agent emptied the container; the vault then deletes it.
	cred, _ := container.NewSharedKeyCredential(azuritetest.Account, azuritetest.Key)
	c, _ := container.NewClientWithSharedKeyCredential(az.AccountURL()+"/lifeboat-"+strings.TrimPrefix(vmID, "vm_"), cred, nil)
	eventually(t, "the VM's container is deleted", func() bool {
		_, err := c.GetProperties(t.Context(), nil)
		return bloberror.HasCode(err, bloberror.ContainerNotFound)
	}, v.proc, agent)
}
