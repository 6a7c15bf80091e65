package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/guesttest"
	"github.com/lifeboat-dr/lifeboat/agent/qga"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// agentGuest is a real guest writing records on d0, a qcow2 disk with a
// node name of its own (guesttest's -drive gets an automatic one, which
// no export id can be made of), seen by a Driver as VM vm1.
type agentGuest struct {
	*guesttest.Guest
	d      *Driver
	qmpDir string
	disk   string
	ref    driver.DiskRef
}

const guestDiskSize = 16 * MiB

func startAgentGuest(t *testing.T, agent bool) *agentGuest {
	t.Helper()
	qmpDir, err := os.MkdirTemp("", "lbqmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(qmpDir) })
	work, err := os.MkdirTemp("", "lbwk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	disk := filepath.Join(work, "d0.qcow2")
	dummy := filepath.Join(work, "dummy.raw")
	for _, img := range [][]string{{"qcow2", disk, fmt.Sprint(guestDiskSize)}, {"raw", dummy, "1M"}} {
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", img[0], img[1], img[2]).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
	}
	// d0 is the guest's disk of 16 MiB (32768 sectors), vda or vdb.
	workload := "i=0; D=; while [ -z \"$D\" ]; do for v in vda vdb; do [ \"$(cat /sys/block/$v/size 2>/dev/null)\" = 32768 ] && D=/dev/$v; done; i=$((i+1)); [ $i -gt 1000 ] && fail no d0; usleep 10000; done\n" +
		strings.ReplaceAll(guesttest.RecordsWorkload(1, guestDiskSize/guesttest.RecordSize-1), "/dev/vda", "$D")
	g := guesttest.Start(t, guesttest.Options{Disk: dummy, Format: "raw", Workload: workload, GuestAgent: agent,
		QEMUArgs: []string{"-blockdev", "node-name=d0,driver=qcow2,file.driver=file,file.filename=" + disk,
			"-device", "virtio-blk-pci,drive=d0",
			"-qmp", "unix:" + filepath.Join(qmpDir, "vm1.qmp") + ",server=on,wait=off"}})
	d := &Driver{QMPDir: qmpDir, WorkDir: work, StateDir: t.TempDir()}
	t.Cleanup(func() { d.Close() })
	ag := &agentGuest{Guest: g, d: d, qmpDir: qmpDir, disk: disk,
		ref: driver.DiskRef{ID: "d0", Path: disk, SizeBytes: guestDiskSize}}
	if agent {
		ag.waitAgent(t)
	}
	return ag
}

// waitAgent waits until the guest's agent answers (a moment after boot).
func (g *agentGuest) waitAgent(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := g.agent(t)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest agent does not answer: %v; serial:\n%s", err, g.Serial())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (g *agentGuest) agent(t *testing.T) (*qga.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := qga.Dial(ctx, g.GuestAgentSocket)
	if err == nil {
		if err = c.Ping(ctx); err != nil {
			c.Close()
		}
	}
	return c, err
}

func (g *agentGuest) freezeStatus(t *testing.T) string {
	t.Helper()
	c, err := g.agent(t)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.FSFreezeStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// freezeAsAnotherClient freezes the guest's filesystem through its
// guest agent on a connection of its own, then leaves.
func (g *agentGuest) freezeAsAnotherClient(t *testing.T) {
	t.Helper()
	c, err := g.agent(t)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if n, err := c.FSFreeze(ctx); err != nil || n != 1 {
		t.Fatalf("FSFreeze: %d %v", n, err)
	}
}

// agentThaw thaws the guest as another tool would.
func (g *agentGuest) agentThaw(t *testing.T) {
	t.Helper()
	c, err := g.agent(t)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.FSThaw(ctx); err != nil {
		t.Fatal(err)
	}
}

// agentProxy puts a socket at vm1.qga that forwards to the guest's agent
// and records what the driver sends it.
// With cutAtThaw, a thaw is not forwarded: the proxy ends its
// connection and its socket instead (an agent that went away).
type agentProxy struct {
	mu   sync.Mutex
	sent bytes.Buffer
}

func (g *agentGuest) proxy(t *testing.T) *agentProxy { return g.proxyCut(t, false) }

func (g *agentGuest) proxyCut(t *testing.T, cutAtThaw bool) *agentProxy {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(g.qmpDir, "vm1"+GuestAgentSuffix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &agentProxy{}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				up, err := net.Dial("unix", g.GuestAgentSocket)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(conn, up)
				buf := make([]byte, 4096)
				for {
					n, err := conn.Read(buf)
					if n > 0 {
						p.mu.Lock()
						p.sent.Write(buf[:n])
						p.mu.Unlock()
						if cutAtThaw && bytes.Contains(buf[:n], []byte("guest-fsfreeze-thaw")) {
							l.Close()
							return
						}
						up.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// commands lists the commands sent, in order.
func (p *agentProxy) commands() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, part := range strings.Split(p.sent.String(), `"execute":"`)[1:] {
		out = append(out, part[:strings.IndexByte(part, '"')])
	}
	return out
}

func readAllDisk(t *testing.T, c driver.Capture) []byte {
	t.Helper()
	src := c.Disks()[0].Source
	buf := make([]byte, src.Size)
	if _, err := src.Reader.ReadAt(buf, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return buf
}

func TestAnAppConsistentCaptureFreezesTheGuestForTheTransactionAndThawsItAtOnce(t *testing.T) {
	g := startAgentGuest(t, true)
	p := g.proxy(t)
	if err := g.WaitAck(5, time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	acked := g.LastAck()
	before := time.Now()
	c, err := g.d.Capture(ctx, driver.CaptureRequest{VMID: "vm1", Disks: []driver.DiskRef{g.ref}, AppConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	returned := time.Now()
	ackedAfter := g.LastAck()
	defer c.Release(false)
	if s := g.freezeStatus(t); s != qga.Thawed {
		t.Fatalf("the guest is %s when Capture returned", s)
	}
	cmds := strings.Join(p.commands(), " ")
	if !strings.Contains(cmds, "guest-fsfreeze-freeze guest-fsfreeze-thaw") {
		t.Fatalf("the driver sent the guest agent %q, want a freeze then a thaw", cmds)
	}
	m, err := guesttest.CheckPrefix(guesttest.Records(readAllDisk(t, c)), acked)
	if err != nil {
		t.Fatalf("acked %d before the capture: %v", acked, err)
	}
	if m > ackedAfter+1 {
		t.Fatalf("the point holds records 1..%d, but the guest had acknowledged %d when Capture returned", m, ackedAfter)
	}
	res := c.ReadDone()
	if res.Consistency != replica.ConsistencyApp || res.Method != driver.MethodFleece || res.Note != "" {
		t.Fatalf("result %+v, want app by fleece with no note", res)
	}
	if res.Time.Before(before) || res.Time.After(returned) {
		t.Fatalf("capture time %v, not between the call (%v) and its return (%v)", res.Time, before, returned)
	}
	if err := c.Release(true); err != nil {
		t.Fatal(err)
	}
	// The guest wrote on while and after it was read.
	if err := g.WaitAck(g.LastAck()+3, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("records 1..%d in the point, %d acknowledged before the capture", m, acked)
}

func TestAnAppConsistentRequestWithoutAGuestAgentGetsACrashPointThatSaysWhy(t *testing.T) {
	g := startAgentGuest(t, false)
	ctx := context.Background()
	capture := func(t *testing.T) (driver.Result, time.Duration) {
		t.Helper()
		start := time.Now()
		c, err := g.d.Capture(ctx, driver.CaptureRequest{VMID: "vm1", Disks: []driver.DiskRef{g.ref}, AppConsistent: true})
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		readAllDisk(t, c)
		res := c.ReadDone()
		if err := c.Release(true); err != nil {
			t.Fatal(err)
		}
		return res, took
	}
	t.Run("no socket", func(t *testing.T) {
		res, _ := capture(t)
		if res.Consistency != replica.ConsistencyCrash || !strings.Contains(res.Note, "no guest agent socket") || !strings.Contains(res.Note, "crash-consistent") {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("an agent that does not answer", func(t *testing.T) {
		// QEMU's socket of a guest whose agent is not running: it accepts,
		// and nothing answers.
		l, err := net.Listen("unix", filepath.Join(g.qmpDir, "vm1"+GuestAgentSuffix))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
			}
		}()
		res, took := capture(t)
		if res.Consistency != replica.ConsistencyCrash || !strings.Contains(res.Note, "did not answer") {
			t.Fatalf("result %+v", res)
		}
		if took > agentAnswerTimeout+10*time.Second {
			t.Fatalf("the capture waited %v for an agent that does not answer", took)
		}
	})
}

func TestAGuestLeftFrozenByAnAgentThatStoppedIsThawedWhenTheDriverConnects(t *testing.T) {
	g := startAgentGuest(t, true)
	if err := os.Symlink(g.GuestAgentSocket, filepath.Join(g.qmpDir, "vm1"+GuestAgentSuffix)); err != nil {
		t.Fatal(err)
	}
	// An agent froze the guest and died before its thaw: its marker says
	// the freeze was its own.
	g.d.markFrozen("vm1", true)
	g.freezeAsAnotherClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if s := g.freezeStatus(t); s != qga.Frozen {
		t.Fatalf("status %q after the freeze", s)
	}
	if err := g.d.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if s := g.freezeStatus(t); s != qga.Thawed {
		t.Fatalf("status %q after Recover, want thawed", s)
	}
	if _, err := os.Stat(g.d.frozenMarker("vm1")); err == nil {
		t.Fatal("the freeze marker is still there after the thaw")
	}
}

// A freeze that is not this agent's (no marker: an operator's, a backup
// tool's) is left to whoever made it.
func TestAGuestFrozenBySomeoneElseIsLeftFrozen(t *testing.T) {
	g := startAgentGuest(t, true)
	if err := os.Symlink(g.GuestAgentSocket, filepath.Join(g.qmpDir, "vm1"+GuestAgentSuffix)); err != nil {
		t.Fatal(err)
	}
	g.freezeAsAnotherClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := g.d.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if s := g.freezeStatus(t); s != qga.Frozen {
		t.Fatalf("status %q after Recover: another tool's freeze was thawed", s)
	}
	// And a capture asked to be app-consistent says why it is not.
	capt, err := g.d.Capture(ctx, driver.CaptureRequest{VMID: "vm1", Disks: []driver.DiskRef{g.ref}, AppConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	readAllDisk(t, capt)
	if res := capt.ReadDone(); res.Consistency != replica.ConsistencyCrash || !strings.Contains(res.Note, "did not freeze") {
		t.Fatalf("result %+v, want crash saying the freeze failed", res)
	}
	capt.Release(false)
	if s := g.freezeStatus(t); s != qga.Frozen {
		t.Fatalf("status %q after the capture: another tool's freeze was thawed", s)
	}
	g.agentThaw(t)
}

func TestShutdownThroughTheGuestAgentStopsTheGuestWithEveryAcknowledgedRecordOnItsDisk(t *testing.T) {
	g := startAgentGuest(t, true)
	p := g.proxy(t)
	if err := g.WaitAck(5, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := g.d.Shutdown(context.Background(), "vm1", time.Minute); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if cmds := p.commands(); !strings.Contains(strings.Join(cmds, " "), "guest-shutdown") {
		t.Fatalf("the driver sent the guest agent %q, no guest-shutdown", cmds)
	}
	// Its QEMU stays, in state shutdown (keepAfterPowerOff): the test
	// quits it to read the disk.
	if err := g.WaitLine(guesttest.DoneLine, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ps, err := g.d.PowerState(context.Background(), "vm1"); err != nil || ps != agentproto.PowerOff {
		t.Fatalf("PowerState after the shutdown: %q, %v", ps, err)
	}
	if err := g.Stop(time.Minute); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.Serial(), guesttest.DoneLine) {
		t.Fatalf("the guest did not stop cleanly; serial:\n%s", g.Serial())
	}
	recs := guesttest.Records(guesttest.ReadImage(t, g.disk, "qcow2"))
	if m, err := guesttest.CheckPrefix(recs, g.LastAck()); err != nil || m != g.LastAck() {
		t.Fatalf("records 1..%d (%v) on the disk, acknowledged %d", m, err, g.LastAck())
	}
}

func TestAGuestWhoseThawGotNoAnswerGetsACrashPointAndIsThawedOnceItsAgentAnswers(t *testing.T) {
	g := startAgentGuest(t, true)
	g.proxyCut(t, true)
	ctx := context.Background()
	c, err := g.d.Capture(ctx, driver.CaptureRequest{VMID: "vm1", Disks: []driver.DiskRef{g.ref}, AppConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	if s := g.freezeStatus(t); s != qga.Frozen {
		t.Fatalf("status %q: the thaw was not cut", s)
	}
	readAllDisk(t, c)
	// Whether the freeze held to the end is not known: not app.
	if res := c.ReadDone(); res.Consistency != replica.ConsistencyCrash || !strings.Contains(res.Note, "did not answer the thaw") {
		t.Fatalf("result %+v, want crash saying the thaw got no answer", res)
	}
	if err := c.Release(true); err != nil {
		t.Fatal(err)
	}
	// The agent is back: the driver, trying in the background, thaws it.
	if err := os.Symlink(g.GuestAgentSocket, filepath.Join(g.qmpDir, "vm1"+GuestAgentSuffix)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(4 * agentThawRetry)
	for g.freezeStatus(t) != qga.Thawed {
		if time.Now().After(deadline) {
			t.Fatalf("still frozen %v after the guest agent answers again", 4*agentThawRetry)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A freeze slower than the driver waits for (a guest flushing much data):
// the capture goes on crash-consistent at once, and the guest, frozen
// once its agent finishes the freeze, is thawed in the background. The
// fake agent does one command at a time, as qemu-ga behind its port does.
func TestAFreezeThatOutlastsItsTimeoutIsThawedWhenItCompletes(t *testing.T) {
	dir, err := os.MkdirTemp("", "lbqga")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "vm1"+GuestAgentSuffix))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var cur net.Conn
	frozen, thaws := false, 0
	lines := make(chan []byte, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			cur = c
			mu.Unlock()
			go func() {
				r := bufio.NewReader(c)
				for {
					b, err := r.ReadBytes('\n')
					if err != nil {
						return
					}
					lines <- b
				}
			}()
		}
	}()
	reply := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		cur.Write([]byte(s + "\n"))
	}
	go func() {
		for line := range lines {
			var req struct {
				Execute   string         `json:"execute"`
				Arguments map[string]any `json:"arguments"`
			}
			json.Unmarshal(bytes.TrimLeft(line, "\xff"), &req)
			switch req.Execute {
			case "guest-sync-delimited":
				b, _ := json.Marshal(map[string]any{"return": req.Arguments["id"]})
				reply("\xff" + string(b))
			case "guest-ping":
				reply(`{"return":{}}`)
			case "guest-fsfreeze-freeze":
				time.Sleep(agentFreezeTimeout + 8*time.Second) // longer than any thaw right after the timeout would wait
				mu.Lock()
				frozen = true
				mu.Unlock()
				reply(`{"return":1}`)
			case "guest-fsfreeze-status":
				mu.Lock()
				st := map[bool]string{true: "frozen", false: "thawed"}[frozen]
				mu.Unlock()
				reply(`{"return":"` + st + `"}`)
			case "guest-fsfreeze-thaw":
				mu.Lock()
				frozen = false
				thaws++
				mu.Unlock()
				reply(`{"return":1}`)
			}
		}
	}()
	d := &Driver{QMPDir: dir, StateDir: t.TempDir()}
	start := time.Now()
	q, note := d.quiesce(context.Background(), "vm1")
	if q != nil || !strings.Contains(note, "did not answer the freeze") {
		t.Fatalf("quiesce: %v, %q", q, note)
	}
	if took := time.Since(start); took > agentFreezeTimeout+agentAnswerTimeout+time.Second {
		t.Fatalf("the capture waited %v for the freeze", took)
	}
	deadline := time.Now().Add(8*time.Second + 3*agentThawRetry + agentThawTimeout)
	for {
		mu.Lock()
		f, n := frozen, thaws
		mu.Unlock()
		_, marked := os.Stat(d.frozenMarker("vm1"))
		if !f && n > 0 && marked != nil {
			return // frozen at the end of the freeze, thawed since, marker gone
		}
		if time.Now().After(deadline) {
			t.Fatalf("frozen %v %v after the freeze's start (marker: %v)", f, time.Since(start), marked == nil)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
