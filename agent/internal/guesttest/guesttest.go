// Package guesttest boots a real Linux guest under QEMU for tests, in a
// few seconds and with no network: Debian's cloud kernel, and an
// initramfs built here with a static busybox and the kernel's virtio
// modules, whose /init runs a workload on the guest's disk (/dev/vda).
// The standard workload writes numbered records (see RecordSize) each
// with its own fsync, and acknowledges each on the serial console, so a
// test knows exactly which writes must survive.
//
// It needs the Debian packages qemu-system-x86, qemu-utils,
// linux-image-cloud-amd64 and busybox-static (scripts/install-test-deps.sh).
// Without them a test skips, unless LIFEBOAT_REQUIRE_QEMU is set (CI),
// where it fails with what to install.
package guesttest

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/qmp"
)

// Modules are the kernel modules the guest loads, in this order, to see
// its virtio-blk disks: each after those it depends on (in Debian's 6.1
// kernel virtio needs virtio_ring's symbols, so virtio_ring comes first).
var Modules = []string{"virtio_ring", "virtio", "virtio_pci_legacy_dev",
	"virtio_pci_modern_dev", "virtio_pci", "virtio_blk", "button", "evdev"}

// The last two make an ACPI power-down (QMP system_powerdown) reach the
// guest: button is the ACPI power button's input device, evdev its
// /dev/input/event*; /init reads it, and a press stops the workload as a
// line on the console does (Guest.Shutdown).

// Serial console lines the guest prints besides "ACK <n>".
const (
	ReadyLine   = "LIFEBOAT-GUEST READY"   // modules loaded, /dev/vda present; the workload starts
	DoneLine    = "LIFEBOAT-GUEST DONE"    // the workload ended and the guest synced; it powers off
	ErrorPrefix = "LIFEBOAT-GUEST ERROR"   // something in /init failed
	StoppedLine = "LIFEBOAT-GUEST STOPPED" // the standard workload stopped, followed by its last record
)

const packages = "qemu-system-x86 qemu-utils linux-image-cloud-amd64 busybox-static"

// Ingredients are what a guest is built from, found on this machine.
type Ingredients struct {
	QEMU    string   // qemu-system-x86_64
	QEMUImg string   // qemu-img
	Kernel  string   // /boot/vmlinuz-<ver>-cloud-amd64
	Busybox string   // a statically linked busybox
	Modules []string // the files of Modules, in order (.ko, or .ko.xz/.ko.zst)
}

// Find looks for the ingredients and says what is missing.
func Find() (*Ingredients, error) {
	var in Ingredients
	var missing []string
	var err error
	if in.QEMU, err = exec.LookPath("qemu-system-x86_64"); err != nil {
		missing = append(missing, "qemu-system-x86_64 (qemu-system-x86)")
	}
	if in.QEMUImg, err = exec.LookPath("qemu-img"); err != nil {
		missing = append(missing, "qemu-img (qemu-utils)")
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	sort.Strings(kernels)
	if len(kernels) == 0 {
		missing = append(missing, "/boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64)")
	} else {
		in.Kernel = kernels[len(kernels)-1]
		ver := strings.TrimPrefix(filepath.Base(in.Kernel), "vmlinuz-")
		for _, m := range Modules {
			f := findModule("/lib/modules/"+ver, m)
			if f == "" {
				missing = append(missing, fmt.Sprintf("module %s for kernel %s", m, ver))
			}
			in.Modules = append(in.Modules, f)
		}
	}
	if in.Busybox, err = exec.LookPath("busybox"); err != nil {
		missing = append(missing, "busybox (busybox-static)")
	} else if !static(in.Busybox) {
		missing = append(missing, in.Busybox+" is not statically linked (busybox-static)")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("a guest needs %s; install the Debian packages %s (scripts/install-test-deps.sh)",
			strings.Join(missing, ", "), packages)
	}
	return &in, nil
}

func findModule(dir, name string) string {
	for _, sub := range []string{"kernel/drivers/virtio", "kernel/drivers/block", "kernel/drivers/acpi", "kernel/drivers/input", "kernel/drivers/char"} {
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst"} {
			f := filepath.Join(dir, sub, name+ext)
			if _, err := os.Stat(f); err == nil {
				return f
			}
		}
	}
	return ""
}

func static(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// Require returns the ingredients, or skips the test when some are
// missing (fails it, naming the packages, when LIFEBOAT_REQUIRE_QEMU is set).
func Require(t testing.TB) *Ingredients {
	t.Helper()
	in, err := Find()
	if err != nil {
		if os.Getenv("LIFEBOAT_REQUIRE_QEMU") != "" {
			t.Fatalf("%v; LIFEBOAT_REQUIRE_QEMU is set", err)
		}
		t.Skipf("%v (set LIFEBOAT_REQUIRE_QEMU to fail instead)", err)
	}
	return in
}

// module reads a kernel module, decompressing it when the kernel ships it
// compressed (busybox insmod loads plain .ko files).
func module(path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".xz"):
		tool = "xz"
	case strings.HasSuffix(path, ".zst"):
		tool = "zstd"
	default:
		return os.ReadFile(path)
	}
	out, err := exec.Command(tool, "-dc", path).Output()
	if err != nil {
		return nil, fmt.Errorf("decompressing %s with %s: %w", path, tool, err)
	}
	return out, nil
}

// Initramfs builds the guest's initramfs (an uncompressed newc cpio):
// busybox, the modules, and an /init that loads them, waits for
// /dev/vda, prints ReadyLine, runs workload (shell), syncs, prints
// DoneLine and powers off. A line on the serial console's input, or an
// ACPI power-button press, makes /stop exist, which the standard workload
// checks between records.
func (in *Ingredients) Initramfs(workload string) ([]byte, error) {
	return in.initramfs(workload, nil)
}

// initramfs builds the initramfs, with the guest agent when ga is set.
func (in *Ingredients) initramfs(workload string, ga *guestAgent) ([]byte, error) {
	var w cpioWriter
	for _, d := range []string{"bin", "dev", "proc", "sys", "lib", "lib/modules"} {
		w.dir(d)
	}
	// The kernel opens /dev/console for /init before anything is mounted.
	w.chr("dev/console", 5, 1)
	bb, err := os.ReadFile(in.Busybox)
	if err != nil {
		return nil, err
	}
	w.file("bin/busybox", 0o755, bb)
	for i, m := range in.Modules {
		data, err := module(m)
		if err != nil {
			return nil, err
		}
		w.file("lib/modules/"+Modules[i]+".ko", 0o644, data)
	}
	agent := ""
	if ga != nil {
		if err := ga.add(&w); err != nil {
			return nil, err
		}
		agent = agentInit()
	}
	w.file("init", 0o755, []byte(initScript(workload, agent)))
	return w.bytes(), nil
}

// initScript is /init; agent (shell) starts the guest agent, after the
// modules.
func initScript(workload, agent string) string {
	return `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "` + ErrorPrefix + ` $*"; poweroff -f; }
for m in ` + strings.Join(Modules, " ") + `; do
	insmod /lib/modules/$m.ko || fail insmod $m
done
i=0
while [ ! -b /dev/vda ]; do
	i=$((i+1)); [ $i -gt 1000 ] && fail no /dev/vda
	usleep 10000
done
` + agent + `stty -echo </dev/console 2>/dev/null
(read line </dev/console; touch /stop) &
for e in /sys/class/input/event*; do
	[ "$(cat $e/device/name 2>/dev/null)" = "Power Button" ] || continue
	# an input event is 24 bytes; a shorter read fails at once
	(dd if=/dev/input/${e##*/} of=/dev/null bs=24 count=1 2>/dev/null && touch /stop) &
done
echo "` + ReadyLine + `"
` + workload + `
sync
echo "` + DoneLine + `"
poweroff -f
`
}

// RecordsWorkload is the standard workload: records first..last (see
// RecordSize), each written with its own fsync and then acknowledged as
// "ACK <n>", until last or until asked to stop (Guest.Shutdown); then
// StoppedLine and the last record written.
func RecordsWorkload(first, last int) string {
	return fmt.Sprintf(`n=%d
while [ $n -le %d ] && [ ! -e /stop ]; do
	printf '%s%%d\n' $n | dd of=/dev/vda bs=%d seek=$n conv=sync,fsync,notrunc 2>/dev/null || fail write $n
	echo "ACK $n"
	n=$((n+1))
done
echo "%s $((n-1))"`, first, last, RecordMagic, RecordSize, StoppedLine)
}

// Options are how Start boots a guest. The zero value boots the
// standard workload on a new 64 MiB qcow2 disk until it is full.
type Options struct {
	Disk   string // an image to boot on; empty: a new one in the guest's Dir
	Format string // the disk's format: "qcow2" (default) or "raw"
	Size   int64  // a new disk's size in bytes (default 64 MiB)

	// The standard workload's records: First (default 1) to First+Count-1,
	// or, with Count 0, to the end of the disk (Size/RecordSize-1).
	First, Count int
	// Workload, when set, replaces the standard workload: shell run by
	// /init with busybox's applets on PATH and the disk as /dev/vda.
	Workload string

	MemoryMiB   int           // default 256
	BootTimeout time.Duration // to ReadyLine; default 2 minutes
	QEMUArgs    []string      // more arguments for QEMU

	// GuestAgent runs qemu-ga in the guest on a virtio-serial port
	// (GuestAgentPort) whose host side is the unix socket
	// Guest.GuestAgentSocket, and mounts a small ext2 filesystem on
	// FreezeMount for guest-fsfreeze-freeze to freeze. qemu-ga's
	// guest-shutdown stops the workload as an ACPI power-down does.
	// Start returns once qemu-ga was started (GuestAgentLine); it answers
	// a moment later. It needs the Debian package qemu-guest-agent.
	GuestAgent bool
}

// Guest is a running guest.
type Guest struct {
	Dir    string // a temporary directory, removed when the test ends
	Socket string // QEMU's QMP socket
	// GuestAgentSocket is the guest agent's socket (Options.GuestAgent),
	// else empty.
	GuestAgentSocket string
	Disk             string // the disk image
	Format           string // its format
	Cmd              *exec.Cmd
	BootTime         time.Duration // from QEMU's start to ReadyLine

	in      *Ingredients
	stdin   io.WriteCloser
	exited  chan struct{}
	stderr  lockedBuffer
	mu      sync.Mutex
	serial  bytes.Buffer
	lastAck int
	changed chan struct{} // closed and replaced on every serial line
}

var ackLine = regexp.MustCompile(`(?:^|\s)ACK (\d+)\s*$`)

// Start builds the guest and boots it, and returns once the guest printed
// ReadyLine (it fails the test if the guest does not get there). QEMU is
// killed when the test ends.
func Start(t testing.TB, opts Options) *Guest {
	t.Helper()
	in := Require(t)
	if opts.Format == "" {
		opts.Format = "qcow2"
	}
	if opts.Size == 0 {
		opts.Size = 64 << 20
	}
	if opts.MemoryMiB == 0 {
		opts.MemoryMiB = 256
	}
	if opts.BootTimeout == 0 {
		opts.BootTimeout = 2 * time.Minute
	}
	// Unix socket paths are limited to 108 bytes; t.TempDir can be long.
	dir, err := os.MkdirTemp("", "lbguest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	g := &Guest{Dir: dir, Socket: filepath.Join(dir, "qmp.sock"), Disk: opts.Disk,
		Format: opts.Format, in: in, exited: make(chan struct{}), changed: make(chan struct{})}
	if g.Disk == "" {
		g.Disk = filepath.Join(dir, "disk."+opts.Format)
		if out, err := exec.Command(in.QEMUImg, "create", "-q", "-f", opts.Format, g.Disk,
			strconv.FormatInt(opts.Size, 10)).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
	}
	workload := opts.Workload
	if workload == "" {
		first := max(opts.First, 1)
		last := int(opts.Size/RecordSize) - 1
		if opts.Count > 0 {
			last = first + opts.Count - 1
		}
		workload = RecordsWorkload(first, last)
	}
	var ga *guestAgent
	if opts.GuestAgent {
		if ga, err = in.findGuestAgent(); err != nil {
			if os.Getenv("LIFEBOAT_REQUIRE_QEMU") != "" {
				t.Fatalf("%v; LIFEBOAT_REQUIRE_QEMU is set", err)
			}
			t.Skipf("%v (set LIFEBOAT_REQUIRE_QEMU to fail instead)", err)
		}
	}
	initrd, err := in.initramfs(workload, ga)
	if err != nil {
		t.Fatal(err)
	}
	initrdPath := filepath.Join(dir, "initramfs.cpio")
	if err := os.WriteFile(initrdPath, initrd, 0o644); err != nil {
		t.Fatal(err)
	}
	// KVM exists on these machines, but a KVM boot hung at "Booting from
	// ROM": TCG, which boots in seconds anyway.
	args := []string{"-accel", "tcg", "-m", strconv.Itoa(opts.MemoryMiB),
		"-nographic", "-no-reboot",
		"-kernel", in.Kernel, "-initrd", initrdPath,
		"-append", "console=ttyS0 quiet panic=-1",
		"-drive", "file=" + g.Disk + ",format=" + opts.Format + ",if=virtio",
		"-qmp", "unix:" + g.Socket + ",server=on,wait=off",
		"-nic", "none"}
	if opts.GuestAgent {
		g.GuestAgentSocket = filepath.Join(dir, "qga.sock")
		args = append(args, "-device", "virtio-serial",
			"-chardev", "socket,path="+g.GuestAgentSocket+",server=on,wait=off,id=qga0",
			"-device", "virtserialport,chardev=qga0,name="+GuestAgentPort)
	}
	args = append(args, opts.QEMUArgs...)
	g.Cmd = exec.Command(in.QEMU, args...)
	g.Cmd.Stderr = &g.stderr
	stdout, err := g.Cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if g.stdin, err = g.Cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := g.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() { g.read(stdout); close(read) }()
	go func() { <-read; g.Cmd.Wait(); close(g.exited) }()
	t.Cleanup(g.Kill)
	if err := g.WaitLine(ReadyLine, opts.BootTimeout); err != nil {
		t.Fatalf("the guest did not boot: %v", err)
	}
	g.BootTime = time.Since(start)
	return g
}

func (g *Guest) read(r io.Reader) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			g.mu.Lock()
			g.serial.WriteString(line)
			if m := ackLine.FindStringSubmatch(line); m != nil {
				if n, _ := strconv.Atoi(m[1]); n > g.lastAck {
					g.lastAck = n
				}
			}
			close(g.changed)
			g.changed = make(chan struct{})
			g.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// Serial returns everything the guest printed on its serial console so far.
func (g *Guest) Serial() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.serial.String()
}

// LastAck returns the highest record the guest acknowledged ("ACK <n>").
func (g *Guest) LastAck() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastAck
}

// Exited is closed once QEMU has exited.
func (g *Guest) Exited() <-chan struct{} { return g.exited }

// wait waits until cond holds on the serial output, QEMU exits, or timeout.
func (g *Guest) wait(what string, timeout time.Duration, cond func() bool) error {
	deadline := time.After(timeout)
	for {
		g.mu.Lock()
		ok, changed := cond(), g.changed
		g.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-g.exited:
			g.mu.Lock()
			ok = cond()
			g.mu.Unlock()
			if ok {
				return nil
			}
			return fmt.Errorf("QEMU exited (%v) before %s; %s", g.Cmd.ProcessState, what, g.tail())
		case <-deadline:
			return fmt.Errorf("no %s in %v; %s", what, timeout, g.tail())
		}
	}
}

func (g *Guest) tail() string {
	s := g.Serial()
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return fmt.Sprintf("serial console:\n%s\nQEMU stderr: %s", s, g.stderr.String())
}

// WaitAck waits until the guest acknowledged record n.
func (g *Guest) WaitAck(n int, timeout time.Duration) error {
	return g.wait(fmt.Sprintf("ACK %d", n), timeout, func() bool { return g.lastAck >= n })
}

// WaitLine waits until the serial console has a line containing s.
func (g *Guest) WaitLine(s string, timeout time.Duration) error {
	return g.wait(strconv.Quote(s), timeout, func() bool { return bytes.Contains(g.serial.Bytes(), []byte(s)) })
}

// Wait waits for QEMU to exit by itself (the guest powered off).
func (g *Guest) Wait(timeout time.Duration) error {
	select {
	case <-g.exited:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("QEMU did not exit in %v; %s", timeout, g.tail())
	}
}

// Shutdown is a clean shutdown from inside: the standard workload stops
// after the record it is writing, the guest syncs and powers off, and
// QEMU exits. Every record written is then acknowledged.
func (g *Guest) Shutdown(timeout time.Duration) error {
	if _, err := io.WriteString(g.stdin, "stop\r"); err != nil {
		return fmt.Errorf("asking the guest to stop: %w", err)
	}
	return g.Wait(timeout)
}

// Stop ends QEMU with a QMP quit: the guest stops where it is (what it
// had not flushed may be lost), QEMU closes its images cleanly.
func (g *Guest) Stop(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m, err := qmp.Dial(ctx, g.Socket)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Execute(ctx, "quit", nil, nil); err != nil && !errors.Is(err, io.EOF) {
		select {
		case <-g.exited: // it quit before answering
		default:
			return err
		}
	}
	return g.Wait(timeout)
}

// Kill ends QEMU with SIGKILL (it saves nothing) and waits for it.
func (g *Guest) Kill() {
	g.Cmd.Process.Kill()
	<-g.exited
}

// ReadDisk returns the guest's disk as raw bytes (qemu-img convert, so
// any format); QEMU should have exited, or the image lock refuses.
func (g *Guest) ReadDisk(t testing.TB) []byte {
	t.Helper()
	return ReadImage(t, g.Disk, g.Format)
}

// ReadImage returns an image's contents as raw bytes.
func ReadImage(t testing.TB, path, format string) []byte {
	t.Helper()
	if format == "raw" {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", format, "-O", "raw", path, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// lockedBuffer is QEMU's stderr: written by exec's copying goroutine,
// read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
