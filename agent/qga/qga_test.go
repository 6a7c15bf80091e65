package qga_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/internal/guesttest"
	"github.com/lifeboat-dr/lifeboat/agent/qga"
)

// dialAgent connects to a booting guest's agent, which answers a moment
// after /init started it.
func dialAgent(t *testing.T, g *guesttest.Guest) *qga.Client {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := qga.Dial(ctx, g.GuestAgentSocket)
		if err == nil {
			err = c.Ping(ctx)
		}
		cancel()
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if c != nil {
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest agent does not answer: %v; serial:\n%s", err, g.Serial())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func status(t *testing.T, c *qga.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.FSFreezeStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTheGuestsAgentFreezesItsFilesystemAndThawsIt(t *testing.T) {
	g := guesttest.Start(t, guesttest.Options{GuestAgent: true, Size: 4 << 20})
	c := dialAgent(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s := status(t, c); s != qga.Thawed {
		t.Fatalf("status before the freeze: %q", s)
	}
	// The guest mounts one filesystem qemu-ga freezes (guesttest.FreezeMount).
	if n, err := c.FSFreeze(ctx); err != nil || n != 1 {
		t.Fatalf("FSFreeze: %d, %v", n, err)
	}
	if s := status(t, c); s != qga.Frozen {
		t.Fatalf("status after the freeze: %q", s)
	}
	// A frozen agent refuses what could write in the guest.
	var agentErr *qga.Error
	if _, err := c.FSFreeze(ctx); !errors.As(err, &agentErr) || agentErr.Class == "" || agentErr.Desc == "" {
		t.Fatalf("a second freeze: %v, want the agent's error", err)
	}
	if n, err := c.FSThaw(ctx); err != nil || n != 1 {
		t.Fatalf("FSThaw: %d, %v", n, err)
	}
	if s := status(t, c); s != qga.Thawed {
		t.Fatalf("status after the thaw: %q", s)
	}
}

func TestANewClientIsInStepWhatEverADeadClientLeftBehind(t *testing.T) {
	g := guesttest.Start(t, guesttest.Options{GuestAgent: true, Size: 4 << 20})
	dialAgent(t, g).Close()
	// A client that asked for answers it never read, then died halfway
	// through writing a command.
	conn, err := net.Dial("unix", g.GuestAgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, `{"execute":"guest-info"}`+"\n"+`{"execute":"guest-sync-delimited","arguments":{"id":7}}`+"\n"+`{"execute":"guest-ping"}`+"\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 100) // part of guest-info's long answer
	if _, err := conn.Read(buf); err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, `{"execute":"guest-fsfreeze-freeze"`)
	conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := qga.Dial(ctx, g.GuestAgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		if s := status(t, c); s != qga.Thawed {
			t.Fatalf("status %d: %q: the half command froze the guest, or an old answer was read", i, s)
		}
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestShutdownThroughTheGuestAgentPowersTheGuestOff(t *testing.T) {
	g := guesttest.Start(t, guesttest.Options{GuestAgent: true, Size: 4 << 20})
	if err := g.WaitAck(3, time.Minute); err != nil {
		t.Fatal(err)
	}
	c := dialAgent(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := g.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.Serial(), guesttest.DoneLine) {
		t.Fatalf("the guest did not stop cleanly; serial:\n%s", g.Serial())
	}
	recs := guesttest.Records(g.ReadDisk(t))
	if m, err := guesttest.CheckPrefix(recs, g.LastAck()); err != nil || m != g.LastAck() {
		t.Fatalf("records 1..%d (%v), acknowledged %d", m, err, g.LastAck())
	}
}

// fakeAgent serves one connection at a unix socket: it checks the
// client's sync, writes stale before its answer, then answers each
// command with answer(command).
func fakeAgent(t *testing.T, stale string, answer func(cmd string) string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lbqga")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "qga.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		if b, err := r.ReadByte(); err != nil || b != 0xFF {
			t.Errorf("the client did not start with 0xFF: %x %v", b, err)
			return
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var req struct {
				Execute   string `json:"execute"`
				Arguments struct {
					ID int64 `json:"id"`
				} `json:"arguments"`
			}
			if err := json.Unmarshal(line, &req); err != nil {
				t.Errorf("unreadable request %q", line)
				return
			}
			if req.Execute == "guest-sync-delimited" {
				fmt.Fprintf(conn, "%s\xff{\"return\": %d}\n", stale, req.Arguments.ID)
				continue
			}
			if a := answer(req.Execute); a != "" {
				fmt.Fprint(conn, a+"\n")
			}
		}
	}()
	return path
}

func TestDialSkipsStaleAnswersUpToItsOwnSync(t *testing.T) {
	// A half answer, a whole one, an earlier client's sync (another id),
	// each before the answer to this client's sync.
	stale := `{"return": {"version": "7.2` + "\n" + `{"return": "frozen"}` + "\n" + "\xff" + `{"return": 99}` + "\n" + `{"retu`
	path := fakeAgent(t, stale, func(cmd string) string {
		switch cmd {
		case "guest-fsfreeze-status":
			return `{"return": "thawed"}`
		case "guest-fsfreeze-freeze":
			return `{"error": {"class": "GenericError", "desc": "failed to freeze /mnt: Device or resource busy"}}`
		case "guest-shutdown":
			return "" // no answer to a shutdown that worked
		}
		return `{"return": {}}`
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := qga.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s, err := c.FSFreezeStatus(ctx); err != nil || s != qga.Thawed {
		t.Fatalf("status %q, %v: a stale answer was read", s, err)
	}
	var agentErr *qga.Error
	if _, err := c.FSFreeze(ctx); !errors.As(err, &agentErr) || agentErr.Class != "GenericError" || !strings.Contains(agentErr.Desc, "busy") {
		t.Fatalf("FSFreeze: %v, want the agent's error", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if err := c.Shutdown(short); err != nil {
		t.Fatalf("a shutdown sent and not answered: %v", err)
	}
	if err := c.Ping(ctx); !errors.Is(err, qga.ErrClosed) {
		t.Fatalf("a call after a call without answer: %v, want ErrClosed", err)
	}
}

func TestACallWithNoAnswerEndsWithItsContext(t *testing.T) {
	path := fakeAgent(t, "", func(string) string { return "" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := qga.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	if _, err := c.FSFreeze(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("FSFreeze without an answer: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the call took %v, its context 300ms", took)
	}
	if err := c.Ping(ctx); !errors.Is(err, qga.ErrClosed) {
		t.Fatalf("a call after a timeout: %v, want ErrClosed", err)
	}
}
