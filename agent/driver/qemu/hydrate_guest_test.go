package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/internal/guesttest"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
)

// An instant failover of the real guest: its disk, 1 GiB holding records
// 1..hyRecords and random runs, is served over NBD from a reader that
// waits hyDelay per read (slow storage), and the guest boots on a local
// overlay of it while hydration copies the whole disk. The guest reads
// its records and the disk's last block at once, then writes new records
// into the overlay throughout.
const (
	hyGuestSize = 1 << 30
	hyRecords   = 64
	hyDelay     = 8 * time.Millisecond
)

func TestAnInstantFailoverGuestIsReadableInSecondsAndAfterHydrationItsDiskIsThePointPlusItsWrites(t *testing.T) {
	guesttest.Require(t)
	dir, err := os.MkdirTemp("", "lbhy") // short: unix socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	point := filepath.Join(dir, "point.raw")
	hyImage(t, point, hyGuestSize, 4)
	last := int64(hyGuestSize/guesttest.RecordSize - 1)
	tail := fmt.Sprintf("LBTAIL %d\n", time.Now().UnixNano())
	hyWriteBlocks(t, point, map[int64][]byte{last: []byte(tail)}, 1, hyRecords)
	p := hyServe(t, dir, point, hyDelay)
	overlay := hyOverlay(t, dir, p, 30*time.Second)

	// A second QMP monitor at a known path: the hydration starts as soon
	// as QEMU does, as the recovery host's agent would start it.
	agentSock := filepath.Join(dir, "agent.qmp")
	started := make(chan *Hydration, 1)
	startErr := make(chan error, 1)
	go func() {
		h, err := hyStartWhenUp(agentSock, 30*time.Second)
		if err != nil {
			startErr <- err
			return
		}
		started <- h
	}()
	workload := fmt.Sprintf(`echo "TAIL $(dd if=/dev/vda bs=%d skip=%d count=1 2>/dev/null | head -n1)"
echo "READ $(dd if=/dev/vda bs=%d skip=%d count=1 2>/dev/null | head -n1)"
`, guesttest.RecordSize, last, guesttest.RecordSize, hyRecords) + guesttest.RecordsWorkload(hyRecords+1, int(last)-1)
	begin := time.Now()
	g := guesttest.Start(t, guesttest.Options{Disk: overlay, Format: "qcow2", Workload: workload,
		QEMUArgs: []string{"-qmp", "unix:" + agentSock + ",server=on,wait=off"}})
	ready := time.Since(begin)
	var h *Hydration
	select {
	case h = <-started:
		t.Cleanup(func() { h.m.Close() })
	case err := <-startErr:
		t.Fatal(err)
	}
	if err := g.WaitLine("TAIL LBTAIL", time.Minute); err != nil {
		t.Fatal(err)
	}
	tailRead := time.Since(begin)
	progress, running, err := h.Progress(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !running || progress.Done >= progress.Total {
		t.Fatalf("the hydration was over (%+v, running %v) when the guest read its last block: this proves nothing", progress, running)
	}
	if err := g.WaitLine("READ ", time.Minute); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.Serial(), fmt.Sprintf("READ LBREC %d", hyRecords)) || !strings.Contains(g.Serial(), "TAIL "+strings.TrimSpace(tail)) {
		t.Fatalf("the guest read other data than the point's:\n%s", g.Serial())
	}
	t.Logf("the guest printed ReadyLine %v after QEMU's start, read the disk's last block (through NBD) at %v, with %d of %d MiB hydrated",
		ready, tailRead, progress.Done>>20, progress.Total>>20)

	nextLog := time.Now()
	err = h.Wait(context.Background(), 200*time.Millisecond, func(p HydrateProgress) {
		if time.Now().After(nextLog) {
			t.Logf("hydration %d of %d MiB at %v; the guest acknowledged record %d", p.Done>>20, p.Total>>20, time.Since(begin).Round(time.Millisecond), g.LastAck())
			nextLog = time.Now().Add(3 * time.Second)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	hydrated := time.Since(begin)
	t.Logf("time to ReadyLine %v, to a read of the last block %v, to hydrated %v (1 GiB at %v a read)", ready, tailRead, hydrated, hyDelay)
	if hydrated < 2*tailRead {
		t.Errorf("hydrated in %v, the guest read at %v: the test's disk is too fast to show instant failover", hydrated, tailRead)
	}
	if b, err := Backing(context.Background(), h.m, h.Node); err != nil || b != "" {
		t.Fatalf("the overlay's backing after hydration: %q, %v", b, err)
	}

	// The point's server goes: the VM runs from its local disk alone.
	p.stop()
	acked := g.LastAck()
	if err := g.WaitAck(acked+20, time.Minute); err != nil {
		t.Fatalf("the guest stopped writing once the NBD server was gone: %v", err)
	}
	if err := g.Shutdown(time.Minute); err != nil {
		t.Fatal(err)
	}
	acked = g.LastAck()
	if b := hyBacking(t, overlay); b != "" {
		t.Fatalf("qemu-img info: backing file %q after hydration", b)
	}

	// The overlay is the point, plus the records the guest wrote.
	raw := hyConvert(t, overlay)
	prefix := make([]byte, 64<<20)
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(prefix, 0); err != nil {
		t.Fatal(err)
	}
	m, err := guesttest.CheckPrefix(guesttest.Records(prefix), acked)
	if err != nil {
		t.Fatal(err)
	}
	if m <= hyRecords || m >= 16<<10 {
		t.Fatalf("records 1..%d: the guest wrote none, or over the point's data", m)
	}
	t.Logf("records 1..%d on the hydrated disk (%d from the point, the rest written during and after hydration; %d acknowledged)", m, hyRecords, acked)
	want := filepath.Join(dir, "want.raw")
	if out, err := exec.Command("cp", "--sparse=always", point, want).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	hyWriteBlocks(t, want, nil, hyRecords+1, m)
	hyEqualFiles(t, raw, want)
}

// hyWriteBlocks writes the blocks given and records first..last into an image.
func hyWriteBlocks(t *testing.T, path string, blocks map[int64][]byte, first, last int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if blocks == nil {
		blocks = map[int64][]byte{}
	}
	for n := first; n <= last; n++ {
		blocks[int64(n)] = guesttest.Record(n)
	}
	for b, data := range blocks {
		block := make([]byte, guesttest.RecordSize)
		copy(block, data)
		if _, err := f.WriteAt(block, b*guesttest.RecordSize); err != nil {
			t.Fatal(err)
		}
	}
}

// hyStartWhenUp dials the QMP socket as soon as QEMU made it and starts
// hydrating the VM's one disk.
func hyStartWhenUp(sock string, timeout time.Duration) (*Hydration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		m, err := qmp.Dial(ctx, sock)
		if err == nil {
			disks, err := Disks(ctx, m)
			if err != nil {
				return nil, err
			}
			if len(disks) != 1 {
				return nil, fmt.Errorf("the VM has disks %+v, want one", disks)
			}
			return Hydrate(ctx, m, disks[0].NodeName, HydrateOptions{})
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no QMP monitor at %s: %w", sock, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
