package filedisk

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// file is one file to create under the VM root; dir marks a directory.
type file struct {
	path string
	data string
	size int
	dir  bool
}

func TestInventoryFollowsTheDirectoryConventions(t *testing.T) {
	tests := []struct {
		name  string
		files []file
		want  func(root string) []agentproto.VM
		warn  string // a warning the log must hold
	}{
		{
			name:  "an empty root has no VMs",
			files: nil,
			want:  func(string) []agentproto.VM { return nil },
		},
		{
			name:  "the directory name is the id and the name; only regular .img files are disks",
			files: []file{{path: "web/disk0.img", size: 4096}, {path: "web/disk1.img", size: 8192}, {path: "web/notes.txt", size: 10}, {path: "web/sub.img", dir: true}, {path: "stray.img", size: 1}},
			want: func(root string) []agentproto.VM {
				return []agentproto.VM{{ID: "web", Name: "web", PowerState: "Off", Disks: []agentproto.Disk{
					{Path: filepath.Join(root, "web", "disk0.img"), SizeBytes: 4096, Format: "raw"},
					{Path: filepath.Join(root, "web", "disk1.img"), SizeBytes: 8192, Format: "raw"},
				}}}
			},
		},
		{
			name:  "vm.json gives a stable id that survives a rename",
			files: []file{{path: "db-renamed/vm.json", data: `{"id": "db-7f3a"}`}, {path: "db-renamed/data.img", size: 512}},
			want: func(root string) []agentproto.VM {
				return []agentproto.VM{{ID: "db-7f3a", Name: "db-renamed", PowerState: "Off", Disks: []agentproto.Disk{
					{Path: filepath.Join(root, "db-renamed", "data.img"), SizeBytes: 512, Format: "raw"}}}}
			},
		},
		{
			name:  "a file named running marks the VM as running",
			files: []file{{path: "app/running"}, {path: "app/os.img", size: 1024}},
			want: func(root string) []agentproto.VM {
				return []agentproto.VM{{ID: "app", Name: "app", PowerState: "Running", Disks: []agentproto.Disk{
					{Path: filepath.Join(root, "app", "os.img"), SizeBytes: 1024, Format: "raw"}}}}
			},
		},
		{
			name:  "a broken vm.json is logged and the directory name is used",
			files: []file{{path: "broken/vm.json", data: `{"id": `}, {path: "empty/vm.json", data: `{}`}},
			want: func(string) []agentproto.VM {
				return []agentproto.VM{
					{ID: "broken", Name: "broken", PowerState: "Off", Disks: []agentproto.Disk{}},
					{ID: "empty", Name: "empty", PowerState: "Off", Disks: []agentproto.Disk{}},
				}
			},
			warn: "using the directory name",
		},
		{
			name:  "hidden directories are not VMs",
			files: []file{{path: ".trash/old.img", size: 1}},
			want:  func(string) []agentproto.VM { return nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tt.files {
				p := filepath.Join(root, f.path)
				if f.dir {
					mustMkdir(t, p)
					continue
				}
				mustMkdir(t, filepath.Dir(p))
				data := []byte(f.data)
				if f.size > 0 {
					data = make([]byte, f.size)
				}
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			d := &Driver{Root: root, Log: slog.New(slog.NewTextHandler(&logs, nil))}
			got, err := d.Inventory(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.want(root); !reflect.DeepEqual(got, want) {
				t.Fatalf("inventory\n got %+v\nwant %+v", got, want)
			}
			if tt.warn != "" && !strings.Contains(logs.String(), tt.warn) {
				t.Fatalf("no warning %q in the log:\n%s", tt.warn, logs.String())
			}
		})
	}
}

func TestCheckRefusesAMissingVMRoot(t *testing.T) {
	if _, err := (&Driver{Root: filepath.Join(t.TempDir(), "nope")}).Check(t.Context()); err == nil {
		t.Fatal("a missing VM root passes the check")
	}
}

func mustMkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestFreezeRunsTheCommandsAndThawsEvenWhenFreezeFails(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	d := &Driver{Root: dir, FreezeCommand: `echo "freeze $LIFEBOAT_VM_ID" >> ` + log, ThawCommand: `echo "thaw $LIFEBOAT_VM_ID" >> ` + log}
	thaw, err := d.freeze(t.Context(), "web", dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := thaw(); err != nil {
		t.Fatal(err)
	}
	failing := &Driver{Root: dir, FreezeCommand: "exit 3", ThawCommand: `echo "thaw after failure" >> ` + log}
	if _, err := failing.freeze(t.Context(), "db", dir); err == nil {
		t.Fatal("a failed freeze is reported as success")
	}
	got, _ := os.ReadFile(log)
	if string(got) != "freeze web\nthaw web\nthaw after failure\n" {
		t.Fatalf("commands ran as %q", got)
	}
}
