package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-dr/lifeboat/agent/nbd"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
)

// FleecePrefix starts the node names and job ids of fleecing overlays
// (node names are limited to 31 bytes), and OverlayPrefix their files.
const (
	FleecePrefix  = "lbfl-"
	OverlayPrefix = "lifeboat-fleece-"
	// SocketName is the NBD server's socket in a capture's directory.
	SocketName = "nbd.sock"
)

// freeSpace says how many bytes dir's filesystem has free (a test
// replaces it).
var freeSpace = func(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// checkRoom refuses fleecing when the overlays' filesystem could fill up
// during the read. On QEMU 7.2 a backup job's copy-before-write that
// cannot write its overlay fails the guest's write (the filter's
// on-cbw-error=break-snapshot is not reachable through blockdev-backup),
// so the overlays must have room for every disk rewritten in full.
func checkRoom(dir string, disks []Disk) error {
	var need int64
	for _, d := range disks {
		need += d.Size
	}
	free, err := freeSpace(dir)
	if err != nil {
		return fmt.Errorf("qemu: free space for the fleecing overlays in %s: %w", dir, err)
	}
	if free < need {
		return fmt.Errorf("qemu: %s has %d bytes free, and the fleecing overlays of this VM's disks may need %d: a full overlay would fail the guest's writes", dir, free, need)
	}
	return nil
}

// fleece is one disk's fleecing overlay.
type fleece struct {
	node string // the overlay's node name, also its backup job's id
	file string
	job  bool // the backup job runs
}

func (f *Frozen) socket() string { return filepath.Join(f.dir, SocketName) }

// addOverlay creates a disk's overlay file and opens it as a node backed
// by the disk.
func (f *Frozen) addOverlay(ctx context.Context, d Disk, tag string, i int) (fleece, error) {
	fl := fleece{node: fmt.Sprintf("%s%s-%d", FleecePrefix, tag, i)}
	fl.file = filepath.Join(f.dir, OverlayPrefix+fl.node+".qcow2")
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", fl.file, fmt.Sprint(d.Size)).CombinedOutput()
	if err != nil {
		os.Remove(fl.file)
		return fl, fmt.Errorf("fleecing overlay for disk %s: qemu-img create: %w: %s", d.Device, err, strings.TrimSpace(string(out)))
	}
	err = f.m.Execute(ctx, "blockdev-add", map[string]any{"node-name": fl.node, "driver": "qcow2",
		"file": map[string]any{"driver": "file", "filename": fl.file}, "backing": d.NodeName}, nil)
	if err != nil {
		os.Remove(fl.file)
		return fl, fmt.Errorf("fleecing overlay for disk %s: %w", d.Device, err)
	}
	f.fleece = append(f.fleece, fl)
	return fl, nil
}

// ensureServer starts QEMU's NBD server on the capture's socket.
func (f *Frozen) ensureServer(ctx context.Context) error {
	if f.serverUp {
		return nil
	}
	err := f.m.Execute(ctx, "nbd-server-start", map[string]any{
		"addr": map[string]any{"type": "unix", "data": map[string]any{"path": f.socket()}}}, nil)
	if err != nil {
		return err
	}
	f.serverUp = true
	return nil
}

// export serves a node read-only over NBD under the id (also its name),
// with bitmaps.
func (f *Frozen) export(ctx context.Context, id, node string, bitmaps []string) error {
	if f.exports[id] {
		return nil
	}
	if err := f.ensureServer(ctx); err != nil {
		return err
	}
	args := map[string]any{"type": "nbd", "id": id, "node-name": node, "name": id, "writable": false}
	if len(bitmaps) > 0 {
		args["bitmaps"] = bitmaps
	}
	if err := f.m.Execute(ctx, "block-export-add", args, nil); err != nil {
		return err
	}
	f.exports[id] = true
	return nil
}

// Open returns disk i as it was at the freeze, read over NBD from its
// fleecing overlay while the guest writes on, and its size. It needs
// FreezeOptions.Fleece. The reader is closed by Release.
func (f *Frozen) Open(ctx context.Context, i int) (io.ReaderAt, int64, error) {
	if f.released {
		return nil, 0, ErrReleased
	}
	if i >= len(f.fleece) {
		return nil, 0, errors.New("qemu: the capture was made without fleecing")
	}
	id := ExportPrefix + f.fleece[i].node
	if err := f.export(ctx, id, f.fleece[i].node, nil); err != nil {
		return nil, 0, err
	}
	c, err := nbd.Dial(ctx, f.socket(), id)
	if err != nil {
		return nil, 0, err
	}
	f.clients = append(f.clients, c)
	if c.Size() != f.disks[i].Size {
		return nil, 0, fmt.Errorf("disk %s: the fleecing export has %d bytes, the disk %d", f.disks[i].Device, c.Size(), f.disks[i].Size)
	}
	return c, c.Size(), nil
}

// teardown removes what the capture made in QEMU and on disk, in order:
// NBD clients, exports, server, backup jobs, overlay nodes, files. It
// tries every step and can run again.
func (f *Frozen) teardown(ctx context.Context) error {
	var errs []error
	for _, c := range f.clients {
		c.Close()
	}
	f.clients = nil
	for id := range f.exports {
		// "hard": our clients are closed, but QEMU may not have seen them go
		// yet, and "safe" then refuses ("still in use"); the export is ours.
		if err := f.m.Execute(ctx, "block-export-del", map[string]any{"id": id, "mode": "hard"}, nil); err != nil && !isNotFound(err) {
			errs = append(errs, err)
			continue
		}
		delete(f.exports, id)
	}
	if f.serverUp {
		// It also ends what block-export-del left waiting on clients.
		if err := f.m.Execute(ctx, "nbd-server-stop", nil, nil); err != nil {
			errs = append(errs, err)
		} else {
			f.serverUp = false
			os.Remove(f.socket())
		}
	}
	var jobs []string
	for _, fl := range f.fleece {
		if fl.job {
			jobs = append(jobs, fl.node)
		}
	}
	if err := cancelJobs(ctx, f.m, jobs); err != nil {
		errs = append(errs, err)
	}
	var left []fleece
	for _, fl := range f.fleece {
		if err := f.m.Execute(ctx, "blockdev-del", map[string]any{"node-name": fl.node}, nil); err != nil && !isNotFound(err) {
			errs = append(errs, err)
			left = append(left, fl)
			continue
		}
		if err := os.Remove(fl.file); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	f.fleece = left
	for i := range f.fleece {
		f.fleece[i].job = false
	}
	return errors.Join(errs...)
}

// isNotFound says QEMU answered that the thing is gone already.
func isNotFound(err error) bool {
	var qe *qmp.Error
	return errors.As(err, &qe) && (qe.Class == "DeviceNotFound" ||
		strings.Contains(qe.Desc, "not found") || strings.Contains(qe.Desc, "Cannot find"))
}

type jobInfo struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Status string `json:"status"`
}

// cancelJobs cancels the block jobs and waits (at most 30 s) until QEMU
// lists none of them: an overlay node can go only after its job did.
func cancelJobs(ctx context.Context, m *qmp.Monitor, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	var errs []error
	for _, id := range ids {
		// force: a paused job is cancelled too.
		if err := m.Execute(ctx, "block-job-cancel", map[string]any{"device": id, "force": true}, nil); err != nil && !isNotFound(err) {
			errs = append(errs, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var jobs []jobInfo
		if err := m.Execute(ctx, "query-jobs", nil, &jobs); err != nil {
			return errors.Join(append(errs, err)...)
		}
		left := 0
		for _, j := range jobs {
			for _, id := range ids {
				if j.ID != id {
					continue
				}
				left++
				if j.Status == "concluded" {
					// auto-dismiss is on by default; dismiss if not.
					m.Execute(ctx, "job-dismiss", map[string]any{"id": id}, nil)
				}
			}
		}
		if left == 0 {
			return errors.Join(errs...)
		}
		if time.Now().After(deadline) {
			return errors.Join(append(errs, fmt.Errorf("qemu: %d fleecing jobs did not end in 30 s", left))...)
		}
		select {
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// removeLeftovers removes the fleecing a dead agent left in QEMU and in
// dir. The NBD server is stopped only when its socket is in dir: then
// Lifeboat started it.
func removeLeftovers(ctx context.Context, m *qmp.Monitor, dir string) error {
	var errs []error
	var exports []struct {
		ID string `json:"id"`
	}
	if err := m.Execute(ctx, "query-block-exports", nil, &exports); err != nil {
		return err
	}
	for _, e := range exports {
		if strings.HasPrefix(e.ID, ExportPrefix) {
			if err := m.Execute(ctx, "block-export-del", map[string]any{"id": e.ID, "mode": "hard"}, nil); err != nil && !isNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	sock := filepath.Join(dir, SocketName)
	if _, err := os.Lstat(sock); err == nil {
		var qe *qmp.Error
		if err := m.Execute(ctx, "nbd-server-stop", nil, nil); err != nil && !(errors.As(err, &qe) && strings.Contains(qe.Desc, "not running")) {
			errs = append(errs, err)
		}
		os.Remove(sock)
	}
	var jobs []jobInfo
	if err := m.Execute(ctx, "query-jobs", nil, &jobs); err != nil {
		return errors.Join(append(errs, err)...)
	}
	var ours []string
	for _, j := range jobs {
		if strings.HasPrefix(j.ID, FleecePrefix) {
			ours = append(ours, j.ID)
		}
	}
	if err := cancelJobs(ctx, m, ours); err != nil {
		errs = append(errs, err)
	}
	var nodes []struct {
		NodeName string `json:"node-name"`
	}
	if err := m.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, n := range nodes {
		// A fleecing overlay is a qcow2 node with a protocol child that
		// has an automatic name (#block...): only the named one is ours.
		if strings.HasPrefix(n.NodeName, FleecePrefix) {
			if err := m.Execute(ctx, "blockdev-del", map[string]any{"node-name": n.NodeName}, nil); err != nil && !isNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, OverlayPrefix+"*.qcow2"))
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("removing what a capture left: %w", errors.Join(errs...))
	}
	return nil
}
