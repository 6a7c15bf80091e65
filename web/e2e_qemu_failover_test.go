package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// registerShort registers an agent named name in a new site, in a state
// directory with a short path: a qemu agent's captures put unix sockets
// in it (108 bytes at most).
func registerShort(t *testing.T, v *e2eVault, site, name string) string {
	t.Helper()
	_, agentBin := binaries(t)
	var s struct{ ID string }
	body, _ := json.Marshal(map[string]string{"name": site})
	if status := v.do(http.MethodPost, "/api/v1/sites", body, &s); status != http.StatusCreated {
		t.Fatalf("site %s: %d", site, status)
	}
	var key agentproto.RegistrationKey
	if status := v.do(http.MethodPost, "/api/v1/sites/"+s.ID+"/registration-key", nil, &key); status != http.StatusCreated {
		t.Fatalf("registration key: %d", status)
	}
	keyFile := filepath.Join(t.TempDir(), "key.json")
	b, _ := json.Marshal(key)
	os.WriteFile(keyFile, b, 0o600)
	stateDir := shortDir(t, "lbst")
	if out, err := exec.Command(agentBin, "register", "--key-file", keyFile, "--state-dir", stateDir, "--name", name).CombinedOutput(); err != nil {
		t.Fatalf("register %s: %v\n%s", name, err, out)
	}
	return stateDir
}

// shortDir is a new directory under the system's temporary directory,
// removed when the test ends (t.TempDir's paths can be too long for unix
// sockets).
func shortDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// killQEMUsUnder kills the QEMUs a qemu recovery host started for its VMs
// under vmDir (daemons, not the test's children), by their pid files.
func killQEMUsUnder(vmDir string) {
	files, _ := filepath.Glob(filepath.Join(vmDir, "*", "qemu.pid"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// The planned failover of a real guest between two qemu hosts,
// after a test failover and its cleanup: the source agent (--driver qemu) protects a Linux guest that writes
// fsynced records while it runs; a planned failover shuts it down
// through ACPI (its QEMU, started without -no-shutdown, is told to stay
// all the same, listed Off, so the final cycle reads its disks), and the
// recovery agent (--driver
// qemu with QEMU arguments that boot the guest's kernel) makes the VM of
// the final point as raw images and starts it. Every record the guest
// acknowledged before its shutdown is on the recovered disk, and the
// recovered guest boots.
func TestAPlannedFailoverOfARealGuestOntoAQEMURecoveryHostKeepsEveryAcknowledgedRecordAndBoots(t *testing.T) {
	s, guest, drVMs := newQEMUSites(t, 256<<20)
	v := s.v
	vm := s.protect(t, "guest")

	// A test failover first: guest-test boots on the recovery host with no
	// network device; its cleanup stops it and deletes it.
	job := s.run(t, "/api/v1/vms/"+vm.ID+"/test-failover", map[string]string{"recovery_point": "latest_processed", "recovery_host_id": s.drHostID})
	if job.State != "Succeeded" {
		t.Fatalf("test failover: %+v\n%s", job, s.dr.out.String())
	}
	testDir := filepath.Join(drVMs, "guest-test")
	eventuallyWithin(t, 2*time.Minute, "the test VM boots on the recovery host", func() bool {
		b, _ := os.ReadFile(filepath.Join(testDir, "serial.log"))
		return strings.Contains(string(b), qemutest.ReadyLine)
	}, s.dr)
	pidText, _ := os.ReadFile(filepath.Join(testDir, "qemu.pid"))
	pid := strings.TrimSpace(string(pidText))
	cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
	if !strings.Contains(string(cmdline), "\x00-nic\x00none\x00") || strings.Contains(string(cmdline), "user,model=virtio-net-pci") {
		t.Fatalf("the test VM's QEMU was not started without a network: %q", cmdline)
	}
	if job := s.run(t, "/api/v1/vms/"+vm.ID+"/test-failover/cleanup", map[string]string{"notes": "booted"}); job.State != "Succeeded" {
		t.Fatalf("cleanup: %+v\n%s", job, s.dr.out.String())
	}
	if _, err := os.Stat(testDir); !os.IsNotExist(err) {
		t.Fatalf("the test VM is still there: %v", err)
	}
	if _, err := os.Stat("/proc/" + pid + "/cmdline"); err == nil {
		if b, _ := os.ReadFile("/proc/" + pid + "/cmdline"); strings.Contains(string(b), testDir) {
			t.Fatal("the test VM's QEMU still runs after the cleanup")
		}
	}

	// The guest went on writing through the first cycle, and still does.
	ackedAtPoint := guest.LastAck()
	if err := guest.WaitAck(ackedAtPoint+20, time.Minute); err != nil {
		t.Fatal(err)
	}

	job = s.run(t, "/api/v1/vms/"+vm.ID+"/failover", map[string]string{"type": "planned", "recovery_host_id": s.drHostID})
	if job.State != "Succeeded" || len(job.Steps) != 3 {
		t.Fatalf("planned failover: %+v\n%s%s", job, s.src.out.String(), s.dr.out.String())
	}
	// The source guest was shut down from outside (ACPI): its workload
	// stopped and it powered off; its QEMU stays, Off.
	if err := guest.WaitLine(qemutest.DoneLine, 10*time.Second); err != nil {
		t.Fatalf("the source guest was not shut down: %v", err)
	}
	acked := guest.LastAck()
	if acked <= ackedAtPoint {
		t.Fatalf("the guest acknowledged %d records before the shutdown, %d at the first point: it did not write on", acked, ackedAtPoint)
	}
	eventually(t, "the source VM is listed Off (its QEMU stayed)", func() bool {
		var got struct {
			PowerState string `json:"power_state"`
		}
		v.do(http.MethodGet, "/api/v1/vms/"+vm.ID, nil, &got)
		return got.PowerState == agentproto.PowerOff
	}, s.src)
	if st := s.vm(t, vm.ID); st.ProtectionState != "FailedOver" || st.Recovery.Failover == nil || st.Recovery.Failover.Kind != "planned" {
		t.Fatalf("after the planned failover: %+v", st)
	}

	// The recovered VM: raw images under the recovery host's VM directory,
	// its QEMU started by the recovery agent.
	dir := filepath.Join(drVMs, "guest")
	disk, err := os.ReadFile(filepath.Join(dir, "disk.img"))
	if err != nil {
		entries, _ := os.ReadDir(drVMs)
		t.Fatalf("the recovered disk: %v (VM directory: %v)\n%s", err, entries, s.dr.out.String())
	}
	last, err := qemutest.CheckPrefix(qemutest.Records(disk), acked)
	if err != nil {
		t.Fatalf("the failed-over disk lacks acknowledged records: %v", err)
	}
	t.Logf("the guest acknowledged %d records (%d at the first point); the failed-over disk holds 1..%d", acked, ackedAtPoint, last)
	eventuallyWithin(t, 2*time.Minute, "the failed-over guest boots on the recovery host", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "serial.log"))
		return strings.Contains(string(b), qemutest.ReadyLine)
	}, s.dr)
	// The vault sees it running on the recovery host.
	recoveredID := s.vmOn(t, s.drHostID, "guest")
	eventually(t, "the recovered VM is listed running", func() bool {
		var got struct {
			PowerState string `json:"power_state"`
		}
		v.do(http.MethodGet, "/api/v1/vms/"+recoveredID, nil, &got)
		return got.PowerState == agentproto.PowerRunning
	}, s.dr)
}

// newQEMUSites is a vault with two qemu hosts: kvm-src, whose QMP
// directory holds the real guest (a disk of size bytes, writing records),
// and kvm-dr, a recovery host whose VMs boot the guest's kernel with a
// workload that writes nothing (their disks stay the point); a policy of
// 30-second cycles and a directory target.
func newQEMUSites(t *testing.T, size int64) (s *recoverySite, guest *qemutest.Guest, drVMs string) {
	t.Helper()
	in := qemutest.RequireGuest(t)
	_, agentBin := binaries(t)
	v := newE2EVault(t)

	// The recovered guest boots the same kernel with a workload that
	// writes nothing: its disk stays the point.
	initrd, err := in.Initramfs("while [ ! -e /stop ]; do sleep 1; done")
	if err != nil {
		t.Fatal(err)
	}
	initrdPath := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := os.WriteFile(initrdPath, initrd, 0o644); err != nil {
		t.Fatal(err)
	}
	machine, _ := json.Marshal([]string{"-machine", "pc", "-accel", "tcg", "-m", "256", "-no-reboot",
		"-kernel", in.Kernel, "-initrd", initrdPath, "-append", "console=ttyS0 quiet panic=-1"})

	srcQMP, drQMP := shortDir(t, "lbsq"), shortDir(t, "lbdq")
	guest = qemutest.StartGuest(t, qemutest.GuestOptions{Size: size,
		QEMUArgs: []string{"-qmp", "unix:" + filepath.Join(srcQMP, "guest.qmp") + ",server=on,wait=off"}})

	srcState := registerShort(t, v, "Primary", "kvm-src")
	drState := registerShort(t, v, "Recovery", "kvm-dr")
	drVMs = t.TempDir()
	t.Cleanup(func() { killQEMUsUnder(drVMs) })
	s = &recoverySite{v: v, dir: t.TempDir(), drState: drState}
	s.src = startProc(t, agentBin, "run", "--state-dir", srcState, "--driver", "qemu", "--qmp-dir", srcQMP)
	s.dr = startProc(t, agentBin, "run", "--state-dir", drState, "--driver", "qemu", "--qmp-dir", drQMP,
		"--qemu-vm-dir", drVMs, "--qemu-args", string(machine))
	var hosts struct {
		Items []struct{ ID, Name, State string }
	}
	eventually(t, "both hosts are connected", func() bool {
		v.do(http.MethodGet, "/api/v1/hosts", nil, &hosts)
		n := 0
		for _, h := range hosts.Items {
			if h.State == "Connected" {
				n++
			}
		}
		return n == 2
	}, v.proc, s.src, s.dr)
	for _, h := range hosts.Items {
		if h.Name == "kvm-src" {
			s.srcHostID = h.ID
		} else {
			s.drHostID = h.ID
		}
	}
	var policy, target struct{ ID string }
	v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0,`+closedResyncWindow()+`}`), &policy)
	body, _ := json.Marshal(map[string]string{"name": "nas", "kind": "directory", "path": s.dir})
	v.do(http.MethodPost, "/api/v1/targets", body, &target)
	s.policyID, s.targetID = policy.ID, target.ID

	return s, guest, drVMs
}
