package nbd_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/nbd"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
)

// listen serves the exports on a unix socket and returns its path; the
// server is closed when the test ends.
func listen(t *testing.T, exports ...nbd.Export) (*nbd.Server, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "lbnbds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s, err := nbd.NewServer(slog.New(slog.NewTextHandler(testWriter{t}, nil)), exports...)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; !errors.Is(err, nbd.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, sock
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func random(seed byte, n int) []byte {
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(data)
	return data
}

func uri(sock, export string) string {
	return "nbd+unix:///" + export + "?socket=" + sock
}

func TestQemuImgConvertsAnExportByteForByte(t *testing.T) {
	qemutest.Require(t, "qemu-img")
	data := random(1, 9<<20+512)
	_, sock := listen(t, nbd.Export{Name: "disk", Data: bytes.NewReader(data), Size: int64(len(data))},
		nbd.Export{Name: "other", Data: bytes.NewReader(nil), Size: 0})
	out := filepath.Join(t.TempDir(), "out.raw")
	if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", uri(sock, "disk"), out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("converted %d bytes, not equal to the %d served", len(got), len(data))
	}
	b, err := exec.Command("qemu-img", "info", "--output=json", "-f", "raw", uri(sock, "disk")).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info: %v: %s", err, b)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(b, &info); err != nil || info.VirtualSize != int64(len(data)) {
		t.Fatalf("qemu-img info: %v, virtual size %d, want %d: %s", err, info.VirtualSize, len(data), b)
	}
}

func TestQemuNbdListsTheExports(t *testing.T) {
	qemutest.Require(t, "qemu-nbd")
	_, sock := listen(t, nbd.Export{Name: "b-disk", Data: bytes.NewReader(make([]byte, 1<<20)), Size: 1 << 20},
		nbd.Export{Name: "a-disk", Data: bytes.NewReader(make([]byte, 4096)), Size: 4096})
	// --list uses NBD_OPT_LIST, then NBD_OPT_INFO on each export.
	b, err := exec.Command("qemu-nbd", "--list", "-k", sock).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-nbd --list: %v: %s", err, b)
	}
	out := string(b)
	for _, want := range []string{"exports available: 2", "export: 'a-disk'", "size:  4096", "export: 'b-disk'", "size:  1048576", "flags: 0x107 ( readonly flush multi )"} {
		if !strings.Contains(out, want) {
			t.Errorf("qemu-nbd --list says no %q:\n%s", want, out)
		}
	}
}

func TestQemuIoReadsPatternsAndIsRefusedWrites(t *testing.T) {
	qemutest.Require(t, "qemu-io")
	data := make([]byte, 4<<20)
	for i := 1 << 20; i < 1<<20+64<<10; i++ {
		data[i] = 0xab
	}
	_, sock := listen(t, nbd.Export{Name: "disk", Data: bytes.NewReader(data), Size: int64(len(data))})
	b, err := exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xab 1M 64k", "-c", "read -P 0 0 1M", uri(sock, "disk")).CombinedOutput()
	if err != nil || strings.Contains(string(b), "failed") {
		t.Fatalf("qemu-io read: %v: %s", err, b)
	}
	// qemu-io verifies patterns: a wrong one must fail, or the check above
	// proves nothing.
	b, _ = exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read -P 0xcd 1M 64k", uri(sock, "disk")).CombinedOutput()
	if !strings.Contains(string(b), "Pattern verification failed") {
		t.Fatalf("a wrong pattern was not noticed: %s", b)
	}
	// Opened for writing, QEMU sees the export is read-only (EPERM).
	b, err = exec.Command("qemu-io", "-f", "raw", "-c", "write 0 4k", uri(sock, "disk")).CombinedOutput()
	if err == nil || !strings.Contains(string(b), "Permission denied") {
		t.Fatalf("opening the export for writing: %v: %s", err, b)
	}
}

func TestClientReadsItsExportAndTheEnd(t *testing.T) {
	data := random(2, 5<<20+123) // not a multiple of 512
	_, sock := listen(t, nbd.Export{Name: "disk", Data: bytes.NewReader(data), Size: int64(len(data))})
	c, err := nbd.Dial(context.Background(), sock, "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != int64(len(data)) {
		t.Fatalf("size %d, want %d", c.Size(), len(data))
	}
	got, err := io.ReadAll(io.NewSectionReader(c, 0, c.Size()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("whole read: %v, equal %v", err, bytes.Equal(got, data))
	}
	buf := make([]byte, 1000)
	n, err := c.ReadAt(buf, int64(len(data))-10)
	if n != 10 || err != io.EOF || !bytes.Equal(buf[:10], data[len(data)-10:]) {
		t.Fatalf("read at the end: %d %v", n, err)
	}
	if _, err := nbd.Dial(context.Background(), sock, "nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("a missing export: %v", err)
	}
}

// failing fails reads that touch [bad, bad+4096).
type failing struct {
	data []byte
	bad  int64
}

func (f failing) ReadAt(p []byte, off int64) (int, error) {
	if off < f.bad+4096 && off+int64(len(p)) > f.bad {
		return 0, errors.New("storage account unreachable")
	}
	return copy(p, f.data[off:]), nil
}

func TestAReaderErrorIsAnIOErrorAndTheConnectionGoesOn(t *testing.T) {
	data := random(3, 1<<20)
	r := failing{data: data, bad: 512 << 10}
	_, sock := listen(t, nbd.Export{Name: "disk", Data: r, Size: int64(len(data))})
	c, err := nbd.Dial(context.Background(), sock, "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	if _, err := c.ReadAt(buf, 512<<10); err == nil || !strings.Contains(err.Error(), "error 5") {
		t.Fatalf("a failing read gave %v, want the server's error 5 (EIO)", err)
	}
	if _, err := c.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:len(buf)]) {
		t.Fatalf("the next read: %v", err)
	}

	qemutest.Require(t, "qemu-img")
	out := filepath.Join(t.TempDir(), "out.raw")
	b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", uri(sock, "disk"), out).CombinedOutput()
	if err == nil || !strings.Contains(string(b), "Input/output error") {
		t.Fatalf("qemu-img convert of a failing export: %v: %s", err, b)
	}
}

// slow counts how many reads run at once.
type slow struct {
	data           []byte
	delay          time.Duration
	now, maxAtOnce atomic.Int32
}

func (s *slow) ReadAt(p []byte, off int64) (int, error) {
	n := s.now.Add(1)
	defer s.now.Add(-1)
	for {
		m := s.maxAtOnce.Load()
		if n <= m || s.maxAtOnce.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(s.delay)
	return copy(p, s.data[off:]), nil
}

func TestReadsOfOneConnectionRunInParallel(t *testing.T) {
	qemutest.Require(t, "qemu-img")
	data := random(4, 8<<20)
	r := &slow{data: data, delay: 20 * time.Millisecond}
	_, sock := listen(t, nbd.Export{Name: "disk", Data: r, Size: int64(len(data))})
	out := filepath.Join(t.TempDir(), "out.raw")
	// -m 8: qemu-img keeps 8 requests in flight on its one connection;
	// -S 0 and 64 KiB buffers make many requests.
	b, err := exec.Command("qemu-img", "convert", "-m", "8", "-S", "0", "-f", "raw", "-O", "raw", uri(sock, "disk"), out).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, b)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatal("the parallel convert is not equal to the data")
	}
	if m := r.maxAtOnce.Load(); m < 2 {
		t.Fatalf("at most %d read ran at once: requests were not served in parallel", m)
	}
	t.Logf("at most %d reads at once", r.maxAtOnce.Load())
}

// rawConn speaks the protocol by hand, for what the clients never send.
type rawConn struct {
	t *testing.T
	net.Conn
}

func dialRaw(t *testing.T, sock, export string) *rawConn {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &rawConn{t: t, Conn: conn}
	hello := make([]byte, 18)
	c.full(hello)
	c.put(binary.BigEndian.AppendUint32(nil, 3)) // fixed newstyle, no zeroes
	// NBD_OPT_EXPORT_NAME: the old way, answered with size and flags.
	opt := binary.BigEndian.AppendUint64(nil, 0x49484156454f5054)
	opt = binary.BigEndian.AppendUint32(opt, 1)
	opt = binary.BigEndian.AppendUint32(opt, uint32(len(export)))
	c.put(append(opt, export...))
	ans := make([]byte, 10)
	c.full(ans)
	if flags := binary.BigEndian.Uint16(ans[8:]); flags&2 == 0 {
		t.Fatalf("transmission flags %#x: not read-only", flags)
	}
	return c
}

func (c *rawConn) put(b []byte) {
	if _, err := c.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) full(b []byte) {
	if _, err := io.ReadFull(c, b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) request(typ uint16, handle, off uint64, length uint32, payload []byte) {
	req := binary.BigEndian.AppendUint32(nil, 0x25609513)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, typ)
	req = binary.BigEndian.AppendUint64(req, handle)
	req = binary.BigEndian.AppendUint64(req, off)
	req = binary.BigEndian.AppendUint32(req, length)
	c.put(append(req, payload...))
}

// reply reads a simple reply and returns its errno.
func (c *rawConn) reply(handle uint64) uint32 {
	rep := make([]byte, 16)
	c.full(rep)
	if binary.BigEndian.Uint32(rep) != 0x67446698 || binary.BigEndian.Uint64(rep[8:]) != handle {
		c.t.Fatalf("reply %x, want handle %d", rep, handle)
	}
	return binary.BigEndian.Uint32(rep[4:])
}

func TestWritesAreRefusedWithEPERMAndReadsPastTheEndWithEINVAL(t *testing.T) {
	data := random(5, 64<<10)
	_, sock := listen(t, nbd.Export{Name: "disk", Data: bytes.NewReader(data), Size: int64(len(data))})
	c := dialRaw(t, sock, "disk")
	c.request(1, 1, 0, 4096, make([]byte, 4096)) // NBD_CMD_WRITE
	if errno := c.reply(1); errno != 1 {
		t.Fatalf("a write: errno %d, want EPERM (1)", errno)
	}
	c.request(0, 2, 60<<10, 8192, nil) // past the end
	if errno := c.reply(2); errno != 22 {
		t.Fatalf("a read past the end: errno %d, want EINVAL (22)", errno)
	}
	c.request(0, 3, 1<<62, 1<<31, nil) // offset+length beyond everything
	if errno := c.reply(3); errno != 22 {
		t.Fatalf("a huge read: errno %d, want EINVAL (22)", errno)
	}
	c.request(3, 4, 0, 0, nil) // NBD_CMD_FLUSH
	if errno := c.reply(4); errno != 0 {
		t.Fatalf("a flush: errno %d", errno)
	}
	// The write's payload was skipped: the connection still reads right.
	c.request(0, 5, 100, 1000, nil)
	if errno := c.reply(5); errno != 0 {
		t.Fatalf("a read after them: errno %d", errno)
	}
	got := make([]byte, 1000)
	c.full(got)
	if !bytes.Equal(got, data[100:1100]) {
		t.Fatal("the read after them returned other data")
	}
	c.request(2, 6, 0, 0, nil) // NBD_CMD_DISC: the server closes
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after NBD_CMD_DISC: %v, want EOF", err)
	}
}

// blocking holds reads until released.
type blocking struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blocking) ReadAt(p []byte, off int64) (int, error) {
	b.once.Do(func() { close(b.started) })
	<-b.release
	return len(p), nil
}

func TestCloseEndsConnectionsAfterTheReadsInFlight(t *testing.T) {
	r := &blocking{started: make(chan struct{}), release: make(chan struct{})}
	s, sock := listen(t, nbd.Export{Name: "disk", Data: r, Size: 1 << 20})
	c, err := nbd.Dial(context.Background(), sock, "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readErr := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(make([]byte, 4096), 0)
		readErr <- err
	}()
	<-r.started
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a read ran")
	case <-time.After(100 * time.Millisecond):
	}
	close(r.release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the read")
	}
	if err := <-readErr; err == nil {
		t.Fatal("the client's read succeeded on a closed server")
	}
	if _, err := nbd.Dial(context.Background(), sock, "disk"); err == nil {
		t.Fatal("a closed server accepted a connection")
	}
}

func TestRemoveEndsTheConnectionsToThatExportOnly(t *testing.T) {
	data := random(6, 1<<20)
	s, sock := listen(t, nbd.Export{Name: "a", Data: bytes.NewReader(data), Size: int64(len(data))},
		nbd.Export{Name: "b", Data: bytes.NewReader(data), Size: int64(len(data))})
	a, err := nbd.Dial(context.Background(), sock, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := nbd.Dial(context.Background(), sock, "b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s.Remove("a")
	buf := make([]byte, 4096)
	if _, err := a.ReadAt(buf, 0); err == nil {
		t.Fatal("a read of a removed export succeeded")
	}
	if _, err := b.ReadAt(buf, 0); err != nil {
		t.Fatalf("the other export: %v", err)
	}
	if _, err := nbd.Dial(context.Background(), sock, "a"); err == nil {
		t.Fatal("a removed export was opened")
	}
}
