package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/guesttest"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// IdleWorkload is a recovered guest's workload: it writes nothing, so
// its disk stays the point, and it stops (then powers off) on an ACPI
// power-down.
const idleWorkload = "while [ ! -e /stop ]; do sleep 1; done"

// guestMachine are machine arguments that boot the real guest (kernel and
// initramfs given to QEMU) with the idle workload, under TCG.
func guestMachine(t *testing.T) []string {
	t.Helper()
	in := guesttest.Require(t)
	initrd, err := in.Initramfs(idleWorkload)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := os.WriteFile(path, initrd, 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"-machine", "pc", "-accel", "tcg", "-m", "256", "-no-reboot",
		"-kernel", in.Kernel, "-initrd", path, "-append", "console=ttyS0 quiet panic=-1"}
}

// waitSerial waits until the VM's serial log holds line n times.
func waitSerial(t *testing.T, dir, line string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, serialFile))
		if strings.Count(string(b), line) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q (x%d) on the guest's console in %v:\n%s", line, n, timeout, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A VM materialized from a disk of the guest's records boots on the
// recovery host; shut down, its QEMU stays (-no-shutdown) and it is listed
// Off; started again it boots again; its disk is still the point.
func TestAMaterializedGuestBootsAndAfterAShutdownStartsAgain(t *testing.T) {
	d := recoveryDriver(t, guestMachine(t)...)
	ctx := context.Background()
	disk := make([]byte, 16<<20)
	for n := 1; n <= 100; n++ {
		copy(disk[n*guesttest.RecordSize:], guesttest.Record(n))
	}
	if _, err := d.Materialize(ctx, recoverySpec("p1", disk)); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(d.VMDir, "web-test")
	start := time.Now()
	if err := d.Start(ctx, "vm-recovered", driver.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, dir, guesttest.ReadyLine, 1, 2*time.Minute)
	t.Logf("the recovered guest booted in %v", time.Since(start))
	if err := d.Shutdown(ctx, "vm-recovered", time.Minute); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, dir, guesttest.DoneLine, 1, time.Minute)
	vms, err := d.Inventory(ctx)
	if err != nil || len(vms) != 1 || vms[0].PowerState != agentproto.PowerOff {
		t.Fatalf("inventory after the guest powered off: %+v, %v", vms, err)
	}
	if qemuPID(dir) == 0 {
		t.Fatal("QEMU exited when its guest powered off (-no-shutdown keeps it)")
	}
	if err := d.Start(ctx, "vm-recovered", driver.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, dir, guesttest.ReadyLine, 2, 2*time.Minute)
	if ps, err := d.PowerState(ctx, "vm-recovered"); err != nil || ps != agentproto.PowerRunning {
		t.Fatalf("PowerState after the second boot: %q, %v", ps, err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "disk0.img"))
	if err != nil || !bytes.Equal(got, disk) {
		t.Fatalf("the guest's disk is not the point (%v)", err)
	}
	if _, err := guesttest.CheckPrefix(guesttest.Records(got), 100); err != nil {
		t.Fatal(fmt.Errorf("records: %w", err))
	}
	// Another point (the operator changes the recovery point): the running
	// VM is shut down once its successor is written, and replaced.
	other := bytes.Clone(disk)
	copy(other[101*guesttest.RecordSize:], guesttest.Record(101))
	pid := qemuPID(dir)
	replace := recoverySpec("p2", other)
	replace.Replace = true
	made, err := d.Materialize(ctx, replace)
	if err != nil || made.Existing || made.VM.PowerState != agentproto.PowerOff {
		t.Fatalf("Replace of the running VM: %+v, %v", made, err)
	}
	if alive(pid) {
		t.Fatalf("the replaced VM's QEMU (pid %d) still runs", pid)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "disk0.img")); !bytes.Equal(got, other) {
		t.Fatal("the replaced VM's disk is not the new point")
	}
	if err := d.Remove(ctx, "vm-recovered", time.Minute); err != nil {
		t.Fatal(err)
	}
}

// A protected (foreign) VM shut down by the driver keeps its QEMU, even
// one started without -no-shutdown, listed Off with its disks; Start
// (the vault starting the source again after a failover that did not go
// ahead) boots its guest again in that QEMU.
func TestAForeignGuestShutDownByTheDriverStaysListedOffAndStartsAgain(t *testing.T) {
	qmpDir, err := os.MkdirTemp("", "lbfq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(qmpDir) })
	g := guesttest.Start(t, guesttest.Options{Count: 1000000,
		QEMUArgs: []string{"-qmp", "unix:" + filepath.Join(qmpDir, "vm1.qmp") + ",server=on,wait=off"}})
	d := &Driver{QMPDir: qmpDir, WorkDir: t.TempDir(), StateDir: t.TempDir()}
	t.Cleanup(func() { d.Close() })
	ctx := context.Background()
	if err := g.WaitAck(3, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := d.Shutdown(ctx, "vm1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := g.WaitLine(guesttest.DoneLine, time.Minute); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.Exited():
		t.Fatal("QEMU exited when its guest powered off")
	case <-time.After(time.Second):
	}
	vms, err := d.Inventory(ctx)
	if err != nil || len(vms) != 1 || vms[0].PowerState != agentproto.PowerOff || len(vms[0].Disks) != 1 {
		t.Fatalf("inventory after the shutdown: %+v, %v", vms, err)
	}
	acked := g.LastAck()
	if err := d.Start(ctx, "vm1", driver.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	if ps, err := d.PowerState(ctx, "vm1"); err != nil || ps != agentproto.PowerRunning {
		t.Fatalf("PowerState after Start: %q, %v", ps, err)
	}
	// The standard workload starts again at record 1: its acknowledgements
	// reach past those of before only once the guest booted again.
	if err := g.WaitAck(acked+1, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(g.Serial(), guesttest.ReadyLine); n != 2 {
		t.Fatalf("the guest booted %d times, want 2", n)
	}
}

// alive says whether a process runs (exited and not reaped is not).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}
