package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// driverVM starts a PC machine (TCG) with a second QMP monitor, vm1.qmp,
// in a directory of its own for the Driver; the test keeps the first
// (vm.m) for its writes. paused adds -S.
func driverVM(t *testing.T, paused bool) (*testVM, *Driver) {
	t.Helper()
	qmpDir, err := os.MkdirTemp("", "lbqmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(qmpDir) })
	work, err := os.MkdirTemp("", "lbwk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	args := []string{"-machine", "pc", "-accel", "tcg", "-qmp", "unix:" + filepath.Join(qmpDir, "vm1.qmp") + ",server=on,wait=off"}
	if paused {
		args = append(args, "-S")
	}
	vm := &testVM{VM: qemutest.Start(t, args...)}
	vm.dial(t)
	d := &Driver{QMPDir: qmpDir, WorkDir: work, StateDir: t.TempDir()}
	t.Cleanup(func() { d.Close() })
	return vm, d
}

func TestTheDriverListsEachSocketsVMWithItsDisksAndPowerState(t *testing.T) {
	vm, d := driverVM(t, true)
	ctx := context.Background()
	q := vm.addDisk(t, "d0", "qcow2", 16*MiB)
	r := vm.addDisk(t, "d1", "raw", 8*MiB)
	if err := d.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	msg, err := d.Check(ctx)
	if err != nil || !strings.Contains(msg, "1 QMP socket(s)") || !strings.Contains(msg, "2 disk(s)") {
		t.Fatalf("Check: %q, %v", msg, err)
	}
	vms, err := d.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].ID != "vm1" || vms[0].Name != "vm1" || vms[0].PowerState != agentproto.PowerOff || len(vms[0].Disks) != 2 ||
		vms[0].Disks[0] != (agentproto.Disk{Path: q, SizeBytes: 16 * MiB, Format: "qcow2"}) ||
		vms[0].Disks[1] != (agentproto.Disk{Path: r, SizeBytes: 8 * MiB, Format: "raw"}) {
		t.Fatalf("inventory %+v", vms)
	}
	if err := d.CheckVM(ctx, "vm1", []driver.DiskRef{{ID: "a", Path: q, SizeBytes: 16 * MiB}, {ID: "b", Path: r, SizeBytes: 8 * MiB}}); err != nil {
		t.Fatal(err)
	}
	if err := d.CheckVM(ctx, "vm1", []driver.DiskRef{{ID: "a", Path: q, SizeBytes: 8 * MiB}}); err == nil || !strings.Contains(err.Error(), "the vault expects") {
		t.Fatalf("CheckVM of a wrong size: %v", err)
	}
	if _, err := d.PowerState(ctx, "nope"); !errors.Is(err, driver.ErrVMNotFound) {
		t.Fatalf("PowerState of an unknown VM: %v", err)
	}
	// prelaunch (-S) is Off; Start lets it run.
	if err := d.Start(ctx, "vm1", driver.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	if ps, err := d.PowerState(ctx, "vm1"); err != nil || ps != agentproto.PowerRunning {
		t.Fatalf("after Start: %q, %v", ps, err)
	}
	vm.exec(t, "stop", nil)
	if ps, _ := d.PowerState(ctx, "vm1"); ps != agentproto.PowerRunning {
		t.Fatalf("a paused VM is %q, want Running (it holds its guest)", ps)
	}
	// Without a VM directory the driver makes no VMs, and says how to.
	var te *agentproto.TaskError
	if _, err := d.Materialize(ctx, driver.MaterializeSpec{}); !errors.As(err, &te) || te.Code != agentproto.CodeTargetNotSupported ||
		!strings.Contains(te.Message, "--qemu-vm-dir") {
		t.Fatalf("Materialize: %v", err)
	}
}

// driverCycle runs what agent/tasks' cycle does with the driver: Capture,
// Copy each disk into the replica, ReadDone, a point at the capture's
// time, Release(true). It returns each disk's bytes sent and read, and
// whether its Changed was set.
func driverCycle(t *testing.T, d *Driver, refs []driver.DiskRef, r *dirtarget.Replica, point string) (sent, read []int64, tracked []bool) {
	t.Helper()
	ctx := context.Background()
	c, err := d.Capture(ctx, driver.CaptureRequest{VMID: "vm1", Disks: refs})
	if err != nil {
		t.Fatal(err)
	}
	for _, cd := range c.Disks() {
		cr := &countingReader{r: cd.Source.Reader}
		src := cd.Source
		src.Reader = cr
		res, err := replicate.Copy(ctx, r, cd.ID, src, replicate.Options{})
		if err != nil {
			c.Release(false)
			t.Fatal(err)
		}
		sent, read, tracked = append(sent, res.Sent), append(read, cr.n.Load()), append(tracked, src.Changed != nil)
	}
	got := c.ReadDone()
	if got.Consistency != replica.ConsistencyCrash || got.Method != driver.MethodFleece || got.Time.IsZero() || got.Time.After(time.Now()) {
		t.Fatalf("ReadDone %+v", got)
	}
	if _, err := replicatest.Point(r, point, got.Time); err != nil {
		c.Release(false)
		t.Fatal(err)
	}
	if err := c.Release(true); err != nil {
		t.Fatal(err)
	}
	return sent, read, tracked
}

func TestDriverCyclesSendTheWholeDiskFirstThenExactlyTheChangedBlocks(t *testing.T) {
	vm, d := driverVM(t, true)
	ctx := context.Background()
	q := vm.addDisk(t, "d0", "qcow2", 16*MiB)
	w := vm.addDisk(t, "d1", "raw", 8*MiB)
	if err := d.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	refs := []driver.DiskRef{{ID: "d0", Path: q, SizeBytes: 16 * MiB}, {ID: "d1", Path: w, SizeBytes: 8 * MiB}}
	r, err := dirtarget.Open(filepath.Join(vm.Dir, "target"), "vm")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, ref := range refs {
		if err := r.CreateDisk(ref.ID, ref.SizeBytes); err != nil {
			t.Fatal(err)
		}
	}
	vm.writeP(t, "d0", 0x11, 0, 1*MiB)
	// First cycle: no record, every block compared.
	sent, read, tracked := driverCycle(t, d, refs, r, "p1")
	if tracked[0] || tracked[1] || sent[0] != 1*MiB || sent[1] != 0 || read[0] != 16*MiB+sent[0] || read[1] != 8*MiB {
		t.Fatalf("first cycle: sent %v, read %v, tracked %v", sent, read, tracked)
	}
	// Second: exactly the writes.
	vm.writeP(t, "d0", 0x22, 5*MiB, 64*KiB)
	vm.writeP(t, "d1", 0x44, 3*MiB+8*KiB, 4*KiB)
	sent, _, tracked = driverCycle(t, d, refs, r, "p2")
	if !tracked[0] || !tracked[1] || sent[0] != 64*KiB || sent[1] != 4*KiB {
		t.Fatalf("delta cycle: sent %v, tracked %v", sent, tracked)
	}
	want0 := image(16*MiB, [3]int64{0x11, 0, 1 * MiB}, [3]int64{0x22, 5 * MiB, 64 * KiB})
	want1 := image(8*MiB, [3]int64{0x44, 3*MiB + 8*KiB, 4 * KiB})
	equalImage(t, "p2 d0", replicatest.ReadPoint(t, r, "p2", "d0"), want0)
	equalImage(t, "p2 d1", replicatest.ReadPoint(t, r, "p2", "d1"), want1)

	// A capture released without ack (the point was not made) keeps its
	// changes: the next cycle sends them, with what was written since.
	vm.writeP(t, "d0", 0x55, 9*MiB, 128*KiB)
	c, err := d.Capture(ctx, driver.CaptureRequest{VMID: "vm1", Disks: refs})
	if err != nil {
		t.Fatal(err)
	}
	if ch := c.Disks()[0].Source.Changed; len(ch) != 1 || ch[0].Offset != 9*MiB || ch[0].Length != 128*KiB {
		t.Fatalf("changed %v", ch)
	}
	vm.writeP(t, "d0", 0x66, 14*MiB, 64*KiB) // during the capture
	if err := c.Release(false); err != nil {
		t.Fatal(err)
	}
	sent, _, tracked = driverCycle(t, d, refs, r, "p3")
	if !tracked[0] || sent[0] != 192*KiB || sent[1] != 0 {
		t.Fatalf("after an unacknowledged capture: sent %v, tracked %v", sent, tracked)
	}
	want0 = image(16*MiB, [3]int64{0x11, 0, 1 * MiB}, [3]int64{0x22, 5 * MiB, 64 * KiB},
		[3]int64{0x55, 9 * MiB, 128 * KiB}, [3]int64{0x66, 14 * MiB, 64 * KiB})
	equalImage(t, "p3 d0", replicatest.ReadPoint(t, r, "p3", "d0"), want0)

	// Without the record (a lost state directory), a cycle compares every
	// block: the bitmap is not trusted for a replica it may not describe.
	if err := os.RemoveAll(filepath.Join(d.StateDir, "qemu-tracking")); err != nil {
		t.Fatal(err)
	}
	vm.writeP(t, "d1", 0x77, 0, 64*KiB)
	sent, read, tracked = driverCycle(t, d, refs, r, "p4")
	if tracked[0] || tracked[1] || sent[0] != 0 || sent[1] != 64*KiB || read[0] != 16*MiB {
		t.Fatalf("without a record: sent %v, read %v, tracked %v", sent, read, tracked)
	}
	// And the next one is tracked again.
	sent, read, tracked = driverCycle(t, d, refs, r, "p5")
	if !tracked[0] || !tracked[1] || sent[0]+sent[1]+read[0]+read[1] != 0 {
		t.Fatalf("idle cycle: sent %v, read %v, tracked %v", sent, read, tracked)
	}
	entries, _ := os.ReadDir(d.vmDir("vm1"))
	for _, e := range entries {
		t.Errorf("left in the capture directory: %s", e.Name())
	}
}

func TestShutdownOfAGuestThatIgnoresACPIFailsWithVMWillNotStop(t *testing.T) {
	_, d := driverVM(t, false) // runs, with no OS to answer system_powerdown
	ctx := context.Background()
	if ps, err := d.PowerState(ctx, "vm1"); err != nil || ps != agentproto.PowerRunning {
		t.Fatalf("PowerState %q, %v", ps, err)
	}
	start := time.Now()
	err := d.Shutdown(ctx, "vm1", 1500*time.Millisecond)
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeVMWillNotStop || !strings.Contains(te.Message, "did not stop") {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(start); took < 1500*time.Millisecond || took > 10*time.Second {
		t.Fatalf("Shutdown took %v", took)
	}
	if ps, err := d.PowerState(ctx, "vm1"); err != nil || ps != agentproto.PowerRunning {
		t.Fatalf("after the failed shutdown: %q, %v", ps, err)
	}
}

func TestShutdownOfAVMThatIsOffSucceedsAndAVMWhoseQEMUExitedIsNotListed(t *testing.T) {
	vm, d := driverVM(t, true) // prelaunch: its guest never ran
	ctx := context.Background()
	if err := d.Shutdown(ctx, "vm1", time.Second); err != nil {
		t.Fatalf("Shutdown of a VM that is off: %v", err)
	}
	vm.Kill() // the socket stays, nobody answers it
	if ps, err := d.PowerState(ctx, "vm1"); err == nil || ps != agentproto.PowerUnknown {
		t.Fatalf("PowerState of an exited QEMU: %q, %v", ps, err)
	}
	vms, err := d.Inventory(ctx)
	if err != nil || len(vms) != 0 {
		t.Fatalf("inventory %+v, %v", vms, err)
	}
	if _, err := d.Check(ctx); err == nil || !strings.Contains(err.Error(), "1 of 1 QMP socket(s)") {
		t.Fatalf("Check: %v", err)
	}
}
