package models

import (
	"sort"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// describeReplicas is the VM descriptor a protection's tasks carry, which
// the agent keeps beside the replicas: which VM they are of (the vault's
// ids and the host's), its disks and its policy. Replica storage then
// describes itself to a vault rebuilt without its database (rebuild.go).
// It holds nothing that changes every cycle, so the agent rewrites it only
// when the VM, its disks or its policy change.
func describeReplicas(tx *gorm.DB, w *protectionWork, replicas []ReplicaDisk, disks map[string]Disk) (*agentproto.ReplicaDescriptor, error) {
	var site Site
	if err := tx.Limit(1).Find(&site, "id = ?", w.Host.SiteID).Error; err != nil {
		return nil, err
	}
	d := &agentproto.ReplicaDescriptor{Format: agentproto.ReplicaDescriptorFormat, VaultVMID: w.VM.ID, ReplicaKey: w.Protection.replicaKey(),
		ProtectionID: w.Protection.ID, ExternalID: w.VM.ExternalID, Name: w.VM.Name, HostName: w.Host.Name, SiteName: site.Name,
		TargetName: w.Target.Name,
		Disks:      []agentproto.DescribedDisk{}, Policy: describePolicy(w.Policy)}
	for _, rd := range replicas {
		disk, ok := disks[rd.DiskID]
		if !ok {
			continue
		}
		d.Disks = append(d.Disks, agentproto.DescribedDisk{ReplicaID: rd.Name, DiskID: disk.ID, Path: disk.Path,
			SizeBytes: max(disk.SizeBytes, rd.SizeBytes), Format: disk.Format})
	}
	sort.Slice(d.Disks, func(i, j int) bool { return d.Disks[i].Path < d.Disks[j].Path })
	return d, nil
}

func describePolicy(p Policy) *agentproto.DescribedPolicy {
	return &agentproto.DescribedPolicy{Name: p.Name, CopyFrequencySeconds: p.CopyFrequencySeconds, RetentionHours: p.RetentionHours,
		AppConsistentFrequencyHours: p.AppConsistentFrequencyHours, ResyncWindowStart: p.ResyncWindowStart, ResyncWindowEnd: p.ResyncWindowEnd,
		WorkHoursStart: p.WorkHoursStart, WorkHoursEnd: p.WorkHoursEnd, WorkHoursMbps: p.WorkHoursMbps, OffHoursMbps: p.OffHoursMbps}
}
