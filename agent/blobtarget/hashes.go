package blobtarget

import (
	"bytes"
	"sort"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/vhd"
)

// streamBlocks is how many blocks' hashes (256 KiB of them, for 64 MiB of
// disk) a whole-disk pass (verify, repair) holds at a time: memory stays
// flat whatever the disk's size. A multiple of hashesPerRecord, so each
// step fills whole cache records.
const streamBlocks = 16384

// downloadHashes reads the hashes of blocks first… of a hash blob (or a
// snapshot of one): only that range. Never-written hashes (zeros) are a
// zero block's.
func (r *Replica) downloadHashes(c *pageblob.Client, first int64, dst []blocks.Hash) error {
	if len(dst) == 0 {
		return nil
	}
	buf := make([]byte, len(dst)*16)
	_, err := c.DownloadBuffer(r.ctx, buf, &blob.DownloadBufferOptions{
		Range: blob.HTTPRange{Offset: first * 16, Count: int64(len(buf))}, BlockSize: blocks.MaxRun, Concurrency: uint16(r.conc)})
	if err != nil {
		return classify(err)
	}
	var never blocks.Hash
	for i := range dst {
		copy(dst[i][:], buf[i*16:])
		if dst[i] == never {
			dst[i] = blocks.ZeroHash
		}
	}
	return nil
}

func (d *disk) blockCount() int64 { return blocks.Count(vhd.DataSize(d.meta.SizeBytes)) }

// hashes fills dst with the current hashes of blocks first… (all inside
// the disk) of the newest replica: from the cache where it has them, the
// rest downloaded by whole cache records and kept. The caller holds d.mu,
// shared at least: a writer holds it alone, so no record is filled from a
// blob read that a write then makes stale.
func (r *Replica) hashes(d *disk, first int64, dst []blocks.Hash) error {
	if d.cache == nil || !d.cache.proven {
		return r.downloadHashes(d.hashBlob, first, dst)
	}
	have, err := d.cache.lookup(first, dst)
	if err != nil {
		return err
	}
	count := d.blockCount()
	end := first + int64(len(dst))
	// Missing records, contiguous ones in one download.
	for i := 0; i < len(dst); {
		if have[i] {
			i++
			continue
		}
		rec := (first + int64(i)) / hashesPerRecord
		j := i
		for j < len(dst) && !have[j] {
			j++
		}
		recEnd := (first + int64(j) + hashesPerRecord - 1) / hashesPerRecord
		from, to := rec*hashesPerRecord, min(recEnd*hashesPerRecord, count)
		got := make([]blocks.Hash, to-from)
		if err := r.downloadHashes(d.hashBlob, from, got); err != nil {
			return err
		}
		if err := d.cache.fill(rec, got); err != nil {
			return err
		}
		for b := max(from, first); b < min(to, end); b++ {
			dst[b-first] = got[b-from]
		}
		i = j
	}
	return nil
}

// pageSpan is a run of whole hash-blob pages a write rewrites, with the
// current hashes of the blocks they hold (up to the disk's last block).
type pageSpan struct {
	first, n int64 // pages
	current  []blocks.Hash
}

// spansOf groups the pages holding the given blocks into runs of at most
// 4 MiB (Azure's largest page write) and reads their current hashes with
// current.
func spansOf(touched []int64, count int64, current func(first int64, dst []blocks.Hash) error) ([]pageSpan, error) {
	pages := make([]int64, 0, len(touched))
	seen := map[int64]bool{}
	for _, b := range touched {
		if p := b / hashesPerPage; !seen[p] {
			seen[p] = true
			pages = append(pages, p)
		}
	}
	sort.Slice(pages, func(i, j int) bool { return pages[i] < pages[j] })
	var spans []pageSpan
	for _, p := range pages {
		if k := len(spans) - 1; k >= 0 && spans[k].first+spans[k].n == p && (spans[k].n+1)*page <= blocks.MaxRun {
			spans[k].n++
			continue
		}
		spans = append(spans, pageSpan{first: p, n: 1})
	}
	for i := range spans {
		s := &spans[i]
		from := s.first * hashesPerPage
		s.current = make([]blocks.Hash, min((s.first+s.n)*hashesPerPage, count)-from)
		if err := current(from, s.current); err != nil {
			return nil, err
		}
	}
	return spans, nil
}

// writeSpans uploads the spans' pages with the blocks of set changed,
// Concurrency at a time. Each write is fenced by the generation this store
// set as the hash blob's sequence number: once another writer has taken
// over the replica, this one can no longer change its hashes.
func (r *Replica) writeSpans(d *disk, spans []pageSpan, set map[int64]blocks.Hash) error {
	return r.parallel(len(spans), func(i int) error {
		s := spans[i]
		buf := make([]byte, s.n*page)
		from := s.first * hashesPerPage
		for j, h := range s.current {
			if v, ok := set[from+int64(j)]; ok {
				h = v
			}
			copy(buf[j*16:], h[:])
		}
		_, err := d.hashBlob.UploadPages(r.ctx, streaming.NopCloser(bytes.NewReader(buf)), blob.HTTPRange{Offset: s.first * page, Count: int64(len(buf))},
			&pageblob.UploadPagesOptions{SequenceNumberAccessConditions: &pageblob.SequenceNumberAccessConditions{IfSequenceNumberEqualTo: to.Ptr(int64(d.writer))}})
		return classify(err)
	})
}

// mismatches reads bytes [from, to) of a page blob (to at most size, the
// source's size) in 4 MiB chunks, Concurrency at a time, and returns the
// offsets of the blocks whose hash is not the one in want (want[0] is the
// hash of the block at from).
func (r *Replica) mismatches(c *pageblob.Client, from, to, size int64, want []blocks.Hash) ([]int64, error) {
	chunks := int((to - from + blocks.MaxRun - 1) / blocks.MaxRun)
	var mu sync.Mutex
	var bad []int64
	err := r.parallel(chunks, func(i int) error {
		off := from + int64(i)*blocks.MaxRun
		n := min(int64(blocks.MaxRun), to-off)
		n = (n + blocks.BlockSize - 1) / blocks.BlockSize * blocks.BlockSize
		buf := make([]byte, n)
		if _, err := c.DownloadBuffer(r.ctx, buf, &blob.DownloadBufferOptions{Range: blob.HTTPRange{Offset: off, Count: n}, BlockSize: n}); err != nil {
			return classify(err)
		}
		if end := size - off; end < n {
			clear(buf[end:]) // past the source's end: hashed as zeros
		}
		for j := int64(0); j < n; j += blocks.BlockSize {
			k := (off + j - from) / blocks.BlockSize
			if k < int64(len(want)) && blocks.HashBlock(buf[j:j+blocks.BlockSize]) != want[k] {
				mu.Lock()
				bad = append(bad, off+j)
				mu.Unlock()
			}
		}
		return nil
	})
	sort.Slice(bad, func(i, j int) bool { return bad[i] < bad[j] })
	return bad, err
}

// streamMismatches checks a disk of size bytes, streamBlocks at a time:
// the hashes of a step come from hashesOf, its data from data; each
// step's mismatches (and its hashes, for a caller that keeps them) go to
// step before the next begins.
func (r *Replica) streamMismatches(data *pageblob.Client, size int64, hashesOf func(first int64, dst []blocks.Hash) error,
	step func(first int64, want []blocks.Hash, bad []int64) error) error {
	want := make([]blocks.Hash, streamBlocks)
	count := blocks.Count(size)
	for first := int64(0); first < count; first += streamBlocks {
		w := want[:min(streamBlocks, count-first)]
		if err := hashesOf(first, w); err != nil {
			return err
		}
		from := first * blocks.BlockSize
		bad, err := r.mismatches(data, from, min(from+int64(len(w))*blocks.BlockSize, size), size, w)
		if err != nil {
			return err
		}
		if err := step(first, w, bad); err != nil {
			return err
		}
	}
	return nil
}

// unknownAll is the hash update that marks every given block unknown.
func unknownAll(bs []int64) map[int64]blocks.Hash {
	m := make(map[int64]blocks.Hash, len(bs))
	for _, b := range bs {
		m[b] = replica.UnknownHash
	}
	return m
}
