package nbd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// The server's side of the protocol (the NBD spec's proto.md): the fixed
// newstyle handshake with NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_EXPORT_NAME,
// NBD_OPT_LIST and NBD_OPT_ABORT; read-only exports answered with simple
// replies (no structured replies, so no block status either).
const (
	optExportName = 1
	optList       = 3
	optInfo       = 6

	repServer     = 2
	repErrUnsup   = 1<<31 | 1
	repErrInvalid = 1<<31 | 3
	repErrUnknown = 1<<31 | 6

	infoBlockSize = 3

	flagHasFlags     = 1 << 0
	flagReadOnly     = 1 << 1
	flagSendFlush    = 1 << 2
	flagCanMultiConn = 1 << 8

	cmdWrite = 1
	cmdFlush = 3

	errPerm  = 1
	errIO    = 5
	errInval = 22
)

// MaxPayload is the longest request the server accepts (its advertised
// maximum block size, QEMU's own limit); a longer read is refused with
// EINVAL.
const MaxPayload = 32 << 20

// Export is one disk the server serves read-only, under its name.
type Export struct {
	Name string
	Data io.ReaderAt // called from many goroutines at once
	Size int64
}

// ErrServerClosed is what Serve returns once Close was called.
var ErrServerClosed = errors.New("nbd: server closed")

// handshakeTimeout bounds the option haggling: a client that connects
// and says nothing does not hold a goroutine forever.
const handshakeTimeout = 30 * time.Second

// maxInFlight is how many reads of one connection run at once (QEMU's
// NBD client sends at most 16).
const maxInFlight = 16

// Server serves named read-only exports to NBD clients (QEMU, qemu-img,
// qemu-io, this package's Client). Requests of a connection are read in
// order and answered as their reads finish, in parallel; a read that
// fails becomes an EIO reply and a log line, never a broken connection.
type Server struct {
	log *slog.Logger

	mu        sync.Mutex
	exports   map[string]*Export
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// NewServer returns a server of the exports; log gets the read errors
// and refused clients (nil: slog.Default()).
func NewServer(log *slog.Logger, exports ...Export) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{log: log, exports: map[string]*Export{},
		listeners: map[net.Listener]struct{}{}, conns: map[*serverConn]struct{}{}}
	for _, e := range exports {
		if err := s.Add(e); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Add serves one more export.
func (s *Server) Add(e Export) error {
	if len(e.Name) > 4096 {
		return fmt.Errorf("nbd: export name of %d bytes (at most 4096)", len(e.Name))
	}
	if e.Data == nil || e.Size < 0 {
		return fmt.Errorf("nbd: export %q has no data", e.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.exports[e.Name]; ok {
		return fmt.Errorf("nbd: export %q is served already", e.Name)
	}
	s.exports[e.Name] = &e
	return nil
}

// Remove stops serving an export and ends the connections to it. It
// returns once no read of it runs any more, so its reader may be closed.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	delete(s.exports, name)
	var ended []*serverConn
	for c := range s.conns {
		if c.export != nil && c.export.Name == name {
			ended = append(ended, c)
		}
	}
	s.mu.Unlock()
	for _, c := range ended {
		c.conn.Close()
		<-c.done
	}
}

// Serve accepts connections on l until Close, and returns
// ErrServerClosed then (or the listener's error). l is closed on return.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		c := &serverConn{s: s, conn: conn, done: make(chan struct{})}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			close(c.done)
		}()
	}
}

// Close stops accepting, ends every connection and returns once no read
// runs any more (a read in flight is waited for: its reader's own
// timeouts bound it).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) lookup(name string) *Export {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exports[name]
}

func (s *Server) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.exports))
	for n := range s.exports {
		names = append(names, n)
	}
	return names
}

// serverConn is one client's connection.
type serverConn struct {
	s      *Server
	conn   net.Conn
	done   chan struct{}
	export *Export // set (under s.mu) when the handshake chose it

	writeMu sync.Mutex // replies are written whole, one at a time
}

func (c *serverConn) serve() {
	defer c.conn.Close()
	c.conn.SetDeadline(time.Now().Add(handshakeTimeout))
	e, err := c.handshake()
	if err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errAborted) {
			c.s.log.Warn("nbd: client refused", slog.String("remote", c.conn.RemoteAddr().String()), slog.Any("error", err))
		}
		return
	}
	c.conn.SetDeadline(time.Time{})
	c.s.mu.Lock()
	if c.s.exports[e.Name] != e {
		c.s.mu.Unlock()
		return // removed during the handshake
	}
	c.export = e
	c.s.mu.Unlock()
	c.transmit(e)
}
