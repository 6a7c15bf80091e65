package azuritetest

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
)

// KeyCredentials signs SAS tokens for one container with an account key,
// as the vault does, for tests and the benchmark that run a store without
// a vault.
type KeyCredentials struct {
	AccountURL string
	Container  string
	Key        string
	Issued     atomic.Int32 // tokens signed so far
}

func (k *KeyCredentials) sign(v sas.BlobSignatureValues) (blobtarget.SAS, error) {
	k.Issued.Add(1)
	cred, err := container.NewSharedKeyCredential(Account, k.Key)
	if err != nil {
		return blobtarget.SAS{}, err
	}
	v.Protocol, v.ExpiryTime, v.ContainerName = sas.ProtocolHTTPSandHTTP, time.Now().Add(time.Hour), k.Container
	q, err := v.SignWithSharedKey(cred)
	if err != nil {
		return blobtarget.SAS{}, err
	}
	return blobtarget.SAS{ContainerURL: k.AccountURL + "/" + k.Container, Token: q.Encode(), Expires: v.ExpiryTime}, nil
}

// ContainerSAS implements blobtarget.Credentials.
func (k *KeyCredentials) ContainerSAS(context.Context) (blobtarget.SAS, error) {
	return k.sign(sas.BlobSignatureValues{Permissions: (&sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true}).String()})
}

// SnapshotSAS implements blobtarget.Credentials.
func (k *KeyCredentials) SnapshotSAS(_ context.Context, name, snapshot string) (blobtarget.SAS, error) {
	at, err := time.Parse(blob.SnapshotTimeFormat, snapshot)
	if err != nil {
		return blobtarget.SAS{}, err
	}
	return k.sign(sas.BlobSignatureValues{BlobName: name, SnapshotTime: at, Permissions: (&sas.BlobPermissions{Read: true, Delete: true}).String()})
}
