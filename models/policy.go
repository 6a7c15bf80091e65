package models

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"
)

// The reference ranges of a replication policy (DESIGN.md §1).
var CopyFrequencies = []int{30, 300, 900}

const (
	MaxRetentionHours         = 24
	MaxAppConsistentHours     = 12
	MaxInitialReplicationWait = 24 * time.Hour
	MaxBandwidthMbps          = 100000
	DefaultResyncWindowStart  = "18:30"
	DefaultResyncWindowEnd    = "06:00"
	DefaultWorkHoursStart     = "08:00"
	DefaultWorkHoursEnd       = "18:00"
)

// DefaultPolicy is what a new policy form starts from.
func DefaultPolicy() Policy {
	return Policy{
		CopyFrequencySeconds: 300, RetentionHours: 24, AppConsistentFrequencyHours: 4,
		ResyncWindowStart: DefaultResyncWindowStart, ResyncWindowEnd: DefaultResyncWindowEnd,
		WorkHoursStart: DefaultWorkHoursStart, WorkHoursEnd: DefaultWorkHoursEnd,
	}
}

// ValidatePolicy checks p against the reference ranges, at time now. Field
// names are the API's, so both the API and the portal can show them.
func ValidatePolicy(p *Policy, now time.Time) error {
	v := &ValidationError{}
	p.Name = strings.TrimSpace(p.Name)
	validateName(v, "name", p.Name)
	if !containsInt(CopyFrequencies, p.CopyFrequencySeconds) {
		v.Add("copy_frequency_seconds", "must be 30 (30 seconds), 300 (5 minutes) or 900 (15 minutes), got %d", p.CopyFrequencySeconds)
	}
	if p.RetentionHours < 0 || p.RetentionHours > MaxRetentionHours {
		v.Add("retention_hours", "must be between 0 and %d hours, got %d", MaxRetentionHours, p.RetentionHours)
	}
	switch {
	case p.AppConsistentFrequencyHours < 0 || p.AppConsistentFrequencyHours > MaxAppConsistentHours:
		v.Add("app_consistent_frequency_hours", "must be between 0 (off) and %d hours, got %d", MaxAppConsistentHours, p.AppConsistentFrequencyHours)
	case p.AppConsistentFrequencyHours > 0 && p.AppConsistentFrequencyHours >= p.RetentionHours:
		v.Add("app_consistent_frequency_hours", "must be less than the retention (%d hours), or 0 to turn app-consistent points off", p.RetentionHours)
	}
	if p.InitialReplicationStart != nil {
		start := p.InitialReplicationStart.UTC()
		p.InitialReplicationStart = &start
		switch {
		case start.Before(now.Add(-5 * time.Minute)):
			v.Add("initial_replication_start", "is in the past (%s); leave it empty to start now", start.Format(time.RFC3339))
		case start.After(now.Add(MaxInitialReplicationWait)):
			v.Add("initial_replication_start", "may be at most 24 hours ahead (until %s)", now.Add(MaxInitialReplicationWait).UTC().Format(time.RFC3339))
		}
	}
	validateWindow(v, "resync_window", p.ResyncWindowStart, p.ResyncWindowEnd)
	validateWindow(v, "bandwidth.work_hours", p.WorkHoursStart, p.WorkHoursEnd)
	if p.WorkHoursMbps < 0 || p.WorkHoursMbps > MaxBandwidthMbps {
		v.Add("bandwidth.work_hours_mbps", "must be between 0 (unlimited) and %d Mbit/s, got %d", MaxBandwidthMbps, p.WorkHoursMbps)
	}
	if p.OffHoursMbps < 0 || p.OffHoursMbps > MaxBandwidthMbps {
		v.Add("bandwidth.off_hours_mbps", "must be between 0 (unlimited) and %d Mbit/s, got %d", MaxBandwidthMbps, p.OffHoursMbps)
	}
	return v.Err()
}

func validateWindow(v *ValidationError, field, start, end string) {
	s, err := ParseClock(start)
	if err != nil {
		v.Add(field+".start", "%v", err)
	}
	e, err2 := ParseClock(end)
	if err2 != nil {
		v.Add(field+".end", "%v", err2)
	}
	if err == nil && err2 == nil && s == e {
		v.Add(field+".end", "must differ from the start; a window of zero length never opens")
	}
}

func validateName(v *ValidationError, field, name string) {
	switch {
	case name == "":
		v.Add(field, "is required")
	case utf8.RuneCountInString(name) > 100:
		v.Add(field, "must be at most 100 characters")
	case strings.ContainsAny(name, "\x00\r\n\t"):
		v.Add(field, "must not contain control characters")
	}
}

func containsInt(list []int, x int) bool {
	for _, y := range list {
		if x == y {
			return true
		}
	}
	return false
}

// ListPolicies lists policies by creation.
func (s *Store) ListPolicies(ctx context.Context, p Page) ([]Policy, string, error) {
	var out []Policy
	next, err := paginate(s.db.WithContext(ctx).Model(&Policy{}), p, false, &out)
	return out, next, err
}

// GetPolicy returns one policy or ErrNotFound.
func (s *Store) GetPolicy(ctx context.Context, id string) (*Policy, error) {
	var p Policy
	if err := s.db.WithContext(ctx).First(&p, "id = ?", id).Error; err != nil {
		return nil, translateError(err)
	}
	return &p, nil
}

// CreatePolicy validates and stores a new policy.
func (s *Store) CreatePolicy(ctx context.Context, a Actor, p *Policy) error {
	if err := ValidatePolicy(p, s.Now()); err != nil {
		return err
	}
	p.ID = NewID(prefixPolicy)
	return s.tx(ctx, func(tx *gorm.DB) error {
		if err := uniqueName(tx, &Policy{}, "", p.Name, "policy"); err != nil {
			return err
		}
		if err := tx.Create(p).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "policy.create", "policy", p.ID, p.Name, p)
	})
}

// UpdatePolicy validates and replaces a stored policy.
func (s *Store) UpdatePolicy(ctx context.Context, a Actor, p *Policy) error {
	return s.tx(ctx, func(tx *gorm.DB) error {
		var old Policy
		if err := tx.First(&old, "id = ?", p.ID).Error; err != nil {
			return err
		}
		// An unchanged scheduled start may have passed since it was set; that
		// must not block editing the rest of the policy.
		start := p.InitialReplicationStart
		if start != nil && old.InitialReplicationStart != nil && start.Equal(*old.InitialReplicationStart) {
			p.InitialReplicationStart = nil
			defer func() { p.InitialReplicationStart = start }()
		}
		if err := ValidatePolicy(p, s.Now()); err != nil {
			return err
		}
		p.InitialReplicationStart = start
		if err := uniqueName(tx, &Policy{}, p.ID, p.Name, "policy"); err != nil {
			return err
		}
		p.CreatedAt = old.CreatedAt
		if err := tx.Save(p).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "policy.update", "policy", p.ID, p.Name, p)
	})
}

// DeletePolicy deletes a policy that no protection uses.
func (s *Store) DeletePolicy(ctx context.Context, a Actor, id string) error {
	return s.tx(ctx, func(tx *gorm.DB) error {
		var p Policy
		if err := tx.First(&p, "id = ?", id).Error; err != nil {
			return err
		}
		var used int64
		if err := tx.Model(&Protection{}).Where("policy_id = ?", id).Count(&used).Error; err != nil {
			return err
		}
		if used > 0 {
			var names []string
			if err := tx.Model(&VM{}).Joins("JOIN protections ON protections.vm_id = vms.id").
				Where("protections.policy_id = ?", id).Order("vms.name").Limit(10).Pluck("vms.name", &names).Error; err != nil {
				return err
			}
			list := strings.Join(names, ", ")
			if int(used) > len(names) {
				list += fmt.Sprintf(" and %d more", int(used)-len(names))
			}
			return &ConflictError{Code: "policy_in_use", Message: fmt.Sprintf("policy %q protects %d VM(s) (%s); move them to another policy or disable their protection first", p.Name, used, list)}
		}
		if err := tx.Delete(&p).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "policy.delete", "policy", p.ID, p.Name, nil)
	})
}

// uniqueName refuses a name that another row of the same table (other than
// selfID) already has, with a message that says so. The unique index is the
// final guard against races; this gives the friendly message.
func uniqueName(tx *gorm.DB, model any, selfID, name, what string) error {
	q := tx.Model(model).Where("name = ?", name)
	if selfID != "" {
		q = q.Where("id <> ?", selfID)
	}
	var n int64
	if err := q.Count(&n).Error; err != nil {
		return err
	}
	if n > 0 {
		return &ValidationError{Fields: []FieldError{{Field: "name", Reason: fmt.Sprintf("a %s named %q already exists; choose another name", what, name)}}}
	}
	return nil
}
