// Package replica is what the agent asks of replica storage, whatever it
// is: a directory (package dirtarget) or Azure Blob page blobs (package
// blobtarget). Both keep, per disk, the newest replica laid out as a fixed
// VHD and the 16-byte hash of each of its 4 KiB blocks, and recovery points
// of all of a VM's disks together.
package replica

import (
	"fmt"
	"io"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/vhd"
)

// Store is one VM's replicas on one target. A Store is used by one task at
// a time; WriteRuns may be called from one goroutine per disk.
type Store interface {
	// CreateDisk makes an empty (all zero) replica for a source disk of
	// size bytes, with its footer and hashes. An existing one is kept.
	CreateDisk(diskID string, size int64) error
	// Hashes returns the block hashes of the newest replica of a disk.
	Hashes(diskID string) ([]blocks.Hash, error)
	// WriteRuns writes runs (block aligned, each at most blocks.MaxRun)
	// into the newest replica of a disk and records their hashes. A
	// failure leaves the touched blocks' hashes unknown, never stale.
	WriteRuns(diskID string, runs []Run) error
	// SyncedSignature is the source signature at which the replica last
	// equalled its source, if one was recorded.
	SyncedSignature(diskID string) (*SourceSignature, error)
	// SetSyncedSignature records (or, with nil, forgets) it.
	SetSyncedSignature(diskID string, sig *SourceSignature) error
	// CreatePoint records the replicas as they are now as one recovery
	// point of all the VM's disks. Call it after a cycle's writes ended.
	CreatePoint(id string, at time.Time, consistency string) (Point, error)
	// Points lists the recovery points, oldest first.
	Points() ([]Point, error)
	// DeletePoint deletes a recovery point that is not the newest.
	DeletePoint(id string) error
	// OpenPoint reads a disk as it was at a recovery point.
	OpenPoint(pointID, diskID string) (PointReader, int64, error)
	// VerifyPoint reads every block of a point back from storage and
	// checks it against its recorded hash.
	VerifyPoint(pointID string) (int64, []Mismatch, error)
	// RepairHashes marks unknown the hash of every block of a disk's
	// replica whose content no longer matches it, and returns their
	// offsets, so the next cycle sends them again.
	RepairHashes(diskID string) ([]int64, error)
	// Resize grows a disk's replica to a source disk that grew: the new
	// blocks are zeros (and hashed so) until a cycle writes them; the VHD
	// footer moves to the new end. Points made before keep their size.
	// Shrinking is refused.
	Resize(diskID string, size int64) error
	// DeleteAll deletes every replica and recovery point of the VM (its
	// protection was disabled with its data deleted). The store is unusable
	// after it.
	DeleteAll() error
	Close() error
}

// PointReader reads one disk at a recovery point.
type PointReader interface {
	io.ReaderAt
	io.Closer
}

// Run is data to write at an offset of a disk.
type Run struct {
	Offset int64
	Data   []byte
}

// Point is a recovery point of a VM.
type Point struct {
	Seq         int              `json:"seq"`
	ID          string           `json:"id"`
	Time        time.Time        `json:"time"`
	Consistency string           `json:"consistency"`
	Disks       map[string]int64 `json:"disks"` // disk id → size in bytes
}

// SourceSignature identifies a source disk file's content without reading
// it: if none of these changed, neither did the file.
type SourceSignature struct {
	Size    int64  `json:"size"`
	Inode   uint64 `json:"inode"`
	ModNano int64  `json:"mtime_ns"`
	ChgNano int64  `json:"ctime_ns"`
}

// Mismatch is a block of a recovery point whose content does not match its
// recorded hash: the storage changed it.
type Mismatch struct {
	Disk   string `json:"disk"`
	Offset int64  `json:"offset"`
}

// UnknownHash marks a block whose replica content is not known to match
// any recorded hash: no real block hashes to it, so the next comparison
// sends the block again.
var UnknownHash = blocks.Hash{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// CheckRuns refuses runs a store cannot write into a disk of size bytes:
// each starts on a block, is at most blocks.MaxRun, and ends on a block or
// at the disk's end.
func CheckRuns(runs []Run, size int64) error {
	for _, run := range runs {
		off, n := run.Offset, int64(len(run.Data))
		if off%blocks.BlockSize != 0 || off < 0 || off+n > size || n == 0 || n > blocks.MaxRun || (n%blocks.BlockSize != 0 && off+n != size) {
			return fmt.Errorf("write of %d bytes at %d is not block aligned inside the %d-byte disk", n, off, size)
		}
	}
	return nil
}

// CheckGrowth says whether a replica of from bytes may be resized to to
// bytes: it may only grow, and stay within what a fixed VHD holds.
func CheckGrowth(from, to int64) error {
	switch {
	case to < from:
		return fmt.Errorf("the source disk shrank from %d to %d bytes; shrinking a replica is not supported", from, to)
	case vhd.DataSize(to) > vhd.MaxDataSize:
		return fmt.Errorf("disk size %d is more than the %d bytes a fixed VHD holds", to, vhd.MaxDataSize)
	}
	return nil
}
