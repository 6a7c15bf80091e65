package diskfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// WriteBack makes the raw image at path equal to size bytes read from r,
// writing only the BlockSize blocks that differ, then syncs it, and
// returns the bytes written. A missing file is written as WriteSparse
// does; a smaller one grows (the new part reads as zeros until written);
// a larger one is refused with CodeDiskResized (the disk shrank: which end
// to cut is not ours to guess). A write cut part-way leaves the image
// between the two versions; run again it compares anew and ends the same.
func WriteBack(ctx context.Context, path string, r io.ReaderAt, size int64) (int64, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return WriteSparse(ctx, path, r, size)
	}
	if err != nil {
		return 0, err
	}
	if fi.Size() > size {
		return 0, &agentproto.TaskError{Code: agentproto.CodeDiskResized, Message: fmt.Sprintf(
			"%s is %d bytes, larger than its disk at the recovery point (%d bytes); the failback does not shrink a disk: make it the point's size, or fail back to another host", path, fi.Size(), size)}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if fi.Size() < size {
		if err := f.Truncate(size); err != nil {
			return 0, err
		}
	}
	want := make([]byte, chunk)
	have := make([]byte, len(want))
	var written int64
	for off := int64(0); off < size; off += int64(len(want)) {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		n := min(int64(len(want)), size-off)
		w, h := want[:n], have[:n]
		if err := readChunk(r, w, off, size); err != nil {
			return written, err
		}
		if _, err := io.ReadFull(io.NewSectionReader(f, off, n), h); err != nil {
			return written, fmt.Errorf("read %s at %d: %w", path, off, err)
		}
		m, err := WriteDiffering(f, w, h, off)
		written += m
		if err != nil {
			return written, err
		}
	}
	return written, f.Sync()
}

// WriteDiffering writes the blocks of want that differ from have, at off,
// coalescing neighbours into one write; against zeros, it writes a new
// file's data and leaves holes for the rest.
func WriteDiffering(f *os.File, want, have []byte, off int64) (int64, error) {
	var written int64
	start := -1
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		n, err := f.WriteAt(want[start:end], off+int64(start))
		written += int64(n)
		start = -1
		return err
	}
	for i := 0; i < len(want); i += BlockSize {
		end := min(i+BlockSize, len(want))
		if bytes.Equal(want[i:end], have[i:end]) {
			if err := flush(i); err != nil {
				return written, err
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
	return written, flush(len(want))
}
