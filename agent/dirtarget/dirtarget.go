// Package dirtarget keeps replicas in a directory (local disk or a NAS),
// with recovery points that cost only the data changed after them.
//
// Layout, under ROOT/VM-ID/:
//
//	disks/DISK.vhd      the newest replica: the data rounded up to a MiB,
//	                    then a fixed-VHD footer (as on Azure)
//	disks/DISK.hashes   16-byte xxh3-128 of every 4 KiB block of it
//	disks/DISK.json     its size and synced signature; written last when
//	                    the disk is made, so it says the replica is whole
//	points/SEQ-ID/manifest.json   a recovery point: time, consistency, disks
//	points/SEQ-ID/DISK.undo       before-images of the blocks written after
//	                              this point (each block once, with its hash)
//	vm.json                      which VM these are (agentproto.ReplicaDescriptor),
//	                              replaced whole when it changes
//
// Undo logs instead of copies: creating a point costs nothing; a write
// after it first saves the block's old content in the newest point's undo
// log, once. Reading point P takes each block from the oldest undo log at
// or after P that holds it, else from the replica. Deleting the oldest
// point deletes its directory and nothing else.
//
// Crash safety, against power loss and not only a killed process (only
// what was fsynced survives; a name in a directory only once the directory
// was fsynced):
//   - A batch of writes (WriteRuns) saves its before-images and fsyncs the
//     undo log, then marks its blocks' hashes unknown and fsyncs the hash
//     file, then writes and fsyncs the data, and only then writes the new
//     hashes. So a durable hash is never newer than the durable data: after
//     a crash a block's hash is right or unknown (the next cycle resends
//     it), and a point's before-image is durable before its block changes.
//   - CreatePoint fsyncs data and hashes before the manifest appears.
//   - Manifests and metadata are replaced whole (temporary file, fsync,
//     rename, fsync of the directory). A point's directory appears by
//     rename, manifest included; it goes by rename to .deleting-… first.
//   - Undo records carry checksums; a torn tail (a crash mid-batch) is cut
//     off before the log grows again or a newer point is made.
//   - Leftovers of interrupted operations are removed by the first change
//     a Replica makes (and by Open); readers ignore them.
package dirtarget

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/vhd"
)

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Options are what OpenWith may be given; the zero value is the OS and
// the default logger.
type Options struct {
	// FS is the filesystem; nil is the operating system's.
	FS FS
	// Logger receives notes such as a recovery point skipped for a damaged
	// manifest; nil is slog.Default().
	Logger *slog.Logger
}

// Replica is one VM's replicas in a directory target.
type Replica struct {
	dir string
	fs  FS
	log *slog.Logger

	// Lock order: writes, then a disk's mu, then mu (held briefly, never
	// while taking another lock).
	writes sync.RWMutex // WriteRun shares it; CreatePoint takes it alone
	mu     sync.Mutex
	disks  map[string]*disk
	newest string // the newest point directory's name, "" if none
	looked bool   // newest is known

	metaMu sync.Mutex // serializes read-change-write of disk metadata

	recoverMu sync.Mutex
	recovered bool
}

type disk struct {
	mu      sync.Mutex
	data    File // DISK.vhd
	hashes  File
	size    int64    // source size
	undo    *undoLog // of the point undoFor; nil after an error, so it is read again
	undoFor string
}

func (d *disk) files() []File {
	fs := []File{d.data, d.hashes}
	if d.undo != nil {
		fs = append(fs, d.undo.f)
	}
	return fs
}

// Open opens (or creates) the replica directory of vmID under root.
func Open(root, vmID string) (*Replica, error) { return OpenWith(root, vmID, Options{}) }

// OpenWith is Open with options. It also removes what operations cut
// short by a crash left behind.
func OpenWith(root, vmID string, opts Options) (*Replica, error) {
	r, err := newReplica(root, vmID, opts)
	if err != nil {
		return nil, err
	}
	// The new directories' names must survive a power cut too; the root's
	// own name only if we made it (it is usually a mount point).
	synced := []string{root, r.dir}
	if _, err := r.fs.Stat(root); errors.Is(err, fs.ErrNotExist) {
		synced = append(synced, filepath.Dir(root))
	}
	for _, sub := range []string{"disks", "points"} {
		if err := r.fs.MkdirAll(filepath.Join(r.dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("replica directory: %w", err)
		}
	}
	for _, dir := range synced {
		if err := r.fs.SyncDir(dir); err != nil {
			return nil, fmt.Errorf("replica directory: %w", err)
		}
	}
	if _, err := r.fs.Stat(filepath.Join(root, MarkerName)); errors.Is(err, fs.ErrNotExist) {
		if err := writeAtomic(r.fs, filepath.Join(root, MarkerName), []byte("Lifeboat replicas: one directory per VM.\n")); err != nil {
			return nil, fmt.Errorf("target marker: %w", err)
		}
	}
	if err := r.recoverOnce(); err != nil {
		return nil, err
	}
	return r, nil
}

func newReplica(root, vmID string, opts Options) (*Replica, error) {
	if !safeName.MatchString(vmID) {
		return nil, fmt.Errorf("VM id %q cannot be a directory name", vmID)
	}
	r := &Replica{dir: filepath.Join(root, vmID), fs: opts.FS, log: opts.Logger, disks: map[string]*disk{}}
	if r.fs == nil {
		r.fs = OSFS{}
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	return r, nil
}

// MarkerName is a file Open leaves at the target's root. A target root
// without it is not the target (a NAS whose share is not mounted leaves
// its empty mount point): replicas missing there may come back. With it,
// missing replicas were deleted.
const MarkerName = ".lifeboat-target"

// Mounted reports whether root holds the target's marker.
func Mounted(root string) bool {
	_, err := os.Stat(filepath.Join(root, MarkerName))
	return err == nil
}

// OpenExisting opens the replica directory of vmID under root, which must
// exist already. Replication cycles use it: a target that vanished (a NAS
// not mounted) must fail the cycle, not receive a fresh, empty replica in
// the empty mount point.
func OpenExisting(root, vmID string) (*Replica, error) {
	return OpenExistingWith(root, vmID, Options{})
}

// OpenExistingWith is OpenExisting with options. Unlike OpenWith it
// changes nothing until asked to: readers (verify, failover) may open a
// replica that a cycle elsewhere writes.
func OpenExistingWith(root, vmID string, opts Options) (*Replica, error) {
	r, err := newReplica(root, vmID, opts)
	if err != nil {
		return nil, err
	}
	for _, sub := range []string{"disks", "points"} {
		fi, err := r.fs.Stat(filepath.Join(r.dir, sub))
		if err != nil {
			return nil, fmt.Errorf("the replicas of VM %s are not in %s (is the target mounted?): %w", vmID, root, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("%s is not a directory", filepath.Join(r.dir, sub))
		}
	}
	return r, nil
}

// Close releases the open files.
func (r *Replica) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, d := range r.disks {
		for _, f := range d.files() {
			errs = append(errs, f.Close())
		}
	}
	r.disks = map[string]*disk{}
	return errors.Join(errs...)
}

// DeleteAll closes the replica and deletes its directory: renamed first,
// so the replica is gone at once even if the removal is cut short (a crash
// then leaves a hidden .deleted- directory, not half a replica).
func (r *Replica) DeleteAll() error {
	if err := r.Close(); err != nil {
		return err
	}
	root := filepath.Dir(r.dir)
	doomed := filepath.Join(root, fmt.Sprintf(".deleted-%s-%d", filepath.Base(r.dir), time.Now().UnixNano()))
	if err := r.fs.Rename(r.dir, doomed); err != nil {
		return err
	}
	if err := r.fs.SyncDir(root); err != nil {
		return err
	}
	return removeAll(r.fs, doomed)
}

func (r *Replica) disksDir() string  { return filepath.Join(r.dir, "disks") }
func (r *Replica) pointsDir() string { return filepath.Join(r.dir, "points") }

// CreateDisk makes an empty (all zero, sparse) replica for a source disk
// of size bytes, with its footer and hash file. A replica that exists
// already is kept.
//
// The metadata file is written last, atomically, after the data and hash
// files are durable under their names: it is what says the replica
// exists, so a crash before it leaves no disk, and CreateDisk starts over.
func (r *Replica) CreateDisk(diskID string, size int64) error {
	if !safeName.MatchString(diskID) {
		return fmt.Errorf("disk id %q cannot be a file name", diskID)
	}
	dataSize := vhd.DataSize(size)
	if size <= 0 || dataSize > vhd.MaxDataSize {
		return fmt.Errorf("disk size %d is not between 1 byte and %d bytes", size, vhd.MaxDataSize)
	}
	if err := r.recoverOnce(); err != nil {
		return err
	}
	base := filepath.Join(r.disksDir(), diskID)
	if r.diskExists(diskID) {
		return nil
	}
	footer, err := vhd.Footer{DataSize: dataSize, Created: time.Now()}.Marshal()
	if err != nil {
		return err
	}
	if err := r.writeNew(base+".vhd", func(f File) error {
		_, err := f.WriteAt(footer, dataSize)
		return err
	}); err != nil {
		return err
	}
	if err := r.writeNew(base+".hashes", func(f File) error {
		return writeZeroHashes(f, 0, blocks.Count(dataSize))
	}); err != nil {
		return err
	}
	if err := r.fs.SyncDir(r.disksDir()); err != nil {
		return err
	}
	meta, _ := json.Marshal(diskMeta{SizeBytes: size})
	return writeAtomic(r.fs, r.metaPath(diskID), meta)
}

// diskExists says whether a disk's replica was made whole.
func (r *Replica) diskExists(diskID string) bool {
	if _, err := r.readMeta(diskID); err != nil {
		return false
	}
	base := filepath.Join(r.disksDir(), diskID)
	for _, suffix := range []string{".vhd", ".hashes"} {
		if _, err := r.fs.Stat(base + suffix); err != nil {
			return false
		}
	}
	return true
}

// writeNew makes a file at path through PATH.new: filled by fill, fsynced,
// renamed. The caller fsyncs the directory.
func (r *Replica) writeNew(path string, fill func(File) error) error {
	tmp := path + ".new"
	f, err := r.fs.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o640)
	if err != nil {
		return err
	}
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return r.fs.Rename(tmp, path)
}

// writeZeroHashes writes the hash of zeros for blocks first… first+n-1,
// a MiB of hashes at a time, so a large disk needs no large buffer.
func writeZeroHashes(f File, first, n int64) error {
	chunk := make([]blocks.Hash, min(n, 1<<16))
	for i := range chunk {
		chunk[i] = blocks.ZeroHash
	}
	for done := int64(0); done < n; {
		k := min(int64(len(chunk)), n-done)
		if _, err := f.WriteAt(blocks.Encode(chunk[:k]), (first+done)*16); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// Resize grows the replica of a disk to size bytes. Every step can run
// again: the metadata, written last, says whether it is done.
func (r *Replica) Resize(diskID string, size int64) error {
	if err := r.recoverOnce(); err != nil {
		return err
	}
	d, err := r.disk(diskID)
	if err != nil {
		return err
	}
	r.writes.Lock()
	defer r.writes.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if size == d.size {
		return nil
	}
	if err := replica.CheckGrowth(d.size, size); err != nil {
		return err
	}
	oldData, newData := vhd.DataSize(d.size), vhd.DataSize(size)
	// New blocks hash as zeros: extend the hash file first.
	if err := writeZeroHashes(d.hashes, blocks.Count(oldData), blocks.Count(newData)-blocks.Count(oldData)); err != nil {
		return err
	}
	if newData != oldData {
		footer, err := vhd.Footer{DataSize: newData, Created: time.Now()}.Marshal()
		if err != nil {
			return err
		}
		// The old footer becomes data (zeros); the new one goes at the end.
		if _, err := d.data.WriteAt(make([]byte, vhd.FooterSize), oldData); err != nil {
			return err
		}
		if _, err := d.data.WriteAt(footer, newData); err != nil {
			return err
		}
	}
	if err := errors.Join(d.data.Sync(), d.hashes.Sync()); err != nil {
		return err
	}
	if err := r.updateMeta(diskID, func(m *diskMeta) { m.SizeBytes, m.Synced = size, nil }); err != nil {
		return err
	}
	d.size = size
	return nil
}

func (r *Replica) disk(diskID string) (*disk, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d, ok := r.disks[diskID]; ok {
		return d, nil
	}
	if !safeName.MatchString(diskID) {
		return nil, fmt.Errorf("disk id %q cannot be a file name", diskID)
	}
	base := filepath.Join(r.disksDir(), diskID)
	meta, err := r.readMeta(diskID)
	if err != nil {
		return nil, fmt.Errorf("replica of disk %s: %w", diskID, err)
	}
	d := &disk{size: meta.SizeBytes}
	if d.data, err = r.fs.OpenFile(base+".vhd", os.O_RDWR, 0); err != nil {
		return nil, err
	}
	if d.hashes, err = r.fs.OpenFile(base+".hashes", os.O_RDWR, 0); err != nil {
		d.data.Close()
		return nil, err
	}
	r.disks[diskID] = d
	return d, nil
}

// DiskSize is the source size the replica of a disk holds.
func (r *Replica) DiskSize(diskID string) (int64, error) {
	d, err := r.disk(diskID)
	if err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.size, nil
}

// ReadHashes reads the stored hashes of blocks first… of a disk's replica;
// past the end of the hash file they read as unknown.
func (r *Replica) ReadHashes(diskID string, first int64, dst []blocks.Hash) error {
	d, err := r.disk(diskID)
	if err != nil {
		return err
	}
	return readHashes(d.hashes, first, dst)
}

func readHashes(f File, first int64, dst []blocks.Hash) error {
	buf := make([]byte, len(dst)*16)
	n, err := f.ReadAt(buf, first*16)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	for i := range dst {
		if (i+1)*16 <= n {
			copy(dst[i][:], buf[i*16:])
		} else {
			dst[i] = replica.UnknownHash
		}
	}
	return nil
}

// Disks lists the disks that have a replica.
func (r *Replica) Disks() ([]string, error) {
	entries, err := r.fs.ReadDir(r.disksDir())
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok && safeName.MatchString(name) {
			ids = append(ids, name)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// DeleteDisk deletes the replica of a disk that no recovery point holds:
// its metadata first (durably), so a deletion cut short leaves no half
// replica that looks whole.
func (r *Replica) DeleteDisk(diskID string) error {
	if !safeName.MatchString(diskID) {
		return fmt.Errorf("disk id %q cannot be a file name", diskID)
	}
	if err := r.recoverOnce(); err != nil {
		return err
	}
	points, err := r.Points()
	if err != nil {
		return err
	}
	if p := replica.HeldByAPoint(points, diskID); p != "" {
		return fmt.Errorf("the replica of disk %s is held by recovery point %s", diskID, p)
	}
	r.mu.Lock()
	if d, ok := r.disks[diskID]; ok {
		for _, f := range d.files() {
			f.Close()
		}
		delete(r.disks, diskID)
	}
	r.mu.Unlock()
	base := filepath.Join(r.disksDir(), diskID)
	for _, suffix := range []string{".json", ".vhd", ".hashes"} {
		if err := r.fs.Remove(base + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if suffix == ".json" {
			if err := r.fs.SyncDir(r.disksDir()); err != nil {
				return err
			}
		}
	}
	return r.fs.SyncDir(r.disksDir())
}

// The types shared with the other targets.
type (
	Run             = replica.Run
	Point           = replica.Point
	SourceSignature = replica.SourceSignature
	Mismatch        = replica.Mismatch
)

var _ replica.Store = (*Replica)(nil)

type diskMeta struct {
	SizeBytes int64            `json:"size_bytes"`
	Synced    *SourceSignature `json:"synced,omitempty"`
}

func (r *Replica) metaPath(diskID string) string {
	return filepath.Join(r.disksDir(), diskID+".json")
}

// SyncedSignature is the source signature at which the replica last equalled
// its source, if one was recorded.
func (r *Replica) SyncedSignature(diskID string) (*SourceSignature, error) {
	m, err := r.readMeta(diskID)
	return m.Synced, err
}

// SetSyncedSignature records (or, with nil, forgets) that the replica equals
// the source file with this signature.
func (r *Replica) SetSyncedSignature(diskID string, sig *SourceSignature) error {
	return r.updateMeta(diskID, func(m *diskMeta) { m.Synced = sig })
}

func (r *Replica) readMeta(diskID string) (diskMeta, error) {
	var m diskMeta
	b, err := readFile(r.fs, r.metaPath(diskID))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("replica of disk %s: damaged metadata: %w", diskID, err)
	}
	return m, nil
}

// updateMeta changes a disk's metadata file, replaced whole.
func (r *Replica) updateMeta(diskID string, change func(*diskMeta)) error {
	r.metaMu.Lock()
	defer r.metaMu.Unlock()
	m, err := r.readMeta(diskID)
	if err != nil {
		return err
	}
	change(&m)
	out, _ := json.Marshal(m)
	return writeAtomic(r.fs, r.metaPath(diskID), out)
}
