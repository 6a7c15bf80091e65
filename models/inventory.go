package models

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"gorm.io/gorm"
)

// HostFilter selects hosts.
type HostFilter struct {
	SiteID string
	State  string
}

// ListHosts lists hosts by registration.
func (s *Store) ListHosts(ctx context.Context, f HostFilter, p Page) ([]Host, string, error) {
	q := s.db.WithContext(ctx).Model(&Host{}).Where("revoked_at IS NULL")
	if f.SiteID != "" {
		q = q.Where("site_id = ?", f.SiteID)
	}
	if f.State != "" {
		q = q.Where("state = ?", f.State)
	}
	var out []Host
	next, err := paginate(q, p, false, &out)
	return out, next, err
}

// GetHost returns one host or ErrNotFound.
func (s *Store) GetHost(ctx context.Context, id string) (*Host, error) {
	var h Host
	if err := s.db.WithContext(ctx).First(&h, "id = ?", id).Error; err != nil {
		return nil, translateError(err)
	}
	return &h, nil
}

// CreateHost records a host in a site. Agent registration is its caller.
func (s *Store) CreateHost(ctx context.Context, a Actor, h *Host) error {
	v := &ValidationError{}
	h.Name = strings.TrimSpace(h.Name)
	validateName(v, "name", h.Name)
	if h.SiteID == "" {
		v.Add("site_id", "is required")
	}
	if err := v.Err(); err != nil {
		return err
	}
	if h.State == "" {
		h.State = HostDisconnected
	}
	h.ID = NewID(prefixHost)
	return s.tx(ctx, func(tx *gorm.DB) error {
		var site Site
		if err := tx.First(&site, "id = ?", h.SiteID).Error; err != nil {
			return Invalid("site_id", "site %q does not exist", h.SiteID)
		}
		if err := tx.Create(h).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "host.create", "host", h.ID, h.Name, map[string]string{"site": site.Name})
	})
}

// VMReport is one VM as a host's agent reports it.
type VMReport struct {
	ExternalID string
	Name       string
	PowerState string
	Disks      []DiskReport
}

// DiskReport is one disk of a reported VM.
type DiskReport struct {
	Path      string
	SizeBytes int64
	Format    string
}

// ReportInventory records the complete list of a host's VMs: new VMs are
// added, known ones updated, and VMs no longer reported are marked missing —
// never deleted, because a protected VM's history must survive a host hiccup.
func (s *Store) ReportInventory(ctx context.Context, hostID string, vms []VMReport) error {
	now := s.Now()
	return s.tx(ctx, func(tx *gorm.DB) error {
		var have []string
		if err := tx.Model(&VM{}).Where("host_id = ?", hostID).Pluck("external_id", &have).Error; err != nil {
			return err
		}
		haveSet := make(map[string]bool, len(have))
		for _, id := range have {
			haveSet[id] = true
		}
		if err := s.adoptRebuiltVMs(tx, hostID, vms, haveSet); err != nil {
			return err
		}
		var known []VM
		if err := tx.Preload("Disks").Where("host_id = ?", hostID).Find(&known).Error; err != nil {
			return err
		}
		byExternal := make(map[string]*VM, len(known))
		for i := range known {
			byExternal[known[i].ExternalID] = &known[i]
		}
		seen := map[string]bool{}
		for _, r := range vms {
			seen[r.ExternalID] = true
			vm := byExternal[r.ExternalID]
			if vm == nil {
				vm = &VM{ID: NewID(prefixVM), HostID: hostID, ExternalID: r.ExternalID}
			}
			vm.Name, vm.PowerState, vm.MissingSince = r.Name, r.PowerState, nil
			if vm.PowerState == "" {
				vm.PowerState = PowerUnknown
			}
			if err := tx.Omit("Disks").Save(vm).Error; err != nil {
				return err
			}
			if err := syncDisks(tx, vm, r.Disks); err != nil {
				return err
			}
			if err := reconcileDisks(tx, now, vm.ID); err != nil {
				return err
			}
		}
		for i := range known {
			vm := &known[i]
			if !seen[vm.ExternalID] && vm.MissingSince == nil {
				if err := tx.Model(vm).Update("missing_since", now).Error; err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func syncDisks(tx *gorm.DB, vm *VM, disks []DiskReport) error {
	byPath := map[string]Disk{}
	for _, d := range vm.Disks {
		byPath[d.Path] = d
	}
	keep := map[string]bool{}
	for _, r := range disks {
		keep[r.Path] = true
		d, ok := byPath[r.Path]
		if !ok {
			d = Disk{ID: NewID(prefixDisk), VMID: vm.ID, Path: r.Path}
		}
		d.SizeBytes, d.Format = r.SizeBytes, r.Format
		if err := tx.Save(&d).Error; err != nil {
			return err
		}
	}
	for _, d := range vm.Disks {
		if !keep[d.Path] {
			if err := tx.Delete(&d).Error; err != nil {
				return err
			}
		}
	}
	return nil
}

// VMSummary is a VM with where it runs and how it is protected.
type VMSummary struct {
	VM
	HostName            string
	SiteID              string
	ProtectionState     string // "Unprotected" when there is no protection
	Health              string // "" when unprotected
	HealthReasons       []string
	LastRecoveryPointAt *time.Time
	BytesSent           *int64
	LastCycleBytes      *int64
	LastCycleSeconds    *float64
	// Placement is the VM's policy, target and replica location (nil when
	// unprotected); placement.go fills it in.
	Placement *Placement
}

// VMFilter selects VMs. Health "Unprotected" selects VMs without protection.
type VMFilter struct {
	SiteID string
	HostID string
	Health string
}

type vmRow struct {
	VM
	HostName            string
	SiteID              string
	ProtectionState     *string
	Health              *string
	HealthReasons       *string
	LastRecoveryPointAt *time.Time
	BytesSent           *int64
	LastCycleBytes      *int64
	LastCycleSeconds    *float64
}

func (s *Store) vmQuery(ctx context.Context) *gorm.DB {
	return s.db.WithContext(ctx).Table("vms").
		Select("vms.*, hosts.name AS host_name, hosts.site_id AS site_id, protections.state AS protection_state, protections.health AS health, protections.health_reasons AS health_reasons, protections.last_recovery_point_at AS last_recovery_point_at, protections.bytes_sent AS bytes_sent, protections.last_cycle_bytes AS last_cycle_bytes, protections.last_cycle_seconds AS last_cycle_seconds").
		Joins("JOIN hosts ON hosts.id = vms.host_id").
		Joins("LEFT JOIN protections ON protections.vm_id = vms.id")
}

// ListVMs lists VMs with their protection, by discovery.
func (s *Store) ListVMs(ctx context.Context, f VMFilter, p Page) ([]VMSummary, string, error) {
	q := s.vmQuery(ctx)
	if f.SiteID != "" {
		q = q.Where("hosts.site_id = ?", f.SiteID)
	}
	if f.HostID != "" {
		q = q.Where("vms.host_id = ?", f.HostID)
	}
	switch f.Health {
	case "":
	case StateUnprotected:
		q = q.Where("protections.id IS NULL")
	default:
		q = q.Where("protections.health = ?", f.Health)
	}
	var rows []vmRow
	next, err := paginateOn(q, "vms.id", p, false, &rows)
	if err != nil {
		return nil, "", err
	}
	out := make([]VMSummary, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.summary())
	}
	if err := s.loadDisks(ctx, out); err != nil {
		return nil, "", err
	}
	if err := s.loadPlacements(ctx, out); err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// GetVM returns one VM with its disks and protection, or ErrNotFound.
func (s *Store) GetVM(ctx context.Context, id string) (*VMSummary, error) {
	var rows []vmRow
	if err := s.vmQuery(ctx).Where("vms.id = ?", id).Limit(1).Find(&rows).Error; err != nil {
		return nil, translateError(err)
	}
	if len(rows) == 0 {
		return nil, ErrNotFound
	}
	out := []VMSummary{rows[0].summary()}
	if err := s.loadDisks(ctx, out); err != nil {
		return nil, err
	}
	if err := s.loadPlacements(ctx, out); err != nil {
		return nil, err
	}
	return &out[0], nil
}

func (r vmRow) summary() VMSummary {
	v := VMSummary{VM: r.VM, HostName: r.HostName, SiteID: r.SiteID, ProtectionState: StateUnprotected, LastRecoveryPointAt: r.LastRecoveryPointAt, BytesSent: r.BytesSent,
		LastCycleBytes: r.LastCycleBytes, LastCycleSeconds: r.LastCycleSeconds}
	if r.ProtectionState != nil {
		v.ProtectionState = *r.ProtectionState
	}
	if r.Health != nil {
		v.Health = *r.Health
	}
	if r.HealthReasons != nil && *r.HealthReasons != "" {
		_ = json.Unmarshal([]byte(*r.HealthReasons), &v.HealthReasons)
	}
	return v
}

func (s *Store) loadDisks(ctx context.Context, vms []VMSummary) error {
	if len(vms) == 0 {
		return nil
	}
	ids := make([]string, len(vms))
	for i := range vms {
		ids[i] = vms[i].ID
	}
	var disks []Disk
	if err := s.db.WithContext(ctx).Where("vm_id IN ?", ids).Order("path").Find(&disks).Error; err != nil {
		return translateError(err)
	}
	for i := range vms {
		vms[i].Disks = nil
		for _, d := range disks {
			if d.VMID == vms[i].ID {
				vms[i].Disks = append(vms[i].Disks, d)
			}
		}
	}
	return nil
}

// reconcileDisks brings a protected VM's replica disks in line with the
// disks its host reports: a disk added gets a replica record (new: the
// next cycle makes its replica and its initial copy, and every point after
// holds it); a disk gone is marked removed (no longer replicated; the
// points made before keep it, and the VM is Warning, naming it). A renamed
// disk, which filedisk cannot tell from a new one, is both.
func reconcileDisks(tx *gorm.DB, now time.Time, vmID string) error {
	var p Protection
	err := tx.Where("vm_id = ?", vmID).Limit(1).Find(&p).Error
	if err != nil || p.ID == "" || p.State == StateDisablingProtection {
		return err
	}
	var disks []Disk
	if err := tx.Where("vm_id = ?", vmID).Find(&disks).Error; err != nil {
		return err
	}
	var replicas []ReplicaDisk
	if err := tx.Where("protection_id = ? AND removed_at IS NULL", p.ID).Find(&replicas).Error; err != nil {
		return err
	}
	have := map[string]bool{}
	for _, d := range disks {
		have[d.ID] = true
	}
	replicated := map[string]bool{}
	for _, rd := range replicas {
		replicated[rd.DiskID] = true
		if !have[rd.DiskID] {
			if err := tx.Model(&ReplicaDisk{}).Where("id = ?", rd.ID).Update("removed_at", now).Error; err != nil {
				return err
			}
		}
	}
	for _, d := range disks {
		if !replicated[d.ID] {
			rd := ReplicaDisk{ID: NewID(prefixReplicaDisk), ProtectionID: p.ID, DiskID: d.ID, Name: d.ID, SourcePath: d.Path, SizeBytes: d.SizeBytes}
			if err := tx.Create(&rd).Error; err != nil {
				return err
			}
		}
	}
	return nil
}
