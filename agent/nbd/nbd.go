// Package nbd speaks the NBD protocol's fixed newstyle handshake and
// simple replies, both ways. Client (this file) reads an export QEMU or
// qemu-nbd serves on a unix socket as an io.ReaderAt; its requests are
// serialized on the connection (one in flight). Server (server.go)
// serves io.ReaderAt exports read-only, such as a recovery point's disks
// to a QEMU that boots on them (instant failover).
//
// Neither negotiates structured replies, block status or writes.
package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	nbdMagic          = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic          = 0x49484156454f5054 // "IHAVEOPT"
	optReplyMagic     = 0x3e889045565a9
	requestMagic      = 0x25609513
	simpleReplyMagic  = 0x67446698
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1
	optGo             = 7
	optAbort          = 2
	repAck            = 1
	repInfo           = 3
	repFlagError      = 1 << 31
	infoExport        = 0
	cmdRead           = 0
	cmdDisc           = 2
)

// MaxRead is the longest read sent in one request (QEMU serves at most
// 32 MiB); longer ReadAt calls are split.
const MaxRead = 4 << 20

// Client is one connection to one export.
type Client struct {
	conn   net.Conn
	size   int64
	mu     sync.Mutex
	handle uint64
	err    error // the connection is broken
}

// Dial connects to the NBD server on the unix socket path and opens the
// named export.
func Dial(ctx context.Context, socket, export string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("nbd: connect %s: %w", socket, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	c := &Client{conn: conn}
	if err := c.handshake(export); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nbd: export %q at %s: %w", export, socket, err)
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

func (c *Client) handshake(export string) error {
	var hello struct {
		Magic, Opt uint64
		Flags      uint16
	}
	if err := binary.Read(c.conn, binary.BigEndian, &hello); err != nil {
		return fmt.Errorf("reading the greeting: %w", err)
	}
	if hello.Magic != nbdMagic || hello.Opt != optMagic || hello.Flags&flagFixedNewstyle == 0 {
		return errors.New("not a fixed-newstyle NBD server")
	}
	flags := uint32(flagFixedNewstyle)
	if hello.Flags&flagNoZeroes != 0 {
		flags |= flagNoZeroes
	}
	// NBD_OPT_GO: export name, no info requests (the server sends
	// NBD_INFO_EXPORT anyway).
	data := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	data = append(data, export...)
	data = binary.BigEndian.AppendUint16(data, 0)
	msg := binary.BigEndian.AppendUint32(nil, flags)
	msg = binary.BigEndian.AppendUint64(msg, optMagic)
	msg = binary.BigEndian.AppendUint32(msg, optGo)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(data)))
	msg = append(msg, data...)
	if _, err := c.conn.Write(msg); err != nil {
		return err
	}
	gotSize := false
	for {
		var rep struct {
			Magic     uint64
			Opt, Type uint32
			Len       uint32
		}
		if err := binary.Read(c.conn, binary.BigEndian, &rep); err != nil {
			return fmt.Errorf("reading the answer to NBD_OPT_GO: %w", err)
		}
		if rep.Magic != optReplyMagic || rep.Opt != optGo {
			return fmt.Errorf("unexpected option reply (magic %#x, option %d)", rep.Magic, rep.Opt)
		}
		if rep.Len > 64<<10 {
			return fmt.Errorf("option reply of %d bytes", rep.Len)
		}
		body := make([]byte, rep.Len)
		if _, err := io.ReadFull(c.conn, body); err != nil {
			return err
		}
		switch {
		case rep.Type&repFlagError != 0:
			return fmt.Errorf("the server refused it (error %#x): %s", rep.Type, body)
		case rep.Type == repInfo && len(body) >= 12 && binary.BigEndian.Uint16(body) == infoExport:
			c.size = int64(binary.BigEndian.Uint64(body[2:]))
			gotSize = true
		case rep.Type == repAck:
			if !gotSize {
				return errors.New("the server did not say the export's size")
			}
			return nil
		}
	}
}

// Size is the export's size in bytes.
func (c *Client) Size() int64 { return c.size }

// ReadAt reads len(p) bytes at off. It is safe for concurrent use.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("nbd: negative offset")
	}
	var eof error
	if off >= c.size {
		return 0, io.EOF
	}
	if off+int64(len(p)) > c.size {
		p = p[:c.size-off]
		eof = io.EOF
	}
	done := 0
	for done < len(p) {
		n := min(len(p)-done, MaxRead)
		if err := c.read(p[done:done+n], off+int64(done)); err != nil {
			return done, err
		}
		done += n
	}
	return done, eof
}

func (c *Client) read(p []byte, off int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	c.handle++
	req := binary.BigEndian.AppendUint32(nil, requestMagic)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, cmdRead)
	req = binary.BigEndian.AppendUint64(req, c.handle)
	req = binary.BigEndian.AppendUint64(req, uint64(off))
	req = binary.BigEndian.AppendUint32(req, uint32(len(p)))
	if _, err := c.conn.Write(req); err != nil {
		c.err = fmt.Errorf("nbd: read at %d: %w", off, err)
		return c.err
	}
	var rep struct {
		Magic, Errno uint32
		Handle       uint64
	}
	if err := binary.Read(c.conn, binary.BigEndian, &rep); err != nil {
		c.err = fmt.Errorf("nbd: read at %d: %w", off, err)
		return c.err
	}
	if rep.Magic != simpleReplyMagic || rep.Handle != c.handle {
		c.err = fmt.Errorf("nbd: read at %d: unexpected reply (magic %#x, handle %d)", off, rep.Magic, rep.Handle)
		return c.err
	}
	if rep.Errno != 0 {
		// A simple error reply carries no data: the connection goes on.
		return fmt.Errorf("nbd: read %d bytes at %d: the server's error %d", len(p), off, rep.Errno)
	}
	if _, err := io.ReadFull(c.conn, p); err != nil {
		c.err = fmt.Errorf("nbd: read at %d: %w", off, err)
		return c.err
	}
	return nil
}

// Close says goodbye (NBD_CMD_DISC) and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		req := binary.BigEndian.AppendUint32(nil, requestMagic)
		req = binary.BigEndian.AppendUint16(req, 0)
		req = binary.BigEndian.AppendUint16(req, cmdDisc)
		req = append(req, make([]byte, 20)...)
		c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		c.conn.Write(req)
		c.err = errors.New("nbd: closed")
	}
	return c.conn.Close()
}
