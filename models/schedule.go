package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// ScheduleReplications brings every protected VM's health up to date
// (RefreshHealth), then queues the cycles that are due and starts the
// resyncs whose window is open (QueueDueCycles).
func (s *Store) ScheduleReplications(ctx context.Context) ([]Task, error) {
	if err := s.RefreshHealth(ctx); err != nil {
		return nil, err
	}
	return s.QueueDueCycles(ctx)
}

// scheduleChunk is how many VMs one scheduler transaction handles: short
// transactions keep the agents' writes flowing beside a pass that queues
// thousands of cycles (SQLite has one writer).
const scheduleChunk = 100

// QueueDueCycles queues a replication cycle for every protected VM whose
// copy frequency has passed since its last cycle, whose retry time (after
// failures) has come, that is not paused, and that has no task waiting or
// running; and starts the resyncs whose window is open. One query per
// policy finds the due VMs (outside a transaction, on SQLite's readers);
// each is then queued in a short transaction that checks again, under the
// protection's row lock, that it is still due (queueCycle).
func (s *Store) QueueDueCycles(ctx context.Context) ([]Task, error) {
	now := s.Now()
	var policyList []Policy
	if err := s.db.WithContext(ctx).Find(&policyList).Error; err != nil {
		return nil, translateError(err)
	}
	policies := make(map[string]Policy, len(policyList))
	var queued []Task
	for _, pol := range policyList {
		policies[pol.ID] = pol
		ids, err := s.dueProtections(ctx, now, pol)
		if err != nil {
			return queued, err
		}
		err = s.eachProtectionInChunks(ctx, ids, func(tx *gorm.DB, p Protection) error {
			if p.State != StateProtected || p.Health == HealthCritical || p.PausedAt != nil || p.PolicyID != pol.ID {
				return nil // changed since the search
			}
			t, err := s.queueCycle(tx, now, p, pol, false)
			if t != nil {
				queued = append(queued, *t)
			}
			return err
		})
		if err != nil {
			return queued, err
		}
	}
	var resyncs []Task
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var err error
		resyncs, err = s.startWindowResyncs(tx, now, policies)
		return err
	})
	return append(queued, resyncs...), err
}

// eachProtectionInChunks reads the protections of ids again, as they are
// now, scheduleChunk at a time, each chunk in a transaction of its own,
// and calls fn for each; an error ends the transaction and the walk. A
// writer never waits for a whole pass.
func (s *Store) eachProtectionInChunks(ctx context.Context, ids []string, fn func(tx *gorm.DB, p Protection) error) error {
	for chunk := range slices.Chunk(ids, scheduleChunk) {
		err := s.tx(ctx, func(tx *gorm.DB) error {
			var ps []Protection
			if err := tx.Where("id IN ?", chunk).Order("id").Find(&ps).Error; err != nil {
				return err
			}
			for _, p := range ps {
				if err := fn(tx, p); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// dueProtections are the ids of the VMs of a policy whose next cycle is
// due at now, by the rules of queueCycle.
func (s *Store) dueProtections(ctx context.Context, now time.Time, pol Policy) ([]string, error) {
	cutoff := now.Add(-time.Duration(pol.CopyFrequencySeconds) * time.Second)
	var ids []string
	err := s.db.WithContext(ctx).Model(&Protection{}).
		Where("policy_id = ? AND state = ? AND health <> ? AND paused_at IS NULL", pol.ID, StateProtected, HealthCritical).
		Where("(next_retry_at IS NOT NULL AND next_retry_at <= ?) OR (next_retry_at IS NULL AND (last_cycle_at IS NULL OR last_cycle_at <= ?))", now, cutoff).
		Where("NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.protection_id = protections.id AND tasks.kind NOT IN ? AND tasks.state IN ?)",
			sideTaskKinds, []string{TaskWaiting, TaskQueued, TaskLeased}).
		Order("last_cycle_at").Pluck("id", &ids).Error
	return ids, translateError(err)
}

// RefreshHealth keeps the stored health of protected VMs in step with
// what time changes: an RPO growing past twice the copy frequency, a host
// gone silent, and the warnings already shown. What else a VM's health
// depends on changes with events that assess it then (a cycle recorded or
// failed, a pause, a disk removed). The VMs that may need it are found in
// one query per policy; each is assessed again in a short transaction.
func (s *Store) RefreshHealth(ctx context.Context) error {
	now := s.Now()
	var policyList []Policy
	if err := s.db.WithContext(ctx).Find(&policyList).Error; err != nil {
		return translateError(err)
	}
	for _, pol := range policyList {
		overdue := now.Add(-2 * time.Duration(pol.CopyFrequencySeconds) * time.Second)
		var ids []string
		err := s.db.WithContext(ctx).Model(&Protection{}).
			Where("policy_id = ? AND state = ? AND health <> ?", pol.ID, StateProtected, HealthCritical).
			Where(`health <> ? OR health_reasons NOT IN ('', '[]', 'null') OR (last_recovery_point_at IS NOT NULL AND last_recovery_point_at < ?)
				OR EXISTS (SELECT 1 FROM vms JOIN hosts ON hosts.id = vms.host_id WHERE vms.id = protections.vm_id AND hosts.state <> ?)
				OR EXISTS (SELECT 1 FROM replica_disks WHERE replica_disks.protection_id = protections.id AND replica_disks.removed_at IS NOT NULL)`,
				HealthNormal, overdue, HostConnected).
			Order("id").Pluck("id", &ids).Error
		if err != nil {
			return translateError(err)
		}
		err = s.eachProtectionInChunks(ctx, ids, func(tx *gorm.DB, p Protection) error {
			if p.State != StateProtected || p.PolicyID != pol.ID {
				return nil // changed since the search
			}
			return refreshHealth(tx, now, p, pol)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// queueCycle queues a replication cycle of a protected VM when one is due
// (its copy frequency has passed since the last cycle, and its retry time
// after failures has come), or at once with atOnce set (Replicate now), unless
// a task of it is waiting or running. It returns the cycle, or nil.
func (s *Store) queueCycle(tx *gorm.DB, now time.Time, p Protection, policy Policy, atOnce bool) (*Task, error) {
	// Whoever else queues work for this VM (a move, a failover) holds its
	// row until it commits: the check below then sees what it queued.
	if err := lockProtection(tx, p.ID); err != nil {
		return nil, err
	}
	busy, err := replicationBusy(tx, p.ID)
	if err != nil || busy {
		return nil, err
	}
	if !atOnce && p.NextRetryAt != nil && p.NextRetryAt.After(now) {
		return nil, nil
	}
	if !atOnce && p.NextRetryAt == nil && p.LastCycleAt != nil && now.Sub(*p.LastCycleAt) < time.Duration(policy.CopyFrequencySeconds)*time.Second {
		return nil, nil
	}
	w, err := loadWork(tx, p.ID)
	if err != nil {
		return nil, err
	}
	if len(w.Payload.Disks) == 0 {
		return nil, nil // every disk was removed: nothing to replicate (the VM is Warning, saying so)
	}
	payload := w.Payload
	payload.PointID = NewID(prefixRecoveryPoint)
	payload.ResyncThresholdPercent = ResyncThresholdPercent
	payload.BandwidthMbps = BandwidthAt(policy, now, s.loc())
	if payload.KeepPoints, err = pointsInUse(tx, p.ID); err != nil {
		return nil, err
	}
	if payload.AppConsistent, err = appConsistentDue(tx, now, p, policy); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(payload)
	t := Task{ID: NewID(prefixTask), HostID: w.VM.HostID, ProtectionID: p.ID, Kind: agentproto.TaskReplicate, Payload: string(b), State: TaskQueued}
	if err := tx.Create(&t).Error; err != nil {
		return nil, err
	}
	return &t, nil
}

// appConsistentDue says whether the next point should be app-consistent:
// the policy asks for one every so many hours, and the last is that old.
func appConsistentDue(tx *gorm.DB, now time.Time, p Protection, policy Policy) (bool, error) {
	if policy.AppConsistentFrequencyHours <= 0 {
		return false, nil
	}
	var lastApp RecoveryPoint
	err := tx.Where("protection_id = ? AND consistency = ?", p.ID, ConsistencyApp).Order("time DESC").First(&lastApp).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		return true, nil
	case err != nil:
		return false, err
	}
	return now.Sub(lastApp.Time) >= time.Duration(policy.AppConsistentFrequencyHours)*time.Hour, nil
}

// ResyncThresholdPercent is the share of a disk whose changes, pending at
// a scheduled cycle, make the VM need a resynchronization instead (the
// reference's 50 %): so much is better sent in the off-hours window.
const ResyncThresholdPercent = 50

// startWindowResyncs starts the resync of every VM that needs one and whose
// policy's resync window is open now, unless a task of it is waiting.
func (s *Store) startWindowResyncs(tx *gorm.DB, now time.Time, policies map[string]Policy) ([]Task, error) {
	var ps []Protection
	if err := tx.Where("state = ? AND health <> ? AND paused_at IS NULL", StateResyncRequired, HealthCritical).Find(&ps).Error; err != nil {
		return nil, err
	}
	var queued []Task
	for _, p := range ps {
		policy, ok := policies[p.PolicyID]
		if !ok {
			continue
		}
		open, err := InWindow(now, policy.ResyncWindowStart, policy.ResyncWindowEnd, s.loc())
		if err != nil || !open {
			continue
		}
		busy, err := replicationBusy(tx, p.ID)
		if err != nil {
			return nil, err
		}
		if busy {
			continue
		}
		job, err := s.startResync(tx, now, SystemActor, p, "started in the policy's resync window")
		if err != nil {
			return nil, err
		}
		var t Task
		if err := tx.First(&t, "job_id = ?", job.ID).Error; err != nil {
			return nil, err
		}
		queued = append(queued, t)
	}
	return queued, nil
}

// markResyncRequired moves a protection to ResyncRequired, health Warning,
// with the reason and when the resync will start; the error that led there
// is the VM's last error (a resync reads the replica back after a
// replica_mismatch).
func (s *Store) markResyncRequired(tx *gorm.DB, now time.Time, p Protection, code, why string) error {
	if p.State != StateResyncRequired && CheckTransition(p.State, StateResyncRequired) != nil {
		return nil
	}
	reason := "resynchronization required: " + why
	var policy Policy
	if err := tx.First(&policy, "id = ?", p.PolicyID).Error; err == nil {
		if at, err := NextWindowOpening(now, policy.ResyncWindowStart, policy.ResyncWindowEnd, s.loc()); err == nil {
			reason += fmt.Sprintf("; it starts by itself in the resync window %s–%s (next: %s) or now with Resynchronize",
				policy.ResyncWindowStart, policy.ResyncWindowEnd, at.In(s.loc()).Format("2006-01-02 15:04 MST"))
		}
	}
	if err := setState(tx, p.ID, StateResyncRequired); err != nil {
		return err
	}
	return setHealth(tx, p.ID, HealthWarning, []string{reason}, map[string]any{"next_retry_at": nil,
		"last_error_code": code, "last_error_message": truncate(why, 2000)})
}

// BandwidthAt is the policy's bandwidth limit (Mbit/s, 0 for none) at t:
// the work-hours limit inside the work hours, read on loc's wall clock, else
// the off-hours one.
func BandwidthAt(p Policy, t time.Time, loc *time.Location) int {
	if in, err := InWindow(t, p.WorkHoursStart, p.WorkHoursEnd, loc); err == nil && in {
		return p.WorkHoursMbps
	}
	return p.OffHoursMbps
}

// replicationBusy says whether a task of the protection is waiting, queued
// or running: a new cycle or resync must not be queued beside it.
func replicationBusy(tx *gorm.DB, protectionID string) (bool, error) {
	var n int64
	// Side tasks do not count (a verify; a test failover's copy, its
	// cleanup; a finished move's deletion of the old replica): a cycle
	// queued beside one waits in LeaseTasks while it runs, and one waiting
	// out its back-off, or for a recovery host or an old target that is
	// away, must not hold cycles. (Disabling protection deletes replicas
	// too, but its VM is no longer Protected: nothing is scheduled.)
	err := tx.Model(&Task{}).Where("protection_id = ? AND kind NOT IN ? AND state IN ?", protectionID, sideTaskKinds,
		[]string{TaskWaiting, TaskQueued, TaskLeased}).Count(&n).Error
	return n > 0, err
}

// sideTaskKinds are the tasks of a protection beside which a cycle may be
// queued (replicationBusy).
var sideTaskKinds = []string{agentproto.TaskVerify, agentproto.TaskMaterialize, agentproto.TaskRemoveVM, agentproto.TaskDeleteReplica}
