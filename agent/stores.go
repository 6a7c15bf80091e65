package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// openStore opens the VM's replicas on the task's target. create says the
// directory may be made (create_replica); other tasks need it to exist.
func (a *agent) openStore(ctx context.Context, t agentproto.Task, p agentproto.ReplicationPayload, create bool) (replica.Store, error) {
	switch p.Target.Kind {
	case "directory":
		if create {
			r, err := dirtarget.Open(p.Target.Path, p.VMID)
			if err != nil {
				return nil, replicate.TargetError(err)
			}
			return r, nil
		}
		// A target that is not there (a NAS not mounted) may come back: retried.
		// A target that is there without this VM's replicas will not: they
		// were deleted, and retrying cannot bring them back.
		if _, err := os.Stat(p.Target.Path); err != nil {
			return nil, replicate.TargetError(fmt.Errorf("the target directory (is it mounted?): %w", err))
		}
		r, err := dirtarget.OpenExisting(p.Target.Path, p.VMID)
		if errors.Is(err, fs.ErrNotExist) && !dirtarget.Mounted(p.Target.Path) {
			return nil, &agentproto.TaskError{Code: "target_unavailable", Recoverable: true, Message: fmt.Sprintf(
				"%s does not hold the Lifeboat target (no %s): is the share mounted? The cycle is retried", p.Target.Path, dirtarget.MarkerName)}
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &agentproto.TaskError{Code: "replica_missing", Message: fmt.Sprintf(
				"the replicas of VM %s are gone from %s, though the target directory is there; disable protection and enable it again to make new ones", p.VMID, p.Target.Path)}
		}
		if err != nil {
			return nil, replicate.TargetError(err)
		}
		return r, nil
	case "azure_blob":
		r, err := blobtarget.Open(ctx, p.VMID, &vaultCredentials{vault: a.vault, taskID: t.ID},
			blobtarget.Options{Concurrency: a.opts.storageConcurrency})
		if err != nil {
			return nil, replicate.TargetError(err)
		}
		return r, nil
	}
	return nil, &agentproto.TaskError{Code: "target_not_supported", Message: fmt.Sprintf("this agent cannot write to %q targets; upgrade it", p.Target.Kind)}
}

// vaultCredentials asks the vault for the SAS tokens of one task.
type vaultCredentials struct {
	vault  *client.Client
	taskID string
}

func (v *vaultCredentials) ContainerSAS(ctx context.Context) (blobtarget.SAS, error) {
	return v.get(ctx, agentproto.StorageCredentialsRequest{})
}

func (v *vaultCredentials) SnapshotSAS(ctx context.Context, blobName, snapshot string) (blobtarget.SAS, error) {
	return v.get(ctx, agentproto.StorageCredentialsRequest{Blob: blobName, Snapshot: snapshot})
}

func (v *vaultCredentials) get(ctx context.Context, req agentproto.StorageCredentialsRequest) (blobtarget.SAS, error) {
	var out agentproto.StorageCredentials
	if err := v.vault.Post(ctx, agentproto.TaskStorageCredentialsPath(v.taskID), req, &out); err != nil {
		if ve, ok := err.(*client.VaultError); ok && client.Permanent(err) {
			return blobtarget.SAS{}, &agentproto.TaskError{Code: ve.Code, Message: ve.Message}
		}
		return blobtarget.SAS{}, &agentproto.TaskError{Code: "storage_credentials_unavailable",
			Message: "the vault did not give a SAS for the storage: " + err.Error(), Recoverable: true}
	}
	if out.ExpiresAt.IsZero() {
		out.ExpiresAt = time.Now().Add(time.Hour)
	}
	return blobtarget.SAS{ContainerURL: out.ContainerURL, Token: out.SAS, Expires: out.ExpiresAt}, nil
}
