package blobtarget

import (
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// DescriptorName is the VM descriptor's block blob in the VM's container:
// which VM the replicas are of, so that the container describes itself to
// a vault that lost its database.
const DescriptorName = "vm.json"

// Descriptor is the VM descriptor, or nil when none was written (replicas
// made by an agent older than it).
func (r *Replica) Descriptor() ([]byte, error) {
	b, _, err := r.download(r.client.NewBlobClient(DescriptorName))
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(err)
	}
	return b, nil
}

// SetDescriptor replaces the VM descriptor: a block blob upload of one
// request is atomic, readers see the old one or the new one.
func (r *Replica) SetDescriptor(b []byte) error {
	if _, err := r.client.NewBlockBlobClient(DescriptorName).UploadBuffer(r.ctx, b, nil); err != nil {
		return classify(err)
	}
	return nil
}

// StoredDiskSize is the source size a disk's replica holds, read from its
// metadata blob alone.
func (r *Replica) StoredDiskSize(diskID string) (int64, error) {
	m, _, err := r.readMeta(diskID)
	return m.SizeBytes, err
}
