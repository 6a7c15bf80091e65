package guesttest

import (
	"bytes"
	"fmt"
)

// cpioWriter writes a newc ("070701") cpio archive, the format the kernel
// unpacks as an initramfs. It needs no root: device nodes are just headers.
type cpioWriter struct {
	buf  bytes.Buffer
	ino  int
	done bool
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChr  = 0o020000
)

func (w *cpioWriter) entry(name string, mode, rmajor, rminor int, data []byte) {
	w.ino++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check
	fmt.Fprintf(&w.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

func (w *cpioWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}

func (w *cpioWriter) dir(name string) { w.entry(name, modeDir|0o755, 0, 0, nil) }

func (w *cpioWriter) file(name string, perm int, data []byte) {
	w.entry(name, modeFile|perm, 0, 0, data)
}

func (w *cpioWriter) chr(name string, major, minor int) {
	w.entry(name, modeChr|0o600, major, minor, nil)
}

// bytes ends the archive with its trailer and returns it.
func (w *cpioWriter) bytes() []byte {
	if !w.done {
		w.ino = -1 // the trailer's inode is 0
		w.entry("TRAILER!!!", 0, 0, 0, nil)
		w.done = true
	}
	return w.buf.Bytes()
}
