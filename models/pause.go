package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Pausing replication (issue 12): a paused VM keeps its replicas, its
// recovery points and its place in recovery plans, and can be failed over,
// but the scheduler starts no cycle of it and no resync in its window. A
// cycle or resync already running when it is paused finishes. Its health is
// Warning, saying who paused it and when, until it is resumed. The RPO
// still grows, and its alert still fires: the exposure is real.

// pausedPrefix starts the health reason of a paused VM, so that resuming
// removes that reason and no other.
const pausedPrefix = "replication paused by "

// pausedReason is the health reason of a paused protection.
func pausedReason(p Protection) string {
	by := p.PausedBy
	if by == "" {
		by = SystemActor.Username
	}
	return fmt.Sprintf("%s%s at %s: no replication cycle starts until it is resumed (Resume on the VM page, or POST /api/v1/vms/{id}/resume)",
		pausedPrefix, by, p.PausedAt.UTC().Format(time.RFC3339))
}

// pausable says whether replication of a protection in this state can be
// paused: it is replicating, or waiting for a resync.
func pausable(state string) bool {
	return state == StateProtected || state == StateResyncRequired || state == StateResynchronizing
}

// PauseReplication pauses the replication of a protected VM.
func (s *Store) PauseReplication(ctx context.Context, a Actor, vmID string) error {
	now := s.Now()
	return s.tx(ctx, func(tx *gorm.DB) error {
		w, err := protectionOf(tx, vmID) // an unprotected VM: not_protected
		if err != nil {
			return err
		}
		p := w.Protection
		if p.PausedAt != nil {
			return &ConflictError{Code: "replication_paused", Message: fmt.Sprintf(
				"replication of VM %s is already paused (by %s at %s); resume it to start cycles again", w.VM.Name, p.PausedBy, p.PausedAt.UTC().Format(time.RFC3339))}
		}
		if !pausable(p.State) {
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf(
				"replication of VM %s cannot be paused in state %s: pause a VM that is Protected or waiting for a resync; wait for its running job to end first", w.VM.Name, p.State)}
		}
		p.PausedAt, p.PausedBy = &now, a.Username
		if p.PausedBy == "" {
			p.PausedBy = SystemActor.Username
		}
		if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"paused_at": now, "paused_by": p.PausedBy}).Error; err != nil {
			return err
		}
		// A cycle queued and not started (or a resync waiting out its
		// back-off) would still run: paused means none starts. A running
		// one finishes.
		var queued []Task
		if err := tx.Where("protection_id = ? AND state IN ? AND ((kind = ? AND job_id = '') OR kind = ?)", p.ID, []string{TaskWaiting, TaskQueued},
			agentproto.TaskReplicate, agentproto.TaskResync).Find(&queued).Error; err != nil {
			return err
		}
		for i := range queued {
			if err := s.endTask(tx, now, &queued[i], TaskCancelled, TaskOutcome{ErrorCode: agentproto.CodeCancelled,
				Message: "replication was paused by " + p.PausedBy + " before this task started"}); err != nil {
				return err
			}
		}
		if err := showPause(tx, now, p, w.Policy); err != nil {
			return err
		}
		return s.audit(tx, a, "protection.pause", "vm", w.VM.ID, w.VM.Name, nil)
	})
}

// ResumeReplication resumes the replication of a paused VM. When a cycle
// is due (its copy frequency passed while it was paused) it is queued at
// once and returned, for the caller to wake the VM's host; otherwise nil.
func (s *Store) ResumeReplication(ctx context.Context, a Actor, vmID string) (*Task, error) {
	now := s.Now()
	var queued *Task
	err := s.tx(ctx, func(tx *gorm.DB) error {
		w, err := protectionOf(tx, vmID)
		if err != nil {
			return err
		}
		p := w.Protection
		if p.PausedAt == nil {
			return &ConflictError{Code: "not_paused", Message: fmt.Sprintf("replication of VM %s is not paused; there is nothing to resume", w.VM.Name)}
		}
		pausedBy, pausedAt := p.PausedBy, p.PausedAt.UTC().Format(time.RFC3339)
		p.PausedAt, p.PausedBy = nil, ""
		if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"paused_at": nil, "paused_by": ""}).Error; err != nil {
			return err
		}
		if err := showPause(tx, now, p, w.Policy); err != nil {
			return err
		}
		if p.State == StateProtected && p.Health != HealthCritical {
			if queued, err = s.queueCycle(tx, now, p, w.Policy, false); err != nil {
				return err
			}
		}
		details := map[string]string{"paused_by": pausedBy, "paused_at": pausedAt}
		if queued != nil {
			details["cycle"] = "queued at once: one was due"
		}
		return s.audit(tx, a, "protection.resume", "vm", w.VM.ID, w.VM.Name, details)
	})
	return queued, err
}

// showPause brings a protection's health in line with its pause: a
// replicating VM's is assessed again (assessProtection names the pause);
// one in another state keeps its own reasons, beside the pause's while it
// lasts.
func showPause(tx *gorm.DB, now time.Time, p Protection, policy Policy) error {
	if p.State == StateProtected {
		if err := refreshHealth(tx, now, p, policy); err != nil {
			return err
		}
		if p.Health != HealthCritical {
			return nil
		}
	}
	var reasons []string
	if p.HealthReasons != "" {
		_ = json.Unmarshal([]byte(p.HealthReasons), &reasons)
	}
	reasons = slices.DeleteFunc(reasons, func(r string) bool { return strings.HasPrefix(r, pausedPrefix) })
	health := p.Health
	if p.PausedAt != nil {
		reasons = append(reasons, pausedReason(p))
		if health == HealthNormal || health == "" {
			health = HealthWarning
		}
	}
	return setHealth(tx, p.ID, health, reasons, nil)
}

// keepPauseShown keeps a paused protection's health saying so, whatever
// else sets it (a cycle or resync that fails while paused): at least
// Warning, with the pause's reason.
func keepPauseShown(tx *gorm.DB, protectionID, health string, reasons []string) (string, []string, error) {
	var p Protection
	if err := tx.Select("id", "paused_at", "paused_by").First(&p, "id = ?", protectionID).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return health, reasons, nil
		}
		return "", nil, err
	}
	if p.PausedAt == nil || slices.ContainsFunc(reasons, func(r string) bool { return strings.HasPrefix(r, pausedPrefix) }) {
		return health, reasons, nil
	}
	if health == HealthNormal || health == "" {
		health = HealthWarning
	}
	return health, append(slices.Clone(reasons), pausedReason(p)), nil
}
