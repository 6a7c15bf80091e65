package filedisk

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// spec is a one-disk VM "web-test" (id vm-recovered) made of image.
func spec(point string, image []byte) driver.MaterializeSpec {
	return driver.MaterializeSpec{ID: "vm-recovered", Name: "web-test", SourceVMID: "vm_1", PointID: point,
		Disks: []driver.MaterializeDisk{{Name: "disk0", SizeBytes: int64(len(image)), Data: bytes.NewReader(image)}}}
}

// taskCode is the code of err's *agentproto.TaskError, or "".
func taskCode(err error) string {
	var te *agentproto.TaskError
	if errors.As(err, &te) {
		return te.Code
	}
	return ""
}

// hiddenLeft lists what a materialize or removal left hidden under root.
func hiddenLeft(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestMaterializeRecordsWhatTheVMIsMadeOfAndARerunFindsItMade(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := &Driver{Root: root}
	image := make([]byte, 3<<20)
	copy(image[2<<20:], "data in the third MiB")
	s := spec("p1", image)
	s.Test = true
	made, err := d.Materialize(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if made.Existing || made.BytesWritten != 4096 || made.VM.ID != "vm-recovered" || made.VM.PowerState != agentproto.PowerOff {
		t.Fatalf("materialized %+v", made)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(made.VM.Disks[0].Path, &st); err != nil || st.Blocks*512 >= int64(len(image)) {
		t.Fatalf("the disk is not sparse: %d bytes allocated of %d (%v)", st.Blocks*512, len(image), err)
	}
	var meta vmMeta
	b, _ := os.ReadFile(filepath.Join(root, "web-test", "vm.json"))
	if err := json.Unmarshal(b, &meta); err != nil || meta.ID != "vm-recovered" || meta.Lifeboat == nil ||
		meta.Lifeboat.SourceVMID != "vm_1" || meta.Lifeboat.PointID != "p1" || !meta.Lifeboat.Test || meta.Lifeboat.MaterializedAt.IsZero() {
		t.Fatalf("vm.json is %s (%v)", b, err)
	}
	// The VM ran and wrote; the same task run again must not undo that.
	os.WriteFile(made.VM.Disks[0].Path, []byte("the guest wrote"), 0o640)
	again, err := d.Materialize(t.Context(), s)
	if err != nil || !again.Existing || again.BytesWritten != 0 || again.VM.ID != "vm-recovered" {
		t.Fatalf("a rerun: %+v %v", again, err)
	}
	if got, _ := os.ReadFile(made.VM.Disks[0].Path); string(got) != "the guest wrote" {
		t.Fatal("a rerun wrote the disk again")
	}
	// Another point, or a failover's VM where the test's is, is not a rerun.
	if _, err := d.Materialize(t.Context(), spec("p2", image)); taskCode(err) != agentproto.CodeRecoveryVMExists {
		t.Fatalf("another point without replace: %v", err)
	}
	if hidden := hiddenLeft(t, root); len(hidden) != 0 {
		t.Fatalf("left behind: %v", hidden)
	}
}

func TestReplaceStopsTheRunningVMOnlyOnceItsSuccessorIsWritten(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	log := filepath.Join(t.TempDir(), "hooks.log")
	d := &Driver{Root: root, StartCommand: "echo start >> " + log, StopCommand: "echo stop >> " + log}
	first := bytes.Repeat([]byte("first"), 1<<18)
	if _, err := d.Materialize(t.Context(), spec("p1", first)); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(t.Context(), "vm-recovered", driver.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	// The successor's image cannot be read: the running VM stays as it was.
	broken := spec("p2", first)
	broken.Replace = true
	broken.Disks[0].Data = bytes.NewReader(first[:1<<20])
	if _, err := d.Materialize(t.Context(), broken); err == nil || !strings.Contains(err.Error(), "read the image of disk disk0") {
		t.Fatalf("an image that ends early: %v", err)
	}
	if state, _ := d.PowerState(t.Context(), "vm-recovered"); state != agentproto.PowerRunning {
		t.Fatalf("a failed replace stopped the VM: %s", state)
	}
	second := bytes.Repeat([]byte("later"), 1<<18)
	s := spec("p2", second)
	s.Replace = true
	made, err := d.Materialize(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(made.VM.Disks[0].Path); !bytes.Equal(got, second) || made.VM.PowerState != agentproto.PowerOff {
		t.Fatalf("after replace: %s, disk of %d bytes", made.VM.PowerState, len(got))
	}
	if b, _ := os.ReadFile(log); string(b) != "start\nstop\n" {
		t.Fatalf("hooks ran as %q", b)
	}
	if hidden := hiddenLeft(t, root); len(hidden) != 0 {
		t.Fatalf("left behind: %v", hidden)
	}
	// A replace that cannot stop the VM does not replace it.
	d.Start(t.Context(), "vm-recovered", driver.StartOptions{})
	d.StopCommand = "echo guest ignores it >&2; exit 1"
	s = spec("p3", first)
	s.Replace = true
	if _, err := d.Materialize(t.Context(), s); taskCode(err) != agentproto.CodeVMWillNotStop || !strings.Contains(err.Error(), "vm-recovered is not replaced: the stop command") ||
		!strings.Contains(err.Error(), "guest ignores it") {
		t.Fatalf("replace of a VM that will not stop: %v", err)
	}
	if got, _ := os.ReadFile(made.VM.Disks[0].Path); !bytes.Equal(got, second) {
		t.Fatal("a VM that would not stop was replaced")
	}
}

func TestReplaceAndRemoveRefuseAVMLifeboatDidNotMake(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := &Driver{Root: root}
	mustMkdir(t, filepath.Join(root, "web-test"))
	os.WriteFile(filepath.Join(root, "web-test", "vm.json"), []byte(`{"id": "vm-recovered"}`), 0o644)
	os.WriteFile(filepath.Join(root, "web-test", "disk0.img"), []byte("precious"), 0o644)
	s := spec("p1", make([]byte, 4096))
	s.Replace = true
	if _, err := d.Materialize(t.Context(), s); taskCode(err) != agentproto.CodeVMNotMaterialized || !strings.Contains(err.Error(), `no "lifeboat" record`) {
		t.Fatalf("replace of a VM Lifeboat did not make: %v", err)
	}
	if err := d.Remove(t.Context(), "vm-recovered", time.Second); taskCode(err) != agentproto.CodeVMNotMaterialized {
		t.Fatalf("remove of a VM Lifeboat did not make: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "web-test", "disk0.img")); string(got) != "precious" {
		t.Fatal("a VM Lifeboat did not make was touched")
	}
	// Its id under another name is taken too.
	s.Name = "web-other"
	if _, err := d.Materialize(t.Context(), s); taskCode(err) != agentproto.CodeRecoveryVMExists {
		t.Fatalf("an id taken by another directory: %v", err)
	}
	// Nor is the recovered VM of another source replaced.
	other := spec("p1", make([]byte, 4096))
	other.ID, other.Name = "vm-b", "b"
	if _, err := d.Materialize(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	other.SourceVMID, other.PointID, other.Replace = "vm_2", "q1", true
	if _, err := d.Materialize(t.Context(), other); taskCode(err) != agentproto.CodeRecoveryVMExists || !strings.Contains(err.Error(), "of vm_1, not of vm_2") {
		t.Fatalf("replace of another source's VM: %v", err)
	}
}

func TestRemoveStopsAndDeletesAMaterializedVMAndAgainIsSuccess(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	log := filepath.Join(t.TempDir(), "hooks.log")
	d := &Driver{Root: root, StartCommand: "echo start $LIFEBOAT_ISOLATED >> " + log, StopCommand: "exit 1"}
	if _, err := d.Materialize(t.Context(), spec("p1", bytes.Repeat([]byte("x"), 1<<20))); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(t.Context(), "vm-recovered", driver.StartOptions{Isolated: true}); err != nil {
		t.Fatal(err)
	}
	// A VM that does not stop is not deleted under its guest.
	if err := d.Remove(t.Context(), "vm-recovered", time.Second); taskCode(err) != agentproto.CodeVMWillNotStop {
		t.Fatalf("remove of a VM that will not stop: %v", err)
	}
	if state, _ := d.PowerState(t.Context(), "vm-recovered"); state != agentproto.PowerRunning {
		t.Fatalf("after a failed stop: %s", state)
	}
	d.StopCommand = "echo stop >> " + log
	// A removal an earlier agent did not finish left a hidden directory.
	mustMkdir(t, filepath.Join(root, removePrefix+"left/sub"))
	if err := d.Remove(t.Context(), "vm-recovered", time.Second); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("left under the VM root: %v", entries)
	}
	if b, _ := os.ReadFile(log); string(b) != "start 1\nstop\n" {
		t.Fatalf("hooks ran as %q", b)
	}
	if err := d.Remove(t.Context(), "vm-recovered", time.Second); err != nil {
		t.Fatalf("removing a removed VM: %v", err)
	}
}

func TestRecoverDeletesWhatAnInterruptedMaterializeOrRemovalLeft(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for _, dir := range []string{materializePrefix + "abc", removePrefix + "def", "web"} {
		mustMkdir(t, filepath.Join(root, dir))
		os.WriteFile(filepath.Join(root, dir, "disk0.img"), make([]byte, 4096), 0o644)
	}
	d := &Driver{Root: root}
	if vms, _ := d.Inventory(t.Context()); len(vms) != 1 || vms[0].ID != "web" {
		t.Fatalf("inventory lists hidden work: %+v", vms)
	}
	if err := d.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 1 || entries[0].Name() != "web" {
		t.Fatalf("after recover: %v", entries)
	}
}

// A VM root without room for the disks fails for the operator to free
// space, and leaves nothing half-written.
func TestAFullVMRootFailsWithRecoveryHostFullAndLeavesNothing(t *testing.T) {
	t.Parallel()
	root := smallFilesystem(t, "4m")
	d := &Driver{Root: root}
	_, err := d.Materialize(t.Context(), spec("p1", bytes.Repeat([]byte("data"), 2<<20)))
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != agentproto.CodeRecoveryHostFull || te.Recoverable || !strings.Contains(te.Message, "free space") {
		t.Fatalf("a full VM root: %v", err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("left under the VM root: %v", entries)
	}
}

// smallFilesystem mounts a tmpfs of size (mount's notation) on a fresh
// directory: a VM root that fills up. It needs root; without, the test
// skips, unless LIFEBOAT_REQUIRE_XFS says these tests must run (CI).
func smallFilesystem(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("LIFEBOAT_REQUIRE_XFS") != "" {
			t.Fatal("mounting a small filesystem needs root, and LIFEBOAT_REQUIRE_XFS says these tests must run")
		}
		t.Skip("mounting a small filesystem needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// A materialize cut part-way (the target stops answering mid-read, or
// the agent dies and leaves its hidden directory) leaves no VM under the
// VM's name; run again, it makes the VM equal to the image.
func TestAMaterializeCutPartWayLeavesNoVMAndARerunMakesItWhole(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := &Driver{Root: root}
	image := make([]byte, 12<<20)
	rand.Read(image[:9<<20])
	cut := spec("p1", image)
	cut.Disks[0].Data = cutReader{data: image, cut: 6 << 20}
	if _, err := d.Materialize(t.Context(), cut); err == nil {
		t.Fatal("a materialize whose image failed mid-read succeeded")
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("a cut materialize left %v", entries)
	}
	// An agent killed mid-write leaves its hidden directory with a part
	// of the disk; Recover removes it at start.
	mustMkdir(t, filepath.Join(root, materializePrefix+"killed"))
	os.WriteFile(filepath.Join(root, materializePrefix+"killed", "disk0.img"), image[:3<<20], 0o640)
	if err := d.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	made, err := d.Materialize(t.Context(), spec("p1", image))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "web-test", "disk0.img")); err != nil || !bytes.Equal(got, image) || made.Existing {
		t.Fatalf("the rerun's disk differs from the image (%v, existing %v)", err, made.Existing)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 1 {
		t.Fatalf("after the rerun the VM root holds %v", entries)
	}
}
