package dirtarget

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
)

// replicate sends what changed in src since the replica's hashes, with
// several writes in flight, as the engine will.
func replicate(t *testing.T, r *Replica, diskID string, src []byte) int64 {
	t.Helper()
	old, err := replicatest.Hashes(r, diskID)
	if err != nil {
		t.Fatal(err)
	}
	now, _ := blocks.HashDisk(bytes.NewReader(src), int64(len(src)), 2)
	runs := blocks.Changed(old[:len(now)], now, int64(len(src)))
	var wg sync.WaitGroup
	errs := make(chan error, len(runs))
	var sent int64
	for _, e := range runs {
		sent += e.Length
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- r.WriteRun(diskID, e.Offset, src[e.Offset:e.Offset+e.Length])
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return sent
}

func scribble(r *rand.Rand, disk []byte, writes int) {
	for range writes {
		off := r.IntN(len(disk) - 1)
		n := 1 + r.IntN(min(20000, len(disk)-off))
		for i := off; i < off+n; i++ {
			disk[i] = byte(r.Uint32())
		}
	}
}

func readAll(t *testing.T, r *Replica, pointID, diskID string) []byte {
	t.Helper()
	pr, size, err := r.ReadPoint(pointID, diskID)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	b, err := io.ReadAll(io.NewSectionReader(pr, 0, size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEveryRecoveryPointReadsBackAsTheSourceWasAtItsCapture(t *testing.T) {
	root := t.TempDir()
	r, err := Open(root, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rnd := rand.New(rand.NewPCG(7, 7))
	disks := map[string][]byte{"d0": make([]byte, 3<<20+777), "d1": make([]byte, 1<<20)}
	for id, src := range disks {
		scribble(rnd, src, 50)
		if err := r.CreateDisk(id, int64(len(src))); err != nil {
			t.Fatal(err)
		}
	}
	type capture struct {
		id    string
		disks map[string][]byte
	}
	var captures []capture
	var changedBlocks, undoBytes, undoLogs int64
	for cycle := 0; cycle < 12; cycle++ {
		for id, src := range disks {
			if cycle > 0 {
				before, _ := blocks.HashDisk(bytes.NewReader(src), int64(len(src)), 1)
				scribble(rnd, src, 1+rnd.IntN(15))
				after, _ := blocks.HashDisk(bytes.NewReader(src), int64(len(src)), 1)
				for _, e := range blocks.Changed(before, after, int64(len(src))) {
					changedBlocks += (e.Length + blocks.BlockSize - 1) / blocks.BlockSize
				}
			}
			replicate(t, r, id, src)
		}
		id := fmt.Sprintf("p%02d", cycle)
		if _, err := replicatest.Point(r, id, time.Now()); err != nil {
			t.Fatal(err)
		}
		c := capture{id: id, disks: map[string][]byte{}}
		for d, src := range disks {
			c.disks[d] = bytes.Clone(src)
		}
		captures = append(captures, c)
	}
	for _, c := range captures {
		for d, want := range c.disks {
			if got := readAll(t, r, c.id, d); !bytes.Equal(got, want) {
				t.Fatalf("point %s, disk %s: differs from the source at its capture", c.id, d)
			}
		}
	}
	// A point costs the changed data, not the disk: undo logs hold at most
	// one record per changed block.
	filepath.Walk(filepath.Join(root, "vm-1", "points"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && filepath.Ext(p) == ".undo" {
			undoBytes += fi.Size()
			undoLogs++
		}
		return nil
	})
	if most := changedBlocks*recordSize + undoLogs*undoHeaderSize; undoBytes == 0 || undoBytes > most {
		t.Fatalf("undo logs hold %d bytes; %d blocks changed after the first point (at most %d bytes)", undoBytes, changedBlocks, most)
	}

	// Retention prunes oldest first, never the newest; what remains still reads right.
	if err := r.DeletePoint(captures[len(captures)-1].id); err == nil {
		t.Fatal("the newest point was deleted")
	}
	if err := r.DeletePoint(captures[5].id); err == nil {
		t.Fatal("a middle point was deleted")
	}
	for _, c := range captures[:4] {
		if err := r.DeletePoint(c.id); err != nil {
			t.Fatal(err)
		}
	}
	points, _ := r.Points()
	if len(points) != len(captures)-4 || points[0].ID != captures[4].id {
		t.Fatalf("after pruning: %+v", points)
	}
	for _, c := range captures[4:] {
		for d, want := range c.disks {
			if got := readAll(t, r, c.id, d); !bytes.Equal(got, want) {
				t.Fatalf("after pruning, point %s disk %s differs", c.id, d)
			}
		}
	}
}

func TestUndoRecordCutShortByACrashIsDropped(t *testing.T) {
	root := t.TempDir()
	r, _ := Open(root, "vm-2")
	src := bytes.Repeat([]byte{1}, 64<<10)
	r.CreateDisk("d", int64(len(src)))
	replicate(t, r, "d", src)
	replicatest.Point(r, "p1", time.Now())
	at1 := bytes.Clone(src)
	src[0] = 9
	replicate(t, r, "d", src)
	r.Close()
	// A crash mid-append leaves half a record behind.
	undo := filepath.Join(root, "vm-2", "points", "0000000001-p1", "d.undo")
	f, _ := os.OpenFile(undo, os.O_APPEND|os.O_WRONLY, 0)
	f.Write(make([]byte, 100))
	f.Close()

	r, _ = Open(root, "vm-2")
	defer r.Close()
	src[5000] = 9 // a second block, appended after the damaged tail is cut
	replicate(t, r, "d", src)
	if got := readAll(t, r, "p1", "d"); !bytes.Equal(got, at1) {
		t.Fatal("point p1 is wrong after a torn undo record")
	}
}

func TestReplicaFileIsAFixedVHDOfTheRoundedSize(t *testing.T) {
	root := t.TempDir()
	r, _ := Open(root, "vm-3")
	defer r.Close()
	if err := r.CreateDisk("d", 3<<20+1); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(root, "vm-3", "disks", "d.vhd"))
	if fi.Size() != 4<<20+512 {
		t.Fatalf("replica file of %d bytes, want 4 MiB + the 512-byte footer", fi.Size())
	}
	if err := r.WriteRun("d", 1, []byte{1}); err == nil {
		t.Fatal("an unaligned write is accepted")
	}
	if _, err := Open(root, "../escape"); err == nil {
		t.Fatal("a VM id with a path in it is accepted")
	}
}

func TestVerifyFindsCorruptedBlocksByOffset(t *testing.T) {
	root := t.TempDir()
	r, _ := Open(root, "vm-4")
	defer r.Close()
	src := make([]byte, 1<<20+100)
	scribble(rand.New(rand.NewPCG(9, 9)), src, 40)
	r.CreateDisk("d", int64(len(src)))
	replicate(t, r, "d", src)
	replicatest.Point(r, "p1", time.Now())
	copy(src[8192:], bytes.Repeat([]byte{5}, 4096)) // block 2 changes: its old content goes to p1's undo log
	replicate(t, r, "d", src)
	replicatest.Point(r, "p2", time.Now())
	for _, p := range []string{"p1", "p2"} {
		if n, bad, err := r.VerifyPoint(p); err != nil || len(bad) != 0 || n != blocks.Count(int64(len(src))) {
			t.Fatalf("clean %s: %d blocks, %v, %v", p, n, bad, err)
		}
	}
	// Rot in the replica at block 5, and in p1's undo copy of block 2.
	f, _ := os.OpenFile(filepath.Join(root, "vm-4", "disks", "d.vhd"), os.O_RDWR, 0)
	f.WriteAt([]byte{0xFF}, 5*4096+17)
	f.Close()
	u, _ := os.OpenFile(filepath.Join(root, "vm-4", "points", "0000000001-p1", "d.undo"), os.O_RDWR, 0)
	u.WriteAt([]byte{0xFF}, undoHeaderSize+v1RecordHeader+100)
	u.Close()
	_, bad, _ := r.VerifyPoint("p2")
	if len(bad) != 1 || bad[0].Offset != 5*4096 {
		t.Fatalf("p2: %v, want block 5", bad)
	}
	_, bad, _ = r.VerifyPoint("p1")
	if len(bad) != 2 || bad[0].Offset != 2*4096 || bad[1].Offset != 5*4096 {
		t.Fatalf("p1: %v, want blocks 2 (undo) and 5 (replica)", bad)
	}
}

func TestACycleOnAVanishedTargetFailsInsteadOfStartingAnEmptyReplica(t *testing.T) {
	root := t.TempDir()
	r, _ := Open(root, "vm-5")
	r.CreateDisk("d", 1<<20)
	r.Close()
	if r2, err := OpenExisting(root, "vm-5"); err != nil {
		t.Fatalf("existing replica: %v", err)
	} else {
		r2.Close()
	}
	mounted := filepath.Join(root, "vm-5")
	os.Rename(mounted, mounted+".away") // the NAS is not mounted
	if _, err := OpenExisting(root, "vm-5"); err == nil {
		t.Fatal("a vanished target was opened")
	}
	if _, err := os.Stat(mounted); err == nil {
		t.Fatal("opening created an empty replica directory in place of the missing one")
	}
}
