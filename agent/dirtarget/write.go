package dirtarget

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// WriteRun writes data at off in the replica of a disk. off must be block
// aligned; data may end short only at the disk's end. The blocks' old
// content is first saved for the newest recovery point.
func (r *Replica) WriteRun(diskID string, off int64, data []byte) error {
	return r.WriteRuns(diskID, []Run{{Offset: off, Data: data}})
}

// WriteRuns writes several runs as one batch, in an order that a power cut
// at any moment leaves safe:
//
//  1. the before-images go to the newest point's undo log, fsynced: the
//     point must be readable whatever happens to the replica next;
//  2. the blocks' hashes become unknown, fsynced: from here the replica
//     blocks may hold anything, and no durable hash may claim otherwise;
//  3. the data is written and fsynced;
//  4. the new hashes are written, not fsynced: lost, they leave "unknown",
//     and the next cycle resends the block. Sync or CreatePoint makes them
//     durable (as does step 2 of the next batch).
func (r *Replica) WriteRuns(diskID string, runs []Run) error {
	if err := r.recoverOnce(); err != nil {
		return err
	}
	d, err := r.disk(diskID)
	if err != nil {
		return err
	}
	if err := replica.CheckRuns(runs, d.size); err != nil {
		return err
	}
	r.writes.RLock()
	defer r.writes.RUnlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := r.saveBeforeImages(diskID, d, runs); err != nil {
		return fmt.Errorf("save before-images for the recovery point: %w", err)
	}
	for _, run := range runs {
		if err := writeHashes(d.hashes, run, func([]byte) blocks.Hash { return replica.UnknownHash }); err != nil {
			return err
		}
	}
	if err := d.hashes.Sync(); err != nil {
		return err
	}
	for _, run := range runs {
		if _, err := d.data.WriteAt(run.Data, run.Offset); err != nil {
			return err
		}
	}
	if err := d.data.Sync(); err != nil {
		return err
	}
	for _, run := range runs {
		if err := writeHashes(d.hashes, run, blocks.HashBlock); err != nil {
			return err
		}
	}
	return nil
}

// writeHashes writes hash(block) for every block of run into the hash file.
func writeHashes(f File, run Run, hash func([]byte) blocks.Hash) error {
	out := make([]byte, 0, blocks.Count(int64(len(run.Data)))*16)
	for i := 0; i < len(run.Data); i += blocks.BlockSize {
		h := hash(run.Data[i:min(i+blocks.BlockSize, len(run.Data))])
		out = append(out, h[:]...)
	}
	_, err := f.WriteAt(out, run.Offset/blocks.BlockSize*16)
	return err
}

// Sync makes every write so far durable, before a point is taken.
func (r *Replica) Sync() error {
	r.mu.Lock()
	disks := make([]*disk, 0, len(r.disks))
	for _, d := range r.disks {
		disks = append(disks, d)
	}
	r.mu.Unlock()
	for _, d := range disks {
		if err := d.sync(); err != nil {
			return err
		}
	}
	return nil
}

func (d *disk) sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return errors.Join(d.data.Sync(), d.hashes.Sync())
}

// saveBeforeImages appends, to the newest point's undo log, the blocks of
// the runs not saved there yet, and flushes it once. With no point yet,
// there is nothing to preserve.
//
// A block's record carries the hash the hash file holds for it, not a hash
// of the bytes read now: if the storage changed the block since it was
// written, verifying the point must still see the change.
func (r *Replica) saveBeforeImages(diskID string, d *disk, runs []Run) error {
	newest, err := r.newestDir()
	if err != nil || newest == "" {
		return err
	}
	if d.undo == nil || d.undoFor != newest {
		if err := r.openUndo(d, diskID, newest); err != nil {
			return err
		}
	}
	wrote := false
	block := make([]byte, blocks.BlockSize)
	hash := make([]blocks.Hash, 1)
	for _, run := range runs {
		off, n := run.Offset, int64(len(run.Data))
		for b := off / blocks.BlockSize; b*blocks.BlockSize < off+n; b++ {
			if _, saved := d.undo.idx[b]; saved {
				continue
			}
			clear(block)
			if _, err := d.data.ReadAt(block, b*blocks.BlockSize); err != nil && !errors.Is(err, io.EOF) {
				return r.dropUndo(d, err)
			}
			if err := readHashes(d.hashes, b, hash); err != nil {
				return r.dropUndo(d, err)
			}
			if err := d.undo.appendRecord(b, hash[0], block); err != nil {
				return r.dropUndo(d, err)
			}
			wrote = true
		}
	}
	if wrote {
		if err := d.undo.f.Sync(); err != nil {
			return r.dropUndo(d, err)
		}
	}
	return nil
}

// dropUndo forgets the open undo log after a failed append: what reached
// the file is unknown, so it is read (and its tail cut) again before use.
func (r *Replica) dropUndo(d *disk, err error) error {
	d.undo.f.Close()
	d.undo, d.undoFor = nil, ""
	return err
}

// openUndo opens (creating it durably) the undo log of a disk for point
// directory pointDir, and cuts off a tail a crash left torn.
func (r *Replica) openUndo(d *disk, diskID, pointDir string) error {
	if d.undo != nil {
		d.undo.f.Close()
		d.undo, d.undoFor = nil, ""
	}
	dir := filepath.Join(r.pointsDir(), pointDir)
	path := filepath.Join(dir, diskID+".undo")
	_, statErr := r.fs.Stat(path)
	f, err := r.fs.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return err
	}
	l, err := readUndo(f, true)
	if err == nil {
		err = l.cutTornTail()
	}
	if err == nil && statErr != nil {
		err = r.fs.SyncDir(dir) // the new log's name must outlive a power cut
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("undo log %s: %w", path, err)
	}
	d.undo, d.undoFor = l, pointDir
	return nil
}

// BatchBytes is how much data the engine hands WriteRuns at once. Each
// batch costs two fsyncs, and a crash during one leaves its blocks'
// hashes unknown, so they are all sent again: 8 MiB keeps what an
// interrupted copy resends small without making the fsyncs dominate.
func (r *Replica) BatchBytes() int64 { return 8 << 20 }
