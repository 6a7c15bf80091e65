package blocks

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func randomDisk(size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestChangedFindsExactlyTheWrittenBlocks(t *testing.T) {
	const size = 9<<20 + 1234 // several chunks and a short last block
	disk := randomDisk(size, 1)
	before, err := HashDisk(bytes.NewReader(disk), size, 3)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(before)) != Count(size) {
		t.Fatalf("%d hashes for %d blocks", len(before), Count(size))
	}
	r := rand.New(rand.NewPCG(2, 2))
	written := map[int64]bool{}
	for range 200 {
		off := r.Int64N(size - 10)
		n := 1 + r.Int64N(min(9000, size-off))
		for i := off; i < off+n; i++ {
			disk[i]++
		}
		for b := off / BlockSize; b <= (off+n-1)/BlockSize; b++ {
			written[b] = true
		}
	}
	after, _ := HashDisk(bytes.NewReader(disk), size, 2)
	found := map[int64]bool{}
	for _, e := range Changed(before, after, size) {
		if e.Length > MaxRun || e.Offset%BlockSize != 0 || e.Offset+e.Length > size {
			t.Fatalf("bad run %+v", e)
		}
		for b := e.Offset / BlockSize; b*BlockSize < e.Offset+e.Length; b++ {
			found[b] = true
		}
	}
	if len(found) != len(written) {
		t.Fatalf("runs cover %d blocks, %d were written", len(found), len(written))
	}
	for b := range written {
		if !found[b] {
			t.Fatalf("written block %d is not in any run", b)
		}
	}
}

func TestFreshReplicaSkipsZeroBlocksAndRunsStayUnder4MiB(t *testing.T) {
	const size = 20 << 20
	disk := make([]byte, size)
	copy(disk[1<<20:], randomDisk(10<<20, 3)) // 10 MiB of data in a 20 MiB sparse disk
	hashes, _ := HashDisk(bytes.NewReader(disk), size, 4)
	var total int64
	runs := Changed(nil, hashes, size)
	for _, e := range runs {
		if e.Length > MaxRun {
			t.Fatalf("run of %d bytes", e.Length)
		}
		if IsZero(disk[e.Offset : e.Offset+e.Length]) {
			t.Fatalf("a run of zeros would be sent: %+v", e)
		}
		total += e.Length
	}
	if total != 10<<20 || len(runs) != 3 {
		t.Fatalf("fresh replica gets %d bytes in %d runs, want the 10 MiB of data in 3 runs of ≤ 4 MiB", total, len(runs))
	}
}

func TestHashesRoundTripThroughTheStoredFormat(t *testing.T) {
	hashes, _ := HashDisk(bytes.NewReader(randomDisk(1<<20, 4)), 1<<20, 1)
	back, err := Decode(Encode(hashes))
	if err != nil || len(back) != len(hashes) || back[7] != hashes[7] {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := Decode(make([]byte, 17)); err == nil {
		t.Fatal("a truncated hash list is accepted")
	}
}

func TestHashDiskHashesWhatAShortReadLeftUnreadAsZerosNotAsStaleBytes(t *testing.T) {
	// Two chunks; the reader ends 10 KiB into the second, and one worker
	// reuses its buffer, which still holds the first chunk's bytes.
	size := int64(MaxRun + 16*BlockSize)
	data := randomDisk(MaxRun+10*1024, 9)
	hashes, err := HashDisk(bytes.NewReader(data), size, 1)
	if err != nil {
		t.Fatal(err)
	}
	padded := make([]byte, size)
	copy(padded, data)
	for i := int64(0); i < Count(size); i++ {
		if hashes[i] != HashBlock(padded[i*BlockSize:(i+1)*BlockSize]) {
			t.Fatalf("block %d hashed as something other than the disk padded with zeros", i)
		}
	}
}
