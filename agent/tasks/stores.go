package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// openMode is how a task opens a VM's replicas.
type openMode int

const (
	openExisting openMode = iota // the replicas must exist (a cycle must not make fresh ones in an unmounted share)
	openCreate                   // the replica directory may be made (create_replica)
	openReadOnly                 // reading only (verify), beside other readers but no writer
)

// replicaKey is the replica's name on the target: the vault's VM id, so
// that two hosts' VMs of one name never share replicas. A vault older than
// that sends none, and the host-local id is all there is.
func replicaKey(p agentproto.ReplicationPayload) string {
	if p.ReplicaKey != "" {
		return p.ReplicaKey
	}
	return p.VMID
}

// openStore opens the VM's replicas on the task's target, holding the
// host's lock on them until Close: one writer at a time, or readers only.
func (ts *Tasks) openStore(ctx context.Context, t agentproto.Task, p agentproto.ReplicationPayload, mode openMode) (replica.Store, error) {
	where := p.Target.Path
	if p.Target.Kind == "azure_blob" {
		where = p.Target.ContainerURL
	}
	unlock, err := ts.lockReplica(ctx, where, replicaKey(p), mode == openReadOnly)
	if err != nil {
		return nil, err
	}
	r, err := ts.open(ctx, t, p, mode)
	if err != nil {
		unlock()
		return nil, err
	}
	return &lockedStore{Store: r, unlock: unlock}, nil
}

func (ts *Tasks) open(ctx context.Context, t agentproto.Task, p agentproto.ReplicationPayload, mode openMode) (replica.Store, error) {
	key := replicaKey(p)
	switch p.Target.Kind {
	case "directory":
		if mode != openReadOnly {
			if err := moveLegacyReplica(p.Target.Path, p.LegacyReplicaKey, key); err != nil {
				return nil, replicate.TargetError(err)
			}
		} else if p.LegacyReplicaKey != "" {
			if _, err := os.Stat(filepath.Join(p.Target.Path, key)); errors.Is(err, fs.ErrNotExist) {
				key = p.LegacyReplicaKey // not moved yet; a reader does not move it
			}
		}
		if mode == openCreate {
			if _, err := os.Stat(p.Target.Path); p.Target.MustExist && err != nil {
				return nil, &agentproto.TaskError{Code: agentproto.CodeTargetUnavailable, Recoverable: true, Message: fmt.Sprintf(
					"the target directory %s is not there (%v), and the target does not allow creating it: is the share mounted? The task is retried", p.Target.Path, err)}
			}
			if p.Target.InUse && !dirtarget.Mounted(p.Target.Path) {
				return nil, &agentproto.TaskError{Code: agentproto.CodeTargetUnavailable, Recoverable: true, Message: fmt.Sprintf(
					"%s holds no %s, though other VMs' replicas are on this target: is the share mounted? The task is retried", p.Target.Path, dirtarget.MarkerName)}
			}
			r, err := dirtarget.Open(p.Target.Path, key)
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
		r, err := dirtarget.OpenExisting(p.Target.Path, key)
		if errors.Is(err, fs.ErrNotExist) && !dirtarget.Mounted(p.Target.Path) {
			return nil, &agentproto.TaskError{Code: agentproto.CodeTargetUnavailable, Recoverable: true, Message: fmt.Sprintf(
				"%s does not hold the Lifeboat target (no %s): is the share mounted? The task is retried", p.Target.Path, dirtarget.MarkerName)}
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &agentproto.TaskError{Code: agentproto.CodeReplicaMissing, Message: fmt.Sprintf(
				"the replicas of VM %s are gone from %s, though the target directory is there; disable protection and enable it again to make new ones", p.VMID, p.Target.Path)}
		}
		if err != nil {
			return nil, replicate.TargetError(err)
		}
		return r, nil
	case "azure_blob":
		r, err := blobtarget.Open(ctx, key, &vaultCredentials{vault: ts.d.Vault, taskID: t.ID},
			blobtarget.Options{Concurrency: ts.d.StorageConcurrency, CacheDir: filepath.Join(ts.d.State.Path, "hashcache")})
		if err != nil {
			return nil, replicate.TargetError(err)
		}
		return r, nil
	}
	return nil, &agentproto.TaskError{Code: agentproto.CodeTargetNotSupported, Message: fmt.Sprintf("this agent cannot write to %q targets; upgrade it", p.Target.Kind)}
}

// lockedStore releases the host's lock on the replica when closed.
type lockedStore struct {
	replica.Store
	unlock func()
}

func (l *lockedStore) Close() error {
	err := l.Store.Close()
	l.unlock()
	return err
}

// Check passes the Azure store's check through.
func (l *lockedStore) Check() error {
	if c, ok := l.Store.(interface{ Check() error }); ok {
		return c.Check()
	}
	return nil
}

// BatchBytes passes the store's batch size through to the engine.
func (l *lockedStore) BatchBytes() int64 {
	if b, ok := l.Store.(interface{ BatchBytes() int64 }); ok {
		return b.BatchBytes()
	}
	return 0
}

// lockPath is the file lockReplica locks for one VM's replica on one
// target.
func (ts *Tasks) lockPath(where, key string) string {
	sum := sha256.Sum256([]byte(where + "\x00" + key))
	return filepath.Join(ts.d.State.Path, "locks", hex.EncodeToString(sum[:12])+".lock")
}

// lockReplica takes this host's lock on one VM's replica on one target: a
// file lock in the state directory, exclusive for writers and shared for
// readers, never waited for. Tasks of one VM run one at a time anyway (the
// vault leases them so); this makes it hold on the host even if it did
// not, and for Azure targets too.
func (ts *Tasks) lockReplica(ctx context.Context, where, key string, shared bool) (func(), error) {
	dir := filepath.Join(ts.d.State.Path, "locks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(ts.lockPath(where, key), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	// A run the vault superseded may still be unwinding (an fsync, pages
	// in flight) when the next attempt starts: wait a little for it.
	err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	for wait := time.Now().Add(lockPatience); errors.Is(err, unix.EWOULDBLOCK) && time.Now().Before(wait); {
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &agentproto.TaskError{Code: agentproto.CodeReplicaLocked, Recoverable: true, Message: fmt.Sprintf(
				"another task on this host holds the replica of VM %s; the task is retried", key)}
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}

// lockPatience is how long a task waits for another run on this host to
// let go of a replica before it fails, recoverably, with replica_locked.
var lockPatience = 30 * time.Second

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
		var ve *client.VaultError
		if errors.As(err, &ve) && client.Permanent(err) {
			return blobtarget.SAS{}, &agentproto.TaskError{Code: ve.Code, Message: ve.Message}
		}
		return blobtarget.SAS{}, &agentproto.TaskError{Code: agentproto.CodeStorageCredentials,
			Message: "the vault did not give a SAS for the storage: " + err.Error(), Recoverable: true}
	}
	if out.ExpiresAt.IsZero() {
		out.ExpiresAt = time.Now().Add(time.Hour)
	}
	return blobtarget.SAS{ContainerURL: out.ContainerURL, Token: out.SAS, Expires: out.ExpiresAt}, nil
}
