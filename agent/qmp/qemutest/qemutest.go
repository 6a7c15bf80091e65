// Package qemutest starts real QEMU processes for tests. A test that needs
// QEMU skips when qemu-system-x86_64 is not installed, unless
// LIFEBOAT_REQUIRE_QEMU is set (CI), where it fails instead.
package qemutest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Binary is the QEMU system emulator the tests run.
const Binary = "qemu-system-x86_64"

// Require skips (or, with LIFEBOAT_REQUIRE_QEMU, fails) the test when the
// named programs are not installed.
func Require(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("LIFEBOAT_REQUIRE_QEMU") != "" {
				t.Fatalf("%s is not installed, and LIFEBOAT_REQUIRE_QEMU is set", p)
			}
			t.Skipf("%s is not installed (set LIFEBOAT_REQUIRE_QEMU to fail instead)", p)
		}
	}
}

// VM is a QEMU process with its QMP socket.
type VM struct {
	Dir    string // a temporary directory for the test's images
	Socket string // the QMP socket
	Cmd    *exec.Cmd

	args   []string
	exited chan struct{}
	stderr *strings.Builder
}

// Start runs QEMU with no devices, its QMP monitor on a unix socket in a
// temporary directory, and extra arguments; without a -machine among
// them, with no machine either (-machine none). The process is killed
// when the test ends.
func Start(t testing.TB, extra ...string) *VM {
	t.Helper()
	Require(t, Binary, "qemu-img")
	// Unix socket paths are limited to 108 bytes; t.TempDir can be long.
	dir, err := os.MkdirTemp("", "lbqemu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vm := &VM{Dir: dir, Socket: filepath.Join(dir, "qmp.sock")}
	vm.args = []string{"-nodefaults", "-display", "none",
		"-qmp", "unix:" + vm.Socket + ",server=on,wait=off"}
	if !slices.Contains(extra, "-machine") {
		vm.args = append(vm.args, "-machine", "none")
	}
	vm.args = append(vm.args, extra...)
	vm.start(t)
	t.Cleanup(func() { vm.Kill() })
	return vm
}

func (vm *VM) start(t testing.TB) {
	t.Helper()
	os.Remove(vm.Socket)
	vm.Cmd = exec.Command(Binary, vm.args...)
	vm.stderr = &strings.Builder{}
	vm.Cmd.Stderr = vm.stderr
	if err := vm.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	vm.exited = exited
	go func() { vm.Cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The socket file appears at bind, a moment before QEMU listens
		// (a connection then is refused): wait until one is taken.
		if c, err := net.DialTimeout("unix", vm.Socket, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("qemu exited at start: %s", vm.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu made no QMP socket in 10 s: %s", vm.stderr.String())
		}
	}
}

// Kill ends QEMU with SIGKILL (it saves nothing) and waits for it.
func (vm *VM) Kill() {
	vm.Cmd.Process.Kill()
	<-vm.exited
}

// Wait waits at most timeout for QEMU to exit by itself (after a QMP quit).
func (vm *VM) Wait(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-vm.exited:
	case <-time.After(timeout):
		t.Fatalf("qemu did not exit in %v", timeout)
	}
}

// Restart starts QEMU again with the same arguments, once it has exited.
func (vm *VM) Restart(t testing.TB) {
	t.Helper()
	<-vm.exited
	vm.start(t)
}

// Image creates a qcow2 (or raw) image of size bytes in the VM's directory
// and returns its path.
func (vm *VM) Image(t testing.TB, name, format string, size int64) string {
	t.Helper()
	path := filepath.Join(vm.Dir, name)
	out, err := exec.Command("qemu-img", "create", "-q", "-f", format, path, fmt.Sprint(size)).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	return path
}
