package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// The protection tasks: check, create the replicas, replicate, resync, on
// a directory or an Azure Blob target (stores.go opens either).

func replicationPayload(t agentproto.Task) (agentproto.ReplicationPayload, error) {
	var p agentproto.ReplicationPayload
	if err := json.Unmarshal(t.Payload, &p); err != nil {
		return p, &agentproto.TaskError{Code: "invalid_payload", Message: "the task's payload cannot be read: " + err.Error()}
	}
	return p, nil
}

// protectionCheck checks what protecting the VM needs; a failed check fails
// the task, so the job stops before anything is created.
func (a *agent) protectionCheck(ctx context.Context, t agentproto.Task, rep *reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	result := agentproto.PrerequisitesResult{}
	add := func(name string, err error, ok string) {
		c := agentproto.Check{Name: name, OK: err == nil, Message: ok}
		if err != nil {
			c.Message = err.Error()
		}
		result.Checks = append(result.Checks, c)
	}
	for i, d := range p.Disks {
		rep.set(agentproto.Progress{Step: "disk " + filepath.Base(d.Path), Percent: i * 80 / max(len(p.Disks), 1)})
		add("Disk "+d.Path, checkDisk(d), "readable, raw, size as reported")
	}
	rep.set(agentproto.Progress{Step: "target", Percent: 80})
	switch p.Target.Kind {
	case "azure_blob":
		add("Target container "+p.Target.ContainerURL, a.checkBlobTarget(ctx, t, p), "reachable with the SAS the vault issued")
	default:
		add("Target directory "+p.Target.Path, checkWritable(p.Target.Path), "writable")
		space := freeSpace(p.Target.Path, p.MinFreeBytes)
		add("Free space on the target", boolErr(space.OK, space.Message), space.Message)
	}
	var failed []string
	for _, c := range result.Checks {
		if !c.OK {
			failed = append(failed, c.Name+": "+c.Message)
		}
	}
	if len(failed) > 0 {
		return nil, &agentproto.TaskError{Code: "prerequisites_failed", Message: strings.Join(failed, "; ")}
	}
	return result, nil
}

func boolErr(ok bool, msg string) error {
	if ok {
		return nil
	}
	return errors.New(msg)
}

func checkDisk(d agentproto.ReplicaDisk) error {
	f, err := os.Open(d.Path)
	if err != nil {
		return fmt.Errorf("cannot be opened: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("is not a regular file (raw image)")
	}
	if fi.Size() != d.SizeBytes {
		return fmt.Errorf("is %d bytes, the vault expects %d; wait for the next inventory", fi.Size(), d.SizeBytes)
	}
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil && fi.Size() >= 4096 {
		return fmt.Errorf("cannot be read: %w", err)
	}
	return nil
}

// checkBlobTarget gets a SAS from the vault (which creates the VM's
// container) and lists the container with it.
func (a *agent) checkBlobTarget(ctx context.Context, t agentproto.Task, p agentproto.ReplicationPayload) error {
	r, err := a.openStore(ctx, t, p, true)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.(interface{ Check() error }).Check()
}

func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("cannot be created: %w", err)
	}
	f, err := os.CreateTemp(dir, ".lifeboat-write-test-")
	if err != nil {
		return fmt.Errorf("is not writable: %w", err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// createReplica makes the (empty) replica disks on the target.
func (a *agent) createReplica(ctx context.Context, t agentproto.Task, rep *reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	r, err := a.openStore(ctx, t, p, true)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	for i, d := range p.Disks {
		rep.set(agentproto.Progress{Step: "replica of " + filepath.Base(d.Path), Percent: i * 100 / len(p.Disks)})
		if err := r.CreateDisk(d.ReplicaID, d.SizeBytes); err != nil {
			return nil, replicate.TargetError(err)
		}
	}
	return map[string]int{"disks": len(p.Disks)}, nil
}

// replicate runs one cycle: every disk's changed blocks go to the replica,
// then one recovery point covers all of them; retention prunes old points.
func (a *agent) replicate(ctx context.Context, t agentproto.Task, rep *reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	captured := time.Now().UTC()
	r, err := a.openStore(ctx, t, p, false)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	// Run again after a restart, the cycle may have made its point already.
	points, err := r.Points()
	if err != nil {
		return nil, replicate.TargetError(err)
	}
	for _, pt := range points {
		if pt.ID == p.PointID {
			var size int64
			for _, s := range pt.Disks {
				size += s
			}
			return agentproto.ReplicateResult{PointID: pt.ID, Time: pt.Time, Consistency: pt.Consistency, SizeBytes: size, Pruned: []string{}}, nil
		}
	}
	var total, sent int64
	for _, d := range p.Disks {
		total += d.SizeBytes
	}
	consistency := "crash"
	if p.AppConsistent {
		if !a.driver.CanQuiesce() {
			// Every cycle asks again until an app-consistent point exists:
			// say it once per VM, not every cycle.
			if _, said := a.warnedNoQuiesce.LoadOrStore(p.VMID, true); !said {
				a.log.Warn("app-consistent points are asked for, but no --freeze-command is configured; this VM's points stay crash-consistent", "vm", p.VMID)
			}
		} else {
			vmDir, err := a.driver.VMDir(p.VMID)
			if err != nil {
				return nil, &agentproto.TaskError{Code: "vm_not_found", Message: err.Error()}
			}
			thaw, err := a.driver.Freeze(ctx, p.VMID, vmDir)
			if err != nil {
				return nil, &agentproto.TaskError{Code: "freeze_failed", Message: err.Error(), Recoverable: true}
			}
			defer func() {
				if err := thaw(); err != nil {
					a.log.Error("thaw failed: the VM may stay quiesced; check it", "vm", p.VMID, "error", err)
				}
			}()
			consistency = "app"
			captured = time.Now().UTC()
		}
	}
	// One limit for the whole cycle, all disks together.
	throttle := replicate.NewThrottles().For(p.BandwidthMbps)
	transferStart := time.Now()
	var done int64
	var diskIDs []string
	for _, d := range p.Disks {
		res, err := replicate.File(ctx, r, d.ReplicaID, d.Path, replicate.Options{Throttle: throttle, Progress: func(doneInDisk int64) {
			rep.set(agentproto.Progress{Step: "disk " + filepath.Base(d.Path), Percent: int((done + doneInDisk) * 100 / max(total, 1)),
				BytesDone: done + doneInDisk, BytesTotal: total})
		}, ResyncLimitPercent: p.ResyncThresholdPercent})
		if err != nil {
			return nil, err
		}
		sent += res.Sent
		done += d.SizeBytes
		diskIDs = append(diskIDs, d.ReplicaID)
	}
	point, err := r.CreatePoint(replica.PointSpec{ID: p.PointID, Time: captured, Consistency: consistency, Disks: diskIDs})
	if err != nil {
		return nil, replicate.TargetError(err)
	}
	took := time.Since(transferStart)
	total = 0 // the disks' sizes at the point: a disk may have grown
	for _, s := range point.Disks {
		total += s
	}
	pruned, err := prune(r, captured, time.Duration(p.RetentionHours)*time.Hour)
	if err != nil {
		a.log.Warn("retention could not prune recovery points", "error", err)
	}
	return agentproto.ReplicateResult{PointID: point.ID, Time: point.Time, Consistency: point.Consistency, SizeBytes: total, BytesSent: sent,
		TransferSeconds: took.Seconds(), Pruned: pruned, DiskSizes: point.Disks}, nil
}

// prune deletes points older than retention, oldest first, never the newest.
func prune(r replica.Store, now time.Time, retention time.Duration) ([]string, error) {
	points, err := r.Points()
	if err != nil {
		return nil, err
	}
	var pruned []string
	for i := 0; i < len(points)-1; i++ {
		if now.Sub(points[i].Time) <= retention {
			break
		}
		if err := r.DeletePoint(points[i].ID); err != nil {
			return pruned, err
		}
		pruned = append(pruned, points[i].ID)
	}
	return pruned, nil
}

// resync runs a cycle with no pending-change limit: every block whose
// stored hash differs from the source's is sent; only hashes are compared,
// the replica is not read. With CheckReplica (the replica is suspect: a
// verify found blocks the storage changed, or a directory target, where
// reading is local) it first reads the replica back and marks unknown the
// hashes of blocks whose content no longer matches, so they are sent too.
func (a *agent) resync(ctx context.Context, t agentproto.Task, rep *reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	if !p.CheckReplica {
		return a.replicate(ctx, t, rep)
	}
	r, err := a.openStore(ctx, t, p, false)
	if err != nil {
		return nil, err
	}
	var repaired int64
	for _, d := range p.Disks {
		rep.set(agentproto.Progress{Step: "check the replica of " + filepath.Base(d.Path)})
		bad, err := r.RepairHashes(d.ReplicaID)
		if err != nil {
			r.Close()
			return nil, replicate.TargetError(err)
		}
		repaired += int64(len(bad))
	}
	r.Close()
	out, err := a.replicate(ctx, t, rep)
	if err != nil {
		return nil, err
	}
	res := out.(agentproto.ReplicateResult)
	res.Repaired = repaired
	return res, nil
}

// deleteReplica deletes the VM's replicas and recovery points from the
// target: its protection was disabled with its data deleted. The target is
// opened as a cycle opens it, so an unmounted share fails (and is retried)
// rather than being reported deleted; replicas that are gone already are
// success.
func (a *agent) deleteReplica(ctx context.Context, t agentproto.Task, rep *reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	rep.set(agentproto.Progress{Step: "delete the replicas", Percent: 0})
	r, err := a.openStore(ctx, t, p, false)
	var te *agentproto.TaskError
	if errors.As(err, &te) && te.Code == "replica_missing" {
		return map[string]string{"deleted": "nothing: the replicas were gone already"}, nil
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := r.DeleteAll(); err != nil {
		return nil, replicate.TargetError(err)
	}
	return map[string]string{"deleted": "the replicas and recovery points of VM " + p.VMID}, nil
}
