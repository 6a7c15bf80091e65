// Package dirtarget keeps replicas in a directory (local disk or a NAS),
// with recovery points that cost only the data changed after them.
//
// Layout, under ROOT/VM-ID/:
//
//	disks/DISK.vhd      the newest replica: the data rounded up to a MiB,
//	                    then a fixed-VHD footer (as on Azure)
//	disks/DISK.hashes   16-byte xxh3-128 of every 4 KiB block of it
//	points/SEQ-ID/manifest.json   a recovery point: time, consistency, disks
//	points/SEQ-ID/DISK.undo       before-images of the blocks written after
//	                              this point (each block once, with its hash)
//
// Undo logs instead of copies: creating a point costs nothing; a write
// after it first saves the block's old content in the newest point's undo
// log, once. Reading point P takes each block from the oldest undo log at
// or after P that holds it, else from the replica. Deleting the oldest
// point deletes its directory and nothing else.
//
// Crash safety: before-images reach the undo log (fsynced) before the
// replica block is overwritten, and a record cut short by a crash is
// dropped when the log is opened again. A point's manifest appears by
// rename, whole or not at all.
package dirtarget

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// An undo record: the block index, the block's hash (for verify), the block.
const (
	recordHeader = 8 + 16
	recordSize   = recordHeader + blocks.BlockSize
)

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Replica is one VM's replicas in a directory target.
type Replica struct {
	dir string

	// Lock order: writes, then a disk's mu, then mu (held briefly, never
	// while taking another lock).
	writes sync.RWMutex // WriteRun shares it; CreatePoint takes it alone
	mu     sync.Mutex
	disks  map[string]*disk
	newest *Point // cached; nil until looked up, or when there is none
	looked bool
}

type disk struct {
	mu       sync.Mutex
	data     *os.File // DISK.vhd
	hashes   *os.File
	size     int64 // source size
	undo     *os.File
	undoSeen map[int64]bool // blocks already saved in undo
	undoFor  string         // the point whose undo log is open
}

// Open opens (or creates) the replica directory of vmID under root.
func Open(root, vmID string) (*Replica, error) {
	if !safeName.MatchString(vmID) {
		return nil, fmt.Errorf("VM id %q cannot be a directory name", vmID)
	}
	dir := filepath.Join(root, vmID)
	for _, sub := range []string{"disks", "points"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("replica directory: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, MarkerName)); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(filepath.Join(root, MarkerName), []byte("Lifeboat replicas: one directory per VM.\n"), 0o640); err != nil {
			return nil, fmt.Errorf("target marker: %w", err)
		}
	}
	return &Replica{dir: dir, disks: map[string]*disk{}}, nil
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
	if !safeName.MatchString(vmID) {
		return nil, fmt.Errorf("VM id %q cannot be a directory name", vmID)
	}
	dir := filepath.Join(root, vmID)
	for _, sub := range []string{"disks", "points"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil {
			return nil, fmt.Errorf("the replicas of VM %s are not in %s (is the target mounted?): %w", vmID, root, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("%s is not a directory", filepath.Join(dir, sub))
		}
	}
	return &Replica{dir: dir, disks: map[string]*disk{}}, nil
}

// Close releases the open files.
func (r *Replica) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, d := range r.disks {
		for _, f := range []*os.File{d.data, d.hashes, d.undo} {
			if f != nil {
				errs = append(errs, f.Close())
			}
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
	doomed := filepath.Join(filepath.Dir(r.dir), fmt.Sprintf(".deleted-%s-%d", filepath.Base(r.dir), time.Now().UnixNano()))
	if err := os.Rename(r.dir, doomed); err != nil {
		return err
	}
	return os.RemoveAll(doomed)
}

// CreateDisk makes an empty (all zero, sparse) replica for a source disk
// of size bytes, with its footer and hash file. A replica that exists
// already is kept.
func (r *Replica) CreateDisk(diskID string, size int64) error {
	if !safeName.MatchString(diskID) {
		return fmt.Errorf("disk id %q cannot be a file name", diskID)
	}
	dataSize := vhd.DataSize(size)
	if size <= 0 || dataSize > vhd.MaxDataSize {
		return fmt.Errorf("disk size %d is not between 1 byte and %d bytes", size, vhd.MaxDataSize)
	}
	path := filepath.Join(r.dir, "disks", diskID+".vhd")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	footer, err := vhd.Footer{DataSize: dataSize, Created: time.Now()}.Marshal()
	if err != nil {
		return err
	}
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(footer, dataSize); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	zero := make([]blocks.Hash, blocks.Count(dataSize))
	for i := range zero {
		zero[i] = blocks.ZeroHash
	}
	if err := os.WriteFile(filepath.Join(r.dir, "disks", diskID+".hashes"), blocks.Encode(zero), 0o640); err != nil {
		return err
	}
	meta, _ := json.Marshal(map[string]int64{"size_bytes": size})
	if err := os.WriteFile(filepath.Join(r.dir, "disks", diskID+".json"), meta, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Resize grows the replica of a disk to size bytes. Every step can run
// again: the metadata, written last, says whether it is done.
func (r *Replica) Resize(diskID string, size int64) error {
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
	zeros := make([]blocks.Hash, blocks.Count(newData)-blocks.Count(oldData))
	for i := range zeros {
		zeros[i] = blocks.ZeroHash
	}
	if _, err := d.hashes.WriteAt(blocks.Encode(zeros), blocks.Count(oldData)*16); err != nil {
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
	base := filepath.Join(r.dir, "disks", diskID)
	meta, err := r.readMeta(diskID)
	if err != nil {
		return nil, fmt.Errorf("replica of disk %s: %w", diskID, err)
	}
	d := &disk{size: meta.SizeBytes}
	if d.data, err = os.OpenFile(base+".vhd", os.O_RDWR, 0); err != nil {
		return nil, err
	}
	if d.hashes, err = os.OpenFile(base+".hashes", os.O_RDWR, 0); err != nil {
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
	buf := make([]byte, len(dst)*16)
	n, err := d.hashes.ReadAt(buf, first*16)
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

// allHashes reads a disk's whole hash file.
func (r *Replica) allHashes(diskID string) ([]blocks.Hash, error) {
	d, err := r.disk(diskID)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.NewSectionReader(d.hashes, 0, 1<<62))
	if err != nil {
		return nil, err
	}
	return blocks.Decode(b)
}

// Disks lists the disks that have a replica.
func (r *Replica) Disks() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(r.dir, "disks"))
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
// its metadata first, so a deletion cut short leaves no half replica that
// looks whole.
func (r *Replica) DeleteDisk(diskID string) error {
	if !safeName.MatchString(diskID) {
		return fmt.Errorf("disk id %q cannot be a file name", diskID)
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
		for _, f := range []*os.File{d.data, d.hashes, d.undo} {
			if f != nil {
				f.Close()
			}
		}
		delete(r.disks, diskID)
	}
	r.mu.Unlock()
	base := filepath.Join(r.dir, "disks", diskID)
	for _, suffix := range []string{".json", ".vhd", ".hashes"} {
		if err := os.Remove(base + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// The types shared with the other targets.
type (
	Run             = replica.Run
	Point           = replica.Point
	SourceSignature = replica.SourceSignature
	Mismatch        = replica.Mismatch
)

var _ replica.Store = (*Replica)(nil)

// WriteRun writes data at off in the replica of a disk. off must be block
// aligned; data may end short only at the disk's end. The blocks' old
// content is first saved for the newest recovery point.
func (r *Replica) WriteRun(diskID string, off int64, data []byte) error {
	return r.WriteRuns(diskID, []Run{{Offset: off, Data: data}})
}

// WriteRuns writes several runs with one flush of the undo log: all their
// before-images are saved and made durable first, then the runs written.
func (r *Replica) WriteRuns(diskID string, runs []Run) error {
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
		if _, err := d.data.WriteAt(run.Data, run.Offset); err != nil {
			return err
		}
		hashes := make([]byte, 0, (len(run.Data)+blocks.BlockSize-1)/blocks.BlockSize*16)
		for i := 0; i < len(run.Data); i += blocks.BlockSize {
			h := blocks.HashBlock(run.Data[i:min(i+blocks.BlockSize, len(run.Data))])
			hashes = append(hashes, h[:]...)
		}
		if _, err := d.hashes.WriteAt(hashes, run.Offset/blocks.BlockSize*16); err != nil {
			return err
		}
	}
	return nil
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
		d.mu.Lock()
		err := errors.Join(d.data.Sync(), d.hashes.Sync())
		d.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// saveBeforeImages appends, to the newest point's undo log, the blocks of
// the runs not saved there yet, and flushes it once. With no point yet,
// there is nothing to preserve.
func (r *Replica) saveBeforeImages(diskID string, d *disk, runs []Run) error {
	newest, err := r.newestPoint()
	if err != nil || newest == nil {
		return err
	}
	if d.undoFor != dirName(*newest) {
		if err := d.openUndo(filepath.Join(r.dir, "points", dirName(*newest), diskID+".undo")); err != nil {
			return err
		}
		d.undoFor = dirName(*newest)
	}
	rec := make([]byte, recordSize)
	wrote := false
	for _, run := range runs {
		off, n := run.Offset, int64(len(run.Data))
		for b := off / blocks.BlockSize; b*blocks.BlockSize < off+n; b++ {
			if d.undoSeen[b] {
				continue
			}
			binary.BigEndian.PutUint64(rec[:8], uint64(b))
			clear(rec[recordHeader:])
			if _, err := d.data.ReadAt(rec[recordHeader:], b*blocks.BlockSize); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			h := blocks.HashBlock(rec[recordHeader:])
			copy(rec[8:recordHeader], h[:])
			if _, err := d.undo.Write(rec); err != nil {
				return err
			}
			d.undoSeen[b] = true
			wrote = true
		}
	}
	if wrote {
		return d.undo.Sync()
	}
	return nil
}

// newestPoint is the newest recovery point, read once and then kept up to
// date by CreatePoint.
func (r *Replica) newestPoint() (*Point, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.looked {
		points, err := r.Points()
		if err != nil {
			return nil, err
		}
		if len(points) > 0 {
			r.newest = &points[len(points)-1]
		}
		r.looked = true
	}
	return r.newest, nil
}

// openUndo opens an undo log for appending and indexes it; a last record
// cut short by a crash is dropped.
func (d *disk) openUndo(path string) error {
	if d.undo != nil {
		d.undo.Close()
		d.undo = nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return err
	}
	seen, whole, err := indexUndo(f)
	if err != nil {
		f.Close()
		return err
	}
	if err := f.Truncate(whole); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Seek(whole, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	d.undo, d.undoSeen = f, map[int64]bool{}
	for b := range seen {
		d.undoSeen[b] = true
	}
	return nil
}

// indexUndo maps block index → offset of its before-image in an undo log,
// and returns the length of the whole records.
func indexUndo(f *os.File) (map[int64]int64, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	whole := fi.Size() / recordSize * recordSize
	idx := map[int64]int64{}
	head := make([]byte, 8)
	for pos := int64(0); pos < whole; pos += recordSize {
		if _, err := f.ReadAt(head, pos); err != nil {
			return nil, 0, err
		}
		b := int64(binary.BigEndian.Uint64(head))
		if _, dup := idx[b]; !dup {
			idx[b] = pos + recordHeader
		}
	}
	return idx, whole, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func dirName(p Point) string { return fmt.Sprintf("%010d-%s", p.Seq, p.ID) }

// CreatePoint records the replicas of spec.Disks as they are now as a
// recovery point. Call it after a cycle's writes to every disk ended.
func (r *Replica) CreatePoint(spec replica.PointSpec) (Point, error) {
	if !safeName.MatchString(spec.ID) {
		return Point{}, fmt.Errorf("point id %q cannot be a directory name", spec.ID)
	}
	if err := replica.CheckPointSpec(spec); err != nil {
		return Point{}, err
	}
	if err := r.Sync(); err != nil {
		return Point{}, err
	}
	points, err := r.Points()
	if err != nil {
		return Point{}, err
	}
	for _, p := range points {
		if p.ID == spec.ID {
			return p, nil // made already, before a restart
		}
	}
	p := Point{Seq: 1, ID: spec.ID, Time: spec.Time.UTC(), ReadStartedAt: utc(spec.ReadStartedAt), Consistency: spec.Consistency,
		Capture: spec.Capture, Disks: map[string]int64{}}
	if n := len(points); n > 0 {
		p.Seq = points[n-1].Seq + 1
	}
	for _, name := range spec.Disks {
		d, err := r.disk(name)
		if err != nil {
			return Point{}, err
		}
		p.Disks[name] = d.size
	}
	tmp := filepath.Join(r.dir, "points", ".new-"+dirName(p))
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return Point{}, err
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), b, 0o640); err != nil {
		return Point{}, err
	}
	// No write may fall between the new point and its undo log: writes
	// wait while the point appears.
	r.writes.Lock()
	defer r.writes.Unlock()
	if err := os.Rename(tmp, filepath.Join(r.dir, "points", dirName(p))); err != nil {
		return Point{}, err
	}
	r.mu.Lock()
	r.newest, r.looked = &p, true
	r.mu.Unlock()
	return p, nil
}

// Points lists the recovery points, oldest first.
func (r *Replica) Points() ([]Point, error) {
	entries, err := os.ReadDir(filepath.Join(r.dir, "points"))
	if err != nil {
		return nil, err
	}
	var out []Point
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.dir, "points", e.Name(), "manifest.json"))
		if err != nil {
			return nil, fmt.Errorf("recovery point %s: %w", e.Name(), err)
		}
		var p Point
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("recovery point %s: damaged manifest: %w", e.Name(), err)
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// DeletePoint deletes a recovery point that is not the newest. Only the
// oldest can go without merging: its undo log serves no other point.
func (r *Replica) DeletePoint(id string) error {
	points, err := r.Points()
	if err != nil {
		return err
	}
	if len(points) == 0 {
		return fmt.Errorf("no recovery point %q", id)
	}
	switch {
	case points[len(points)-1].ID == id:
		return errors.New("the newest recovery point is never deleted")
	case points[0].ID != id:
		return fmt.Errorf("recovery point %q is not the oldest; points are pruned oldest first", id)
	}
	return os.RemoveAll(filepath.Join(r.dir, "points", dirName(points[0])))
}

// OpenPoint is ReadPoint for the replica.Store interface.
func (r *Replica) OpenPoint(pointID, diskID string) (replica.PointReader, int64, error) {
	return r.ReadPoint(pointID, diskID)
}

// ReadPoint returns the content of a disk at a recovery point, of the
// disk's size at that point.
func (r *Replica) ReadPoint(pointID, diskID string) (*PointReader, int64, error) {
	points, err := r.Points()
	if err != nil {
		return nil, 0, err
	}
	at := -1
	for i, p := range points {
		if p.ID == pointID {
			at = i
		}
	}
	if at < 0 {
		return nil, 0, fmt.Errorf("no recovery point %q", pointID)
	}
	size, ok := points[at].Disks[diskID]
	if !ok {
		return nil, 0, fmt.Errorf("recovery point %q has no disk %q", pointID, diskID)
	}
	d, err := r.disk(diskID)
	if err != nil {
		return nil, 0, err
	}
	pr := &PointReader{data: d.data, size: size}
	// Oldest first, so the first log holding a block wins.
	for _, p := range points[at:] {
		f, err := os.Open(filepath.Join(r.dir, "points", dirName(p), diskID+".undo"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		idx, _, err := indexUndo(f)
		if err != nil {
			f.Close()
			pr.Close()
			return nil, 0, err
		}
		pr.logs = append(pr.logs, undoLog{f: f, idx: idx})
	}
	return pr, size, nil
}

type undoLog struct {
	f   *os.File
	idx map[int64]int64
}

// PointReader reads a disk as it was at a recovery point. Writes to the
// replica while it is open must not happen (the reader sees the replica
// file as it is); recovery reads happen between cycles.
type PointReader struct {
	data *os.File
	size int64
	logs []undoLog
}

// Close releases the undo logs.
func (p *PointReader) Close() error {
	var errs []error
	for _, l := range p.logs {
		errs = append(errs, l.f.Close())
	}
	return errors.Join(errs...)
}

// ReadAt reads the disk at the point.
func (p *PointReader) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(b) && off+int64(n) < p.size {
		pos := off + int64(n)
		blk := pos / blocks.BlockSize
		in := pos % blocks.BlockSize
		want := min(int64(len(b)-n), blocks.BlockSize-in, p.size-pos)
		src := io.ReaderAt(p.data)
		srcOff := pos
		for _, l := range p.logs {
			if at, ok := l.idx[blk]; ok {
				src, srcOff = l.f, at+in
				break
			}
		}
		if _, err := src.ReadAt(b[n:n+int(want)], srcOff); err != nil {
			return n, err
		}
		n += int(want)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

type diskMeta struct {
	SizeBytes int64            `json:"size_bytes"`
	Synced    *SourceSignature `json:"synced,omitempty"`
}

func (r *Replica) metaPath(diskID string) string {
	return filepath.Join(r.dir, "disks", diskID+".json")
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
	b, err := os.ReadFile(r.metaPath(diskID))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("replica of disk %s: damaged metadata: %w", diskID, err)
	}
	return m, nil
}

// updateMeta changes a disk's metadata file, replaced whole by rename.
func (r *Replica) updateMeta(diskID string, change func(*diskMeta)) error {
	m, err := r.readMeta(diskID)
	if err != nil {
		return err
	}
	change(&m)
	out, _ := json.Marshal(m)
	tmp := r.metaPath(diskID) + ".new"
	if err := os.WriteFile(tmp, out, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, r.metaPath(diskID))
}

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
	var checked int64
	var bad []Mismatch
	diskIDs := make([]string, 0, len(point.Disks))
	for id := range point.Disks {
		diskIDs = append(diskIDs, id)
	}
	sort.Strings(diskIDs)
	for _, id := range diskIDs {
		stored, err := r.allHashes(id)
		if err != nil {
			return checked, bad, err
		}
		pr, size, err := r.ReadPoint(pointID, id)
		if err != nil {
			return checked, bad, err
		}
		blk := make([]byte, blocks.BlockSize)
		hdr := make([]byte, 16)
		for b := int64(0); b < blocks.Count(size); b++ {
			var want blocks.Hash
			src, srcOff := io.ReaderAt(pr.data), b*blocks.BlockSize
			fromUndo := false
			for _, l := range pr.logs {
				if at, ok := l.idx[b]; ok {
					if _, err := l.f.ReadAt(hdr, at-16); err != nil {
						pr.Close()
						return checked, bad, err
					}
					copy(want[:], hdr)
					src, srcOff, fromUndo = l.f, at, true
					break
				}
			}
			if !fromUndo {
				if b >= int64(len(stored)) {
					pr.Close()
					return checked, bad, fmt.Errorf("disk %s: the hash file is shorter than the disk", id)
				}
				want = stored[b]
			}
			clear(blk)
			if _, err := src.ReadAt(blk, srcOff); err != nil && !errors.Is(err, io.EOF) {
				pr.Close()
				return checked, bad, err
			}
			if !fromUndo && (b+1)*blocks.BlockSize > size {
				clear(blk[size-b*blocks.BlockSize:]) // the replica pads the last block with zeros, as hashed
			}
			if blocks.HashBlock(blk) != want {
				bad = append(bad, Mismatch{Disk: id, Offset: b * blocks.BlockSize})
			}
			checked++
		}
		pr.Close()
	}
	return checked, bad, nil
}

// RepairHashes reads a disk's replica and, for every block whose content no
// longer matches its recorded hash (the storage changed it), records the
// hash as unknown so the next cycle rewrites the block. It returns the
// offsets of those blocks. The replica must not be written meanwhile.
func (r *Replica) RepairHashes(diskID string) ([]int64, error) {
	stored, err := r.allHashes(diskID)
	if err != nil {
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
	buf := make([]byte, blocks.MaxRun)
	dataSize := int64(len(stored)) * blocks.BlockSize
	for off := int64(0); off < dataSize; off += blocks.MaxRun {
		chunk := buf[:min(int64(blocks.MaxRun), dataSize-off)]
		if _, err := d.data.ReadAt(chunk, off); err != nil && !errors.Is(err, io.EOF) {
			return bad, err
		}
		for i := int64(0); i < int64(len(chunk)); i += blocks.BlockSize {
			b := (off + i) / blocks.BlockSize
			if blocks.HashBlock(chunk[i:i+blocks.BlockSize]) != stored[b] {
				bad = append(bad, b*blocks.BlockSize)
				if _, err := d.hashes.WriteAt(replica.UnknownHash[:], b*16); err != nil {
					return bad, err
				}
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
