package tasks

import (
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
)

// Two VMs of one host-local name, kept on one directory target under
// their vault ids: retention and deletion of one leave the other's
// points as they were.
func TestPruningAndDeletingOneVMsReplicaLeaveAnotherVMsOnTheSameTargetUntouched(t *testing.T) {
	root := t.TempDir()
	now := time.Now()
	open := func(key string) *dirtarget.Replica {
		r, err := dirtarget.Open(root, key)
		if err != nil {
			t.Fatal(err)
		}
		r.CreateDisk("d", 8192)
		return r
	}
	a, b := open("vm_a"), open("vm_b")
	defer b.Close()
	for i, age := range []time.Duration{48 * time.Hour, 30 * time.Hour, time.Hour} {
		id := string(rune('1' + i))
		if _, err := replicatest.Point(a, "a"+id, now.Add(-age)); err != nil {
			t.Fatal(err)
		}
		if _, err := replicatest.Point(b, "b"+id, now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	pruned, _, err := prune(a, now, 24*time.Hour)
	if err != nil || len(pruned) != 2 {
		t.Fatalf("pruned %v %v", pruned, err)
	}
	if ps, _ := b.Points(); len(ps) != 3 {
		t.Fatalf("pruning one VM left the other %d of its 3 points", len(ps))
	}
	if err := a.DeleteAll(); err != nil {
		t.Fatal(err)
	}
	ps, err := b.Points()
	if err != nil || len(ps) != 3 {
		t.Fatalf("deleting one VM's replica left the other %d points (%v)", len(ps), err)
	}
	for _, p := range ps {
		if n, bad, err := b.VerifyPoint(p.ID); err != nil || len(bad) != 0 || n == 0 {
			t.Fatalf("point %s of the other VM after the deletion: %d %v %v", p.ID, n, bad, err)
		}
	}
}

// Retention leaves a point a recovery waits to read, and the younger ones.
func TestRetentionKeepsAPointARecoveryWaitsFor(t *testing.T) {
	r, err := dirtarget.Open(t.TempDir(), "vm_a")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.CreateDisk("d", 8192)
	now := time.Now()
	for i, age := range []time.Duration{72 * time.Hour, 48 * time.Hour, 30 * time.Hour, time.Hour} {
		if _, err := replicatest.Point(r, "p"+string(rune('1'+i)), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	pruned, left, err := prune(r, now, 24*time.Hour, "p2")
	if err != nil || len(pruned) != 1 || pruned[0] != "p1" || len(left) != 3 || left[0].ID != "p2" {
		t.Fatalf("pruned %v, left %d points, %v", pruned, len(left), err)
	}
}
