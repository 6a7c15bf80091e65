package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/guesttest"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// instantPoint is a 1 GiB sparse disk image of the guest's records, with
// a marker in its last block, read slowly.
func instantPoint(t *testing.T) (path string, spec driver.MaterializeSpec) {
	t.Helper()
	const size = 1 << 30
	path = filepath.Join(t.TempDir(), "point.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 64; n++ {
		f.WriteAt(guesttest.Record(n), int64(n)*guesttest.RecordSize)
	}
	f.WriteAt([]byte("the last block of the point"), size-4096)
	spec = driver.MaterializeSpec{ID: "vm-recovered", Name: "web", SourceVMID: "vm_1", PointID: "p1",
		Disks: []driver.MaterializeDisk{{Name: "disk0", SizeBytes: size, Data: hyLatent{f, 3 * time.Millisecond}}}}
	return path, spec
}

// sameImage compares a VM's qcow2 disk with a raw image (qemu-img
// compare, sharing the image with its running QEMU).
func sameImage(t *testing.T, qcow2, raw string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", qcow2, raw).CombinedOutput()
	if err != nil {
		t.Fatalf("the VM's disk is not the point: qemu-img compare: %v: %s", err, out)
	}
}

func backingOf(t *testing.T, qcow2 string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-U", qcow2).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "backing file:") {
			return line
		}
	}
	return ""
}

// Instant failover on the driver: the guest boots from the point while
// its disk is still being copied, and once MaterializeInstant returns the
// VM's own disk, with no backing, is the point byte for byte; a second
// call finds it made.
func TestAnInstantlyMaterializedGuestBootsBeforeItsDiskIsCopiedAndEndsWithItsOwnDisk(t *testing.T) {
	d := recoveryDriver(t, guestMachine(t)...)
	point, spec := instantPoint(t)
	ctx := context.Background()
	start := time.Now()
	var startedAt time.Duration
	type result struct {
		m   driver.Materialized
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := d.MaterializeInstant(ctx, spec, driver.StartOptions{}, func(agentproto.VM) { startedAt = time.Since(start) })
		done <- result{m, err}
	}()
	dir := filepath.Join(d.VMDir, "web")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, serialFile))
		if strings.Contains(string(b), guesttest.ReadyLine) {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("MaterializeInstant returned (%v) before the guest booted: the copy came first", r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest did not boot:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	booted := time.Since(start)
	select {
	case <-done:
		t.Fatalf("the copy was over when the guest booted (%v): nothing shows the guest ran before its disk was here", booted)
	default:
	}
	r := <-done
	hydrated := time.Since(start)
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("started %v, guest booted %v, disk copied %v", startedAt, booted, hydrated)
	disk := filepath.Join(dir, "disk0.qcow2")
	if b := backingOf(t, disk); b != "" {
		t.Fatalf("the VM still depends on the point: %s", b)
	}
	sameImage(t, disk, point)
	if r.m.VM.PowerState != agentproto.PowerRunning || len(r.m.VM.Disks) != 1 || r.m.VM.Disks[0].Path != disk {
		t.Fatalf("made %+v", r.m.VM)
	}
	if _, err := os.Stat(d.nbdSocket("vm-recovered", "p1")); err == nil {
		t.Fatal("the point is still served")
	}
	again, err := d.MaterializeInstant(ctx, spec, driver.StartOptions{}, nil)
	if err != nil || !again.Existing {
		t.Fatalf("again: %+v, %v; want the VM made before", again, err)
	}
}

// A copy cut short by the agent stopping leaves the VM running; the task
// run again by the restarted agent serves the point again and finishes
// the copy, and the disk is the point.
func TestAnInstantMaterializeCutShortGoesOnWhenRunAgain(t *testing.T) {
	d := recoveryDriver(t, guestMachine(t)...)
	point, spec := instantPoint(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := startInstant(t, ctx, d, spec)
	time.Sleep(2 * time.Second)
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("a cancelled copy returned no error")
	}
	dir := filepath.Join(d.VMDir, "web")
	if b := backingOf(t, filepath.Join(dir, "disk0.qcow2")); b == "" {
		t.Fatal("the copy was over before it was cut: make the point slower")
	}
	if ps, err := d.PowerState(context.Background(), "vm-recovered"); err != nil || ps != agentproto.PowerRunning {
		t.Fatalf("after the cut the VM is %q, %v; want it running", ps, err)
	}
	// The task runs again in a restarted agent: a new driver over the
	// same directories finds the copy and goes on with it.
	d.Close()
	again := &Driver{QMPDir: d.QMPDir, WorkDir: d.WorkDir, StateDir: d.StateDir, VMDir: d.VMDir, MachineArgs: d.MachineArgs}
	defer again.Close()
	if err := again.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, err := again.MaterializeInstant(context.Background(), spec, driver.StartOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Existing {
		t.Fatal("a VM still copying was reported made before")
	}
	disk := filepath.Join(dir, "disk0.qcow2")
	if b := backingOf(t, disk); b != "" {
		t.Fatalf("the VM still depends on the point: %s", b)
	}
	sameImage(t, disk, point)
}

// A run the vault cancelled once the VM ran stops and deletes it: the
// failover did not happen, and its VM must not run beside the source.
func TestAnInstantMaterializeTheVaultCancelsDeletesTheVMItStarted(t *testing.T) {
	d := recoveryDriver(t, guestMachine(t)...)
	_, spec := instantPoint(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	errc := startInstant(t, ctx, d, spec)
	pid := qemuPID(filepath.Join(d.VMDir, "web"))
	cancel(driver.ErrCancelled)
	err := <-errc
	if err == nil || !strings.Contains(err.Error(), "stopped and deleted") {
		t.Fatalf("a cancelled instant materialize: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.VMDir, "web")); !os.IsNotExist(err) {
		t.Fatalf("the VM's directory is still there: %v", err)
	}
	if pid == 0 || alive(pid) {
		t.Fatalf("its QEMU (pid %d) still runs", pid)
	}
	if vms, err := d.Inventory(context.Background()); err != nil || len(vms) != 0 {
		t.Fatalf("inventory %+v, %v; want none", vms, err)
	}
}

// startInstant runs MaterializeInstant in the background until ctx ends
// and returns, once the VM runs, where its error will come.
func startInstant(t *testing.T, ctx context.Context, d *Driver, spec driver.MaterializeSpec) <-chan error {
	t.Helper()
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := d.MaterializeInstant(ctx, spec, driver.StartOptions{}, func(agentproto.VM) { close(started) })
		errc <- err
	}()
	select {
	case <-started:
	case err := <-errc:
		t.Fatalf("MaterializeInstant: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the VM did not start")
	}
	return errc
}
