package qemu

import (
	"bytes"
	"context"
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
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/nbd"
)

// hyLatent is a recovery point's disk on slow storage: every read waits.
type hyLatent struct {
	r     io.ReaderAt
	delay time.Duration
}

func (l hyLatent) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(l.delay)
	return l.r.ReadAt(p, off)
}

// hyPoint is a recovery point's disk served as the NBD export "point"
// through a reader that waits delay per read, on a socket in dir. Stop
// and start stand for the recovery host's agent going and coming back.
type hyPoint struct {
	t     *testing.T
	file  *os.File
	size  int64
	delay time.Duration
	sock  string
	s     *nbd.Server
}

func hyServe(t *testing.T, dir, file string, delay time.Duration) *hyPoint {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	p := &hyPoint{t: t, file: f, size: st.Size(), delay: delay, sock: filepath.Join(dir, "point.sock")}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *hyPoint) start() {
	p.t.Helper()
	s, err := nbd.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)),
		nbd.Export{Name: "point", Data: hyLatent{r: p.file, delay: p.delay}, Size: p.size})
	if err != nil {
		p.t.Fatal(err)
	}
	os.Remove(p.sock)
	l, err := net.Listen("unix", p.sock)
	if err != nil {
		p.t.Fatal(err)
	}
	go s.Serve(l)
	p.s = s
}

func (p *hyPoint) stop() { p.s.Close() }

// hyOverlay creates a qcow2 overlay in dir whose backing is the export.
func hyOverlay(t *testing.T, dir string, p *hyPoint, reconnect time.Duration) string {
	t.Helper()
	path := filepath.Join(dir, "overlay.qcow2")
	if err := CreateOverlay(context.Background(), path, NBDBacking(p.sock, "point", reconnect)); err != nil {
		t.Fatal(err)
	}
	return path
}

// hyImage writes a sparse raw image of size bytes with random runs
// spread over it, and returns them.
func hyImage(t *testing.T, path string, size int64, seed byte) []byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	run := make([]byte, 64*KiB)
	rand.NewChaCha8([32]byte{seed}).Read(run)
	for off := int64(0); off+int64(len(run)) <= size; off += size / 16 {
		if _, err := f.WriteAt(run, off+4*KiB); err != nil {
			t.Fatal(err)
		}
	}
	return run
}

// hyEqualFiles compares two files chunk by chunk, naming the first byte
// that differs.
func hyEqualFiles(t *testing.T, got, want string) {
	t.Helper()
	a, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ab, bb := make([]byte, 4*MiB), make([]byte, 4*MiB)
	for off := int64(0); ; off += int64(len(ab)) {
		n, errA := io.ReadFull(a, ab)
		m, errB := io.ReadFull(b, bb)
		if n != m || !bytes.Equal(ab[:n], bb[:m]) {
			for i := 0; i < min(n, m); i++ {
				if ab[i] != bb[i] {
					t.Fatalf("%s differs from %s at byte %d", got, want, off+int64(i))
				}
			}
			t.Fatalf("%s has %d bytes, %s %d", got, off+int64(n), want, off+int64(m))
		}
		if errA != nil || errB != nil {
			return
		}
	}
}

// hyConvert converts a qcow2 image (QEMU gone) to raw and returns its path.
func hyConvert(t *testing.T, path string) string {
	t.Helper()
	raw := path + ".raw"
	if out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	return raw
}

// hyBacking is the backing file qemu-img info sees in an image.
func hyBacking(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-U", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "backing file: "); ok {
			return v
		}
	}
	return ""
}

// hyVM is a VM (not running its guest) with the overlay as a virtio disk.
func hyVM(t *testing.T, overlay string) (*testVM, string) {
	t.Helper()
	vm := startVM(t)
	vm.exec(t, "blockdev-add", map[string]any{"node-name": "disk0", "driver": "qcow2",
		"file": map[string]any{"driver": "file", "filename": overlay}})
	vm.exec(t, "device_add", map[string]any{"driver": "virtio-blk-pci", "drive": "disk0", "id": "dev-disk0"})
	return vm, "disk0"
}

func TestACancelledHydrationKeepsItsBackingAndHydratingAgainAfterAnAgentRestartCompletesIt(t *testing.T) {
	dir := t.TempDir()
	point := filepath.Join(dir, "point.raw")
	hyImage(t, point, 256*MiB, 1)
	p := hyServe(t, dir, point, 5*time.Millisecond)
	overlay := hyOverlay(t, dir, p, 0)
	vm, node := hyVM(t, overlay)
	ctx := context.Background()

	h, err := Hydrate(ctx, vm.m, node, HydrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h.JobID != HydratePrefix+node {
		t.Fatalf("job id %q", h.JobID)
	}
	// Cancel once it copied something.
	var seen []HydrateProgress
	waitCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- h.Wait(waitCtx, 20*time.Millisecond, func(p HydrateProgress) {
			seen = append(seen, p)
			if p.Done > 8*MiB {
				stop()
			}
		})
	}()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the wait: %v", err)
	}
	last := seen[len(seen)-1]
	if last.Total != 256*MiB || last.Done <= 8*MiB || last.Done >= last.Total {
		t.Fatalf("progress %+v", last)
	}
	// An ended wait did not stop the job.
	if _, running, err := h.Progress(ctx); err != nil || !running {
		t.Fatalf("the job after its wait ended: running %v, %v", running, err)
	}
	cancelled := make(chan error, 1)
	go func() { cancelled <- h.Wait(ctx, time.Second, nil) }()
	time.Sleep(50 * time.Millisecond)
	if err := h.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-cancelled; !errors.Is(err, ErrHydrationCancelled) {
		t.Fatalf("Wait after Cancel: %v", err)
	}
	if b, err := Backing(ctx, vm.m, node); err != nil || !strings.Contains(b, p.sock) {
		t.Fatalf("backing after the cancel: %q, %v", b, err)
	}

	// The agent restarts: a new monitor, a new job that goes on from the
	// overlay's copied blocks; its wait is attached from the job's id.
	vm.m.Close()
	vm.dial(t)
	if _, err := Hydrate(ctx, vm.m, node, HydrateOptions{}); err != nil {
		t.Fatal(err)
	}
	vm.m.Close()
	vm.dial(t)
	var final HydrateProgress
	start := time.Now()
	if err := AttachHydration(vm.m, node, "").Wait(ctx, 100*time.Millisecond, func(p HydrateProgress) { final = p }); err != nil {
		t.Fatal(err)
	}
	t.Logf("hydrated 256 MiB at 5 ms a read in %v (last progress %+v)", time.Since(start), final)
	if b, err := Backing(ctx, vm.m, node); err != nil || b != "" {
		t.Fatalf("backing after hydration: %q, %v", b, err)
	}
	// A wait on a job that ended while no one watched: hydrated.
	if err := AttachHydration(vm.m, node, "").Wait(ctx, time.Second, nil); err != nil {
		t.Fatalf("a late wait: %v", err)
	}
	if _, err := Hydrate(ctx, vm.m, node, HydrateOptions{}); err == nil || !strings.Contains(err.Error(), "no backing") {
		t.Fatalf("hydrating a hydrated disk: %v", err)
	}
	// SIGKILL: what was copied must be stable once Wait returned.
	vm.Kill()
	if b := hyBacking(t, overlay); b != "" {
		t.Fatalf("qemu-img info: backing file %q after hydration", b)
	}
	hyEqualFiles(t, hyConvert(t, overlay), point)
}

// hyWaitUntil waits for the hydration, calling at once it passed after bytes.
func hyWaitUntil(h *Hydration, after int64, at func()) <-chan error {
	waited := make(chan error, 1)
	var once sync.Once
	go func() {
		waited <- h.Wait(context.Background(), 20*time.Millisecond, func(p HydrateProgress) {
			if p.Done > after {
				once.Do(at)
			}
		})
	}()
	return waited
}

func TestAHydrationWhoseNBDServerStaysGoneFailsClearlyTheVMRunsOnAndHydratingAgainCompletes(t *testing.T) {
	dir := t.TempDir()
	point := filepath.Join(dir, "point.raw")
	hyImage(t, point, 256*MiB, 2)
	p := hyServe(t, dir, point, 5*time.Millisecond)
	overlay := hyOverlay(t, dir, p, time.Second)
	vm, node := hyVM(t, overlay)
	vm.exec(t, "cont", nil)
	ctx := context.Background()

	h, err := Hydrate(ctx, vm.m, node, HydrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var err2 error
	select {
	case err2 = <-hyWaitUntil(h, 16*MiB, p.stop): // the agent is gone for good
	case <-time.After(60 * time.Second):
		t.Fatal("the hydration did not end in 60 s after its server went")
	}
	t.Logf("the job's error: %v", err2)
	if err2 == nil || errors.Is(err2, ErrHydrationCancelled) || !strings.Contains(err2.Error(), "failed: at byte") || !strings.Contains(err2.Error(), "Input/output error") ||
		!strings.Contains(err2.Error(), node) {
		t.Fatalf("Wait: %v, want the job's failure naming the node", err2)
	}
	// QEMU and the VM run on; the overlay keeps its backing.
	st, err := Status(ctx, vm.m)
	if err != nil || !st.Running {
		t.Fatalf("the VM after the failure: %+v, %v", st, err)
	}
	if b, err := Backing(ctx, vm.m, node); err != nil || b == "" {
		t.Fatalf("backing after the failure: %q, %v", b, err)
	}
	// The agent comes back: QEMU reconnects (its attempts back off up to
	// 16 s apart), and then a new job completes.
	p.start()
	back := time.Now()
	for attempt := 1; ; attempt++ {
		h, err = Hydrate(ctx, vm.m, node, HydrateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		err = h.Wait(ctx, 100*time.Millisecond, nil)
		if err == nil {
			t.Logf("hydrated at attempt %d, %v after the server came back", attempt, time.Since(back))
			break
		}
		if time.Since(back) > 60*time.Second {
			t.Fatalf("hydrating again after the server came back: %v", err)
		}
		time.Sleep(time.Second)
	}
	vm.Kill()
	if b := hyBacking(t, overlay); b != "" {
		t.Fatalf("qemu-img info: backing file %q after hydration", b)
	}
	hyEqualFiles(t, hyConvert(t, overlay), point)
}

func TestAHydrationOutlivesARestartOfItsNBDServerWithinTheReconnectDelay(t *testing.T) {
	dir := t.TempDir()
	point := filepath.Join(dir, "point.raw")
	hyImage(t, point, 128*MiB, 3)
	p := hyServe(t, dir, point, 5*time.Millisecond)
	overlay := hyOverlay(t, dir, p, 30*time.Second)
	vm, node := hyVM(t, overlay)
	vm.exec(t, "cont", nil)
	h, err := Hydrate(context.Background(), vm.m, node, HydrateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restarted := make(chan struct{})
	waited := hyWaitUntil(h, 16*MiB, func() {
		go func() {
			p.stop()
			time.Sleep(time.Second)
			p.start()
			close(restarted)
		}()
	})
	if err := <-waited; err != nil {
		t.Fatalf("the hydration across the server's restart: %v", err)
	}
	<-restarted
	vm.Kill()
	hyEqualFiles(t, hyConvert(t, overlay), point)
}
