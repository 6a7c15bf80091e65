package models

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Replicas are named on their target by the vault's VM id (ReplicaKey).
// Before, a directory target named them by the VM's host-local id, so two
// hosts' VMs of one name shared one directory: each VM's points held the
// other's disks, and retention and deletion hit both. migrateReplicaKeys
// brings protections made then forward, once, when the vault starts:
//
//   - each gets its ReplicaKey, and, on a directory target, the old name
//     as LegacyReplicaKey: its host's agent moves the directory at its
//     next task, and the first task that succeeds clears the legacy key;
//   - where two or more protections share one old directory, nobody can
//     tell whose data is whose: they are made Critical (replica_shared),
//     naming each other, and get no tasks until an administrator disables
//     them (deleting the data) and protects them again; their legacy key
//     is cleared, so no task moves or deletes the shared directory.
//
// Replica disks made then also get the fields added with this: the source
// path (kept after a disk is removed) and whether they were copied.
func (s *Store) migrateReplicaKeys(ctx context.Context) error {
	now := s.Now()
	return s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.Exec(`UPDATE replica_disks SET source_path = (SELECT disks.path FROM disks WHERE disks.id = replica_disks.disk_id)
			WHERE source_path IS NULL OR source_path = ''`).Error; err != nil {
			return err
		}
		if err := tx.Exec(`UPDATE replica_disks SET copied_at = updated_at WHERE copied_at IS NULL AND EXISTS
			(SELECT 1 FROM recovery_points WHERE recovery_points.protection_id = replica_disks.protection_id)`).Error; err != nil {
			return err
		}
		var legacy []struct {
			ID, VMID, VMName, ExternalID, HostName, TargetKind, TargetPath string
		}
		err := tx.Table("protections").Select("protections.id, protections.vm_id, vms.name AS vm_name, vms.external_id, hosts.name AS host_name, targets.kind AS target_kind, targets.path AS target_path").
			Joins("JOIN vms ON vms.id = protections.vm_id").Joins("JOIN hosts ON hosts.id = vms.host_id").Joins("JOIN targets ON targets.id = protections.target_id").
			Where("protections.replica_key = ''").Find(&legacy).Error
		if err != nil || len(legacy) == 0 {
			return err
		}
		shared := map[string][]int{}
		for i, l := range legacy {
			key := ""
			if l.TargetKind == TargetDirectory {
				key = l.ExternalID
				loc := replicaLocation(Target{Kind: TargetDirectory, Path: l.TargetPath}, key)
				shared[loc] = append(shared[loc], i)
			}
			if err := tx.Model(&Protection{}).Where("id = ?", l.ID).Updates(map[string]any{"replica_key": l.VMID, "legacy_replica_key": key}).Error; err != nil {
				return err
			}
		}
		locs := make([]string, 0, len(shared))
		for loc := range shared {
			locs = append(locs, loc)
		}
		sort.Strings(locs)
		for _, loc := range locs {
			group := shared[loc]
			if len(group) < 2 {
				continue
			}
			var names []string
			for _, i := range group {
				names = append(names, fmt.Sprintf("%s on host %s", legacy[i].VMName, legacy[i].HostName))
			}
			for _, i := range group {
				reason := fmt.Sprintf("the replica directory %s is shared by %s: their recovery points may hold each other's disks. Disable protection of these VMs, deleting the replica data, then enable it again: new replicas are kept per VM (%s)",
					loc, strings.Join(names, " and "), agentproto.CodeReplicaShared)
				// No task may move or delete the shared directory as if it
				// were this VM's alone: the legacy key goes.
				if err := setHealth(tx, legacy[i].ID, HealthCritical, []string{reason}, map[string]any{"legacy_replica_key": "",
					"last_error_code": agentproto.CodeReplicaShared, "last_error_message": truncate(reason, 2000), "next_retry_at": nil}); err != nil {
					return err
				}
				if err := vmAlert(tx, legacy[i].ID, AlertProtectionCritical, HealthCritical, reason); err != nil {
					return err
				}
			}
		}
		s.log.Info("replicas are now named by the vault's VM id", "protections", len(legacy), "at", now)
		return nil
	})
}
