package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A backup taken while the vault replicates, restored into a new data
// directory: the restored vault serves on the old address, its VM and
// points are there, and the host's agent (its certificate signed by the
// restored CA) goes on replicating to it.
func TestABackupTakenDuringReplicationRestoresAWorkingVault(t *testing.T) {
	vaultBin, agentBin := binaries(t)
	v := newE2EVault(t)
	vmRoot := demoVMRoot(t)
	stateDir, _ := registeredAgent(t, v)
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	var vms struct{ Items []struct{ ID string } }
	eventually(t, "the VMs are listed", func() bool {
		v.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 2
	}, v.proc, agent)
	vmID := vms.Items[0].ID
	protectOnDirectory(t, v, vmID, `{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0}`,
		filepath.Join(t.TempDir(), "nas"), v.proc, agent)
	points := func() int {
		var list struct{ Items []struct{ ID string } }
		v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &list)
		return len(list.Items)
	}
	eventuallyWithin(t, 60*time.Second, "the first point", func() bool { return points() >= 1 }, v.proc, agent)

	backup := filepath.Join(t.TempDir(), "vault-backup.tar.gz")
	out, err := exec.Command(vaultBin, "backup", "--data-dir", v.dataDir, "--out", backup).CombinedOutput()
	if err != nil {
		t.Fatalf("backup while the vault runs: %v\n%s", err, out)
	}
	if st, err := os.Stat(backup); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the backup file: %v %v", st, err)
	}
	backedUp := points()
	if out, err := exec.Command(vaultBin, "backup", "--data-dir", v.dataDir, "--out", backup).CombinedOutput(); err == nil || !strings.Contains(string(out), "exists already") {
		t.Fatalf("a second backup over the first: %v %s", err, out)
	}

	// The vault's machine is lost.
	v.proc.kill()
	newDir := t.TempDir()
	if out, err := exec.Command(vaultBin, "restore", "--from", backup, "--data-dir", newDir).CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if out, err := exec.Command(vaultBin, "restore", "--from", backup, "--data-dir", newDir).CombinedOutput(); err == nil || !strings.Contains(string(out), "holds a vault already") {
		t.Fatalf("a restore over a vault: %v %s", err, out)
	}
	v.dataDir = newDir
	v.start() // same address, the restored data directory
	body, _ := json.Marshal(map[string]string{"username": "admin", "password": "end-to-end-password"})
	var tok struct{ Token string }
	if status := v.do(http.MethodPost, "/api/v1/auth/token", body, &tok); status != http.StatusOK {
		t.Fatalf("log in to the restored vault: %d", status)
	}
	v.token = tok.Token
	if got := points(); got < backedUp {
		t.Fatalf("the restored vault lists %d points, the backup had %d", got, backedUp)
	}
	eventuallyWithin(t, 90*time.Second, "the agent replicates to the restored vault", func() bool { return points() > backedUp }, v.proc, agent)
}
