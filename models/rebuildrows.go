package models

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// rebuilder makes the rows of one rebuild, reusing the sites, hosts and
// policies that several VMs share.
type rebuilder struct {
	s        *Store
	tx       *gorm.DB
	now      time.Time
	target   Target
	sites    map[string]string // name → id
	hosts    map[string]string // site id + name → id
	policies map[string]Policy // name → policy
}

// replica rebuilds one VM, or says why not (skipped).
func (b *rebuilder) replica(r RebuildReplica) (*RebuiltVM, string, error) {
	if r.Unreadable != "" {
		return nil, fmt.Sprintf("%s: unreadable: %s", r.Key, r.Unreadable), nil
	}
	points := validPoints(r.Points)
	if len(points) == 0 {
		return nil, fmt.Sprintf("%s: no recovery point", r.Key), nil
	}
	d := r.Descriptor
	var unknown []string
	if dropped := len(r.Points) - len(points); dropped > 0 {
		unknown = append(unknown, fmt.Sprintf("%d recovery point manifest(s) whose consistency is not app, crash or inconsistent, or that name no disk: not rebuilt", dropped))
	}
	if d == nil {
		d = &agentproto.ReplicaDescriptor{Name: r.Key, ExternalID: "unknown:" + r.Key, HostName: UndescribedHostName, SiteName: "Rebuilt"}
		unknown = append(unknown, "the VM's name, its host and id there, its disks' paths and its policy (the replicas have no descriptor)")
	}
	vmID := d.VaultVMID
	if !free(b.tx, &VM{}, vmID) {
		vmID = r.Key
	}
	if !free(b.tx, &VM{}, vmID) {
		return nil, fmt.Sprintf("%s: the vault has its VM already (rebuilt from another target?)", r.Key), nil
	}
	protectionID := freeOr(b.tx, &Protection{}, d.ProtectionID, prefixProtection)
	hostID, err := b.host(d.SiteName, d.HostName)
	if err != nil {
		return nil, "", err
	}
	policy, note, err := b.policy(d.Policy, points)
	if err != nil {
		return nil, "", err
	}
	if note != "" {
		unknown = append(unknown, note)
	}
	vm := VM{ID: vmID, HostID: hostID, ExternalID: d.ExternalID, Name: d.Name, PowerState: PowerUnknown, MissingSince: &b.now}
	if err := b.tx.Create(&vm).Error; err != nil {
		return nil, "", err
	}
	newest := points[len(points)-1]
	p := Protection{ID: protectionID, VMID: vm.ID, PolicyID: policy.ID, TargetID: b.target.ID, ReplicaKey: r.Key, State: StateEnablingProtection,
		Health: HealthWarning, LastRecoveryPointAt: &newest.Time, PausedAt: &b.now, PausedBy: RebuildActor.Username}
	raw, _ := json.Marshal([]string{awaitingHostReason(d.HostName), pausedReason(p)})
	p.HealthReasons = string(raw)
	if err := b.tx.Create(&p).Error; err != nil {
		return nil, "", err
	}
	// The way every protection goes (the transition guard sees each
	// step): its replicas were made and copied, before the database was
	// lost.
	for _, state := range []string{StateInitialReplication, StateProtected} {
		if err := setState(b.tx, p.ID, state); err != nil {
			return nil, "", err
		}
	}
	if err := b.disks(vm, p, d, r, points); err != nil {
		return nil, "", err
	}
	made := 0
	for _, pt := range points {
		var size int64
		for _, n := range pt.Disks {
			size += n
		}
		rp := RecoveryPoint{ID: pt.ID, ProtectionID: p.ID, Time: pt.Time.UTC(), ReadStartedAt: utcPtr(pt.ReadStartedAt), Consistency: pt.Consistency,
			Capture: truncate(pt.Capture, 20), SizeBytes: size}
		if !free(b.tx, &RecoveryPoint{}, rp.ID) {
			unknown = append(unknown, fmt.Sprintf("recovery point %s, which the vault has already for another VM", rp.ID))
			continue
		}
		if err := b.tx.Create(&rp).Error; err != nil {
			return nil, "", err
		}
		made++
	}
	if err := b.s.audit(b.tx, RebuildActor, "protection.rebuild", "vm", vm.ID, vm.Name, map[string]any{
		"target": b.target.Name, "host": d.HostName, "policy": policy.Name, "points": made, "unknown": unknown}); err != nil {
		return nil, "", err
	}
	return &RebuiltVM{ID: vm.ID, Name: vm.Name, HostName: d.HostName, PolicyName: policy.Name, Points: made, Unknown: unknown}, "", nil
}

// validPoints are the points with a consistency label a manifest may have
// (an agent never writes another): a label not understood is no promise.
func validPoints(in []RebuildPoint) []RebuildPoint {
	var out []RebuildPoint
	for _, p := range in {
		switch p.Consistency {
		case ConsistencyApp, ConsistencyCrash, ConsistencyInconsistent:
			if p.ID != "" && len(p.ID) <= 40 && len(p.Disks) > 0 {
				out = append(out, p)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// free says whether id can name a new row of model.
func free(tx *gorm.DB, model any, id string) bool {
	if id == "" || len(id) > 40 {
		return false
	}
	var n int64
	return tx.Model(model).Where("id = ?", id).Count(&n).Error == nil && n == 0
}

// freeOr is id when it is free, else a new id of that prefix.
func freeOr(tx *gorm.DB, model any, id, prefix string) string {
	if free(tx, model, id) {
		return id
	}
	return NewID(prefix)
}

// host is the rebuilt host of that name in that site, made once.
func (b *rebuilder) host(siteName, name string) (string, error) {
	if siteName == "" {
		siteName = "Rebuilt"
	}
	siteID, ok := b.sites[siteName]
	if !ok {
		var site Site
		if err := b.tx.Where("name = ?", siteName).Limit(1).Find(&site).Error; err != nil {
			return "", err
		}
		if site.ID == "" {
			site = Site{ID: NewID(prefixSite), Name: siteName, Description: "rebuilt from replica storage"}
			if err := b.tx.Create(&site).Error; err != nil {
				return "", err
			}
		}
		siteID, b.sites[siteName] = site.ID, site.ID
	}
	if name == "" {
		name = UndescribedHostName
	}
	if id, ok := b.hosts[siteID+"/"+name]; ok {
		return id, nil
	}
	var h Host
	if err := b.tx.Where("site_id = ? AND name = ? AND rebuilt_at IS NOT NULL", siteID, name).Limit(1).Find(&h).Error; err != nil {
		return "", err
	}
	if h.ID == "" {
		h = Host{ID: NewID(prefixHost), SiteID: siteID, Name: name, State: HostDisconnected, RebuiltAt: &b.now}
		if err := b.tx.Create(&h).Error; err != nil {
			return "", err
		}
	}
	b.hosts[siteID+"/"+name] = h.ID
	return h.ID, nil
}

// policy is the recorded policy (by name, made once), or, when the
// replicas do not record one, a default clearly named so, keeping every
// point the target has (the first cycle must not prune what was just
// recovered). note says what could not be known.
func (b *rebuilder) policy(d *agentproto.DescribedPolicy, points []RebuildPoint) (Policy, string, error) {
	p := DefaultPolicy()
	note := ""
	if d != nil {
		p = Policy{Name: d.Name, CopyFrequencySeconds: d.CopyFrequencySeconds, RetentionHours: d.RetentionHours, AppConsistentFrequencyHours: d.AppConsistentFrequencyHours,
			ResyncWindowStart: d.ResyncWindowStart, ResyncWindowEnd: d.ResyncWindowEnd, WorkHoursStart: d.WorkHoursStart, WorkHoursEnd: d.WorkHoursEnd,
			WorkHoursMbps: d.WorkHoursMbps, OffHoursMbps: d.OffHoursMbps}
		if ValidatePolicy(&p, b.now) != nil {
			note = fmt.Sprintf("the recorded policy %q, which this vault does not accept", d.Name)
			p, d = DefaultPolicy(), nil
		}
	}
	if d == nil {
		p.Name = "Rebuilt (settings unknown)"
		p.AppConsistentFrequencyHours = 0
		p.RetentionHours = MaxRetentionHours
		if note == "" {
			note = fmt.Sprintf("the policy: protected under %q (copy every %d s, %d h of points, no app-consistent points); change it on the VM page",
				p.Name, p.CopyFrequencySeconds, p.RetentionHours)
		}
	}
	got, ok := b.policies[p.Name]
	if !ok {
		var existing Policy
		if err := b.tx.Where("name = ?", p.Name).Limit(1).Find(&existing).Error; err != nil {
			return p, "", err
		}
		if existing.ID != "" {
			got, ok = existing, true
		}
	}
	if ok {
		// Replicas that disagree on their policy (one VM's descriptor was
		// written before the policy changed: a paused VM's, a silent
		// host's): keep the longest retention, so the first cycles prune
		// no point the old vault kept, and say so.
		if p.RetentionHours > got.RetentionHours {
			if err := b.tx.Model(&Policy{}).Where("id = ?", got.ID).Update("retention_hours", p.RetentionHours).Error; err != nil {
				return got, "", err
			}
			got.RetentionHours = p.RetentionHours
		}
		if p.CopyFrequencySeconds != got.CopyFrequencySeconds || p.RetentionHours != got.RetentionHours || p.AppConsistentFrequencyHours != got.AppConsistentFrequencyHours {
			note = strings.TrimPrefix(note+fmt.Sprintf("; the replicas record policy %q with different settings (this one: copy every %d s, %d h of points, app-consistent every %d h): it keeps %d h of points, the longest recorded; check its settings",
				p.Name, p.CopyFrequencySeconds, p.RetentionHours, p.AppConsistentFrequencyHours, got.RetentionHours), "; ")
		}
		b.policies[p.Name] = got
		return got, note, nil
	}
	p.ID = NewID(prefixPolicy)
	if err := b.tx.Create(&p).Error; err != nil {
		return p, "", err
	}
	b.policies[p.Name] = p
	return p, note, nil
}

// disks makes the VM's disks and their replica records: each described
// disk with its vault id and path (so the host's next inventory keeps it,
// matched by path, and the next cycle writes into its replica); each
// replica on the target that the descriptor does not list (a disk removed
// while old points still hold it) as removed.
func (b *rebuilder) disks(vm VM, p Protection, d *agentproto.ReplicaDescriptor, r RebuildReplica, points []RebuildPoint) error {
	sizes := map[string]int64{}
	for _, pt := range points {
		for id, n := range pt.Disks {
			sizes[id] = max(sizes[id], n)
		}
	}
	for id, n := range r.Disks {
		sizes[id] = max(sizes[id], n)
	}
	described := map[string]bool{}
	for _, dd := range d.Disks {
		if dd.ReplicaID == "" {
			continue
		}
		described[dd.ReplicaID] = true
		diskID := freeOr(b.tx, &Disk{}, dd.DiskID, prefixDisk)
		size := max(dd.SizeBytes, sizes[dd.ReplicaID])
		if err := b.tx.Create(&Disk{ID: diskID, VMID: vm.ID, Path: dd.Path, SizeBytes: size, Format: dd.Format}).Error; err != nil {
			return err
		}
		rd := ReplicaDisk{ID: NewID(prefixReplicaDisk), ProtectionID: p.ID, DiskID: diskID, Name: dd.ReplicaID, SourcePath: dd.Path, SizeBytes: size}
		if _, ok := r.Disks[dd.ReplicaID]; ok {
			rd.CopiedAt = &b.now // its replica is there: the next cycle compares hashes, no initial copy
		}
		if err := b.tx.Create(&rd).Error; err != nil {
			return err
		}
	}
	ids := make([]string, 0, len(sizes))
	for id := range sizes {
		if !described[id] {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		rd := ReplicaDisk{ID: NewID(prefixReplicaDisk), ProtectionID: p.ID, DiskID: id, Name: id, SourcePath: id, SizeBytes: sizes[id], CopiedAt: &b.now}
		if r.Descriptor != nil {
			rd.RemovedAt = &b.now // described, but not among the VM's disks: removed, held by old points
		} else {
			// Not described: a disk named by its replica, its path unknown.
			rd.DiskID = freeOr(b.tx, &Disk{}, id, prefixDisk)
			if err := b.tx.Create(&Disk{ID: rd.DiskID, VMID: vm.ID, Path: id, SizeBytes: sizes[id]}).Error; err != nil {
				return err
			}
		}
		if err := b.tx.Create(&rd).Error; err != nil {
			return err
		}
	}
	return nil
}
