package tasks

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

func TestCommitDeletesOnlyThePointsOlderThanTheCommittedOne(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	r, err := dirtarget.Open(root, "vm_web")
	if err != nil {
		t.Fatal(err)
	}
	r.CreateDisk("d", 1<<20)
	now := time.Now()
	for i, id := range []string{"p1", "p2", "p3", "p4"} {
		if _, err := replicatest.Point(r, id, now.Add(time.Duration(i-4)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	p := agentproto.ReplicationPayload{VMID: "web", ReplicaKey: "vm_web", PointID: "p3"}
	p.Target.Kind, p.Target.Path = "directory", root
	task := func(p agentproto.ReplicationPayload) agentproto.Task {
		b, _ := json.Marshal(p)
		return agentproto.Task{ID: "task_commit", Kind: agentproto.TaskCommitPoint, Payload: b, Attempt: 1}
	}
	ts := testTasks(t)
	want := agentproto.CommitResult{PointID: "p3", Deleted: []string{"p1", "p2"}, Points: []string{"p3", "p4"}}
	for range 2 { // run again, it finds nothing more to delete
		out, err := ts.commitPoint(t.Context(), task(p), testReporter{t})
		if err != nil || !reflect.DeepEqual(out, want) {
			t.Fatalf("commit: %+v %v; want %+v", out, err, want)
		}
		want.Deleted = []string{}
	}
	r, _ = dirtarget.OpenExisting(root, "vm_web")
	defer r.Close()
	for _, id := range []string{"p3", "p4"} {
		if n, bad, err := r.VerifyPoint(id); err != nil || len(bad) != 0 || n == 0 {
			t.Fatalf("point %s after the commit: %d blocks, %v, %v", id, n, bad, err)
		}
	}
	p.PointID = "p1"
	_, err = ts.commitPoint(t.Context(), task(p), testReporter{t})
	wantCode(t, "a point deleted already", err, agentproto.CodePointNotFound)
}
