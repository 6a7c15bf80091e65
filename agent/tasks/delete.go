package tasks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
	if p.KeepReplicaRoot != "" && p.Target.Kind == "directory" {
		if err := notTheKeptReplica(filepath.Join(p.Target.Path, replicaKey(p)), filepath.Join(p.KeepReplicaRoot, replicaKey(p))); err != nil {
			return nil, err
		}
	}
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

// notTheKeptReplica refuses to delete old when it is keep, or holds it,
// as the filesystem resolves them: two target paths can name one
// directory (a symlink, a bind mount, the same share mounted twice).
func notTheKeptReplica(old, keep string) error {
	oldReal, err1 := filepath.EvalSymlinks(old)
	keepReal, err2 := filepath.EvalSymlinks(keep)
	if err1 != nil || err2 != nil {
		return nil // one of them is not there: they are not one directory
	}
	same := oldReal == keepReal || strings.HasPrefix(keepReal, strings.TrimSuffix(oldReal, "/")+"/")
	if a, err := os.Stat(oldReal); err == nil {
		if b, err := os.Stat(keepReal); err == nil && os.SameFile(a, b) {
			same = true
		}
	}
	if same {
		return &agentproto.TaskError{Code: agentproto.CodeReplicaAliased, Message: fmt.Sprintf(
			"the old replica %s is the new one %s, or holds it (the two target paths name one directory on this host); nothing was deleted", old, keep)}
	}
	return nil
}
