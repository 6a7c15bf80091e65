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
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

const manifestName = "manifest.json"

// Prefixes of point directories that are not points: one being made, and
// one being deleted.
const (
	newPrefix      = ".new-"
	deletingPrefix = ".deleting-"
)

var pointDirName = regexp.MustCompile(`^([0-9]{10})-(.+)$`)

func dirName(p Point) string { return fmt.Sprintf("%010d-%s", p.Seq, p.ID) }

// pointDir is a directory under points/ named like a point. point is nil
// when its manifest is missing or damaged (err says which): such a
// directory is no recovery point, but its undo logs still hold
// before-images that older points are read from, so it stays in the chain.
type pointDir struct {
	name  string
	seq   int
	point *Point
	err   error
}

// pointDirs lists the point directories, oldest first, ignoring what is
// not one (names starting with a dot: points being made or deleted).
func (r *Replica) pointDirs() ([]pointDir, error) {
	entries, err := r.fs.ReadDir(r.pointsDir())
	if err != nil {
		return nil, err
	}
	var out []pointDir
	for _, e := range entries {
		m := pointDirName.FindStringSubmatch(e.Name())
		if !e.IsDir() || m == nil {
			continue
		}
		seq, _ := strconv.Atoi(m[1])
		pd := pointDir{name: e.Name(), seq: seq}
		b, err := readFile(r.fs, filepath.Join(r.pointsDir(), e.Name(), manifestName))
		var p Point
		switch {
		case err != nil:
			pd.err = fmt.Errorf("recovery point %s: %w", e.Name(), err)
		case json.Unmarshal(b, &p) != nil:
			pd.err = fmt.Errorf("recovery point %s: damaged manifest", e.Name())
		case dirName(p) != e.Name():
			pd.err = fmt.Errorf("recovery point %s: its manifest names point %s", e.Name(), dirName(p))
		default:
			pd.point = &p
		}
		out = append(out, pd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out, nil
}

// Points lists the recovery points, oldest first.
//
// A point directory whose manifest is missing or damaged is not listed,
// and each listing logs it as a warning: one bad point must not stop the
// cycles that make new ones, nor hide the others. Its undo logs are still
// used to read older points, and it is never removed automatically (only a
// directory holding no undo log, which no point can need, is).
func (r *Replica) Points() ([]Point, error) {
	dirs, err := r.pointDirs()
	if err != nil {
		return nil, err
	}
	var out []Point
	for _, d := range dirs {
		if d.point == nil {
			r.log.Warn("recovery point skipped", slog.String("dir", filepath.Join(r.pointsDir(), d.name)), slog.Any("error", d.err))
			continue
		}
		out = append(out, *d.point)
	}
	return out, nil
}

// newestDir is the newest point directory's name, read once and then kept
// up to date by CreatePoint. Before-images go to its undo logs even when
// its manifest is damaged: they keep the older points readable.
func (r *Replica) newestDir() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.looked {
		dirs, err := r.pointDirs()
		if err != nil {
			return "", err
		}
		r.newest = ""
		if len(dirs) > 0 {
			r.newest = dirs[len(dirs)-1].name
		}
		r.looked = true
	}
	return r.newest, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// CreatePoint records the replicas of spec.Disks as they are now as a
// recovery point. Call it after a cycle's writes to every disk ended.
//
// The point's disks are fsynced first, and the newest point's undo logs
// freed of torn tails (they stop growing now, and readers of a point that
// is not the newest take damage in its logs for what it is). Then the
// point appears whole by renaming a directory that holds its fsynced
// manifest, and the rename is fsynced.
func (r *Replica) CreatePoint(spec replica.PointSpec) (Point, error) {
	if !safeName.MatchString(spec.ID) {
		return Point{}, fmt.Errorf("point id %q cannot be a directory name", spec.ID)
	}
	if err := replica.CheckPointSpec(spec); err != nil {
		return Point{}, err
	}
	if err := r.recoverOnce(); err != nil {
		return Point{}, err
	}
	// No write may fall between the new point and its undo log.
	r.writes.Lock()
	defer r.writes.Unlock()
	dirs, err := r.pointDirs()
	if err != nil {
		return Point{}, err
	}
	for _, d := range dirs {
		if d.point != nil && d.point.ID == spec.ID {
			return *d.point, nil // made already, before a restart
		}
	}
	p := Point{Seq: 1, ID: spec.ID, Time: spec.Time.UTC(), ReadStartedAt: utc(spec.ReadStartedAt), Consistency: spec.Consistency,
		Capture: spec.Capture, Disks: map[string]int64{}}
	if n := len(dirs); n > 0 {
		p.Seq = dirs[n-1].seq + 1
		if err := r.sealUndoLogs(dirs[n-1].name); err != nil {
			return Point{}, err
		}
	}
	for _, name := range spec.Disks {
		d, err := r.disk(name)
		if err != nil {
			return Point{}, err
		}
		if err := d.sync(); err != nil {
			return Point{}, err
		}
		p.Disks[name] = d.size
	}
	final := filepath.Join(r.pointsDir(), dirName(p))
	tmp := filepath.Join(r.pointsDir(), newPrefix+dirName(p))
	if err := removeAll(r.fs, tmp); err != nil {
		return Point{}, err
	}
	if err := r.fs.MkdirAll(tmp, 0o750); err != nil {
		return Point{}, err
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	if err := writeAtomic(r.fs, filepath.Join(tmp, manifestName), b); err != nil {
		return Point{}, err
	}
	if err := r.fs.Rename(tmp, final); err != nil {
		return Point{}, err
	}
	if err := r.fs.SyncDir(r.pointsDir()); err != nil {
		return Point{}, err
	}
	r.mu.Lock()
	r.newest, r.looked = dirName(p), true
	r.mu.Unlock()
	return p, nil
}

// DeletePoint deletes a recovery point that is not the newest. Only the
// oldest can go without merging: its undo log serves no other point.
//
// The directory is renamed to .deleting-… (and that fsynced) before its
// files go, so a crash never leaves a point with part of its undo logs.
func (r *Replica) DeletePoint(id string) error {
	if err := r.recoverOnce(); err != nil {
		return err
	}
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
	name := dirName(points[0])
	doomed := filepath.Join(r.pointsDir(), deletingPrefix+name)
	if err := r.fs.Rename(filepath.Join(r.pointsDir(), name), doomed); err != nil {
		return err
	}
	if err := r.fs.SyncDir(r.pointsDir()); err != nil {
		return err
	}
	if err := removeAll(r.fs, doomed); err != nil {
		return err
	}
	return r.fs.SyncDir(r.pointsDir())
}

// recoverOnce runs recover the first time this Replica is to change
// something. Readers never call it: they may look at a replica that a
// cycle elsewhere is writing, and must not take its work for leftovers.
func (r *Replica) recoverOnce() error {
	r.recoverMu.Lock()
	defer r.recoverMu.Unlock()
	if r.recovered {
		return nil
	}
	if err := r.recover(); err != nil {
		return fmt.Errorf("recover the replicas in %s after an interruption: %w", r.dir, err)
	}
	r.recovered = true
	return nil
}

// recover removes what operations cut short left behind: point
// directories being made or deleted, point directories with neither
// manifest nor undo log, temporary files; and cuts torn tails off the
// newest point's undo logs.
func (r *Replica) recover() error {
	entries, err := r.fs.ReadDir(r.pointsDir())
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		path := filepath.Join(r.pointsDir(), e.Name())
		doomed := strings.HasPrefix(e.Name(), newPrefix) || strings.HasPrefix(e.Name(), deletingPrefix) || strings.HasPrefix(e.Name(), ".tmp-")
		if !doomed && e.IsDir() && pointDirName.MatchString(e.Name()) {
			doomed, err = r.unneededPointDir(path)
			if err != nil {
				return err
			}
		}
		if doomed {
			if err := removeAll(r.fs, path); err != nil {
				return err
			}
			removed = true
		}
	}
	if removed {
		if err := r.fs.SyncDir(r.pointsDir()); err != nil {
			return err
		}
	}
	if err := r.removeDiskLeftovers(); err != nil {
		return err
	}
	if err := removeTempFiles(r.fs, r.dir); err != nil { // a descriptor being replaced
		return err
	}
	dirs, err := r.pointDirs()
	if err != nil || len(dirs) == 0 {
		return err
	}
	return r.sealUndoLogs(dirs[len(dirs)-1].name)
}

// unneededPointDir says whether a point directory has no manifest and no
// undo log: the leftover of a point being made, which no point needs.
func (r *Replica) unneededPointDir(path string) (bool, error) {
	if _, err := r.fs.Stat(filepath.Join(path, manifestName)); !errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	entries, err := r.fs.ReadDir(path)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".undo") {
			return false, nil
		}
	}
	return true, nil
}

// removeTempFiles removes the temporary files writeAtomic left in dir.
func removeTempFiles(fsys FS, dir string) error {
	entries, err := fsys.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") && !e.IsDir() {
			if err := fsys.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			removed = true
		}
	}
	if removed {
		return fsys.SyncDir(dir)
	}
	return nil
}

// removeDiskLeftovers removes temporary files in disks/: a disk being
// made (DISK.vhd.new, DISK.hashes.new) or metadata being replaced.
func (r *Replica) removeDiskLeftovers() error {
	entries, err := r.fs.ReadDir(r.disksDir())
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") || strings.HasSuffix(e.Name(), ".new") {
			if err := r.fs.Remove(filepath.Join(r.disksDir(), e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			removed = true
		}
	}
	if removed {
		return r.fs.SyncDir(r.disksDir())
	}
	return nil
}

// sealUndoLogs cuts torn tails off the undo logs in a point directory,
// skipping those an open disk holds healthy (their tails are whole).
func (r *Replica) sealUndoLogs(pointDir string) error {
	dir := filepath.Join(r.pointsDir(), pointDir)
	entries, err := r.fs.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		diskID, ok := strings.CutSuffix(e.Name(), ".undo")
		if !ok {
			continue
		}
		r.mu.Lock()
		d := r.disks[diskID]
		r.mu.Unlock()
		if d != nil {
			d.mu.Lock()
			healthy := d.undo != nil && d.undoFor == pointDir
			d.mu.Unlock()
			if healthy {
				continue
			}
		}
		if err := r.sealUndoLog(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (r *Replica) sealUndoLog(path string) error {
	f, err := r.fs.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	l, err := readUndo(f, true) // still the newest point's
	if err != nil {
		return fmt.Errorf("undo log %s: %w", path, err)
	}
	if !l.torn {
		return nil
	}
	if err := f.Truncate(l.end); err != nil {
		return err
	}
	return f.Sync()
}

// OpenPoint is ReadPoint for the replica.Store interface.
func (r *Replica) OpenPoint(pointID, diskID string) (replica.PointReader, int64, error) {
	return r.ReadPoint(pointID, diskID)
}

// ReadPoint returns the content of a disk at a recovery point, of the
// disk's size at that point.
//
// A torn tail in an undo log of the newest point directory is a crash's
// leftover not cut off yet (readers change nothing): it is ignored. In an
// older one it is damage (tails are cut before a newer point is made), and
// reading fails rather than return blocks from the wrong time.
func (r *Replica) ReadPoint(pointID, diskID string) (*PointReader, int64, error) {
	dirs, err := r.pointDirs()
	if err != nil {
		return nil, 0, err
	}
	at := -1
	for i, d := range dirs {
		if d.point != nil && d.point.ID == pointID {
			at = i
		}
	}
	if at < 0 {
		return nil, 0, fmt.Errorf("no recovery point %q", pointID)
	}
	size, ok := dirs[at].point.Disks[diskID]
	if !ok {
		return nil, 0, fmt.Errorf("recovery point %q has no disk %q", pointID, diskID)
	}
	d, err := r.disk(diskID)
	if err != nil {
		return nil, 0, err
	}
	pr := &PointReader{data: d.data, size: size}
	// Oldest first, so the first log holding a block wins.
	for i, dir := range dirs[at:] {
		path := filepath.Join(r.pointsDir(), dir.name, diskID+".undo")
		f, err := r.fs.OpenFile(path, os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			pr.Close()
			return nil, 0, err
		}
		newest := at+i == len(dirs)-1
		l, err := readUndo(f, newest)
		if err == nil && l.torn && !newest {
			err = errors.New("damaged: a record fails its checksum")
		}
		if err != nil {
			f.Close()
			pr.Close()
			return nil, 0, fmt.Errorf("undo log %s: %w", path, err)
		}
		pr.logs = append(pr.logs, l)
	}
	return pr, size, nil
}

// PointReader reads a disk as it was at a recovery point. Writes to the
// replica while it is open must not happen (the reader sees the replica
// file as it is); recovery reads happen between cycles.
type PointReader struct {
	data File
	size int64
	logs []*undoLog
}

// Close releases the undo logs.
func (p *PointReader) Close() error {
	var errs []error
	for _, l := range p.logs {
		errs = append(errs, l.f.Close())
	}
	return errors.Join(errs...)
}

// source is where block blk of the point is: an undo record, or the
// replica (entry nil).
func (p *PointReader) source(blk int64) (io.ReaderAt, int64, *undoEntry) {
	for _, l := range p.logs {
		if e, ok := l.idx[blk]; ok {
			return l.f, e.off, &e
		}
	}
	return p.data, blk * blocks.BlockSize, nil
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
		src, srcOff, _ := p.source(blk)
		if _, err := src.ReadAt(b[n:n+int(want)], srcOff+in); err != nil {
			return n, err
		}
		n += int(want)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}
