package tasks

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

func powerTask(kind, vmID string) agentproto.Task {
	b, _ := json.Marshal(agentproto.PowerPayload{VMID: vmID, TimeoutSeconds: 5})
	return agentproto.Task{ID: "task_" + kind, Kind: kind, Payload: b, Attempt: 1}
}

// runningVM makes a VM directory "web" under root that is running.
func runningVM(t *testing.T, root string) {
	t.Helper()
	os.MkdirAll(filepath.Join(root, "web"), 0o755)
	os.WriteFile(filepath.Join(root, "web", "disk0.img"), make([]byte, 4096), 0o644)
	os.WriteFile(filepath.Join(root, "web", "running"), nil, 0o644)
}

func wantCode(t *testing.T, what string, err error, code string) *agentproto.TaskError {
	t.Helper()
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != code || te.Recoverable {
		t.Fatalf("%s: %v; want a final %s", what, err, code)
	}
	return te
}

func TestShutdownThatFailsIsVMWillNotStopAndTheVMStaysRunning(t *testing.T) {
	t.Parallel()
	ts, d := recoveryHost(t, "", "echo guest ignores ACPI >&2; exit 1")
	runningVM(t, d.Root)
	_, err := ts.shutdownVM(t.Context(), powerTask(agentproto.TaskShutdownVM, "web"), testReporter{t})
	te := wantCode(t, "a stop command that fails", err, agentproto.CodeVMWillNotStop)
	if !strings.Contains(te.Message, "may still run") || !strings.Contains(te.Message, "guest ignores ACPI") {
		t.Fatalf("the message: %s", te.Message)
	}
	if state, _ := d.PowerState(t.Context(), "web"); state != agentproto.PowerRunning {
		t.Fatalf("after a failed shutdown the VM is %s", state)
	}
	d.StopCommand = "true"
	for _, want := range []agentproto.PowerResult{{WasRunning: true, PowerState: agentproto.PowerOff}, {PowerState: agentproto.PowerOff}} {
		out, err := ts.shutdownVM(t.Context(), powerTask(agentproto.TaskShutdownVM, "web"), testReporter{t})
		if err != nil || out != want {
			t.Fatalf("shutdown: %+v %v; want %+v", out, err, want)
		}
	}
	_, err = ts.shutdownVM(t.Context(), powerTask(agentproto.TaskShutdownVM, "gone"), testReporter{t})
	wantCode(t, "a VM the host does not have", err, agentproto.CodeVMNotFound)
}

func TestStartVMStartsAVMOnceAndSaysWhenItCannot(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "hooks.log")
	ts, d := recoveryHost(t, "exit 7", "")
	runningVM(t, d.Root)
	os.Remove(filepath.Join(d.Root, "web", "running"))
	_, err := ts.startVM(t.Context(), powerTask(agentproto.TaskStartVM, "web"), testReporter{t})
	wantCode(t, "a start command that fails", err, agentproto.CodeVMStartFailed)
	if state, _ := d.PowerState(t.Context(), "web"); state != agentproto.PowerOff {
		t.Fatalf("after a failed start the VM is %s", state)
	}
	d.StartCommand = "echo start isolated=$LIFEBOAT_ISOLATED >> " + log
	for _, want := range []agentproto.PowerResult{{PowerState: agentproto.PowerRunning}, {WasRunning: true, PowerState: agentproto.PowerRunning}} {
		out, err := ts.startVM(t.Context(), powerTask(agentproto.TaskStartVM, "web"), testReporter{t})
		if err != nil || out != want {
			t.Fatalf("start: %+v %v; want %+v", out, err, want)
		}
	}
	if b, _ := os.ReadFile(log); string(b) != "start isolated=0\n" {
		t.Fatalf("the start command ran as %q", b)
	}
	_, err = ts.startVM(t.Context(), powerTask(agentproto.TaskStartVM, "gone"), testReporter{t})
	wantCode(t, "a VM the host does not have", err, agentproto.CodeVMNotFound)
}

func TestRemoveVMDeletesOnlyAVMAMaterializeMadeAndAgainIsSuccess(t *testing.T) {
	t.Parallel()
	ts, d := recoveryHost(t, "", "true")
	runningVM(t, d.Root) // the host's own VM
	_, err := ts.removeVM(t.Context(), powerTask(agentproto.TaskRemoveVM, "web"), testReporter{t})
	wantCode(t, "a VM Lifeboat did not make", err, agentproto.CodeVMNotMaterialized)
	if state, _ := d.PowerState(t.Context(), "web"); state != agentproto.PowerRunning {
		t.Fatalf("the host's own VM after a refused removal: %s", state)
	}
	made, err := d.Materialize(t.Context(), driver.MaterializeSpec{ID: "vm-test", Name: "web-test", SourceVMID: "vm_web", PointID: "p1", Test: true,
		Disks: []driver.MaterializeDisk{{Name: "disk0", SizeBytes: 4096, Data: strings.NewReader(strings.Repeat("x", 4096))}}})
	if err != nil {
		t.Fatal(err)
	}
	d.Start(t.Context(), made.VM.ID, driver.StartOptions{Isolated: true})
	for _, want := range []agentproto.PowerResult{{WasRunning: true, PowerState: agentproto.PowerOff}, {PowerState: agentproto.PowerOff}} {
		out, err := ts.removeVM(t.Context(), powerTask(agentproto.TaskRemoveVM, "vm-test"), testReporter{t})
		if err != nil || out != want {
			t.Fatalf("remove: %+v %v; want %+v", out, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(d.Root, "web-test")); !os.IsNotExist(err) {
		t.Fatalf("the test VM's directory: %v", err)
	}
}
