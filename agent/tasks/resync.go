package tasks

import (
	"context"
	"path/filepath"

	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// resync runs a cycle with no pending-change limit: every block whose
// stored hash differs from the source's is sent; only hashes are compared,
// the replica is not read. With CheckReplica (the replica is suspect: a
// verify found blocks the storage changed, or a directory target, where
// reading is local) it first reads the replica back and marks unknown the
// hashes of blocks whose content no longer matches, so they are sent too.
func (ts *Tasks) resync(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	p.ResyncThresholdPercent = 0
	r, err := ts.openStore(ctx, t, p, openExisting)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var repaired int64
	if p.CheckReplica {
		for _, d := range p.Disks {
			if d.New {
				continue
			}
			rep.Set(agentproto.Progress{Step: "check the replica of " + filepath.Base(d.Path)})
			bad, err := r.RepairHashes(d.ReplicaID)
			if err != nil {
				return nil, replicate.TargetError(err)
			}
			repaired += int64(len(bad))
		}
	}
	res, err := ts.cycle(ctx, r, p, rep)
	if err != nil {
		return nil, err
	}
	res.Repaired = repaired
	return res, nil
}
