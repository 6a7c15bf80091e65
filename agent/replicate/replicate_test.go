package replicate

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	mathrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

func TestAnUnchangedDiskFileIsNotReadAgainAndAChangedOneIs(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	data := make([]byte, 2<<20)
	rand.Read(data[:1<<20])
	os.WriteFile(src, data, 0o644)
	r, err := dirtarget.Open(filepath.Join(dir, "target"), "vm")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.CreateDisk("d", int64(len(data)))
	ctx := context.Background()

	// Just written: too recent to trust its times, so it is read.
	if res, err := File(ctx, r, "d", src, Options{}); err != nil || res.Skipped {
		t.Fatalf("first copy: %+v, %v", res, err)
	}
	if res, _ := File(ctx, r, "d", src, Options{}); res.Skipped {
		t.Fatal("a file modified less than 2 s ago was trusted")
	}
	time.Sleep(replica.QuietFor + 100*time.Millisecond)
	if res, _ := File(ctx, r, "d", src, Options{}); res.Skipped || res.Sent != 0 {
		t.Fatalf("quiet file, first look: %+v", res)
	}
	if res, _ := File(ctx, r, "d", src, Options{}); !res.Skipped {
		t.Fatal("an unchanged, quiet file was read again")
	}
	// A write changes its times: read, and the change sent.
	f, _ := os.OpenFile(src, os.O_WRONLY, 0)
	f.WriteAt([]byte("changed"), 1<<20+5)
	f.Close()
	res, err := File(ctx, r, "d", src, Options{})
	if err != nil || res.Skipped || res.Sent != 4096 {
		t.Fatalf("after a write: %+v %v", res, err)
	}
	replicatest.Point(r, "p", time.Now())
	pr, size, _ := r.ReadPoint("p", "d")
	defer pr.Close()
	got, _ := io.ReadAll(io.NewSectionReader(pr, 0, size))
	want, _ := os.ReadFile(src)
	if !bytes.Equal(got, want) {
		t.Fatal("the replica differs from the source")
	}
}

// countingThrottle records what it was asked to let through.
type countingThrottle struct{ bytes int }

func (c *countingThrottle) WaitN(_ context.Context, n int) error { c.bytes += n; return nil }

func TestEveryByteWrittenPassesTheThrottle(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	data := make([]byte, 40<<20) // more than one 32 MiB batch
	rand.Read(data[:36<<20])
	os.WriteFile(src, data, 0o644)
	r, _ := dirtarget.Open(filepath.Join(dir, "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", int64(len(data)))
	th := &countingThrottle{}
	res, err := File(context.Background(), r, "d", src, Options{Throttle: th})
	if err != nil || res.Sent != 36<<20 || th.bytes != int(res.Sent) {
		t.Fatalf("sent %d, throttled %d, %v", res.Sent, th.bytes, err)
	}
	if NewThrottles().For(0) != nil {
		t.Fatal("0 Mbit/s must mean no limit")
	}
	// A real limiter lets more than its bucket through, piece by piece.
	if err := NewLimiter(100000).WaitN(context.Background(), 100<<20); err != nil {
		t.Fatal(err)
	}
}

// fakeClock is a clock that sleeping moves forward.
type fakeClock struct {
	now   time.Time
	slept time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	c.now, c.slept = c.now.Add(d), c.slept+d
	return nil
}

func TestA1MbitPolicyTakesAMinuteFor8MiBEvenOnAFreshOrIdleBucket(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	data := make([]byte, 16<<20)
	rand.Read(data[:8<<20])
	os.WriteFile(src, data, 0o644)
	r, _ := dirtarget.Open(filepath.Join(dir, "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", int64(len(data)))
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	throttles := &Throttles{buckets: map[int]*Limiter{}, now: clock.Now, sleep: clock.Sleep}
	res, err := File(context.Background(), r, "d", src, Options{Throttle: throttles.For(1)})
	if err != nil || res.Sent != 8<<20 {
		t.Fatalf("sent %d, %v", res.Sent, err)
	}
	// 8 MiB at 1 Mbit/s is 67 s; the bucket may give one second at once.
	if want := 8 * (1 << 20) * 8 * time.Second / 1e6; clock.slept < want-2*time.Second {
		t.Fatalf("an 8 MiB cycle at 1 Mbit/s waited %v, want about %v", clock.slept, want)
	}
	// The bucket is the host's: a second cycle an hour later gets one
	// second's worth at once, not a new full bucket.
	clock.now = clock.now.Add(time.Hour)
	before := clock.slept
	if err := throttles.For(1).WaitN(context.Background(), 1<<20); err != nil {
		t.Fatal(err)
	}
	if waited := clock.slept - before; waited < 7*time.Second {
		t.Fatalf("1 MiB after an idle hour waited %v: the burst is more than a second's worth", waited)
	}
	if throttles.For(1) != throttles.For(1) {
		t.Fatal("cycles of one host must share the bucket of a limit")
	}
}

func TestOnlyTheExtentsADriverReportsChangedAreCompared(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 16<<20)
	rand.Read(data)
	r, _ := dirtarget.Open(filepath.Join(dir, "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", int64(len(data)))
	ctx := context.Background()
	if _, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: int64(len(data))}, Options{}); err != nil {
		t.Fatal(err)
	}
	// Two changes; the driver reports only the second.
	copy(data[1<<20:], bytes.Repeat([]byte{1}, 4096))
	copy(data[9<<20:], bytes.Repeat([]byte{2}, 8192))
	reader := &countingReader{r: bytes.NewReader(data)}
	res, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: reader, Size: int64(len(data)),
		Changed: []blocks.Extent{{Offset: 9 << 20, Length: 8192}}}, Options{})
	if err != nil || res.Sent != 8192 {
		t.Fatalf("sent %d, %v; want the reported 8 KiB", res.Sent, err)
	}
	if reader.n.Load() != 8192 {
		t.Fatalf("read %d bytes of a 16 MiB disk to check one 8 KiB extent", reader.n.Load())
	}
	// Without a report, every block is compared: the first change is found.
	res, err = Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: int64(len(data))}, Options{})
	if err != nil || res.Sent != 4096 {
		t.Fatalf("full comparison sent %d, %v", res.Sent, err)
	}
}

type countingReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReader) ReadAt(b []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(b, off)
	c.n.Add(int64(n))
	return n, err
}

func TestAScheduledCycleSendsNothingWhenHalfTheDiskChanged(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	data := make([]byte, 8<<20)
	rand.Read(data[:1<<20])
	os.WriteFile(src, data, 0o644)
	r, _ := dirtarget.Open(filepath.Join(dir, "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", int64(len(data)))
	ctx := context.Background()
	if _, err := File(ctx, r, "d", src, Options{ResyncLimitPercent: 50}); err != nil {
		t.Fatalf("1 MiB of 8 changed: %v", err)
	}
	// 4 MiB of 8 now differ: 50 %, the limit.
	rand.Read(data[2<<20 : 6<<20])
	os.WriteFile(src, data, 0o644)
	before, _ := replicatest.Hashes(r, "d")
	res, err := File(ctx, r, "d", src, Options{ResyncLimitPercent: 50})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeResyncRequired || res.Sent != 0 || !strings.Contains(te.Message, "50 %") {
		t.Fatalf("half the disk changed: sent %d, %v", res.Sent, err)
	}
	if after, _ := replicatest.Hashes(r, "d"); !slices.Equal(before, after) {
		t.Fatal("the replica changed though nothing was to be sent")
	}
	// The resync that follows has no limit and sends exactly the change.
	if res, err := File(ctx, r, "d", src, Options{}); err != nil || res.Sent != 4<<20 {
		t.Fatalf("resync: sent %d, %v", res.Sent, err)
	}
}

func TestAResyncOfADirectoryReplicaSendsExactlyTheBlocksTheStorageChanged(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	data := make([]byte, 16<<20)
	rand.Read(data)
	os.WriteFile(src, data, 0o644)
	r, _ := dirtarget.Open(filepath.Join(dir, "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", int64(len(data)))
	ctx := context.Background()
	if _, err := File(ctx, r, "d", src, Options{}); err != nil {
		t.Fatal(err)
	}
	// The storage flips a byte in N random blocks of the replica.
	f, _ := os.OpenFile(filepath.Join(dir, "target", "vm", "disks", "d.vhd"), os.O_RDWR, 0)
	rng := mathrand.New(mathrand.NewPCG(3, 5))
	corrupt := map[int64]bool{}
	for len(corrupt) < 7 {
		blk := rng.Int64N(int64(len(data)) / 4096)
		if corrupt[blk] {
			continue
		}
		corrupt[blk] = true
		off := blk*4096 + rng.Int64N(4096)
		f.WriteAt([]byte{data[off] ^ 0xff}, off)
	}
	f.Close()
	bad, err := r.RepairHashes("d")
	if err != nil || len(bad) != len(corrupt) {
		t.Fatalf("repair found %v, %v; want %d blocks", bad, err, len(corrupt))
	}
	for _, off := range bad {
		if !corrupt[off/4096] {
			t.Fatalf("block at %d was not corrupted", off)
		}
	}
	res, err := File(ctx, r, "d", src, Options{})
	if err != nil || res.Sent != int64(len(corrupt))*4096 {
		t.Fatalf("resync sent %d bytes, %v; want exactly the %d corrupted blocks", res.Sent, err, len(corrupt))
	}
	replicatest.Point(r, "p", time.Now())
	pr, size, _ := r.ReadPoint("p", "d")
	defer pr.Close()
	got, _ := io.ReadAll(io.NewSectionReader(pr, 0, size))
	if !bytes.Equal(got, data) {
		t.Fatal("the replica differs from the source after the resync")
	}
}

// A tracked copy reads each changed extent once, whole 4 KiB blocks of it
// and nothing else, and writes only the blocks that differ: scattered
// 64 KiB writes, one unaligned, two overlapping, one rewritten with the
// same bytes, one reaching past the end of the disk.
func TestATrackedCopyReadsOnlyTheChangedExtentsOnceAndSendsWhatDiffers(t *testing.T) {
	const KiB, MiB = 1 << 10, 1 << 20
	size := int64(64*MiB + 6*KiB) // the last block is short
	data := make([]byte, size)
	rand.Read(data[:8*MiB])
	r, _ := dirtarget.Open(filepath.Join(t.TempDir(), "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", size)
	ctx := context.Background()
	if _, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: size}, Options{}); err != nil {
		t.Fatal(err)
	}
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	var changed []blocks.Extent
	var wantSent int64
	for i := 0; i < 40; i++ {
		off := int64(rng.IntN(int(size/(64*KiB))-1)) * 64 * KiB
		if slices.ContainsFunc(changed, func(e blocks.Extent) bool { return e.Offset == off }) {
			continue
		}
		rand.Read(data[off : off+64*KiB])
		changed = append(changed, blocks.Extent{Offset: off, Length: 64 * KiB})
		wantSent += 64 * KiB
	}
	// Unaligned: bytes 100..5000 of the block at 40 MiB+ changed, so two
	// blocks are read and sent.
	copy(data[40*MiB+100:], bytes.Repeat([]byte{7}, 4900))
	changed = append(changed, blocks.Extent{Offset: 40*MiB + 100, Length: 4900})
	wantSent += 8 * KiB
	// Overlapping reports of one 12 KiB change.
	copy(data[50*MiB:], bytes.Repeat([]byte{8}, 12*KiB))
	changed = append(changed, blocks.Extent{Offset: 50 * MiB, Length: 8 * KiB}, blocks.Extent{Offset: 50*MiB + 4*KiB, Length: 8 * KiB})
	wantSent += 12 * KiB
	// Written again with what it held: read, not sent.
	changed = append(changed, blocks.Extent{Offset: 2 * MiB, Length: 64 * KiB})
	// The short last block, reported past the end.
	copy(data[size-2*KiB:], bytes.Repeat([]byte{9}, 2*KiB))
	changed = append(changed, blocks.Extent{Offset: size - 2*KiB, Length: 64 * KiB})
	wantSent += 2 * KiB
	reader := &countingReader{r: bytes.NewReader(data)}
	res, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: reader, Size: size, Changed: changed}, Options{ResyncLimitPercent: 50})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != wantSent || res.Differ != wantSent {
		t.Fatalf("sent %d, differ %d; want %d", res.Sent, res.Differ, wantSent)
	}
	if wantRead := extentBytes(pieces(changed, size)); reader.n.Load() != wantRead || wantRead != wantSent+64*KiB {
		t.Fatalf("read %d bytes for %d bytes of changed blocks (%d sent)", reader.n.Load(), wantRead, wantSent)
	}
	if _, err := replicatest.Point(r, "p", time.Now()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(replicatest.ReadPoint(t, r, "p", "d"), data) {
		t.Fatal("the replica is not the disk after a tracked copy")
	}
	// Nothing more changed: the same report reads again and sends nothing.
	if res, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: size, Changed: changed}, Options{}); err != nil || res.Sent != 0 {
		t.Fatalf("again: sent %d, %v", res.Sent, err)
	}
}

// Reported extents over the resync limit: the copy is the two-pass one,
// which judges the limit by what truly differs before writing anything.
func TestTrackedExtentsOverTheResyncLimitAreJudgedBeforeAnythingIsWritten(t *testing.T) {
	const MiB = 1 << 20
	data := make([]byte, 8*MiB)
	r, _ := dirtarget.Open(filepath.Join(t.TempDir(), "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", int64(len(data)))
	ctx := context.Background()
	all := []blocks.Extent{{Offset: 0, Length: 8 * MiB}}
	// The whole disk reported, 1 MiB truly changed: under the limit.
	rand.Read(data[:1*MiB])
	if res, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: 8 * MiB, Changed: all}, Options{ResyncLimitPercent: 50}); err != nil || res.Sent != 1*MiB {
		t.Fatalf("sent %d, %v", res.Sent, err)
	}
	rand.Read(data[2*MiB : 6*MiB])
	before, _ := replicatest.Hashes(r, "d")
	res, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: 8 * MiB, Changed: all}, Options{ResyncLimitPercent: 50})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeResyncRequired || res.Sent != 0 {
		t.Fatalf("half the disk changed: sent %d, %v", res.Sent, err)
	}
	if after, _ := replicatest.Hashes(r, "d"); !slices.Equal(before, after) {
		t.Fatal("the replica changed though nothing was to be sent")
	}
}

func TestPiecesAreAlignedMergedSplitAndClipped(t *testing.T) {
	const KiB, MiB = 1 << 10, 1 << 20
	got := pieces([]blocks.Extent{
		{Offset: 20 * MiB, Length: 9 * MiB},         // split at MaxRun
		{Offset: 100, Length: 10},                   // one block
		{Offset: 4*KiB - 1, Length: 2},              // shares block 0, reaches block 1
		{Offset: 64 * KiB, Length: 4 * KiB},         // alone
		{Offset: 68 * KiB, Length: 4 * KiB},         // adjacent: joined
		{Offset: 30*MiB - 2*KiB, Length: 100 * MiB}, // past the end
	}, 30*MiB)
	want := []blocks.Extent{
		{Offset: 0, Length: 8 * KiB},
		{Offset: 64 * KiB, Length: 8 * KiB},
		{Offset: 20 * MiB, Length: 4 * MiB},
		{Offset: 24 * MiB, Length: 4 * MiB},
		{Offset: 28 * MiB, Length: 1 * MiB},
		{Offset: 30*MiB - 4*KiB, Length: 4 * KiB},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pieces = %v, want %v", got, want)
	}
}

// Reported extents beyond one batch (32 MiB): batches of blocks that did
// not change are read into again, batches with changes are written whole,
// and the replica ends as the disk.
func TestATrackedCopyOverManyBatchesWritesEveryChangedBlock(t *testing.T) {
	const MiB = 1 << 20
	size := int64(100 * MiB)
	data := make([]byte, size)
	rand.Read(data)
	r, _ := dirtarget.Open(filepath.Join(t.TempDir(), "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", size)
	ctx := context.Background()
	if _, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: size}, Options{}); err != nil {
		t.Fatal(err)
	}
	// 0–40 MiB reported but unchanged; from 40 MiB every other MiB changed.
	changed := []blocks.Extent{{Offset: 0, Length: 40 * MiB}}
	var want int64
	for off := int64(40 * MiB); off < size; off += 2 * MiB {
		rand.Read(data[off : off+MiB])
		changed = append(changed, blocks.Extent{Offset: off, Length: MiB})
		want += MiB
	}
	res, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: size, Changed: changed}, Options{})
	if err != nil || res.Sent != want {
		t.Fatalf("sent %d, %v; want %d", res.Sent, err, want)
	}
	if _, err := replicatest.Point(r, "p", time.Now()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(replicatest.ReadPoint(t, r, "p", "d"), data) {
		t.Fatal("the replica is not the disk")
	}
}

// Extents reported out of order, over the resync limit (the two-pass
// copy): every reported change is compared and sent.
func TestUnorderedExtentsOverTheLimitAreAllCompared(t *testing.T) {
	const MiB = 1 << 20
	data := make([]byte, 16*MiB)
	r, _ := dirtarget.Open(filepath.Join(t.TempDir(), "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", int64(len(data)))
	ctx := context.Background()
	copy(data[10*MiB:], bytes.Repeat([]byte{1}, 4096))
	copy(data[1*MiB:], bytes.Repeat([]byte{2}, 4096))
	res, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: int64(len(data)),
		Changed: []blocks.Extent{{Offset: 10 * MiB, Length: MiB}, {Offset: 1 * MiB, Length: 4096}}}, Options{ResyncLimitPercent: 5})
	if err != nil || res.Sent != 8192 {
		t.Fatalf("sent %d, %v; want both 4 KiB changes", res.Sent, err)
	}
}

// A disk that grew: the new area is compared though the driver did not
// report it (a grown volume need not read as zeros there).
func TestTheAreaADiskGrewByIsComparedEvenWhenNotReported(t *testing.T) {
	const MiB = 1 << 20
	data := make([]byte, 8*MiB)
	r, _ := dirtarget.Open(filepath.Join(t.TempDir(), "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", 4*MiB)
	ctx := context.Background()
	copy(data[6*MiB:], bytes.Repeat([]byte{3}, 4096))
	res, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: int64(len(data)), Changed: []blocks.Extent{}}, Options{})
	if err != nil || res.Sent != 4096 {
		t.Fatalf("sent %d, %v; want the 4 KiB in the grown area", res.Sent, err)
	}
}

// cutReader fails every read after the first n: a source that went away
// mid-copy (a capture's export gone, the agent's disk unreadable).
type cutReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *cutReader) ReadAt(b []byte, off int64) (int, error) {
	if c.n.Add(-1) < 0 {
		return 0, errors.New("the export went away")
	}
	return c.r.ReadAt(b, off)
}

// A tracked copy cut part-way (some batches written, the rest not) fails
// recoverably, and the same extents copied again make the replica the
// disk, byte for byte.
func TestATrackedCopyCutPartWayEndsTheSameWhenRunAgain(t *testing.T) {
	const MiB = 1 << 20
	size := int64(100 * MiB)
	data := make([]byte, size)
	rand.Read(data)
	r, _ := dirtarget.Open(filepath.Join(t.TempDir(), "target"), "vm")
	defer r.Close()
	r.CreateDisk("d", size)
	ctx := context.Background()
	if _, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: size}, Options{}); err != nil {
		t.Fatal(err)
	}
	var changed []blocks.Extent
	for off := int64(0); off < size; off += 2 * MiB {
		rand.Read(data[off : off+MiB])
		changed = append(changed, blocks.Extent{Offset: off, Length: MiB})
	}
	cut := &cutReader{r: bytes.NewReader(data)}
	cut.n.Store(40) // past the first 32 MiB batch, short of the 50 MiB changed
	res, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: cut, Size: size, Changed: changed}, Options{})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeDiskUnreadable || !te.Recoverable || res.Sent == 0 || res.Sent >= 50*MiB {
		t.Fatalf("the cut copy: sent %d, %v; want a recoverable disk_unreadable after part of it was written", res.Sent, err)
	}
	// What the cut copy wrote stands; the rerun sends the rest, exactly.
	again, err := Copy(ctx, r, "d", Source{Name: "mem", Reader: bytes.NewReader(data), Size: size, Changed: changed}, Options{})
	if err != nil || again.Sent != 50*MiB-res.Sent {
		t.Fatalf("run again: sent %d, %v; want the %d the cut copy did not", again.Sent, err, 50*MiB-res.Sent)
	}
	if _, err := replicatest.Point(r, "p", time.Now()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(replicatest.ReadPoint(t, r, "p", "d"), data) {
		t.Fatal("after a cut copy and its rerun the replica is not the disk")
	}
}
