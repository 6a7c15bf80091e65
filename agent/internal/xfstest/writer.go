package xfstest

import (
	"encoding/binary"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Writer writes generation g into block g mod BlocksN of a disk, one whole
// 4 KiB write at a time, until stopped: any one instant of the disk holds
// the last BlocksN generations, each in its own block.
type Writer struct {
	stop    chan struct{}
	done    sync.WaitGroup
	Written atomic.Int64
}

// BlocksN is how many blocks a Writer cycles through.
const BlocksN = 256

// StartWriter starts a Writer on the disk image at path (BlocksN blocks
// or more).
func StartWriter(t testing.TB, path string) *Writer {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := &Writer{stop: make(chan struct{})}
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		defer f.Close()
		blk := make([]byte, 4096)
		for g := int64(1); ; g++ {
			select {
			case <-w.stop:
				return
			default:
			}
			for i := 0; i < len(blk); i += 8 {
				binary.LittleEndian.PutUint64(blk[i:], uint64(g))
			}
			if _, err := f.WriteAt(blk, (g%BlocksN)*4096); err != nil {
				return
			}
			w.Written.Store(g)
		}
	}()
	return w
}

// Halt stops the writer and waits for it.
func (w *Writer) Halt() { close(w.stop); w.done.Wait() }

// Await waits until the writer wrote n blocks.
func (w *Writer) Await(n int64) {
	for w.Written.Load() < n {
		time.Sleep(time.Millisecond)
	}
}

// OneInstant says whether a disk image written by a writer is one instant
// of it: generations last-BlocksN+1 … last, each in its block (and 0,
// never written, in the blocks not reached yet).
func OneInstant(img []byte) (bool, int64) {
	var last int64
	gens := make([]int64, BlocksN)
	for b := 0; b < BlocksN; b++ {
		blk := img[b*4096 : (b+1)*4096]
		g := int64(binary.LittleEndian.Uint64(blk))
		for i := 0; i < len(blk); i += 8 {
			if int64(binary.LittleEndian.Uint64(blk[i:])) != g {
				return false, 0 // a torn block
			}
		}
		gens[b] = g
		last = max(last, g)
	}
	for b := 0; b < BlocksN; b++ {
		// The newest generation ≤ last that lands in block b (0: none yet).
		want := last - ((last-int64(b))%BlocksN+BlocksN)%BlocksN
		if want < 1 {
			want = 0
		}
		if gens[b] != want {
			return false, last
		}
	}
	return true, last
}
