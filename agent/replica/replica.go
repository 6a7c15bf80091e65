// Package replica is what the agent asks of replica storage, whatever it
// is: a directory (package dirtarget) or Azure Blob page blobs (package
// blobtarget). Both keep, per disk, the newest replica laid out as a fixed
// VHD and the 16-byte hash of each of its 4 KiB blocks, and recovery points
// of all of a VM's disks together.
package replica

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/vhd"
)

// Store is one VM's replicas on one target. A Store is used by one task at
// a time; WriteRuns may be called from one goroutine per disk, and
// ReadHashes from several goroutines at once.
type Store interface {
	// CreateDisk makes an empty (all zero) replica for a source disk of
	// size bytes, with its footer and hashes. An existing one is kept.
	CreateDisk(diskID string, size int64) error
	// DiskSize is the source size the newest replica of a disk holds.
	DiskSize(diskID string) (int64, error)
	// ReadHashes fills dst with the stored hashes of the blocks first,
	// first+1, … of the newest replica of a disk. Blocks past the replica's
	// end read as UnknownHash. It reads only that range: per-cycle cost
	// must not grow with the disk where nothing changed.
	ReadHashes(diskID string, first int64, dst []blocks.Hash) error
	// WriteRuns writes runs (block aligned, each at most blocks.MaxRun)
	// into the newest replica of a disk and records their hashes. A
	// failure, or a crash, leaves the touched blocks' hashes unknown,
	// never stale.
	WriteRuns(diskID string, runs []Run) error
	// SyncedSignature is the source signature at which the replica last
	// equalled its source, if one was recorded.
	SyncedSignature(diskID string) (*SourceSignature, error)
	// SetSyncedSignature records (or, with nil, forgets) it.
	SetSyncedSignature(diskID string, sig *SourceSignature) error
	// CreatePoint records the replicas of spec.Disks as they are now as one
	// recovery point. Call it after a cycle's writes to all of them ended.
	// A point with this id that exists already is returned as it is.
	CreatePoint(spec PointSpec) (Point, error)
	// Points lists the recovery points, oldest first.
	Points() ([]Point, error)
	// DeletePoint deletes the oldest recovery point (never the newest).
	DeletePoint(id string) error
	// OpenPoint reads a disk as it was at a recovery point.
	OpenPoint(pointID, diskID string) (PointReader, int64, error)
	// VerifyPoint reads every block of a point back from storage and
	// checks it against the hash recorded when it was written.
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
	// Disks lists the disks that have a replica.
	Disks() ([]string, error)
	// DeleteDisk deletes the replica of a disk the VM no longer has, once
	// no recovery point holds it; while one does, it is refused.
	DeleteDisk(diskID string) error
	// Descriptor is the VM descriptor kept beside the replicas (JSON of
	// agentproto.ReplicaDescriptor: which VM they are of), or nil when
	// none was written.
	Descriptor() ([]byte, error)
	// SetDescriptor replaces the VM descriptor whole: a reader sees the
	// old one or the new one, never part of either.
	SetDescriptor(b []byte) error
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

// Consistency labels of a recovery point (DESIGN.md §6). They tell the
// truth: a point is labelled only as consistent as its capture was.
const (
	// ConsistencyApp: the guest was quiesced (a freeze command) while its
	// disks were captured.
	ConsistencyApp = "app"
	// ConsistencyCrash: every disk of the VM as at one instant, as after a
	// power cut.
	ConsistencyCrash = "crash"
	// ConsistencyInconsistent: the disks were read while the guest may have
	// written to them; usable only when chosen explicitly.
	ConsistencyInconsistent = "inconsistent"
)

// PointSpec is a recovery point to create.
type PointSpec struct {
	ID string
	// Time is the capture instant; for an inconsistent point, when the
	// read ended.
	Time time.Time
	// ReadStartedAt is when the read began, for a point whose disks were
	// read over a span (inconsistent); nil otherwise.
	ReadStartedAt *time.Time
	Consistency   string
	// Capture says how the disks were captured (freeze, reflink,
	// powered_off, unchanged, live), for the operator.
	Capture string
	// Disks are the replicas the point holds: the VM's disks now.
	Disks []string
}

// Point is a recovery point of a VM.
type Point struct {
	Seq           int              `json:"seq"`
	ID            string           `json:"id"`
	Time          time.Time        `json:"time"`
	ReadStartedAt *time.Time       `json:"read_started_at,omitempty"`
	Consistency   string           `json:"consistency"`
	Capture       string           `json:"capture,omitempty"`
	Disks         map[string]int64 `json:"disks"` // disk id → size in bytes
}

// Holds reports whether the point holds a replica of the disk.
func (p Point) Holds(diskID string) bool {
	_, ok := p.Disks[diskID]
	return ok
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

// CheckPointSpec refuses a point without disks or with a disk named twice.
func CheckPointSpec(spec PointSpec) error {
	if len(spec.Disks) == 0 {
		return fmt.Errorf("recovery point %s names no disk", spec.ID)
	}
	seen := map[string]bool{}
	for _, d := range spec.Disks {
		if seen[d] {
			return fmt.Errorf("recovery point %s names disk %s twice", spec.ID, d)
		}
		seen[d] = true
	}
	switch spec.Consistency {
	case ConsistencyApp, ConsistencyCrash, ConsistencyInconsistent:
	default:
		return fmt.Errorf("recovery point %s: consistency %q is not app, crash or inconsistent", spec.ID, spec.Consistency)
	}
	return nil
}

// HeldByAPoint returns the id of a point that holds diskID, or "".
func HeldByAPoint(points []Point, diskID string) string {
	for _, p := range points {
		if p.Holds(diskID) {
			return p.ID
		}
	}
	return ""
}

// QuietFor is how long a file must have gone unmodified before its
// signature is trusted: file times come from a coarse clock, and a write
// in flight when the file is looked at may update them before its data
// lands, so a write in the same tick as our look would leave them
// unchanged (the "racy git" case).
const QuietFor = 2 * time.Second

// FileSignature is the signature of a file as fi describes it, or nil
// where the platform gives no inode and change time.
func FileSignature(fi os.FileInfo) *SourceSignature {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return &SourceSignature{Size: fi.Size(), Inode: st.Ino, ModNano: st.Mtim.Nano(), ChgNano: st.Ctim.Nano()}
}

// FileUnchanged reports whether the file at path still has the signature
// before, taken at lookedAt, and whether that signature had been quiet for
// QuietFor when it was taken: then no write touched the file between the
// two looks.
func FileUnchanged(path string, before *SourceSignature, lookedAt time.Time) bool {
	if before == nil || !Quiet(before, lookedAt) {
		return false
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	after := FileSignature(fi)
	return after != nil && *after == *before
}

// Quiet reports whether a file with signature sig, looked at at lookedAt,
// had gone unmodified for QuietFor by then.
func Quiet(sig *SourceSignature, lookedAt time.Time) bool {
	return lookedAt.Sub(time.Unix(0, max(sig.ModNano, sig.ChgNano))) > QuietFor
}
