package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agent/vhd"
)

// exportedVM is a directory target holding VM "vm_1" with disks d (not a
// whole MiB) and e, at points p1 and p2; images are disk d at each.
func exportedVM(t *testing.T) (target string, images map[string][]byte) {
	t.Helper()
	target = t.TempDir()
	r, err := dirtarget.Open(target, "vm_1")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	src, other := filepath.Join(t.TempDir(), "d.img"), filepath.Join(t.TempDir(), "e.img")
	size := 3<<20 + 512
	r.CreateDisk("d", int64(size))
	r.CreateDisk("e", 4096)
	os.WriteFile(other, bytes.Repeat([]byte("e"), 4096), 0o644)
	images = map[string][]byte{}
	for i, id := range []string{"p1", "p2"} {
		img := make([]byte, size)
		copy(img[i<<20:], strings.Repeat("point "+id, 1000)) // p1 at 0, p2 at 1 MiB
		copy(img[size-10:], id)
		os.WriteFile(src, img, 0o644)
		for disk, path := range map[string]string{"d": src, "e": other} {
			if _, err := replicate.File(context.Background(), r, disk, path, replicate.Options{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := replicatest.Point(r, id, time.Now().Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
		images[id] = img
	}
	return target, images
}

func export(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"export"}, args...), func(string) string { return "" }, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestExportWritesThePointsDiskAsRawAndAsAFixedVHD(t *testing.T) {
	t.Parallel()
	target, images := exportedVM(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "d-p1.img")
	if said, err := export(t, "--target-dir", target, "--vm", "vm_1", "--point", "p1", "--disk", "d", "--out", raw); err != nil {
		t.Fatalf("export raw: %v\n%s", err, said)
	}
	if got, _ := os.ReadFile(raw); !bytes.Equal(got, images["p1"]) {
		t.Fatalf("the raw export (%d bytes) is not disk d at p1", len(got))
	}
	// The default point is the newest.
	latest := filepath.Join(dir, "d-latest.vhd")
	if said, err := export(t, "--target-dir", target, "--vm", "vm_1", "--disk", "d", "--format", "vhd", "--out", latest); err != nil {
		t.Fatalf("export vhd: %v\n%s", err, said)
	}
	got, _ := os.ReadFile(latest)
	dataSize := vhd.DataSize(int64(len(images["p2"])))
	if int64(len(got)) != dataSize+vhd.FooterSize {
		t.Fatalf("the VHD is %d bytes, want %d of data and the footer", len(got), dataSize)
	}
	footer, err := vhd.Parse(got[dataSize:])
	if err != nil || footer.DataSize != dataSize {
		t.Fatalf("the VHD footer: %+v %v", footer, err)
	}
	if !bytes.Equal(got[:len(images["p2"])], images["p2"]) || !bytes.Equal(got[len(images["p2"]):dataSize], make([]byte, dataSize-int64(len(images["p2"])))) {
		t.Fatal("the VHD's data is not disk d at p2, padded with zeros")
	}
	// qemu reads it as a VHD of the same content, where it is installed.
	if qemuImg, err := exec.LookPath("qemu-img"); err == nil {
		want := filepath.Join(dir, "p2.raw")
		os.WriteFile(want, images["p2"], 0o644)
		if out, err := exec.Command(qemuImg, "compare", "-f", "vpc", "-F", "raw", latest, want).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img compare of the VHD: %v: %s", err, out)
		}
	}
}

func TestExportToQcow2HoldsThePointsDiskAndLeavesNoTemporaryFile(t *testing.T) {
	t.Parallel()
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		if os.Getenv("LIFEBOAT_REQUIRE_QEMU") == "1" {
			t.Fatal("qemu-img is missing and LIFEBOAT_REQUIRE_QEMU=1 says this test must run")
		}
		t.Skip("qemu-img is missing (Debian package qemu-utils)")
	}
	target, images := exportedVM(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "d.qcow2")
	if said, err := export(t, "--target-dir", target, "--vm", "vm_1", "--point", "p1", "--disk", "d", "--format", "qcow2", "--out", out); err != nil {
		t.Fatalf("export qcow2: %v\n%s", err, said)
	}
	want := filepath.Join(t.TempDir(), "p1.raw")
	os.WriteFile(want, images["p1"], 0o644)
	if b, err := exec.Command(qemuImg, "compare", "-f", "qcow2", "-F", "raw", out, want).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare: %v: %s", err, b)
	}
	// compare takes a longer image's tail of zeros as equal: the size too.
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
	}
	b, _ := exec.Command(qemuImg, "info", "--output=json", out).Output()
	if err := json.Unmarshal(b, &info); err != nil || info.Format != "qcow2" || info.VirtualSize != int64(len(images["p1"])) {
		t.Fatalf("qemu-img info: %+v %v (%s)", info, err, b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("beside the export: %v", entries)
	}
}

func TestExportRefusesToOverwriteAndSaysWhatToName(t *testing.T) {
	t.Parallel()
	target, _ := exportedVM(t)
	existing := filepath.Join(t.TempDir(), "keep.img")
	os.WriteFile(existing, []byte("keep me"), 0o644)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"an existing file", []string{"--disk", "d", "--out", existing}, "never overwrites"},
		{"two disks and no --disk", []string{"--out", existing + ".new"}, "holds 2 disks; name one with --disk: d, e"},
		{"a disk the point lacks", []string{"--disk", "x", "--out", existing + ".new"}, "holds no disk x; its disks: d, e"},
		{"a point retention deleted", []string{"--point", "p0", "--disk", "d", "--out", existing + ".new"}, "oldest first: p1, p2"},
		{"an unknown format", []string{"--disk", "d", "--format", "vmdk", "--out", existing + ".new"}, "not raw, vhd or qcow2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			said, err := export(t, append([]string{"--target-dir", target, "--vm", "vm_1"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (%s); want an error saying %q", err, said, tc.want)
			}
		})
	}
	if got, _ := os.ReadFile(existing); string(got) != "keep me" {
		t.Fatal("an existing file was overwritten")
	}
	if _, err := os.Stat(existing + ".new"); !os.IsNotExist(err) {
		t.Fatalf("a failed export left its file: %v", err)
	}
}
