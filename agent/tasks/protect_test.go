package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// bothTargets opens an empty store of each kind: a directory, and a
// container in a real Azurite.
func bothTargets(t *testing.T) map[string]func(t *testing.T) replica.Store {
	az := azuritetest.Start(t)
	n := 0
	return map[string]func(t *testing.T) replica.Store{
		"directory": func(t *testing.T) replica.Store {
			r, err := dirtarget.Open(filepath.Join(t.TempDir(), "target"), "vm")
			if err != nil {
				t.Fatal(err)
			}
			return r
		},
		"azure_blob": func(t *testing.T) replica.Store {
			n++
			name := fmt.Sprintf("vm-%d", n)
			cred, _ := container.NewSharedKeyCredential(azuritetest.Account, azuritetest.Key)
			c, _ := container.NewClientWithSharedKeyCredential(az.AccountURL()+"/"+name, cred, nil)
			if _, err := c.Create(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			r, err := blobtarget.Open(context.Background(), "vm", &azuritetest.KeyCredentials{AccountURL: az.AccountURL(), Container: name, Key: azuritetest.Key}, blobtarget.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return r
		},
	}
}

func TestRetentionKeepsExactlyThePointsInsideTheWindowAndAlwaysTheNewest(t *testing.T) {
	now := time.Date(2026, 3, 9, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name      string
		retention time.Duration
		ages      []time.Duration // of the points, oldest first
		keep      int             // how many of the newest remain
	}{
		{"24 h keeps a day", 24 * time.Hour, []time.Duration{30 * time.Hour, 25 * time.Hour, 23 * time.Hour, time.Hour, 0}, 3},
		{"exactly at the edge stays", 2 * time.Hour, []time.Duration{3 * time.Hour, 2 * time.Hour, time.Hour}, 2},
		{"0 h keeps only the newest", 0, []time.Duration{2 * time.Hour, time.Hour, time.Minute}, 1},
		{"the newest stays even when old", time.Hour, []time.Duration{50 * time.Hour, 48 * time.Hour}, 1},
	}
	for kind, open := range bothTargets(t) {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				r := open(t)
				defer r.Close()
				r.CreateDisk("d", 4096)
				var ids []string
				for i, age := range tc.ages {
					id := fmt.Sprintf("p%d", i)
					if _, err := replicatest.Point(r, id, now.Add(-age)); err != nil {
						t.Fatal(err)
					}
					ids = append(ids, id)
				}
				pruned, _, err := prune(r, now, tc.retention)
				if err != nil {
					t.Fatal(err)
				}
				points, _ := r.Points()
				if len(points) != tc.keep || len(pruned) != len(ids)-tc.keep || points[len(points)-1].ID != ids[len(ids)-1] {
					t.Fatalf("kept %d (%v), pruned %v; want the newest %d", len(points), points, pruned, tc.keep)
				}
			})
		}
	}
}

func TestDeleteReplicaRemovesTheVMsDirectoryAndRefusesAnUnmountedTarget(t *testing.T) {
	root := t.TempDir()
	r, err := dirtarget.Open(root, "app")
	if err != nil {
		t.Fatal(err)
	}
	r.CreateDisk("d", 1<<20)
	replicatest.Point(r, "p", time.Now())
	r.Close()
	task := func(path string) agentproto.Task {
		var p agentproto.ReplicationPayload
		p.VMID, p.Target.Kind, p.Target.Path = "app", "directory", path
		b, _ := json.Marshal(p)
		return agentproto.Task{ID: "t", Kind: agentproto.TaskDeleteReplica, Payload: b}
	}
	ts := testTasks(t)
	if _, err := ts.deleteReplica(context.Background(), task(root), testReporter{t}); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 1 || entries[0].Name() != dirtarget.MarkerName {
		t.Fatalf("the VM's replicas are still there: %v", entries)
	}
	// Again: nothing left to delete is success.
	if _, err := ts.deleteReplica(context.Background(), task(root), testReporter{t}); err != nil {
		t.Fatal(err)
	}
	// A target directory that is not there is not "deleted".
	_, err = ts.deleteReplica(context.Background(), task(filepath.Join(root, "not-mounted")), testReporter{t})
	var te *agentproto.TaskError
	if err == nil || !errors.As(err, &te) || !te.Recoverable || !strings.Contains(te.Message, "mounted") {
		t.Fatalf("unmounted target: %v", err)
	}
	// Nor is an empty mount point: the share is not there.
	_, err = ts.deleteReplica(context.Background(), task(t.TempDir()), testReporter{t})
	if err == nil || !errors.As(err, &te) || !te.Recoverable || !strings.Contains(te.Message, "mounted") {
		t.Fatalf("empty mount point: %v", err)
	}
}

func TestAMissingReplicaIsFinalAndAMissingTargetIsRetried(t *testing.T) {
	root := t.TempDir()
	r, _ := dirtarget.Open(root, "app")
	r.CreateDisk("d", 1<<20)
	r.Close()
	payload := func(path string) agentproto.ReplicationPayload {
		var p agentproto.ReplicationPayload
		p.VMID, p.Target.Kind, p.Target.Path = "app", "directory", path
		return p
	}
	ts := testTasks(t)
	s, err := ts.openStore(context.Background(), agentproto.Task{}, payload(root), openExisting)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	os.RemoveAll(filepath.Join(root, "app"))
	_, err = ts.openStore(context.Background(), agentproto.Task{}, payload(root), openExisting)
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != "replica_missing" || te.Recoverable {
		t.Fatalf("the VM's directory deleted: %v", err)
	}
	_, err = ts.openStore(context.Background(), agentproto.Task{}, payload(filepath.Join(root, "unmounted")), openExisting)
	if !errors.As(err, &te) || te.Code != "target_unavailable" || !te.Recoverable {
		t.Fatalf("the target directory gone: %v", err)
	}
	// An empty mount point (the share not mounted) has no marker: retried.
	_, err = ts.openStore(context.Background(), agentproto.Task{}, payload(t.TempDir()), openExisting)
	if !errors.As(err, &te) || te.Code != "target_unavailable" || !te.Recoverable || !strings.Contains(te.Message, "mounted") {
		t.Fatalf("an empty mount point: %v", err)
	}
}

func TestAGrownDiskGrowsItsReplicaAndEarlierPointsKeepTheirSize(t *testing.T) {
	for kind, open := range bothTargets(t) {
		t.Run(kind, func(t *testing.T) {
			r := open(t)
			defer r.Close()
			src := filepath.Join(t.TempDir(), "disk.img")
			first := bytes.Repeat([]byte("before"), (3<<20)/6)
			os.WriteFile(src, first, 0o644)
			r.CreateDisk("d", int64(len(first)))
			ctx := context.Background()
			if _, err := replicate.File(ctx, r, "d", src, replicate.Options{}); err != nil {
				t.Fatal(err)
			}
			replicatest.Point(r, "p1", time.Now())
			// The disk grows by 2.5 MiB, past its MiB boundary, with data at the end.
			grown := append(bytes.Clone(first), make([]byte, 5<<19)...)
			copy(grown[len(grown)-4096:], bytes.Repeat([]byte("after!"), 682))
			os.WriteFile(src, grown, 0o644)
			sent, err := replicate.File(ctx, r, "d", src, replicate.Options{}) // the vault still says the old size
			if err != nil {
				t.Fatal(err)
			}
			if sent.Sent != 4096 { // the new data block; the grown area of zeros sends nothing
				t.Fatalf("sent %d bytes after growing, want the one new data block", sent.Sent)
			}
			p2, err := replicatest.Point(r, "p2", time.Now())
			if err != nil || p2.Disks["d"] != int64(len(grown)) {
				t.Fatalf("point after growing: %+v %v", p2, err)
			}
			read := func(point string) []byte {
				pr, size, err := r.OpenPoint(point, "d")
				if err != nil {
					t.Fatal(err)
				}
				defer pr.Close()
				b, _ := io.ReadAll(io.NewSectionReader(pr, 0, size))
				return b
			}
			if !bytes.Equal(read("p2"), grown) {
				t.Fatal("the point after growing differs from the grown disk")
			}
			if !bytes.Equal(read("p1"), first) {
				t.Fatal("the point before growing changed")
			}
			if n, bad, err := r.VerifyPoint("p2"); err != nil || len(bad) != 0 || n != blocks.Count(int64(len(grown))) {
				t.Fatalf("verify after growing: %d %v %v", n, bad, err)
			}
			// Shrinking is refused, and says so.
			os.Truncate(src, 1<<20)
			_, err = replicate.File(ctx, r, "d", src, replicate.Options{})
			var te *agentproto.TaskError
			if !errors.As(err, &te) || te.Code != "disk_resized" || te.Recoverable {
				t.Fatalf("a shrunk disk: %v", err)
			}
		})
	}
}

func TestAReplicaKeptUnderTheHostLocalNameMovesToTheVaultsVMIdAndKeepsItsPoints(t *testing.T) {
	ts := testTasks(t)
	root := filepath.Join(t.TempDir(), "target")
	old, err := dirtarget.Open(root, "app") // as an earlier version kept it
	if err != nil {
		t.Fatal(err)
	}
	old.CreateDisk("d", 8192)
	if _, err := replicatest.Point(old, "p1", time.Now()); err != nil {
		t.Fatal(err)
	}
	old.Close()
	// Another VM's directory of another name is left alone.
	other, _ := dirtarget.Open(root, "db")
	other.Close()

	p := agentproto.ReplicationPayload{VMID: "app", ReplicaKey: "vm_1", LegacyReplicaKey: "app"}
	p.Target.Kind, p.Target.Path = "directory", root
	for range 2 { // the second open finds it moved
		r, err := ts.openStore(t.Context(), agentproto.Task{ID: "t"}, p, openExisting)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := r.Points()
		r.Close()
		if err != nil || len(ps) != 1 || ps[0].ID != "p1" {
			t.Fatalf("points after the move: %+v %v", ps, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "app")); !os.IsNotExist(err) {
		t.Fatalf("the old directory is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "db")); err != nil {
		t.Fatalf("another VM's directory was touched: %v", err)
	}
	// A name that is not one path element is refused, not followed.
	p.LegacyReplicaKey = "../elsewhere"
	if _, err := ts.openStore(t.Context(), agentproto.Task{ID: "t"}, p, openExisting); err == nil {
		t.Fatal("a legacy key with a path separator was followed")
	}
}

func TestAReplicaHasOneWriterOnAHostAndTheNextWaitsBrieflyForIt(t *testing.T) {
	ts := testTasks(t)
	old := lockPatience
	lockPatience = 300 * time.Millisecond
	defer func() { lockPatience = old }()
	unlock, err := ts.lockReplica(t.Context(), "/nas", "vm_1", false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ts.lockReplica(t.Context(), "/nas", "vm_1", true)
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeReplicaLocked || !te.Recoverable {
		t.Fatalf("a reader beside the writer: %v", err)
	}
	other, err := ts.lockReplica(t.Context(), "/nas", "vm_2", false) // another VM's replica
	if err != nil {
		t.Fatalf("another replica: %v", err)
	}
	other()
	// The writer lets go while the next one waits: it gets the lock.
	time.AfterFunc(100*time.Millisecond, unlock)
	r1, err := ts.lockReplica(t.Context(), "/nas", "vm_1", true)
	if err != nil {
		t.Fatalf("after the writer let go: %v", err)
	}
	r2, err := ts.lockReplica(t.Context(), "/nas", "vm_1", true) // readers share
	if err != nil {
		t.Fatalf("a second reader: %v", err)
	}
	r1()
	r2()
}
