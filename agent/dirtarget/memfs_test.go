package dirtarget

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

// memFS is an in-memory FS that knows what a power cut would keep: per
// file, the content at its last Sync; per directory, the names at its last
// SyncDir. crashImage builds that state as a new memFS. Renames of
// directories move the node, so a directory's own names travel with it.
type memFS struct {
	mu   sync.Mutex
	root *memNode
	// afterOp, if set, is called after every change (write, truncate,
	// create, rename, remove, mkdir, fsync), with a description of it.
	afterOp func(op string)
	// lastWrite is the newest change if it was a write, for tornImage.
	lastWrite *memWrite
}

type memWrite struct {
	node *memNode
	off  int64
	data []byte
}

type memNode struct {
	dir bool
	// A file: data now, and the content a crash would leave. shared says
	// data is durable's (or an image's) slice too: copy it before changing it.
	data, durable []byte
	shared        bool
	// A directory: names now, and the names a crash would leave.
	entries, durableEntries map[string]*memNode
}

func newDirNode() *memNode {
	return &memNode{dir: true, entries: map[string]*memNode{}, durableEntries: map[string]*memNode{}}
}

func newMemFS() *memFS { return &memFS{root: newDirNode()} }

// crashImage is the filesystem as a power cut now would leave it; with
// durableOnly false, as a killed process would (everything written kept).
func (m *memFS) crashImage(durableOnly bool) *memFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &memFS{root: copyNode(m.root, durableOnly)}
}

// tornImage is crashImage(true) where the last change, if it was a write,
// half reached the disk, as when power fails mid-write: the whole 512-byte
// sectors of its first half (disks write a sector whole or not at). Nil if
// the last change was no write, or one too small to tear.
func (m *memFS) tornImage() *memFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.lastWrite
	if w == nil {
		return nil
	}
	cut := (w.off+int64(len(w.data)/2))/512*512 - w.off
	if cut <= 0 {
		return nil
	}
	img := &memFS{root: copyNode(m.root, true)}
	var find func(orig, cp *memNode) *memNode
	find = func(orig, cp *memNode) *memNode {
		if orig == w.node {
			return cp
		}
		for name, child := range orig.durableEntries {
			if c := cp.entries[name]; c != nil {
				if got := find(child, c); got != nil {
					return got
				}
			}
		}
		return nil
	}
	n := find(m.root, img.root)
	if n == nil {
		return nil // the file itself is not durable
	}
	f := &memFile{fs: img, node: n}
	f.own(w.off + cut)
	copy(n.data[w.off:], w.data[:cut])
	n.durable, n.shared = n.data, true
	return img
}

func copyNode(n *memNode, durableOnly bool) *memNode {
	if !n.dir {
		if durableOnly {
			return &memNode{data: n.durable, durable: n.durable, shared: true}
		}
		data := bytes.Clone(n.data)
		return &memNode{data: data, durable: data, shared: true}
	}
	from := n.entries
	if durableOnly {
		from = n.durableEntries
	}
	c := newDirNode()
	for name, child := range from {
		cc := copyNode(child, durableOnly)
		c.entries[name], c.durableEntries[name] = cc, cc
	}
	return c
}

func (m *memFS) changed(op string) {
	if !strings.HasPrefix(op, "write ") {
		m.mu.Lock()
		m.lastWrite = nil
		m.mu.Unlock()
	}
	if m.afterOp != nil {
		m.afterOp(op)
	}
}

// lookup finds the directory holding name, and name's node in it (nil if absent).
func (m *memFS) lookup(name string) (parent *memNode, base string, n *memNode, err error) {
	clean := path.Clean("/" + name)
	if clean == "/" {
		return nil, "", m.root, nil
	}
	dir := m.root
	parts := strings.Split(clean[1:], "/")
	for _, p := range parts[:len(parts)-1] {
		next, ok := dir.entries[p]
		if !ok || !next.dir {
			return nil, "", nil, &fs.PathError{Op: "lookup", Path: name, Err: fs.ErrNotExist}
		}
		dir = next
	}
	base = parts[len(parts)-1]
	return dir, base, dir.entries[base], nil
}

func (m *memFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	m.mu.Lock()
	parent, base, n, err := m.lookup(name)
	op := ""
	switch {
	case err != nil:
	case n == nil && flag&os.O_CREATE == 0:
		err = &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case n == nil:
		n = &memNode{}
		parent.entries[base] = n
		op = "create " + name
	case flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		err = &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case n.dir && flag&(os.O_WRONLY|os.O_RDWR) != 0:
		err = &fs.PathError{Op: "open", Path: name, Err: errors.New("is a directory")}
	case flag&os.O_TRUNC != 0 && len(n.data) > 0:
		n.data, n.shared = nil, false
		op = "truncate " + name + " to 0"
	}
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if op != "" {
		m.changed(op)
	}
	return &memFile{fs: m, node: n, name: name}, nil
}

func (m *memFS) Rename(oldpath, newpath string) error {
	m.mu.Lock()
	oldParent, oldBase, n, err := m.lookup(oldpath)
	if err == nil && n == nil {
		err = &fs.PathError{Op: "rename", Path: oldpath, Err: fs.ErrNotExist}
	}
	var newParent *memNode
	var newBase string
	var existing *memNode
	if err == nil {
		newParent, newBase, existing, err = m.lookup(newpath)
	}
	if err == nil && existing != nil && existing.dir && len(existing.entries) > 0 {
		err = &fs.PathError{Op: "rename", Path: newpath, Err: errors.New("directory not empty")}
	}
	if err == nil {
		delete(oldParent.entries, oldBase)
		newParent.entries[newBase] = n
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	m.changed("rename " + oldpath + " to " + newpath)
	return nil
}

func (m *memFS) Remove(name string) error {
	m.mu.Lock()
	parent, base, n, err := m.lookup(name)
	switch {
	case err != nil:
	case n == nil:
		err = &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	case n.dir && len(n.entries) > 0:
		err = &fs.PathError{Op: "remove", Path: name, Err: errors.New("directory not empty")}
	default:
		delete(parent.entries, base)
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	m.changed("remove " + name)
	return nil
}

func (m *memFS) MkdirAll(name string, perm fs.FileMode) error {
	clean := path.Clean("/" + name)
	if clean == "/" {
		return nil
	}
	parts := strings.Split(clean[1:], "/")
	for i := range parts {
		p := "/" + strings.Join(parts[:i+1], "/")
		m.mu.Lock()
		parent, base, n, err := m.lookup(p)
		made := false
		switch {
		case err != nil:
		case n == nil:
			parent.entries[base] = newDirNode()
			made = true
		case !n.dir:
			err = &fs.PathError{Op: "mkdir", Path: p, Err: errors.New("not a directory")}
		}
		m.mu.Unlock()
		if err != nil {
			return err
		}
		if made {
			m.changed("mkdir " + p)
		}
	}
	return nil
}

func (m *memFS) ReadDir(name string) ([]fs.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, _, n, err := m.lookup(name)
	if err == nil && (n == nil || !n.dir) {
		err = &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	if err != nil {
		return nil, err
	}
	var out []fs.DirEntry
	for entry, child := range n.entries {
		out = append(out, fs.FileInfoToDirEntry(memInfo{name: entry, node: child, size: int64(len(child.data))}))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

func (m *memFS) Stat(name string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, base, n, err := m.lookup(name)
	if err == nil && n == nil {
		err = &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	if err != nil {
		return nil, err
	}
	return memInfo{name: base, node: n, size: int64(len(n.data))}, nil
}

func (m *memFS) SyncDir(dir string) error {
	m.mu.Lock()
	_, _, n, err := m.lookup(dir)
	if err == nil && (n == nil || !n.dir) {
		err = &fs.PathError{Op: "syncdir", Path: dir, Err: fs.ErrNotExist}
	}
	if err == nil {
		n.durableEntries = map[string]*memNode{}
		for k, v := range n.entries {
			n.durableEntries[k] = v
		}
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	m.changed("syncdir " + dir)
	return nil
}

type memInfo struct {
	name string
	node *memNode
	size int64
}

func (i memInfo) Name() string { return i.name }
func (i memInfo) Size() int64  { return i.size }
func (i memInfo) Mode() fs.FileMode {
	if i.node.dir {
		return fs.ModeDir | 0o750
	}
	return 0o640
}
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return i.node.dir }
func (i memInfo) Sys() any           { return nil }

type memFile struct {
	fs   *memFS
	node *memNode
	name string
}

func (f *memFile) ReadAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(b, f.node.data[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// own makes the file's data its own to change, at least size bytes long.
func (f *memFile) own(size int64) {
	n := f.node
	if n.shared || int64(cap(n.data)) < size {
		data := make([]byte, max(int64(len(n.data)), size), max(int64(len(n.data)), size)*5/4)
		copy(data, n.data)
		n.data, n.shared = data, false
	}
	if int64(len(n.data)) < size {
		n.data = n.data[:size]
	}
}

func (f *memFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	f.own(off + int64(len(b)))
	copy(f.node.data[off:], b)
	f.fs.lastWrite = &memWrite{node: f.node, off: off, data: bytes.Clone(b)}
	f.fs.mu.Unlock()
	f.fs.changed(fmt.Sprintf("write %s at %d, %d bytes", f.name, off, len(b)))
	return len(b), nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	if size < int64(len(f.node.data)) {
		f.own(size)
		clear(f.node.data[size:])
		f.node.data = f.node.data[:size]
	} else {
		f.own(size)
	}
	f.fs.mu.Unlock()
	f.fs.changed(fmt.Sprintf("truncate %s to %d", f.name, size))
	return nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	f.node.durable, f.node.shared = f.node.data, true
	f.fs.mu.Unlock()
	f.fs.changed("fsync " + f.name)
	return nil
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return memInfo{name: path.Base(f.name), node: f.node, size: int64(len(f.node.data))}, nil
}

func (f *memFile) Close() error { return nil }
