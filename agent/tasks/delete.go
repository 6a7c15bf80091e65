package tasks

import (
	"context"
	"errors"

	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// deleteReplica deletes the VM's replicas and recovery points from the
// target: its protection was disabled with its data deleted. The target is
// opened as a cycle opens it, so an unmounted share fails (and is retried)
// rather than being reported deleted; replicas that are gone already are
// success.
func (ts *Tasks) deleteReplica(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	rep.Set(agentproto.Progress{Step: "delete the replicas", Percent: 0})
	r, err := ts.openStore(ctx, t, p, openExisting)
	var te *agentproto.TaskError
	if errors.As(err, &te) && te.Code == agentproto.CodeReplicaMissing {
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
