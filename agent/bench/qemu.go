package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/driver/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/driver/qemu"
	"github.com/lifeboat-dr/lifeboat/agent/internal/guesttest"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
)

// The qemu part: a delta cycle of a QEMU VM's disk through the qemu
// driver (its dirty bitmap says what changed) beside the same disk's
// cycle through filedisk (which hashes every block), after the same
// writes, at 0.1, 1 and 10 % churn. The goal: the qemu cycle reads no more
// than what changed, and its time follows the churn, not the disk size.
//
//	BENCH_QEMU_GIB  the disk, GiB (default 8; half of it data)
//
// Then the last point is failed over onto a qemu recovery host (the test
// guest's kernel booting from it), fully materialized and instantly.
//
// Both disks hold the same bytes: a raw image for filedisk and a qcow2
// copy of it attached to a QEMU (qemu-system-x86_64 -S: no guest runs,
// writes go in through qemu-io on its monitor) for qemu, each replicated
// to its own directory target.

// qemuChurnExtent is the size of each write of the churn: the bitmaps'
// granularity, so the qemu driver's extents are exactly the writes.
const qemuChurnExtent = 64 << 10

func benchQEMU(dir string) error {
	gib, err := envInt("BENCH_QEMU_GIB", 8, 1)
	if err != nil {
		return err
	}
	size := gib << 30
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("\nqemu: skipped, %s is not installed (scripts/install-test-deps.sh installs it)\n", tool)
			return nil
		}
	}
	b, err := newQEMUBench(dir, size)
	if b != nil {
		defer b.close()
	}
	if err != nil {
		return err
	}
	fmt.Printf("\nDelta cycles of a %d GiB disk (half data) after 64 KiB writes: qemu (dirty bitmap) beside filedisk (hash every block)\n", gib)
	fmt.Printf("%-34s %9s %12s %12s %12s  %s\n", "cycle", "seconds", "MiB read", "MiB sent", "MiB changed", "")
	first := func(name string, c func() (cycleCost, error)) error {
		cost, err := c()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Printf("%-34s %9.2f %12.0f %12.0f %12s  %s\n", name, cost.took.Seconds(), mibs(cost.read), mibs(cost.sent), "-", "(the whole disk, once)")
		return nil
	}
	if err := first("initial, filedisk", b.fileCycle); err != nil {
		return err
	}
	if err := first("initial, qemu", b.qemuCycle); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(11, 12))
	for _, churn := range []float64{0.001, 0.01, 0.1} {
		changed, err := b.churn(rng, churn)
		if err != nil {
			return err
		}
		fc, err := b.fileCycle()
		if err != nil {
			return fmt.Errorf("filedisk cycle: %w", err)
		}
		qc, err := b.qemuCycle()
		if err != nil {
			return fmt.Errorf("qemu cycle: %w", err)
		}
		label := fmt.Sprintf("%g %% churn", churn*100)
		fmt.Printf("%-34s %9.2f %12.0f %12.0f %12.0f\n", label+", filedisk", fc.took.Seconds(), mibs(fc.read), mibs(fc.sent), mibs(changed))
		fmt.Printf("%-34s %9.2f %12.0f %12.0f %12.0f  time %.2f × filedisk's, read %.2f × the change (goal ≤ 1 ×)\n",
			label+", qemu", qc.took.Seconds(), mibs(qc.read), mibs(qc.sent), mibs(changed),
			qc.took.Seconds()/fc.took.Seconds(), float64(qc.read)/float64(changed))
		if qc.sent != changed || fc.sent != changed {
			return fmt.Errorf("%s: qemu sent %d bytes and filedisk %d of the %d written: a cycle is wrong", label, qc.sent, fc.sent, changed)
		}
	}
	return b.instant()
}

// instant: a failover of the last point onto a qemu recovery host, the
// real test guest's kernel and initramfs booting from it: full
// materialization (the disk written, then the VM started) beside instant
// failover (the VM started on the point, the disk copied while it runs),
// each to the guest's first line on its console.
func (b *qemuBench) instant() error {
	in, err := guesttest.Find()
	if err != nil {
		fmt.Printf("\ninstant failover: skipped, %v\n", err)
		return nil
	}
	initrd, err := in.Initramfs("while [ ! -e /stop ]; do sleep 1; done")
	if err != nil {
		return err
	}
	initrdPath := filepath.Join(b.dir, "guest-initramfs.cpio")
	if err := os.WriteFile(initrdPath, initrd, 0o644); err != nil {
		return err
	}
	sockets, err := os.MkdirTemp("", "lbqr")
	if err != nil {
		return err
	}
	defer os.RemoveAll(sockets)
	rd := &qemu.Driver{QMPDir: sockets, WorkDir: filepath.Join(sockets, "w"), StateDir: filepath.Join(b.dir, "recovery-state"),
		VMDir: filepath.Join(b.dir, "recovery-vms"), MachineArgs: []string{"-machine", "pc", "-accel", "tcg", "-m", "256",
			"-no-reboot", "-kernel", in.Kernel, "-initrd", initrdPath, "-append", "console=ttyS0 quiet panic=-1"}}
	defer rd.Close()
	point := fmt.Sprintf("p%d", b.points)
	spec := func(name string) (driver.MaterializeSpec, func(), error) {
		pr, size, err := b.qr.OpenPoint(point, "d0")
		if err != nil {
			return driver.MaterializeSpec{}, nil, err
		}
		return driver.MaterializeSpec{ID: name, Name: name, SourceVMID: "vm1", PointID: point,
			Disks: []driver.MaterializeDisk{{Name: "d0", SizeBytes: size, Data: pr}}}, func() { pr.Close() }, nil
	}
	booted := func(name string, within time.Duration) error {
		deadline := time.Now().Add(within)
		for {
			out, _ := os.ReadFile(filepath.Join(rd.VMDir, name, "serial.log"))
			if bytes.Contains(out, []byte(guesttest.ReadyLine)) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("VM %s did not boot in %v:\n%s", name, within, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ctx := context.Background()
	fmt.Printf("\nFailover of that disk's last point (%d GiB) onto a qemu recovery host, to the guest's first console line\n", b.size>>30)
	fmt.Printf("%-34s %9s  %s\n", "failover", "seconds", "")
	dropCaches()
	full, done, err := spec("bench-full")
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := rd.Materialize(ctx, full); err != nil {
		return err
	}
	written := time.Since(start)
	if err := rd.Start(ctx, "bench-full", driver.StartOptions{Isolated: true}); err != nil {
		return err
	}
	if err := booted("bench-full", 2*time.Minute); err != nil {
		return err
	}
	fullBoot := time.Since(start)
	done()
	fmt.Printf("%-34s %9.2f  (disk written in %.2f s)\n", "full materialization, guest up", fullBoot.Seconds(), written.Seconds())
	if err := rd.Remove(ctx, "bench-full", 10*time.Second); err != nil {
		return err
	}
	dropCaches()
	inst, done, err := spec("bench-instant")
	if err != nil {
		return err
	}
	defer done()
	start = time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := rd.MaterializeInstant(ctx, inst, driver.StartOptions{Isolated: true}, nil)
		errc <- err
	}()
	if err := booted("bench-instant", 2*time.Minute); err != nil {
		return err
	}
	instantBoot := time.Since(start)
	if err := <-errc; err != nil {
		return err
	}
	hydrated := time.Since(start)
	fmt.Printf("%-34s %9.2f  %.2f × the full materialization's (the guest boots from the point while its disk is copied)\n", "instant failover, guest up", instantBoot.Seconds(), instantBoot.Seconds()/fullBoot.Seconds())
	fmt.Printf("%-34s %9.2f  %.2f × the full materialization's write\n", "instant failover, disk copied", hydrated.Seconds(), hydrated.Seconds()/written.Seconds())
	return rd.Remove(ctx, "bench-instant", 10*time.Second)
}

func mibs(n int64) float64 { return float64(n) / mib }

type cycleCost struct {
	took       time.Duration
	read, sent int64
}

// qemuBench is the two disks, the QEMU holding one, the two drivers and
// their targets.
type qemuBench struct {
	dir, raw, qcow2 string
	size            int64
	cmd             *exec.Cmd
	mon             *qmp.Monitor
	qd              *qemu.Driver
	fd              *filedisk.Driver
	qr, fr          *dirtarget.Replica
	points          int
	written         map[int64]bool // 64 KiB slots a churn wrote: each is written once, so it truly changes
}

func newQEMUBench(dir string, size int64) (*qemuBench, error) {
	// Unix socket paths are short: the QMP directory is not under dir.
	sockets, err := os.MkdirTemp("", "lbq")
	if err != nil {
		return nil, err
	}
	b := &qemuBench{dir: dir, size: size, written: map[int64]bool{}}
	b.fd = &filedisk.Driver{Root: filepath.Join(dir, "filedisk-vms")}
	vmDir := filepath.Join(b.fd.Root, "vm1")
	if err := os.MkdirAll(vmDir, 0o755); err != nil {
		return b, err
	}
	b.raw = filepath.Join(vmDir, "d0.img")
	fmt.Printf("\nMaking a %d MiB disk with 50 %% data for the qemu part ...\n", size/mib)
	if err := makeDisk(b.raw, size); err != nil {
		return b, err
	}
	b.qcow2 = filepath.Join(dir, "d0.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", b.raw, b.qcow2).CombinedOutput(); err != nil {
		return b, fmt.Errorf("qemu-img convert: %v: %s", err, out)
	}
	sock := filepath.Join(sockets, "vm1.qmp")
	// A second monitor, not a NAME.qmp one, for the writes: the driver
	// holds vm1.qmp (a QMP socket serves one client at a time).
	ioSock := filepath.Join(sockets, "io.sock")
	b.cmd = exec.Command("qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-S", "-nodefaults", "-display", "none",
		"-blockdev", fmt.Sprintf(`{"driver":"qcow2","node-name":"d0","file":{"driver":"file","filename":%q}}`, b.qcow2),
		"-device", "virtio-blk-pci,drive=d0,id=dev-d0",
		"-qmp", "unix:"+sock+",server=on,wait=off", "-qmp", "unix:"+ioSock+",server=on,wait=off")
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		return b, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(ioSock); err == nil {
			break
		}
		if ctx.Err() != nil {
			return b, fmt.Errorf("QEMU did not open its monitor %s", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.mon, err = qmp.Dial(ctx, ioSock)
	if err != nil {
		return b, err
	}
	state := filepath.Join(dir, "qemu-agent-state")
	b.qd = &qemu.Driver{QMPDir: sockets, WorkDir: filepath.Join(sockets, "w"), StateDir: state}
	if err := b.qd.Recover(ctx); err != nil {
		return b, err
	}
	if b.qr, err = dirtarget.Open(filepath.Join(dir, "qemu-target"), "vm1"); err != nil {
		return b, err
	}
	if b.fr, err = dirtarget.Open(filepath.Join(dir, "filedisk-target"), "vm1"); err != nil {
		return b, err
	}
	for _, r := range []*dirtarget.Replica{b.qr, b.fr} {
		if err := r.CreateDisk("d0", size); err != nil {
			return b, err
		}
	}
	return b, nil
}

func (b *qemuBench) close() {
	if b.qd != nil {
		b.qd.Close()
	}
	if b.mon != nil {
		b.mon.Close()
	}
	if b.cmd != nil && b.cmd.Process != nil {
		b.cmd.Process.Kill()
		b.cmd.Wait()
	}
	for _, r := range []*dirtarget.Replica{b.qr, b.fr} {
		if r != nil {
			r.Close()
		}
	}
	if b.qd != nil {
		os.RemoveAll(b.qd.QMPDir)
	}
}

// churn writes fraction of the disk as 64 KiB extents of one byte each,
// the same into both disks, and returns the bytes written. No extent is
// written twice in a run: every write changes what the disk held (random
// data or zeros), so what a cycle must send is known.
func (b *qemuBench) churn(rng *rand.Rand, fraction float64) (int64, error) {
	n := int(float64(b.size) * fraction / qemuChurnExtent)
	slots := b.size / qemuChurnExtent
	f, err := os.OpenFile(b.raw, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, qemuChurnExtent)
	ctx := context.Background()
	for i := 0; i < n; {
		slot := rng.Int64N(slots)
		if b.written[slot] {
			continue
		}
		b.written[slot] = true
		i++
		pattern := byte(1 + i%250)
		off := slot * qemuChurnExtent
		for i := range buf {
			buf[i] = pattern
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return 0, err
		}
		var out string
		if err := b.mon.Execute(ctx, "human-monitor-command", map[string]any{"command-line": fmt.Sprintf(
			`qemu-io -d /machine/peripheral/dev-d0/virtio-backend "write -P %d %d %d"`, pattern, off, qemuChurnExtent)}, &out); err != nil {
			return 0, err
		}
		if strings.TrimSpace(out) != "" {
			return 0, fmt.Errorf("qemu-io: %s", out)
		}
	}
	return int64(n) * qemuChurnExtent, f.Sync()
}

type countingReaderAt struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// cycle is one replication cycle of a driver's VM, as the agent's
// replicate task does it: capture, copy each disk, a point, release.
func (b *qemuBench) cycle(d driver.Driver, r *dirtarget.Replica, path string) (cycleCost, error) {
	dropCaches()
	ctx := context.Background()
	start := time.Now()
	c, err := d.Capture(ctx, driver.CaptureRequest{VMID: "vm1", Disks: []driver.DiskRef{{ID: "d0", Path: path, SizeBytes: b.size}}})
	if err != nil {
		return cycleCost{}, err
	}
	var cost cycleCost
	for _, disk := range c.Disks() {
		cr := &countingReaderAt{r: disk.Source.Reader}
		src := disk.Source
		src.Reader = cr
		res, err := replicate.Copy(ctx, r, disk.ID, src, replicate.Options{})
		cost.read += cr.n.Load()
		if err != nil {
			c.Release(false)
			return cost, err
		}
		cost.sent += res.Sent
	}
	result := c.ReadDone()
	b.points++
	if _, err := r.CreatePoint(replica.PointSpec{ID: fmt.Sprintf("p%d", b.points), Time: result.Time,
		Consistency: result.Consistency, Capture: result.Method, Disks: []string{"d0"}}); err != nil {
		c.Release(false)
		return cost, err
	}
	if err := c.Release(true); err != nil {
		return cost, err
	}
	cost.took = time.Since(start)
	return cost, nil
}

func (b *qemuBench) qemuCycle() (cycleCost, error) { return b.cycle(b.qd, b.qr, b.qcow2) }
func (b *qemuBench) fileCycle() (cycleCost, error) { return b.cycle(b.fd, b.fr, b.raw) }
