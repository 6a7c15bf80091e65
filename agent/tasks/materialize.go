package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// materialize makes a VM on this (recovery) host of a recovery point read
// from the target, and starts it when asked: a failover's or a test
// failover's. It only reads the replica, under the shared lock, and lets
// go of it before the VM starts: a guest that boots for long must not hold
// off the source's cycles.
func (ts *Tasks) materialize(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	var p agentproto.MaterializePayload
	if err := json.Unmarshal(t.Payload, &p); err != nil {
		return nil, &agentproto.TaskError{Code: agentproto.CodeInvalidPayload, Message: "the task's payload cannot be read: " + err.Error()}
	}
	if p.PointID == "" || p.VMID == "" || p.VMName == "" || p.SourceVMID == "" {
		return nil, &agentproto.TaskError{Code: agentproto.CodeInvalidPayload, Message: fmt.Sprintf(
			"the task must name the recovery point, the source VM and the new VM's id and name (got point %q, source %q, VM %q named %q); upgrade the agent to the vault's version",
			p.PointID, p.SourceVMID, p.VMID, p.VMName)}
	}
	began := time.Now()
	rep.Set(agentproto.Progress{Step: "open recovery point " + p.PointID})
	r, err := ts.openStore(ctx, t, p.Replication, openReadOnly)
	if err != nil {
		return nil, err
	}
	closeStore := sync.OnceValue(r.Close)
	defer closeStore()
	made, read, err := ts.materializeFrom(ctx, r, p, rep)
	if err != nil {
		return nil, err
	}
	if err := closeStore(); err != nil {
		rep.Log().Warn("the replica was not closed cleanly after reading it", "error", err)
	}
	res := agentproto.MaterializeResult{VM: made.VM, PointID: p.PointID, BytesWritten: made.BytesWritten, BytesRead: read}
	if made.Existing {
		rep.Log().Info("the VM was made of this point before; it is kept as it is", "vm_id", made.VM.ID)
	}
	if p.Instant {
		// The driver started it before its disks were copied.
		res.Started, res.Isolated = true, p.Test
	} else if p.Start {
		rep.Set(agentproto.Progress{Step: "start VM " + made.VM.Name, Percent: 100})
		kept := fmt.Sprintf("VM %s was made on this host of recovery point %s and is kept, but it", made.VM.ID, p.PointID)
		if _, err := ts.powerOn(ctx, p.VMID, p.Test, kept); err != nil {
			return nil, err
		}
		res.Started, res.Isolated = true, p.Test
		if res.VM.PowerState, err = ts.d.Driver.PowerState(ctx, p.VMID); err != nil {
			res.VM.PowerState = agentproto.PowerUnknown
		}
	}
	res.Seconds = time.Since(began).Seconds()
	return res, nil
}

// materializeFrom has the driver write the point's disks as a new VM, and
// returns it with the bytes read from the target.
func (ts *Tasks) materializeFrom(ctx context.Context, r replica.Store, p agentproto.MaterializePayload, rep Reporter) (driver.Materialized, int64, error) {
	points, err := r.Points()
	if err != nil {
		return driver.Materialized{}, 0, replicate.TargetError(err)
	}
	at, err := findPoint(points, p.PointID)
	if err != nil {
		return driver.Materialized{}, 0, err
	}
	point := points[at]
	ids := make([]string, 0, len(point.Disks))
	var total int64
	for id, size := range point.Disks {
		ids = append(ids, id)
		total += size
	}
	sort.Strings(ids)
	names := diskNames(p.Replication.Disks, ids)
	progress := &readProgress{rep: rep, step: "write the disks of recovery point " + p.PointID, total: total}
	spec := driver.MaterializeSpec{ID: p.VMID, Name: p.VMName, SourceVMID: p.SourceVMID, PointID: p.PointID, Test: p.Test, Replace: p.Replace}
	for _, id := range ids {
		pr, size, err := r.OpenPoint(p.PointID, id)
		if err != nil {
			return driver.Materialized{}, 0, replicate.TargetError(fmt.Errorf("open disk %s of recovery point %s: %w", id, p.PointID, err))
		}
		defer pr.Close()
		spec.Disks = append(spec.Disks, driver.MaterializeDisk{Name: names[id], SizeBytes: size, Data: progress.reader(pr)})
	}
	var made driver.Materialized
	if p.Instant {
		im, ok := ts.d.Driver.(driver.InstantMaterializer)
		if !ok || p.WriteBack || !p.Start {
			return made, 0, &agentproto.TaskError{Code: agentproto.CodeTargetNotSupported, Message: fmt.Sprintf(
				"this host's %s driver cannot start a VM before its disks are copied (instant failover needs a qemu recovery host, and a new VM, not a failback into an existing one); fail over without instant", ts.d.Driver.Name())}
		}
		progress.step = "copy the disks of recovery point " + p.PointID + " while the VM runs"
		started := func(vm agentproto.VM) {
			rep.Log().Info("the VM runs on the recovery point's disks; they are being copied to this host", "vm_id", vm.ID)
			rep.Set(agentproto.Progress{Step: "VM " + vm.Name + " started; " + progress.step})
		}
		made, err = im.MaterializeInstant(ctx, spec, driver.StartOptions{Isolated: p.Test}, started)
	} else if p.WriteBack {
		if p.Replace {
			// Another point for a VM failed back into: it runs, so stop it.
			if err := ts.d.Driver.Shutdown(ctx, p.VMID, 5*time.Minute); err != nil {
				return driver.Materialized{}, 0, &agentproto.TaskError{Code: agentproto.CodeVMWillNotStop, Message: fmt.Sprintf(
					"VM %s did not shut down, so its disks were not written: %v", p.VMID, err)}
			}
		}
		made, err = ts.d.Driver.WriteBack(ctx, p.VMID, spec.Disks)
	} else {
		made, err = ts.d.Driver.Materialize(ctx, spec)
	}
	if err != nil {
		var te *agentproto.TaskError
		switch {
		case progress.failed() != nil:
			// The target's fault, not the host's: retried like a cycle.
			return made, 0, replicate.TargetError(fmt.Errorf("read recovery point %s: %w", p.PointID, progress.failed()))
		case errors.As(err, &te), ctx.Err() != nil:
			return made, 0, err
		}
		return made, 0, fmt.Errorf("make VM %s of recovery point %s: %w", p.VMName, p.PointID, err)
	}
	return made, progress.done.Load(), nil
}

// findPoint is the index of the point of that id among points.
func findPoint(points []replica.Point, pointID string) (int, error) {
	for i, pt := range points {
		if pt.ID == pointID {
			return i, nil
		}
	}
	return -1, &agentproto.TaskError{Code: agentproto.CodePointNotFound, Message: fmt.Sprintf(
		"recovery point %s is no longer on the target (retention may have deleted it); choose another point", pointID)}
}

// diskNames names each replica disk on the recovery host as its source
// file was named (disk0.img or disk0.qcow2 → disk0), so the recovered VM looks like the
// protected one. A disk the payload does not list, or whose name would be
// hidden or taken by another disk, is named by its replica id.
func diskNames(sources []agentproto.ReplicaDisk, ids []string) map[string]string {
	byID := map[string]string{}
	for _, d := range sources {
		byID[d.ReplicaID] = imageStem(filepath.Base(d.Path))
	}
	names := map[string]string{}
	taken := map[string]bool{}
	for _, id := range ids {
		taken[id] = true // a replica id is a fallback, never another's name
	}
	for _, id := range ids {
		name := byID[id]
		if name == "" || name == "." || strings.HasPrefix(name, ".") || (taken[name] && name != id) {
			name = id
		}
		taken[name] = true
		names[id] = name
	}
	return names
}

// imageStem is a disk image's file name without its format's extension
// (disk0.img, disk0.qcow2, disk0.raw → disk0): the recovered disk is raw
// whatever the source's format was.
func imageStem(name string) string {
	for _, ext := range []string{".img", ".qcow2", ".raw"} {
		if stem, ok := strings.CutSuffix(name, ext); ok {
			return stem
		}
	}
	return name
}

// readProgress counts what the driver reads of a point's disks and
// reports it every progressEvery bytes. It keeps the first read error:
// the driver cannot tell it from its own, but it is the target's.
type readProgress struct {
	rep   Reporter
	step  string
	total int64
	done  atomic.Int64

	mu  sync.Mutex
	err error
}

// progressEvery is how often (in bytes read) progress is reported.
const progressEvery = 64 << 20

func (p *readProgress) reader(r io.ReaderAt) io.ReaderAt { return &countingReader{r: r, p: p} }

func (p *readProgress) add(n int) {
	done := p.done.Add(int64(n))
	if done/progressEvery != (done-int64(n))/progressEvery || done == p.total {
		p.rep.Set(agentproto.Progress{Step: p.step, Percent: int(done * 100 / max(p.total, 1)), BytesDone: done, BytesTotal: p.total})
	}
}

func (p *readProgress) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

func (p *readProgress) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

type countingReader struct {
	r io.ReaderAt
	p *readProgress
}

func (c *countingReader) ReadAt(b []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(b, off)
	if n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("the disk's data ends at %d bytes: %w", off+int64(n), io.ErrUnexpectedEOF)
		}
		c.p.fail(err)
	}
	c.p.add(n)
	return n, err
}
