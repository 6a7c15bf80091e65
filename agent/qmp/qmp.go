// Package qmp is a small client of the QEMU Machine Protocol: it connects
// to a VM's QMP monitor (a unix socket), negotiates capabilities, runs
// commands and delivers the asynchronous events QEMU sends.
//
// One Monitor may be used by many goroutines: commands carry an id and
// their answers are matched by it, so events and answers may interleave.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// Error is QEMU's answer to a command that failed.
type Error struct {
	Command string // the command that failed
	Class   string // QEMU's error class (GenericError, CommandNotFound, ...)
	Desc    string // QEMU's description
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// ErrClosed is returned by calls on a monitor whose connection ended.
var ErrClosed = errors.New("qmp: monitor connection closed")

// Event is an asynchronous message from QEMU.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
	Time time.Time       `json:"-"`
}

// Version is QEMU's version as its greeting tells it.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
}

// Monitor is one QMP connection.
type Monitor struct {
	conn    net.Conn
	version Version

	writeMu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan response
	subs    map[*subscription]struct{}
	err     error // set once the connection ended
	done    chan struct{}
}

type response struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID        json.RawMessage `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// Dial connects to the QMP monitor at the unix socket path and leaves
// capability negotiation mode, so that commands can run.
func Dial(ctx context.Context, path string) (*Monitor, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: connect %s: %w", path, err)
	}
	m, err := handshake(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: %s: %w", path, err)
	}
	return m, nil
}

func handshake(ctx context.Context, conn net.Conn) (*Monitor, error) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(dl)
	} else {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("reading the greeting: %w", err)
	}
	var greeting struct {
		QMP *struct {
			Version struct {
				QEMU struct {
					Major int `json:"major"`
					Minor int `json:"minor"`
					Micro int `json:"micro"`
				} `json:"qemu"`
				Package string `json:"package"`
			} `json:"version"`
		} `json:"QMP"`
	}
	if err := json.Unmarshal(line, &greeting); err != nil || greeting.QMP == nil {
		return nil, fmt.Errorf("not a QMP greeting: %.200q", line)
	}
	conn.SetReadDeadline(time.Time{})
	v := greeting.QMP.Version
	m := &Monitor{
		conn:    conn,
		version: Version{Major: v.QEMU.Major, Minor: v.QEMU.Minor, Micro: v.QEMU.Micro, Package: v.Package},
		pending: map[string]chan response{},
		subs:    map[*subscription]struct{}{},
		done:    make(chan struct{}),
	}
	go m.read(r)
	if err := m.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Version is the connected QEMU's version.
func (m *Monitor) Version() Version { return m.version }

// Done is closed when the connection ends (QEMU quit, or Close).
func (m *Monitor) Done() <-chan struct{} { return m.done }

// Close ends the connection. Calls in flight fail with ErrClosed.
func (m *Monitor) Close() error {
	return m.conn.Close()
}

// read delivers answers to their callers and events to subscribers, until
// the connection ends.
func (m *Monitor) read(r *bufio.Reader) {
	var err error
	for {
		var line []byte
		line, err = r.ReadBytes('\n')
		if err != nil {
			break
		}
		var msg response
		if json.Unmarshal(line, &msg) != nil {
			continue // not ours to judge; QEMU sends one JSON object a line
		}
		if msg.Event != "" {
			ev := Event{Name: msg.Event, Data: msg.Data}
			if ts := msg.Timestamp; ts != nil {
				ev.Time = time.Unix(ts.Seconds, ts.Microseconds*1000)
			}
			m.mu.Lock()
			for s := range m.subs {
				s.push(ev)
			}
			m.mu.Unlock()
			continue
		}
		var id string
		if json.Unmarshal(msg.ID, &id) != nil {
			continue // an answer we did not ask for
		}
		m.mu.Lock()
		ch := m.pending[id]
		delete(m.pending, id)
		m.mu.Unlock()
		if ch != nil {
			ch <- msg
		}
	}
	m.conn.Close()
	m.mu.Lock()
	m.err = fmt.Errorf("%w: %v", ErrClosed, err)
	for id, ch := range m.pending {
		close(ch)
		delete(m.pending, id)
	}
	for s := range m.subs {
		s.end()
	}
	m.subs = nil
	m.mu.Unlock()
	close(m.done)
}

// Execute runs a QMP command. args (nil for none) is marshalled as the
// command's arguments; the answer's "return" is unmarshalled into result
// unless it is nil. A command QEMU refused returns an *Error naming it.
//
// When ctx ends first, Execute returns ctx's error; the command may still
// run in QEMU, whose answer is then dropped.
func (m *Monitor) Execute(ctx context.Context, command string, args, result any) error {
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{Execute: command, Arguments: args}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	ch := make(chan response, 1)
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	m.nextID++
	req.ID = "lb-" + strconv.FormatUint(m.nextID, 10)
	m.pending[req.ID] = ch
	m.mu.Unlock()
	forget := func() {
		m.mu.Lock()
		delete(m.pending, req.ID)
		m.mu.Unlock()
	}

	b, err := json.Marshal(req)
	if err != nil {
		forget()
		return fmt.Errorf("qmp %s: arguments: %w", command, err)
	}
	m.writeMu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		m.conn.SetWriteDeadline(dl)
	} else {
		m.conn.SetWriteDeadline(time.Time{})
	}
	_, err = m.conn.Write(append(b, '\n'))
	m.writeMu.Unlock()
	if err != nil {
		forget()
		return fmt.Errorf("qmp %s: %w", command, err)
	}

	select {
	case <-ctx.Done():
		forget()
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	case resp, ok := <-ch:
		if !ok {
			m.mu.Lock()
			err := m.err
			m.mu.Unlock()
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		if resp.Error != nil {
			return &Error{Command: command, Class: resp.Error.Class, Desc: resp.Error.Desc}
		}
		if result != nil {
			if err := json.Unmarshal(resp.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decoding the answer: %w", command, err)
			}
		}
		return nil
	}
}

// Subscribe returns the events QEMU sends from now on, in order, and a
// function that stops them. Events are queued without bound until read,
// so a slow reader loses none; the channel closes when stop is called or
// the connection ends.
func (m *Monitor) Subscribe() (events <-chan Event, stop func()) {
	s := &subscription{out: make(chan Event), wake: make(chan struct{}, 1), quit: make(chan struct{})}
	m.mu.Lock()
	if m.subs == nil {
		m.mu.Unlock()
		close(s.out)
		return s.out, func() {}
	}
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	go s.run()
	var once sync.Once
	return s.out, func() {
		once.Do(func() {
			m.mu.Lock()
			if m.subs != nil {
				delete(m.subs, s)
			}
			m.mu.Unlock()
			s.close()
		})
	}
}

type subscription struct {
	mu      sync.Mutex
	queue   []Event
	closed  bool // no more events will be queued
	stopped bool
	wake    chan struct{}
	quit    chan struct{}
	out     chan Event
}

func (s *subscription) push(ev Event) {
	s.mu.Lock()
	if !s.closed {
		s.queue = append(s.queue, ev)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// end is the connection's end: the events queued are still delivered,
// then the channel closes.
func (s *subscription) end() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close is stop: queued events are dropped.
func (s *subscription) close() {
	s.mu.Lock()
	s.closed = true
	if !s.stopped {
		s.stopped = true
		close(s.quit)
	}
	s.mu.Unlock()
}

func (s *subscription) run() {
	defer close(s.out)
	for {
		s.mu.Lock()
		var ev Event
		have := len(s.queue) > 0
		if have {
			ev = s.queue[0]
			s.queue = s.queue[1:]
		}
		ended := s.closed
		s.mu.Unlock()
		if !have {
			if ended {
				return
			}
			select {
			case <-s.wake:
				continue
			case <-s.quit:
				return
			}
		}
		select {
		case s.out <- ev:
		case <-s.quit:
			return
		}
	}
}
