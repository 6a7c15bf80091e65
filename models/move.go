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

// Moving a protected VM to another target (issue 12). The "Move replica"
// job checks the new target, creates the replicas there and seeds them
// with a full copy, while the VM stays on its old target: its points
// there stay recoverable, and its cycles wait (the job's tasks make it
// busy). When the seed succeeds, the protection switches to the new target
// in the same transaction that records the seed's point, which is then its
// only point: the old points are deleted from the old target by the job's
// last step, or kept there, no longer listed, as the caller chose. A move
// that fails leaves the VM on its old target, Normal, with nothing to
// repair: the seed never acknowledges its capture (KeepTracking), so a
// driver that tracks changes (qemu's dirty bitmaps) still counts them from
// the old replica's last cycle, and the new replica's first cycle sends a
// superset of what it lacks.
//
// Only directory targets move, either way: an Azure Blob target needs the
// SAS signed for the task's target and its emptied container deleted,
// which are not built.

// JobMoveReplica is the job that moves a VM's replicas to another target.
const JobMoveReplica = "Move replica"

// Old replica choices of a move.
const (
	OldReplicaDelete = "delete"
	OldReplicaKeep   = "keep"
)

// StartMove starts moving a protected VM to another directory target.
func (s *Store) StartMove(ctx context.Context, a Actor, vmID, targetID, oldReplica string) (*Job, error) {
	now := s.Now()
	var job *Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		w, err := protectionOf(tx, vmID)
		if err != nil {
			return err
		}
		v := &ValidationError{}
		var target Target
		if targetID == "" {
			v.Add("target_id", "is required: choose the storage target to move to")
		} else if err := tx.First(&target, "id = ?", targetID).Error; err != nil {
			v.Add("target_id", "no storage target %q", targetID)
		} else if target.ID == w.Target.ID {
			v.Add("target_id", "is the VM's target already")
		}
		if oldReplica != OldReplicaDelete && oldReplica != OldReplicaKeep {
			v.Add("old_replica", "must be %s or %s: what becomes of the replicas and points on the old target", OldReplicaDelete, OldReplicaKeep)
		}
		if err := v.Err(); err != nil {
			return err
		}
		if err := checkMovable(tx, w, target); err != nil {
			return err
		}
		if err := checkLocationFree(tx, target, w.Protection.replicaKey(), ""); err != nil {
			return err
		}
		seed := movePayload(w, target)
		if seed.Target.InUse, err = targetInUseBy(tx, target.ID, w.Protection.ID); err != nil {
			return err
		}
		seed.MinFreeBytes, seed.BandwidthMbps = 1<<30, BandwidthAt(w.Policy, now, s.loc())
		check, _ := json.Marshal(seed)
		seed.PointID, seed.KeepTracking = NewID(prefixRecoveryPoint), true
		copyAll, _ := json.Marshal(seed)
		oldPayload := w.Payload
		oldPayload.KeepReplicaRoot = target.Path
		old, _ := json.Marshal(oldPayload)
		host, p := w.VM.HostID, w.Protection.ID
		steps := []jobStepSpec{
			{Name: "Prerequisites check on " + target.Name, Task: &Task{HostID: host, ProtectionID: p, Kind: agentproto.TaskProtectionCheck, Payload: string(check)}},
			{Name: "Create replicas on " + target.Name, Task: &Task{HostID: host, ProtectionID: p, Kind: agentproto.TaskCreateReplica, Payload: string(check)}},
			{Name: "Seed " + target.Name + " and switch to it", Task: &Task{HostID: host, ProtectionID: p, Kind: agentproto.TaskReplicate, Payload: string(copyAll)}},
		}
		where := ReplicaLocationOf(w.Target, w.Protection)
		if oldReplica == OldReplicaDelete {
			steps = append(steps, jobStepSpec{Name: "Delete the old replica " + where,
				Task: &Task{HostID: host, ProtectionID: p, Kind: agentproto.TaskDeleteReplica, Payload: string(old)}})
		}
		asked, _ := json.Marshal(moveRequest{TargetID: target.ID, OldReplica: oldReplica, OldTargetID: w.Target.ID})
		job, err = createJob(tx, now, a, Job{Type: JobMoveReplica, TargetKind: "vm", TargetID: w.VM.ID, TargetName: w.VM.Name, Payload: string(asked)}, steps)
		if err != nil {
			return err
		}
		return s.audit(tx, a, "protection.move", "vm", w.VM.ID, w.VM.Name, map[string]string{"from": w.Target.Name, "to": target.Name,
			"old_replica": oldReplica, "job": job.ID})
	})
	return job, err
}

// moveRequest is what a move was asked to do, kept as its job's payload.
type moveRequest struct {
	TargetID    string `json:"target_id"`
	OldTargetID string `json:"old_target_id"`
	OldReplica  string `json:"old_replica"`
}

// moveOf reads the request of the move a task belongs to.
func moveOf(tx *gorm.DB, t *Task) (moveRequest, error) {
	var j Job
	var r moveRequest
	if err := tx.Select("payload").First(&j, "id = ?", t.JobID).Error; err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(j.Payload), &r); err != nil || r.TargetID == "" {
		return r, fmt.Errorf("the move job %s has no target: %v", t.JobID, err)
	}
	return r, nil
}

// checkMovable refuses a move the VM's protection is not ready for.
func checkMovable(tx *gorm.DB, w *protectionWork, to Target) error {
	p := w.Protection
	switch {
	case w.Target.Kind != TargetDirectory || to.Kind != TargetDirectory:
		return &ConflictError{Code: "target_change_not_supported", Message: "only a move from one directory target to another is built; for Azure Blob storage, disable protection keeping the data, then enable it to the new target (the VM is copied again)"}
	case p.PausedAt != nil:
		return &ConflictError{Code: "replication_paused", Message: fmt.Sprintf("replication of VM %s is paused; resume it first", w.VM.Name)}
	case p.State != StateProtected || p.Health == HealthCritical:
		return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf("VM %s is %s (%s); a VM moves once it is Protected and replicating", w.VM.Name, p.State, p.Health)}
	case p.LegacyReplicaKey != "":
		return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf("the replicas of VM %s are still under their old name; its next cycle renames them, then move it", w.VM.Name)}
	case p.TestFailover:
		return &ConflictError{Code: "test_failover_exists", Message: fmt.Sprintf("VM %s has a test failover; clean it up before moving its replicas", w.VM.Name)}
	case !slices.Contains(strings.Fields(w.Host.Features), agentproto.FeatureMoveSeed):
		return &ConflictError{Code: agentproto.CodeAgentUpgradeRequired, Message: fmt.Sprintf(
			"the agent of host %s does not copy a new replica whole whatever its change tracking says; upgrade it to the vault's version, then move the VM", w.Host.Name)}
	case len(w.Payload.Disks) == 0:
		return &ConflictError{Code: "vm_has_no_disks", Message: fmt.Sprintf("every disk of VM %s was removed; there is nothing to move", w.VM.Name)}
	}
	var n int64
	if err := tx.Model(&Task{}).Where("protection_id = ? AND state IN ?", p.ID, []string{TaskWaiting, TaskQueued, TaskLeased}).Count(&n).Error; err != nil {
		return err
	}
	if n > 0 {
		return &ConflictError{Code: "replication_busy", Message: fmt.Sprintf("a task of VM %s is waiting or running (a cycle, a verify, a recovery); move it when it ends", w.VM.Name)}
	}
	return nil
}

// movePayload is the payload of a move's tasks: the new target, under the
// same replica name, with every disk new there (it gets its replica and
// its full copy).
func movePayload(w *protectionWork, to Target) agentproto.ReplicationPayload {
	pl := w.Payload
	pl.Target.Kind, pl.Target.Path, pl.Target.ContainerURL = to.Kind, to.Path, ""
	pl.Target.MustExist = !to.CreatePath // a directory (moves are between directories)
	pl.LegacyReplicaKey, pl.KeepPoints = "", nil
	pl.Disks = append([]agentproto.ReplicaDisk(nil), w.Payload.Disks...)
	for i := range pl.Disks {
		pl.Disks[i].New = true
	}
	return pl
}

// isMoveTask says whether a task is a step of a Move replica job.
func isMoveTask(tx *gorm.DB, t *Task) (bool, error) {
	typ, err := jobTypeOf(tx, t)
	return typ == JobMoveReplica, err
}

// moveSeeded switches a protection to the target its move seeded and
// records the seed's point as its only one; the old points are on the old
// target (the job's next step deletes them, or they stay, unlisted).
func moveSeeded(s *Store, tx *gorm.DB, now time.Time, t *Task, result string) error {
	req, err := moveOf(tx, t)
	if err != nil {
		return err
	}
	var p Protection
	if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
		return err
	}
	var seeded agentproto.ReplicationPayload
	if err := json.Unmarshal([]byte(t.Payload), &seeded); err != nil {
		return fmt.Errorf("the move's seed payload cannot be read: %w", err)
	}
	// The target must still be where the seed wrote: deleted, or given
	// another path meanwhile, it holds no seeded replica (the vault
	// refuses both while a move runs; this holds whatever wrote it).
	var to Target
	switch err := tx.First(&to, "id = ?", req.TargetID).Error; {
	case errors.Is(err, gorm.ErrRecordNotFound):
		return moveAbandoned(tx, now, t, "the target it moved to was deleted meanwhile")
	case err != nil:
		return err
	case to.Kind != seeded.Target.Kind || to.Path != seeded.Target.Path:
		return moveAbandoned(tx, now, t, fmt.Sprintf("target %s was changed to %s meanwhile, not where the seed wrote (%s)", to.Name, to.Path, seeded.Target.Path))
	}
	inUse, err := pointsInUse(tx, p.ID)
	if err != nil {
		return err
	}
	switch {
	case len(inUse) > 0:
		return moveAbandoned(tx, now, t, "a recovery reads the VM's points on the old target")
	case p.State != StateProtected:
		return moveAbandoned(tx, now, t, fmt.Sprintf("VM is %s now", p.State))
	}
	// Whatever else of the VM waits (a cycle or a verify queued in a race
	// with the move) was made for the old target: it must never run
	// against it once the VM is on the new one.
	var stale []Task
	if err := tx.Where("protection_id = ? AND job_id <> ? AND state IN ?", p.ID, t.JobID, []string{TaskWaiting, TaskQueued}).Find(&stale).Error; err != nil {
		return err
	}
	for i := range stale {
		if err := finishTask(tx, now, &stale[i], TaskCancelled, "", agentproto.CodeCancelled,
			"the VM moved to another target before this task ran; it was made for the old one", ""); err != nil {
			return err
		}
	}
	var from Target
	if err := tx.First(&from, "id = ?", p.TargetID).Error; err != nil {
		return err
	}
	oldLocation := ReplicaLocationOf(from, p)
	var oldPoints int64
	if err := tx.Model(&RecoveryPoint{}).Where("protection_id = ?", p.ID).Count(&oldPoints).Error; err != nil {
		return err
	}
	if err := tx.Where("protection_id = ?", p.ID).Delete(&RecoveryPoint{}).Error; err != nil {
		return err
	}
	if err := tx.Where("protection_id = ? AND removed_at IS NOT NULL", p.ID).Delete(&ReplicaDisk{}).Error; err != nil {
		return err // removed disks live only in the old points
	}
	// The disks the seed copied are copied on the new target; one the VM
	// gained since the move began is new there (the next cycle copies it).
	names := []string{""}
	for _, d := range seeded.Disks {
		names = append(names, d.ReplicaID)
	}
	if err := tx.Model(&ReplicaDisk{}).Where("protection_id = ? AND name IN ?", p.ID, names).Update("copied_at", now).Error; err != nil {
		return err
	}
	if err := tx.Model(&ReplicaDisk{}).Where("protection_id = ? AND name NOT IN ?", p.ID, names).Update("copied_at", nil).Error; err != nil {
		return err
	}
	if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Update("target_id", to.ID).Error; err != nil {
		return err
	}
	if err := recordCycle(s, tx, now, t, result); err != nil {
		return err
	}
	msg := fmt.Sprintf("seeded %s and switched to it; the %d recovery point(s) on %s are no longer listed", ReplicaLocationOf(to, p), oldPoints, oldLocation)
	if req.OldReplica == OldReplicaKeep {
		msg += " and stay there, as asked"
	} else {
		msg += "; the next step deletes them"
	}
	return tx.Model(&JobStep{}).Where("id = ?", t.StepID).Update("message", msg).Error
}

// moveAbandoned ends a move whose seed succeeded when the VM can no
// longer switch: a failover began meanwhile (its recovery reads the old
// points), or a recovery task will read them. The VM stays on its old
// target with its points; the new copy stays on the new target, unlisted,
// and the old replica is not deleted.
func moveAbandoned(tx *gorm.DB, now time.Time, t *Task, why string) error {
	msg := "the new target was seeded, but the move was abandoned: " + why + "; the VM stays on its old target with its points, and the copy on the new target is not used (move again later)"
	if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Updates(map[string]any{"state": JobFailed, "message": msg}).Error; err != nil {
		return err
	}
	if err := cancelLaterSteps(tx, t.JobID); err != nil {
		return err
	}
	return settleJob(tx, now, t.JobID, "move_abandoned", msg, "move the VM again once what stopped it has ended")
}

// movesTo names the VMs that a running move copies to a target: its
// location must not change, nor may it go, until they end.
func movesTo(tx *gorm.DB, targetID string) ([]string, error) {
	var names []string
	err := tx.Model(&Job{}).Where("type = ? AND state IN ? AND payload LIKE ?", JobMoveReplica,
		[]string{JobNotStarted, JobInProgress, JobWaitingForInput, JobSuspended}, `%"target_id":"`+targetID+`"%`).
		Order("target_name").Limit(10).Pluck("target_name", &names).Error
	return names, err
}
