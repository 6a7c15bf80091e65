package dirtarget

import (
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/vhd"
)

// chunkBlocks is how many blocks verify and repair read at a time (4 MiB
// of data, 16 KiB of hashes): memory stays the same whatever the disk.
const chunkBlocks = blocks.MaxRun / blocks.BlockSize

// VerifyPoint reads every block of every disk of a recovery point from
// storage and checks it against the hash recorded when it was written: the
// replica's hash file for blocks still in the replica, the undo record's
// own hash for blocks kept for the point. It returns the blocks checked and
// the mismatches, by disk and offset.
func (r *Replica) VerifyPoint(pointID string) (int64, []Mismatch, error) {
	points, err := r.Points()
	if err != nil {
		return 0, nil, err
	}
	var point *Point
	for i := range points {
		if points[i].ID == pointID {
			point = &points[i]
		}
	}
	if point == nil {
		return 0, nil, fmt.Errorf("no recovery point %q", pointID)
	}
	diskIDs := make([]string, 0, len(point.Disks))
	for id := range point.Disks {
		diskIDs = append(diskIDs, id)
	}
	sort.Strings(diskIDs)
	var checked int64
	var bad []Mismatch
	for _, id := range diskIDs {
		n, diskBad, err := r.verifyDisk(pointID, id)
		checked += n
		bad = append(bad, diskBad...)
		if err != nil {
			return checked, bad, fmt.Errorf("verify disk %s: %w", id, err)
		}
	}
	return checked, bad, nil
}

func (r *Replica) verifyDisk(pointID, diskID string) (int64, []Mismatch, error) {
	d, err := r.disk(diskID)
	if err != nil {
		return 0, nil, err
	}
	pr, size, err := r.ReadPoint(pointID, diskID)
	if err != nil {
		return 0, nil, err
	}
	defer pr.Close()
	var checked int64
	var bad []Mismatch
	data := make([]byte, chunkBlocks*blocks.BlockSize)
	stored := make([]blocks.Hash, chunkBlocks)
	count := blocks.Count(size)
	for first := int64(0); first < count; first += chunkBlocks {
		n := min(chunkBlocks, count-first)
		if err := readStoredHashes(d.hashes, first, stored[:n]); err != nil {
			return checked, bad, err
		}
		chunk := data[:n*blocks.BlockSize]
		clear(chunk)
		if _, err := pr.data.ReadAt(chunk, first*blocks.BlockSize); err != nil && !errors.Is(err, io.EOF) {
			return checked, bad, err
		}
		for i := range n {
			b := first + i
			blk := chunk[i*blocks.BlockSize : (i+1)*blocks.BlockSize]
			want := stored[i]
			if src, off, e := pr.source(b); e != nil {
				if _, err := src.ReadAt(blk, off); err != nil {
					return checked, bad, err
				}
				want = e.hash
				if e.damage {
					want = replica.UnknownHash // never matches: the record's data is not what was saved
				}
			} else if (b+1)*blocks.BlockSize > size {
				clear(blk[size-b*blocks.BlockSize:]) // the replica pads the last block with zeros, as hashed
			}
			if blocks.HashBlock(blk) != want {
				bad = append(bad, Mismatch{Disk: diskID, Offset: b * blocks.BlockSize})
			}
			checked++
		}
	}
	return checked, bad, nil
}

// readStoredHashes reads hashes that must be in the hash file.
func readStoredHashes(f File, first int64, dst []blocks.Hash) error {
	buf := make([]byte, len(dst)*16)
	if _, err := f.ReadAt(buf, first*16); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("the hash file is shorter than the disk")
		}
		return err
	}
	for i := range dst {
		copy(dst[i][:], buf[i*16:])
	}
	return nil
}

// RepairHashes reads a disk's replica and, for every block whose content no
// longer matches its recorded hash (the storage changed it), records the
// hash as unknown so the next cycle rewrites the block. It returns the
// offsets of those blocks. The replica must not be written meanwhile.
func (r *Replica) RepairHashes(diskID string) ([]int64, error) {
	if err := r.recoverOnce(); err != nil {
		return nil, err
	}
	d, err := r.disk(diskID)
	if err != nil {
		return nil, err
	}
	r.writes.RLock()
	defer r.writes.RUnlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	var bad []int64
	data := make([]byte, chunkBlocks*blocks.BlockSize)
	stored := make([]blocks.Hash, chunkBlocks)
	count := blocks.Count(vhd.DataSize(d.size))
	for first := int64(0); first < count; first += chunkBlocks {
		n := min(chunkBlocks, count-first)
		if err := readStoredHashes(d.hashes, first, stored[:n]); err != nil {
			return bad, err
		}
		chunk := data[:n*blocks.BlockSize]
		clear(chunk)
		if _, err := d.data.ReadAt(chunk, first*blocks.BlockSize); err != nil && !errors.Is(err, io.EOF) {
			return bad, err
		}
		for i := range n {
			if blocks.HashBlock(chunk[i*blocks.BlockSize:(i+1)*blocks.BlockSize]) == stored[i] {
				continue
			}
			b := first + i
			bad = append(bad, b*blocks.BlockSize)
			if _, err := d.hashes.WriteAt(replica.UnknownHash[:], b*16); err != nil {
				return bad, err
			}
		}
	}
	if len(bad) > 0 {
		if err := d.hashes.Sync(); err != nil {
			return bad, err
		}
		// The replica no longer equals the source as last synced: the next
		// cycle must compare, not trust the source file's unchanged times.
		return bad, r.SetSyncedSignature(diskID, nil)
	}
	return bad, nil
}
