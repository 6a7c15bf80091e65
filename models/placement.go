package models

import (
	"context"
	"path/filepath"
	"time"
)

// Placement is where and how a protected VM is replicated: its policy, its
// target, and the real place of its replicas on that target (the directory
// or the Azure container the agent writes), and whether replication is
// paused, by whom and since when.
type Placement struct {
	PolicyID, PolicyName string
	TargetID, TargetName string
	TargetKind           string
	ReplicaLocation      string
	PausedAt             *time.Time
	PausedBy             string
}

// ReplicaLocationOf is where a protection's replicas live on its target:
// the directory the agent writes (the legacy one until its agent has moved
// it), or the VM's Azure container.
func ReplicaLocationOf(t Target, p Protection) string {
	if t.Kind == TargetDirectory && p.LegacyReplicaKey != "" {
		return filepath.Join(filepath.Clean(t.Path), p.LegacyReplicaKey)
	}
	return replicaLocation(t, p.replicaKey())
}

// loadPlacements fills in the Placement of each protected VM of vms.
func (s *Store) loadPlacements(ctx context.Context, vms []VMSummary) error {
	if len(vms) == 0 {
		return nil
	}
	ids := make([]string, len(vms))
	for i := range vms {
		ids[i] = vms[i].ID
	}
	var ps []Protection
	if err := s.db.WithContext(ctx).Where("vm_id IN ?", ids).Find(&ps).Error; err != nil {
		return translateError(err)
	}
	if len(ps) == 0 {
		return nil
	}
	var policyIDs, targetIDs []string
	for _, p := range ps {
		policyIDs, targetIDs = append(policyIDs, p.PolicyID), append(targetIDs, p.TargetID)
	}
	var policies []Policy
	if err := s.db.WithContext(ctx).Select("id", "name").Where("id IN ?", policyIDs).Find(&policies).Error; err != nil {
		return translateError(err)
	}
	var targets []Target
	if err := s.db.WithContext(ctx).Select("id", "name", "kind", "account_url", "container", "path").Where("id IN ?", targetIDs).Find(&targets).Error; err != nil {
		return translateError(err)
	}
	policyNames := map[string]string{}
	for _, p := range policies {
		policyNames[p.ID] = p.Name
	}
	targetByID := map[string]Target{}
	for _, t := range targets {
		targetByID[t.ID] = t
	}
	byVM := map[string]*Placement{}
	for _, p := range ps {
		t := targetByID[p.TargetID]
		byVM[p.VMID] = &Placement{PolicyID: p.PolicyID, PolicyName: policyNames[p.PolicyID], TargetID: p.TargetID, TargetName: t.Name,
			TargetKind: t.Kind, ReplicaLocation: ReplicaLocationOf(t, p), PausedAt: p.PausedAt, PausedBy: p.PausedBy}
	}
	for i := range vms {
		vms[i].Placement = byVM[vms[i].ID]
	}
	return nil
}

// ProtectedVMRef is one VM a policy or a target serves.
type ProtectedVMRef struct {
	ID, Name, HostName, ProtectionState string
}

// maxVMsListed caps the VMs a policy or target page lists; the count says
// how many there are in all.
const maxVMsListed = 200

// VMsOfPolicy lists the VMs protected under a policy (at most 200, by
// name) and how many there are.
func (s *Store) VMsOfPolicy(ctx context.Context, policyID string) ([]ProtectedVMRef, int64, error) {
	return s.vmsProtectedBy(ctx, "policy_id", policyID)
}

// VMsOfTarget lists the VMs whose replicas a target holds (at most 200, by
// name) and how many there are.
func (s *Store) VMsOfTarget(ctx context.Context, targetID string) ([]ProtectedVMRef, int64, error) {
	return s.vmsProtectedBy(ctx, "target_id", targetID)
}

func (s *Store) vmsProtectedBy(ctx context.Context, column, id string) ([]ProtectedVMRef, int64, error) {
	q := s.db.WithContext(ctx).Table("protections").Joins("JOIN vms ON vms.id = protections.vm_id").
		Joins("JOIN hosts ON hosts.id = vms.host_id").Where("protections."+column+" = ?", id)
	var n int64
	if err := q.Count(&n).Error; err != nil {
		return nil, 0, translateError(err)
	}
	var out []ProtectedVMRef
	err := q.Select("vms.id AS id, vms.name AS name, hosts.name AS host_name, protections.state AS protection_state").
		Order("vms.name, vms.id").Limit(maxVMsListed).Scan(&out).Error
	return out, n, translateError(err)
}
