package diskfile

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSparseWritesOnlyTheBlocksThatHoldData(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		size    int
		data    map[int]string // offset → bytes there
		written int64
	}{
		{"all zeros", 5 << 20, nil, 0},
		{"one byte in the third MiB", 3 << 20, map[int]string{2<<20 + 7: "x"}, 4096},
		{"two neighbouring blocks are one write", 1 << 20, map[int]string{4095: "ab"}, 8192},
		{"a short last block", 4<<20 + 100, map[int]string{4<<20 + 99: "z"}, 100},
		{"data across the 4 MiB read boundary", 8 << 20, map[int]string{4<<20 - 1: "xy"}, 8192},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			image := make([]byte, tc.size)
			for off, s := range tc.data {
				copy(image[off:], s)
			}
			path := filepath.Join(t.TempDir(), "disk.img")
			n, err := WriteSparse(t.Context(), path, bytes.NewReader(image), int64(len(image)))
			if err != nil || n != tc.written {
				t.Fatalf("wrote %d bytes (%v), want %d", n, err, tc.written)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, image) {
				t.Fatal("the file differs from the image")
			}
		})
	}
}
