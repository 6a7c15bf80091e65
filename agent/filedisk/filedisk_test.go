package filedisk

import (
	"os"
	"path/filepath"
	"testing"
)

func TestInventoryFollowsTheDirectoryConventions(t *testing.T) {
	root := t.TempDir()
	write := func(path string, size int) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "web", "disk0.img"), 4096)
	write(filepath.Join(root, "web", "disk1.img"), 8192)
	write(filepath.Join(root, "web", "notes.txt"), 10)
	write(filepath.Join(root, "web", "running"), 0)
	write(filepath.Join(root, "db", "vm.json"), 0)
	os.WriteFile(filepath.Join(root, "db", "vm.json"), []byte(`{"id":"db-7f3a"}`), 0o644)
	write(filepath.Join(root, "db", "data.img"), 512)
	os.MkdirAll(filepath.Join(root, "db", "sub.img"), 0o755) // a directory, not a disk
	write(filepath.Join(root, "broken", "vm.json"), 0)       // empty vm.json: skipped with a warning
	write(filepath.Join(root, "stray.img"), 1)               // not in a VM directory

	d := &Driver{Root: root}
	vms, err := d.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 2 {
		t.Fatalf("VMs: %+v", vms)
	}
	db, web := vms[0], vms[1]
	if db.ID != "db-7f3a" || db.Name != "db" || db.PowerState != "Off" || len(db.Disks) != 1 || db.Disks[0].SizeBytes != 512 {
		t.Fatalf("db: %+v", db)
	}
	if web.ID != "web" || web.PowerState != "Running" || len(web.Disks) != 2 || web.Disks[1].SizeBytes != 8192 || web.Disks[0].Format != "raw" {
		t.Fatalf("web: %+v", web)
	}
	if err := (&Driver{Root: filepath.Join(root, "nope")}).Check(); err == nil {
		t.Fatal("a missing VM root passes the check")
	}
}
