package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/diskfile"
	"github.com/lifeboat-dr/lifeboat/agent/nbd"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Instant failover on a recovery host (hydrate.go has the mechanism):
//
//	VMDIR/NAME/DISK.qcow2   each disk, an overlay whose backing is the
//	                        recovery point's disk served over NBD at
//	                        QMPDIR/ID.nbd by the agent, until hydrated
//	VMDIR/NAME/vm.json      says "hydrating" until every disk is local
//
// MaterializeInstant serves the point's disks, makes the overlays, starts
// the VM on them (paused until a block-stream job copies each disk), lets
// it run, and returns when the copies are done: the VM then runs from its
// own qcow2 disks (whose dirty bitmaps survive restarts, for a re-protect).
// A run cut short by the agent stopping (or a later attempt of the task
// taking over) leaves the VM running and hydrating: a guest that reads a
// block not yet copied while no agent serves it waits (rerror and
// werror=stop pause it) until the task runs again, serves the point again
// and lets it go on. A run the vault cancelled, or whose copy kept failing
// for hydrateRetryFor, stops and deletes the VM it started: the vault then
// holds the failover as not done (the source may start again), so no
// second copy of the VM may run on.

// hydrateReconnect is how long QEMU holds the guest's reads while the
// agent's NBD server is away (an agent restart) before they fail.
const hydrateReconnect = 60 * time.Second

// hydrateRetryFor is how long a copy that fails (the target unreachable
// past hydrateReconnect) is started again before the run gives up.
const hydrateRetryFor = 10 * time.Minute

// nbdSuffix ends the name of a hydrating VM's NBD socket in QMPDir.
const nbdSuffix = ".nbd"

// nbdSocket is where a VM's point is served: named by the point too, so
// that a VM of an earlier point, still trying to reconnect, never reads
// another point's disks.
func (d *Driver) nbdSocket(vmID, pointID string) string {
	sum := sha256.Sum256([]byte(pointID))
	return filepath.Join(d.QMPDir, vmID+"-"+hex.EncodeToString(sum[:4])+nbdSuffix)
}

// diskNode names the block node of a made VM's i-th disk.
func diskNode(i int) string { return "lbdisk" + strconv.Itoa(i) }

var _ driver.InstantMaterializer = (*Driver)(nil)

// MaterializeInstant implements driver.InstantMaterializer.
func (d *Driver) MaterializeInstant(ctx context.Context, spec driver.MaterializeSpec, opts driver.StartOptions, started func(agentproto.VM)) (driver.Materialized, error) {
	final, old, done, err := d.prepareMaterialize(ctx, spec)
	if err != nil {
		return driver.Materialized{}, err
	}
	if done != nil {
		mv, err := readRecord(final)
		if err != nil {
			return driver.Materialized{}, err
		}
		if !mv.rec.Hydrating {
			// Made of this point and copied before: it runs.
			if err := d.startMade(ctx, mv, opts); err != nil {
				return driver.Materialized{}, err
			}
			done.VM = d.listMade(ctx, mv)
			return *done, nil
		}
		return d.hydrate(ctx, mv, spec, opts, started)
	}
	srv, err := d.serve(spec)
	if err != nil {
		return driver.Materialized{}, err
	}
	defer srv.stop()
	tmp, nonce, err := diskfile.HiddenDir(d.VMDir, materializePrefix)
	if err != nil {
		return driver.Materialized{}, d.hostError(spec, err)
	}
	defer os.RemoveAll(tmp)
	rec := vmRecord{ID: spec.ID, Name: spec.Name, Hydrating: true, Lifeboat: &origin{SourceVMID: spec.SourceVMID,
		PointID: spec.PointID, Test: spec.Test, MaterializedAt: time.Now().UTC()}}
	for _, disk := range spec.Disks {
		if !safeName(disk.Name) {
			return driver.Materialized{}, fmt.Errorf("disk name %q cannot be a file name", disk.Name)
		}
		file := disk.Name + ".qcow2"
		if err := CreateOverlay(ctx, filepath.Join(tmp, file), NBDBacking(srv.socket, disk.Name, hydrateReconnect)); err != nil {
			return driver.Materialized{}, d.hostError(spec, err)
		}
		rec.Disks = append(rec.Disks, recordDisk{Name: disk.Name, File: file, Format: "qcow2"})
	}
	if err := writeRecord(tmp, rec); err != nil {
		return driver.Materialized{}, d.hostError(spec, err)
	}
	if err := diskfile.SyncDir(tmp); err != nil {
		return driver.Materialized{}, d.hostError(spec, err)
	}
	mv, err := d.swapIn(ctx, spec, tmp, final, nonce, old)
	if err != nil {
		return driver.Materialized{}, err
	}
	return d.hydrateWith(ctx, mv, srv, opts, started)
}

// hydrate goes on with a VM made for an instant failover before: it
// serves the point again and lets the VM's copies run to their end.
func (d *Driver) hydrate(ctx context.Context, mv *madeVM, spec driver.MaterializeSpec, opts driver.StartOptions, started func(agentproto.VM)) (driver.Materialized, error) {
	srv, err := d.serve(spec)
	if err != nil {
		return driver.Materialized{}, err
	}
	defer srv.stop()
	return d.hydrateWith(ctx, mv, srv, opts, started)
}

// hydrateWith starts the VM on its overlays unless its QEMU runs, starts
// (or finds) a copy job per disk, lets the guest run, waits for the
// copies and records the VM as hydrated. A failure once the VM was
// started is settled by abandon.
func (d *Driver) hydrateWith(ctx context.Context, mv *madeVM, srv *pointServer, opts driver.StartOptions, started func(agentproto.VM)) (driver.Materialized, error) {
	m, err := d.hydrateWithErr(ctx, mv, srv, opts, started)
	if err != nil {
		return driver.Materialized{}, d.abandon(ctx, mv, err)
	}
	return m, nil
}

// abandon settles a failed run of an instant materialize: the VM is
// stopped and deleted when the vault cancelled the task or the copy kept
// failing (the failover is not done, and must not run on twice), and left
// to the task's next run otherwise (the agent stops, or a later attempt
// took over).
func (d *Driver) abandon(ctx context.Context, mv *madeVM, err error) error {
	var gaveUp *copyFailed
	if !errors.Is(context.Cause(ctx), driver.ErrCancelled) && !errors.As(err, &gaveUp) {
		return err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if rmErr := d.Remove(rctx, mv.rec.ID, 0); rmErr != nil { // no shutdown: its disks go too
		return fmt.Errorf("%w; and the VM it had started could not be removed: %v", err, rmErr)
	}
	return fmt.Errorf("%w; the VM it had started, %s, was stopped and deleted: the failover did not happen", err, mv.rec.Name)
}

// copyFailed is a copy that kept failing for hydrateRetryFor.
type copyFailed struct{ err error }

func (e *copyFailed) Error() string { return e.err.Error() }
func (e *copyFailed) Unwrap() error { return e.err }

func (d *Driver) hydrateWithErr(ctx context.Context, mv *madeVM, srv *pointServer, opts driver.StartOptions, started func(agentproto.VM)) (driver.Materialized, error) {
	id := mv.rec.ID
	m, err := d.monitor(ctx, id)
	if err != nil || qemuPID(mv.dir) == 0 {
		if err := d.stopQEMU(ctx, id, mv.dir, 0, true); err != nil {
			return driver.Materialized{}, err
		}
		drives := mv.drives()
		for i := range drives {
			drives[i].NodeName, drives[i].StopOnError = diskNode(i), true
		}
		if err := d.Launch(ctx, LaunchSpec{ID: id, Name: mv.rec.Name, Dir: mv.dir, Drives: drives,
			Isolated: opts.Isolated || mv.rec.Lifeboat.Test, Paused: true}); err != nil {
			return driver.Materialized{}, err
		}
		if m, err = d.monitor(ctx, id); err != nil {
			return driver.Materialized{}, err
		}
	}
	var copies []*Hydration
	for i := range mv.rec.Disks {
		h, err := d.startCopy(ctx, m, diskNode(i))
		if err != nil {
			return driver.Materialized{}, fmt.Errorf("VM %s: %w", id, err)
		}
		if h != nil {
			copies = append(copies, h)
		}
	}
	// Running (or paused by a read the last agent could not serve):
	// the guest goes on now that its disks are served.
	if st, err := Status(ctx, m); err == nil && !st.Running && st.Status != "shutdown" {
		if err := m.Execute(ctx, "cont", nil, nil); err != nil {
			return driver.Materialized{}, &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf("VM %s (%s): %v", id, st.Status, err)}
		}
	}
	if started != nil {
		started(d.listMade(ctx, mv))
	}
	for _, h := range copies {
		if err := d.waitCopy(ctx, m, h); err != nil {
			return driver.Materialized{}, err
		}
	}
	// What a run that died between a copy's end and its flush left is
	// on disk before the record says the VM needs the point no more.
	if err := flush(ctx, m); err != nil {
		return driver.Materialized{}, fmt.Errorf("VM %s: %w", id, err)
	}
	mv.rec.Hydrating = false
	if err := writeRecord(mv.dir, mv.rec); err != nil {
		return driver.Materialized{}, err
	}
	if err := diskfile.SyncDir(mv.dir); err != nil {
		return driver.Materialized{}, err
	}
	return driver.Materialized{VM: d.listMade(ctx, mv), BytesWritten: srv.size}, nil
}

// waitCopy waits for a disk's copy, starting it again while it fails (the
// target away longer than QEMU waits for it), for hydrateRetryFor.
func (d *Driver) waitCopy(ctx context.Context, m *qmp.Monitor, h *Hydration) error {
	deadline := time.Now().Add(hydrateRetryFor)
	for wait := 2 * time.Second; ; wait = min(2*wait, 30*time.Second) {
		err := h.Wait(ctx, 2*time.Second, nil)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if time.Now().After(deadline) {
			return &copyFailed{fmt.Errorf("copying disk %s of VM from the recovery point kept failing for %v: %w", h.Node, hydrateRetryFor, err)}
		}
		d.logger().Warn("copying a disk from the recovery point failed; starting it again", "node", h.Node, "in", wait, "error", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
		again, serr := d.startCopy(ctx, m, h.Node)
		if serr != nil {
			continue
		}
		if again == nil {
			return nil // no backing left: copied
		}
		h = again
	}
}

// startCopy starts the copy of a disk's backing into it, or finds the
// one that runs; nil when the disk has no backing left (copied before).
func (d *Driver) startCopy(ctx context.Context, m *qmp.Monitor, node string) (*Hydration, error) {
	h := AttachHydration(m, node, "")
	if _, running, err := h.Progress(ctx); err != nil {
		return nil, err
	} else if running {
		return h, nil
	}
	backing, err := Backing(ctx, m, node)
	if err != nil || backing == "" {
		return nil, err
	}
	return Hydrate(ctx, m, node, HydrateOptions{})
}

// pointServer is the NBD server of a point's disks for one VM.
type pointServer struct {
	srv    *nbd.Server
	socket string
	size   int64       // of all disks
	bound  os.FileInfo // the socket this server made
	done   chan struct{}
}

// serve serves each of spec's disks, named by its name, at the VM's NBD
// socket.
func (d *Driver) serve(spec driver.MaterializeSpec) (*pointServer, error) {
	ps := &pointServer{socket: d.nbdSocket(spec.ID, spec.PointID), done: make(chan struct{})}
	var exports []nbd.Export
	for _, disk := range spec.Disks {
		exports = append(exports, nbd.Export{Name: disk.Name, Data: disk.Data, Size: disk.SizeBytes})
		ps.size += disk.SizeBytes
	}
	srv, err := nbd.NewServer(d.logger(), exports...)
	if err != nil {
		return nil, err
	}
	if err := os.Remove(ps.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", ps.socket)
	if err != nil {
		return nil, fmt.Errorf("serve the recovery point's disks at %s: %w", ps.socket, err)
	}
	ps.bound, _ = os.Stat(ps.socket)
	ps.srv = srv
	go func() {
		defer close(ps.done)
		srv.Serve(l)
	}()
	return ps, nil
}

// stop ends the server once no read of it runs: the readers may close.
func (ps *pointServer) stop() {
	ps.srv.Close()
	<-ps.done
	// Unless a later run of the task serves at the same path now.
	if fi, err := os.Stat(ps.socket); err == nil && ps.bound != nil && os.SameFile(fi, ps.bound) {
		os.Remove(ps.socket)
	}
}
