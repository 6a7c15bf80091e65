// Package diskfile writes raw disk images on a recovery host, for the
// drivers whose recovered VMs are raw image files (filedisk, qemu): a new
// image written sparse (holes where the point holds zeros), an existing
// one made equal to a point by writing only the blocks that differ, and
// a VM directory put in place whole or not at all.
package diskfile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// BlockSize is the granularity of holes and of the blocks a write back
// compares: a filesystem block.
const BlockSize = 4096

// chunk is how much of an image is read at a time.
const chunk = 4 << 20

// ReadError is a failure to read the image being written, which is not
// the recovery host's fault (the replica target's, most likely).
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// readChunk fills b from the image of size bytes at off; an image that
// fails or ends early is a *ReadError.
func readChunk(r io.ReaderAt, b []byte, off, size int64) error {
	if n, err := r.ReadAt(b, off); n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("the image ends at %d of %d bytes", off+int64(n), size)
		}
		return &ReadError{err}
	}
	return nil
}

// WriteSparse writes size bytes read from r to a new file at path (which
// must not exist), leaving holes where r holds zeros, syncs it, and
// returns how many bytes of data it wrote.
func WriteSparse(ctx context.Context, path string, r io.ReaderAt, size int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, chunk)
	zeros := make([]byte, len(buf))
	var written int64
	for off := int64(0); off < size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		b := buf[:min(int64(len(buf)), size-off)]
		if err := readChunk(r, b, off, size); err != nil {
			return written, err
		}
		n, err := WriteDiffering(f, b, zeros[:len(b)], off)
		written += n
		if err != nil {
			return written, err
		}
	}
	if err := f.Truncate(size); err != nil {
		return written, err
	}
	return written, f.Sync()
}

// WriteSynced writes a small file (a VM's record) and syncs it.
func WriteSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReplaceSynced replaces path with data whole or not at all (a synced
// temporary file renamed over it, then the directory synced): a crash
// leaves the old content or the new, never a torn file.
func ReplaceSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := WriteSynced(tmp, data); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir syncs a directory: the names created, renamed or removed in it
// are on disk once it returns.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
