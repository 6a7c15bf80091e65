package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// noOS are the machine arguments of a VM with no OS to boot (its BIOS
// finds nothing and waits): enough to see what QEMU was given.
var noOS = []string{"-machine", "pc", "-accel", "tcg", "-m", "64"}

// pciNetworkDevices asks the VM's running QEMU (through the driver's own connection)
// how many PCI network controllers (class 0x02xx) its guest has.
func pciNetworkDevices(t *testing.T, d *Driver, id string) int {
	t.Helper()
	ctx := context.Background()
	m, err := d.monitor(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var buses []struct {
		Devices []struct {
			ClassInfo struct {
				Class int `json:"class"`
			} `json:"class_info"`
		} `json:"devices"`
	}
	if err := m.Execute(ctx, "query-pci", nil, &buses); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range buses {
		for _, dev := range b.Devices {
			if dev.ClassInfo.Class>>8 == 0x02 {
				n++
			}
		}
	}
	return n
}

// Start runs a made VM in a QEMU of its own, which the inventory lists
// Running with its disks; a test failover's VM has no network device,
// whatever its start asks; Remove stops it and deletes it.
func TestStartLaunchesAMadeVMListedRunningAndATestVMHasNoNetwork(t *testing.T) {
	qemutest.Require(t, qemutest.Binary)
	d := recoveryDriver(t, noOS...)
	ctx := context.Background()
	image := make([]byte, 4<<20)
	rand.Read(image[:1<<20])
	if _, err := d.Materialize(ctx, recoverySpec("p1", image)); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, "vm-recovered", driver.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(d.VMDir, "web-test")
	pid := qemuPID(dir)
	if pid == 0 {
		t.Fatal("no QEMU runs the VM")
	}
	vms, err := d.Inventory(ctx)
	if err != nil || len(vms) != 1 || vms[0].ID != "vm-recovered" || vms[0].Name != "web-test" || vms[0].PowerState != agentproto.PowerRunning ||
		len(vms[0].Disks) != 1 || vms[0].Disks[0].Path != filepath.Join(dir, "disk0.img") || vms[0].Disks[0].SizeBytes != 4<<20 || vms[0].Disks[0].Format != "raw" {
		t.Fatalf("inventory of the started VM: %+v, %v", vms, err)
	}
	if n := pciNetworkDevices(t, d, "vm-recovered"); n != 1 {
		t.Fatalf("a failover's VM has %d network devices, want 1", n)
	}
	// Started twice: the same QEMU.
	if err := d.Start(ctx, "vm-recovered", driver.StartOptions{}); err != nil || qemuPID(dir) != pid {
		t.Fatalf("a second Start: %v, pid %d then %d", err, pid, qemuPID(dir))
	}
	// Running: no write back into it.
	if _, err := d.WriteBack(ctx, "vm-recovered", recoverySpec("p2", image).Disks); code(err) != agentproto.CodeVMRunning {
		t.Fatalf("WriteBack into a running VM: %v", err)
	}
	// Its guest ignores ACPI (no OS): Remove quits its QEMU all the same.
	if err := d.Remove(ctx, "vm-recovered", 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatal("the removed VM's QEMU still runs")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the removed VM's directory: %v", err)
	}
	if _, err := os.Lstat(d.socket("vm-recovered")); !os.IsNotExist(err) {
		t.Fatalf("the removed VM's socket: %v", err)
	}
	if err := d.Remove(ctx, "vm-recovered", time.Second); err != nil {
		t.Fatalf("Remove again: %v", err)
	}

	// A test failover's VM: isolated, even when started as if it were not.
	test := recoverySpec("p1", image)
	test.Test = true
	if _, err := d.Materialize(ctx, test); err != nil {
		t.Fatal(err)
	}
	for _, isolated := range []bool{true, false} {
		if err := d.Start(ctx, "vm-recovered", driver.StartOptions{Isolated: isolated}); err != nil {
			t.Fatal(err)
		}
		if n := pciNetworkDevices(t, d, "vm-recovered"); n != 0 {
			t.Fatalf("a test VM started with Isolated %v has %d network devices", isolated, n)
		}
		if err := d.stopQEMU(ctx, "vm-recovered", dir, 0, true); err != nil {
			t.Fatal(err)
		}
	}
}

// A made VM whose QEMU died (killed, the host restarted) is listed Off
// and starts again, in a new QEMU, on the same disks.
func TestAMadeVMWhoseQEMUDiedIsListedOffAndStartsAgain(t *testing.T) {
	qemutest.Require(t, qemutest.Binary)
	d := recoveryDriver(t, noOS...)
	ctx := context.Background()
	image := bytes.Repeat([]byte{5}, 2<<20)
	if _, err := d.Materialize(ctx, recoverySpec("p1", image)); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, "vm-recovered", driver.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(d.VMDir, "web-test")
	pid := qemuPID(dir)
	syscall.Kill(pid, syscall.SIGKILL)
	if !waitGone(ctx, dir, 10*time.Second) {
		t.Fatal("the killed QEMU is still there")
	}
	vms, err := d.Inventory(ctx)
	if err != nil || len(vms) != 1 || vms[0].PowerState != agentproto.PowerOff || len(vms[0].Disks) != 1 {
		t.Fatalf("inventory after the kill: %+v, %v", vms, err)
	}
	if ps, err := d.PowerState(ctx, "vm-recovered"); err != nil || ps != agentproto.PowerOff {
		t.Fatalf("PowerState after the kill: %q, %v", ps, err)
	}
	if err := d.Start(ctx, "vm-recovered", driver.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	if p := qemuPID(dir); p == 0 || p == pid {
		t.Fatalf("no new QEMU: pid %d, was %d", p, pid)
	}
	if ps, err := d.PowerState(ctx, "vm-recovered"); err != nil || ps != agentproto.PowerRunning {
		t.Fatalf("PowerState after the restart: %q, %v", ps, err)
	}
}

// A QEMU that cannot start the VM fails with CodeVMStartFailed, quoting
// what QEMU said.
func TestAQEMUThatDoesNotStartFailsWithVMStartFailedQuotingIt(t *testing.T) {
	qemutest.Require(t, qemutest.Binary)
	d := recoveryDriver(t, "-machine", "no-such-machine")
	ctx := context.Background()
	if _, err := d.Materialize(ctx, recoverySpec("p1", make([]byte, 1<<20))); err != nil {
		t.Fatal(err)
	}
	err := d.Start(ctx, "vm-recovered", driver.StartOptions{})
	if code(err) != agentproto.CodeVMStartFailed || !strings.Contains(err.Error(), "unsupported machine type") {
		t.Fatalf("Start with a bad machine: %v", err)
	}
	if ps, err := d.PowerState(ctx, "vm-recovered"); err != nil || ps != agentproto.PowerOff {
		t.Fatalf("PowerState after a failed start: %q, %v", ps, err)
	}
}
