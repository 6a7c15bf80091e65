package guesttest

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The guest agent (Options.GuestAgent) is the host's own qemu-ga
// (Debian's qemu-guest-agent), copied into the initramfs with the shared
// libraries it links and the kernel modules it needs: virtio_console
// for its virtio-serial port, and loop for a small ext2 filesystem the
// guest mounts on FreezeMount, so that guest-fsfreeze-freeze has one
// filesystem to freeze (the initramfs's own root is a ramfs, which
// qemu-ga leaves out).
const (
	GuestAgentPath = "/usr/sbin/qemu-ga"
	// GuestAgentPort is the virtio-serial port's name qemu-ga listens on.
	GuestAgentPort = "org.qemu.guest_agent.0"
	// GuestAgentLine is printed once qemu-ga runs.
	GuestAgentLine = "LIFEBOAT-GUEST AGENT"
	// FreezeMount is where the guest mounts the filesystem fsfreeze freezes.
	FreezeMount = "/mnt"
)

// agentModules are loaded after Modules: virtio_console needs virtio and
// virtio_ring.
var agentModules = []string{"virtio_console", "loop"}

// guestAgent is what the initramfs holds for qemu-ga: each file at the
// path it has on the host.
type guestAgent struct {
	files   []string // qemu-ga, its libraries, its ELF interpreter
	modules [][]byte // agentModules' contents, in order
}

// findGuestAgent finds qemu-ga, its libraries (ldd) and the modules.
func (in *Ingredients) findGuestAgent() (*guestAgent, error) {
	if _, err := os.Stat(GuestAgentPath); err != nil {
		return nil, fmt.Errorf("a guest with a guest agent needs %s: install the Debian package qemu-guest-agent (scripts/install-test-deps.sh)", GuestAgentPath)
	}
	files, err := sharedObjects(GuestAgentPath)
	if err != nil {
		return nil, err
	}
	ga := &guestAgent{files: append([]string{GuestAgentPath}, files...)}
	ver := strings.TrimPrefix(filepath.Base(in.Kernel), "vmlinuz-")
	for _, m := range agentModules {
		f := findModule("/lib/modules/"+ver, m)
		if f == "" {
			return nil, fmt.Errorf("a guest with a guest agent needs the module %s of kernel %s (linux-image-cloud-amd64)", m, ver)
		}
		data, err := module(f)
		if err != nil {
			return nil, err
		}
		ga.modules = append(ga.modules, data)
	}
	return ga, nil
}

// sharedObjects lists what a dynamically linked program loads: the
// libraries ldd resolves and the ELF interpreter.
func sharedObjects(program string) ([]string, error) {
	f, err := elf.Open(program)
	if err != nil {
		return nil, err
	}
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err == nil {
				interp = string(bytes.TrimRight(b, "\x00"))
			}
		}
	}
	f.Close()
	out, err := exec.Command("ldd", program).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", program, err)
	}
	var files []string
	if interp != "" {
		files = append(files, interp)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", or the
		// interpreter alone: "/lib64/ld-linux-x86-64.so.2 (0x...)".
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 3 && fields[1] == "=>":
			if fields[2] == "not" {
				return nil, fmt.Errorf("ldd %s: %s is not found", program, fields[0])
			}
			files = append(files, fields[2])
		case len(fields) >= 1 && strings.HasPrefix(fields[0], "/") && fields[0] != interp:
			files = append(files, fields[0])
		}
	}
	return files, nil
}

// add puts the guest agent's files, modules and /sbin/shutdown into the
// archive.
func (ga *guestAgent) add(w *cpioWriter) error {
	dirs := map[string]bool{"bin": true, "dev": true, "proc": true, "sys": true, "lib": true, "lib/modules": true}
	mkdirs := func(p string) {
		var parts []string
		for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
			parts = append(parts, d)
		}
		for i := len(parts) - 1; i >= 0; i-- {
			if !dirs[parts[i]] {
				w.dir(parts[i])
				dirs[parts[i]] = true
			}
		}
	}
	for _, f := range ga.files {
		data, err := os.ReadFile(f) // through symlinks: the file itself
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(filepath.Clean(f), "/")
		mkdirs(name)
		w.file(name, 0o755, data)
	}
	for i, data := range ga.modules {
		w.file("lib/modules/"+agentModules[i]+".ko", 0o644, data)
	}
	for _, d := range []string{"sbin", "run", "var", "var/run", "mnt", "etc"} {
		if !dirs[d] {
			w.dir(d)
			dirs[d] = true
		}
	}
	w.file("sbin/shutdown", 0o755, []byte(shutdownScript))
	return nil
}

// shutdownScript is the guest's /sbin/shutdown, which qemu-ga's
// guest-shutdown runs ("shutdown -h -P +0 'hypervisor initiated
// shutdown'" for a power-down) and waits for: it does what an ACPI
// power-down does here, asks the workload to stop (/stop); /init then
// syncs and powers off. It must exit 0 at once, or qemu-ga reports
// the shutdown failed.
const shutdownScript = `#!/bin/busybox sh
/bin/busybox touch /stop
exit 0
`

// agentInit is the part of /init that starts qemu-ga: the modules, the
// filesystem to freeze, then qemu-ga on the port named GuestAgentPort
// (devtmpfs names it /dev/vportNpM; its name is in sysfs).
func agentInit() string {
	return `for m in ` + strings.Join(agentModules, " ") + `; do
	insmod /lib/modules/$m.ko || fail insmod $m
done
dd if=/dev/zero of=/freeze.img bs=1M count=4 2>/dev/null || fail freeze.img
losetup /dev/loop0 /freeze.img >/dev/console 2>&1 || fail losetup
mke2fs -q /dev/loop0 >/dev/console 2>&1 || fail mke2fs
mount -t ext2 /dev/loop0 ` + FreezeMount + ` >/dev/console 2>&1 || fail mount ` + FreezeMount + `
port=
i=0
while [ -z "$port" ]; do
	for p in /sys/class/virtio-ports/*; do
		[ "$(cat $p/name 2>/dev/null)" = "` + GuestAgentPort + `" ] && [ -c /dev/${p##*/} ] && port=/dev/${p##*/}
	done
	i=$((i+1)); [ $i -gt 1000 ] && fail no virtio port ` + GuestAgentPort + `
	[ -z "$port" ] && usleep 10000
done
` + GuestAgentPath + ` -m virtio-serial -p $port -f /run/qemu-ga.pid -t /run </dev/null >/dev/null 2>/dev/console &
echo "` + GuestAgentLine + ` $port"
`
}
