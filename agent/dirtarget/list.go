package dirtarget

import (
	"os"
	"path/filepath"
	"sort"
)

// List names the VMs whose replicas are under root (directories holding
// disks/ and points/), for a reader of the whole target: a vault
// rebuilding its database. It only reads.
func List(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, e := range entries {
		if !e.IsDir() || !safeName.MatchString(e.Name()) {
			continue // .deleted-… and other leftovers
		}
		whole := true
		for _, sub := range []string{"disks", "points"} {
			if fi, err := os.Stat(filepath.Join(root, e.Name(), sub)); err != nil || !fi.IsDir() {
				whole = false
			}
		}
		if whole {
			keys = append(keys, e.Name())
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// StoredDiskSize is the source size a disk's replica holds, read from its
// metadata without opening the replica for writing (DiskSize does).
func (r *Replica) StoredDiskSize(diskID string) (int64, error) {
	m, err := r.readMeta(diskID)
	return m.SizeBytes, err
}
