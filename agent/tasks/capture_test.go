package tasks

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/driver/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/internal/xfstest"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// cycleWhileWriting runs replication cycles of a running VM, under vmRoot,
// whose disk a writer keeps writing, and returns each point's result and
// its disk image read back from the directory target.
// written is how many blocks the writer had written when each cycle
// ended: a point older than that proves the writer went on meanwhile.
func cycleWhileWriting(t *testing.T, vmRoot string, cycles int) (results []agentproto.ReplicateResult, images [][]byte, written []int64) {
	t.Helper()
	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts := New(Deps{Driver: &filedisk.Driver{Root: vmRoot}, State: dir, Version: "test"})
	disk := filepath.Join(vmRoot, "db", "disk0.img")
	os.MkdirAll(filepath.Dir(disk), 0o755)
	os.WriteFile(disk, make([]byte, xfstest.BlocksN*4096), 0o644)
	os.WriteFile(filepath.Join(vmRoot, "db", "running"), nil, 0o644)
	target := filepath.Join(t.TempDir(), "nas")
	p := agentproto.ReplicationPayload{ProtectionID: "prot", VMID: "db", ReplicaKey: "vm_db", RetentionHours: 24,
		Disks: []agentproto.ReplicaDisk{{ReplicaID: "d0", Path: disk, SizeBytes: xfstest.BlocksN * 4096, New: true}}}
	p.Target.Kind, p.Target.Path = "directory", target
	task := func(kind, point string) agentproto.Task {
		q := p
		q.PointID = point
		b, _ := json.Marshal(q)
		return agentproto.Task{ID: "task_" + kind + point, Kind: kind, Payload: b, Attempt: 1}
	}
	if _, err := ts.createReplica(t.Context(), task(agentproto.TaskCreateReplica, ""), testReporter{t}); err != nil {
		t.Fatal(err)
	}
	w := xfstest.StartWriter(t, disk)
	defer w.Halt()
	w.Await(3 * xfstest.BlocksN)
	for i := range cycles {
		id := "p" + string(rune('a'+i))
		out, err := ts.replicate(t.Context(), task(agentproto.TaskReplicate, id), testReporter{t})
		if err != nil {
			t.Fatal(err)
		}
		res := out.(agentproto.ReplicateResult)
		written = append(written, w.Written.Load())
		if len(res.Points) != i+1 || res.Points[i] != id {
			t.Fatalf("cycle %d lists the target's points as %v", i, res.Points)
		}
		r, err := dirtarget.OpenExisting(target, "vm_db")
		if err != nil {
			t.Fatal(err)
		}
		pr, size, err := r.ReadPoint(id, "d0")
		if err != nil {
			t.Fatal(err)
		}
		img, _ := io.ReadAll(io.NewSectionReader(pr, 0, size))
		pr.Close()
		r.Close()
		results, images = append(results, res), append(images, img)
		p.Disks[0].New = false
	}
	return results, images, written
}

// On XFS the cycle reads reflink clones made at one instant while the VM
// goes on writing: each point is that instant, labelled crash.
func TestAReflinkCycleOfAVMThatKeepsWritingMakesAPointOfOneInstantLabelledCrash(t *testing.T) {
	t.Parallel()
	results, images, written := cycleWhileWriting(t, xfstest.Mount(t, 300), 4)
	wroteDuring := 0
	for i, res := range results {
		ok, last := xfstest.OneInstant(images[i])
		if !ok {
			t.Fatalf("point %d is not one instant of the disk (newest generation %d)", i, last)
		}
		if written[i] > last {
			wroteDuring++
		}
		if res.Consistency != replica.ConsistencyCrash || res.Capture != "reflink" || res.ReadStartedAt != nil {
			t.Fatalf("point %d: %s by %s (read started %v)", i, res.Consistency, res.Capture, res.ReadStartedAt)
		}
	}
	// A busy machine may starve the writer during a cycle now and then;
	// if it never wrote while a cycle ran, the test proved nothing.
	if wroteDuring == 0 {
		t.Fatal("the writer did not go on writing during any cycle; the test proves nothing")
	}
}

// Without reflinks and without a freeze command the same VM's points are
// read while it writes: labelled inconsistent, with when the read began.
func TestACycleWithoutReflinkOrFreezeOfAVMThatWritesIsLabelledInconsistent(t *testing.T) {
	t.Parallel()
	results, _, _ := cycleWhileWriting(t, t.TempDir(), 2)
	if results[0].Capture == "reflink" {
		t.Skip("the temporary directory's filesystem has reflinks")
	}
	for i, res := range results {
		if res.Consistency != replica.ConsistencyInconsistent || res.Capture != "live" || res.ReadStartedAt == nil || !res.ReadStartedAt.Before(res.Time) {
			t.Fatalf("point %d: %s by %s, read %v–%v", i, res.Consistency, res.Capture, res.ReadStartedAt, res.Time)
		}
	}
}
