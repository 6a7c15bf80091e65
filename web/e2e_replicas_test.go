package main

import (
	"database/sql"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models/storetest"
)

// startVaultReplica starts one of several vault processes on the database
// dsn, sharing dataDir's vault key and CA, and logs in as admin.
func startVaultReplica(t *testing.T, vaultBin, dataDir, dsn, addr string, flags ...string) *e2eVault {
	t.Helper()
	v := &e2eVault{t: t, bin: vaultBin, dataDir: dataDir, addr: addr}
	v.proc = startProc(t, v.bin, append([]string{"--data-dir", dataDir, "--db", dsn, "--listen", addr, "--admin-password", "end-to-end-password"}, flags...)...)
	v.waitHealthy()
	body, _ := json.Marshal(map[string]string{"username": "admin", "password": "end-to-end-password"})
	var tok struct{ Token string }
	v.do(http.MethodPost, "/api/v1/auth/token", body, &tok)
	v.token = tok.Token
	return v
}

// Two vault processes on one PostgreSQL database: both serve, one leads
// (the scheduler and the watch loop). The agent talks to the second; the
// first leads and schedules its cycles. Killed with SIGKILL, the leader's
// lock goes with its connection, and the other vault takes the lead:
// cycles go on, and no task is run twice.
func TestTwoVaultsOnePostgresTheOtherLeadsWhenTheLeaderIsKilled(t *testing.T) {
	dsn := storetest.PostgresDSN(t) // skips without LIFEBOAT_TEST_POSTGRES; CI sets it
	vaultBin, agentBin := binaries(t)
	dataDir := t.TempDir() // one vault key and CA for both, as replicas share them
	startOn := func(addr string) *e2eVault {
		return startVaultReplica(t, vaultBin, dataDir, dsn, addr, "--agent-heartbeat", "1s", "--agent-poll-wait", "2s", "--task-lease", "5s", "--log-level", "debug")
	}
	a := startOn(freeAddr(t))
	eventually(t, "the first vault leads", func() bool { return strings.Contains(a.proc.out.String(), "this vault leads") }, a.proc)
	b := startOn(freeAddr(t))
	eventually(t, "the second vault knows it does not lead", func() bool {
		return strings.Contains(b.proc.out.String(), "another vault leads")
	}, b.proc)

	vmRoot := demoVMRoot(t)
	stateDir, _ := registerHost(t, b, "Datacenter", "hv-two-vaults")
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	var vms struct{ Items []struct{ ID, Name string } }
	eventually(t, "the VMs are listed", func() bool {
		b.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 2
	}, b.proc, agent)
	vmID := vms.Items[0].ID
	protectOnDirectory(t, b, vmID, `{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0}`,
		filepath.Join(t.TempDir(), "nas"), a.proc, agent)
	points := func(v *e2eVault) int {
		var list struct{ Items []struct{ ID string } }
		v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &list)
		return len(list.Items)
	}
	// The initial copy, then a scheduled cycle: scheduled by the leader,
	// run by the agent through the other vault.
	eventuallyWithin(t, 90*time.Second, "a scheduled cycle under the first vault's lead", func() bool { return points(b) >= 2 }, a.proc, b.proc, agent)
	if strings.Contains(b.proc.out.String(), "this vault leads") {
		t.Fatal("both vaults led")
	}

	a.proc.kill() // SIGKILL: no release, the database drops the lock with the connection
	eventuallyWithin(t, 30*time.Second, "the second vault takes the lead", func() bool {
		return strings.Contains(b.proc.out.String(), "this vault leads")
	}, b.proc)
	had := points(b)
	eventuallyWithin(t, 90*time.Second, "cycles go on under the second vault", func() bool { return points(b) >= had+1 }, b.proc, agent)

	// No task was handed out twice: every replication task that ran was
	// leased once, and no two cycles of the VM ran at once.
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var twice, ran int
	if err := db.QueryRow("SELECT count(*) FILTER (WHERE attempts > 1), count(*) FROM tasks WHERE kind = 'replicate' AND state = 'Succeeded'").Scan(&twice, &ran); err != nil {
		t.Fatal(err)
	}
	if twice != 0 || ran < had+1 {
		t.Fatalf("%d of %d replication tasks were leased more than once", twice, ran)
	}
}
