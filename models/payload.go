package models

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// protectionWork is what every task of a protection is built from: the
// protection as it is now, its VM and host, and the payload naming the
// target and the disks to replicate.
type protectionWork struct {
	Protection Protection
	VM         VM
	Host       Host
	Target     Target
	Policy     Policy
	Payload    agentproto.ReplicationPayload
}

// loadWork builds the payload of a protection's next task from the
// database, never from an earlier task's payload: a disk added to the VM
// since is in it (new), a removed one is not.
func loadWork(tx *gorm.DB, protectionID string) (*protectionWork, error) {
	var w protectionWork
	if err := tx.First(&w.Protection, "id = ?", protectionID).Error; err != nil {
		return nil, err
	}
	p := w.Protection
	if err := tx.First(&w.VM, "id = ?", p.VMID).Error; err != nil {
		return nil, err
	}
	if err := tx.First(&w.Host, "id = ?", w.VM.HostID).Error; err != nil {
		return nil, err
	}
	if err := tx.First(&w.Target, "id = ?", p.TargetID).Error; err != nil {
		return nil, err
	}
	if err := tx.First(&w.Policy, "id = ?", p.PolicyID).Error; err != nil {
		return nil, err
	}
	pl := agentproto.ReplicationPayload{ProtectionID: p.ID, VMID: w.VM.ExternalID, VMName: w.VM.Name,
		ReplicaKey: p.ReplicaKey, LegacyReplicaKey: p.LegacyReplicaKey, RetentionHours: w.Policy.RetentionHours}
	pl.Target.Kind, pl.Target.Path = w.Target.Kind, w.Target.Path
	pl.Target.MustExist = w.Target.Kind == TargetDirectory && !w.Target.CreatePath
	if w.Target.Kind == TargetAzureBlob {
		pl.Target.ContainerURL = VMContainerURL(&w.Target, p.replicaKey())
	}
	var replicas []ReplicaDisk
	if err := tx.Where("protection_id = ? AND removed_at IS NULL", p.ID).Find(&replicas).Error; err != nil {
		return nil, err
	}
	var disks []Disk
	if err := tx.Where("vm_id = ?", w.VM.ID).Find(&disks).Error; err != nil {
		return nil, err
	}
	byID := map[string]Disk{}
	for _, d := range disks {
		byID[d.ID] = d
	}
	for _, rd := range replicas {
		d, ok := byID[rd.DiskID]
		if !ok {
			continue // removed since the last inventory: reconcileDisks marks it
		}
		pl.Disks = append(pl.Disks, agentproto.ReplicaDisk{ReplicaID: rd.Name, Path: d.Path,
			SizeBytes: max(d.SizeBytes, rd.SizeBytes), New: rd.CopiedAt == nil})
	}
	sort.Slice(pl.Disks, func(i, j int) bool { return pl.Disks[i].Path < pl.Disks[j].Path })
	descriptor, err := describeReplicas(tx, &w, replicas, byID)
	if err != nil {
		return nil, err
	}
	pl.Descriptor = descriptor
	w.Payload = pl
	return &w, nil
}

// replicaLocation is where a protection's replicas are on its target, for
// telling two protections apart: the cleaned directory and the key.
func replicaLocation(t Target, key string) string {
	if t.Kind == TargetAzureBlob {
		return VMContainerURL(&t, key)
	}
	return filepath.Join(filepath.Clean(t.Path), key)
}

// checkLocationFree refuses a protection of vm to target when another
// protection already keeps its replicas at that place (two targets may
// name one directory).
func checkLocationFree(tx *gorm.DB, target Target, key, exceptProtectionID string) error {
	if target.Kind != TargetDirectory {
		return nil // a container per VM id: no other VM can have it
	}
	var others []struct {
		ID, ReplicaKey, LegacyReplicaKey, Path, VMName string
	}
	err := tx.Table("protections").Select("protections.id, protections.replica_key, protections.legacy_replica_key, targets.path, vms.name AS vm_name").
		Joins("JOIN targets ON targets.id = protections.target_id").Joins("JOIN vms ON vms.id = protections.vm_id").
		Where("targets.kind = ? AND protections.id <> ?", TargetDirectory, exceptProtectionID).Find(&others).Error
	if err != nil {
		return err
	}
	want := replicaLocation(target, key)
	for _, o := range others {
		t := Target{Kind: TargetDirectory, Path: o.Path}
		for _, k := range []string{o.ReplicaKey, o.LegacyReplicaKey} {
			if k != "" && replicaLocation(t, k) == want {
				return &ConflictError{Code: "replica_location_claimed", Message: fmt.Sprintf(
					"VM %s already keeps its replicas in %s; protect this VM to another target, or disable that protection first", o.VMName, want)}
			}
		}
	}
	return nil
}

// replicaKey names the protection's replicas: the vault id of the VM first
// protected. It stays when a re-protect makes another VM (the failed-over
// one, on the recovery host) the one replicated into them.
func (p Protection) replicaKey() string {
	if p.ReplicaKey != "" {
		return p.ReplicaKey
	}
	return p.VMID
}

// pointsInUse are the points a protection's unfinished recovery tasks
// will read: a cycle's retention must leave them (the payload's
// KeepPoints, set where cycles and resyncs are made, the only tasks that
// prune).
func pointsInUse(tx *gorm.DB, protectionID string) ([]string, error) {
	var payloads []string
	if err := tx.Model(&Task{}).Where("protection_id = ? AND kind = ? AND state IN ?", protectionID, agentproto.TaskMaterialize,
		[]string{TaskWaiting, TaskQueued, TaskLeased}).Pluck("payload", &payloads).Error; err != nil {
		return nil, err
	}
	var out []string
	for _, raw := range payloads {
		var pl agentproto.MaterializePayload
		if json.Unmarshal([]byte(raw), &pl) == nil && pl.PointID != "" {
			out = append(out, pl.PointID)
		}
	}
	return out, nil
}

// targetInUseBy says whether a target holds the replicas of a protection
// other than the one given (one that has made a point there). Only the
// tasks that may make a replica directory (the protection check and
// create replica, of enabling protection and of a move) need it: their
// payloads are built by startEnableJob and StartMove, not every cycle's.
func targetInUseBy(tx *gorm.DB, targetID, exceptProtectionID string) (bool, error) {
	var n int64
	err := tx.Model(&Protection{}).Where("target_id = ? AND id <> ? AND last_recovery_point_at IS NOT NULL", targetID, exceptProtectionID).
		Limit(1).Count(&n).Error
	return n > 0, err
}
