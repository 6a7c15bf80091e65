package nbd_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/nbd"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
)

// serve runs qemu-nbd on a raw file of data and returns its socket.
func serve(t *testing.T, data []byte, export string) string {
	t.Helper()
	qemutest.Require(t, "qemu-nbd")
	dir, err := os.MkdirTemp("", "lbnbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	img := filepath.Join(dir, "d.raw")
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nbd.sock")
	cmd := exec.Command("qemu-nbd", "--read-only", "--persistent", "-f", "raw", "-x", export, "-k", sock, img)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("qemu-nbd made no socket: %s", stderr.String())
	return ""
}

func TestReadsAnExportAsQemuNbdServesIt(t *testing.T) {
	data := make([]byte, 9<<20+512)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(data)
	sock := serve(t, data, "disk")
	c, err := nbd.Dial(context.Background(), sock, "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != int64(len(data)) {
		t.Fatalf("size %d, want %d", c.Size(), len(data))
	}
	// Whole, split over MaxRead, through io.SectionReader.
	got, err := io.ReadAll(io.NewSectionReader(c, 0, c.Size()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("whole read: %v, equal %v", err, bytes.Equal(got, data))
	}
	buf := make([]byte, 5000)
	n, err := c.ReadAt(buf, 12345)
	if n != len(buf) || err != nil || !bytes.Equal(buf, data[12345:12345+5000]) {
		t.Fatalf("read at 12345: %d %v", n, err)
	}
	// Past the end: short, io.EOF.
	n, err = c.ReadAt(buf, int64(len(data))-100)
	if n != 100 || err != io.EOF || !bytes.Equal(buf[:100], data[len(data)-100:]) {
		t.Fatalf("read at the end: %d %v", n, err)
	}
}

func TestAMissingExportIsRefusedWithItsName(t *testing.T) {
	sock := serve(t, make([]byte, 4096), "disk")
	_, err := nbd.Dial(context.Background(), sock, "nope")
	if err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("error %v", err)
	}
}

func TestConcurrentReadsGetTheirOwnData(t *testing.T) {
	data := make([]byte, 2<<20)
	rand.NewChaCha8([32]byte{2}).Read(data)
	sock := serve(t, data, "disk")
	c, err := nbd.Dial(context.Background(), sock, "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		go func() {
			buf := make([]byte, 64<<10)
			for off := int64(w) * 4096; off+int64(len(buf)) <= int64(len(data)); off += 8 * 4096 * 7 {
				if _, err := c.ReadAt(buf, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
					errs <- io.ErrUnexpectedEOF
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < 8; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
