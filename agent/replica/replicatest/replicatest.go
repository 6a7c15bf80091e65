// Package replicatest has helpers for tests of replica stores.
package replicatest

import (
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// Point creates a crash-consistent point at of every disk the store holds.
func Point(r replica.Store, id string, at time.Time) (replica.Point, error) {
	disks, err := r.Disks()
	if err != nil {
		return replica.Point{}, err
	}
	return r.CreatePoint(replica.PointSpec{ID: id, Time: at, Consistency: replica.ConsistencyCrash, Capture: "test", Disks: disks})
}

// Hashes reads every stored hash of a disk's replica.
func Hashes(r replica.Store, diskID string) ([]blocks.Hash, error) {
	size, err := r.DiskSize(diskID)
	if err != nil {
		return nil, err
	}
	out := make([]blocks.Hash, blocks.Count(size))
	return out, r.ReadHashes(diskID, 0, out)
}
