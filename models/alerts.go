package models

import (
	"context"
	"time"

	"gorm.io/gorm"
)

// Alert kinds besides AlertHostDisconnected.
const (
	// AlertProtectionCritical: a VM's replication stopped for an error
	// that needs an administrator.
	AlertProtectionCritical = "ProtectionCritical"
	// AlertRPOExceeded: a VM's newest recovery point is older than twice
	// its policy's copy frequency.
	AlertRPOExceeded = "RPOExceeded"
	// AlertFailoverFailed: a failover job failed (raised by failover, which
	// is not built yet).
	AlertFailoverFailed = "FailoverFailed"
)

// AlertFilter selects alerts.
type AlertFilter struct {
	State string
}

// ListAlerts lists alerts, newest first.
func (s *Store) ListAlerts(ctx context.Context, f AlertFilter, p Page) ([]Alert, string, error) {
	q := s.db.WithContext(ctx).Model(&Alert{})
	if f.State != "" {
		q = q.Where("state = ?", f.State)
	}
	var out []Alert
	next, err := paginate(q, p, true, &out)
	return out, next, err
}

// raiseAlert opens an alert of kind about an object, or, when one is open
// already, updates its message (one open alert per kind and object).
func raiseAlert(tx *gorm.DB, kind, severity, objectKind, objectID, message string) error {
	var open []Alert
	if err := tx.Where("kind = ? AND object_id = ? AND state <> ?", kind, objectID, AlertResolved).Limit(1).Find(&open).Error; err != nil {
		return err
	}
	if len(open) > 0 {
		if open[0].Message == message && open[0].Severity == severity {
			return nil
		}
		return tx.Model(&Alert{}).Where("id = ?", open[0].ID).Updates(map[string]any{"message": truncate(message, 2000), "severity": severity}).Error
	}
	return tx.Create(&Alert{ID: NewID(prefixAlert), Kind: kind, Severity: severity, ObjectKind: objectKind, ObjectID: objectID,
		Message: truncate(message, 2000), State: AlertActive}).Error
}

// ResolvedBySystem is an alert's ResolvedBy when the vault resolved it.
const ResolvedBySystem = "system"

// resolveAlerts resolves the open alerts of these kinds about an object:
// the condition is over.
func resolveAlerts(tx *gorm.DB, now time.Time, objectID string, kinds ...string) error {
	return tx.Model(&Alert{}).Where("kind IN ? AND object_id = ? AND state <> ?", kinds, objectID, AlertResolved).
		Updates(map[string]any{"state": AlertResolved, "resolved_at": now, "resolved_by": ResolvedBySystem}).Error
}

// vmAlert raises an alert about the VM of a protection, naming it.
func vmAlert(tx *gorm.DB, protectionID, kind, severity, message string) error {
	var p Protection
	if err := tx.First(&p, "id = ?", protectionID).Error; err != nil {
		return err
	}
	var vm VM
	if err := tx.First(&vm, "id = ?", p.VMID).Error; err != nil {
		return err
	}
	return raiseAlert(tx, kind, severity, "vm", vm.ID, "VM "+vm.Name+": "+message)
}

// AcknowledgeAlert says someone is on it: an active alert becomes
// Acknowledged (it stays open until resolved).
func (s *Store) AcknowledgeAlert(ctx context.Context, a Actor, id string) (*Alert, error) {
	return s.changeAlert(ctx, a, id, "alert.acknowledge", func(al *Alert, now time.Time) (map[string]any, error) {
		if al.State != AlertActive {
			return nil, &ConflictError{Code: "alert_not_active", Message: "only an active alert can be acknowledged; this one is " + al.State}
		}
		return map[string]any{"state": AlertAcknowledged, "acknowledged_by": a.Username, "acknowledged_at": now}, nil
	})
}

// ResolveAlert closes an alert by hand (the vault also resolves alerts
// whose condition ended).
func (s *Store) ResolveAlert(ctx context.Context, a Actor, id string) (*Alert, error) {
	return s.changeAlert(ctx, a, id, "alert.resolve", func(al *Alert, now time.Time) (map[string]any, error) {
		if al.State == AlertResolved {
			return nil, &ConflictError{Code: "alert_resolved", Message: "the alert is resolved already"}
		}
		return map[string]any{"state": AlertResolved, "resolved_at": now, "resolved_by": a.Username}, nil
	})
}

func (s *Store) changeAlert(ctx context.Context, a Actor, id, action string, change func(*Alert, time.Time) (map[string]any, error)) (*Alert, error) {
	now := s.Now()
	var al Alert
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.First(&al, "id = ?", id).Error; err != nil {
			return err
		}
		updates, err := change(&al, now)
		if err != nil {
			return err
		}
		if err := tx.Model(&Alert{}).Where("id = ?", id).Updates(updates).Error; err != nil {
			return err
		}
		if err := tx.First(&al, "id = ?", id).Error; err != nil {
			return err
		}
		return s.audit(tx, a, action, "alert", al.ID, al.Kind, map[string]string{"object": al.ObjectKind + " " + al.ObjectID})
	})
	if err != nil {
		return nil, err
	}
	return &al, nil
}

// AlertsToDeliver are alerts not delivered yet whose next attempt is due,
// oldest first.
func (s *Store) AlertsToDeliver(ctx context.Context, limit int) ([]Alert, error) {
	var out []Alert
	err := s.db.WithContext(ctx).Where("delivered_at IS NULL AND (next_delivery_at IS NULL OR next_delivery_at <= ?)", s.Now()).
		Order("created_at").Limit(limit).Find(&out).Error
	return out, err
}

// deliveryBackoff is the wait after the nth failed delivery: 1, 2, 4 …
// minutes, at most an hour.
func deliveryBackoff(n int) time.Duration {
	return min(time.Minute<<min(n-1, 6), time.Hour)
}

// RecordAlertDelivery notes an attempt to deliver an alert: delivered, or
// failed with the error, to be tried again after a back-off.
func (s *Store) RecordAlertDelivery(ctx context.Context, id string, failure error) error {
	now := s.Now()
	return s.tx(ctx, func(tx *gorm.DB) error {
		var al Alert
		if err := tx.First(&al, "id = ?", id).Error; err != nil {
			return err
		}
		if failure == nil {
			return tx.Model(&Alert{}).Where("id = ?", id).Updates(map[string]any{"delivered_at": now, "delivery_error": "", "next_delivery_at": nil}).Error
		}
		n := al.DeliveryAttempts + 1
		return tx.Model(&Alert{}).Where("id = ?", id).Updates(map[string]any{"delivery_attempts": n,
			"delivery_error": truncate(failure.Error(), 1000), "next_delivery_at": now.Add(deliveryBackoff(n))}).Error
	})
}
