package models

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Agents reach Azure Blob storage with SAS tokens the vault signs, never
// with the account key. Each protected VM has a container of its own,
// TARGET-CONTAINER-VMID, because a service SAS is scoped to a container or
// to one blob: a container per VM is what lets a token reach that VM's
// replicas and nothing else.

// sasLifetime is how long a SAS lives; agents fetch a new one 5 minutes
// before it ends, so a stolen token is short-lived too.
const sasLifetime = time.Hour

// maxContainerPrefix leaves room in Azure's 63 characters for "-" and the
// VM's 26-character id.
const maxContainerPrefix = 63 - 1 - 26

// StorageError is a failure of the vault's own call to the storage (it
// creates the VM's container). Recoverable ones are worth retrying.
type StorageError struct {
	Code        string
	Message     string
	Recoverable bool
}

func (e *StorageError) Error() string { return e.Code + ": " + e.Message }

// VMContainer is the container of a VM's replicas on an Azure Blob target.
func VMContainer(t *Target, vmID string) string {
	return t.Container + "-" + strings.TrimPrefix(vmID, prefixVM+"_")
}

// VMContainerURL is that container's URL.
func VMContainerURL(t *Target, vmID string) string {
	return strings.TrimRight(t.AccountURL, "/") + "/" + VMContainer(t, vmID)
}

// AzureAccountName is the storage account of a blob endpoint.
func AzureAccountName(accountURL string) (string, error) { return accountName(accountURL) }

// accountName reads the storage account from its blob endpoint:
// https://ACCOUNT.blob.core.windows.net, or an emulator's
// http://127.0.0.1:10000/ACCOUNT.
func accountName(accountURL string) (string, error) {
	u, err := url.Parse(accountURL)
	if err != nil {
		return "", err
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		return strings.SplitN(p, "/", 2)[0], nil
	}
	return strings.SplitN(u.Hostname(), ".", 2)[0], nil
}

// StorageCredentials signs a SAS for the VM container of the task's
// protection (req empty), or for one snapshot of one blob in it. Only the
// host the task is leased to gets one. For the tasks that set protection
// up, the vault first makes sure the container exists; later tasks find it
// or fail with replica_missing, and their cycles cost the vault no call to
// the storage.
func (s *Store) StorageCredentials(ctx context.Context, hostID, taskID string, req agentproto.StorageCredentialsRequest) (*agentproto.StorageCredentials, error) {
	var target Target
	var p Protection
	var kind string
	err := s.tx(ctx, func(tx *gorm.DB) error {
		t, err := leasedTask(tx, hostID, taskID)
		if err != nil {
			return err
		}
		if t.State != TaskLeased {
			return ErrLeaseLost
		}
		kind = t.Kind
		if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
			return err
		}
		return tx.First(&target, "id = ?", p.TargetID).Error
	})
	if err != nil {
		return nil, err
	}
	if target.Kind != TargetAzureBlob {
		return nil, &ConflictError{Code: "target_not_azure", Message: "this task's target is not Azure Blob storage; it needs no SAS"}
	}
	if (req.Blob == "") != (req.Snapshot == "") {
		return nil, &ValidationError{Fields: []FieldError{{Field: "snapshot", Reason: "give both blob and snapshot, or neither"}}}
	}
	secret, err := s.TargetCredential(&target)
	if err != nil {
		return nil, err
	}
	now := time.Now() // the storage checks SAS times against the real clock, not the vault's
	out := &agentproto.StorageCredentials{ContainerURL: VMContainerURL(&target, p.replicaKey())}
	switch target.CredentialKind {
	case CredentialAccountKey:
		key, err := sharedKey(&target, secret)
		if err != nil {
			return nil, err
		}
		v := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPS, StartTime: now.Add(-5 * time.Minute), ExpiryTime: now.Add(sasLifetime),
			ContainerName: VMContainer(&target, p.replicaKey())}
		if strings.HasPrefix(target.AccountURL, "http://") {
			v.Protocol = sas.ProtocolHTTPSandHTTP // a loopback emulator (validateAccountURL)
		}
		readOnly := kind == agentproto.TaskMaterialize // a recovery reads the point, never writes the replica
		if req.Blob == "" && readOnly {
			v.Permissions = (&sas.ContainerPermissions{Read: true, List: true}).String()
		} else if req.Blob == "" {
			v.Permissions = (&sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true}).String()
		} else {
			at, err := time.Parse(blob.SnapshotTimeFormat, req.Snapshot)
			if err != nil {
				return nil, &ValidationError{Fields: []FieldError{{Field: "snapshot", Reason: "must be a blob snapshot time, such as 2026-01-02T03:04:05.0000000Z"}}}
			}
			v.BlobName, v.SnapshotTime = req.Blob, at
			v.Permissions = (&sas.BlobPermissions{Read: true, Delete: !readOnly}).String()
		}
		q, err := v.SignWithSharedKey(key)
		if err != nil {
			return nil, err
		}
		out.SAS, out.ExpiresAt = q.Encode(), v.ExpiryTime.UTC()
	case CredentialSAS:
		// The operator gave a SAS, not the key: the vault cannot sign a
		// narrower one, so agents get that SAS as it is.
		token := strings.TrimPrefix(secret, "?")
		q, _ := url.ParseQuery(token)
		out.SAS, out.ExpiresAt = token, now.Add(sasLifetime)
		if se, err := time.Parse(time.RFC3339, q.Get("se")); err == nil {
			if se.Before(now.Add(5 * time.Minute)) {
				return nil, &StorageError{Code: "storage_sas_expired", Message: "the target's SAS token expired at " + se.UTC().Format(time.RFC3339) + "; put a new one under Settings → Targets"}
			}
			out.ExpiresAt = se.UTC()
		}
	default:
		return nil, fmt.Errorf("target %s has no credential", target.Name)
	}
	if req.Blob == "" && (kind == agentproto.TaskProtectionCheck || kind == agentproto.TaskCreateReplica) {
		c, err := vaultContainer(&target, secret, VMContainer(&target, p.replicaKey()))
		if err != nil {
			return nil, err
		}
		if err := ensureContainer(ctx, c); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// sharedKey is the target's account key, ready to sign.
func sharedKey(t *Target, secret string) (*container.SharedKeyCredential, error) {
	account, err := accountName(t.AccountURL)
	if err != nil {
		return nil, err
	}
	key, err := container.NewSharedKeyCredential(account, secret)
	if err != nil {
		return nil, &StorageError{Code: "storage_access_denied", Message: "the target's account key cannot sign: " + err.Error() + "; enter the key again under Settings → Targets"}
	}
	return key, nil
}

// vaultContainer is a client of one container of a target with the
// vault's own credential: the account key, or the operator's SAS.
func vaultContainer(t *Target, secret, name string) (*container.Client, error) {
	u := strings.TrimRight(t.AccountURL, "/") + "/" + name
	if t.CredentialKind != CredentialAccountKey {
		return container.NewClientWithNoCredential(u+"?"+strings.TrimPrefix(secret, "?"), storageClientOptions())
	}
	key, err := sharedKey(t, secret)
	if err != nil {
		return nil, err
	}
	return container.NewClientWithSharedKeyCredential(u, key, storageClientOptions())
}

func storageClientOptions() *container.ClientOptions {
	return &container.ClientOptions{ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 2, TryTimeout: 20 * time.Second}}}
}

// ensureContainer creates the container unless it exists.
func ensureContainer(ctx context.Context, c *container.Client) error {
	_, err := c.Create(ctx, nil)
	if err == nil || bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return nil
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		if re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized {
			return &StorageError{Code: "storage_access_denied", Message: fmt.Sprintf("the storage refused the vault's credential (%d %s); check the target's account key or SAS under Settings → Targets", re.StatusCode, re.ErrorCode)}
		}
		return &StorageError{Code: "storage_unavailable", Message: fmt.Sprintf("the storage answered %d %s when the vault created the VM's container; the task is retried", re.StatusCode, re.ErrorCode), Recoverable: true}
	}
	return &StorageError{Code: "storage_unavailable", Message: "the vault cannot reach the storage: " + agentproto.RedactSAS(err.Error()) + "; the task is retried", Recoverable: true}
}

// queueContainerCleanup records the VM container of a protection whose data
// an agent deleted, for the vault to delete.
func queueContainerCleanup(tx *gorm.DB, now time.Time, protectionID string) error {
	var p Protection
	if err := tx.First(&p, "id = ?", protectionID).Error; err != nil {
		return err
	}
	var t Target
	if err := tx.First(&t, "id = ?", p.TargetID).Error; err != nil || t.Kind != TargetAzureBlob {
		return err
	}
	return tx.Create(&ContainerCleanup{ID: NewID(prefixCleanup), TargetID: t.ID, Container: VMContainer(&t, p.replicaKey()), NextAttemptAt: now}).Error
}

// CleanUpContainers deletes the emptied VM containers that are due, and
// returns how many went; a failure is tried again after a back-off.
func (s *Store) CleanUpContainers(ctx context.Context) (int, error) {
	var due []ContainerCleanup
	if err := s.db.WithContext(ctx).Where("next_attempt_at <= ?", s.Now()).Order("created_at").Limit(20).Find(&due).Error; err != nil {
		return 0, err
	}
	done := 0
	var errs []error
	for _, c := range due {
		err := s.deleteContainer(ctx, c)
		if err == nil {
			if err := s.db.WithContext(ctx).Delete(&ContainerCleanup{}, "id = ?", c.ID).Error; err != nil {
				return done, err
			}
			done++
			continue
		}
		errs = append(errs, fmt.Errorf("container %s: %w", c.Container, err))
		n := c.Attempts + 1
		if err := s.db.WithContext(ctx).Model(&ContainerCleanup{}).Where("id = ?", c.ID).Updates(map[string]any{"attempts": n,
			"last_error": truncate(agentproto.RedactSAS(err.Error()), 1000), "next_attempt_at": s.Now().Add(deliveryBackoff(n))}).Error; err != nil {
			return done, err
		}
	}
	return done, errors.Join(errs...)
}

func (s *Store) deleteContainer(ctx context.Context, c ContainerCleanup) error {
	var t Target
	if err := s.db.WithContext(ctx).First(&t, "id = ?", c.TargetID).Error; err != nil {
		return err
	}
	secret, err := s.TargetCredential(&t)
	if err != nil {
		return err
	}
	client, err := vaultContainer(&t, secret, c.Container)
	if err != nil {
		return err
	}
	_, err = client.Delete(ctx, nil)
	if err == nil || bloberror.HasCode(err, bloberror.ContainerNotFound, bloberror.ContainerBeingDeleted) {
		return nil
	}
	return err
}
