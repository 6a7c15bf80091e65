package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// DefaultBinary is the QEMU the driver starts VMs with when Binary is
// empty (looked up in PATH).
const DefaultBinary = "qemu-system-x86_64"

// DefaultNetArgs is the network of a VM the driver starts, unless
// isolated (then -nic none): user-mode networking, the guest behind NAT.
var DefaultNetArgs = []string{"-nic", "user,model=virtio-net-pci"}

// DefaultMachineArgs are the machine arguments of a VM the driver starts
// when none are configured: q35, 1 GiB, one CPU, KVM when /dev/kvm can
// be opened, else TCG (emulation: slow, but it boots anything).
func DefaultMachineArgs() []string {
	args := []string{"-machine", "q35", "-m", "1024", "-smp", "1"}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		return append(args, "-accel", "kvm")
	}
	return append(args, "-accel", "tcg")
}

// Files in the directory of a VM the driver starts.
const (
	pidFile    = "qemu.pid"
	serialFile = "serial.log" // the guest's serial console, appended to
)

// Drive is one disk of a VM the driver starts, in the guest's order (the
// first is the guest's first virtio disk).
type Drive struct {
	File   string // the image
	Format string // raw (the default) or qcow2 (e.g. an overlay whose backing the image names)
	// NodeName, when set, names the drive's block node (for block jobs on
	// it); otherwise QEMU names it.
	NodeName string
	// StopOnError pauses the guest on an I/O error instead of failing its
	// read or write: an overlay whose backing (an instant failover's NBD
	// export) is away for a while, where a write smaller than a cluster
	// reads the backing too.
	StopOnError bool
}

// LaunchSpec is a QEMU to start for a VM of this host.
type LaunchSpec struct {
	ID   string // the VM's id: its monitor is QMPDir/ID.qmp, its guest agent QMPDir/ID.qga
	Name string // the guest's name (-name)
	// Dir is the VM's directory: QEMU's pid file and the guest's serial
	// log go there.
	Dir    string
	Drives []Drive
	// Isolated starts it with no network device at all (-nic none).
	Isolated bool
	// Paused starts it stopped (-S), for what must be set up before the
	// guest runs (a block job); Start or cont lets it run.
	Paused bool
}

func (d *Driver) binary() string {
	if d.Binary == "" {
		return DefaultBinary
	}
	return d.Binary
}

// optValue escapes a value inside a QEMU option list (commas doubled).
func optValue(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// LaunchArgs is the command line (without the binary) Launch runs: QEMU
// daemonized (its own session, so it outlives the agent), its pid file,
// no display, the serial console appended to Dir/serial.log, -no-shutdown
// (a guest that powers off leaves its QEMU in state shutdown, listed Off,
// its disks still readable by a capture), the machine arguments, the
// drives, the network (or none), the monitor and the guest agent's port.
func (d *Driver) LaunchArgs(spec LaunchSpec) ([]string, error) {
	if len(spec.Drives) == 0 {
		return nil, fmt.Errorf("VM %s has no disks to start with", spec.ID)
	}
	if err := d.checkSocketPath(spec.ID); err != nil {
		return nil, err
	}
	machine := d.MachineArgs
	if machine == nil {
		machine = DefaultMachineArgs()
	}
	net := d.NetArgs
	if net == nil {
		net = DefaultNetArgs
	}
	if spec.Isolated {
		net = []string{"-nic", "none"}
	}
	args := []string{"-name", "guest=" + optValue(spec.Name), "-daemonize",
		"-pidfile", filepath.Join(spec.Dir, pidFile), "-display", "none", "-no-shutdown",
		"-chardev", "file,id=lifeboat-serial,append=on,path=" + optValue(filepath.Join(spec.Dir, serialFile)),
		"-serial", "chardev:lifeboat-serial"}
	if spec.Paused {
		args = append(args, "-S")
	}
	args = append(args, machine...)
	for _, dr := range spec.Drives {
		format := dr.Format
		if format == "" {
			format = "raw"
		}
		opt := "file=" + optValue(dr.File) + ",format=" + format + ",if=virtio,cache=" + cacheMode(dr.File)
		if dr.NodeName != "" {
			opt += ",node-name=" + dr.NodeName
		}
		if dr.StopOnError {
			opt += ",rerror=stop,werror=stop"
		}
		args = append(args, "-drive", opt)
	}
	args = append(args, net...)
	args = append(args, "-qmp", "unix:"+optValue(d.socket(spec.ID))+",server=on,wait=off",
		"-chardev", "socket,id=lifeboat-qga,server=on,wait=off,path="+optValue(d.guestAgentSocket(spec.ID)),
		"-device", "virtio-serial", "-device", "virtserialport,chardev=lifeboat-qga,name=org.qemu.guest_agent.0")
	return args, nil
}

// cacheMode is none (O_DIRECT: the host's page cache is not used twice)
// where the image's filesystem allows it, else writeback; either way the
// guest's flushes reach the disk.
func cacheMode(file string) string {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return "writeback"
	}
	f.Close()
	return "none"
}

// checkSocketPath refuses a VM id whose monitor's path would be too long
// for a unix socket (108 bytes with its terminating NUL).
func (d *Driver) checkSocketPath(id string) error {
	// The longest of the VM's sockets: an instant failover's NBD one.
	if p := d.nbdSocket(id, ""); len(p) >= 108 {
		return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf(
			"VM %s: its monitor's socket path %s is longer than a unix socket allows (107 bytes); give the agent a shorter --qmp-dir", id, p)}
	}
	return nil
}

// Launch starts QEMU for a VM and returns once its monitor answers and
// its guest runs (or waits, Paused). A QEMU that does not start is a
// CodeVMStartFailed quoting what it printed.
func (d *Driver) Launch(ctx context.Context, spec LaunchSpec) error {
	args, err := d.LaunchArgs(spec)
	if err != nil {
		return err
	}
	// A socket left by a QEMU that was killed would answer nobody.
	for _, s := range []string{d.socket(spec.ID), d.guestAgentSocket(spec.ID)} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	os.Remove(filepath.Join(spec.Dir, pidFile))
	d.dropMonitor(spec.ID)
	cmd := exec.CommandContext(ctx, d.binary(), args...)
	cmd.Dir = spec.Dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own session from the start: a signal to the agent's process
	// group (a Ctrl-C, a service stop) does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	d.logger().Info("starting QEMU", "vm", spec.ID, "binary", d.binary(), "args", strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf(
			"QEMU (%s) did not start VM %s: %v: %s. Fix the QEMU settings of this agent (--qemu-binary, --qemu-args, --qemu-net-args), then restart the job",
			d.binary(), spec.ID, err, strings.TrimSpace(out.String()))}
	}
	// -daemonize returns once QEMU is set up: its monitor listens.
	m, err := d.monitor(ctx, spec.ID)
	if err != nil {
		return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf(
			"QEMU started VM %s, but its monitor does not answer: %v; see %s", spec.ID, err, filepath.Join(spec.Dir, serialFile))}
	}
	st, err := Status(ctx, m)
	if err != nil {
		return err
	}
	if !st.Running && !(spec.Paused && st.Status == "prelaunch") {
		return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf(
			"QEMU started VM %s, but its guest is %s, not running; see its console in %s", spec.ID, st.Status, filepath.Join(spec.Dir, serialFile))}
	}
	return nil
}

// dropMonitor forgets (and closes) the driver's connection to a VM's
// monitor: its QEMU is gone, or is about to be.
func (d *Driver) dropMonitor(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if m := d.monitors[id]; m != nil {
		m.Close()
		delete(d.monitors, id)
	}
}

// qemuPID is the pid of the QEMU that runs from dir (its pid file names
// it, and it is alive and that QEMU), or 0.
func qemuPID(dir string) int {
	pidPath := filepath.Join(dir, pidFile)
	b, err := os.ReadFile(pidPath)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	// A pid is reused once its process is reaped: it is ours only if its
	// command line names the pid file.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(pidPath)) {
		return 0
	}
	// Exited and not reaped (its parent, init in a container, may not
	// reap): it runs no guest.
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			return 0
		}
	}
	return pid
}

// quitTimeout is how long a QEMU gets to exit after a quit, and again
// after a SIGKILL.
const quitTimeout = 10 * time.Second

// stopQEMU ends the QEMU of a VM that the driver started from dir: the
// guest is first asked to power off (graceful; 0: not asked), then QEMU
// quits, and is killed if it does not. With mustStop, a guest that does
// not power off within graceful is an error (CodeVMWillNotStop) and QEMU
// is left running; without, QEMU quits anyway.
func (d *Driver) stopQEMU(ctx context.Context, id, dir string, graceful time.Duration, mustStop bool) error {
	if qemuPID(dir) == 0 {
		d.dropMonitor(id)
		d.removeSockets(id)
		return nil
	}
	if m, err := d.monitor(ctx, id); err == nil {
		if graceful > 0 {
			if err := d.Shutdown(ctx, id, graceful); err != nil {
				if mustStop {
					return err
				}
				d.logger().Warn("the guest did not power off; its QEMU is stopped all the same", "vm", id, "error", err)
			}
		}
		qctx, cancel := context.WithTimeout(ctx, quitTimeout)
		_ = m.Execute(qctx, "quit", nil, nil) // it may exit before it answers
		cancel()
	} else if mustStop {
		return &agentproto.TaskError{Code: agentproto.CodeVMWillNotStop, Message: fmt.Sprintf(
			"VM %s: its QEMU runs (pid %d) but its monitor does not answer (%v), so its guest cannot be shut down; stop it on the host, then restart the job", id, qemuPID(dir), err)}
	}
	d.dropMonitor(id)
	if !waitGone(ctx, dir, quitTimeout) {
		if pid := qemuPID(dir); pid != 0 {
			d.logger().Warn("QEMU did not quit; it is killed", "vm", id, "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if !waitGone(ctx, dir, quitTimeout) {
			return &agentproto.TaskError{Code: agentproto.CodeVMWillNotStop, Message: fmt.Sprintf(
				"VM %s: its QEMU (pid %d) did not exit even when killed; end it on the host, then restart the job", id, qemuPID(dir))}
		}
	}
	d.removeSockets(id)
	return nil
}

// waitGone waits at most timeout for the QEMU of dir to exit.
func waitGone(ctx context.Context, dir string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for qemuPID(dir) != 0 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// removeSockets removes a stopped VM's sockets from QMPDir, so that it is
// not taken for a VM whose monitor no longer answers.
func (d *Driver) removeSockets(id string) {
	for _, s := range []string{d.socket(id), d.guestAgentSocket(id)} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.logger().Warn("a stopped VM's socket could not be removed", "socket", s, "error", err)
		}
	}
}
