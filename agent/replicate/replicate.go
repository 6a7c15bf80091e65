// Package replicate copies a source disk's changes into its replica: hash
// the source in 4 KiB blocks, compare with the replica's stored hashes, and
// write only the runs that differ (on a fresh replica, whose stored hashes
// are a zero block's: only the blocks that are not zeros).
//
// It reads the source only through a Source, which a driver's capture
// gives (package driver): the engine never opens a VM's disk itself.
//
// Memory does not grow with the disk beyond one bit per block: the first
// pass hashes the source a chunk at a time against the same range of
// stored hashes and marks the blocks that differ in a bitmap (32 MiB per
// TiB); the second reads and writes only those.
package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// HashWorkers is how many goroutines hash a source disk: one per core, two
// to four (more only scatters the reads; measured with make bench).
func HashWorkers() int { return min(max(runtime.NumCPU(), 2), 4) }

// batchBytes bounds the data written between two flushes of the undo log,
// unless the store says otherwise (BatchBytes).
const batchBytes = 32 << 20

// Source is one disk of a capture: what the engine reads.
type Source struct {
	// Name names the disk in messages (its path on the host).
	Name   string
	Reader io.ReaderAt
	Size   int64
	// Signature identifies the disk's content at the capture without
	// reading it (nil: it cannot). A replica that last equalled the source
	// at this signature is up to date, and the disk is not read at all.
	Signature *replica.SourceSignature
	// Unchanged is asked after the copy: whether Signature still describes
	// every byte that was read (nothing wrote to the disk meanwhile). Only
	// then is the signature recorded with the replica. Nil: never.
	Unchanged func() bool
	// Changed lists the only extents that may differ from the replica, when
	// the driver tracks changes; nil: every block is compared by its hash.
	Changed []blocks.Extent
}

// Options tune one copy.
type Options struct {
	Throttle Throttle
	// Progress gets the offset the copy reached.
	Progress func(done int64)
	// ResyncLimitPercent: when the blocks that differ reach this share of
	// the disk, the copy sends nothing and fails with CodeResyncRequired
	// (a scheduled cycle). 0: no limit.
	ResyncLimitPercent int
}

// Result is what one copy did.
type Result struct {
	Sent    int64 // bytes written to the replica
	Skipped bool  // the source was not read: its signature was the replica's
	Differ  int64 // bytes of blocks that differed from the replica
}

// Throttle paces the bytes written; nil writes at full speed.
type Throttle interface {
	WaitN(ctx context.Context, n int) error
}

// Copy brings the replica replicaID up to date with src. Errors are task
// errors: recoverable or not.
func Copy(ctx context.Context, r replica.Store, replicaID string, src Source, opts Options) (Result, error) {
	if synced, err := r.SyncedSignature(replicaID); err == nil && src.Signature != nil && synced != nil && *synced == *src.Signature {
		return Result{Skipped: true}, nil
	}
	res, err := copyChanges(ctx, r, replicaID, src, opts)
	var te *agentproto.TaskError
	if errors.As(err, &te) && te.Code == agentproto.CodeResyncRequired {
		return res, err // nothing was written
	}
	if err != nil {
		// Whatever was written, the replica no longer matches a known state.
		_ = r.SetSyncedSignature(replicaID, nil)
		return res, err
	}
	var record *replica.SourceSignature
	if src.Signature != nil && src.Unchanged != nil && src.Unchanged() {
		record = src.Signature
	}
	if err := r.SetSyncedSignature(replicaID, record); err != nil {
		return res, TargetError(err)
	}
	return res, nil
}

func copyChanges(ctx context.Context, r replica.Store, replicaID string, src Source, opts Options) (Result, error) {
	var res Result
	size, err := r.DiskSize(replicaID)
	if err != nil {
		return res, TargetError(err)
	}
	switch {
	case src.Size < size:
		return res, &agentproto.TaskError{Code: agentproto.CodeDiskResized, Message: fmt.Sprintf("source disk %s shrank to %d bytes from %d; a replica cannot shrink: disable protection and enable it again", src.Name, src.Size, size)}
	case src.Size > size:
		// The disk grew: so does its replica, and the new part is sent as
		// any change is (a fresh area of zeros sends nothing). It is
		// compared whether or not the driver reports it changed: what a
		// grown volume holds there need not be zeros.
		if err := r.Resize(replicaID, src.Size); err != nil {
			return res, TargetError(err)
		}
		if src.Changed != nil {
			src.Changed = append(slices.Clone(src.Changed), blocks.Extent{Offset: size, Length: src.Size - size})
		}
	}
	if src.Changed != nil {
		// In order, whole blocks, none overlapping: both copies below
		// rely on it.
		src.Changed = pieces(src.Changed, src.Size)
		ps := src.Changed
		if limit := opts.ResyncLimitPercent; limit == 0 || extentBytes(ps)*100 < int64(limit)*src.Size {
			return copyTracked(ctx, r, replicaID, src, ps, opts)
		}
	}
	changed, err := scan(ctx, r, replicaID, src)
	if err != nil {
		return res, err
	}
	res.Differ = changed.bytes(src.Size)
	if limit := opts.ResyncLimitPercent; limit > 0 && res.Differ*100 >= int64(limit)*src.Size {
		return res, &agentproto.TaskError{Code: agentproto.CodeResyncRequired, Message: fmt.Sprintf(
			"%d of the %d bytes of disk %s changed since the last cycle (%d %%, the limit is %d %%): a resynchronization is needed",
			res.Differ, src.Size, src.Name, res.Differ*100/max(src.Size, 1), limit)}
	}
	res.Sent, err = write(ctx, r, replicaID, src, changed, opts)
	return res, err
}

// bitmap has one bit per block: set for a block to write.
type bitmap []uint64

func newBitmap(blockCount int64) bitmap { return make(bitmap, (blockCount+63)/64) }

func (b bitmap) set(i int64)      { b[i/64] |= 1 << (i % 64) }
func (b bitmap) has(i int64) bool { return b[i/64]&(1<<(i%64)) != 0 }

func (b bitmap) bytes(size int64) int64 {
	var n int64
	for _, w := range b {
		n += int64(bits.OnesCount64(w))
	}
	n *= blocks.BlockSize
	if last := blocks.Count(size) - 1; last >= 0 && b.has(last) {
		n -= blocks.Count(size)*blocks.BlockSize - size // the short last block
	}
	return n
}

// scanChunk is how much of the disk one hashing step covers: a multiple
// of 64 blocks, so that chunks set disjoint words of the bitmap.
const scanChunk = blocks.MaxRun

// scan marks the blocks of src whose hash differs from the replica's
// stored one, HashWorkers chunks at a time.
func scan(ctx context.Context, r replica.Store, replicaID string, src Source) (bitmap, error) {
	count := blocks.Count(src.Size)
	changed := newBitmap(count)
	chunks := make(chan int64)
	var wg sync.WaitGroup
	var firstErr error
	var failed atomic.Bool
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		failed.Store(true)
	}
	for range HashWorkers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, scanChunk)
			stored := make([]blocks.Hash, scanChunk/blocks.BlockSize)
			for off := range chunks {
				if failed.Load() {
					continue
				}
				if err := scanOne(r, replicaID, src, off, buf, stored, changed); err != nil {
					fail(err)
				}
			}
		}()
	}
	feed := func(off, end int64) bool {
		for ; off < end; off += scanChunk {
			select {
			case chunks <- off:
			case <-ctx.Done():
				fail(ctx.Err())
				return false
			}
			if failed.Load() {
				return false
			}
		}
		return true
	}
	if src.Changed == nil {
		feed(0, src.Size)
	} else {
		// Chunks that hold a changed extent, each once (extents in order).
		next := int64(0)
		for _, e := range src.Changed {
			first := max(e.Offset/scanChunk*scanChunk, next)
			end := min(e.Offset+e.Length, src.Size)
			if first >= end {
				continue
			}
			if !feed(first, end) {
				break
			}
			next = (end + scanChunk - 1) / scanChunk * scanChunk
		}
	}
	close(chunks)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return changed, nil
}

// scanOne hashes one chunk of the source and marks its blocks that differ.
func scanOne(r replica.Store, replicaID string, src Source, off int64, buf []byte, stored []blocks.Hash, changed bitmap) error {
	n := min(int64(scanChunk), src.Size-off)
	b := buf[:n]
	if err := readFull(src.Reader, b, off); err != nil {
		return unreadable(src, off, err)
	}
	first := off / blocks.BlockSize
	want := stored[:blocks.Count(n)]
	if err := r.ReadHashes(replicaID, first, want); err != nil {
		return TargetError(err)
	}
	for i := range want {
		start := int64(i) * blocks.BlockSize
		if blocks.HashBlock(b[start:min(start+blocks.BlockSize, n)]) != want[i] {
			changed.set(first + int64(i))
		}
	}
	return nil
}

// readFull reads len(b) bytes at off; a short read is an error (the source
// is as long as its capture says).
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("read %d of %d bytes: the disk is shorter than its capture", n, len(b))
	}
	return err
}

// write reads the marked blocks, joined into runs of at most MaxRun, and
// writes them through a pipeline (batches of the store's size, the next
// read while the last is written).
func write(ctx context.Context, r replica.Store, replicaID string, src Source, changed bitmap, opts Options) (int64, error) {
	p := newPipeline(ctx, r, replicaID, opts)
	readErr := func() error {
		count := blocks.Count(src.Size)
		for i := int64(0); i < count; {
			if changed[i/64] == 0 && i%64 == 0 {
				i += 64 // a word of unchanged blocks
				continue
			}
			if !changed.has(i) {
				i++
				continue
			}
			j := i + 1
			for j < count && changed.has(j) && (j-i)*blocks.BlockSize < blocks.MaxRun {
				j++
			}
			offset, length := i*blocks.BlockSize, min(j*blocks.BlockSize, src.Size)-i*blocks.BlockSize
			i = j
			if err := ctx.Err(); err != nil {
				return err
			}
			if p.failed.Load() {
				return nil // the writer's error is the one to report
			}
			b := p.reserve(length)
			if err := readFull(src.Reader, b, offset); err != nil {
				return unreadable(src, offset, err)
			}
			p.add(replica.Run{Offset: offset, Data: b})
		}
		return nil
	}()
	return p.finish(readErr)
}

func unreadable(src Source, offset int64, err error) error {
	return &agentproto.TaskError{Code: agentproto.CodeDiskUnreadable, Message: fmt.Sprintf("source disk %s at offset %d: %v", src.Name, offset, err), Recoverable: true}
}

// pipeline writes batches of runs on one goroutine while the caller reads
// the next: two buffers of the store's batch size (plus one run), so one
// flush of the undo log (directory) or one round of concurrent page writes
// (Azure) per batch.
type pipeline struct {
	ctx       context.Context
	r         replica.Store
	replicaID string
	opts      Options
	limit     int64
	bufs      chan []byte
	work      chan batch
	done      chan error
	failed    atomic.Bool
	sent      int64 // the writer's; read after done
	allocated int
	cur       batch
}

// batch is the runs of one buffer: used bytes of it were read, of which
// the runs' bytes are to be written (a tracked copy reads blocks that
// turn out not to differ).
type batch struct {
	runs  []replica.Run
	used  int64
	bytes int64
	buf   []byte
}

func newPipeline(ctx context.Context, r replica.Store, replicaID string, opts Options) *pipeline {
	p := &pipeline{ctx: ctx, r: r, replicaID: replicaID, opts: opts, limit: batchBytes,
		bufs: make(chan []byte, 2), work: make(chan batch, 1), done: make(chan error, 1)}
	if b, ok := r.(interface{ BatchBytes() int64 }); ok && b.BatchBytes() > 0 {
		p.limit = b.BatchBytes()
	}
	go func() {
		var first error
		for b := range p.work {
			if first == nil {
				first = writeBatch(ctx, r, replicaID, b.runs, b.bytes, opts.Throttle)
				if first == nil {
					p.sent += b.bytes
					if last := b.runs[len(b.runs)-1]; opts.Progress != nil {
						opts.Progress(last.Offset + int64(len(last.Data)))
					}
				} else {
					p.failed.Store(true)
				}
			}
			p.bufs <- b.buf
		}
		p.done <- first
	}()
	return p
}

func (p *pipeline) buffer() []byte {
	select {
	case b := <-p.bufs:
		return b
	default:
	}
	if p.allocated < 2 {
		p.allocated++
		return make([]byte, p.limit+blocks.MaxRun)
	}
	return <-p.bufs
}

// reserve returns n (at most MaxRun) bytes of the current batch's buffer
// to read into, handing the batch to the writer first when they do not
// fit.
func (p *pipeline) reserve(n int64) []byte {
	if p.cur.buf == nil {
		p.cur.buf = p.buffer()
	}
	if p.cur.used > 0 && p.cur.used+n > p.limit {
		if len(p.cur.runs) == 0 {
			p.cur.used = 0 // nothing to write: the buffer is read into again
		} else {
			p.work <- p.cur
			p.cur = batch{buf: p.buffer()}
		}
	}
	b := p.cur.buf[p.cur.used : p.cur.used+n]
	p.cur.used += n
	return b
}

// room is how many bytes the current batch takes before reserve hands it
// to the writer.
func (p *pipeline) room() int64 {
	if p.cur.buf == nil || p.cur.used == 0 {
		return p.limit
	}
	return p.limit - p.cur.used
}

// add queues runs whose data lie in reserved bytes.
func (p *pipeline) add(runs ...replica.Run) {
	for _, run := range runs {
		p.cur.runs = append(p.cur.runs, run)
		p.cur.bytes += int64(len(run.Data))
	}
}

// finish hands the last batch to the writer and waits for it: the bytes
// written, and the writer's error, else the reader's.
func (p *pipeline) finish(readErr error) (int64, error) {
	if len(p.cur.runs) > 0 {
		p.work <- p.cur
	}
	close(p.work)
	if err := <-p.done; err != nil {
		return p.sent, err
	}
	return p.sent, readErr
}

// writeBatch paces and writes one batch of runs.
func writeBatch(ctx context.Context, r replica.Store, replicaID string, runs []replica.Run, n int64, throttle Throttle) error {
	if throttle != nil {
		if err := throttle.WaitN(ctx, int(n)); err != nil {
			return err
		}
	}
	if err := r.WriteRuns(replicaID, runs); err != nil {
		return TargetError(err)
	}
	return nil
}

// TargetError classifies a failure of the target: a missing or unwritable
// directory may come back (a NAS remounting), and a full one may be freed,
// so they are retried.
func TargetError(err error) error {
	var te *agentproto.TaskError
	if errors.As(err, &te) {
		return err
	}
	code := agentproto.CodeTargetUnavailable
	switch {
	case errors.Is(err, fs.ErrPermission):
		code = agentproto.CodeTargetNotWritable
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		code = agentproto.CodeTargetFull
	}
	return &agentproto.TaskError{Code: code, Message: "the replica target: " + err.Error(), Recoverable: true}
}
