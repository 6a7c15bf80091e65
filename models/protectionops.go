package models

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// CycleRequest is the answer to Replicate now: the recovery point the
// queued cycle makes (listed under the VM's points once it succeeds), and
// whether that cycle was queued before the call (and not started, so its
// capture still comes after the call).
type CycleRequest struct {
	PointID string
	Queued  bool // true: an earlier, still queued cycle
	Task    *Task
}

// ReplicateNow queues a replication cycle of a protected VM at once,
// whatever its copy frequency and retry time. A cycle or resync already
// queued and not yet started is returned instead (its point is captured
// after this call, which is what the caller asks for). One already running
// is refused with replication_busy: its point may be older than the call.
func (s *Store) ReplicateNow(ctx context.Context, a Actor, vmID string) (*CycleRequest, error) {
	now := s.Now()
	var out CycleRequest
	err := s.tx(ctx, func(tx *gorm.DB) error {
		w, err := protectionOf(tx, vmID)
		if err != nil {
			return err
		}
		p := w.Protection
		switch {
		case p.PausedAt != nil:
			return &ConflictError{Code: "replication_paused", Message: fmt.Sprintf(
				"replication of VM %s is paused (by %s at %s); resume it first", w.VM.Name, p.PausedBy, p.PausedAt.UTC().Format(time.RFC3339))}
		case p.State == StateResyncRequired:
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf(
				"VM %s needs a resynchronization, not a cycle; press Resynchronize (or POST /api/v1/vms/{id}/resync)", w.VM.Name)}
		case p.State != StateProtected:
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf(
				"VM %s is %s; a cycle can be asked for once it is Protected", w.VM.Name, p.State)}
		case p.Health == HealthCritical:
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf(
				"replication of VM %s stopped (Critical: %s); fix the cause, then disable and enable protection again", w.VM.Name, p.LastErrorMessage)}
		}
		var pending []Task
		if err := tx.Where("protection_id = ? AND kind IN ? AND state IN ?", p.ID, []string{agentproto.TaskReplicate, agentproto.TaskResync},
			[]string{TaskWaiting, TaskQueued, TaskLeased}).Order("created_at").Find(&pending).Error; err != nil {
			return err
		}
		for i := range pending {
			var pl agentproto.ReplicationPayload
			if pending[i].State != TaskQueued || json.Unmarshal([]byte(pending[i].Payload), &pl) != nil || pl.PointID == "" {
				return &ConflictError{Code: "replication_busy", Message: fmt.Sprintf(
					"a replication cycle of VM %s is running; its point may be older than this request; ask again when it ends", w.VM.Name)}
			}
			out = CycleRequest{PointID: pl.PointID, Queued: true, Task: &pending[i]}
			return nil
		}
		if len(w.Payload.Disks) == 0 {
			return &ConflictError{Code: "vm_has_no_disks", Message: fmt.Sprintf("every disk of VM %s was removed; there is nothing to replicate", w.VM.Name)}
		}
		t, err := s.queueCycle(tx, now, p, w.Policy, true)
		if err != nil {
			return err
		}
		if t == nil {
			return &ConflictError{Code: "replication_busy", Message: fmt.Sprintf("a task of VM %s is using its replicas; ask again when it ends", w.VM.Name)}
		}
		var pl agentproto.ReplicationPayload
		_ = json.Unmarshal([]byte(t.Payload), &pl)
		out = CycleRequest{PointID: pl.PointID, Task: t}
		return s.audit(tx, a, "protection.replicate_now", "vm", w.VM.ID, w.VM.Name, map[string]string{"point": pl.PointID})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ChangePolicy puts a protected VM under another replication policy. The
// replicas and recovery points stay where they are: the next cycle is
// scheduled by the new copy frequency, prunes by the new retention and asks
// for app-consistent points at the new frequency; nothing is copied again.
// A cycle already queued runs with the settings it was queued with. It
// says whether anything changed (the same policy again changes nothing).
// targetID, when given, must be the VM's target: a move to another target
// is not built.
func (s *Store) ChangePolicy(ctx context.Context, a Actor, vmID, policyID, targetID string) (bool, error) {
	now := s.Now()
	changed := false
	err := s.tx(ctx, func(tx *gorm.DB) error {
		w, err := protectionOf(tx, vmID)
		if err != nil {
			return err
		}
		var policy Policy
		if err := tx.First(&policy, "id = ?", policyID).Error; err != nil {
			return &ValidationError{Fields: []FieldError{{Field: "policy_id", Reason: fmt.Sprintf("no replication policy %q", policyID)}}}
		}
		p := w.Protection
		if targetID != "" && targetID != p.TargetID {
			return &ConflictError{Code: "target_change_not_supported", Message: fmt.Sprintf(
				"VM %s replicates to target %s; this call changes the policy alone: leave target_id out (or give its current target), and move the VM to another target with POST /api/v1/vms/{id}/protection/move (the VM page's Move form)", w.VM.Name, w.Target.Name)}
		}
		if p.State == StateDisablingProtection {
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf(
				"the protection of VM %s is being disabled; its policy can no longer change", w.VM.Name)}
		}
		if p.PolicyID == policy.ID {
			return nil
		}
		if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Update("policy_id", policy.ID).Error; err != nil {
			return err
		}
		changed = true
		p.PolicyID = policy.ID
		if p.State == StateProtected {
			// The RPO is judged against the new copy frequency from now.
			if err := refreshHealth(tx, now, p, policy); err != nil {
				return err
			}
		}
		return s.audit(tx, a, "protection.change_policy", "vm", w.VM.ID, w.VM.Name, map[string]string{"from": w.Policy.Name, "to": policy.Name})
	})
	return changed, err
}
