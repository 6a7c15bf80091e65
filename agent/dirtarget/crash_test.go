package dirtarget

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agent/vhd"
)

// The crash tests run an operation on a memFS, take after every change it
// makes the state a power cut would leave (only what was fsynced; and, if
// the change was a write, with half of it done) and the state a killed
// process would leave (everything written), and check each:
// the target opens, every listed point reads back exactly as captured, no
// stored hash claims content the replica does not hold, and a repair cycle
// (what the engine does next) brings the replica to the source.

const (
	crashRoot = "/target"
	crashVM   = "vm"
)

var quiet = slog.New(slog.DiscardHandler)

// crashSources are two small disks, one with a short last block.
func crashSources(seed uint64) map[string][]byte {
	rnd := rand.New(rand.NewPCG(seed, seed))
	disks := map[string][]byte{"d0": make([]byte, 10*blocks.BlockSize+777), "d1": make([]byte, 8*blocks.BlockSize)}
	for _, src := range disks {
		scribble(rnd, src, 4)
	}
	return disks
}

// changeSources changes a few blocks of every disk, some of them twice
// across batches.
func changeSources(seed uint64, disks map[string][]byte) map[string][]byte {
	rnd := rand.New(rand.NewPCG(seed, seed))
	out := map[string][]byte{}
	for id, src := range disks {
		c := bytes.Clone(src)
		for range 3 {
			off := rnd.IntN(len(c))
			n := min(1+rnd.IntN(2*blocks.BlockSize), len(c)-off)
			for i := off; i < off+n; i++ {
				c[i] = byte(rnd.Uint32())
			}
		}
		out[id] = c
	}
	return out
}

// engineCycle does what a cycle does to each disk: read the stored hashes
// and send the blocks whose hash differs from the source's (unknown ones
// included), here in batches of at most two blocks so a crash can fall
// between batches.
func engineCycle(r *Replica, disks map[string][]byte) error {
	for _, id := range sortedKeys(disks) {
		src := disks[id]
		old := make([]blocks.Hash, blocks.Count(int64(len(src))))
		if err := r.ReadHashes(id, 0, old); err != nil {
			return err
		}
		now, err := blocks.HashDisk(bytes.NewReader(src), int64(len(src)), 1)
		if err != nil {
			return err
		}
		var runs []Run
		for _, e := range blocks.Changed(old, now, int64(len(src))) {
			for off := e.Offset; off < e.Offset+e.Length; off += 2 * blocks.BlockSize {
				end := min(off+2*blocks.BlockSize, e.Offset+e.Length)
				runs = append(runs, Run{Offset: off, Data: src[off:end]})
			}
		}
		for i := 0; i < len(runs); i += 2 {
			if err := r.WriteRuns(id, runs[i:min(i+2, len(runs))]); err != nil {
				return err
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// crashImages runs op on fsys and returns, for every change it makes (and
// before the first), the power-cut and the killed-process states, with
// how many changes had happened when op returned.
type crashImage struct {
	fs      *memFS
	step    int    // changes made before the crash
	lastOp  string // the last of them
	durable bool
	torn    bool // the last write half done
}

func recordCrashes(t *testing.T, fsys *memFS, op func() error) (images []crashImage, returnedAt int) {
	t.Helper()
	step, last := 0, "(none)"
	// A power-cut state changes only with an fsync, a killed process's
	// only with other changes: each is taken only when it is new.
	take := func() {
		synced := strings.HasPrefix(last, "fsync ") || strings.HasPrefix(last, "syncdir ")
		if step == 0 || synced {
			images = append(images, crashImage{fs: fsys.crashImage(true), step: step, lastOp: last, durable: true})
		}
		if step == 0 || !synced {
			images = append(images, crashImage{fs: fsys.crashImage(false), step: step, lastOp: last})
		}
		if torn := fsys.tornImage(); torn != nil {
			images = append(images, crashImage{fs: torn, step: step, lastOp: last, durable: true, torn: true})
		}
	}
	take()
	fsys.afterOp = func(desc string) {
		step++
		last = desc
		take()
	}
	err := op()
	fsys.afterOp = nil
	if err != nil {
		t.Fatal(err)
	}
	return images, step
}

func (c crashImage) String() string {
	kind := "killed"
	switch {
	case c.torn:
		kind = "power cut mid-write"
	case c.durable:
		kind = "power cut"
	}
	return fmt.Sprintf("%s after change %d (%s)", kind, c.step, c.lastOp)
}

// captured is a point's expected content, by disk.
type captured map[string][]byte

// setUp makes, on a fresh memFS, a target with the disks and one point
// per source state, and returns it as a power cut would leave it (so the
// recorded operation starts from what is durable).
func setUp(t *testing.T, states []map[string][]byte) *memFS {
	t.Helper()
	fsys := newMemFS()
	r, err := OpenWith(crashRoot, crashVM, Options{FS: fsys, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range sortedKeys(states[0]) {
		if err := r.CreateDisk(id, int64(len(states[0][id]))); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range states {
		if err := engineCycle(r, s); err != nil {
			t.Fatal(err)
		}
		if _, err := replicatest.Point(r, fmt.Sprintf("p%d", i+1), time.Unix(int64(i), 0)); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	return fsys.crashImage(true)
}

// checkCrashed checks one crash image. points are the points that may be
// listed, by id; allowed are the lists of point ids acceptable then.
// final is the source the repair cycle writes.
func checkCrashed(t *testing.T, img crashImage, points map[string]captured, allowed [][]string, final map[string][]byte) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%v: %s", img, fmt.Sprintf(format, args...))
	}
	// A reader first: it changes nothing, so it sees the leftovers as they are.
	r, err := OpenExistingWith(crashRoot, crashVM, Options{FS: img.fs, Logger: quiet})
	if err != nil {
		// Only a target that never got its directories may fail to open.
		if len(points) > 0 {
			fail("open: %v", err)
		}
		r, err = OpenWith(crashRoot, crashVM, Options{FS: img.fs, Logger: quiet})
		if err != nil {
			fail("open: %v", err)
		}
	}
	defer func() { r.Close() }()
	listed := checkPoints(t, r, points, fail)
	if !slices.ContainsFunc(allowed, func(ids []string) bool { return slices.Equal(ids, listed) }) {
		fail("points %v, want one of %v", listed, allowed)
	}
	checkHashesHonest(t, r, img.fs, fail)

	// The repair cycle: what the next cycle does after a crash, on a
	// writer's open (which removes leftovers).
	r.Close()
	if r, err = OpenWith(crashRoot, crashVM, Options{FS: img.fs, Logger: quiet}); err != nil {
		fail("open to repair: %v", err)
	}
	for _, id := range sortedKeys(final) {
		if err := r.CreateDisk(id, int64(len(final[id]))); err != nil {
			fail("create disk %s: %v", id, err)
		}
		if _, err := r.RepairHashes(id); err != nil {
			fail("repair hashes of %s: %v", id, err)
		}
	}
	if err := engineCycle(r, final); err != nil {
		fail("repair cycle: %v", err)
	}
	if _, err := replicatest.Point(r, "repaired", time.Unix(100, 0)); err != nil {
		fail("point after repair: %v", err)
	}
	after := map[string]captured{"repaired": final}
	for _, id := range listed {
		after[id] = points[id]
	}
	if got := checkPoints(t, r, after, fail); !slices.Equal(got, append(slices.Clone(listed), "repaired")) {
		fail("after repair, points %v", got)
	}
	checkHashesHonest(t, r, img.fs, fail)
}

// checkPoints reads every listed point back whole and compares it with
// what it captured; it returns the listed ids.
func checkPoints(t *testing.T, r *Replica, points map[string]captured, fail func(string, ...any)) []string {
	t.Helper()
	list, err := r.Points()
	if err != nil {
		fail("points: %v", err)
	}
	var ids []string
	for _, p := range list {
		ids = append(ids, p.ID)
		want, ok := points[p.ID]
		if !ok {
			fail("unexpected point %s", p.ID)
		}
		// Every block matches the hash recorded for it: a point's hashes
		// are as durable as its data.
		if _, bad, err := r.VerifyPoint(p.ID); err != nil || len(bad) > 0 {
			fail("verify point %s: %v %v", p.ID, bad, err)
		}
		for _, d := range sortedKeys(want) {
			pr, size, err := r.ReadPoint(p.ID, d)
			if err != nil {
				fail("read point %s disk %s: %v", p.ID, d, err)
			}
			got, err := io.ReadAll(io.NewSectionReader(pr, 0, size))
			pr.Close()
			if err != nil {
				fail("read point %s disk %s: %v", p.ID, d, err)
			}
			if !bytes.Equal(got, want[d]) {
				fail("point %s disk %s does not read back as captured", p.ID, d)
			}
		}
	}
	return ids
}

// checkHashesHonest checks that every stored hash is unknown or the hash
// of what the replica file holds: a crash leaves hashes unknown, never
// stale.
func checkHashesHonest(t *testing.T, r *Replica, fsys *memFS, fail func(string, ...any)) {
	t.Helper()
	disks, err := r.Disks()
	if err != nil {
		fail("disks: %v", err)
	}
	for _, id := range disks {
		size, err := r.DiskSize(id)
		if err != nil {
			fail("disk %s: %v", id, err)
		}
		stored := make([]blocks.Hash, blocks.Count(size))
		if err := r.ReadHashes(id, 0, stored); err != nil {
			fail("hashes of %s: %v", id, err)
		}
		data, err := readFile(fsys, filepath.Join(crashRoot, crashVM, "disks", id+".vhd"))
		if err != nil {
			fail("replica of %s: %v", id, err)
		}
		hashes, err := readFile(fsys, filepath.Join(crashRoot, crashVM, "disks", id+".hashes"))
		if err != nil {
			fail("hashes of %s: %v", id, err)
		}
		// A listed disk is whole: a fixed VHD with its footer, and a hash
		// for every block.
		if want := vhd.DataSize(size) + vhd.FooterSize; int64(len(data)) != want {
			fail("replica of %s has %d bytes, want %d", id, len(data), want)
		}
		if want := blocks.Count(vhd.DataSize(size)) * 16; int64(len(hashes)) != want {
			fail("hash file of %s has %d bytes, want %d", id, len(hashes), want)
		}
		for b, h := range stored {
			blk := make([]byte, blocks.BlockSize)
			copy(blk, data[min(int64(len(data)), int64(b)*blocks.BlockSize):])
			if h != replica.UnknownHash && h != blocks.HashBlock(blk) {
				fail("disk %s block %d: the stored hash is stale", id, b)
			}
		}
	}
}

func TestACrashDuringACycleLeavesEveryPointWholeAndTheNextCycleRepairs(t *testing.T) {
	s1 := crashSources(1)
	s2 := changeSources(2, s1)
	s3 := changeSources(3, s2)
	base := setUp(t, []map[string][]byte{s1, s2})
	fsys := base.crashImage(true)
	r, err := OpenExistingWith(crashRoot, crashVM, Options{FS: fsys, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	images, returnedAt := recordCrashes(t, fsys, func() error {
		if err := engineCycle(r, s3); err != nil {
			return err
		}
		_, err := replicatest.Point(r, "p3", time.Unix(3, 0))
		return err
	})
	r.Close()
	points := map[string]captured{"p1": s1, "p2": s2, "p3": s3}
	for _, img := range images {
		allowed := [][]string{{"p1", "p2"}, {"p1", "p2", "p3"}}
		if img.step == returnedAt {
			allowed = allowed[1:] // CreatePoint returned: the point is durable
		}
		checkCrashed(t, img, points, allowed, changeSources(4, s3))
	}
	t.Logf("%d crash states checked", len(images))
}

func TestACrashWhileDeletingAPointLeavesItWholeOrGone(t *testing.T) {
	s1 := crashSources(5)
	s2 := changeSources(6, s1)
	s3 := changeSources(7, s2)
	base := setUp(t, []map[string][]byte{s1, s2, s3})
	fsys := base.crashImage(true)
	r, err := OpenExistingWith(crashRoot, crashVM, Options{FS: fsys, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	images, returnedAt := recordCrashes(t, fsys, func() error { return r.DeletePoint("p1") })
	r.Close()
	points := map[string]captured{"p1": s1, "p2": s2, "p3": s3}
	for _, img := range images {
		allowed := [][]string{{"p1", "p2", "p3"}, {"p2", "p3"}}
		if img.step == returnedAt {
			allowed = allowed[1:]
		}
		checkCrashed(t, img, points, allowed, changeSources(8, s3))
	}
	t.Logf("%d crash states checked", len(images))
}

func TestACrashWhileCreatingTheFirstDisksLeavesNoHalfReplica(t *testing.T) {
	src := crashSources(9)
	fsys := newMemFS()
	images, returnedAt := recordCrashes(t, fsys, func() error {
		r, err := OpenWith(crashRoot, crashVM, Options{FS: fsys, Logger: quiet})
		if err != nil {
			return err
		}
		defer r.Close()
		for _, id := range sortedKeys(src) {
			if err := r.CreateDisk(id, int64(len(src[id]))); err != nil {
				return err
			}
		}
		return nil
	})
	for _, img := range images {
		if img.step == returnedAt {
			r, err := OpenExistingWith(crashRoot, crashVM, Options{FS: img.fs, Logger: quiet})
			if err != nil {
				t.Fatalf("%v: %v", img, err)
			}
			if disks, _ := r.Disks(); !slices.Equal(disks, []string{"d0", "d1"}) {
				t.Fatalf("%v: disks %v after CreateDisk returned", img, disks)
			}
			r.Close()
		}
		checkCrashed(t, img, nil, [][]string{nil}, src)
	}
	t.Logf("%d crash states checked", len(images))
}

// The VM descriptor replaced during a crash is the old one or the new one,
// whole, at every crash state (a rebuild reads it to know the VM), and the
// replica and its points are untouched by it: every point reads its
// source's bytes, and the next cycle repairs.
func TestACrashWhileReplacingTheDescriptorLeavesTheOldOrTheNewWhole(t *testing.T) {
	s1 := crashSources(11)
	s2 := changeSources(12, s1)
	base := setUp(t, []map[string][]byte{s1, s2})
	fsys := base.crashImage(true)
	r, err := OpenExistingWith(crashRoot, crashVM, Options{FS: fsys, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	old, next := []byte(`{"format":1,"name":"web-01","policy":"gold"}`), []byte(`{"format":1,"name":"web-01","policy":"platinum","disks":2}`)
	if err := r.SetDescriptor(old); err != nil {
		t.Fatal(err)
	}
	fsys = fsys.crashImage(true)
	r.Close()
	r, err = OpenExistingWith(crashRoot, crashVM, Options{FS: fsys, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	images, returnedAt := recordCrashes(t, fsys, func() error { return r.SetDescriptor(next) })
	r.Close()
	for _, img := range images {
		rr, err := OpenExistingWith(crashRoot, crashVM, Options{FS: img.fs, Logger: quiet})
		if err != nil {
			t.Fatalf("%v: %v", img, err)
		}
		got, err := rr.Descriptor()
		rr.Close()
		switch {
		case err != nil:
			t.Fatalf("%v: read the descriptor: %v", img, err)
		case img.step == returnedAt && img.durable && !bytes.Equal(got, next):
			t.Fatalf("%v: SetDescriptor returned, yet the descriptor is %q", img, got)
		case !bytes.Equal(got, old) && !bytes.Equal(got, next):
			t.Fatalf("%v: the descriptor is %q: neither the old nor the new one whole", img, got)
		}
		checkCrashed(t, img, map[string]captured{"p1": s1, "p2": s2}, [][]string{{"p1", "p2"}}, changeSources(13, s2))
	}
	t.Logf("%d crash states checked", len(images))
}
