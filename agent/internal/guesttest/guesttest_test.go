package guesttest

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/qmp"
)

// flushes returns how many flushes QEMU has done for the guest's disk.
func (g *Guest) flushes(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := qmp.Dial(ctx, g.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var stats []struct {
		Stats struct {
			Flushes int `json:"flush_operations"`
		} `json:"stats"`
	}
	if err := m.Execute(ctx, "query-blockstats", nil, &stats); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range stats {
		n += s.Stats.Flushes
	}
	return n
}

func TestInitramfsIsACpioArchiveWithBusyboxModulesAndInit(t *testing.T) {
	in := Require(t)
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio is not installed")
	}
	img, err := in.Initramfs("echo hello")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(img)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	names := strings.Fields(string(out))
	for _, want := range []string{"init", "bin/busybox", "dev/console", "lib/modules/virtio_blk.ko"} {
		if !slices.Contains(names, want) {
			t.Errorf("the initramfs has no %s: %v", want, names)
		}
	}
}

// The guest boots on a qcow2 disk, acknowledges records, and after a
// SIGKILL of QEMU its disk holds every acknowledged record, with no gap.
func TestGuestAcknowledgedRecordsSurviveAKill(t *testing.T) {
	g := Start(t, Options{})
	t.Logf("boot time (QEMU start to %q): %v", ReadyLine, g.BootTime)
	start := time.Now()
	if err := g.WaitAck(20, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("20 records in %v", time.Since(start))
	// Each record's fsync reached QEMU as a flush of the disk before its ACK.
	if flushes := g.flushes(t); flushes < 20 {
		t.Fatalf("QEMU saw %d flushes of the disk for 20 acknowledged records", flushes)
	}
	g.Kill()
	acked := g.LastAck()
	recs := Records(g.ReadDisk(t))
	m, err := CheckPrefix(recs, acked)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("acknowledged %d, on the disk 1..%d", acked, m)
	if m > acked+1 {
		t.Fatalf("records 1..%d on the disk, but only %d acknowledged: at most one can be written and not yet acknowledged", m, acked)
	}
}

// A clean shutdown from inside the guest: every record written is
// acknowledged, on a raw disk read directly.
func TestGuestShutsDownCleanlyOnRequest(t *testing.T) {
	g := Start(t, Options{Format: "raw", Size: 4 << 20})
	if err := g.WaitAck(5, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(time.Minute); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.Serial(), DoneLine) {
		t.Fatalf("no %q; serial:\n%s", DoneLine, g.Serial())
	}
	recs := Records(g.ReadDisk(t))
	if m, err := CheckPrefix(recs, g.LastAck()); err != nil || m != g.LastAck() {
		t.Fatalf("records 1..%d (%v) after a clean shutdown, acknowledged %d", m, err, g.LastAck())
	}
}

// An ACPI power-down through QMP (what the qemu driver's Shutdown sends)
// stops the workload and powers the guest off cleanly.
func TestGuestPowersOffOnAnACPIPowerDown(t *testing.T) {
	g := Start(t, Options{Size: 4 << 20})
	if err := g.WaitAck(3, time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := qmp.Dial(ctx, g.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Execute(ctx, "system_powerdown", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := g.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.Serial(), DoneLine) {
		t.Fatalf("no %q; serial:\n%s", DoneLine, g.Serial())
	}
	if last := 4<<20/RecordSize - 1; g.LastAck() >= last {
		t.Fatalf("the guest wrote all %d records: the power-down did not stop it", last)
	}
	recs := Records(g.ReadDisk(t))
	if m, err := CheckPrefix(recs, g.LastAck()); err != nil || m != g.LastAck() {
		t.Fatalf("records 1..%d (%v) after an ACPI power-down, acknowledged %d", m, err, g.LastAck())
	}
}

// With a count the guest writes that many records and powers off; a
// second boot on the same disk continues from First.
func TestGuestWritesCountRecordsThenPowersOff(t *testing.T) {
	g := Start(t, Options{Count: 3})
	if err := g.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	if g.LastAck() != 3 {
		t.Fatalf("LastAck = %d, want 3", g.LastAck())
	}
	g2 := Start(t, Options{Disk: g.Disk, First: 4, Count: 2})
	if err := g2.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := Records(g2.ReadDisk(t)); !slices.Equal(got, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("Records = %v, want 1..5", got)
	}
}

// Stop quits QEMU through QMP while the guest writes; the qcow2 image is
// closed cleanly and holds every acknowledged record.
func TestGuestStopsOnAQMPQuit(t *testing.T) {
	g := Start(t, Options{})
	if err := g.WaitAck(10, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := g.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "check", g.Disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check after a QMP quit: %v: %s", err, out)
	}
	if _, err := CheckPrefix(Records(g.ReadDisk(t)), g.LastAck()); err != nil {
		t.Fatal(err)
	}
}

func TestTheGuestAgentsInitramfsHasQemuGAItsLibrariesModulesAndShutdown(t *testing.T) {
	in := Require(t)
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio is not installed")
	}
	ga, err := in.findGuestAgent()
	if err != nil {
		t.Skip(err)
	}
	img, err := in.initramfs("echo hello", ga)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(img)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	names := strings.Fields(string(out))
	for _, want := range []string{"usr/sbin/qemu-ga", "lib64/ld-linux-x86-64.so.2", "sbin/shutdown",
		"lib/modules/virtio_console.ko", "lib/modules/loop.ko"} {
		if !slices.Contains(names, want) {
			t.Errorf("the initramfs has no %s: %v", want, names)
		}
	}
	if !slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, "/libglib-2.0.so.0") }) {
		t.Errorf("the initramfs has no libglib-2.0.so.0: %v", names)
	}
}
