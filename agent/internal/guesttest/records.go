package guesttest

import (
	"bytes"
	"fmt"
	"strconv"
)

// The record format. The standard workload writes record n (from 1) as
// the whole RecordSize-byte block n of the guest's disk (byte offset
// n*RecordSize; block 0 is never written): the text "LBREC <n>\n" in
// decimal, then zeros to the end of the block. Each record is written
// with its own fsync (dd conv=fsync) before the guest prints "ACK <n>" on
// its serial console, so every acknowledged record is on stable storage.
const (
	RecordSize  = 4096
	RecordMagic = "LBREC "
)

// Records parses the records back from a raw disk image: the numbers of
// the valid records, in block order. A block is a valid record when it
// holds "LBREC <n>\n" with n its own block number, and zeros after; any
// other block (never written, torn, or misplaced) is left out.
func Records(disk []byte) []int {
	var recs []int
	for b := 1; (b+1)*RecordSize <= len(disk); b++ {
		block := disk[b*RecordSize : (b+1)*RecordSize]
		if n, ok := parseRecord(block); ok && n == b {
			recs = append(recs, n)
		}
	}
	return recs
}

func parseRecord(block []byte) (int, bool) {
	if !bytes.HasPrefix(block, []byte(RecordMagic)) {
		return 0, false
	}
	rest := block[len(RecordMagic):]
	nl := bytes.IndexByte(rest, '\n')
	if nl <= 0 || nl > 20 {
		return 0, false
	}
	n, err := strconv.Atoi(string(rest[:nl]))
	if err != nil || n <= 0 {
		return 0, false
	}
	for _, c := range rest[nl+1:] {
		if c != 0 {
			return 0, false
		}
	}
	return n, true
}

// Record returns the block the standard workload writes as record n.
func Record(n int) []byte {
	block := make([]byte, RecordSize)
	copy(block, fmt.Sprintf("%s%d\n", RecordMagic, n))
	return block
}

// CheckPrefix checks that recs, as Records returns them, are 1..m with no
// gap, and that m is at least acked: every acknowledged record is there,
// and any record past them (written, not yet acknowledged when the guest
// stopped) extends the prefix. It returns m.
func CheckPrefix(recs []int, acked int) (int, error) {
	for i, n := range recs {
		if n != i+1 {
			return 0, fmt.Errorf("records are not a gap-free prefix: record %d is missing (next found is %d)", i+1, n)
		}
	}
	if len(recs) < acked {
		return 0, fmt.Errorf("records 1..%d are on the disk, but the guest acknowledged up to %d", len(recs), acked)
	}
	return len(recs), nil
}
