package models

import (
	"gorm.io/gorm"
)

// adoptRebuiltVMs gives a host that reports its inventory the VMs a
// rebuild made for it (rebuild.go): those of a rebuilt host of the same
// name whose id on the host (the driver's external id) is one it reports
// and it does not have yet. Each moves to it with its protection, disks
// and points; the pause the rebuild set ends, and a cycle queued meanwhile
// goes to it. A rebuilt host left without VMs is deleted. An external id
// that two rebuilt hosts of that name share is given only to the host of
// the same site (else to neither: which is it?).
func (s *Store) adoptRebuiltVMs(tx *gorm.DB, hostID string, reports []VMReport, known map[string]bool) error {
	var host Host
	if err := tx.First(&host, "id = ?", hostID).Error; err != nil || host.RebuiltAt != nil {
		return err
	}
	var wanted []string
	for _, r := range reports {
		if !known[r.ExternalID] {
			wanted = append(wanted, r.ExternalID)
		}
	}
	if len(wanted) == 0 {
		return nil
	}
	var candidates []struct {
		VM
		SiteID string
	}
	err := tx.Table("vms").Select("vms.*, hosts.site_id AS site_id").Joins("JOIN hosts ON hosts.id = vms.host_id").
		Where("hosts.rebuilt_at IS NOT NULL AND hosts.name = ? AND vms.external_id IN ?", host.Name, wanted).Find(&candidates).Error
	if err != nil || len(candidates) == 0 {
		return err
	}
	byExternal := map[string][]int{}
	for i, c := range candidates {
		byExternal[c.ExternalID] = append(byExternal[c.ExternalID], i)
	}
	placeholders := map[string]bool{}
	for _, ext := range wanted {
		matches := byExternal[ext]
		if len(matches) > 1 {
			var same []int
			for _, i := range matches {
				if candidates[i].SiteID == host.SiteID {
					same = append(same, i)
				}
			}
			matches = same
		}
		if len(matches) != 1 {
			continue
		}
		vm := candidates[matches[0]].VM
		placeholders[vm.HostID] = true
		if err := tx.Model(&VM{}).Where("id = ?", vm.ID).Update("host_id", hostID).Error; err != nil {
			return err
		}
		var p Protection
		if err := tx.Where("vm_id = ?", vm.ID).Limit(1).Find(&p).Error; err != nil {
			return err
		}
		if p.ID != "" {
			if err := tx.Model(&Task{}).Where("protection_id = ? AND host_id = ? AND state IN ?", p.ID, vm.HostID, []string{TaskWaiting, TaskQueued}).
				Update("host_id", hostID).Error; err != nil {
				return err
			}
			if p.PausedBy == RebuildActor.Username {
				if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"paused_at": nil, "paused_by": ""}).Error; err != nil {
					return err
				}
			}
		}
		if err := s.audit(tx, RebuildActor, "vm.rebuilt_attached", "vm", vm.ID, vm.Name, map[string]string{"host": host.Name, "host_id": hostID, "external_id": vm.ExternalID}); err != nil {
			return err
		}
	}
	for id := range placeholders {
		var left int64
		if err := tx.Model(&VM{}).Where("host_id = ?", id).Count(&left).Error; err != nil {
			return err
		}
		if left == 0 {
			if err := tx.Where("id = ? AND rebuilt_at IS NOT NULL", id).Delete(&Host{}).Error; err != nil {
				return err
			}
		}
	}
	return nil
}
