package tasks

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/guesttest"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// Replication cycles of a real Linux guest that keeps writing records:
// every point is the disk at one instant (its records are a gap-free
// prefix 1..m), holds every record acknowledged before its capture
// started, and later points hold more records than the first.
func TestPointsOfAGuestWritingContinuouslyAreGapFreePrefixesOfItsAcks(t *testing.T) {
	const MiB = 1 << 20
	qmpDir, work := qemuDirs(t)
	// The guest writes its records on a disk with a node name of our own
	// (d0) and a second QMP monitor sits in the driver's directory as VM
	// "vm1"; the guest helper holds no QMP connection. guesttest's own
	// -drive (a small dummy disk here) gets an automatic node name
	// ("#blockNNN"), from which the driver makes the export id
	// "lifeboat-#blockNNN", which QEMU refuses ("Invalid block export id")
	// on every tracked cycle.
	disk := filepath.Join(work, "d0.qcow2")
	dummy := filepath.Join(work, "dummy.raw")
	for _, img := range [][]string{{"qcow2", disk, fmt.Sprint(16 * MiB)}, {"raw", dummy, "1M"}} {
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", img[0], img[1], img[2]).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
	}
	// The guest sees both as /dev/vd*, in an order of QEMU's: d0 is the
	// one of 16 MiB (32768 sectors).
	workload := "i=0; D=; while [ -z \"$D\" ]; do for v in vda vdb; do [ \"$(cat /sys/block/$v/size 2>/dev/null)\" = 32768 ] && D=/dev/$v; done; i=$((i+1)); [ $i -gt 1000 ] && fail no d0; usleep 10000; done\n" +
		strings.ReplaceAll(guesttest.RecordsWorkload(1, 16*MiB/guesttest.RecordSize-1), "/dev/vda", "$D")
	g := guesttest.Start(t, guesttest.Options{Disk: dummy, Format: "raw", Workload: workload,
		QEMUArgs: []string{"-blockdev", "node-name=d0,driver=qcow2,file.driver=file,file.filename=" + disk,
			"-device", "virtio-blk-pci,drive=d0",
			"-qmp", "unix:" + filepath.Join(qmpDir, "vm1.qmp") + ",server=on,wait=off"}})
	t.Logf("boot: %v", g.BootTime)
	if err := g.WaitAck(5, time.Minute); err != nil {
		t.Fatal(err)
	}

	h := newQEMUHost(t, qmpDir, work, disk, 16*MiB)
	var counts []int
	for i := 1; i <= 4; i++ {
		point := fmt.Sprintf("p%d", i)
		acked := g.LastAck() // acknowledged before the capture starts: must be in the point
		start := time.Now()
		res := h.replicate(t, point)
		took := time.Since(start)
		if res.Consistency != replica.ConsistencyCrash || res.Capture != driver.MethodFleece {
			t.Fatalf("point %s: %s by %s", point, res.Consistency, res.Capture)
		}
		img := h.readPoint(t, point)
		m, err := guesttest.CheckPrefix(guesttest.Records(img), acked)
		if err != nil {
			t.Fatalf("point %s (acked %d before its capture, %d after): %v", point, acked, g.LastAck(), err)
		}
		// Past the acks of after the cycle, at most the record being written.
		if after := g.LastAck(); m > after+1 {
			t.Fatalf("point %s holds records 1..%d, but the guest had acknowledged only %d after the cycle", point, m, after)
		}
		t.Logf("point %s: records 1..%d, acked %d before the capture and %d after; %d bytes sent in %v",
			point, m, acked, g.LastAck(), res.BytesSent, took)
		counts = append(counts, m)
		if i < 4 {
			if err := g.WaitAck(g.LastAck()+5, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	}
	if counts[len(counts)-1] <= counts[0] {
		t.Fatalf("the guest kept writing, but the points hold records 1..%v", counts)
	}
	select {
	case <-g.Exited():
		t.Fatalf("the guest stopped during the cycles")
	default:
	}
}
