package guesttest

import (
	"slices"
	"testing"
)

func TestRecordsParsesValidRecordsInBlockOrder(t *testing.T) {
	disk := make([]byte, 8*RecordSize)
	for _, n := range []int{1, 2, 4} {
		copy(disk[n*RecordSize:], Record(n))
	}
	copy(disk[5*RecordSize:], Record(6)) // misplaced
	copy(disk[6*RecordSize:], Record(6)) // torn: another write's bytes in it
	disk[6*RecordSize+2000] = 0xff
	copy(disk[7*RecordSize:], RecordMagic+"7") // torn: no newline
	copy(disk[0:], Record(1))                  // block 0 is never a record
	if got := Records(disk); !slices.Equal(got, []int{1, 2, 4}) {
		t.Fatalf("Records = %v, want [1 2 4]", got)
	}
	if _, err := CheckPrefix([]int{1, 2, 4}, 2); err == nil {
		t.Fatal("CheckPrefix accepted a gap")
	}
	if _, err := CheckPrefix([]int{1, 2}, 3); err == nil {
		t.Fatal("CheckPrefix accepted a missing acknowledged record")
	}
	if m, err := CheckPrefix([]int{1, 2, 3}, 2); err != nil || m != 3 {
		t.Fatalf("CheckPrefix = %d, %v; want 3, nil", m, err)
	}
}
