package filedisk

import (
	"bytes"
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
		if n, err := r.ReadAt(b, off); n < len(b) {
			if err == nil || errors.Is(err, io.EOF) {
				err = fmt.Errorf("the image ends at %d of %d bytes", off+int64(n), size)
			}
			return written, &readError{err}
		}
		n, err := writeNonZero(f, b, off, zeros)
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

// holeBlock is the granularity of holes: a filesystem block.
const holeBlock = 4096

// writeNonZero writes b at off but for its all-zero blocks, coalescing
// the others into as few writes as it can.
func writeNonZero(f *os.File, b []byte, off int64, zeros []byte) (int64, error) {
	var written int64
	start := -1 // where the run of data being gathered begins
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		_, err := f.WriteAt(b[start:end], off+int64(start))
		if err == nil {
			written += int64(end - start)
		}
		start = -1
		return err
	}
	for i := 0; i < len(b); i += holeBlock {
		end := min(i+holeBlock, len(b))
		if !bytes.Equal(b[i:end], zeros[:end-i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if err := flush(i); err != nil {
			return written, err
		}
	}
	return written, flush(len(b))
}

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
