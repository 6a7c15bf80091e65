package filedisk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// readError is a failure to read the image being written, which is not
// the VM root's fault (the replica target's, most likely).
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// readChunk fills b from the image of size bytes at off; an image that
// fails or ends early is a *readError.
func readChunk(r io.ReaderAt, b []byte, off, size int64) error {
	if n, err := r.ReadAt(b, off); n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("the image ends at %d of %d bytes", off+int64(n), size)
		}
		return &readError{err}
	}
	return nil
}

// writeSparse writes size bytes read from r to a new file, leaving holes
// where r holds zeros, and returns how many bytes of data it wrote.
func writeSparse(ctx context.Context, path string, r io.ReaderAt, size int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
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
		n, err := writeDiffering(f, b, zeros[:len(b)], off)
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

// holeBlock is the granularity of holes and of the blocks a write back
// compares: a filesystem block.
const holeBlock = 4096

func writeSynced(path string, data []byte) error {
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

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
