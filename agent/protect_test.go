package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
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
					if _, err := r.CreatePoint(id, now.Add(-age), "crash"); err != nil {
						t.Fatal(err)
					}
					ids = append(ids, id)
				}
				pruned, err := prune(r, now, tc.retention)
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
	r.CreatePoint("p", time.Now(), "crash")
	r.Close()
	task := func(path string) agentproto.Task {
		var p agentproto.ReplicationPayload
		p.VMID, p.Target.Kind, p.Target.Path = "app", "directory", path
		b, _ := json.Marshal(p)
		return agentproto.Task{ID: "t", Kind: agentproto.TaskDeleteReplica, Payload: b}
	}
	a := &agent{}
	if _, err := a.deleteReplica(context.Background(), task(root), &reporter{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "app")); !os.IsNotExist(err) {
		t.Fatalf("the VM's replicas are still there: %v", err)
	}
	// Again: nothing left to delete is success.
	if _, err := a.deleteReplica(context.Background(), task(root), &reporter{}); err != nil {
		t.Fatal(err)
	}
	// A target directory that is not there is not "deleted".
	_, err = a.deleteReplica(context.Background(), task(filepath.Join(root, "not-mounted")), &reporter{})
	var te *agentproto.TaskError
	if err == nil || !errors.As(err, &te) || !te.Recoverable || !strings.Contains(te.Message, "mounted") {
		t.Fatalf("unmounted target: %v", err)
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
	a := &agent{}
	s, err := a.openStore(context.Background(), agentproto.Task{}, payload(root), false)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	os.RemoveAll(filepath.Join(root, "app"))
	_, err = a.openStore(context.Background(), agentproto.Task{}, payload(root), false)
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != "replica_missing" || te.Recoverable {
		t.Fatalf("the VM's directory deleted: %v", err)
	}
	_, err = a.openStore(context.Background(), agentproto.Task{}, payload(filepath.Join(root, "unmounted")), false)
	if !errors.As(err, &te) || te.Code != "target_unavailable" || !te.Recoverable {
		t.Fatalf("the target directory gone: %v", err)
	}
	// An empty mount point (the share not mounted) has no marker: retried.
	_, err = a.openStore(context.Background(), agentproto.Task{}, payload(t.TempDir()), false)
	if !errors.As(err, &te) || te.Code != "target_unavailable" || !te.Recoverable || !strings.Contains(te.Message, "mounted") {
		t.Fatalf("an empty mount point: %v", err)
	}
}
