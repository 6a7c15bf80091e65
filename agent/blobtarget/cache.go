package blobtarget

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/zeebo/xxh3"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
)

// A hash cache is a local file holding a copy of one disk's hash blob, so
// that a cycle reads the hashes of the blocks it compares from the local
// disk instead of downloading them (4 GiB per TiB of disk).
//
// A wrong cached hash is silent data loss: the block it describes is never
// sent again. So the cache is believed only as far as it can prove itself:
//
//   - Its header names the replica's generation (diskMeta.Generation), a
//     random number every writer changes before it writes (ensureWriter).
//     At open, a header whose generation is not the replica's means someone
//     else may have written: every record is dropped (a new epoch).
//   - Each record (256 hashes) carries the header's epoch and a checksum: a
//     record from an earlier epoch, a torn write or a hole in the file fails
//     them and is read again from the blob.
//   - A write marks its blocks unknown here, durably, before it marks them
//     unknown in the blob, and records their new hashes only after the blob
//     holds them: at any instant a known hash here is the blob's.
//
// Layout: a header of cacheHeaderSize bytes, then record i at
// cacheHeaderSize + i*recordSize: 256 hashes, the epoch, an xxh3 of the
// record (seeded with i, so a record in the wrong place fails too).
const (
	cacheMagic       = "LBHCACH1"
	cacheHeaderSize  = 4096
	hashesPerRecord  = 256
	recordHashBytes  = hashesPerRecord * 16
	recordSize       = recordHashBytes + 16
	cacheHeaderBytes = 8 + 8 + 8 + 8 + 8 // magic, epoch, generation, blocks, checksum
)

type hashCache struct {
	path  string
	f     *os.File
	epoch uint64
	gen   uint64 // the replica generation the records follow; 0: none
	count int64  // blocks of the disk
	// proven: the file followed the replica's generation at open. Until
	// it is (or this store became the writer), nothing is filled: a fill
	// read from the blob while an earlier writer still writes could go
	// stale without a new generation to tell.
	proven bool
	broken atomic.Bool
}

// openCache opens (or creates) the cache file of a disk whose replica has
// generation gen and count blocks. A file that does not prove it follows
// that generation is emptied. It returns nil, nil when another process
// holds the file: that store then works without a cache.
func openCache(path string, gen uint64, count int64) (*hashCache, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	// Two stores of one replica on one host are kept apart by the host's
	// lock; this one makes sure they never share a cache regardless.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, nil
	}
	c := &hashCache{path: path, f: f, count: count}
	epoch, hgen, hcount, ok := c.readHeader()
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if ok && gen != 0 && hgen == gen && hcount == count && fi.Size() == c.fileSize() {
		c.epoch, c.gen, c.proven = epoch, gen, true
		return c, nil
	}
	// Not provably current: start over, empty.
	if err := c.reset(0, count); err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

func (c *hashCache) fileSize() int64 {
	return cacheHeaderSize + (c.count+hashesPerRecord-1)/hashesPerRecord*recordSize
}

func (c *hashCache) readHeader() (epoch, gen uint64, count int64, ok bool) {
	var h [cacheHeaderBytes]byte
	if _, err := c.f.ReadAt(h[:], 0); err != nil {
		return 0, 0, 0, false
	}
	le := binary.LittleEndian
	if string(h[:8]) != cacheMagic || le.Uint64(h[32:]) != xxh3.Hash(h[:32]) {
		return 0, 0, 0, false
	}
	return le.Uint64(h[8:]), le.Uint64(h[16:]), int64(le.Uint64(h[24:])), true
}

// writeHeader records gen durably: once it returns, a restart believes
// (gen != 0) or disbelieves (gen == 0) the records of this epoch.
func (c *hashCache) writeHeader(gen uint64) error {
	var h [cacheHeaderBytes]byte
	le := binary.LittleEndian
	copy(h[:], cacheMagic)
	le.PutUint64(h[8:], c.epoch)
	le.PutUint64(h[16:], gen)
	le.PutUint64(h[24:], uint64(c.count))
	le.PutUint64(h[32:], xxh3.Hash(h[:32]))
	if _, err := c.f.WriteAt(h[:], 0); err != nil {
		return err
	}
	if err := c.f.Sync(); err != nil {
		return err
	}
	c.gen = gen
	return nil
}

// reset drops every record (a new epoch: none of them verifies any more)
// and sizes the file for count blocks.
func (c *hashCache) reset(gen uint64, count int64) error {
	// Disbelieve the file first, so a crash before the end leaves nothing
	// a restart believes.
	if err := c.writeHeader(0); err != nil {
		return err
	}
	c.epoch, c.count = randomUint64(), count
	if err := c.f.Truncate(c.fileSize()); err != nil {
		return err
	}
	return c.writeHeader(gen)
}

// grow makes room for a disk that grew to count blocks, keeping the
// records of its old blocks. The old last record, if partial, is dropped:
// its padding is not the new blocks' hashes.
func (c *hashCache) grow(gen uint64, count int64) error {
	if err := c.writeHeader(0); err != nil {
		return err
	}
	if c.count%hashesPerRecord != 0 {
		var zero [recordSize]byte
		if _, err := c.f.WriteAt(zero[:], c.recordOffset(c.count/hashesPerRecord)); err != nil {
			return err
		}
	}
	c.count = count
	if err := c.f.Truncate(c.fileSize()); err != nil {
		return err
	}
	return c.writeHeader(gen)
}

func (c *hashCache) recordOffset(rec int64) int64 { return cacheHeaderSize + rec*recordSize }

// readRecords reads records [first, first+n) into buf (n*recordSize bytes)
// and reports which of them verify.
func (c *hashCache) readRecords(first, n int64, buf []byte) ([]bool, error) {
	if _, err := c.f.ReadAt(buf, c.recordOffset(first)); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	ok := make([]bool, n)
	for i := range n {
		ok[i] = c.verify(first+i, buf[i*recordSize:(i+1)*recordSize])
	}
	return ok, nil
}

func (c *hashCache) verify(rec int64, b []byte) bool {
	le := binary.LittleEndian
	return le.Uint64(b[recordHashBytes:]) == c.epoch && le.Uint64(b[recordHashBytes+8:]) == xxh3.HashSeed(b[:recordHashBytes+8], uint64(rec))
}

func (c *hashCache) seal(rec int64, b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b[recordHashBytes:], c.epoch)
	le.PutUint64(b[recordHashBytes+8:], xxh3.HashSeed(b[:recordHashBytes+8], uint64(rec)))
}

// lookup fills dst with the cached hashes of blocks first… and reports, per
// block, whether the cache had it. first+len(dst) must not pass count.
func (c *hashCache) lookup(first int64, dst []blocks.Hash) ([]bool, error) {
	have := make([]bool, len(dst))
	if c.broken.Load() || len(dst) == 0 {
		return have, nil
	}
	r0, r1 := first/hashesPerRecord, (first+int64(len(dst))-1)/hashesPerRecord
	buf := make([]byte, (r1-r0+1)*recordSize)
	ok, err := c.readRecords(r0, r1-r0+1, buf)
	if err != nil {
		return have, c.fail(err)
	}
	for i := range dst {
		b := first + int64(i)
		if k := b/hashesPerRecord - r0; ok[k] {
			j := k*recordSize + b%hashesPerRecord*16
			copy(dst[i][:], buf[j:j+16])
			have[i] = true
		}
	}
	return have, nil
}

// fill stores the hashes of whole records read from the blob: hs holds
// blocks rec*256… up to the next record boundary or the disk's end.
func (c *hashCache) fill(rec int64, hs []blocks.Hash) error {
	if c.broken.Load() {
		return nil
	}
	// Only whole records, or the disk's last one: a record sealed with
	// blocks missing would claim hashes for them.
	n := int64(len(hs)) / hashesPerRecord
	if rec*hashesPerRecord+int64(len(hs)) == c.count && int64(len(hs))%hashesPerRecord != 0 {
		n++
	}
	hs = hs[:min(int64(len(hs)), n*hashesPerRecord)]
	if n == 0 {
		return nil
	}
	buf := make([]byte, n*recordSize)
	for i, h := range hs {
		copy(buf[int64(i)/hashesPerRecord*recordSize+int64(i)%hashesPerRecord*16:], h[:])
	}
	for k := range n {
		c.seal(rec+k, buf[k*recordSize:(k+1)*recordSize])
	}
	if _, err := c.f.WriteAt(buf, c.recordOffset(rec)); err != nil {
		return c.fail(err)
	}
	return nil
}

// update sets the given blocks' hashes in the records that verify; the
// others stay unbelieved and are read from the blob when needed. With
// sync, the change is durable when it returns.
func (c *hashCache) update(set map[int64]blocks.Hash, sync bool) error {
	if c.broken.Load() {
		return nil
	}
	byRecord := map[int64][]int64{}
	for b := range set {
		byRecord[b/hashesPerRecord] = append(byRecord[b/hashesPerRecord], b)
	}
	buf := make([]byte, recordSize)
	for rec, bs := range byRecord {
		ok, err := c.readRecords(rec, 1, buf)
		if err != nil {
			return c.fail(err)
		}
		if !ok[0] {
			continue
		}
		for _, b := range bs {
			h := set[b]
			copy(buf[b%hashesPerRecord*16:], h[:])
		}
		c.seal(rec, buf)
		if _, err := c.f.WriteAt(buf, c.recordOffset(rec)); err != nil {
			return c.fail(err)
		}
	}
	if sync {
		if err := c.f.Sync(); err != nil {
			return c.fail(err)
		}
	}
	return nil
}

// fail stops using a cache that could not be read or written, and deletes
// its file so no later store believes what it holds. It returns an error
// only when the file could not be deleted: then the caller must not go on
// to change the blob, since the file might still be believed.
func (c *hashCache) fail(cause error) error {
	if c.broken.Swap(true) {
		return nil
	}
	if err := os.Remove(c.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the hash cache %s failed (%v) and cannot be deleted: %w", c.path, cause, err)
	}
	return nil
}

// close syncs the records written lazily and releases the file.
func (c *hashCache) close() error {
	err := c.f.Sync()
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	if c.broken.Load() {
		return nil
	}
	return err
}

func randomUint64() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return binary.LittleEndian.Uint64(b[:])
}
