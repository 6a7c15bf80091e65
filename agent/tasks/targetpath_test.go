package tasks

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
