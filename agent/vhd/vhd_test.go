package vhd

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestDataSizeRoundsUpToAWholeMiB(t *testing.T) {
	for size, want := range map[int64]int64{1: 1 << 20, 1 << 20: 1 << 20, 1<<20 + 1: 2 << 20, 3*(1<<20) + 512: 4 << 20} {
		if got := DataSize(size); got != want {
			t.Errorf("DataSize(%d) = %d, want %d", size, got, want)
		}
	}
}

func TestFooterRoundTripsAndRefusesDamage(t *testing.T) {
	f := Footer{DataSize: 4 << 20, Created: time.Date(2026, 3, 9, 10, 0, 0, 0, time.UTC)}
	copy(f.UniqueID[:], "0123456789abcdef")
	b, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil || got != f {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	b[100] ^= 1
	if _, err := Parse(b); err == nil {
		t.Fatal("a damaged footer passes its checksum")
	}
	if _, err := (Footer{DataSize: 1000}).Marshal(); err == nil {
		t.Fatal("a size that is not a multiple of 512 is accepted")
	}
}

// TestQemuReadsTheFixedVHDAsTheSourceDisk is the interoperability proof:
// qemu-img, an independent reader, sees a fixed VHD of the right size whose
// content equals the raw source.
func TestQemuReadsTheFixedVHDAsTheSourceDisk(t *testing.T) {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		if os.Getenv("LIFEBOAT_REQUIRE_QEMU") != "" {
			t.Fatal("qemu-img is not installed and LIFEBOAT_REQUIRE_QEMU is set; run make test-deps")
		}
		t.Skip("qemu-img is not installed; `make test` installs it")
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	data := make([]byte, 3<<20+4096) // not a whole MiB: the VHD pads it
	rand.Read(data)
	os.WriteFile(raw, data, 0o644)

	vhdPath := filepath.Join(dir, "disk.vhd")
	out, _ := os.Create(vhdPath)
	io.Copy(out, bytes.NewReader(data))
	size := DataSize(int64(len(data)))
	out.Write(make([]byte, size-int64(len(data))))
	footer, _ := Footer{DataSize: size, Created: time.Now()}.Marshal()
	out.Write(footer)
	out.Close()

	info, err := exec.Command(qemuImg, "info", "-f", "vpc", "--output", "json", vhdPath).Output()
	if err != nil {
		t.Fatalf("qemu-img info: %v", err)
	}
	var meta struct {
		VirtualSize int64 `json:"virtual-size"`
		Format      string
	}
	json.Unmarshal(info, &meta)
	if meta.Format != "vpc" || meta.VirtualSize != size {
		t.Fatalf("qemu-img sees %+v, want vpc of %d bytes", meta, size)
	}
	// The source padded to the VHD's size must compare equal.
	padded := filepath.Join(dir, "padded.raw")
	os.WriteFile(padded, append(data, make([]byte, size-int64(len(data)))...), 0o644)
	if out, err := exec.Command(qemuImg, "compare", "-f", "raw", "-F", "vpc", padded, vhdPath).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare: %v\n%s", err, out)
	}
}
