package tasks

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/driver/qemu"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

const kib, mib = 1 << 10, 1 << 20

// qemuVM is a QEMU PC machine that never runs a guest (-S, TCG) with one
// virtio-blk disk over node d0; the driver's monitor is qmpDir/vm1.qmp,
// the test's own is vm.Socket. want is what the disk holds.
type qemuVM struct {
	vm     *qemutest.VM
	m      *qmp.Monitor
	img    string
	format string

	mu   sync.Mutex
	want []byte
}

func startQEMUVM(t *testing.T, qmpDir, format string, size int64) *qemuVM {
	t.Helper()
	v := &qemuVM{format: format, want: make([]byte, size)}
	v.vm = qemutest.Start(t, "-machine", "pc", "-accel", "tcg", "-S", "-qmp", "unix:"+filepath.Join(qmpDir, "vm1.qmp")+",server=on,wait=off")
	v.img = v.vm.Image(t, "d0."+format, format, size)
	v.dial(t)
	v.attach(t)
	return v
}

func (v *qemuVM) dial(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := qmp.Dial(ctx, v.vm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	v.m = m
}

func (v *qemuVM) exec(t *testing.T, cmd string, args, out any) {
	t.Helper()
	if err := v.m.Execute(context.Background(), cmd, args, out); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
}

func (v *qemuVM) attach(t *testing.T) {
	t.Helper()
	v.exec(t, "blockdev-add", map[string]any{"node-name": "d0", "driver": v.format, "file": map[string]any{"driver": "file", "filename": v.img}}, nil)
	v.exec(t, "device_add", map[string]any{"driver": "virtio-blk-pci", "drive": "d0", "id": "dev-d0"}, nil)
}

// tryWrite writes a pattern through the disk's device with qemu-io, as
// the guest would (through whatever a capture put above the node); it
// may run on any goroutine.
func (v *qemuVM) tryWrite(pattern byte, off, length int64) error {
	var out string
	err := v.m.Execute(context.Background(), "human-monitor-command", map[string]any{"command-line": fmt.Sprintf(
		"qemu-io -d /machine/peripheral/dev-d0/virtio-backend \"write -P %#x %d %d\"", pattern, off, length)}, &out)
	if err != nil {
		return err
	}
	if out != "" {
		return fmt.Errorf("qemu-io: %q", out)
	}
	v.mu.Lock()
	copy(v.want[off:off+length], bytes.Repeat([]byte{pattern}, int(length)))
	v.mu.Unlock()
	return nil
}

func (v *qemuVM) write(t *testing.T, pattern byte, off, length int64) {
	t.Helper()
	if err := v.tryWrite(pattern, off, length); err != nil {
		t.Fatal(err)
	}
}

func (v *qemuVM) disk() []byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return bytes.Clone(v.want)
}

// quitAndRestart quits QEMU cleanly (qcow2 saves its persistent bitmaps)
// and starts it again on the same image, with the disk attached as before.
func (v *qemuVM) quitAndRestart(t *testing.T) {
	t.Helper()
	v.exec(t, "quit", nil, nil)
	v.vm.Wait(t, 10*time.Second)
	v.m.Close()
	v.vm.Restart(t)
	v.dial(t)
	v.attach(t)
}

// countingDriver is the qemu driver whose captures count the bytes the
// engine reads from their disks; onRead (if set) is called as each read
// starts, with the bytes read so far, and delay slows every read (a big
// disk, without its size).
type countingDriver struct {
	*qemu.Driver
	read   atomic.Int64
	onRead func(before int64)
	delay  time.Duration
}

func (d *countingDriver) Capture(ctx context.Context, req driver.CaptureRequest) (driver.Capture, error) {
	c, err := d.Driver.Capture(ctx, req)
	if err != nil {
		return nil, err
	}
	cc := &countingCapture{Capture: c}
	for _, cd := range c.Disks() {
		cd.Source.Reader = &sourceReadCounter{r: cd.Source.Reader, d: d}
		cc.disks = append(cc.disks, cd)
	}
	return cc, nil
}

// takeRead returns the bytes read since the last call.
func (d *countingDriver) takeRead() int64 { return d.read.Swap(0) }

type countingCapture struct {
	driver.Capture
	disks []driver.CapturedDisk
}

func (c *countingCapture) Disks() []driver.CapturedDisk { return c.disks }

type sourceReadCounter struct {
	r io.ReaderAt
	d *countingDriver
}

func (r *sourceReadCounter) ReadAt(p []byte, off int64) (int, error) {
	if r.d.onRead != nil {
		r.d.onRead(r.d.read.Load())
	}
	if r.d.delay > 0 {
		time.Sleep(r.d.delay)
	}
	n, err := r.r.ReadAt(p, off)
	r.d.read.Add(int64(n))
	return n, err
}

// qemuAgent is an agent's qemu driver and tasks over a state directory,
// recovered as at the agent's start: another one over the same
// directories is the agent restarted.
type qemuAgent struct {
	d  *countingDriver
	ts *Tasks
}

func startQEMUAgent(t *testing.T, qmpDir, work, stateDir string) *qemuAgent {
	t.Helper()
	dir, err := state.Open(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	d := &countingDriver{Driver: &qemu.Driver{QMPDir: qmpDir, WorkDir: work, StateDir: dir.Path, Log: testReporter{t}.Log()}}
	t.Cleanup(func() { d.Close() })
	if err := d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &qemuAgent{d: d, ts: New(Deps{Driver: d, State: dir, Version: "test"})}
}

// protect makes the replica of the VM's disk d0 (img, of size bytes) on a
// directory target (a new one when target is ""), as create_replica does.
func (a *qemuAgent) protect(t *testing.T, target, img string, size int64) *qemuHost {
	t.Helper()
	if target == "" {
		target = filepath.Join(t.TempDir(), "nas")
	}
	h := &qemuHost{ts: a.ts, target: target}
	h.p = agentproto.ReplicationPayload{ProtectionID: "prot", VMID: "vm1", ReplicaKey: "vm_vm1", RetentionHours: 24,
		Disks: []agentproto.ReplicaDisk{{ReplicaID: "d0", Path: img, SizeBytes: size, New: true}}}
	h.p.Target.Kind, h.p.Target.Path = "directory", h.target
	if _, err := h.ts.createReplica(context.Background(), h.task(agentproto.TaskCreateReplica, ""), testReporter{t}); err != nil {
		t.Fatal(err)
	}
	return h
}

// on is the host's replication run by another agent (restarted).
func (h *qemuHost) on(a *qemuAgent) *qemuHost {
	q := *h
	q.ts = a.ts
	return &q
}

// readBound is the most a cycle may read from a disk whose changes are
// known to be the extents: the engine hashes each chunk (blocks.MaxRun)
// that holds a changed extent, then reads the blocks that differ again.
// A full read of a disk many chunks long is far above it.
func readBound(extents ...blocks.Extent) int64 {
	chunks := map[int64]bool{}
	var changed int64
	for _, e := range extents {
		start := e.Offset / qemu.BitmapGranularity * qemu.BitmapGranularity
		end := (e.Offset + e.Length + qemu.BitmapGranularity - 1) / qemu.BitmapGranularity * qemu.BitmapGranularity
		changed += end - start
		for c := start / blocks.MaxRun; c*blocks.MaxRun < end; c++ {
			chunks[c] = true
		}
	}
	return int64(len(chunks))*blocks.MaxRun + changed
}

// assertCycle checks a cycle's point against the disk, its bytes sent,
// and its bytes read within [minRead, maxRead].
func assertCycle(t *testing.T, h *qemuHost, v *qemuVM, a *qemuAgent, point string, wantSent, minRead, maxRead int64) agentproto.ReplicateResult {
	t.Helper()
	return assertCycleSending(t, h, v, a, point, wantSent, wantSent, minRead, maxRead)
}

// assertCycleSending is assertCycle with bytes sent within [minSent,
// maxSent].
func assertCycleSending(t *testing.T, h *qemuHost, v *qemuVM, a *qemuAgent, point string, minSent, maxSent, minRead, maxRead int64) agentproto.ReplicateResult {
	t.Helper()
	start := time.Now()
	res := h.replicate(t, point)
	read := a.d.takeRead()
	t.Logf("cycle %s: read %d bytes (allowed %d..%d), sent %d (allowed %d..%d) in %v", point, read, minRead, maxRead, res.BytesSent, minSent, maxSent, time.Since(start))
	if res.BytesSent < minSent || res.BytesSent > maxSent {
		t.Fatalf("cycle %s sent %d bytes, want %d..%d", point, res.BytesSent, minSent, maxSent)
	}
	if read < minRead || read > maxRead {
		t.Fatalf("cycle %s read %d bytes of the disk, want %d..%d", point, read, minRead, maxRead)
	}
	if !bytes.Equal(h.readPoint(t, point), v.disk()) {
		t.Fatalf("point %s is not the disk at its capture", point)
	}
	return res
}

// assertNoCaptureLeftovers checks that nothing of a capture remains: no
// block export, block job or node on a file of the work directory (a
// fleecing overlay), no file in the VM's work directory, and one
// Lifeboat bitmap per disk node, recording.
func assertNoCaptureLeftovers(t *testing.T, m *qmp.Monitor, work string, disks ...string) {
	t.Helper()
	ctx := context.Background()
	var exports []map[string]any
	if err := m.Execute(ctx, "query-block-exports", nil, &exports); err != nil {
		t.Fatal(err)
	}
	if len(exports) != 0 {
		t.Fatalf("block exports left: %v", exports)
	}
	var jobs []map[string]any
	if err := m.Execute(ctx, "query-jobs", nil, &jobs); err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 0 {
		t.Fatalf("block jobs left: %v", jobs)
	}
	var nodes []struct {
		NodeName string `json:"node-name"`
		File     string `json:"file"`
		Bitmaps  []struct {
			Name         string `json:"name"`
			Recording    bool   `json:"recording"`
			Inconsistent bool   `json:"inconsistent"`
		} `json:"dirty-bitmaps"`
	}
	if err := m.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		t.Fatal(err)
	}
	bitmaps := map[string][]string{}
	for _, n := range nodes {
		if strings.HasPrefix(n.File, work) || strings.HasPrefix(n.NodeName, qemu.FleecePrefix) {
			t.Fatalf("a capture's node is left: %s on %s", n.NodeName, n.File)
		}
		for _, b := range n.Bitmaps {
			if strings.HasPrefix(b.Name, qemu.BitmapPrefix) {
				bitmaps[n.NodeName] = append(bitmaps[n.NodeName], fmt.Sprintf("%s recording=%v inconsistent=%v", b.Name, b.Recording, b.Inconsistent))
				if !b.Recording || b.Inconsistent {
					t.Fatalf("node %s: bitmap %s is not recording (or inconsistent): %v", n.NodeName, b.Name, bitmaps[n.NodeName])
				}
			}
		}
	}
	for _, d := range disks {
		if len(bitmaps[d]) != 1 {
			t.Fatalf("node %s has %d Lifeboat bitmaps, want 1: %v", d, len(bitmaps[d]), bitmaps[d])
		}
	}
	var files []string
	filepath.WalkDir(work, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	if len(files) != 0 {
		t.Fatalf("files left in the capture work directory: %v", files)
	}
}

func ext(off, length int64) blocks.Extent { return blocks.Extent{Offset: off, Length: length} }

// fullRead is the most a cycle that compares every block reads: the whole
// disk, then the blocks that differ again.
func fullRead(size, differ int64) int64 { return size + differ }

// The agent restarts between two cycles: the new agent's first cycle
// reads only about what the guest wrote (the persistent bitmap and the
// tracking record carried the changes over), sends exactly it, and its
// point equals the disk.
func TestAnAgentRestartedBetweenQEMUCyclesReadsOnlyTheWritesFromTheBitmap(t *testing.T) {
	const size = 64 * mib
	qmpDir, work := qemuDirs(t)
	v := startQEMUVM(t, qmpDir, "qcow2", size)
	stateDir := t.TempDir()
	a := startQEMUAgent(t, qmpDir, work, stateDir)
	h := a.protect(t, "", v.img, size)
	v.write(t, 0x11, 0, 1*mib)
	assertCycle(t, h, v, a, "p1", 1*mib, size, fullRead(size, 1*mib)) // the first: every block
	v.write(t, 0x12, 20*mib, 64*kib)
	assertCycle(t, h, v, a, "p2", 64*kib, 64*kib, readBound(ext(20*mib, 64*kib)))

	// The agent stops (its monitor connection ends) with writes after its
	// last cycle, and more come while it is away.
	v.write(t, 0x13, 33*mib+4*kib, 8*kib)
	a.d.Close()
	v.write(t, 0x14, 50*mib, 128*kib)
	b := startQEMUAgent(t, qmpDir, work, stateDir)
	assertNoCaptureLeftovers(t, v.m, work, "d0")
	h = h.on(b)
	assertCycle(t, h, v, b, "p3", 8*kib+128*kib, 8*kib+128*kib, readBound(ext(33*mib+4*kib, 8*kib), ext(50*mib, 128*kib)))
	assertNoCaptureLeftovers(t, v.m, work, "d0")
}

// QEMU quits cleanly and starts again on the same image. On qcow2 the
// bitmap was saved in the image: the next cycle reads only about the
// writes of before and after the restart. A raw image keeps no bitmap:
// the changes are unknown, so the cycle hashes every block and sends only
// those that differ. Either way the point equals the disk.
func TestQEMURestartedOnQcow2KeepsTrackingAndOnRawResyncsByChecksum(t *testing.T) {
	const size = 64 * mib
	for _, format := range []string{"qcow2", "raw"} {
		t.Run(format, func(t *testing.T) {
			qmpDir, work := qemuDirs(t)
			v := startQEMUVM(t, qmpDir, format, size)
			a := startQEMUAgent(t, qmpDir, work, t.TempDir())
			h := a.protect(t, "", v.img, size)
			v.write(t, 0x21, 4*mib, 2*mib)
			assertCycle(t, h, v, a, "p1", 2*mib, size, fullRead(size, 2*mib))
			v.write(t, 0x22, 10*mib, 64*kib)
			assertCycle(t, h, v, a, "p2", 64*kib, 64*kib, readBound(ext(10*mib, 64*kib)))

			v.write(t, 0x23, 30*mib, 64*kib) // saved with the bitmap by the quit
			v.quitAndRestart(t)
			v.write(t, 0x24, 60*mib+60*kib, 8*kib) // across two granules
			want := int64(64*kib + 8*kib)
			if format == "qcow2" {
				assertCycle(t, h, v, a, "p3", want, want, readBound(ext(30*mib, 64*kib), ext(60*mib+60*kib, 8*kib)))
			} else {
				assertCycle(t, h, v, a, "p3", want, size, fullRead(size, want))
			}
			assertNoCaptureLeftovers(t, v.m, work, "d0")
			// Tracking goes on from the cycle after the restart.
			v.write(t, 0x25, 0, 4*kib)
			assertCycle(t, h, v, a, "p4", 4*kib, 4*kib, readBound(ext(0, 4*kib)))
		})
	}
}
