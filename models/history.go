package models

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// The RPO history of each protected VM, kept compactly: a raw row at the
// end of every cycle and an RPO sample when no cycle ended for a while,
// for RawHistoryKept; then one row per VM and hour (the worst RPO, the
// cycles' bytes and transfer time summed) for HourlyHistoryKept.
const (
	RawHistoryKept    = 24 * time.Hour
	HourlyHistoryKept = 7 * 24 * time.Hour
	// RPOSampleEvery is how often the RPO of a VM whose cycles do not end
	// (they fail, or the VM waits for a resync) is written down.
	RPOSampleEvery = 5 * time.Minute
)

// RPOHistory is one row of a VM's RPO history. It follows the VM, not its
// protection, so a re-protected VM keeps its past.
type RPOHistory struct {
	ID   string    `gorm:"primaryKey;size:40"`
	VMID string    `gorm:"size:40;not null;index:idx_rpo_history_vm_time"`
	Time time.Time `gorm:"not null;index:idx_rpo_history_vm_time;index"`
	// Hour is the hour Time falls in: the bucket a raw row is folded into,
	// grouped the same way on every database.
	Hour   time.Time `gorm:"not null"`
	Hourly bool      `gorm:"not null;default:false"`
	// MaxRPOSeconds is the worst RPO of the span the row ends: for a cycle,
	// the RPO just before its point landed; for an hourly row, the hour's.
	MaxRPOSeconds float64 `gorm:"not null"`
	// RPOSeconds is the RPO at Time (after the cycle's point landed).
	RPOSeconds float64 `gorm:"not null"`
	Cycles     int     `gorm:"not null;default:0"`
	// Baseline: the cycle copied the VM whole (the initial replication)
	// or compared all of it (a resync), so its bytes are not churn.
	Baseline        bool    `gorm:"not null;default:false"`
	BytesSent       int64   `gorm:"not null;default:0"`
	TransferSeconds float64 `gorm:"not null;default:0"`
}

// TableName keeps the table's name singular, as the idea is: a history.
func (RPOHistory) TableName() string { return "rpo_history" }

// History ranges.
const (
	HistoryDay  = "24h"
	HistoryWeek = "7d"
)

// HistoryRanges lists the ranges RPOHistoryOf accepts, in the order the
// portal offers them.
var HistoryRanges = []string{HistoryDay, HistoryWeek}

// ErrUnknownRange is a history range other than HistoryRanges.
var ErrUnknownRange = errors.New("the range is not 24h or 7d")

// HistoryPoint is one point of a VM's RPO history, as the chart and the
// API show it.
type HistoryPoint struct {
	Time            time.Time
	Hourly          bool
	MaxRPOSeconds   float64
	RPOSeconds      float64
	Cycles          int
	BytesSent       int64
	TransferSeconds float64
}

// VMHistory is a VM's RPO history over a range, with what to measure it
// against.
type VMHistory struct {
	Range    string
	From, To time.Time
	Points   []HistoryPoint
	// ThresholdSeconds is the RPO the VM's health is held to (twice its
	// policy's copy frequency); 0 when the VM is not protected.
	ThresholdSeconds float64
}

// historyRow is the row of a cycle that ended at now: its point was made
// at pointTime; the one before, if any, at previous.
func historyRow(vmID string, now, pointTime time.Time, previous *time.Time, bytes int64, transfer float64) RPOHistory {
	after := now.Sub(pointTime).Seconds()
	before := after
	if previous != nil {
		before = max(now.Sub(*previous).Seconds(), after)
	}
	return RPOHistory{ID: NewID(prefixHistory), VMID: vmID, Time: now, Hour: now.Truncate(time.Hour),
		MaxRPOSeconds: before, RPOSeconds: max(after, 0), Cycles: 1, BytesSent: bytes, TransferSeconds: transfer}
}

// SampleRPO writes down the RPO of every VM with a recovery point whose
// history has no row in the last RPOSampleEvery: so the chart shows the
// RPO rising while cycles fail. Two queries, whatever the number of VMs.
func (s *Store) SampleRPO(ctx context.Context) (int, error) {
	now := s.Now()
	var ps []Protection
	db := s.db.WithContext(ctx)
	if err := db.Where("last_recovery_point_at IS NOT NULL AND state IN ?",
		[]string{StateProtected, StateResyncRequired, StateResynchronizing}).Find(&ps).Error; err != nil {
		return 0, translateError(err)
	}
	if len(ps) == 0 {
		return 0, nil
	}
	var recent []string
	if err := db.Model(&RPOHistory{}).Where("hourly = ? AND time > ?", false, now.Add(-RPOSampleEvery)).
		Distinct("vm_id").Pluck("vm_id", &recent).Error; err != nil {
		return 0, translateError(err)
	}
	seen := make(map[string]bool, len(recent))
	for _, id := range recent {
		seen[id] = true
	}
	var rows []RPOHistory
	for _, p := range ps {
		if seen[p.VMID] {
			continue
		}
		rpo := max(now.Sub(*p.LastRecoveryPointAt).Seconds(), 0)
		rows = append(rows, RPOHistory{ID: NewID(prefixHistory), VMID: p.VMID, Time: now, Hour: now.Truncate(time.Hour),
			MaxRPOSeconds: rpo, RPOSeconds: rpo})
	}
	if len(rows) == 0 {
		return 0, nil
	}
	if err := db.CreateInBatches(rows, 200).Error; err != nil {
		return 0, translateError(err)
	}
	return len(rows), nil
}

// CompactRPOHistory folds the raw rows of every hour that ended more than
// RawHistoryKept ago into one row per VM and hour, and deletes the hourly
// rows older than HourlyHistoryKept. The cut is on an hour boundary, so an
// hour is always folded whole, in one pass (and a row's time is before the
// cut exactly when its hour is: the time index serves).
func (s *Store) CompactRPOHistory(ctx context.Context) (folded, deleted int64, err error) {
	now := s.Now()
	cut := now.Add(-RawHistoryKept).Truncate(time.Hour)
	err = s.tx(ctx, func(tx *gorm.DB) error {
		var buckets []struct {
			VMID             string
			Hour             time.Time
			MaxRPO, Transfer float64
			Cycles           int
			Bytes            int64
		}
		if err := tx.Model(&RPOHistory{}).
			Select("vm_id, hour, MAX(max_rpo_seconds) AS max_rpo, SUM(transfer_seconds) AS transfer, SUM(cycles) AS cycles, SUM(bytes_sent) AS bytes").
			Where("hourly = ? AND time < ?", false, cut).Group("vm_id, hour").Scan(&buckets).Error; err != nil {
			return err
		}
		rows := make([]RPOHistory, 0, len(buckets))
		for _, b := range buckets {
			hour := b.Hour.UTC()
			rows = append(rows, RPOHistory{ID: NewID(prefixHistory), VMID: b.VMID, Time: hour, Hour: hour, Hourly: true,
				MaxRPOSeconds: b.MaxRPO, RPOSeconds: b.MaxRPO, Cycles: b.Cycles, BytesSent: b.Bytes, TransferSeconds: b.Transfer})
		}
		if len(rows) > 0 {
			if err := tx.CreateInBatches(rows, 200).Error; err != nil {
				return err
			}
		}
		raw := tx.Where("hourly = ? AND time < ?", false, cut).Delete(&RPOHistory{})
		if raw.Error != nil {
			return raw.Error
		}
		folded = raw.RowsAffected
		old := tx.Where("hourly = ? AND time < ?", true, now.Add(-HourlyHistoryKept)).Delete(&RPOHistory{})
		deleted = old.RowsAffected
		return old.Error
	})
	return folded, deleted, err
}

// RPOHistoryOf is a VM's history over rng (HistoryDay or HistoryWeek), the
// oldest first: the raw rows for a day; for a week, the hourly rows and
// the raw rows not folded yet.
func (s *Store) RPOHistoryOf(ctx context.Context, vmID, rng string) (*VMHistory, error) {
	var span time.Duration
	switch rng {
	case HistoryDay:
		span = 24 * time.Hour
	case HistoryWeek:
		span = 7 * 24 * time.Hour
	default:
		return nil, ErrUnknownRange
	}
	now := s.Now()
	h := &VMHistory{Range: rng, From: now.Add(-span), To: now}
	db := s.db.WithContext(ctx)
	var vm VM
	if err := db.Select("id").First(&vm, "id = ?", vmID).Error; err != nil {
		return nil, translateError(err)
	}
	q := db.Where("vm_id = ? AND time >= ?", vmID, h.From)
	if rng == HistoryDay {
		q = q.Where("hourly = ?", false)
	}
	var rows []RPOHistory
	if err := q.Order("time, id").Find(&rows).Error; err != nil {
		return nil, translateError(err)
	}
	for _, r := range rows {
		pt := HistoryPoint{Time: r.Time.UTC(), Hourly: r.Hourly, MaxRPOSeconds: r.MaxRPOSeconds, RPOSeconds: r.RPOSeconds,
			Cycles: r.Cycles, BytesSent: r.BytesSent, TransferSeconds: r.TransferSeconds}
		if rng == HistoryWeek {
			// A week is drawn by the hour: the day not folded yet is
			// folded here, as CompactRPOHistory will.
			hour := r.Hour.UTC()
			if n := len(h.Points); n > 0 && h.Points[n-1].Time.Equal(hour) {
				last := &h.Points[n-1]
				last.MaxRPOSeconds = max(last.MaxRPOSeconds, pt.MaxRPOSeconds)
				last.RPOSeconds = last.MaxRPOSeconds
				last.Cycles += pt.Cycles
				last.BytesSent += pt.BytesSent
				last.TransferSeconds += pt.TransferSeconds
				continue
			}
			pt.Time, pt.Hourly, pt.RPOSeconds = hour, true, pt.MaxRPOSeconds
		}
		h.Points = append(h.Points, pt)
	}
	var p Protection
	err := db.Where("vm_id = ?", vmID).First(&p).Error
	switch {
	case err == nil:
		var policy Policy
		if err := db.First(&policy, "id = ?", p.PolicyID).Error; err != nil {
			return nil, translateError(err)
		}
		h.ThresholdSeconds = float64(2 * policy.CopyFrequencySeconds)
	case !errors.Is(err, gorm.ErrRecordNotFound):
		return nil, translateError(fmt.Errorf("the VM's protection: %w", err))
	}
	return h, nil
}
