package qemu

import (
	"context"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
)

type countingReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReader) ReadAt(b []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(b, off)
	c.n.Add(int64(n))
	return n, err
}

// cycle is what a replication cycle will do with the driver: freeze with
// fleecing, copy each disk's changed extents (all of it when unknown)
// from the fleecing export into the replica, make a point, release.
func cycle(t *testing.T, vm *testVM, disks []Disk, r *dirtarget.Replica, point string) (sent, read []int64) {
	t.Helper()
	ctx := context.Background()
	f, err := Freeze(ctx, vm.m, disks, FreezeOptions{Dir: vm.Dir, Fleece: true})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := f.Extents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range disks {
		rd, size, err := f.Open(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		cr := &countingReader{r: rd}
		res, err := replicate.Copy(ctx, r, d.NodeName, replicate.Source{Name: d.File, Reader: cr, Size: size, Changed: ext[i]}, replicate.Options{})
		if err != nil {
			f.Release(ctx, false)
			t.Fatal(err)
		}
		sent, read = append(sent, res.Sent), append(read, cr.n.Load())
	}
	if _, err := replicatest.Point(r, point, time.Now()); err != nil {
		f.Release(ctx, false)
		t.Fatal(err)
	}
	if err := f.Release(ctx, true); err != nil {
		t.Fatal(err)
	}
	return sent, read
}

func TestADeltaCycleThroughTheEngineSendsExactlyTheChangedBlocks(t *testing.T) {
	vm := startVM(t)
	vm.addDisk(t, "d0", "qcow2", 16*MiB)
	vm.addDisk(t, "d1", "raw", 8*MiB)
	disks := vm.disks(t)
	vm.writeP(t, "d0", 0x11, 0, 1*MiB)
	r, err := dirtarget.Open(filepath.Join(vm.Dir, "target"), "vm")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, d := range disks {
		if err := r.CreateDisk(d.NodeName, d.Size); err != nil {
			t.Fatal(err)
		}
	}
	// First cycle: changes unknown, every block is read and compared.
	sent, read := cycle(t, vm, disks, r, "p1")
	// (What is sent is read twice: hashed, then read again to write.)
	if sent[0] != 1*MiB || sent[1] != 0 || read[0] != 16*MiB+sent[0] || read[1] != 8*MiB {
		t.Fatalf("first cycle: sent %v, read %v", sent, read)
	}
	// Three writes: two whole granules of d0, 4 KiB inside a granule of d1.
	vm.writeP(t, "d0", 0x22, 5*MiB, 64*KiB)
	vm.writeP(t, "d0", 0x33, 12*MiB, 64*KiB)
	vm.writeP(t, "d1", 0x44, 3*MiB+8*KiB, 4*KiB)
	sent, read = cycle(t, vm, disks, r, "p2")
	t.Logf("delta cycle: sent %v bytes, read %v bytes (16 MiB and 8 MiB disks)", sent, read)
	if sent[0] != 128*KiB || sent[1] != 4*KiB {
		t.Fatalf("delta cycle sent %v, want [128 KiB 4 KiB]", sent)
	}
	// The engine reads each changed extent once, as the bitmap reports
	// it: whole 64 KiB granules, d1's 4 KiB write inside one.
	if read[0] != 128*KiB || read[1] != 64*KiB {
		t.Fatalf("delta cycle read %v, want [128 KiB 64 KiB]: the bitmap's extents, once", read)
	}
	equalImage(t, "p2 d0", replicatest.ReadPoint(t, r, "p2", "d0"), image(16*MiB,
		[3]int64{0x11, 0, 1 * MiB}, [3]int64{0x22, 5 * MiB, 64 * KiB}, [3]int64{0x33, 12 * MiB, 64 * KiB}))
	equalImage(t, "p2 d1", replicatest.ReadPoint(t, r, "p2", "d1"), image(8*MiB, [3]int64{0x44, 3*MiB + 8*KiB, 4 * KiB}))
	// Nothing written: nothing read.
	sent, read = cycle(t, vm, disks, r, "p3")
	if sent[0]+sent[1]+read[0]+read[1] != 0 {
		t.Fatalf("idle cycle: sent %v, read %v", sent, read)
	}
}
