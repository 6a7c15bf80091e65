package replicate

import (
	"context"
	"slices"
	"sync"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// A tracked copy (the driver says which extents may have changed) reads
// each changed extent once: it hashes the blocks it read against the
// replica's stored hashes and writes those that differ from the same
// buffer. A scan-then-write copy would read each changed block twice, and
// a whole 4 MiB chunk around every small extent: for a guest's scattered
// 64 KiB writes, 64 times what changed.
//
// Only a copy whose extents stay under the resync limit is tracked: that
// limit must be judged before anything is written, which only the
// two-pass copy can (a burst of changes then costs the second read).

// pieces turns extents into the block-aligned ranges to read, in order,
// none overlapping another (extents may overlap or share a block), none
// longer than MaxRun and none past size.
func pieces(extents []blocks.Extent, size int64) []blocks.Extent {
	var spans []blocks.Extent
	for _, e := range extents {
		start := max(e.Offset, 0) / blocks.BlockSize * blocks.BlockSize
		end := min(e.Offset+e.Length, size)
		end = min((end+blocks.BlockSize-1)/blocks.BlockSize*blocks.BlockSize, size)
		if start < end {
			spans = append(spans, blocks.Extent{Offset: start, Length: end - start})
		}
	}
	slices.SortFunc(spans, func(a, b blocks.Extent) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	var merged []blocks.Extent
	for _, e := range spans {
		if n := len(merged); n > 0 && e.Offset <= merged[n-1].Offset+merged[n-1].Length {
			last := &merged[n-1]
			last.Length = max(last.Length, e.Offset+e.Length-last.Offset)
			continue
		}
		merged = append(merged, e)
	}
	var out []blocks.Extent
	for _, e := range merged {
		for off := e.Offset; off < e.Offset+e.Length; off += blocks.MaxRun {
			out = append(out, blocks.Extent{Offset: off, Length: min(blocks.MaxRun, e.Offset+e.Length-off)})
		}
	}
	return out
}

// extentBytes is how many bytes the pieces cover.
func extentBytes(ps []blocks.Extent) int64 {
	var n int64
	for _, p := range ps {
		n += p.Length
	}
	return n
}

// copyTracked reads the pieces once each and writes the blocks among them
// whose hash is not the replica's. Pieces are read HashWorkers at a time
// (a driver's reader may be a network export, where one read at a time is
// bound by its round trips), a batch's worth at once, and queued in order.
func copyTracked(ctx context.Context, r replica.Store, replicaID string, src Source, ps []blocks.Extent, opts Options) (Result, error) {
	var res Result
	p := newPipeline(ctx, r, replicaID, opts)
	workers := HashWorkers()
	scratch := make(chan *trackedScratch, workers)
	for range workers {
		scratch <- &trackedScratch{stored: make([]blocks.Hash, blocks.MaxRun/blocks.BlockSize), differ: make([]bool, blocks.MaxRun/blocks.BlockSize)}
	}
	readErr := func() error {
		for i := 0; i < len(ps); {
			if err := ctx.Err(); err != nil {
				return err
			}
			if p.failed.Load() {
				return nil // the writer's error is the one to report
			}
			// A group of pieces that fits the batch: reserving them
			// hands no half-read batch to the writer (only the first
			// reservation may, when the batch is full).
			room := p.room()
			if room < ps[i].Length {
				room = p.limit
			}
			j, sum := i, int64(0)
			for j < len(ps) && (j == i || sum+ps[j].Length <= room) {
				sum += ps[j].Length
				j++
			}
			group := ps[i:j]
			bufs := make([][]byte, len(group))
			for k, piece := range group {
				bufs[k] = p.reserve(piece.Length)
			}
			runs := make([][]replica.Run, len(group))
			errs := make([]error, len(group))
			var wg sync.WaitGroup
			for k, piece := range group {
				s := <-scratch
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { scratch <- s }()
					runs[k], errs[k] = s.compare(r, replicaID, src, piece, bufs[k])
				}()
			}
			wg.Wait()
			for k := range group {
				if errs[k] != nil {
					return errs[k]
				}
				for _, run := range runs[k] {
					res.Differ += int64(len(run.Data))
				}
				p.add(runs[k]...)
			}
			i = j
		}
		return nil
	}()
	var err error
	res.Sent, err = p.finish(readErr)
	return res, err
}

// trackedScratch is one reader's room for a piece's hashes.
type trackedScratch struct {
	stored []blocks.Hash
	differ []bool
}

// compare reads a piece into b and returns the runs of its blocks whose
// hash is not the replica's, as slices of b.
func (s *trackedScratch) compare(r replica.Store, replicaID string, src Source, piece blocks.Extent, b []byte) ([]replica.Run, error) {
	if err := readFull(src.Reader, b, piece.Offset); err != nil {
		return nil, unreadable(src, piece.Offset, err)
	}
	want := s.stored[:blocks.Count(piece.Length)]
	if err := r.ReadHashes(replicaID, piece.Offset/blocks.BlockSize, want); err != nil {
		return nil, TargetError(err)
	}
	differs := s.differ[:len(want)]
	for i := range want {
		differs[i] = blocks.HashBlock(b[i*blocks.BlockSize:min((i+1)*blocks.BlockSize, len(b))]) != want[i]
	}
	var runs []replica.Run
	for i := 0; i < len(differs); {
		if !differs[i] {
			i++
			continue
		}
		j := i + 1
		for j < len(differs) && differs[j] {
			j++
		}
		runs = append(runs, replica.Run{Offset: piece.Offset + int64(i)*blocks.BlockSize, Data: b[i*blocks.BlockSize : min(j*blocks.BlockSize, len(b))]})
		i = j
	}
	return runs, nil
}
