// Package replicatest has helpers for tests of replica stores.
package replicatest

import (
	"io"
	"testing"
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

// ReadPoint reads a disk of a recovery point whole, failing the test if
// it cannot.
func ReadPoint(t testing.TB, r replica.Store, point, disk string) []byte {
	t.Helper()
	pr, size, err := r.OpenPoint(point, disk)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	b, err := io.ReadAll(io.NewSectionReader(pr, 0, size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
