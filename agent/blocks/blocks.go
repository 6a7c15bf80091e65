// Package blocks finds what changed in a disk: it hashes the disk in fixed
// 4 KiB blocks (xxh3-128, 16 bytes a block: 0.4 % of the disk), compares
// two hash lists, and groups changed blocks into write runs of at most
// 4 MiB, the largest page write Azure accepts. Blocks of zeros are known by
// their hash, so a fresh replica never receives them.
package blocks

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/zeebo/xxh3"
)

// BlockSize is the granularity of change tracking and of the stored hashes.
const BlockSize = 4096

// MaxRun is the largest run of bytes sent in one write.
const MaxRun = 4 << 20

// Hash is one block's xxh3-128.
type Hash [16]byte

// ZeroHash is the hash of a block of zeros.
var ZeroHash = hashBlock(make([]byte, BlockSize))

func hashBlock(b []byte) Hash {
	return xxh3.Hash128(b).Bytes()
}

// HashBlock hashes one block; a short last block is hashed padded with
// zeros, as HashDisk does.
func HashBlock(b []byte) Hash {
	if len(b) < BlockSize {
		padded := make([]byte, BlockSize)
		copy(padded, b)
		b = padded
	}
	return hashBlock(b[:BlockSize])
}

// Count is how many blocks a disk of size bytes has (the last one may be
// short; it is hashed as if padded with zeros).
func Count(size int64) int64 { return (size + BlockSize - 1) / BlockSize }

// HashDisk hashes every block of r (size bytes), reading chunks of MaxRun
// with workers goroutines. It returns one hash per block.
func HashDisk(r io.ReaderAt, size int64, workers int) ([]Hash, error) {
	if size < 0 {
		return nil, errors.New("negative disk size")
	}
	workers = max(workers, 1)
	hashes := make([]Hash, Count(size))
	chunks := make(chan int64)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, MaxRun)
			for off := range chunks {
				n := min(int64(MaxRun), size-off)
				b := buf[:n]
				got, err := r.ReadAt(b, off)
				if err != nil && !(errors.Is(err, io.EOF) && got > 0) {
					errs <- fmt.Errorf("read the disk at offset %d: %w", off, err)
					return
				}
				// What a short read left unread is past the end: zeros, as
				// the replica pads it, never the last chunk's bytes.
				clear(b[got:])
				for i := int64(0); i < n; i += BlockSize {
					blk := b[i:min(i+BlockSize, n)]
					if len(blk) < BlockSize {
						padded := make([]byte, BlockSize)
						copy(padded, blk)
						blk = padded
					}
					hashes[(off+i)/BlockSize] = hashBlock(blk)
				}
			}
		}()
	}
	var sendErr error
feed:
	for off := int64(0); off < size; off += MaxRun {
		select {
		case chunks <- off:
		case sendErr = <-errs:
			break feed
		}
	}
	close(chunks)
	wg.Wait()
	close(errs)
	if sendErr != nil {
		return nil, sendErr
	}
	if err := <-errs; err != nil {
		return nil, err
	}
	return hashes, nil
}

// Extent is a byte range of a disk.
type Extent struct {
	Offset, Length int64
}

// Changed lists the runs to write so that a replica whose blocks hash to
// old becomes the disk whose blocks hash to now: blocks that differ, and,
// where old is missing (a fresh replica, nil), blocks that are not zeros.
// Adjacent blocks join into runs of at most MaxRun bytes; size trims the
// last run to the disk's end.
func Changed(old, now []Hash, size int64) []Extent {
	var out []Extent
	for i := range now {
		var differs bool
		if old == nil || i >= len(old) {
			differs = now[i] != ZeroHash
		} else {
			differs = now[i] != old[i]
		}
		if !differs {
			continue
		}
		off := int64(i) * BlockSize
		length := min(int64(BlockSize), size-off)
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == off && out[n-1].Length+length <= MaxRun {
			out[n-1].Length += length
			continue
		}
		out = append(out, Extent{Offset: off, Length: length})
	}
	return out
}

// Encode writes hashes as their raw 16 bytes each, the stored format.
func Encode(hashes []Hash) []byte {
	b := make([]byte, 0, len(hashes)*16)
	for _, h := range hashes {
		b = append(b, h[:]...)
	}
	return b
}

// Decode reads what Encode wrote.
func Decode(b []byte) ([]Hash, error) {
	if len(b)%16 != 0 {
		return nil, fmt.Errorf("a hash list is a multiple of 16 bytes, got %d", len(b))
	}
	out := make([]Hash, len(b)/16)
	for i := range out {
		copy(out[i][:], b[i*16:])
	}
	return out, nil
}

// IsZero reports whether b holds only zeros.
func IsZero(b []byte) bool {
	var zeros [BlockSize]byte
	for len(b) > 0 {
		n := min(len(b), BlockSize)
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
