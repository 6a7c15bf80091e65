package filedisk

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/xfstest"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// newVM makes a VM directory under root with disks of size bytes each,
// written with a byte pattern, and returns their refs.
func newVM(t *testing.T, root, name string, size int64, disks ...string) []driver.DiskRef {
	t.Helper()
	mustMkdir(t, filepath.Join(root, name))
	var refs []driver.DiskRef
	for i, disk := range disks {
		path := filepath.Join(root, name, disk+".img")
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(i + j%251)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, driver.DiskRef{ID: disk, Path: path, SizeBytes: size})
	}
	return refs
}

// quiet waits until files written now count as quiet.
func quiet() { time.Sleep(replica.QuietFor + 100*time.Millisecond) }

// readAll reads every captured disk and ends the reading.
func readAll(t *testing.T, c driver.Capture) (driver.Result, [][]byte) {
	t.Helper()
	var out [][]byte
	for _, d := range c.Disks() {
		b, err := io.ReadAll(io.NewSectionReader(d.Source.Reader, 0, d.Source.Size))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return c.ReadDone(), out
}

func TestAPoweredOffVMIsCapturedCrashConsistentAndARunningOneThatWritesInconsistent(t *testing.T) {
	t.Parallel()
	root := t.TempDir() // the test machine's filesystem: no reflinks assumed
	d := &Driver{Root: root}
	off := newVM(t, root, "off", 1<<20, "disk0", "disk1")
	busy := newVM(t, root, "busy", 8<<20, "disk0")
	os.WriteFile(filepath.Join(root, "busy", runningMarker), nil, 0o644)
	quiet()

	c, err := d.Capture(t.Context(), driver.CaptureRequest{VMID: "off", Disks: off})
	if err != nil {
		t.Fatal(err)
	}
	res, _ := readAll(t, c)
	c.Release(true)
	if cloned := res.Method == driver.MethodReflink; !cloned && (res.Consistency != replica.ConsistencyCrash || res.Method != driver.MethodPoweredOff || res.ReadStartedAt != nil) {
		t.Fatalf("a VM that is off: %+v", res)
	}

	// The running VM writes while its disk is read.
	c, err = d.Capture(t.Context(), driver.CaptureRequest{VMID: "busy", Disks: busy})
	if err != nil {
		t.Fatal(err)
	}
	if res := c.(*capture).result; res != nil && res.Method == driver.MethodReflink {
		t.Skip("the test machine's temporary directory has reflinks; the live-read case needs a filesystem without")
	}
	f, _ := os.OpenFile(busy[0].Path, os.O_WRONLY, 0)
	f.WriteAt([]byte("a write during the read"), 5<<20)
	f.Close()
	res, _ = readAll(t, c)
	c.Release(false)
	if res.Consistency != replica.ConsistencyInconsistent || res.Method != driver.MethodLive || res.ReadStartedAt == nil ||
		!res.ReadStartedAt.Before(res.Time) || !strings.Contains(res.Note, "wrote") {
		t.Fatalf("a VM that wrote during the read: %+v", res)
	}
	// Nothing says its signature can be trusted: the next cycle compares.
	if c.Disks() != nil {
		t.Fatal("a released capture still lists its disks")
	}
}

func TestARunningVMThatDoesNotWriteDuringTheReadIsCrashConsistent(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := &Driver{Root: root}
	disks := newVM(t, root, "idle", 1<<20, "disk0")
	os.WriteFile(filepath.Join(root, "idle", runningMarker), nil, 0o644)
	quiet()
	c, err := d.Capture(t.Context(), driver.CaptureRequest{VMID: "idle", Disks: disks})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release(true)
	res, _ := readAll(t, c)
	if res.Consistency != replica.ConsistencyCrash || (res.Method != driver.MethodUnchanged && res.Method != driver.MethodReflink) {
		t.Fatalf("an idle running VM: %+v", res)
	}
	if !c.Disks()[0].Source.Unchanged() || c.Disks()[0].Source.Signature == nil {
		t.Fatal("an unchanged disk's signature is not offered for the next cycle")
	}
}

func TestAFreshlyWrittenDiskIsNotTrustedAsUnchanged(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := &Driver{Root: root}
	disks := newVM(t, root, "new", 1<<20, "disk0") // written just now: its times are too fresh to prove anything
	c, err := d.Capture(t.Context(), driver.CaptureRequest{VMID: "new", Disks: disks})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release(false)
	res, _ := readAll(t, c)
	if res.Method != driver.MethodReflink && res.Consistency != replica.ConsistencyInconsistent {
		t.Fatalf("a disk written an instant before the read: %+v", res)
	}
}

func TestAReflinkCaptureOfAVMThatKeepsWritingIsOneInstantAndCrashConsistent(t *testing.T) {
	t.Parallel()
	root := xfstest.Mount(t, 300)
	d := &Driver{Root: root}
	disks := newVM(t, root, "db", xfstest.BlocksN*4096, "data")
	os.WriteFile(disks[0].Path, make([]byte, xfstest.BlocksN*4096), 0o644)
	os.WriteFile(filepath.Join(root, "db", runningMarker), nil, 0o644)
	w := xfstest.StartWriter(t, disks[0].Path)
	defer w.Halt()
	w.Await(3 * xfstest.BlocksN)
	for i := 0; i < 5; i++ {
		c, err := d.Capture(t.Context(), driver.CaptureRequest{VMID: "db", Disks: disks})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the writer goes on while the clone is read
		res, imgs := readAll(t, c)
		if err := c.Release(true); err != nil {
			t.Fatal(err)
		}
		ok, last := xfstest.OneInstant(imgs[0])
		if !ok {
			t.Fatalf("capture %d is not one instant of the disk (newest generation %d)", i, last)
		}
		if res.Consistency != replica.ConsistencyCrash || res.Method != driver.MethodReflink {
			t.Fatalf("capture %d: %+v", i, res)
		}
		if w.Written.Load() <= last {
			t.Fatal("the writer did not go on writing during the read; the test proves nothing")
		}
	}
	// The clones are gone, and a crash's leftovers are found at start.
	entries, _ := os.ReadDir(filepath.Join(root, "db"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), captureDirPrefix) {
			t.Fatalf("a released capture left %s", e.Name())
		}
	}
	mustMkdir(t, filepath.Join(root, "db", captureDirPrefix+"leftover"))
	if err := d.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "db", captureDirPrefix+"leftover")); !os.IsNotExist(err) {
		t.Fatal("Recover left a crashed capture's clones")
	}
}

func TestAReflinkCaptureOfTwoDisksIsOneInstantOnlyWhenTheSecondDidNotChange(t *testing.T) {
	t.Parallel()
	root := xfstest.Mount(t, 300)
	d := &Driver{Root: root}
	disks := newVM(t, root, "app", xfstest.BlocksN*4096, "os", "logs")
	os.WriteFile(filepath.Join(root, "app", runningMarker), nil, 0o644)
	quiet()
	// Writes to the first disk only: the clone of the second, taken a
	// moment after the first's, is of the same instant.
	w := xfstest.StartWriter(t, disks[0].Path)
	w.Await(100)
	c, err := d.Capture(t.Context(), driver.CaptureRequest{VMID: "app", Disks: disks})
	if err != nil {
		t.Fatal(err)
	}
	res, _ := readAll(t, c)
	c.Release(true)
	w.Halt()
	if res.Consistency != replica.ConsistencyCrash {
		t.Fatalf("writes to the first disk only: %+v", res)
	}
	// Writes to the second disk: never sure, so inconsistent, with the
	// span of the clones.
	w = xfstest.StartWriter(t, disks[1].Path)
	defer w.Halt()
	w.Await(100)
	c, err = d.Capture(t.Context(), driver.CaptureRequest{VMID: "app", Disks: disks})
	if err != nil {
		t.Fatal(err)
	}
	res, _ = readAll(t, c)
	c.Release(false)
	if res.Consistency != replica.ConsistencyInconsistent || res.Method != driver.MethodReflink || res.ReadStartedAt == nil || res.Note == "" {
		t.Fatalf("writes to the second disk: %+v", res)
	}
}

func TestAFreezeHoldsTheGuestOnlyUntilItsDisksAreClonedOrRead(t *testing.T) {
	t.Parallel()
	for _, fs := range []string{"plain", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			if fs == "xfs" {
				root = xfstest.Mount(t, 300)
			}
			log := filepath.Join(t.TempDir(), "hooks.log")
			d := &Driver{Root: root, FreezeCommand: "echo freeze >> " + log, ThawCommand: "echo thaw >> " + log}
			disks := newVM(t, root, "web", 1<<20, "disk0")
			c, err := d.Capture(t.Context(), driver.CaptureRequest{VMID: "web", Disks: disks, AppConsistent: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Release(true)
			hooks := func() string { b, _ := os.ReadFile(log); return string(b) }
			cloned := c.(*capture).result != nil
			if cloned && hooks() != "freeze\nthaw\n" {
				t.Fatalf("with reflinks the guest must resume once its disks are cloned, before they are read: %q", hooks())
			}
			if !cloned && hooks() != "freeze\n" {
				t.Fatalf("without reflinks the guest stays quiesced while its disks are read: %q", hooks())
			}
			res, _ := readAll(t, c)
			if hooks() != "freeze\nthaw\n" || res.Consistency != replica.ConsistencyApp || res.Method != driver.MethodFreeze {
				t.Fatalf("after the read: hooks %q, %+v", hooks(), res)
			}
		})
	}
}

func TestAFailingFreezeStillMakesAPointAndSaysWhyItIsNotAppConsistent(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := &Driver{Root: root, FreezeCommand: "echo no guest agent >&2; exit 3", ThawCommand: "true"}
	disks := newVM(t, root, "web", 1<<20, "disk0")
	c, err := d.Capture(context.Background(), driver.CaptureRequest{VMID: "web", Disks: disks, AppConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release(false)
	res, _ := readAll(t, c)
	if res.Consistency == replica.ConsistencyApp || !strings.Contains(res.Note, "freeze command failed") || !strings.Contains(res.Note, "no guest agent") {
		t.Fatalf("a failed freeze: %+v", res)
	}
}

func TestStartStopAndMaterializeKeepTheRunningMarkerTrue(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	log := filepath.Join(t.TempDir(), "hooks.log")
	d := &Driver{Root: root, StartCommand: `echo "start $LIFEBOAT_VM_ID isolated=$LIFEBOAT_ISOLATED" >> ` + log, StopCommand: `echo "stop $LIFEBOAT_VM_ID" >> ` + log}
	image := make([]byte, 3<<20)
	copy(image[2<<20:], "data in the third MiB")
	made, err := d.Materialize(t.Context(), driver.MaterializeSpec{ID: "vm-recovered", Name: "web-test", SourceVMID: "vm_1", PointID: "p1",
		Disks: []driver.MaterializeDisk{{Name: "disk0", SizeBytes: int64(len(image)), Data: strings.NewReader(string(image))}}})
	if err != nil {
		t.Fatal(err)
	}
	vm := made.VM
	if vm.ID != "vm-recovered" || vm.PowerState != "Off" || len(vm.Disks) != 1 || vm.Disks[0].SizeBytes != int64(len(image)) {
		t.Fatalf("materialized %+v", vm)
	}
	if got, _ := os.ReadFile(vm.Disks[0].Path); string(got) != string(image) {
		t.Fatal("the materialized disk differs from the image")
	}
	if _, err := d.Materialize(t.Context(), driver.MaterializeSpec{ID: "other", Name: "web-test", SourceVMID: "vm_1", PointID: "p1"}); err == nil {
		t.Fatal("a VM directory that exists was overwritten")
	}
	if err := d.Start(t.Context(), "vm-recovered", driver.StartOptions{Isolated: true}); err != nil {
		t.Fatal(err)
	}
	if state, _ := d.PowerState(t.Context(), "vm-recovered"); state != "Running" {
		t.Fatalf("after start: %s", state)
	}
	if err := d.Shutdown(t.Context(), "vm-recovered", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if state, _ := d.PowerState(t.Context(), "vm-recovered"); state != "Off" {
		t.Fatalf("after shutdown: %s", state)
	}
	if b, _ := os.ReadFile(log); string(b) != "start vm-recovered isolated=1\nstop vm-recovered\n" {
		t.Fatalf("hooks ran as %q", b)
	}
	// A stop command that fails leaves the VM running, and says so.
	d.StopCommand = "exit 1"
	d.Start(t.Context(), "vm-recovered", driver.StartOptions{})
	if err := d.Shutdown(t.Context(), "vm-recovered", time.Second); err == nil || !strings.Contains(err.Error(), "may still run") {
		t.Fatalf("a failed stop: %v", err)
	}
	if state, _ := d.PowerState(t.Context(), "vm-recovered"); state != "Running" {
		t.Fatalf("after a failed stop: %s", state)
	}
}
