package tasks

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// VerifyStore checks one point of a store: every block read back and
// compared with the hash recorded when it was written. A point that is not
// on the target fails with CodePointNotFound.
func VerifyStore(r replica.Store, pointID string) (*agentproto.VerifyResult, error) {
	points, err := r.Points()
	if err != nil {
		return nil, replicate.TargetError(err)
	}
	found := false
	for _, p := range points {
		found = found || p.ID == pointID
	}
	if !found {
		return nil, &agentproto.TaskError{Code: agentproto.CodePointNotFound, Message: fmt.Sprintf(
			"recovery point %s is no longer on the target (retention deleted it); verify a newer one", pointID)}
	}
	n, bad, err := r.VerifyPoint(pointID)
	if err != nil {
		return nil, replicate.TargetError(err)
	}
	res := &agentproto.VerifyResult{PointID: pointID, BlocksChecked: n, Mismatches: []agentproto.Mismatch{}}
	for _, m := range bad {
		res.Mismatches = append(res.Mismatches, agentproto.Mismatch{Disk: m.Disk, Offset: m.Offset})
	}
	return res, nil
}

// verify runs VerifyStore for the vault. It opens the replica for reading
// only, under the shared lock: no cycle can write while it reads.
func (ts *Tasks) verify(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	rep.Set(agentproto.Progress{Step: "verify " + p.PointID, Percent: 0})
	r, err := ts.openStore(ctx, t, p, openReadOnly)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res, err := VerifyStore(r, p.PointID)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(res)
	return json.RawMessage(b), nil
}
