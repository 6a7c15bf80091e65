package tasks

import (
	"context"
	"fmt"

	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// commitPoint keeps the recovery point a failover committed to and
// deletes the points older than it, oldest first: after the commit there
// is no going back to them. It opens the replica as a cycle does, holding
// the host's exclusive lock, so no cycle or verify reads a point as it
// goes.
//
// Points newer than the committed one are kept: the directory target
// holds the newest replica plus undo logs back to each older point, so it
// cannot drop a point newer than one it keeps without rolling the replica
// back, and the vault decides what becomes of them. Run again, the
// commit finds the older points gone and deletes nothing more.
func (ts *Tasks) commitPoint(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	if p.PointID == "" {
		return nil, &agentproto.TaskError{Code: agentproto.CodeInvalidPayload, Message: "the task names no recovery point to commit; upgrade the agent to the vault's version"}
	}
	rep.Set(agentproto.Progress{Step: "commit recovery point " + p.PointID})
	r, err := ts.openStore(ctx, t, p, openExisting)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res, err := commitIn(ctx, r, p.PointID)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// commitIn deletes the points of r older than pointID, oldest first.
func commitIn(ctx context.Context, r replica.Store, pointID string) (agentproto.CommitResult, error) {
	points, err := r.Points()
	if err != nil {
		return agentproto.CommitResult{}, replicate.TargetError(err)
	}
	if _, err := findPoint(points, pointID); err != nil {
		return agentproto.CommitResult{}, err
	}
	res := agentproto.CommitResult{PointID: pointID, Deleted: []string{}, Points: []string{}}
	for len(points) > 0 && points[0].ID != pointID {
		if err := ctx.Err(); err != nil {
			return agentproto.CommitResult{}, err
		}
		if err := r.DeletePoint(points[0].ID); err != nil {
			return agentproto.CommitResult{}, replicate.TargetError(fmt.Errorf("delete recovery point %s, older than the committed %s: %w", points[0].ID, pointID, err))
		}
		res.Deleted = append(res.Deleted, points[0].ID)
		points = points[1:]
	}
	for _, pt := range points {
		res.Points = append(res.Points, pt.ID)
	}
	return res, nil
}
