package tasks

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// replicate runs one cycle: the driver captures the VM's disks, every
// disk's changed blocks go to its replica, then one recovery point holds
// all of them, labelled as consistent as the capture was and stamped with
// its instant; retention prunes old points.
func (ts *Tasks) replicate(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	r, err := ts.openStore(ctx, t, p, openExisting)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return ts.cycle(ctx, r, p, rep)
}

// cycle is a replication cycle on an open store.
func (ts *Tasks) cycle(ctx context.Context, r replica.Store, p agentproto.ReplicationPayload, rep Reporter) (agentproto.ReplicateResult, error) {
	// Run again after a restart, the cycle may have made its point already.
	points, err := r.Points()
	if err != nil {
		return agentproto.ReplicateResult{}, replicate.TargetError(err)
	}
	for _, pt := range points {
		if pt.ID == p.PointID {
			return withPoints(resultOf(pt, 0, 0, ""), points), nil
		}
	}
	// The descriptor before the point: a point's disks are described when
	// it appears. Failing to write it costs no point: the next cycle tries
	// again, and the data goes on being protected meanwhile.
	if err := describe(r, p); err != nil {
		rep.Log().Warn("the VM descriptor beside the replicas could not be written; a vault rebuilt from this target would not know this VM's host, disks and policy", "error", err)
	}
	// A disk added to the VM since the last cycle gets its replica now.
	for _, d := range p.Disks {
		if d.New {
			if err := r.CreateDisk(d.ReplicaID, d.SizeBytes); err != nil {
				return agentproto.ReplicateResult{}, replicate.TargetError(err)
			}
		}
	}
	var total int64
	for _, d := range p.Disks {
		total += d.SizeBytes
	}
	capture, err := ts.d.Driver.Capture(ctx, driver.CaptureRequest{VMID: p.VMID, Disks: diskRefs(p), AppConsistent: p.AppConsistent})
	if err != nil {
		return agentproto.ReplicateResult{}, &agentproto.TaskError{Code: agentproto.CodeDiskUnreadable, Recoverable: true,
			Message: fmt.Sprintf("capture the disks of VM %s: %v", p.VMID, err)}
	}
	acked := false
	defer func() {
		if err := capture.Release(acked); err != nil {
			rep.Log().Warn("the capture could not be released cleanly", "error", err)
		}
	}()
	// One limit for the host, all disks and cycles together.
	throttle := ts.d.Throttles.For(p.BandwidthMbps)
	transferStart := time.Now()
	var done, sent int64
	ids := make([]string, 0, len(p.Disks))
	for i, cd := range capture.Disks() {
		d := p.Disks[i]
		limit := p.ResyncThresholdPercent
		src := cd.Source
		if d.New {
			limit = 0 // a new disk's initial copy is not a sign of churn
			// Its replica is empty: the driver's tracked changes count from
			// the disk's last capture, into another replica (a move's seed),
			// and would leave the rest out (FeatureMoveSeed).
			src.Changed = nil
		}
		res, err := replicate.Copy(ctx, r, cd.ID, src, replicate.Options{Throttle: throttle, ResyncLimitPercent: limit,
			Progress: func(doneInDisk int64) {
				rep.Set(agentproto.Progress{Step: "disk " + filepath.Base(d.Path), Percent: int((done + doneInDisk) * 100 / max(total, 1)),
					BytesDone: done + doneInDisk, BytesTotal: total})
			}})
		if err != nil {
			return agentproto.ReplicateResult{}, err
		}
		sent += res.Sent
		done += d.SizeBytes
		ids = append(ids, cd.ID)
	}
	got := capture.ReadDone()
	point, err := r.CreatePoint(replica.PointSpec{ID: p.PointID, Time: got.Time, ReadStartedAt: got.ReadStartedAt,
		Consistency: got.Consistency, Capture: got.Method, Disks: ids})
	if err != nil {
		return agentproto.ReplicateResult{}, replicate.TargetError(err)
	}
	acked = !p.KeepTracking // a move's seed leaves the tracking to the old replica
	took := time.Since(transferStart)
	res := resultOf(point, sent, took, got.Note)
	pruned, remaining, err := prune(r, time.Now(), time.Duration(p.RetentionHours)*time.Hour, p.KeepPoints...)
	res.Pruned = append(res.Pruned, pruned...)
	if err != nil {
		// Without a listing the result says nothing of the other points,
		// and the vault keeps what it knows.
		rep.Log().Warn("retention could not prune recovery points", "error", err)
		return res, nil
	}
	if err := retireDisks(r, ids, remaining); err != nil {
		rep.Log().Warn("the replica of a disk the VM no longer has could not be deleted", "error", err)
	}
	return withPoints(res, remaining), nil
}

// withPoints adds the ids of every point on the target to a result, so
// the vault forgets points an earlier run pruned without reporting them
// (it stopped before its result was delivered).
func withPoints(res agentproto.ReplicateResult, points []replica.Point) agentproto.ReplicateResult {
	for _, pt := range points {
		res.Points = append(res.Points, pt.ID)
	}
	return res
}

func resultOf(pt replica.Point, sent int64, took time.Duration, note string) agentproto.ReplicateResult {
	var size int64
	for _, s := range pt.Disks {
		size += s
	}
	return agentproto.ReplicateResult{PointID: pt.ID, Time: pt.Time, ReadStartedAt: pt.ReadStartedAt, Consistency: pt.Consistency,
		Capture: pt.Capture, CaptureNote: note, SizeBytes: size, BytesSent: sent, TransferSeconds: took.Seconds(), Pruned: []string{}, DiskSizes: pt.Disks}
}

// prune deletes points older than retention, oldest first, never the
// newest, and returns the ids it deleted and the points that remain (one
// listing serves the rest of the cycle).
func prune(r replica.Store, now time.Time, retention time.Duration, keep ...string) ([]string, []replica.Point, error) {
	points, err := r.Points()
	if err != nil {
		return nil, nil, err
	}
	var pruned []string
	// Points are deleted oldest first: one a recovery is about to read
	// stops the pruning there, and the younger ones wait with it.
	for len(points) > 1 && now.Sub(points[0].Time) > retention && !slices.Contains(keep, points[0].ID) {
		if err := r.DeletePoint(points[0].ID); err != nil {
			return pruned, nil, err
		}
		pruned = append(pruned, points[0].ID)
		points = points[1:]
	}
	return pruned, points, nil
}

// retireDisks deletes the replicas of disks the VM no longer has once no
// point holds them any more: until then, the older points still need them.
func retireDisks(r replica.Store, current []string, points []replica.Point) error {
	disks, err := r.Disks()
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, id := range current {
		keep[id] = true
	}
	for _, id := range disks {
		if keep[id] || replica.HeldByAPoint(points, id) != "" {
			continue
		}
		if err := r.DeleteDisk(id); err != nil {
			return err
		}
	}
	return nil
}
