package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// azureSource is an Azure Blob target to rebuild from: the account's
// blob endpoint, the target's container prefix (each VM's replicas are in
// a container PREFIX-VMID) and the account key.
type azureSource struct {
	AccountURL, Prefix, Key string
}

// parseAzureSource reads azure:https://ACCOUNT.blob.core.windows.net/PREFIX
// (an emulator's http://127.0.0.1:10000/ACCOUNT/PREFIX): the prefix is the
// last segment of the path.
func parseAzureSource(where string) (azureSource, error) {
	u, err := url.Parse(strings.TrimRight(where, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return azureSource{}, fmt.Errorf("%q is not a blob endpoint URL", where)
	}
	i := strings.LastIndex(u.Path, "/")
	if i < 0 || u.Path[i+1:] == "" {
		return azureSource{}, fmt.Errorf("%q names no container prefix: give https://ACCOUNT.blob.core.windows.net/PREFIX", where)
	}
	prefix := u.Path[i+1:]
	u.Path = u.Path[:i]
	return azureSource{AccountURL: u.String(), Prefix: prefix}, nil
}

// readAzureTarget reads every VM container of the target through
// blobtarget's readers, with SAS tokens that allow reading and listing
// only: the rebuild cannot change the replicas, whatever it does.
func readAzureTarget(ctx context.Context, src azureSource, log *slog.Logger) ([]models.RebuildReplica, error) {
	account, err := models.AzureAccountName(src.AccountURL)
	if err != nil {
		return nil, &commandError{agentproto.CodeRebuildNotATarget, fmt.Sprintf("--from-target: %v", err)}
	}
	cred, err := service.NewSharedKeyCredential(account, src.Key)
	if err != nil {
		return nil, &commandError{agentproto.CodeRebuildNotATarget, fmt.Sprintf("--account-key-file: not the account key of %s: %v", account, err)}
	}
	svc, err := service.NewClientWithSharedKeyCredential(src.AccountURL, cred, nil)
	if err != nil {
		return nil, &commandError{agentproto.CodeRebuildNotATarget, fmt.Sprintf("--from-target %s: %v", src.AccountURL, err)}
	}
	var names []string
	pager := svc.NewListContainersPager(&service.ListContainersOptions{Prefix: to.Ptr(src.Prefix + "-")})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			if bloberror.HasCode(err, bloberror.AuthenticationFailed, bloberror.AuthorizationFailure) {
				return nil, &commandError{agentproto.CodeRebuildNotATarget, fmt.Sprintf("the storage account %s refused the account key: %v", account, err)}
			}
			return nil, fmt.Errorf("list the containers of %s: %w", src.AccountURL, err)
		}
		for _, c := range page.ContainerItems {
			names = append(names, *c.Name)
		}
	}
	if len(names) == 0 {
		return nil, &commandError{agentproto.CodeRebuildNotATarget, fmt.Sprintf(
			"the storage account %s has no container named %s-…: no VM was protected to a target with container prefix %q there", account, src.Prefix, src.Prefix)}
	}
	var out []models.RebuildReplica
	manifests := 0
	for _, name := range names {
		key := "vm_" + strings.TrimPrefix(name, src.Prefix+"-")
		creds := &readOnlyCredentials{accountURL: strings.TrimRight(src.AccountURL, "/"), container: name, cred: cred}
		r, err := blobtarget.Open(ctx, key, creds, blobtarget.Options{})
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", name, err)
		}
		rep, err := readStore(key, r, log)
		r.Close()
		if err != nil {
			log.Warn("a VM's container cannot be read; it is not rebuilt", "container", name, "error", err)
			rep = models.RebuildReplica{Key: key, Unreadable: err.Error()}
		}
		manifests += len(rep.Points)
		out = append(out, rep)
	}
	if manifests == 0 {
		return nil, &commandError{agentproto.CodeRebuildNoManifests, fmt.Sprintf(
			"the containers %s-… of %s hold no recovery point manifest (%d VM container(s), none with a point): there is nothing to rebuild from", src.Prefix, account, len(names))}
	}
	return out, nil
}

// readOnlyCredentials signs SAS tokens that may read and list a VM's
// container, and read its snapshots: nothing else.
type readOnlyCredentials struct {
	accountURL, container string
	cred                  *service.SharedKeyCredential
}

func (c *readOnlyCredentials) sign(v sas.BlobSignatureValues) (blobtarget.SAS, error) {
	v.Protocol, v.ExpiryTime, v.ContainerName = sas.ProtocolHTTPSandHTTP, time.Now().Add(time.Hour), c.container
	q, err := v.SignWithSharedKey(c.cred)
	if err != nil {
		return blobtarget.SAS{}, err
	}
	return blobtarget.SAS{ContainerURL: c.accountURL + "/" + c.container, Token: q.Encode(), Expires: v.ExpiryTime}, nil
}

// ContainerSAS implements blobtarget.Credentials.
func (c *readOnlyCredentials) ContainerSAS(context.Context) (blobtarget.SAS, error) {
	return c.sign(sas.BlobSignatureValues{Permissions: (&sas.ContainerPermissions{Read: true, List: true}).String()})
}

// SnapshotSAS implements blobtarget.Credentials.
func (c *readOnlyCredentials) SnapshotSAS(_ context.Context, name, snapshot string) (blobtarget.SAS, error) {
	at, err := time.Parse(blob.SnapshotTimeFormat, snapshot)
	if err != nil {
		return blobtarget.SAS{}, err
	}
	return c.sign(sas.BlobSignatureValues{BlobName: name, SnapshotTime: at, Permissions: (&sas.BlobPermissions{Read: true}).String()})
}
