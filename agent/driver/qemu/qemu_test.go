package qemu

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
)

// A VM for the tests: a PC machine that never runs its guest (-S, TCG),
// whose disks are virtio-blk devices over blockdev nodes. qemu-io writes
// through a device's own block backend (-d), as the guest does: through
// whatever filters a capture put above the node.
type testVM struct {
	*qemutest.VM
	m *qmp.Monitor
}

func startVM(t *testing.T) *testVM {
	t.Helper()
	vm := &testVM{VM: qemutest.Start(t, "-machine", "pc", "-accel", "tcg", "-S")}
	vm.dial(t)
	return vm
}

func (vm *testVM) dial(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := qmp.Dial(ctx, vm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	vm.m = m
}

func (vm *testVM) exec(t *testing.T, cmd string, args any) {
	t.Helper()
	if err := vm.m.Execute(context.Background(), cmd, args, nil); err != nil {
		t.Fatal(err)
	}
}

// attach opens an image as node and plugs it into a virtio-blk device.
func (vm *testVM) attach(t *testing.T, node, path, format string) {
	t.Helper()
	vm.exec(t, "blockdev-add", map[string]any{"node-name": node, "driver": format,
		"file": map[string]any{"driver": "file", "filename": path}})
	vm.exec(t, "device_add", map[string]any{"driver": "virtio-blk-pci", "drive": node,
		"id": "dev-" + node})
}

func (vm *testVM) addDisk(t *testing.T, node, format string, size int64) string {
	t.Helper()
	path := vm.Image(t, node+"."+format, format, size)
	vm.attach(t, node, path, format)
	return path
}

// write writes a pattern of 0xab through the node's device with qemu-io
// (HMP), as the guest would.
func (vm *testVM) write(t *testing.T, node string, off, length int64) {
	t.Helper()
	vm.writeP(t, node, 0xab, off, length)
}

func (vm *testVM) writeP(t *testing.T, node string, pattern byte, off, length int64) {
	t.Helper()
	var out string
	err := vm.m.Execute(context.Background(), "human-monitor-command", map[string]any{
		"command-line": fmt.Sprintf("qemu-io -d /machine/peripheral/dev-%s/virtio-backend \"write -P %#x %d %d\"", node, pattern, off, length)}, &out)
	if err != nil {
		t.Fatal(err)
	}
	// HMP reports failures (a permission conflict, no such node) in its
	// answer, not as QMP errors. On 7.2 qemu-io's own report ("wrote
	// N/N bytes") goes to QEMU's stdout, so success is an empty answer;
	// the tests' extents check that the writes landed.
	if out != "" {
		t.Fatalf("qemu-io write: %q", out)
	}
}

func (vm *testVM) disks(t *testing.T) []Disk {
	t.Helper()
	d, err := Disks(context.Background(), vm.m)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// capture freezes the bitmaps and reads their extents.
func (vm *testVM) capture(t *testing.T, disks []Disk) (*Frozen, [][]blocks.Extent) {
	t.Helper()
	f, err := Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := f.Extents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return f, ext
}

func ex(pairs ...int64) []blocks.Extent {
	out := []blocks.Extent{}
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, blocks.Extent{Offset: pairs[i], Length: pairs[i+1]})
	}
	return out
}

func same(t *testing.T, what string, got, want []blocks.Extent) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: extents %v, want %v", what, got, want)
	}
}

const KiB, MiB = 1 << 10, 1 << 20

func TestInventoryListsTheDisksTheirFormatsSizesAndThePowerState(t *testing.T) {
	vm := startVM(t)
	q := vm.addDisk(t, "d0", "qcow2", 16*MiB)
	r := vm.addDisk(t, "d1", "raw", 8*MiB)
	got := vm.disks(t)
	want := []Disk{
		{Device: "/machine/peripheral/dev-d0", NodeName: "d0", File: q, Format: "qcow2", Size: 16 * MiB},
		{Device: "/machine/peripheral/dev-d1", NodeName: "d1", File: r, Format: "raw", Size: 8 * MiB},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("disks\n%+v\nwant\n%+v", got, want)
	}
	st, err := Status(context.Background(), vm.m)
	if err != nil || st.Status != "prelaunch" || st.Running {
		t.Fatalf("status %+v %v", st, err)
	}
	vm.exec(t, "cont", nil)
	if st, _ := Status(context.Background(), vm.m); st.Status != "running" || !st.Running {
		t.Fatalf("after cont: %+v", st)
	}
}

func TestACaptureReportsExactlyTheWrittenRangesInWholeGranules(t *testing.T) {
	vm := startVM(t)
	vm.addDisk(t, "d0", "qcow2", 16*MiB)
	vm.addDisk(t, "d1", "raw", 8*MiB)
	disks := vm.disks(t)
	startTracking(t, vm, disks)
	vm.write(t, "d0", 0, 64*KiB)            // one granule
	vm.write(t, "d0", 1*MiB+4*KiB, 100*KiB) // across granules 16..17
	vm.write(t, "d1", 8*MiB-4*KiB, 4*KiB)   // the last granule
	f, ext := vm.capture(t, disks)
	same(t, "d0", ext[0], ex(0, 64*KiB, 1*MiB, 128*KiB))
	same(t, "d1", ext[1], ex(8*MiB-64*KiB, 64*KiB))
	if err := f.Release(context.Background(), true); err != nil {
		t.Fatal(err)
	}

	// Nothing written: known, and empty (not nil, which would be unknown).
	f, ext = vm.capture(t, disks)
	same(t, "d0 idle", ext[0], ex())
	same(t, "d1 idle", ext[1], ex())

	// Writes made while a capture is held land in the next one.
	vm.write(t, "d0", 5*MiB, 4*KiB)
	again, err := f.Extents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	same(t, "the held capture, read again", again[0], ex())
	if err := f.Release(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	f, ext = vm.capture(t, disks)
	same(t, "d0 next", ext[0], ex(5*MiB, 64*KiB))
	same(t, "d1 next", ext[1], ex())
	f.Release(context.Background(), true)
	assertNoLeftovers(t, vm)
}

func TestAFailedCapturesExtentsComeBackInTheNextOne(t *testing.T) {
	vm := startVM(t)
	vm.addDisk(t, "d0", "qcow2", 16*MiB)
	disks := vm.disks(t)
	startTracking(t, vm, disks)
	vm.write(t, "d0", 2*MiB, 64*KiB)
	f, ext := vm.capture(t, disks)
	same(t, "first", ext[0], ex(2*MiB, 64*KiB))
	since, token := f.Since(0), f.Token(0)
	if since == "" || token == "" || since == token || f.At().IsZero() {
		t.Fatalf("since %q, token %q, at %v", since, token, f.At())
	}
	vm.write(t, "d0", 7*MiB, 64*KiB) // during the failed capture
	if err := f.Release(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if err := f.Release(context.Background(), false); err != ErrReleased {
		t.Fatalf("second release: %v", err)
	}
	f, ext = vm.capture(t, disks)
	same(t, "after the failure", ext[0], ex(2*MiB, 64*KiB, 7*MiB, 64*KiB))
	// A failed capture's token is never a Since: the changes still count
	// from the last acknowledged one.
	if f.Since(0) == token {
		t.Fatalf("the failed capture's token %q came back as Since", token)
	}
	acked := f.Token(0)
	f.Release(context.Background(), true)
	f, ext = vm.capture(t, disks)
	if f.Since(0) != acked {
		t.Fatalf("since %q, want the acknowledged token %q", f.Since(0), acked)
	}
	same(t, "after the ack", ext[0], ex())
	f.Release(context.Background(), true)
	assertNoLeftovers(t, vm)
}

func TestAFirstCaptureOfAnUntrackedDiskIsUnknownAndTrackingStartsWithIt(t *testing.T) {
	vm := startVM(t)
	vm.addDisk(t, "d0", "qcow2", 4*MiB)
	disks := vm.disks(t)
	vm.write(t, "d0", 0, 4*KiB)
	f, ext := vm.capture(t, disks)
	if f.Known(0) || ext[0] != nil {
		t.Fatalf("untracked disk: known %v, extents %v", f.Known(0), ext[0])
	}
	vm.write(t, "d0", 1*MiB, 4*KiB)
	f.Release(context.Background(), true)
	_, ext = vm.capture(t, disks)
	same(t, "the next", ext[0], ex(1*MiB, 64*KiB))
}

func TestAnAgentThatDiedMidCaptureLosesNoWrite(t *testing.T) {
	vm := startVM(t)
	vm.addDisk(t, "d0", "qcow2", 16*MiB)
	disks := vm.disks(t)
	startTracking(t, vm, disks)
	vm.write(t, "d0", 3*MiB, 64*KiB)
	dead, err := Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir})
	if err != nil {
		t.Fatal(err)
	}
	acked := dead.Since(0)
	vm.write(t, "d0", 9*MiB, 64*KiB)
	// The agent is gone: a new one connects, and a capture is refused
	// until Recover has put the frozen bitmap back.
	vm.m.Close()
	vm.dial(t)
	if _, err := Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir}); err == nil || !strings.Contains(err.Error(), "another capture") {
		t.Fatalf("Freeze over a leftover: %v", err)
	}
	known, err := Recover(context.Background(), vm.m, disks, vm.Dir)
	if err != nil || !known[0] {
		t.Fatalf("Recover: %v %v", known, err)
	}
	f, ext := vm.capture(t, disks)
	same(t, "after the restart", ext[0], ex(3*MiB, 64*KiB, 9*MiB, 64*KiB))
	if f.Since(0) != acked {
		t.Fatalf("since %q after Recover, want the acknowledged %q", f.Since(0), acked)
	}
}

func TestQcow2TrackingSurvivesARestartOfQEMUAndRawBecomesUnknown(t *testing.T) {
	vm := startVM(t)
	q := vm.addDisk(t, "d0", "qcow2", 16*MiB)
	r := vm.addDisk(t, "d1", "raw", 8*MiB)
	disks := vm.disks(t)
	startTracking(t, vm, disks)
	vm.write(t, "d0", 4*MiB, 64*KiB)
	vm.write(t, "d1", 0, 64*KiB)
	// A capture was held (frozen) when QEMU quit: the disabled bitmap is
	// saved too, and its writes must come back.
	if _, err := Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir}); err != nil {
		t.Fatal(err)
	}
	vm.write(t, "d0", 6*MiB, 64*KiB)
	vm.exec(t, "quit", nil)
	vm.Wait(t, 10*time.Second)

	vm.Restart(t)
	vm.dial(t)
	vm.attach(t, "d0", q, "qcow2")
	vm.attach(t, "d1", r, "raw")
	known, err := Recover(context.Background(), vm.m, disks, vm.Dir)
	if err != nil || !reflect.DeepEqual(known, []bool{true, false}) {
		t.Fatalf("Recover after the restart: %v %v", known, err)
	}
	f, ext := vm.capture(t, disks)
	same(t, "qcow2", ext[0], ex(4*MiB, 64*KiB, 6*MiB, 64*KiB))
	if ext[1] != nil {
		t.Fatalf("raw after a restart: %v, want unknown", ext[1])
	}
	f.Release(context.Background(), true)
}

func TestAQcow2BitmapQEMUCouldNotSaveIsUnknown(t *testing.T) {
	vm := startVM(t)
	q := vm.addDisk(t, "d0", "qcow2", 16*MiB)
	disks := vm.disks(t)
	startTracking(t, vm, disks)
	// The bitmap is saved once (QEMU quits), then opened again, which
	// marks it in use in the image; QEMU is killed, so it stays so, and
	// QEMU reports it inconsistent. (A bitmap never saved is just gone.)
	vm.exec(t, "quit", nil)
	vm.Wait(t, 10*time.Second)
	vm.Restart(t)
	vm.dial(t)
	vm.attach(t, "d0", q, "qcow2")
	if known, err := Recover(context.Background(), vm.m, disks, vm.Dir); err != nil || !known[0] {
		t.Fatalf("Recover after quit: %v %v", known, err)
	}
	vm.write(t, "d0", 4*MiB, 64*KiB)
	vm.Kill()
	vm.Restart(t)
	vm.dial(t)
	vm.attach(t, "d0", q, "qcow2")
	all, err := bitmaps(context.Background(), vm.m)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, broken := ours(all["d0"]); len(broken) != 1 {
		t.Fatalf("bitmaps after kill -9: %+v, want one inconsistent", all["d0"])
	}
	known, err := Recover(context.Background(), vm.m, disks, vm.Dir)
	if err != nil || known[0] {
		t.Fatalf("Recover after kill -9: %v %v", known, err)
	}
	vm.write(t, "d0", 8*MiB, 64*KiB)
	f, ext := vm.capture(t, disks)
	if ext[0] != nil {
		t.Fatalf("after kill -9: %v, want unknown", ext[0])
	}
	f.Release(context.Background(), true)
	vm.write(t, "d0", 9*MiB, 64*KiB)
	f, ext = vm.capture(t, disks)
	same(t, "tracking restarted", ext[0], ex(9*MiB, 64*KiB))
	f.Release(context.Background(), true)
}

// startTracking makes a first, unknown capture and acknowledges it, as a
// first cycle does: tracking records from then on.
func startTracking(t *testing.T, vm *testVM, disks []Disk) {
	t.Helper()
	f, ext := vm.capture(t, disks)
	for i := range disks {
		if f.Known(i) || ext[i] != nil {
			t.Fatalf("first capture of %s: known %v, extents %v", disks[i].NodeName, f.Known(i), ext[i])
		}
	}
	if err := f.Release(context.Background(), true); err != nil {
		t.Fatal(err)
	}
}

// assertNoLeftovers checks that no export and only live bitmaps remain.
func assertNoLeftovers(t *testing.T, vm *testVM) {
	t.Helper()
	var exports []map[string]any
	if err := vm.m.Execute(context.Background(), "query-block-exports", nil, &exports); err != nil {
		t.Fatal(err)
	}
	if len(exports) != 0 {
		t.Fatalf("exports left: %v", exports)
	}
	all, err := bitmaps(context.Background(), vm.m)
	if err != nil {
		t.Fatal(err)
	}
	for node, list := range all {
		live, frozen, broken := ours(list)
		if len(frozen)+len(broken) > 0 || (live == nil && len(list) > 0) {
			t.Fatalf("node %s bitmaps %+v", node, list)
		}
	}
}
