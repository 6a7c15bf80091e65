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
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
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
	if _, skipped, err := DiskSkipped(ctx, r, "d", src, int64(len(data)), nil, nil); err != nil || skipped {
		t.Fatalf("first copy: skipped %v, %v", skipped, err)
	}
	if _, skipped, _ := DiskSkipped(ctx, r, "d", src, int64(len(data)), nil, nil); skipped {
		t.Fatal("a file modified less than 2 s ago was trusted")
	}
	time.Sleep(quietFor + 100*time.Millisecond)
	if sent, skipped, _ := DiskSkipped(ctx, r, "d", src, int64(len(data)), nil, nil); skipped || sent != 0 {
		t.Fatalf("quiet file, first look: skipped %v sent %d", skipped, sent)
	}
	if _, skipped, _ := DiskSkipped(ctx, r, "d", src, int64(len(data)), nil, nil); !skipped {
		t.Fatal("an unchanged, quiet file was read again")
	}
	// A write changes its times: read, and the change sent.
	f, _ := os.OpenFile(src, os.O_WRONLY, 0)
	f.WriteAt([]byte("changed"), 1<<20+5)
	f.Close()
	sent, skipped, err := DiskSkipped(ctx, r, "d", src, int64(len(data)), nil, nil)
	if err != nil || skipped || sent != 4096 {
		t.Fatalf("after a write: skipped %v sent %d %v", skipped, sent, err)
	}
	r.CreatePoint("p", time.Now(), "crash")
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
	sent, err := Disk(context.Background(), r, "d", src, int64(len(data)), th, nil)
	if err != nil || sent != 36<<20 || th.bytes != int(sent) {
		t.Fatalf("sent %d, throttled %d, %v", sent, th.bytes, err)
	}
	if NewThrottle(0) != nil {
		t.Fatal("0 Mbit/s must mean no limit")
	}
	// A real limiter lets more than its bucket through, piece by piece.
	if err := NewThrottle(100000).WaitN(context.Background(), 100<<20); err != nil {
		t.Fatal(err)
	}
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
	if _, err := DiskUnlessResync(ctx, r, "d", src, int64(len(data)), nil, nil, 50); err != nil {
		t.Fatalf("1 MiB of 8 changed: %v", err)
	}
	// 4 MiB of 8 now differ: 50 %, the limit.
	rand.Read(data[2<<20 : 6<<20])
	os.WriteFile(src, data, 0o644)
	before, _ := r.Hashes("d")
	sent, err := DiskUnlessResync(ctx, r, "d", src, int64(len(data)), nil, nil, 50)
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeResyncRequired || sent != 0 || !strings.Contains(te.Message, "50 %") {
		t.Fatalf("half the disk changed: sent %d, %v", sent, err)
	}
	if after, _ := r.Hashes("d"); !slices.Equal(before, after) {
		t.Fatal("the replica changed though nothing was to be sent")
	}
	// The resync that follows has no limit and sends exactly the change.
	if sent, err := DiskUnlessResync(ctx, r, "d", src, int64(len(data)), nil, nil, 0); err != nil || sent != 4<<20 {
		t.Fatalf("resync: sent %d, %v", sent, err)
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
	if _, err := Disk(ctx, r, "d", src, int64(len(data)), nil, nil); err != nil {
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
	sent, err := Disk(ctx, r, "d", src, int64(len(data)), nil, nil)
	if err != nil || sent != int64(len(corrupt))*4096 {
		t.Fatalf("resync sent %d bytes, %v; want exactly the %d corrupted blocks", sent, err, len(corrupt))
	}
	r.CreatePoint("p", time.Now(), "crash")
	pr, size, _ := r.ReadPoint("p", "d")
	defer pr.Close()
	got, _ := io.ReadAll(io.NewSectionReader(pr, 0, size))
	if !bytes.Equal(got, data) {
		t.Fatal("the replica differs from the source after the resync")
	}
}
