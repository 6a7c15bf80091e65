package qemu

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// image is what a disk should read as: runs of a byte, zeros elsewhere.
func image(size int64, runs ...[3]int64) []byte {
	b := make([]byte, size)
	for _, r := range runs {
		for i := r[1]; i < r[1]+r[2]; i++ {
			b[i] = byte(r[0])
		}
	}
	return b
}

func readAll(t *testing.T, f *Frozen, i int) []byte {
	t.Helper()
	r, size, err := f.Open(context.Background(), i)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.NewSectionReader(r, 0, size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func equalImage(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: byte %d is %#x, want %#x", what, i, got[i], want[i])
		}
	}
	t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
}

func TestAFleecedCaptureReadsEveryDiskAsAtTheFreezeWhileTheGuestWrites(t *testing.T) {
	vm := startVM(t)
	vm.addDisk(t, "d0", "qcow2", 4*MiB)
	vm.addDisk(t, "d1", "raw", 2*MiB)
	disks := vm.disks(t)
	startTracking(t, vm, disks)
	vm.writeP(t, "d0", 0x11, 0, 2*MiB)
	vm.writeP(t, "d1", 0x22, 0, 2*MiB)

	f, err := Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir, Fleece: true})
	if err != nil {
		t.Fatal(err)
	}
	// The guest writes on, over what was frozen, before and during the
	// read.
	vm.writeP(t, "d0", 0x99, 0, 1*MiB)
	vm.writeP(t, "d1", 0x99, 512*KiB, 64*KiB)
	want0 := image(4*MiB, [3]int64{0x11, 0, 2 * MiB})
	want1 := image(2*MiB, [3]int64{0x22, 0, 2 * MiB})
	r0, _, err := f.Open(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	half := make([]byte, 2*MiB)
	if _, err := r0.ReadAt(half, 0); err != nil {
		t.Fatal(err)
	}
	vm.writeP(t, "d0", 0x99, 3*MiB, 512*KiB) // mid-read, in the half not read yet
	rest := make([]byte, 2*MiB)
	if _, err := r0.ReadAt(rest, 2*MiB); err != nil {
		t.Fatal(err)
	}
	equalImage(t, "d0 at the freeze", append(half, rest...), want0)
	equalImage(t, "d1 at the freeze", readAll(t, f, 1), want1)
	ext, err := f.Extents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	same(t, "d0 changed", ext[0], ex(0, 2*MiB))
	same(t, "d1 changed", ext[1], ex(0, 2*MiB))
	if err := f.Release(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, vm)
	assertNoFleece(t, vm)

	// The next capture has the guest's writes, and only them changed.
	f, err = Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir, Fleece: true})
	if err != nil {
		t.Fatal(err)
	}
	equalImage(t, "d0 next", readAll(t, f, 0), image(4*MiB, [3]int64{0x11, 0, 2 * MiB}, [3]int64{0x99, 0, 1 * MiB}, [3]int64{0x99, 3 * MiB, 512 * KiB}))
	equalImage(t, "d1 next", readAll(t, f, 1), image(2*MiB, [3]int64{0x22, 0, 2 * MiB}, [3]int64{0x99, 512 * KiB, 64 * KiB}))
	ext, err = f.Extents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	same(t, "d0 next changed", ext[0], ex(0, 1*MiB, 3*MiB, 512*KiB))
	same(t, "d1 next changed", ext[1], ex(512*KiB, 64*KiB))
	// A failed cycle: everything goes, and the writes come back.
	if err := f.Release(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, vm)
	assertNoFleece(t, vm)
	f, ext = vm.capture(t, disks)
	same(t, "d0 after the failure", ext[0], ex(0, 1*MiB, 3*MiB, 512*KiB))
	f.Release(context.Background(), true)
}

// assertNoFleece checks that no fleecing node, job or file is left.
func assertNoFleece(t *testing.T, vm *testVM) {
	t.Helper()
	var nodes []struct {
		NodeName string `json:"node-name"`
	}
	if err := vm.m.Execute(context.Background(), "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if strings.HasPrefix(n.NodeName, FleecePrefix) {
			t.Fatalf("node %s left", n.NodeName)
		}
	}
	var jobs []jobInfo
	if err := vm.m.Execute(context.Background(), "query-jobs", nil, &jobs); err != nil {
		t.Fatal(err)
	}
	if len(jobs) > 0 {
		t.Fatalf("jobs left: %+v", jobs)
	}
	left, _ := filepath.Glob(filepath.Join(vm.Dir, OverlayPrefix+"*"))
	if _, err := os.Stat(filepath.Join(vm.Dir, SocketName)); err == nil {
		left = append(left, SocketName)
	}
	if len(left) > 0 {
		t.Fatalf("files left: %v", left)
	}
}

func TestWhatAnAgentKilledMidReadLeftIsRemovedAndNoWriteIsLost(t *testing.T) {
	vm := startVM(t)
	vm.addDisk(t, "d0", "qcow2", 4*MiB)
	vm.addDisk(t, "d1", "raw", 2*MiB)
	disks := vm.disks(t)
	startTracking(t, vm, disks)
	vm.write(t, "d0", 1*MiB, 64*KiB)
	f, err := Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir, Fleece: true})
	if err != nil {
		t.Fatal(err)
	}
	f.Extents(context.Background()) // the bitmap exports, too
	r, _, err := f.Open(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	r.ReadAt(make([]byte, 64*KiB), 0)
	vm.write(t, "d1", 0, 64*KiB)
	// The agent is killed: its connections end, nothing is released.
	r.(io.Closer).Close()
	vm.m.Close()
	vm.dial(t)
	var exports, jobs []map[string]any
	vm.m.Execute(context.Background(), "query-block-exports", nil, &exports)
	vm.m.Execute(context.Background(), "query-jobs", nil, &jobs)
	overlays, _ := filepath.Glob(filepath.Join(vm.Dir, OverlayPrefix+"*"))
	if len(exports) != 3 || len(jobs) != 2 || len(overlays) != 2 {
		t.Fatalf("left by the dead agent: %d exports, %d jobs, %d overlays; want 3, 2, 2", len(exports), len(jobs), len(overlays))
	}
	known, err := Recover(context.Background(), vm.m, disks, vm.Dir)
	if err != nil || !known[0] || !known[1] {
		t.Fatalf("Recover: %v %v", known, err)
	}
	assertNoLeftovers(t, vm)
	assertNoFleece(t, vm)
	f, err = Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir, Fleece: true})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := f.Extents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	same(t, "d0", ext[0], ex(1*MiB, 64*KiB))
	same(t, "d1", ext[1], ex(0, 64*KiB))
	equalImage(t, "d1", readAll(t, f, 1), image(2*MiB, [3]int64{0xab, 0, 64 * KiB}))
	if err := f.Release(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	assertNoFleece(t, vm)
}

func TestAReadWhileTheGuestWritesWithoutPauseIsTheDiskAtTheFreeze(t *testing.T) {
	vm := startVM(t)
	vm.addDisk(t, "d0", "qcow2", 8*MiB)
	disks := vm.disks(t)
	startTracking(t, vm, disks)
	vm.writeP(t, "d0", 0x11, 0, 8*MiB)
	f, err := Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir, Fleece: true})
	if err != nil {
		t.Fatal(err)
	}
	r, size, err := f.Open(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// A writer goes over the whole disk, 4 KiB at a time in a scattered
	// order, for as long as the read lasts.
	stop := make(chan struct{})
	writes := make(chan int, 1)
	go func() {
		n := 0
		defer func() { writes <- n }()
		for off := int64(0); ; off = (off + 517*4*KiB) % (8 * MiB) {
			select {
			case <-stop:
				return
			default:
			}
			var out string
			err := vm.m.Execute(context.Background(), "human-monitor-command", map[string]any{
				"command-line": fmt.Sprintf(`qemu-io -d /machine/peripheral/dev-d0/virtio-backend "write -P 0x77 %d 4k"`, off)}, &out)
			if err != nil || out != "" {
				t.Errorf("write at %d: %v %q", off, err, out)
				return
			}
			n++
		}
	}()
	got := make([]byte, 0, size)
	buf := make([]byte, 64*KiB)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := r.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		got = append(got, buf...)
		time.Sleep(time.Millisecond) // let the writer overtake the read
	}
	close(stop)
	n := <-writes
	if n < 20 {
		t.Fatalf("the writer wrote only %d times during the read", n)
	}
	t.Logf("%d guest writes during the read", n)
	equalImage(t, fmt.Sprintf("read during %d writes", n), got, image(8*MiB, [3]int64{0x11, 0, 8 * MiB}))
	if err := f.Release(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	f, ext := vm.capture(t, disks)
	if len(ext[0]) == 0 {
		t.Fatal("the writes during the read are not in the next capture")
	}
	f.Release(context.Background(), true)
}

func TestFleecingIsRefusedWhenTheOverlaysCouldFillTheirFilesystem(t *testing.T) {
	vm := startVM(t)
	vm.addDisk(t, "d0", "qcow2", 4*MiB)
	vm.addDisk(t, "d1", "raw", 2*MiB)
	disks := vm.disks(t)
	startTracking(t, vm, disks)
	vm.write(t, "d0", 0, 64*KiB)
	defer func(f func(string) (int64, error)) { freeSpace = f }(freeSpace)
	freeSpace = func(string) (int64, error) { return 6*MiB - 1, nil }
	_, err := Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir, Fleece: true})
	if err == nil || !strings.Contains(err.Error(), "would fail the guest's writes") {
		t.Fatalf("Freeze: %v", err)
	}
	// Nothing was frozen: the write is still in the live bitmap.
	assertNoLeftovers(t, vm)
	assertNoFleece(t, vm)
	freeSpace = func(string) (int64, error) { return 6 * MiB, nil }
	f, err := Freeze(context.Background(), vm.m, disks, FreezeOptions{Dir: vm.Dir, Fleece: true})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := f.Extents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	same(t, "d0", ext[0], ex(0, 64*KiB))
	f.Release(context.Background(), true)
}
