package dirtarget

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
)

// An undo log holds before-images: each block's content (and the hash the
// hash file recorded for it) as it was when the log's point was made.
//
// Version 1 (this one) starts with a 16-byte header — magic, version, CRC
// of the two — and each record is
//
//	block index (8) | hash (16) | CRC of the data (4) | CRC of the 28 bytes before (4) | data (4096)
//
// Version 0 (before there was a header) is bare records of index, hash and
// data. Its logs are still read, and appended to in version 0 so one file
// never mixes the two; a v0 record carries no checksum, so only a partial
// last record can be recognised as torn there.
//
// Why two checksums: a record whose header fails its CRC cannot be placed
// (its block index is not trusted), so it ends the log. A record whose data
// alone fails ends the log too if the log is still growing (the newest
// point's: a power cut mid-append tears the data as well as the header);
// in a sealed log it is damage to a known block, which verify reports,
// instead of losing every record after it.
const (
	undoMagic      = "LBUNDO\r\n" // as a v0 block index it would be ~5e18: no v0 log starts with it
	undoHeaderSize = 16
	undoVersion    = 1

	v1RecordHeader = 8 + 16 + 4 + 4
	v1RecordSize   = v1RecordHeader + blocks.BlockSize
	v0RecordHeader = 8 + 16
	v0RecordSize   = v0RecordHeader + blocks.BlockSize
)

// recordSize is the largest record (the v1 one): what an undo log costs a
// block at most.
const recordSize = v1RecordSize

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// undoEntry is where a block's before-image is in a log, and its hash.
type undoEntry struct {
	off    int64 // of the block's data in the log
	hash   blocks.Hash
	damage bool // the data fails its checksum
}

// undoLog is an indexed undo log.
type undoLog struct {
	f       File
	version int
	idx     map[int64]undoEntry
	// end is the length of the valid part: where the next record goes. A
	// file longer than it has a torn tail.
	end int64
	// torn says that bytes after end are not whole, valid records.
	torn bool
}

func undoHeader() []byte {
	h := make([]byte, undoHeaderSize)
	copy(h, undoMagic)
	binary.BigEndian.PutUint32(h[8:], undoVersion)
	binary.BigEndian.PutUint32(h[12:], crc32.Checksum(h[:12], castagnoli))
	return h
}

// readUndo indexes an undo log. A tail that is not whole, valid records is
// left out (torn says so); the caller decides whether that is a crash's
// leftover to cut off, or damage. growing says the log is the newest
// point's, where a crash may have torn any record after the last fsync.
// An empty file (or a header cut short) is a version 1 log with no
// records: end 0, so the header is written first.
func readUndo(f File, growing bool) (*undoLog, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	l := &undoLog{f: f, version: undoVersion, idx: map[int64]undoEntry{}}
	head := make([]byte, min(size, undoHeaderSize))
	if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	switch {
	case len(head) < len(undoMagic) && bytes.HasPrefix([]byte(undoMagic), head),
		len(head) >= len(undoMagic) && string(head[:len(undoMagic)]) == undoMagic && len(head) < undoHeaderSize:
		// Created, and the header not (wholly) written before a crash.
		l.torn = size > 0
		return l, nil
	case string(head[:len(undoMagic)]) == undoMagic:
		if binary.BigEndian.Uint32(head[12:]) != crc32.Checksum(head[:12], castagnoli) {
			l.torn = true
			return l, nil
		}
		if v := binary.BigEndian.Uint32(head[8:]); v != undoVersion {
			return nil, fmt.Errorf("undo log version %d is newer than this agent knows (%d); upgrade it", v, undoVersion)
		}
		return l, l.scanV1(size, growing)
	default:
		l.version = 0
		return l, l.scanV0(size)
	}
}

func (l *undoLog) scanV0(size int64) error {
	l.end = size / v0RecordSize * v0RecordSize
	l.torn = l.end != size
	head := make([]byte, v0RecordHeader)
	for pos := int64(0); pos < l.end; pos += v0RecordSize {
		if _, err := l.f.ReadAt(head, pos); err != nil {
			return err
		}
		b := int64(binary.BigEndian.Uint64(head))
		if _, dup := l.idx[b]; !dup {
			e := undoEntry{off: pos + v0RecordHeader}
			copy(e.hash[:], head[8:])
			l.idx[b] = e
		}
	}
	return nil
}

// scanV1 reads every record in full, in chunks, to check its checksums.
// Reading a whole log costs what changed after its point, not the disk.
func (l *undoLog) scanV1(size int64, growing bool) error {
	const perChunk = 256
	buf := make([]byte, perChunk*v1RecordSize)
	pos := int64(undoHeaderSize)
	l.end = pos
	for pos < size {
		n, err := l.f.ReadAt(buf[:min(int64(len(buf)), size-pos)], pos)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		chunk := buf[:n]
		for len(chunk) >= v1RecordSize {
			rec := chunk[:v1RecordSize]
			if binary.BigEndian.Uint32(rec[28:]) != crc32.Checksum(rec[:28], castagnoli) {
				l.torn = true
				return nil
			}
			dataOK := binary.BigEndian.Uint32(rec[24:]) == crc32.Checksum(rec[v1RecordHeader:], castagnoli)
			if !dataOK && growing {
				l.torn = true
				return nil
			}
			b := int64(binary.BigEndian.Uint64(rec))
			if _, dup := l.idx[b]; !dup {
				e := undoEntry{off: pos + v1RecordHeader, damage: !dataOK}
				copy(e.hash[:], rec[8:])
				l.idx[b] = e
			}
			pos += v1RecordSize
			l.end = pos
			chunk = chunk[v1RecordSize:]
		}
		if len(chunk) > 0 || n == 0 {
			// Chunks hold whole records, so a remainder is a partial last
			// record; a read of nothing, a file that shrank meanwhile.
			l.torn = true
			return nil
		}
	}
	return nil
}

// cutTornTail makes the log end at its last valid record (writing the
// header of a log that has none yet), durably, before anything is
// appended: the records appended next must follow valid ones, or the next
// reading would stop before them; and a header must be on the disk before
// any record, or a power cut that keeps a later record but not the header
// leaves a file of zeros and a record, which reads as a headerless
// (version 0) log of garbage.
func (l *undoLog) cutTornTail() error {
	changed := l.torn
	if l.torn {
		if err := l.f.Truncate(l.end); err != nil {
			return err
		}
		l.torn = false
	}
	if l.version == undoVersion && l.end == 0 {
		if _, err := l.f.WriteAt(undoHeader(), 0); err != nil {
			return err
		}
		l.end = undoHeaderSize
		changed = true
	}
	if !changed {
		return nil
	}
	return l.f.Sync()
}

// appendRecord adds a before-image of block b with its recorded hash. It
// is not durable until the caller syncs l.f.
func (l *undoLog) appendRecord(b int64, hash blocks.Hash, data []byte) error {
	var rec []byte
	if l.version == 0 {
		rec = make([]byte, v0RecordSize)
		binary.BigEndian.PutUint64(rec, uint64(b))
		copy(rec[8:], hash[:])
		copy(rec[v0RecordHeader:], data)
	} else {
		rec = make([]byte, v1RecordSize)
		binary.BigEndian.PutUint64(rec, uint64(b))
		copy(rec[8:], hash[:])
		copy(rec[v1RecordHeader:], data)
		binary.BigEndian.PutUint32(rec[24:], crc32.Checksum(rec[v1RecordHeader:], castagnoli))
		binary.BigEndian.PutUint32(rec[28:], crc32.Checksum(rec[:28], castagnoli))
	}
	if _, err := l.f.WriteAt(rec, l.end); err != nil {
		return err
	}
	if _, dup := l.idx[b]; !dup {
		l.idx[b] = undoEntry{off: l.end + int64(len(rec)-blocks.BlockSize), hash: hash}
	}
	l.end += int64(len(rec))
	return nil
}
