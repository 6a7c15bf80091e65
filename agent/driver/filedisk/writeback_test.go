package filedisk

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

func TestWriteBackWritesOnlyTheBlocksThatDifferAndRefusesARunningVM(t *testing.T) {
	root := t.TempDir()
	d := &Driver{Root: root}
	original := make([]byte, 6<<20)
	rand.Read(original)
	os.MkdirAll(filepath.Join(root, "app"), 0o755)
	disk := filepath.Join(root, "app", "disk0.img")
	if err := os.WriteFile(disk, original, 0o644); err != nil {
		t.Fatal(err)
	}
	image := bytes.Clone(original)
	copy(image[4096*10:], bytes.Repeat([]byte{1}, 100))     // one block
	copy(image[5<<20+4000:], bytes.Repeat([]byte{2}, 200))  // across two blocks
	image = append(image, bytes.Repeat([]byte{3}, 4096)...) // the disk grew by a block
	disks := func() []driver.MaterializeDisk {
		return []driver.MaterializeDisk{{Name: "disk0", SizeBytes: int64(len(image)), Data: bytes.NewReader(image)},
			{Name: "disk1", SizeBytes: 8192, Data: bytes.NewReader(make([]byte, 8192))}}
	}

	os.WriteFile(filepath.Join(root, "app", "running"), nil, 0o644)
	if _, err := d.WriteBack(t.Context(), "app", disks()); taskCode(err) != agentproto.CodeVMRunning {
		t.Fatalf("write-back into a running VM: %v", err)
	}
	if got, _ := os.ReadFile(disk); !bytes.Equal(got, original) {
		t.Fatal("a refused write-back changed the disk")
	}
	os.Remove(filepath.Join(root, "app", "running"))

	made, err := d.WriteBack(t.Context(), "app", disks())
	if err != nil {
		t.Fatal(err)
	}
	if made.BytesWritten != 4*4096 || made.VM.ID != "app" {
		t.Fatalf("wrote %d bytes (want the 4 differing blocks, 16384), VM %+v", made.BytesWritten, made.VM)
	}
	if got, _ := os.ReadFile(disk); !bytes.Equal(got, image) {
		t.Fatal("the disk differs from the image after the write-back")
	}
	if fi, err := os.Stat(filepath.Join(root, "app", "disk1.img")); err != nil || fi.Size() != 8192 {
		t.Fatalf("the disk the VM lacked was not created: %v", err)
	}
	// Run again: nothing differs, nothing is written.
	if made, err := d.WriteBack(t.Context(), "app", disks()); err != nil || made.BytesWritten != 0 {
		t.Fatalf("second write-back wrote %d bytes: %v", made.BytesWritten, err)
	}
	// A disk the VM has and the point lacks is refused, before anything is written.
	only0 := []driver.MaterializeDisk{{Name: "disk0", SizeBytes: int64(len(original)), Data: bytes.NewReader(original)}}
	if _, err := d.WriteBack(t.Context(), "app", only0); taskCode(err) != agentproto.CodeFailbackDiskMismatch {
		t.Fatalf("write-back that leaves disk1 as it was: %v", err)
	}
	if got, _ := os.ReadFile(disk); !bytes.Equal(got, image) {
		t.Fatal("a refused write-back changed the disk")
	}
	os.Remove(filepath.Join(root, "app", "disk1.img"))
	// A disk larger than the point's is refused.
	small := []driver.MaterializeDisk{{Name: "disk0", SizeBytes: 4096, Data: bytes.NewReader(make([]byte, 4096))}}
	if _, err := d.WriteBack(t.Context(), "app", small); taskCode(err) != agentproto.CodeDiskResized {
		t.Fatalf("write-back that would shrink a disk: %v", err)
	}
}
