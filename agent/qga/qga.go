// Package qga is a small client of qemu-guest-agent, the agent in a QEMU
// guest that the host reaches through a virtio-serial port (on the host,
// a unix socket of QEMU's chardev). Its protocol is QMP's JSON without a
// greeting or ids: one command at a time, each answered in order.
//
// The stream outlives a client: what an earlier client left unread, or
// half a command it wrote, is still in the port's buffers. So Dial first
// sends 0xFF (the agent's parser drops what it had read) and
// guest-sync-delimited with a random id, and skips everything up to the
// agent's 0xFF sentinel and the answer that echoes the id, as libvirt
// does. A call that times out leaves the stream out of step: the Client
// closes, and the next operation dials again.
package qga

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Error is the guest agent's answer to a command that failed.
type Error struct {
	Command string // the command that failed
	Class   string // the agent's error class (GenericError, CommandNotFound, ...)
	Desc    string // its description
}

func (e *Error) Error() string {
	return fmt.Sprintf("guest agent %s: %s: %s", e.Command, e.Class, e.Desc)
}

// ErrClosed is returned by calls on a client that was closed, or whose
// connection ended or fell out of step (a call timed out).
var ErrClosed = errors.New("guest agent connection closed")

// Freeze states FSFreezeStatus reports.
const (
	Thawed = "thawed"
	Frozen = "frozen"
)

// sentinel is the byte guest-sync-delimited puts before its answer, and
// that resets the agent's parser when sent to it.
const sentinel = 0xFF

// Client is one connection to a guest agent. Its calls may come from
// many goroutines; they run one at a time.
type Client struct {
	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	closed bool
}

// Dial connects to the guest agent at the unix socket path and brings
// the stream in step (guest-sync-delimited), within ctx. QEMU's socket
// accepts a connection while no agent runs in the guest, or while
// another client holds it: then the sync is what does not answer.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("guest agent: connect %s: %w", path, err)
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	if err := c.sync(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("guest agent %s: %w", path, err)
	}
	return c, nil
}

// Close ends the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.conn.Close()
}

// bound applies ctx to the connection until the returned stop: its
// deadline, and its cancellation (which unblocks a read at once).
func (c *Client) bound(ctx context.Context) (stop func() bool) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Time{}
	}
	c.conn.SetDeadline(dl)
	return context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
}

// fail closes the connection after an I/O error, whose cause it returns
// in words: the context's, when it ended the call.
func (c *Client) fail(ctx context.Context, what string, err error) error {
	c.closed = true
	c.conn.Close()
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = ctxErr
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		err = context.DeadlineExceeded
	}
	return fmt.Errorf("%s: %w", what, err)
}

type request struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
}

type response struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

func (c *Client) sync(ctx context.Context) error {
	defer c.bound(ctx)()
	var b [8]byte
	rand.Read(b[:])
	id := int64(binary.LittleEndian.Uint64(b[:]) >> 12) // within a JSON number's exact integers
	req, _ := json.Marshal(request{Execute: "guest-sync-delimited", Arguments: map[string]int64{"id": id}})
	if _, err := c.conn.Write(append(append([]byte{sentinel}, req...), '\n')); err != nil {
		return c.fail(ctx, "guest-sync-delimited", err)
	}
	for {
		// Whatever comes before the sentinel is left from earlier.
		if _, err := c.r.ReadBytes(sentinel); err != nil {
			return c.fail(ctx, "guest-sync-delimited: no answer", err)
		}
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return c.fail(ctx, "guest-sync-delimited: no answer", err)
		}
		// The sentinel may start a stale answer of an earlier client's
		// sync; only ours echoes our id.
		var resp struct {
			Return *int64 `json:"return"`
		}
		if json.Unmarshal(bytes.TrimLeft(line, "\xff"), &resp) == nil && resp.Return != nil && *resp.Return == id {
			return nil
		}
	}
}

// call runs a command and decodes its answer's return into out (when
// not nil).
func (c *Client) call(ctx context.Context, cmd string, args, out any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("guest agent %s: %w", cmd, ErrClosed)
	}
	defer c.bound(ctx)()
	req, err := json.Marshal(request{Execute: cmd, Arguments: args})
	if err != nil {
		return err
	}
	if _, err := c.conn.Write(append(req, '\n')); err != nil {
		return c.fail(ctx, "guest agent "+cmd, err)
	}
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return &noAnswer{c.fail(ctx, "guest agent "+cmd+": no answer", err)}
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return c.fail(ctx, "guest agent "+cmd, fmt.Errorf("unreadable answer %q: %w", line, err))
	}
	if resp.Error != nil {
		return &Error{Command: cmd, Class: resp.Error.Class, Desc: resp.Error.Desc}
	}
	if out != nil {
		if err := json.Unmarshal(resp.Return, out); err != nil {
			return fmt.Errorf("guest agent %s: unexpected answer %s: %w", cmd, resp.Return, err)
		}
	}
	return nil
}

// noAnswer is a call's error when the command was sent and no answer
// came.
type noAnswer struct{ err error }

func (e *noAnswer) Error() string { return e.err.Error() }
func (e *noAnswer) Unwrap() error { return e.err }

// Ping checks that the agent answers.
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, "guest-ping", nil, nil)
}

// FSFreeze freezes the guest's filesystems (guest-fsfreeze-freeze): each
// is flushed and holds its writes until FSThaw. It returns how many were
// frozen; zero is no error (a guest with no filesystem qemu-ga freezes),
// and the agent counts itself frozen then too. On failure the agent
// thaws what it froze.
func (c *Client) FSFreeze(ctx context.Context) (int, error) {
	var n int
	err := c.call(ctx, "guest-fsfreeze-freeze", nil, &n)
	return n, err
}

// FSThaw thaws the filesystems and returns how many were thawed.
func (c *Client) FSThaw(ctx context.Context) (int, error) {
	var n int
	err := c.call(ctx, "guest-fsfreeze-thaw", nil, &n)
	return n, err
}

// FSFreezeStatus is Thawed or Frozen, as the agent counts it.
func (c *Client) FSFreezeStatus(ctx context.Context) (string, error) {
	var s string
	err := c.call(ctx, "guest-fsfreeze-status", nil, &s)
	return s, err
}

// Shutdown asks the guest to power off (guest-shutdown, mode powerdown).
// The agent does not answer one that worked: a connection that ends, or
// no answer within ctx, after the command was sent, is success, and the
// client is closed. An error answer (the guest's shutdown program failed)
// is an *Error.
func (c *Client) Shutdown(ctx context.Context) error {
	err := c.call(ctx, "guest-shutdown", map[string]string{"mode": "powerdown"}, nil)
	var sent *noAnswer
	if errors.As(err, &sent) {
		return nil
	}
	return err
}
