package dirtarget

import (
	"errors"
	"io/fs"
	"path/filepath"
)

// DescriptorName is the VM descriptor's file, beside disks/ and points/:
// which VM the replicas are of, so that the target describes itself to a
// vault that lost its database.
const DescriptorName = "vm.json"

// Descriptor is the VM descriptor, or nil when none was written (replicas
// made by an agent older than it).
func (r *Replica) Descriptor() ([]byte, error) {
	b, err := readFile(r.fs, filepath.Join(r.dir, DescriptorName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// SetDescriptor replaces the VM descriptor as the other metadata is:
// written to a temporary file, fsynced, renamed, the directory fsynced.
func (r *Replica) SetDescriptor(b []byte) error {
	if err := r.recoverOnce(); err != nil {
		return err
	}
	return writeAtomic(r.fs, filepath.Join(r.dir, DescriptorName), b)
}
