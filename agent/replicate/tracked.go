package replicate

import (
	"context"
	"slices"

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
// whose hash is not the replica's.
func copyTracked(ctx context.Context, r replica.Store, replicaID string, src Source, ps []blocks.Extent, opts Options) (Result, error) {
	var res Result
	p := newPipeline(ctx, r, replicaID, opts)
	stored := make([]blocks.Hash, blocks.MaxRun/blocks.BlockSize)
	differ := make([]bool, len(stored))
	readErr := func() error {
		for _, piece := range ps {
			if err := ctx.Err(); err != nil {
				return err
			}
			if p.failed.Load() {
				return nil // the writer's error is the one to report
			}
			b := p.reserve(piece.Length)
			if err := readFull(src.Reader, b, piece.Offset); err != nil {
				return unreadable(src, piece.Offset, err)
			}
			want := stored[:blocks.Count(piece.Length)]
			if err := r.ReadHashes(replicaID, piece.Offset/blocks.BlockSize, want); err != nil {
				return TargetError(err)
			}
			differs := differ[:len(want)]
			for i := range want {
				differs[i] = blocks.HashBlock(b[i*blocks.BlockSize:min((i+1)*blocks.BlockSize, len(b))]) != want[i]
			}
			for i := 0; i < len(differs); {
				if !differs[i] {
					i++
					continue
				}
				j := i + 1
				for j < len(differs) && differs[j] {
					j++
				}
				run := b[i*blocks.BlockSize : min(j*blocks.BlockSize, len(b))]
				res.Differ += int64(len(run))
				p.add(replica.Run{Offset: piece.Offset + int64(i)*blocks.BlockSize, Data: run})
				i = j
			}
		}
		return nil
	}()
	var err error
	res.Sent, err = p.finish(readErr)
	return res, err
}
