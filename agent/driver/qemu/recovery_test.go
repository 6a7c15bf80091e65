package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// recoveryDriver is a qemu driver of a recovery host: its QMP directory
// (short, for unix sockets), work, state and VM directories. Every QEMU
// it started (they are daemons, not the test's children) is killed when
// the test ends.
func recoveryDriver(t *testing.T, machine ...string) *Driver {
	t.Helper()
	qmpDir, err := os.MkdirTemp("", "lbrq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(qmpDir) })
	d := &Driver{QMPDir: qmpDir, WorkDir: t.TempDir(), StateDir: t.TempDir(), VMDir: t.TempDir(), MachineArgs: machine}
	t.Cleanup(func() {
		d.Close()
		entries, _ := os.ReadDir(d.VMDir)
		for _, e := range entries {
			if pid := qemuPID(filepath.Join(d.VMDir, e.Name())); pid != 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return d
}

// recoverySpec is a VM "web-test" (id vm-recovered) of source vm_1 made of
// point from images, disk0, disk1, ...
func recoverySpec(point string, images ...[]byte) driver.MaterializeSpec {
	spec := driver.MaterializeSpec{ID: "vm-recovered", Name: "web-test", SourceVMID: "vm_1", PointID: point}
	for i, img := range images {
		spec.Disks = append(spec.Disks, driver.MaterializeDisk{Name: "disk" + string(rune('0'+i)), SizeBytes: int64(len(img)), Data: bytes.NewReader(img)})
	}
	return spec
}

func code(err error) string {
	var te *agentproto.TaskError
	if errors.As(err, &te) {
		return te.Code
	}
	return ""
}

// allocatedBytes is what a file takes on disk.
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func hidden(t *testing.T, dir string) []string {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

// A materialized VM is a directory of raw images equal to the point,
// written sparse, with a record of what it was made of; the inventory
// lists it Off; made again of the same point it is returned as it is.
func TestMaterializeWritesSparseRawImagesEqualToThePointAndARerunFindsItMade(t *testing.T) {
	d := recoveryDriver(t)
	ctx := context.Background()
	disk0 := make([]byte, 24<<20)
	rand.Read(disk0[1<<20 : 2<<20])
	rand.Read(disk0[20<<20 : 20<<20+4096])
	disk1 := make([]byte, 8<<20) // all zeros
	made, err := d.Materialize(ctx, recoverySpec("p1", disk0, disk1))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(d.VMDir, "web-test")
	if made.Existing || made.BytesWritten != 1<<20+4096 {
		t.Fatalf("made %+v", made)
	}
	for i, want := range [][]byte{disk0, disk1} {
		path := filepath.Join(dir, "disk"+string(rune('0'+i))+".img")
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("disk%d differs from the point (%v)", i, err)
		}
		if a := allocatedBytes(t, path); a > int64(len(want)/8) {
			t.Fatalf("disk%d is not sparse: %d bytes allocated", i, a)
		}
	}
	var rec vmRecord
	if b, err := os.ReadFile(filepath.Join(dir, recordFile)); err != nil || json.Unmarshal(b, &rec) != nil ||
		rec.ID != "vm-recovered" || rec.Name != "web-test" || rec.Lifeboat == nil || rec.Lifeboat.SourceVMID != "vm_1" || rec.Lifeboat.PointID != "p1" || len(rec.Disks) != 2 {
		t.Fatalf("vm.json: %+v (%v)", rec, err)
	}
	want := agentproto.VM{ID: "vm-recovered", Name: "web-test", PowerState: agentproto.PowerOff, Disks: []agentproto.Disk{
		{Path: filepath.Join(dir, "disk0.img"), SizeBytes: 24 << 20, Format: "raw"},
		{Path: filepath.Join(dir, "disk1.img"), SizeBytes: 8 << 20, Format: "raw"}}}
	vms, err := d.Inventory(ctx)
	if err != nil || len(vms) != 1 || !equalVM(vms[0], want) || !equalVM(made.VM, want) {
		t.Fatalf("inventory %+v (%v), made %+v, want %+v", vms, err, made.VM, want)
	}
	if ps, err := d.PowerState(ctx, "vm-recovered"); err != nil || ps != agentproto.PowerOff {
		t.Fatalf("PowerState %q, %v", ps, err)
	}
	if err := d.Shutdown(ctx, "vm-recovered", 0); err != nil {
		t.Fatalf("Shutdown of a made VM that is off: %v", err)
	}
	again, err := d.Materialize(ctx, recoverySpec("p1", disk0, disk1))
	if err != nil || !again.Existing || again.BytesWritten != 0 || !equalVM(again.VM, want) {
		t.Fatalf("the rerun: %+v, %v", again, err)
	}
}

func equalVM(a, b agentproto.VM) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// What holds a VM's name or id already is replaced only when Lifeboat
// made it of the same source, and Replace says so.
func TestMaterializeRefusesWhatItMayNotReplaceAndReplacesItsOwn(t *testing.T) {
	d := recoveryDriver(t)
	ctx := context.Background()
	one, two := bytes.Repeat([]byte{1}, 1<<20), bytes.Repeat([]byte{2}, 1<<20)
	if _, err := d.Materialize(ctx, recoverySpec("p1", one)); err != nil {
		t.Fatal(err)
	}
	other := recoverySpec("p2", two)
	if _, err := d.Materialize(ctx, other); code(err) != agentproto.CodeRecoveryVMExists {
		t.Fatalf("another point without Replace: %v", err)
	}
	other.SourceVMID, other.Replace = "vm_2", true
	if _, err := d.Materialize(ctx, other); code(err) != agentproto.CodeRecoveryVMExists {
		t.Fatalf("Replace by another source's VM: %v", err)
	}
	renamed := recoverySpec("p1", one)
	renamed.Name = "elsewhere"
	if _, err := d.Materialize(ctx, renamed); code(err) != agentproto.CodeRecoveryVMExists {
		t.Fatalf("the id taken under another name: %v", err)
	}
	// A directory Lifeboat did not make.
	os.MkdirAll(filepath.Join(d.VMDir, "mine"), 0o755)
	os.WriteFile(filepath.Join(d.VMDir, "mine", "disk0.img"), one, 0o644)
	theirs := recoverySpec("p1", two)
	theirs.ID, theirs.Name, theirs.Replace = "vm-mine", "mine", true
	if _, err := d.Materialize(ctx, theirs); code(err) != agentproto.CodeVMNotMaterialized {
		t.Fatalf("Replace of a directory Lifeboat did not make: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(d.VMDir, "mine", "disk0.img")); !bytes.Equal(got, one) {
		t.Fatal("the refused replace touched the directory")
	}
	// A QEMU started outside Lifeboat holds the id (its monitor socket).
	os.WriteFile(d.socket("vm-foreign"), nil, 0o600)
	foreign := recoverySpec("p1", two)
	foreign.ID, foreign.Name = "vm-foreign", "foreign"
	if _, err := d.Materialize(ctx, foreign); code(err) != agentproto.CodeRecoveryVMExists {
		t.Fatalf("an id a foreign VM's monitor holds: %v", err)
	}
	// Its own, of the same source, with Replace: the new point's disks.
	mine := recoverySpec("p2", two)
	mine.Replace = true
	made, err := d.Materialize(ctx, mine)
	if err != nil || made.Existing {
		t.Fatalf("Replace: %+v, %v", made, err)
	}
	if got, _ := os.ReadFile(filepath.Join(d.VMDir, "web-test", "disk0.img")); !bytes.Equal(got, two) {
		t.Fatal("the replaced VM does not have the new point's disk")
	}
	if h := hidden(t, d.VMDir); len(h) != 0 {
		t.Fatalf("left hidden: %v", h)
	}
}

// cancelAt cancels a context when the image is read at or past at.
type cancelAt struct {
	data   []byte
	at     int64
	cancel func()
}

func (r cancelAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.at {
		r.cancel()
	}
	return copy(p, r.data[off:]), nil
}

// A materialize cut mid-write (its task cancelled, or the agent killed
// with its hidden directory left) leaves no VM; run again, the VM is
// whole.
func TestAMaterializeCutMidWriteLeavesNothingAndARerunIsWhole(t *testing.T) {
	d := recoveryDriver(t)
	image := make([]byte, 16<<20)
	rand.Read(image)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cut := recoverySpec("p1", image)
	cut.Disks[0].Data = cancelAt{data: image, at: 8 << 20, cancel: cancel}
	if _, err := d.Materialize(ctx, cut); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled materialize: %v", err)
	}
	if entries, _ := os.ReadDir(d.VMDir); len(entries) != 0 {
		t.Fatalf("a cut materialize left %v", entries)
	}
	if vms, err := d.Inventory(context.Background()); err != nil || len(vms) != 0 {
		t.Fatalf("inventory after the cut: %+v, %v", vms, err)
	}
	killed := filepath.Join(d.VMDir, materializePrefix+"killed")
	os.Mkdir(killed, 0o750)
	os.WriteFile(filepath.Join(killed, "disk0.img"), image[:1<<20], 0o640)
	if err := d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	made, err := d.Materialize(context.Background(), recoverySpec("p1", image))
	if err != nil || made.Existing {
		t.Fatalf("the rerun: %+v, %v", made, err)
	}
	if got, _ := os.ReadFile(filepath.Join(d.VMDir, "web-test", "disk0.img")); !bytes.Equal(got, image) {
		t.Fatal("the rerun's disk differs from the point")
	}
	if entries, _ := os.ReadDir(d.VMDir); len(entries) != 1 {
		t.Fatalf("after the rerun the VM directory holds %v", entries)
	}
}

// A VM directory without room fails for the operator to free space, and
// leaves nothing.
func TestAFullVMDirFailsWithRecoveryHostFullAndLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small filesystem needs root")
	}
	d := recoveryDriver(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", d.VMDir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", d.VMDir).Run() })
	_, err := d.Materialize(context.Background(), recoverySpec("p1", bytes.Repeat([]byte("data"), 2<<20)))
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeRecoveryHostFull || te.Recoverable || !strings.Contains(te.Message, "free space") {
		t.Fatalf("a full VM directory: %v", err)
	}
	if entries, _ := os.ReadDir(d.VMDir); len(entries) != 0 {
		t.Fatalf("left in the VM directory: %v", entries)
	}
}

// A VM Lifeboat did not make is neither removed nor written back into;
// one that is gone is removed already.
func TestRemoveAndWriteBackRefuseAVMLifeboatDidNotMake(t *testing.T) {
	d := recoveryDriver(t)
	ctx := context.Background()
	os.WriteFile(d.socket("vm-foreign"), nil, 0o600) // its QEMU's monitor
	if err := d.Remove(ctx, "vm-foreign", 0); code(err) != agentproto.CodeVMNotMaterialized {
		t.Fatalf("Remove of a foreign VM: %v", err)
	}
	if _, err := os.Lstat(d.socket("vm-foreign")); err != nil {
		t.Fatal("the refused Remove touched the foreign VM")
	}
	_, err := d.WriteBack(ctx, "vm-foreign", recoverySpec("p1", make([]byte, 4096)).Disks)
	if code(err) != agentproto.CodeTargetNotSupported || !strings.Contains(err.Error(), "fail back to a new VM") {
		t.Fatalf("WriteBack into a foreign VM: %v", err)
	}
	if err := d.Remove(ctx, "vm-gone", 0); err != nil {
		t.Fatalf("Remove of a VM that is gone: %v", err)
	}
}

// A write back into a made VM that is off writes only the blocks that
// differ.
func TestWriteBackIntoAMadeVMWritesOnlyTheBlocksThatDiffer(t *testing.T) {
	d := recoveryDriver(t)
	ctx := context.Background()
	before := make([]byte, 8<<20)
	rand.Read(before)
	if _, err := d.Materialize(ctx, recoverySpec("p1", before)); err != nil {
		t.Fatal(err)
	}
	after := bytes.Clone(before)
	copy(after[3<<20:], bytes.Repeat([]byte{9}, 10))
	copy(after[8<<20-4096:], bytes.Repeat([]byte{9}, 4096))
	extra := make([]byte, 1<<20)
	copy(extra[4096:], "data")
	disks := recoverySpec("p2", after, extra).Disks
	made, err := d.WriteBack(ctx, "vm-recovered", disks)
	if err != nil || made.BytesWritten != 3*4096 {
		t.Fatalf("WriteBack: %+v, %v", made, err)
	}
	dir := filepath.Join(d.VMDir, "web-test")
	if got, _ := os.ReadFile(filepath.Join(dir, "disk0.img")); !bytes.Equal(got, after) {
		t.Fatal("disk0 is not the point's")
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "disk1.img")); !bytes.Equal(got, extra) {
		t.Fatal("the disk the VM lacked is not the point's")
	}
	if len(made.VM.Disks) != 2 {
		t.Fatalf("the VM after the write back: %+v", made.VM)
	}
}

func TestQEMUArgumentsAreReadAsAJSONListOrAsShellWords(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{`-m 2048 -smp 2`, []string{"-m", "2048", "-smp", "2"}},
		{`-append 'console=ttyS0 quiet' -name "a \"b\""`, []string{"-append", "console=ttyS0 quiet", "-name", `a "b"`}},
		{`-kernel /boot/my\ kernel`, []string{"-kernel", "/boot/my kernel"}},
		{`["-append", "console=ttyS0 quiet"]`, []string{"-append", "console=ttyS0 quiet"}},
		{``, nil},
	}
	for _, tc := range cases {
		got, err := ParseArgs(tc.in)
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("ParseArgs(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{`-append 'open`, `["-m", 1]`} {
		if _, err := ParseArgs(bad); err == nil {
			t.Errorf("ParseArgs(%q) took it", bad)
		}
	}
}

// A made VM's disk that is a qcow2 image (an overlay) is listed with the
// size of the disk it holds, read from its header.
func TestTheSizeOfAQcow2DiskIsReadFromItsHeader(t *testing.T) {
	qemutest.Require(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "d.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", path, "3G").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	if size, err := virtualSize(path, "qcow2"); err != nil || size != 3<<30 {
		t.Fatalf("size %d, %v", size, err)
	}
	raw := filepath.Join(t.TempDir(), "d.img")
	os.WriteFile(raw, make([]byte, 8192), 0o644)
	if _, err := virtualSize(raw, "qcow2"); err == nil {
		t.Fatal("a raw file was read as qcow2")
	}
}
