package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
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

// cutDeletes is a store whose DeletePoint fails once, on its second call:
// a commit cut part-way, after it deleted one point (after, too, the
// second point's deletion itself when deleted is set: the target did it
// but the answer was lost).
type cutDeletes struct {
	replica.Store
	deleted bool
	calls   int
}

var errDeleteCut = errors.New("the share went away")

func (c *cutDeletes) DeletePoint(id string) error {
	if c.calls++; c.calls != 2 {
		return c.Store.DeletePoint(id)
	}
	if c.deleted {
		if err := c.Store.DeletePoint(id); err != nil {
			return err
		}
	}
	return errDeleteCut
}

// A commit cut while it deletes the older points, run again, ends as one
// that was not: the committed point and the newer ones verify and read
// back as they did before.
func TestACommitCutWhileDeletingEndsTheSameWhenRunAgain(t *testing.T) {
	t.Parallel()
	for _, deleted := range []bool{false, true} {
		t.Run(fmt.Sprintf("deleted=%v", deleted), func(t *testing.T) {
			t.Parallel()
			src := protectWithPoints(t, "p1", "p2", "p3", "p4", "p5")
			p := src.payload
			p.PointID = "p4"
			b, _ := json.Marshal(p)
			task := agentproto.Task{ID: "task_commit", Kind: agentproto.TaskCommitPoint, Payload: b, Attempt: 1}
			ts := testTasks(t)

			r, err := ts.openStore(t.Context(), task, p, openExisting)
			if err != nil {
				t.Fatal(err)
			}
			before := map[string][]byte{}
			for _, point := range []string{"p4", "p5"} {
				for _, id := range []string{"d0", "d1"} {
					before[point+id] = replicatest.ReadPoint(t, r, point, id)
					if !bytes.Equal(before[point+id], src.images[point][id]) {
						t.Fatalf("disk %s at %s does not hold what the cycle read", id, point)
					}
				}
			}
			_, err = commitIn(t.Context(), &cutDeletes{Store: r, deleted: deleted}, "p4")
			r.Close()
			var te *agentproto.TaskError
			if !errors.As(err, &te) || te.Code != agentproto.CodeTargetUnavailable || !te.Recoverable ||
				!strings.Contains(te.Message, "delete recovery point p2") || !strings.Contains(te.Message, errDeleteCut.Error()) {
				t.Fatalf("a commit cut at its second deletion: %v", err)
			}

			out, err := ts.commitPoint(t.Context(), task, testReporter{t})
			want := agentproto.CommitResult{PointID: "p4", Deleted: []string{"p2", "p3"}, Points: []string{"p4", "p5"}}
			if deleted {
				want.Deleted = []string{"p3"}
			}
			if err != nil || !reflect.DeepEqual(out, want) {
				t.Fatalf("the commit run again: %+v %v; want %+v", out, err, want)
			}
			r, err = dirtarget.OpenExisting(p.Target.Path, "vm_web")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if points, err := r.Points(); err != nil || len(points) != 2 {
				t.Fatalf("the points left: %+v %v", points, err)
			}
			for _, point := range []string{"p4", "p5"} {
				if n, bad, err := r.VerifyPoint(point); err != nil || len(bad) != 0 || n == 0 {
					t.Fatalf("point %s after the commit: %d blocks, %v, %v", point, n, bad, err)
				}
				for _, id := range []string{"d0", "d1"} {
					if !bytes.Equal(replicatest.ReadPoint(t, r, point, id), before[point+id]) {
						t.Fatalf("disk %s at %s changed in the commit", id, point)
					}
				}
			}
		})
	}
}
