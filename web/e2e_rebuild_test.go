package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

type rebuildVM struct {
	ID, Name        string
	HostID          string   `json:"host_id"`
	ProtectionState string   `json:"protection_state"`
	HealthReasons   []string `json:"health_reasons"`
	BytesSent       *int64   `json:"bytes_sent"`
}

type rebuildPoint struct {
	ID          string
	Time        time.Time
	Consistency string
}

func (v *e2eVault) vmsByName() map[string]rebuildVM {
	var list struct{ Items []rebuildVM }
	v.do(http.MethodGet, "/api/v1/vms", nil, &list)
	out := map[string]rebuildVM{}
	for _, vm := range list.Items {
		out[vm.Name] = vm
	}
	return out
}

func (v *e2eVault) pointsOf(vmID string) []rebuildPoint {
	var list struct{ Items []rebuildPoint }
	v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &list)
	return list.Items
}

// The vault's database is lost with no backup: lifeboat-vault rebuild
// makes a new vault from the target alone, a directory or Azure Blob
// containers. Every VM's recovery points are listed again, exactly (ids,
// times, consistency); the host registers with a new key and a new state
// directory, its VMs are matched to the rebuilt protections by their ids,
// replication resumes into the existing replicas without copying them
// again, and a test failover from a rebuilt point makes a VM equal to the
// source.
func TestRebuildAfterTheDatabaseIsLostListsEveryVMsPointsAgainAndFailsOverFromThem(t *testing.T) {
	t.Parallel()
	t.Run("directory", func(t *testing.T) {
		t.Parallel()
		nas := filepath.Join(t.TempDir(), "nas")
		if err := os.MkdirAll(nas, 0o755); err != nil {
			t.Fatal(err)
		}
		rebuildEndToEnd(t, map[string]string{"name": "nas", "kind": "directory", "path": nas}, "dir:"+nas)
	})
	t.Run("azure", func(t *testing.T) {
		t.Parallel()
		az := azuritetest.Start(t)
		keyFile := filepath.Join(t.TempDir(), "account-key")
		if err := os.WriteFile(keyFile, []byte(azuritetest.Key+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		rebuildEndToEnd(t, map[string]string{"name": "nas", "kind": "azure_blob", "account_url": az.AccountURL(), "container": "lifeboat", "account_key": azuritetest.Key},
			"azure:"+az.AccountURL()+"/lifeboat", "--account-key-file", keyFile)
	})
}

func rebuildEndToEnd(t *testing.T, targetBody map[string]string, from ...string) {
	vaultBin, agentBin := binaries(t)
	v := newE2EVault(t)
	vmRoot := demoVMRoot(t)
	stateDir, _ := registeredAgent(t, v)
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	eventually(t, "the VMs are listed", func() bool { return len(v.vmsByName()) == 2 }, v.proc, agent)
	vms := v.vmsByName()
	var policy, target struct{ ID string }
	if status := v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0}`), &policy); status != http.StatusCreated {
		t.Fatalf("create policy: %d", status)
	}
	body, _ := json.Marshal(targetBody)
	if status := v.do(http.MethodPost, "/api/v1/targets", body, &target); status != http.StatusCreated {
		t.Fatalf("create target: %d", status)
	}
	var accepted struct {
		JobID string `json:"job_id"`
	}
	for _, name := range []string{"web", "db"} {
		body, _ := json.Marshal(map[string]string{"policy_id": policy.ID, "target_id": target.ID})
		if status := v.do(http.MethodPost, "/api/v1/vms/"+vms[name].ID+"/protection", body, &accepted); status != http.StatusAccepted {
			t.Fatalf("protect %s: %d", name, status)
		}
		if job := v.waitJob(accepted.JobID, agent); job.State != "Succeeded" {
			t.Fatalf("protect %s: %+v", name, job)
		}
	}
	for _, name := range []string{"web", "db"} {
		id := vms[name].ID
		eventuallyWithin(t, 120*time.Second, name+" has two points", func() bool { return len(v.pointsOf(id)) >= 2 }, v.proc, agent)
	}
	// Stop the agent first: no cycle may end between the points read
	// here and the database's loss.
	agent.kill()
	before := map[string][]rebuildPoint{}
	for _, name := range []string{"web", "db"} {
		before[name] = v.pointsOf(vms[name].ID)
	}

	// The vault's machine is lost, its database with it: the new vault
	// has only the replica storage.
	v.proc.kill()
	if err := os.RemoveAll(v.dataDir); err != nil {
		t.Fatal(err)
	}
	newDir := t.TempDir()
	args := append([]string{"rebuild", "--data-dir", newDir, "--from-target"}, from...)
	dir, onDisk := strings.CutPrefix(from[0], "dir:")
	var stored string
	if onDisk {
		stored = snapshotTree(t, dir)
	}
	out, err := exec.Command(vaultBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	if onDisk && snapshotTree(t, dir) != stored {
		t.Fatal("the rebuild changed the replica storage")
	}
	for _, want := range []string{"Rebuilt 2 VM(s) from target nas", "web (" + vms["web"].ID + ")", "host hv-e2e", "policy fast"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("the rebuild's report lacks %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(vaultBin, args...).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), agentproto.CodeRebuildVaultInUse) {
		t.Fatalf("a second rebuild into the rebuilt vault: %v\n%s", err, out)
	}
	v.dataDir = newDir
	v.start()
	v.token = "" // the lost vault's
	login, _ := json.Marshal(map[string]string{"username": "admin", "password": "end-to-end-password"})
	var tok struct{ Token string }
	if status := v.do(http.MethodPost, "/api/v1/auth/token", login, &tok); status != http.StatusOK {
		t.Fatalf("log in to the rebuilt vault: %d", status)
	}
	v.token = tok.Token

	// Every VM is there under its id, its points exactly as they were,
	// awaiting its host.
	rebuilt := v.vmsByName()
	for _, name := range []string{"web", "db"} {
		vm := rebuilt[name]
		if vm.ID != vms[name].ID || vm.ProtectionState != "Protected" || !strings.Contains(strings.Join(vm.HealthReasons, " "), agentproto.CodeAwaitingHost) {
			t.Fatalf("rebuilt VM %s: %+v (was %+v)", name, vm, vms[name])
		}
		got := v.pointsOf(vm.ID)
		if len(got) != len(before[name]) {
			t.Fatalf("%s: %d points rebuilt, %d before", name, len(got), len(before[name]))
		}
		for i := range got {
			if got[i].ID != before[name][i].ID || !got[i].Time.Equal(before[name][i].Time) || got[i].Consistency != before[name][i].Consistency {
				t.Fatalf("%s: point %d is %+v, was %+v", name, i, got[i], before[name][i])
			}
		}
	}
	var waiting struct {
		Items []struct {
			Name, State string
			RebuiltAt   *time.Time `json:"rebuilt_at"`
		}
	}
	v.do(http.MethodGet, "/api/v1/hosts", nil, &waiting)
	if len(waiting.Items) != 1 || waiting.Items[0].Name != "hv-e2e" || waiting.Items[0].RebuiltAt == nil || waiting.Items[0].State != "Disconnected" {
		t.Fatalf("the rebuilt host: %+v", waiting.Items)
	}
	var audit struct{ Items []struct{ Action string } }
	v.do(http.MethodGet, "/api/v1/audit?action=vault.rebuild", nil, &audit)
	if len(audit.Items) == 0 {
		t.Fatal("the rebuild is not in the audit log")
	}

	// The host registers with a new key, a new state directory, the same
	// name: its VMs take the rebuilt ones' place.
	var sites struct{ Items []struct{ ID, Name string } }
	v.do(http.MethodGet, "/api/v1/sites", nil, &sites)
	if len(sites.Items) != 1 || sites.Items[0].Name != "Datacenter" {
		t.Fatalf("rebuilt sites: %+v", sites.Items)
	}
	var key agentproto.RegistrationKey
	if status := v.do(http.MethodPost, "/api/v1/sites/"+sites.Items[0].ID+"/registration-key", nil, &key); status != http.StatusCreated {
		t.Fatalf("registration key: %d", status)
	}
	newState, _ := registerWithKey(t, key, "hv-e2e")
	agent = startProc(t, agentBin, "run", "--state-dir", newState, "--vm-root", vmRoot)
	var hostID string
	eventually(t, "the registered host's VMs are the rebuilt ones", func() bool {
		now := v.vmsByName()
		var hosts struct {
			Items []struct {
				ID, Name  string
				RebuiltAt *time.Time `json:"rebuilt_at"`
			}
		}
		v.do(http.MethodGet, "/api/v1/hosts", nil, &hosts)
		if len(now) != 2 || len(hosts.Items) != 1 || hosts.Items[0].RebuiltAt != nil {
			return false // the rebuilt host goes once its VMs are adopted
		}
		hostID = hosts.Items[0].ID
		return now["web"].ID == vms["web"].ID && now["db"].ID == vms["db"].ID && now["web"].HostID == hostID && now["db"].HostID == hostID
	}, v.proc, agent)
	for _, name := range []string{"web", "db"} {
		id := vms[name].ID
		eventuallyWithin(t, 90*time.Second, name+" replicates again", func() bool { return len(v.pointsOf(id)) > len(before[name]) }, v.proc, agent)
		// The replicas were there: the cycle compared hashes and sent
		// nothing of the unchanged 64 KiB disk.
		if vm := v.vmsByName()[name]; vm.BytesSent == nil || *vm.BytesSent != 0 {
			t.Fatalf("%s: the first cycle after the rebuild sent %v bytes; its replica was whole", name, vm.BytesSent)
		}
	}

	// A test failover from a rebuilt point.
	point := before["web"][0].ID
	b, _ := json.Marshal(map[string]string{"recovery_point": point, "recovery_host_id": hostID})
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vms["web"].ID+"/test-failover", b, &accepted); status != http.StatusAccepted {
		t.Fatalf("test failover: %d", status)
	}
	if job := v.waitJob(accepted.JobID, agent); job.State != "Succeeded" {
		t.Fatalf("test failover from rebuilt point %s: %+v\n%s", point, job, agent.out.String())
	}
	got, err := os.ReadFile(filepath.Join(vmRoot, "web-test", "disk0.img"))
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{7}, 1<<16)) {
		t.Fatalf("the test VM's disk differs from the point (%v)", err)
	}
	if job := v.runCleanup(vms["web"].ID, agent); job.State != "Succeeded" {
		t.Fatalf("cleanup: %+v", job)
	}
}

func (v *e2eVault) runCleanup(vmID string, logs ...*proc) e2eJob {
	v.t.Helper()
	var accepted struct {
		JobID string `json:"job_id"`
	}
	b, _ := json.Marshal(map[string]string{"notes": "rebuilt point boots"})
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/test-failover/cleanup", b, &accepted); status != http.StatusAccepted {
		v.t.Fatalf("cleanup: %d", status)
	}
	return v.waitJob(accepted.JobID, logs...)
}

// A rebuild from storage that is not a Lifeboat target, or that holds no
// recovery point, says so with its code, and leaves no vault behind.
func TestRebuildFromATargetWithoutManifestsOrFromNoTargetFailsWithItsCode(t *testing.T) {
	vaultBin, _ := binaries(t)
	empty := t.TempDir() // a directory, not a target (an empty mount point)
	target := t.TempDir()
	os.WriteFile(filepath.Join(target, ".lifeboat-target"), []byte("Lifeboat replicas: one directory per VM.\n"), 0o644)
	for _, sub := range []string{"disks", "points"} {
		os.MkdirAll(filepath.Join(target, "vm_0000000000000000000000", sub), 0o755)
	}
	for _, c := range []struct{ from, code, says string }{
		{"dir:" + filepath.Join(empty, "nowhere"), agentproto.CodeRebuildNotATarget, "no such file"},
		{"dir:" + empty, agentproto.CodeRebuildNotATarget, "holds no .lifeboat-target"},
		{"dir:" + target, agentproto.CodeRebuildNoManifests, "holds no recovery point manifest"},
		{"s3:bucket", agentproto.CodeRebuildNotATarget, "give dir:/path"},
	} {
		dataDir := filepath.Join(t.TempDir(), "vault")
		before := snapshotTree(t, target)
		out, err := exec.Command(vaultBin, "rebuild", "--data-dir", dataDir, "--from-target", c.from).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "("+c.code+")") || !strings.Contains(string(out), c.says) {
			t.Errorf("rebuild --from-target %s: %v\n%s", c.from, err, out)
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Errorf("rebuild --from-target %s left a vault behind: %v", c.from, err)
		}
		if after := snapshotTree(t, target); after != before {
			t.Errorf("rebuild --from-target %s changed the target:\n%s\n%s", c.from, before, after)
		}
	}
}

// The same from Azure Blob: a prefix with no container is no target; a
// container without a manifest holds nothing to rebuild from; a wrong key
// is refused.
func TestRebuildFromAzureContainersWithoutManifestsFailsWithItsCode(t *testing.T) {
	vaultBin, _ := binaries(t)
	az := azuritetest.Start(t)
	cred, err := container.NewSharedKeyCredential(azuritetest.Account, azuritetest.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := container.NewClientWithSharedKeyCredential(az.AccountURL()+"/lifeboat-01empty", cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	keyFile, wrongKey := filepath.Join(t.TempDir(), "key"), filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(keyFile, []byte(azuritetest.Key), 0o600)
	os.WriteFile(wrongKey, []byte("AAAA"+azuritetest.Key[4:]), 0o600)
	for _, c := range []struct{ prefix, key, code, says string }{
		{"nothing", keyFile, agentproto.CodeRebuildNotATarget, "has no container named nothing-"},
		{"lifeboat", keyFile, agentproto.CodeRebuildNoManifests, "hold no recovery point manifest"},
		{"lifeboat", wrongKey, agentproto.CodeRebuildNotATarget, "refused the account key"},
	} {
		dataDir := filepath.Join(t.TempDir(), "vault")
		out, err := exec.Command(vaultBin, "rebuild", "--data-dir", dataDir, "--from-target", "azure:"+az.AccountURL()+"/"+c.prefix, "--account-key-file", c.key).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "("+c.code+")") || !strings.Contains(string(out), c.says) {
			t.Errorf("rebuild from %s with %s: %v\n%s", c.prefix, filepath.Base(c.key), err, out)
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Errorf("rebuild from %s left a vault behind: %v", c.prefix, err)
		}
	}
}

// snapshotTree lists every path under root with its size and time.
func snapshotTree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			fmt.Fprintf(&b, "%s %d %s\n", p, fi.Size(), fi.ModTime())
		}
		return nil
	})
	return b.String()
}

// Replicas an agent wrote before the descriptor existed: the VM is rebuilt
// from its manifests, points exact, and the report says what it could not
// know; the storage is left as it was.
func TestRebuildFromReplicasWithoutADescriptorSaysWhatItCouldNotKnow(t *testing.T) {
	vaultBin, _ := binaries(t)
	root := t.TempDir()
	r, err := dirtarget.Open(root, "vm_01legacy")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CreateDisk("disk_01legacy", 1<<16); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteRuns("disk_01legacy", []dirtarget.Run{{Offset: 0, Data: bytes.Repeat([]byte{7}, 1<<16)}}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	if _, err := r.CreatePoint(replica.PointSpec{ID: "rp_01legacy", Time: at, Consistency: replica.ConsistencyCrash, Capture: "powered_off", Disks: []string{"disk_01legacy"}}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	before := snapshotTree(t, root)
	dataDir := filepath.Join(t.TempDir(), "vault")
	out, err := exec.Command(vaultBin, "rebuild", "--data-dir", dataDir, "--from-target", "dir:"+root).CombinedOutput()
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	for _, want := range []string{"Rebuilt 1 VM(s)", "vm_01legacy (vm_01legacy): 1 recovery point(s), host " + models.UndescribedHostName,
		"not known from the replicas: the VM's name, its host", "Rebuilt (settings unknown)"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("the report lacks %q:\n%s", want, out)
		}
	}
	if after := snapshotTree(t, root); after != before {
		t.Fatalf("the rebuild changed the target:\n%s\n%s", before, after)
	}
}
