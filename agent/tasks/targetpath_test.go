package tasks

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/driver/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// A directory target whose path is not on the host (a typo, a share not
// mounted) fails the protection check unless the target allows creating
// it; before, the agent made it, and the replicas filled the host's disk.
func TestATargetPathThatIsNotThereFailsTheCheckUnlessCreatingItWasChosen(t *testing.T) {
	vmRoot := t.TempDir()
	os.MkdirAll(filepath.Join(vmRoot, "db"), 0o755)
	disk := filepath.Join(vmRoot, "db", "disk0.img")
	os.WriteFile(disk, make([]byte, 1<<20), 0o644)
	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts := New(Deps{Driver: &filedisk.Driver{Root: vmRoot}, State: dir, Version: "test"})
	target := filepath.Join(t.TempDir(), "nas-typo")
	task := func(kind string, mustExist bool) agentproto.Task {
		p := agentproto.ReplicationPayload{ProtectionID: "prot", VMID: "db", ReplicaKey: "vm_db", RetentionHours: 24, MinFreeBytes: 1,
			Disks: []agentproto.ReplicaDisk{{ReplicaID: "d0", Path: disk, SizeBytes: 1 << 20, New: true}}}
		p.Target.Kind, p.Target.Path, p.Target.MustExist = "directory", target, mustExist
		b, _ := json.Marshal(p)
		return agentproto.Task{ID: "task_" + kind, Kind: kind, Payload: b, Attempt: 1}
	}

	_, err = ts.protectionCheck(t.Context(), task(agentproto.TaskProtectionCheck, true), testReporter{t})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodePrerequisitesFailed || !strings.Contains(te.Message, target+": does not exist on this host") ||
		!strings.Contains(te.Message, "Create the directory on the hosts") {
		t.Fatalf("a missing target path: %v", err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the check made the directory: %v", err)
	}
	// Nor does creating the replica make it, if the check was passed by a
	// share that is gone since: retried, as an unmounted target.
	_, err = ts.createReplica(t.Context(), task(agentproto.TaskCreateReplica, true), testReporter{t})
	if !errors.As(err, &te) || te.Code != agentproto.CodeTargetUnavailable || !te.Recoverable {
		t.Fatalf("create replica on a missing path: %v", err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("creating the replica made the directory: %v", err)
	}

	// Chosen on purpose: the check makes it.
	if _, err := ts.protectionCheck(t.Context(), task(agentproto.TaskProtectionCheck, false), testReporter{t}); err != nil {
		t.Fatalf("with creating allowed: %v", err)
	}
	if st, err := os.Stat(target); err != nil || !st.IsDir() {
		t.Fatalf("the directory was not made: %v", err)
	}
	// Once there, a target that must exist passes.
	if _, err := ts.protectionCheck(t.Context(), task(agentproto.TaskProtectionCheck, true), testReporter{t}); err != nil {
		t.Fatalf("an existing path: %v", err)
	}
}

// A target the vault knows other VMs' replicas on must hold its marker: an
// empty mount point (the share not mounted) is not the target, even if
// the directory is there.
func TestATargetInUseWithoutItsMarkerIsAShareNotMounted(t *testing.T) {
	vmRoot := t.TempDir()
	os.MkdirAll(filepath.Join(vmRoot, "db"), 0o755)
	disk := filepath.Join(vmRoot, "db", "disk0.img")
	os.WriteFile(disk, make([]byte, 1<<20), 0o644)
	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts := New(Deps{Driver: &filedisk.Driver{Root: vmRoot}, State: dir, Version: "test"})
	mountPoint := t.TempDir() // there, and empty
	task := func(kind string) agentproto.Task {
		p := agentproto.ReplicationPayload{ProtectionID: "prot", VMID: "db", ReplicaKey: "vm_db", RetentionHours: 24, MinFreeBytes: 1,
			Disks: []agentproto.ReplicaDisk{{ReplicaID: "d0", Path: disk, SizeBytes: 1 << 20, New: true}}}
		p.Target.Kind, p.Target.Path, p.Target.MustExist, p.Target.InUse = "directory", mountPoint, true, true
		b, _ := json.Marshal(p)
		return agentproto.Task{ID: "task_" + kind, Kind: kind, Payload: b, Attempt: 1}
	}
	_, err = ts.protectionCheck(t.Context(), task(agentproto.TaskProtectionCheck), testReporter{t})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || !strings.Contains(te.Message, "is the share mounted") {
		t.Fatalf("an empty mount point of a target in use: %v", err)
	}
	_, err = ts.createReplica(t.Context(), task(agentproto.TaskCreateReplica), testReporter{t})
	if !errors.As(err, &te) || te.Code != agentproto.CodeTargetUnavailable || !te.Recoverable {
		t.Fatalf("create replica in an empty mount point: %v", err)
	}
	if entries, _ := os.ReadDir(mountPoint); len(entries) != 0 {
		t.Fatalf("the empty mount point got %v", entries)
	}
	// The share mounted: its marker is there.
	if err := os.WriteFile(filepath.Join(mountPoint, dirtarget.MarkerName), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.protectionCheck(t.Context(), task(agentproto.TaskProtectionCheck), testReporter{t}); err != nil {
		t.Fatalf("with the marker: %v", err)
	}
}

// A move's deletion of the old replica deletes nothing when the old and
// new target paths name one directory (here a symlink): the new replica
// is that directory.
func TestAMovesDeleteStepRefusesWhenTheOldReplicaIsTheNewOne(t *testing.T) {
	root := t.TempDir()
	r, err := dirtarget.Open(root, "vm_app")
	if err != nil {
		t.Fatal(err)
	}
	r.CreateDisk("d", 1<<20)
	r.Close()
	alias := filepath.Join(t.TempDir(), "nas-alias")
	if err := os.Symlink(root, alias); err != nil {
		t.Fatal(err)
	}
	task := func(keep string) agentproto.Task {
		var p agentproto.ReplicationPayload
		p.VMID, p.ReplicaKey, p.Target.Kind, p.Target.Path, p.KeepReplicaRoot = "app", "vm_app", "directory", root, keep
		b, _ := json.Marshal(p)
		return agentproto.Task{ID: "t", Kind: agentproto.TaskDeleteReplica, Payload: b}
	}
	ts := testTasks(t)
	_, err = ts.deleteReplica(t.Context(), task(alias), testReporter{t})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeReplicaAliased {
		t.Fatalf("delete of a replica that is the kept one: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "vm_app")); err != nil {
		t.Fatalf("the replica was deleted: %v", err)
	}
	// A really other directory: deleted.
	if _, err := ts.deleteReplica(t.Context(), task(t.TempDir()), testReporter{t}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "vm_app")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old replica is still there: %v", err)
	}
}
