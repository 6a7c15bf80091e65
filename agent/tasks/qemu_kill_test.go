package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/internal/guesttest"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

func extentBytes(extents ...blocks.Extent) int64 {
	var n int64
	for _, e := range extents {
		n += e.Length
	}
	return n
}

// A cycle whose target goes away, or fills up, while it reads the disk
// fails recoverably and leaves no fleecing node, export, job or overlay
// file; once the target is back, the next cycle has every write, those
// of before the failed cycle and of during it, and still reads only
// about them.
func TestAQEMUCycleWhoseTargetFailsMidReadLosesNoWriteAndLeavesNoOverlay(t *testing.T) {
	const size = 64 * mib
	for _, c := range []struct {
		name string
		code string
		// target is the target's directory; fail makes it fail and
		// returns what brings it back.
		target func(t *testing.T) string
		fail   func(target string) (restore func() error, err error)
	}{
		{name: "share gone", code: agentproto.CodeTargetUnavailable,
			target: func(t *testing.T) string { return filepath.Join(t.TempDir(), "nas") },
			fail: func(target string) (func() error, error) {
				// As when a NAS goes away: the share's path no longer leads to it.
				if err := os.Rename(target, target+".away"); err != nil {
					return nil, err
				}
				return func() error { return os.Rename(target+".away", target) }, nil
			}},
		{name: "share full", code: agentproto.CodeTargetFull,
			target: func(t *testing.T) string { return filepath.Join(smallFilesystem(t, "24m"), "nas") },
			fail: func(target string) (func() error, error) {
				filler := filepath.Join(filepath.Dir(target), "filler")
				f, err := os.Create(filler)
				if err != nil {
					return nil, err
				}
				chunk := bytes.Repeat([]byte{1}, 1<<20)
				for {
					if _, err := f.Write(chunk); err != nil {
						break
					}
				}
				f.Close()
				return func() error { return os.Remove(filler) }, nil
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			qmpDir, work := qemuDirs(t)
			v := startQEMUVM(t, qmpDir, "qcow2", size)
			a := startQEMUAgent(t, qmpDir, work, t.TempDir())
			h := a.protect(t, c.target(t), v.img, size)
			v.write(t, 0x41, 0, 1*mib)
			assertCycle(t, h, v, a, "p1", 1*mib, size, fullRead(size, 1*mib))

			before := []blocks.Extent{ext(8*mib, 1*mib), ext(24*mib, 1*mib), ext(40*mib, 1*mib)}
			for i, e := range before {
				v.write(t, byte(0x42+i), e.Offset, e.Length)
			}
			during := ext(56*mib, 64*kib)
			var once sync.Once
			var restore func() error
			var hookErr error
			a.d.onRead = func(int64) {
				once.Do(func() {
					if restore, hookErr = c.fail(h.target); hookErr == nil {
						hookErr = v.tryWrite(0x4f, during.Offset, during.Length)
					}
				})
			}
			_, err := h.ts.replicate(context.Background(), h.task(agentproto.TaskReplicate, "p2"), testReporter{t})
			a.d.onRead = nil
			a.d.takeRead()
			if hookErr != nil || restore == nil {
				t.Fatalf("the target was not made to fail mid-read: %v", hookErr)
			}
			var te *agentproto.TaskError
			if !errors.As(err, &te) || te.Code != c.code || !te.Recoverable {
				t.Fatalf("the cycle with its target failing: %v, want a recoverable %s", err, c.code)
			}
			assertNoCaptureLeftovers(t, v.m, work, "d0")

			if err := restore(); err != nil {
				t.Fatal(err)
			}
			after := ext(2*mib+4*kib, 4*kib)
			v.write(t, 0x50, after.Offset, after.Length)
			all := append(before, during, after)
			// What the failed cycle wrote before it failed may be on the
			// replica already; the writes of during and after it cannot be.
			assertCycleSending(t, h, v, a, "p3", extentBytes(during, after), extentBytes(all...), extentBytes(during, after), readBound(all...))
			assertNoCaptureLeftovers(t, v.m, work, "d0")
		})
	}
}

// childCycle is a replication cycle run by a child process of the test
// binary (TestQEMUCycleInAChildProcess): an agent to kill with SIGKILL
// mid-cycle.
type childCycle struct {
	QMPDir, Work, StateDir string
	Payload                agentproto.ReplicationPayload
	Target                 string
	Point                  string
	// ReadDelay slows every read of the disk: the cycle reads as from a
	// big disk, and the test has time to kill it mid-read.
	ReadDelay time.Duration
	// Reading is a file made once the cycle reads from the disk.
	Reading string
	// Result gets the cycle's result, as JSON.
	Result string
}

const childCycleEnv = "LIFEBOAT_TEST_QEMU_CHILD_CYCLE"

// Not a test: the child process of childCycle runs one cycle here.
func TestQEMUCycleInAChildProcess(t *testing.T) {
	raw := os.Getenv(childCycleEnv)
	if raw == "" {
		t.Skip("the body of a child process of other tests")
	}
	var c childCycle
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	a := startQEMUAgent(t, c.QMPDir, c.Work, c.StateDir)
	a.d.delay = c.ReadDelay
	var once sync.Once
	a.d.onRead = func(int64) { once.Do(func() { os.WriteFile(c.Reading, nil, 0o600) }) }
	h := &qemuHost{ts: a.ts, p: c.Payload, target: c.Target}
	res := h.replicate(t, c.Point)
	b, _ := json.Marshal(res)
	if err := os.WriteFile(c.Result, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// agentProcess is a child process running a cycle.
type agentProcess struct {
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan struct{}
	c      childCycle
}

// startChildCycle starts a child process running a cycle of the host's
// replication at point, by an agent over stateDir.
func startChildCycle(t *testing.T, h *qemuHost, qmpDir, work, stateDir, point string, delay time.Duration) *agentProcess {
	t.Helper()
	dir := t.TempDir()
	c := childCycle{QMPDir: qmpDir, Work: work, StateDir: stateDir, Payload: h.p, Target: h.target, Point: point,
		ReadDelay: delay, Reading: filepath.Join(dir, "reading"), Result: filepath.Join(dir, "result.json")}
	raw, _ := json.Marshal(c)
	p := &agentProcess{cmd: exec.Command(os.Args[0], "-test.run=^TestQEMUCycleInAChildProcess$", "-test.v"),
		out: &bytes.Buffer{}, exited: make(chan struct{}), c: c}
	p.cmd.Env = append(os.Environ(), childCycleEnv+"="+string(raw))
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.exited })
	return p
}

// waitReading waits until the child's cycle reads the disk.
func (p *agentProcess) waitReading(t *testing.T) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		if _, err := os.Stat(p.c.Reading); err == nil {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("the agent process ended before it read the disk:\n%s", p.out)
		case <-deadline:
			p.cmd.Process.Kill()
			<-p.exited
			t.Fatalf("the agent process did not read the disk in 60 s:\n%s", p.out)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// kill ends the child with SIGKILL, which it cannot handle: it releases
// nothing.
func (p *agentProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	if _, err := os.Stat(p.c.Result); err == nil {
		t.Fatalf("the agent process finished its cycle before it was killed:\n%s", p.out)
	}
}

// wait waits for the child's cycle to end and returns its result.
func (p *agentProcess) wait(t *testing.T) agentproto.ReplicateResult {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the agent process did not end its cycle in 2 minutes:\n%s", p.out)
	}
	var res agentproto.ReplicateResult
	b, err := os.ReadFile(p.c.Result)
	if err == nil {
		err = json.Unmarshal(b, &res)
	}
	if err != nil {
		t.Fatalf("the agent process's cycle: %v\n%s", err, p.out)
	}
	return res
}

// assertCaptureLeft checks that a killed agent left its capture in QEMU
// (a fleecing node on an overlay in the work directory) and on disk: it
// was killed mid-capture, and what the restart cleans is there to clean.
func assertCaptureLeft(t *testing.T, m *qmp.Monitor, work string) {
	t.Helper()
	var nodes []struct {
		NodeName string `json:"node-name"`
		File     string `json:"file"`
	}
	if err := m.Execute(context.Background(), "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		t.Fatal(err)
	}
	overlays := 0
	for _, n := range nodes {
		if strings.HasPrefix(n.File, work) {
			overlays++
		}
	}
	files, _ := filepath.Glob(filepath.Join(work, "*", "*.qcow2"))
	if overlays == 0 || len(files) == 0 {
		t.Fatalf("the killed agent left %d overlay nodes and overlay files %v: it was not killed mid-capture", overlays, files)
	}
}

// An agent killed with SIGKILL while it reads the disk leaves its capture
// behind (a fleecing overlay, its export, frozen bitmaps); the restarted
// agent removes all of it, and its first cycle has every write, of before
// the killed cycle, during it and after it, reading only about them.
func TestAnAgentKilledMidQEMUReadLosesNoWriteAndItsRestartLeavesNoOverlay(t *testing.T) {
	const size = 64 * mib
	qmpDir, work := qemuDirs(t)
	v := startQEMUVM(t, qmpDir, "qcow2", size)
	stateDir := t.TempDir()
	a := startQEMUAgent(t, qmpDir, work, stateDir)
	h := a.protect(t, "", v.img, size)
	v.write(t, 0x61, 0, 1*mib)
	assertCycle(t, h, v, a, "p1", 1*mib, size, fullRead(size, 1*mib))
	a.d.Close() // the agent process takes the monitor now

	before := []blocks.Extent{ext(8*mib, 1*mib), ext(24*mib, 1*mib), ext(40*mib, 1*mib)}
	for i, e := range before {
		v.write(t, byte(0x62+i), e.Offset, e.Length)
	}
	p := startChildCycle(t, h, qmpDir, work, stateDir, "p2", 2*time.Second)
	p.waitReading(t)
	during := ext(56*mib, 64*kib)
	v.write(t, 0x6f, during.Offset, during.Length)
	p.kill(t)
	assertCaptureLeft(t, v.m, work)
	after := ext(2*mib+4*kib, 4*kib)
	v.write(t, 0x70, after.Offset, after.Length)

	b := startQEMUAgent(t, qmpDir, work, stateDir)
	assertNoCaptureLeftovers(t, v.m, work, "d0")
	h = h.on(b)
	all := append(before, during, after)
	assertCycleSending(t, h, v, b, "p3", extentBytes(during, after), extentBytes(all...), extentBytes(all...), readBound(all...))
	assertNoCaptureLeftovers(t, v.m, work, "d0")
}

// A real guest writes fsynced records all along; an agent process is
// killed with SIGKILL while its cycle reads the disk, and a restarted
// agent process makes the next point: its records are a gap-free prefix
// holding every record the guest acknowledged before that cycle began
// (so all those of before the killed one), and nothing of the killed
// capture is left.
func TestAQEMUGuestsRecordsSurviveAnAgentKilledMidCycleAsAGapFreePrefix(t *testing.T) {
	const size = 16 * mib
	qmpDir, work := qemuDirs(t)
	// As in TestPointsOfAGuestWritingContinuouslyAreGapFreePrefixesOfItsAcks:
	// the records go to a -blockdev disk d0; the images are outside the
	// driver's work directory, which must end empty.
	images := t.TempDir()
	disk, dummy := filepath.Join(images, "d0.qcow2"), filepath.Join(images, "dummy.raw")
	for _, img := range [][]string{{"qcow2", disk, "16M"}, {"raw", dummy, "1M"}} {
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", img[0], img[1], img[2]).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
	}
	workload := "i=0; D=; while [ -z \"$D\" ]; do for v in vda vdb; do [ \"$(cat /sys/block/$v/size 2>/dev/null)\" = 32768 ] && D=/dev/$v; done; i=$((i+1)); [ $i -gt 1000 ] && fail no d0; usleep 10000; done\n" +
		strings.ReplaceAll(guesttest.RecordsWorkload(1, size/guesttest.RecordSize-1), "/dev/vda", "$D")
	g := guesttest.Start(t, guesttest.Options{Disk: dummy, Format: "raw", Workload: workload,
		QEMUArgs: []string{"-blockdev", "node-name=d0,driver=qcow2,file.driver=file,file.filename=" + disk,
			"-device", "virtio-blk-pci,drive=d0",
			"-qmp", "unix:" + filepath.Join(qmpDir, "vm1.qmp") + ",server=on,wait=off"}})
	if err := g.WaitAck(5, time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	m, err := qmp.Dial(ctx, g.Socket)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	stateDir := t.TempDir()
	a := startQEMUAgent(t, qmpDir, work, stateDir)
	h := a.protect(t, "", disk, size)
	h.replicate(t, "p1")
	a.d.Close() // the agent processes take the monitor now

	if err := g.WaitAck(g.LastAck()+5, time.Minute); err != nil {
		t.Fatal(err)
	}
	ackedBeforeKilled := g.LastAck()
	killed := startChildCycle(t, h, qmpDir, work, stateDir, "p2", 3*time.Second)
	killed.waitReading(t)
	if err := g.WaitAck(g.LastAck()+3, time.Minute); err != nil { // writes during the killed cycle
		t.Fatal(err)
	}
	killed.kill(t)
	assertCaptureLeft(t, m, work)
	if err := g.WaitAck(g.LastAck()+3, time.Minute); err != nil {
		t.Fatal(err)
	}

	ackedBefore := g.LastAck()
	res := startChildCycle(t, h, qmpDir, work, stateDir, "p3", 0).wait(t)
	recs, err := guesttest.CheckPrefix(guesttest.Records(h.readPoint(t, "p3")), ackedBefore)
	if err != nil {
		t.Fatalf("point p3 (acked %d before the killed cycle, %d before this one, %d now): %v", ackedBeforeKilled, ackedBefore, g.LastAck(), err)
	}
	if recs < ackedBeforeKilled || recs > g.LastAck()+1 {
		t.Fatalf("point p3 holds records 1..%d: acked %d before the killed cycle, %d now", recs, ackedBeforeKilled, g.LastAck())
	}
	t.Logf("point p3: records 1..%d, acked %d before the killed cycle, %d before p3; %d bytes sent", recs, ackedBeforeKilled, ackedBefore, res.BytesSent)
	assertNoCaptureLeftovers(t, m, work, "d0")
	select {
	case <-g.Exited():
		t.Fatal("the guest stopped during the cycles")
	default:
	}
}

// smallFilesystem mounts a tmpfs of size (mount's notation) on a fresh
// directory: a target that fills up. It needs root; without, the test
// skips, unless LIFEBOAT_REQUIRE_XFS says these tests must run (CI).
func smallFilesystem(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("LIFEBOAT_REQUIRE_XFS") != "" {
			t.Fatal("mounting a small filesystem needs root, and LIFEBOAT_REQUIRE_XFS says these tests must run")
		}
		t.Skip("mounting a small filesystem needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}
