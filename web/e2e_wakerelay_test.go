package main

import (
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models/storetest"
)

// Two vaults on one PostgreSQL database, polls held 40 s: the agent holds
// its poll on the second vault, and work queued through the first (Enable
// protection, then Replicate now three times) reaches it at once, woken
// through LISTEN/NOTIFY, not at the end of the poll. Without the relay
// each would wait out the poll (32 to 40 s, minus what it had waited
// already): three cycles in a row within 10 s each would be luck.
func TestWorkQueuedOnOneVaultWakesThePollHeldByAnother(t *testing.T) {
	dsn := storetest.PostgresDSN(t) // skips without LIFEBOAT_TEST_POSTGRES; CI sets it
	vaultBin, agentBin := binaries(t)
	dataDir := t.TempDir()
	startOn := func(addr string) *e2eVault {
		return startVaultReplica(t, vaultBin, dataDir, dsn, addr, "--agent-heartbeat", "2s", "--agent-poll-wait", "40s")
	}
	a := startOn(freeAddr(t))
	b := startOn(freeAddr(t))
	stateDir, _ := registerHost(t, b, "Datacenter", "hv-relay")
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", demoVMRoot(t))
	var vms struct{ Items []struct{ ID, Name string } }
	eventually(t, "the VMs are listed", func() bool {
		a.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 2
	}, a.proc, b.proc, agent)
	vmID := vms.Items[0].ID
	time.Sleep(3 * time.Second) // the agent's first polls are held by now

	// Enable protection through the first vault: its first step reaches
	// the agent on the second one at once (the later steps are queued by
	// the second vault itself, as the agent reports each one's end there).
	start := time.Now()
	protectOnDirectory(t, a, vmID, `{"name":"slow","copy_frequency_seconds":900,"retention_hours":24,"app_consistent_frequency_hours":0}`,
		filepath.Join(t.TempDir(), "nas"), a.proc, b.proc, agent)
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("Enable protection through the other vault took %s: the held poll was not woken", took)
	}
	points := func() []string {
		var list struct{ Items []struct{ ID string } }
		b.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &list)
		var ids []string
		for _, p := range list.Items {
			ids = append(ids, p.ID)
		}
		return ids
	}
	for i := range 3 {
		var queued struct {
			PointID string `json:"point_id"`
		}
		if status := a.do(http.MethodPost, "/api/v1/vms/"+vmID+"/replicate-now", nil, &queued); status != http.StatusAccepted {
			t.Fatalf("replicate now: %d", status)
		}
		eventuallyWithin(t, 10*time.Second, "the cycle queued through the other vault ran (a held poll woken)", func() bool {
			return slices.Contains(points(), queued.PointID)
		}, a.proc, b.proc, agent)
		t.Logf("cycle %d: point %s", i+1, queued.PointID)
	}
	if strings.Contains(a.proc.out.String()+b.proc.out.String(), "wake-up relay: listening stopped") {
		t.Log("a relay reconnected during the test")
	}
}
