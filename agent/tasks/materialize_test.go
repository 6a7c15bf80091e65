package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/driver/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// protectedVM is a VM "web" of two disks on a source host, replicated to
// a directory target by real cycles, one point per image set.
type protectedVM struct {
	payload agentproto.ReplicationPayload
	// images are each point's disks, by replica id.
	images map[string]map[string][]byte
}

// protectWithPoints makes the VM and runs one replication cycle per
// entry of points, each after writing that entry's data into the disks.
func protectWithPoints(t *testing.T, points ...string) protectedVM {
	t.Helper()
	vmRoot := t.TempDir()
	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts := New(Deps{Driver: &filedisk.Driver{Root: vmRoot}, State: dir, Version: "test"})
	sizes := map[string]int{"d0": 8 << 20, "d1": 1<<20 + 512} // a disk that ends inside a block
	files := map[string]string{"d0": filepath.Join(vmRoot, "web", "disk0.img"), "d1": filepath.Join(vmRoot, "web", "data.img")}
	os.MkdirAll(filepath.Join(vmRoot, "web"), 0o755)
	p := agentproto.ReplicationPayload{ProtectionID: "prot", VMID: "web", ReplicaKey: "vm_web", RetentionHours: 24 * 365}
	p.Target.Kind, p.Target.Path = "directory", filepath.Join(t.TempDir(), "nas")
	for _, id := range []string{"d0", "d1"} {
		os.WriteFile(files[id], make([]byte, sizes[id]), 0o644)
		p.Disks = append(p.Disks, agentproto.ReplicaDisk{ReplicaID: id, Path: files[id], SizeBytes: int64(sizes[id]), New: true})
	}
	task := func(kind, point string) agentproto.Task {
		q := p
		q.PointID = point
		b, _ := json.Marshal(q)
		return agentproto.Task{ID: "task_" + kind + point, Kind: kind, Payload: b, Attempt: 1}
	}
	if _, err := ts.createReplica(t.Context(), task(agentproto.TaskCreateReplica, ""), testReporter{t}); err != nil {
		t.Fatal(err)
	}
	vm := protectedVM{images: map[string]map[string][]byte{}}
	for i, point := range points {
		vm.images[point] = map[string][]byte{}
		for _, id := range []string{"d0", "d1"} {
			img, _ := os.ReadFile(files[id])
			// Data at the start, in the middle and in the last (short) block.
			for _, off := range []int{i * 4096, len(img) / 2, len(img) - 100} {
				copy(img[off:], strings.Repeat(point+id, 10))
			}
			os.WriteFile(files[id], img, 0o644)
			vm.images[point][id] = img
		}
		if _, err := ts.replicate(t.Context(), task(agentproto.TaskReplicate, point), testReporter{t}); err != nil {
			t.Fatal(err)
		}
		for i := range p.Disks {
			p.Disks[i].New = false
		}
	}
	vm.payload = p
	return vm
}

// recoveryHost is the tasks of a recovery host whose driver runs hooks.
func recoveryHost(t *testing.T, startCommand, stopCommand string) (*Tasks, *filedisk.Driver) {
	t.Helper()
	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &filedisk.Driver{Root: t.TempDir(), StartCommand: startCommand, StopCommand: stopCommand}
	return New(Deps{Driver: d, State: dir, Version: "test"}), d
}

func materializeTask(p agentproto.MaterializePayload) agentproto.Task {
	b, _ := json.Marshal(p)
	return agentproto.Task{ID: "task_materialize_" + p.PointID, Kind: agentproto.TaskMaterialize, Payload: b, Attempt: 1}
}

// nonZeroBytes counts the bytes of img's 4 KiB blocks that hold data.
func nonZeroBytes(img []byte) int64 {
	var n int64
	for off := 0; off < len(img); off += 4096 {
		b := img[off:min(off+4096, len(img))]
		if !bytes.Equal(b, make([]byte, len(b))) {
			n += int64(len(b))
		}
	}
	return n
}

func TestMaterializeWritesExactlyTheChosenPointsBytesAndStartsItIsolatedOnce(t *testing.T) {
	t.Parallel()
	src := protectWithPoints(t, "p1", "p2")
	log := filepath.Join(t.TempDir(), "hooks.log")
	// The start command fails if the replica's lock is still held: the VM
	// must not boot while the task holds off the source's cycles.
	// Without flock (util-linux) only that check is left out.
	ts, d := recoveryHost(t, "", "")
	d.StartCommand = "echo start isolated=$LIFEBOAT_ISOLATED >> " + log
	if _, err := exec.LookPath("flock"); err == nil {
		d.StartCommand = "flock -n -x " + ts.lockPath(src.payload.Target.Path, "vm_web") + " true && " + d.StartCommand
	} else if os.Getenv("LIFEBOAT_REQUIRE_QEMU") != "" {
		t.Fatal("flock (util-linux) is missing and LIFEBOAT_REQUIRE_QEMU is set")
	} else {
		t.Log("flock (util-linux) is missing: the replica's lock is not checked")
	}
	p := agentproto.MaterializePayload{Replication: src.payload, PointID: "p1", VMID: "vm-web-test", VMName: "web-test", SourceVMID: "vm_web", Test: true, Start: true}
	out, err := ts.materialize(t.Context(), materializeTask(p), testReporter{t})
	if err != nil {
		t.Fatal(err)
	}
	res := out.(agentproto.MaterializeResult)
	want := src.images["p1"]
	wantWritten := nonZeroBytes(want["d0"]) + nonZeroBytes(want["d1"])
	if res.PointID != "p1" || !res.Started || !res.Isolated || res.VM.PowerState != agentproto.PowerRunning ||
		res.BytesRead != int64(len(want["d0"])+len(want["d1"])) || res.BytesWritten != wantWritten {
		t.Fatalf("result %+v; want read %d, written %d", res, len(want["d0"])+len(want["d1"]), wantWritten)
	}
	disks := map[string]string{}
	for _, disk := range res.VM.Disks {
		disks[filepath.Base(disk.Path)] = disk.Path
	}
	for name, id := range map[string]string{"disk0.img": "d0", "data.img": "d1"} {
		got, err := os.ReadFile(disks[name])
		if err != nil || !bytes.Equal(got, want[id]) {
			t.Fatalf("%s is not disk %s at p1 (%d bytes, %v); p2's? %v", name, id, len(got), err, bytes.Equal(got, src.images["p2"][id]))
		}
	}
	// Run again (an agent restart, a restarted job): the VM is kept as it
	// is and not started twice.
	out, err = ts.materialize(t.Context(), materializeTask(p), testReporter{t})
	if again := out.(agentproto.MaterializeResult); err != nil || again.BytesRead != 0 || again.BytesWritten != 0 || !again.Started {
		t.Fatalf("a rerun: %+v %v", out, err)
	}
	if b, _ := os.ReadFile(log); string(b) != "start isolated=1\n" {
		t.Fatalf("the start command ran as %q", b)
	}
	// Another point in its place, as after a failover: stopped, replaced.
	p.PointID, p.Replace, p.Start = "p2", true, false
	out, err = ts.materialize(t.Context(), materializeTask(p), testReporter{t})
	if err != nil {
		t.Fatal(err)
	}
	if res := out.(agentproto.MaterializeResult); res.Started || res.VM.PowerState != agentproto.PowerOff {
		t.Fatalf("the replacing VM: %+v", res)
	}
	if got, _ := os.ReadFile(disks["disk0.img"]); !bytes.Equal(got, src.images["p2"]["d0"]) {
		t.Fatal("the replaced VM's disk is not p2's")
	}
}

func TestMaterializeOfAPointNoLongerOnTheTargetSaysChooseAnotherAndMakesNothing(t *testing.T) {
	t.Parallel()
	src := protectWithPoints(t, "p1")
	ts, d := recoveryHost(t, "", "")
	p := agentproto.MaterializePayload{Replication: src.payload, PointID: "pruned", VMID: "vm-web", VMName: "web", SourceVMID: "vm_web"}
	_, err := ts.materialize(t.Context(), materializeTask(p), testReporter{t})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodePointNotFound || te.Recoverable || !strings.Contains(te.Message, "choose another point") {
		t.Fatalf("a point retention deleted: %v", err)
	}
	if entries, _ := os.ReadDir(d.Root); len(entries) != 0 {
		t.Fatalf("left on the recovery host: %v", entries)
	}
}

// A replica that cannot be read is the target's fault, retried as a
// cycle's would be, and the recovery host keeps nothing of the VM.
func TestAReplicaThatCannotBeReadIsATargetErrorAndLeavesNoVM(t *testing.T) {
	t.Parallel()
	src := protectWithPoints(t, "p1")
	if err := os.Truncate(filepath.Join(src.payload.Target.Path, "vm_web", "disks", "d0.vhd"), 1<<20); err != nil {
		t.Fatal(err)
	}
	ts, d := recoveryHost(t, "", "")
	p := agentproto.MaterializePayload{Replication: src.payload, PointID: "p1", VMID: "vm-web", VMName: "web", SourceVMID: "vm_web"}
	_, err := ts.materialize(t.Context(), materializeTask(p), testReporter{t})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeTargetUnavailable || !te.Recoverable || !strings.Contains(te.Message, "read recovery point p1") {
		t.Fatalf("a replica cut short: %v", err)
	}
	if entries, _ := os.ReadDir(d.Root); len(entries) != 0 {
		t.Fatalf("left on the recovery host: %v", entries)
	}
}

func TestAMaterializedVMThatWillNotStartIsKeptAndTheRestartedJobStartsIt(t *testing.T) {
	t.Parallel()
	src := protectWithPoints(t, "p1")
	ts, d := recoveryHost(t, "echo no hypervisor >&2; exit 1", "")
	p := agentproto.MaterializePayload{Replication: src.payload, PointID: "p1", VMID: "vm-web", VMName: "web", SourceVMID: "vm_web", Start: true}
	_, err := ts.materialize(t.Context(), materializeTask(p), testReporter{t})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeVMStartFailed || te.Recoverable ||
		!strings.Contains(te.Message, "is kept") || !strings.Contains(te.Message, "no hypervisor") {
		t.Fatalf("a start that fails: %v", err)
	}
	if state, err := d.PowerState(t.Context(), "vm-web"); err != nil || state != agentproto.PowerOff {
		t.Fatalf("the VM after its start failed: %s %v", state, err)
	}
	d.StartCommand = "true"
	out, err := ts.materialize(t.Context(), materializeTask(p), testReporter{t})
	if res, _ := out.(agentproto.MaterializeResult); err != nil || !res.Started || res.BytesWritten != 0 || res.VM.PowerState != agentproto.PowerRunning {
		t.Fatalf("the restarted job: %+v %v", out, err)
	}
}

func TestDiskNamesFollowTheSourceFilesAndFallBackToReplicaIDs(t *testing.T) {
	sources := []agentproto.ReplicaDisk{
		{ReplicaID: "a", Path: "/vms/web/disk0.img"},
		{ReplicaID: "b", Path: "/other/web/disk0.img"}, // the same name from elsewhere
		{ReplicaID: "c", Path: "/vms/web/.hidden.img"},
		{ReplicaID: "d", Path: "/vms/web/a.img"}, // another disk's replica id
		{ReplicaID: "f", Path: "/var/lib/qemu/web/data.qcow2"},
	}
	got := diskNames(sources, []string{"a", "b", "c", "d", "e", "f"})
	want := map[string]string{"a": "disk0", "b": "b", "c": "c", "d": "d", "e": "e", "f": "data"}
	for id, name := range want {
		if got[id] != name {
			t.Fatalf("names %v, want %v", got, want)
		}
	}
}

// differingBytes counts the bytes of have's 4 KiB blocks that differ from
// want's, as a write back writes them.
func differingBytes(have, want []byte) int64 {
	var n int64
	for off := 0; off < len(want); off += 4096 {
		end := min(off+4096, len(want))
		if !bytes.Equal(have[off:end], want[off:end]) {
			n += int64(end - off)
		}
	}
	return n
}

// A failback writes a point of a real replica into the VM a failover
// left, which has changed since: its disks end as the point's, byte for
// byte, and only the blocks that differ are written. Another point for
// the VM failed back into, which runs, stops it, writes, starts it again.
func TestAFailbackWritesThePointIntoTheExistingVMsDisks(t *testing.T) {
	t.Parallel()
	src := protectWithPoints(t, "p1", "p2")
	log := filepath.Join(t.TempDir(), "hooks.log")
	ts, d := recoveryHost(t, "", "echo stop >> "+log)
	vmDir := filepath.Join(d.Root, "web")
	os.MkdirAll(vmDir, 0o755)
	files := map[string]string{"d0": filepath.Join(vmDir, "disk0.img"), "d1": filepath.Join(vmDir, "data.img")}
	// The original VM as the failover left it, then written on: p1's
	// disks with other data at the start, in the middle and at the end.
	have := map[string][]byte{}
	for id, path := range files {
		img := bytes.Clone(src.images["p1"][id])
		for _, off := range []int{0, 3 * 4096, len(img) / 3, len(img) - 1} {
			img[off] ^= 0xff
		}
		have[id] = img
		if err := os.WriteFile(path, img, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check := func(how, point string, res agentproto.MaterializeResult, want int64) {
		t.Helper()
		for id, path := range files {
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, src.images[point][id]) {
				t.Fatalf("%s: %s is not disk %s at %s (%d bytes, %v)", how, path, id, point, len(got), err)
			}
		}
		size := int64(len(src.images[point]["d0"]) + len(src.images[point]["d1"]))
		if res.PointID != point || res.VM.ID != "web" || res.BytesRead != size || res.BytesWritten != want {
			t.Fatalf("%s: result %+v; want read %d, written %d", how, res, size, want)
		}
	}

	p := agentproto.MaterializePayload{Replication: src.payload, PointID: "p2", VMID: "web", VMName: "web", SourceVMID: "vm_web", WriteBack: true}
	out, err := ts.materialize(t.Context(), materializeTask(p), testReporter{t})
	if err != nil {
		t.Fatal(err)
	}
	check("the failback", "p2", out.(agentproto.MaterializeResult),
		differingBytes(have["d0"], src.images["p2"]["d0"])+differingBytes(have["d1"], src.images["p2"]["d1"]))
	if b, _ := os.ReadFile(log); len(b) != 0 {
		t.Fatalf("a VM that was off: the hooks ran as %q", b)
	}

	// It runs now; p1 in its place. The start command says whether the
	// marker had gone and the disk was written by the time it ran.
	wantDisk := filepath.Join(t.TempDir(), "p1-d0")
	os.WriteFile(wantDisk, src.images["p1"]["d0"], 0o644)
	d.StartCommand = `if test -e "$LIFEBOAT_VM_DIR/running"; then echo start running >> ` + log + `; else echo start >> ` + log +
		`; fi; cmp -s "$LIFEBOAT_VM_DIR/disk0.img" ` + wantDisk + ` && echo written >> ` + log
	os.WriteFile(filepath.Join(vmDir, "running"), nil, 0o644)
	p.PointID, p.Replace, p.Start = "p1", true, true
	out, err = ts.materialize(t.Context(), materializeTask(p), testReporter{t})
	if err != nil {
		t.Fatal(err)
	}
	res := out.(agentproto.MaterializeResult)
	check("another point into the running VM", "p1", res,
		differingBytes(src.images["p2"]["d0"], src.images["p1"]["d0"])+differingBytes(src.images["p2"]["d1"], src.images["p1"]["d1"]))
	if !res.Started || res.VM.PowerState != agentproto.PowerRunning {
		t.Fatalf("the VM was not started again: %+v", res)
	}
	if b, _ := os.ReadFile(log); string(b) != "stop\nstart\nwritten\n" {
		t.Fatalf("the hooks ran as %q; want stop, then start once the disks were written", b)
	}
}
