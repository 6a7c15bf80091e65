package filedisk

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/diskfile"
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

// cutReader reads an image up to cut bytes, then fails, as a target that
// goes away part-way would.
type cutReader struct {
	data []byte
	cut  int64
}

var errCut = errors.New("the target went away")

func (r cutReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > r.cut {
		return 0, errCut
	}
	return copy(p, r.data[off:]), nil
}

// cancelReader reads the image, and cancels the task once it has read
// the chunk at at.
type cancelReader struct {
	data   []byte
	at     int64
	cancel context.CancelFunc
}

func (r cancelReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.at {
		r.cancel()
	}
	return copy(p, r.data[off:]), nil
}

// A write back cut part-way (the image fails, the task is cancelled)
// leaves the disks between two versions; run again, it writes what still
// differs, and only that, and the disks are the image's.
func TestAWriteBackCutPartWayEndsTheSameWhenRunAgain(t *testing.T) {
	const chunk = 4 << 20 // what diskfile.WriteBack reads at a time
	root := t.TempDir()
	d := &Driver{Root: root}
	original := make([]byte, 3*chunk)
	rand.Read(original)
	os.MkdirAll(filepath.Join(root, "app"), 0o755)
	disk0, disk1 := filepath.Join(root, "app", "disk0.img"), filepath.Join(root, "app", "disk1.img")
	image := bytes.Clone(original)
	// Two blocks differ in each of the three chunks.
	for _, off := range []int{0, 8 * 4096, chunk + 4096, 2*chunk - 4096, 2*chunk + 100*4096, 3*chunk - 10} {
		copy(image[off:], bytes.Repeat([]byte{7}, 10))
	}
	// disk1 is one the VM lacks: data in its first chunk, its second and
	// its last (short) block.
	image1 := make([]byte, 2*chunk+1000)
	for _, off := range []int{4096, chunk + 3*4096, 2 * chunk} {
		copy(image1[off:], bytes.Repeat([]byte{9}, 500))
	}
	reset := func() {
		t.Helper()
		os.Remove(disk1)
		if err := os.WriteFile(disk0, original, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check := func(how string, made driver.Materialized, err error, want int64) {
		t.Helper()
		if err != nil || made.BytesWritten != want {
			t.Fatalf("%s: wrote %d bytes (want %d): %v", how, made.BytesWritten, want, err)
		}
		if got, _ := os.ReadFile(disk0); !bytes.Equal(got, image) {
			t.Fatalf("%s: disk0 is not the image", how)
		}
		if got, _ := os.ReadFile(disk1); !bytes.Equal(got, image1) {
			t.Fatalf("%s: disk1 is not the image (%d bytes of %d)", how, len(got), len(image1))
		}
	}
	good := func() []driver.MaterializeDisk {
		return []driver.MaterializeDisk{{Name: "disk0", SizeBytes: int64(len(image)), Data: bytes.NewReader(image)},
			{Name: "disk1", SizeBytes: int64(len(image1)), Data: bytes.NewReader(image1)}}
	}

	// The image fails in disk0's second chunk: its first is written.
	reset()
	cut := good()
	cut[0].Data = cutReader{data: image, cut: chunk + chunk/2}
	made, err := d.WriteBack(t.Context(), "app", cut)
	var re *diskfile.ReadError
	if !errors.As(err, &re) || !errors.Is(err, errCut) || made.BytesWritten != 2*4096 {
		t.Fatalf("a write back whose image fails: wrote %d bytes: %v", made.BytesWritten, err)
	}
	if got, _ := os.ReadFile(disk0); bytes.Equal(got, original) || bytes.Equal(got, image) {
		t.Fatal("the cut write back did not stop between the two versions")
	}
	made, err = d.WriteBack(t.Context(), "app", good())
	check("rerun after the image failed", made, err, 4*4096+2*4096+1000)

	// Cancelled once it has read disk0's second chunk: two chunks written.
	reset()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cancelled := good()
	cancelled[0].Data = cancelReader{data: image, at: chunk, cancel: cancel}
	made, err = d.WriteBack(ctx, "app", cancelled)
	if !errors.Is(err, context.Canceled) || made.BytesWritten != 4*4096 {
		t.Fatalf("a cancelled write back: wrote %d bytes: %v", made.BytesWritten, err)
	}
	made, err = d.WriteBack(t.Context(), "app", good())
	check("rerun after a cancel", made, err, 2*4096+2*4096+1000)

	// disk1, new, is cut in its second chunk: the file is left short, with
	// its first chunk; the rerun writes the rest of its data.
	reset()
	cut = good()
	cut[1].Data = cutReader{data: image1, cut: chunk + 1}
	made, err = d.WriteBack(t.Context(), "app", cut)
	if !errors.Is(err, errCut) || made.BytesWritten != 6*4096+4096 {
		t.Fatalf("a write back cut in a new disk: wrote %d bytes: %v", made.BytesWritten, err)
	}
	if fi, err := os.Stat(disk1); err != nil || fi.Size() >= int64(len(image1)) {
		t.Fatalf("the cut new disk: %v %v", fi, err)
	}
	made, err = d.WriteBack(t.Context(), "app", good())
	check("rerun after a new disk was cut", made, err, 4096+1000)
}
