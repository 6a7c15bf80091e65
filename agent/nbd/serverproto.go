package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
)

var errAborted = errors.New("nbd: the client aborted the handshake")

// handshake runs the fixed newstyle negotiation until the client chose an
// export (NBD_OPT_GO or NBD_OPT_EXPORT_NAME).
func (c *serverConn) handshake() (*Export, error) {
	hello := binary.BigEndian.AppendUint64(nil, nbdMagic)
	hello = binary.BigEndian.AppendUint64(hello, optMagic)
	hello = binary.BigEndian.AppendUint16(hello, flagFixedNewstyle|flagNoZeroes)
	if _, err := c.conn.Write(hello); err != nil {
		return nil, err
	}
	var clientFlags uint32
	if err := binary.Read(c.conn, binary.BigEndian, &clientFlags); err != nil {
		return nil, err
	}
	if clientFlags&^(flagFixedNewstyle|flagNoZeroes) != 0 || clientFlags&flagFixedNewstyle == 0 {
		return nil, fmt.Errorf("client flags %#x: not a fixed-newstyle client", clientFlags)
	}
	noZeroes := clientFlags&flagNoZeroes != 0
	for {
		var opt struct {
			Magic  uint64
			Option uint32
			Length uint32
		}
		if err := binary.Read(c.conn, binary.BigEndian, &opt); err != nil {
			return nil, err
		}
		if opt.Magic != optMagic {
			return nil, fmt.Errorf("option magic %#x", opt.Magic)
		}
		if opt.Length > 64<<10 {
			return nil, fmt.Errorf("option %d of %d bytes", opt.Option, opt.Length)
		}
		data := make([]byte, opt.Length)
		if _, err := io.ReadFull(c.conn, data); err != nil {
			return nil, err
		}
		switch opt.Option {
		case optExportName:
			// The old way: no reply on failure, the connection just ends.
			e := c.s.lookup(string(data))
			if e == nil {
				return nil, fmt.Errorf("NBD_OPT_EXPORT_NAME: no export %q", data)
			}
			rep := binary.BigEndian.AppendUint64(nil, uint64(e.Size))
			rep = binary.BigEndian.AppendUint16(rep, transmissionFlags)
			if !noZeroes {
				rep = append(rep, make([]byte, 124)...)
			}
			_, err := c.conn.Write(rep)
			return e, err
		case optAbort:
			c.optReply(opt.Option, repAck, nil)
			return nil, errAborted
		case optList:
			if len(data) != 0 {
				if err := c.optReply(opt.Option, repErrInvalid, []byte("NBD_OPT_LIST takes no data")); err != nil {
					return nil, err
				}
				continue
			}
			names := c.s.names()
			slices.Sort(names)
			for _, n := range names {
				b := binary.BigEndian.AppendUint32(nil, uint32(len(n)))
				if err := c.optReply(opt.Option, repServer, append(b, n...)); err != nil {
					return nil, err
				}
			}
			if err := c.optReply(opt.Option, repAck, nil); err != nil {
				return nil, err
			}
		case optInfo, optGo:
			e, err := c.info(opt.Option, data)
			if err != nil {
				return nil, err
			}
			if e != nil && opt.Option == optGo {
				return e, nil
			}
		default:
			// NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY, meta contexts, ...
			if err := c.optReply(opt.Option, repErrUnsup, nil); err != nil {
				return nil, err
			}
		}
	}
}

const transmissionFlags = flagHasFlags | flagReadOnly | flagSendFlush | flagCanMultiConn

// info answers NBD_OPT_INFO and NBD_OPT_GO: the export's size and flags
// and its block sizes, then an ack. It returns the export (nil when the
// request was refused, which the client may follow with another option).
func (c *serverConn) info(option uint32, data []byte) (*Export, error) {
	if len(data) < 6 {
		return nil, c.optReply(option, repErrInvalid, []byte("short request"))
	}
	nameLen := binary.BigEndian.Uint32(data)
	if uint64(nameLen)+6 > uint64(len(data)) {
		return nil, c.optReply(option, repErrInvalid, []byte("bad name length"))
	}
	name := string(data[4 : 4+nameLen])
	nInfo := binary.BigEndian.Uint16(data[4+nameLen:])
	if int(nameLen)+6+2*int(nInfo) != len(data) {
		return nil, c.optReply(option, repErrInvalid, []byte("bad information request count"))
	}
	e := c.s.lookup(name)
	if e == nil {
		return nil, c.optReply(option, repErrUnknown, fmt.Appendf(nil, "no export %q", name))
	}
	exp := binary.BigEndian.AppendUint16(nil, infoExport)
	exp = binary.BigEndian.AppendUint64(exp, uint64(e.Size))
	exp = binary.BigEndian.AppendUint16(exp, transmissionFlags)
	if err := c.optReply(option, repInfo, exp); err != nil {
		return nil, err
	}
	// Any alignment is served (a ReaderAt reads any range); 4 KiB is
	// what the replicas' blocks are made of.
	bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, 1)
	bs = binary.BigEndian.AppendUint32(bs, 4096)
	bs = binary.BigEndian.AppendUint32(bs, MaxPayload)
	if err := c.optReply(option, repInfo, bs); err != nil {
		return nil, err
	}
	return e, c.optReply(option, repAck, nil)
}

func (c *serverConn) optReply(option, typ uint32, data []byte) error {
	b := binary.BigEndian.AppendUint64(nil, optReplyMagic)
	b = binary.BigEndian.AppendUint32(b, option)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	_, err := c.conn.Write(append(b, data...))
	return err
}

type request struct {
	Magic  uint32
	Flags  uint16
	Type   uint16
	Handle uint64
	Offset uint64
	Length uint32
}

// transmit answers requests until the client disconnects or the
// connection is closed, then waits for the reads in flight.
func (c *serverConn) transmit(e *Export) {
	var inFlight sync.WaitGroup
	defer inFlight.Wait()
	slots := make(chan struct{}, maxInFlight)
	r := bufio.NewReaderSize(c.conn, 64<<10)
	for {
		var req request
		if err := binary.Read(r, binary.BigEndian, &req); err != nil {
			return
		}
		if req.Magic != requestMagic {
			c.s.log.Warn("nbd: bad request magic, closing the connection", slog.String("export", e.Name), slog.Uint64("magic", uint64(req.Magic)))
			return
		}
		switch req.Type {
		case cmdRead:
			if errno := check(e, req); errno != 0 {
				c.reply(req.Handle, errno, nil)
				continue
			}
			slots <- struct{}{}
			inFlight.Add(1)
			go func() {
				defer inFlight.Done()
				defer func() { <-slots }()
				c.read(e, req)
			}()
		case cmdDisc:
			return
		case cmdFlush:
			// Read-only: nothing to make stable.
			c.reply(req.Handle, 0, nil)
		case cmdWrite:
			// The payload follows the request; it must be read past to
			// find the next request.
			if req.Length > MaxPayload {
				c.s.log.Warn("nbd: a write too long to skip, closing the connection", slog.String("export", e.Name), slog.Uint64("length", uint64(req.Length)))
				return
			}
			if _, err := io.CopyN(io.Discard, r, int64(req.Length)); err != nil {
				return
			}
			c.reply(req.Handle, errPerm, nil)
		default:
			// Trim, write zeroes, cache, block status...: a read-only
			// export without them advertised.
			c.reply(req.Handle, errInval, nil)
		}
	}
}

// check says why a read cannot be served (an errno), or 0.
func check(e *Export, req request) uint32 {
	end := req.Offset + uint64(req.Length)
	if req.Length > MaxPayload || end < req.Offset || end > uint64(e.Size) {
		return errInval
	}
	return 0
}

// read serves one read: the data, or EIO when the export's reader fails
// (or panics).
func (c *serverConn) read(e *Export, req request) {
	buf := make([]byte, req.Length)
	err := readFull(e.Data, buf, int64(req.Offset))
	if err != nil {
		c.s.log.Error("nbd: read failed, the client gets EIO", slog.String("export", e.Name),
			slog.Uint64("offset", req.Offset), slog.Uint64("length", uint64(req.Length)), slog.Any("error", err))
		c.reply(req.Handle, errIO, nil)
		return
	}
	c.reply(req.Handle, 0, buf)
}

func readFull(r io.ReaderAt, buf []byte, off int64) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the reader panicked: %v", p)
		}
	}()
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil // io.EOF at the very end is no error
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d of %d bytes: %w", n, len(buf), err)
}

// reply writes a simple reply, with data after it for a read. An error
// writing ends the connection; the request loop then ends too.
func (c *serverConn) reply(handle uint64, errno uint32, data []byte) {
	h := binary.BigEndian.AppendUint32(make([]byte, 0, 16), simpleReplyMagic)
	h = binary.BigEndian.AppendUint32(h, errno)
	h = binary.BigEndian.AppendUint64(h, handle)
	bufs := net.Buffers{h, data}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if _, err := bufs.WriteTo(c.conn); err != nil {
		c.conn.Close() // a reply cut in half: nothing after it could be read
	}
}
