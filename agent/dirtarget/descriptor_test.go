package dirtarget

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The descriptor is absent until written, then read back whole after
// every replacement, with no temporary file left; List finds the VM's
// replicas by their directory and skips what is not one.
func TestTheVMDescriptorIsReplacedWholeAndTheTargetListsItsVMs(t *testing.T) {
	root := t.TempDir()
	r, err := Open(root, "vm_01a")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b, err := r.Descriptor(); b != nil || err != nil {
		t.Fatalf("before any: %q %v", b, err)
	}
	for _, want := range []string{`{"format":1,"name":"web"}`, `{"format":1,"name":"web2"}`} {
		if err := r.SetDescriptor([]byte(want)); err != nil {
			t.Fatal(err)
		}
		if got, err := r.Descriptor(); string(got) != want || err != nil {
			t.Fatalf("read back %q, %v; want %q", got, err, want)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(root, "vm_01a"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !reflect.DeepEqual(names, []string{"disks", "points", DescriptorName}) {
		t.Fatalf("the replica directory holds %v", names)
	}
	os.MkdirAll(filepath.Join(root, ".deleted-vm_01b-1", "disks"), 0o755)
	os.MkdirAll(filepath.Join(root, "lost+found"), 0o755)
	if keys, err := List(root); err != nil || !reflect.DeepEqual(keys, []string{"vm_01a"}) {
		t.Fatalf("List: %v %v", keys, err)
	}
}
