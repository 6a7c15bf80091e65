// Package replicate copies a source disk's changes into its replica: hash
// the source in 4 KiB blocks, compare with the replica's stored hashes, and
// write only the runs that differ (on a fresh replica: only the blocks that
// are not zeros).
package replicate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

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

// quietFor is how long a file must have gone unmodified before its
// signature is trusted: file times have a coarse clock, so a write in the
// same tick as our look would leave them unchanged (the "racy git" case).
const quietFor = 2 * time.Second

// Disk brings the replica replicaID up to date with the source file at
// path (size bytes), and returns the bytes written. progress gets the
// offset reached. Errors are task errors: recoverable or not.
//
// A source file whose size, inode, modification and change times are those
// recorded when the replica last equalled it is not read at all.
func Disk(ctx context.Context, r replica.Store, replicaID, path string, size int64, throttle Throttle, progress func(int64)) (int64, error) {
	sent, _, err := disk(ctx, r, replicaID, path, size, throttle, progress, 0)
	return sent, err
}

// DiskSkipped is Disk that also says whether the file was skipped unread.
func DiskSkipped(ctx context.Context, r replica.Store, replicaID, path string, size int64, throttle Throttle, progress func(int64)) (int64, bool, error) {
	return disk(ctx, r, replicaID, path, size, throttle, progress, 0)
}

// DiskUnlessResync is Disk for a scheduled cycle: when the blocks that
// differ reach limitPercent of the disk (0: no limit), it sends nothing
// and returns a CodeResyncRequired task error.
func DiskUnlessResync(ctx context.Context, r replica.Store, replicaID, path string, size int64, throttle Throttle, progress func(int64), limitPercent int) (int64, error) {
	sent, _, err := disk(ctx, r, replicaID, path, size, throttle, progress, limitPercent)
	return sent, err
}

// Throttle paces the bytes written; nil writes at full speed.
type Throttle interface {
	WaitN(ctx context.Context, n int) error
}

// NewThrottle limits writes to mbps Mbit/s (a token bucket holding one
// batch); 0 means no limit and returns nil.
func NewThrottle(mbps int) Throttle {
	if mbps <= 0 {
		return nil
	}
	return &limiter{rate.NewLimiter(rate.Limit(float64(mbps)*1e6/8), batchBytes+blocks.MaxRun)}
}

type limiter struct{ l *rate.Limiter }

// WaitN waits for n bytes' worth of tokens, in pieces no larger than the
// bucket.
func (t *limiter) WaitN(ctx context.Context, n int) error {
	for n > 0 {
		k := min(n, t.l.Burst())
		if err := t.l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func signature(fi os.FileInfo) *replica.SourceSignature {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return &replica.SourceSignature{Size: fi.Size(), Inode: st.Ino, ModNano: st.Mtim.Nano(), ChgNano: st.Ctim.Nano()}
}

func disk(ctx context.Context, r replica.Store, replicaID, path string, size int64, throttle Throttle, progress func(int64), limitPercent int) (int64, bool, error) {
	src, err := os.Open(path)
	if err != nil {
		return 0, false, &agentproto.TaskError{Code: "disk_unreadable", Message: fmt.Sprintf("source disk %s: %v", path, err)}
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return 0, false, err
	}
	before := signature(fi)
	if synced, err := r.SyncedSignature(replicaID); err == nil && before != nil && synced != nil && *synced == *before {
		return 0, true, nil
	}
	sent, err := copyChanges(ctx, r, replicaID, src, fi, size, throttle, progress, limitPercent)
	var te *agentproto.TaskError
	if errors.As(err, &te) && te.Code == agentproto.CodeResyncRequired {
		return 0, false, err // nothing was written
	}
	if err != nil {
		// Whatever was written, the replica no longer matches a known state.
		_ = r.SetSyncedSignature(replicaID, nil)
		return sent, false, err
	}
	// Trust the signature only if the file did not change while we read it
	// and had been quiet for a while before.
	var record *replica.SourceSignature
	if after, err := os.Stat(path); err == nil && before != nil {
		if a := signature(after); a != nil && *a == *before &&
			time.Since(time.Unix(0, max(before.ModNano, before.ChgNano))) > quietFor {
			record = before
		}
	}
	if err := r.SetSyncedSignature(replicaID, record); err != nil {
		return sent, false, TargetError(err)
	}
	return sent, false, nil
}

func copyChanges(ctx context.Context, r replica.Store, replicaID string, src *os.File, fi os.FileInfo, size int64, throttle Throttle, progress func(int64), limitPercent int) (int64, error) {
	path := src.Name()
	switch {
	case fi.Size() < size:
		return 0, &agentproto.TaskError{Code: "disk_resized", Message: fmt.Sprintf("source disk %s shrank to %d bytes from %d; a replica cannot shrink: disable protection and enable it again", path, fi.Size(), size)}
	case fi.Size() > size:
		// The disk grew: so does its replica, and the new part is sent as
		// any change is (a fresh area of zeros sends nothing).
		if err := r.Resize(replicaID, fi.Size()); err != nil {
			return 0, TargetError(err)
		}
		size = fi.Size()
	}
	now, err := blocks.HashDisk(src, size, HashWorkers())
	if err != nil {
		return 0, &agentproto.TaskError{Code: "disk_unreadable", Message: err.Error(), Recoverable: true}
	}
	old, err := r.Hashes(replicaID)
	if err != nil {
		return 0, TargetError(err)
	}
	if len(old) < len(now) {
		return 0, &agentproto.TaskError{Code: "invalid_replica", Message: "the replica is smaller than the source disk; disable and enable protection again"}
	}
	changed := blocks.Changed(old[:len(now)], now, size)
	if limitPercent > 0 {
		var pending int64
		for _, e := range changed {
			pending += e.Length
		}
		if pending*100 >= int64(limitPercent)*size {
			return 0, &agentproto.TaskError{Code: agentproto.CodeResyncRequired, Message: fmt.Sprintf(
				"%d of the %d bytes of disk %s changed since the last cycle (%d %%, the limit is %d %%): a resynchronization is needed",
				pending, size, filepath.Base(src.Name()), pending*100/max(size, 1), limitPercent)}
		}
	}
	// Runs go in batches of up to batchBytes: one flush of the undo log
	// (directory) or one round of concurrent page writes (Azure) per batch.
	// Two buffers: the next batch is read while the last one is written.
	limit := int64(batchBytes)
	if b, ok := r.(interface{ BatchBytes() int64 }); ok {
		limit = b.BatchBytes()
	}
	bufs := make(chan []byte, 2)
	bufs <- make([]byte, limit+blocks.MaxRun)
	bufs <- make([]byte, limit+blocks.MaxRun)
	type batch struct {
		runs  []replica.Run
		bytes int64
		buf   []byte
	}
	work := make(chan batch, 1)
	var failed atomic.Bool
	var sent int64 // the writer's; read after done
	done := make(chan error, 1)
	go func() {
		var first error
		for b := range work {
			if first == nil {
				first = writeBatch(ctx, r, replicaID, b.runs, b.bytes, throttle)
				if first == nil {
					sent += b.bytes
					if last := b.runs[len(b.runs)-1]; progress != nil {
						progress(last.Offset + int64(len(last.Data)))
					}
				} else {
					failed.Store(true)
				}
			}
			bufs <- b.buf
		}
		done <- first
	}()
	readErr := func() error {
		cur := batch{buf: <-bufs}
		for _, e := range changed {
			if err := ctx.Err(); err != nil {
				return err
			}
			if failed.Load() {
				return nil // the writer's error is the one to report
			}
			if cur.bytes+e.Length > limit {
				work <- cur
				cur = batch{buf: <-bufs}
			}
			b := cur.buf[cur.bytes : cur.bytes+e.Length]
			if _, err := src.ReadAt(b, e.Offset); err != nil {
				return &agentproto.TaskError{Code: "disk_unreadable", Message: err.Error(), Recoverable: true}
			}
			cur.runs = append(cur.runs, replica.Run{Offset: e.Offset, Data: b})
			cur.bytes += e.Length
		}
		if len(cur.runs) > 0 {
			work <- cur
		}
		return nil
	}()
	close(work)
	writeErr := <-done
	if writeErr != nil {
		return sent, writeErr
	}
	return sent, readErr
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
// directory may come back (a NAS remounting), so it is retried.
func TargetError(err error) error {
	var te *agentproto.TaskError
	if errors.As(err, &te) {
		return err
	}
	code := "target_unavailable"
	if errors.Is(err, fs.ErrPermission) {
		code = "target_not_writable"
	}
	return &agentproto.TaskError{Code: code, Message: "the replica target: " + err.Error(), Recoverable: true}
}
