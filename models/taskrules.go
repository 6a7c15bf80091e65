package models

import (
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// What each kind of task's end means for its protection. The generic task
// lifecycle (tasks.go) leases, re-queues and finishes tasks; these rules
// alone decide a protection's state and health. A side task (verify) never
// touches replication; a resync that fails recoverably keeps trying on the
// back-off, and one that fails for good leaves the VM needing a resync,
// never stopped.

// taskRule is one kind's rules.
type taskRule struct {
	// retries is how many recoverable failures are run again, each after
	// the reference back-off; 0 means while the error persists.
	retries int
	// once: the kind may not be idempotent (a plan's script), so a run that
	// may have happened (its lease ran out) is never handed out again.
	once bool
	// succeeded, retrying and failed carry a task's end to its protection
	// (nil: nothing to do). failed gets a final failure: not recoverable,
	// out of retries, or cancelled.
	succeeded func(s *Store, tx *gorm.DB, now time.Time, t *Task, result string) error
	retrying  func(s *Store, tx *gorm.DB, now time.Time, t *Task, o TaskOutcome, next time.Time) error
	failed    func(s *Store, tx *gorm.DB, now time.Time, t *Task, o TaskOutcome) error
}

// ruleFor returns the rules of a task's kind.
func ruleFor(t *Task) taskRule {
	switch t.Kind {
	case agentproto.TaskProtectionCheck:
		return taskRule{retries: MaxTaskAttempts, failed: enableFailed}
	case agentproto.TaskCreateReplica:
		return taskRule{retries: MaxTaskAttempts, failed: enableFailed,
			succeeded: func(_ *Store, tx *gorm.DB, _ time.Time, t *Task, _ string) error {
				if moving, err := isMoveTask(tx, t); err != nil || moving {
					return err // a move's replicas on its new target: the VM stays Protected on its old one
				}
				return setState(tx, t.ProtectionID, StateInitialReplication)
			}}
	case agentproto.TaskReplicate:
		// The initial copy, in the Enable protection job. Scheduled cycles
		// have no job and are retried by the scheduler (cycleFailed).
		// A failover's final cycle fails its failover.
		rule := taskRule{succeeded: replicated, retrying: protectionRetrying, failed: replicateFailed}
		if isSeed(t) {
			// A move's seed holds the VM's cycles while it runs: after a
			// few failures the move gives up and the VM replicates to its
			// old target again.
			rule.retries = MaxTaskAttempts
		}
		return rule
	case agentproto.TaskResync:
		return taskRule{succeeded: resyncSucceeded, retrying: protectionRetrying, failed: resyncFailed}
	case agentproto.TaskVerify:
		return taskRule{retries: MaxTaskAttempts, succeeded: verified}
	case agentproto.TaskMaterialize:
		return taskRule{retries: MaxTaskAttempts, succeeded: materialized, failed: recoveryStepFailed}
	case agentproto.TaskShutdownVM:
		return taskRule{retries: MaxTaskAttempts, failed: recoveryStepFailed}
	case agentproto.TaskRemoveVM:
		return taskRule{retries: MaxTaskAttempts, succeeded: testVMRemoved}
	case agentproto.TaskCommitPoint:
		return taskRule{retries: MaxTaskAttempts, succeeded: committed}
	case agentproto.TaskRunScript:
		return taskRule{retries: 1, once: true, succeeded: scriptRan}
	case agentproto.TaskDeleteReplica:
		return taskRule{retries: MaxTaskAttempts, succeeded: replicaDataDeleted, failed: deleteFailed}
	}
	return taskRule{retries: MaxTaskAttempts}
}

// attemptsLeft says whether a recoverable failure is run again.
func (r taskRule) attemptsLeft(t *Task) bool {
	return r.retries == 0 || t.Failures+1 < r.retries
}

// setHealth records a protection's health and its reasons.
func setHealth(tx *gorm.DB, protectionID, health string, reasons []string, extra map[string]any) error {
	health, reasons, err := keepPauseShown(tx, protectionID, health, reasons)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(append([]string{}, reasons...))
	updates := map[string]any{"health": health, "health_reasons": string(b)}
	for k, v := range extra {
		updates[k] = v
	}
	return tx.Model(&Protection{}).Where("id = ?", protectionID).Updates(updates).Error
}

// protectionRetrying shows, while a task of the protection is retried,
// its current error and when the next attempt runs.
func protectionRetrying(_ *Store, tx *gorm.DB, _ time.Time, t *Task, o TaskOutcome, next time.Time) error {
	if moving, err := isMoveTask(tx, t); err != nil || moving {
		return err // a move's seed: its job step shows the retry; the VM's replication is not failing
	}
	what := map[string]string{agentproto.TaskReplicate: "the initial replication", agentproto.TaskResync: "the resynchronization"}[t.Kind]
	reason := fmt.Sprintf("%s failed %d time(s) (%s): %s; it is retried at %s", what, t.Failures, o.ErrorCode, o.Message, next.UTC().Format(time.RFC3339))
	return setHealth(tx, t.ProtectionID, HealthWarning, []string{reason},
		map[string]any{"last_error_code": o.ErrorCode, "last_error_message": truncate(o.Message, 2000)})
}

// enableFailed: enabling protection stopped at a step that will not work
// by itself; an administrator must fix the cause and enable again.
func enableFailed(_ *Store, tx *gorm.DB, _ time.Time, t *Task, o TaskOutcome) error {
	if o.ErrorCode == agentproto.CodeCancelled {
		return nil
	}
	if moving, err := isMoveTask(tx, t); err != nil || moving {
		return err // a move's check of its new target: the VM stays as it was (move.go)
	}
	reason := fmt.Sprintf("enabling protection failed (%s): %s; fix the cause, then retry from the VM page (Retry enable protection), with the same or another target", o.ErrorCode, o.Message)
	if err := setHealth(tx, t.ProtectionID, HealthCritical, []string{reason},
		map[string]any{"last_error_code": o.ErrorCode, "last_error_message": truncate(o.Message, 2000)}); err != nil {
		return err
	}
	return vmAlert(tx, t.ProtectionID, AlertProtectionCritical, HealthCritical, reason)
}

// replicateFailed: an initial copy that failed stops enabling protection;
// a failover's final cycle that failed stops the failover.
func replicateFailed(s *Store, tx *gorm.DB, now time.Time, t *Task, o TaskOutcome) error {
	typ, err := jobTypeOf(tx, t)
	if err != nil {
		return err
	}
	switch typ {
	case JobPlannedFailover, JobUnplannedFailover:
		return recoveryJobFailed(tx, now, t, o, typ)
	case JobReprotect:
		return reprotectFailed(s, tx, now, t, o)
	case JobMoveReplica:
		return nil // the VM stays on its old target, its tracking intact (move.go)
	}
	return enableFailed(s, tx, now, t, o)
}

// replicated records a cycle's point; a re-protect's cycle ends it.
func replicated(s *Store, tx *gorm.DB, now time.Time, t *Task, result string) error {
	typ, err := jobTypeOf(tx, t)
	if err != nil {
		return err
	}
	if typ == JobMoveReplica {
		return moveSeeded(s, tx, now, t, result) // switches target, then records the point
	}
	if err := recordCycle(s, tx, now, t, result); err != nil {
		return err
	}
	if typ != JobReprotect {
		return nil
	}
	return reprotected(s, tx, now, t, result)
}

// resyncSucceeded records the resync's point and says what it sent. A VM
// that began failing over meanwhile stays so.
func resyncSucceeded(s *Store, tx *gorm.DB, now time.Time, t *Task, result string) error {
	if err := recordCycle(s, tx, now, t, result); err != nil {
		return err
	}
	if err := setStateFrom(tx, t.ProtectionID, StateResynchronizing, StateProtected); err != nil {
		return err
	}
	var r agentproto.ReplicateResult
	if json.Unmarshal([]byte(result), &r) == nil && t.StepID != "" {
		msg := fmt.Sprintf("sent %s of blocks that differed from the source; %d block(s) had been changed by the storage; new recovery point %s",
			agentproto.FormatBytes(r.BytesSent), r.Repaired, r.Time.UTC().Format(time.RFC3339))
		return tx.Model(&JobStep{}).Where("id = ?", t.StepID).Update("message", msg).Error
	}
	return nil
}

// resyncFailed: the VM still needs its resync. Cancelled, it waits for the
// window (or the button); a failure no retry can mend makes it Critical.
func resyncFailed(s *Store, tx *gorm.DB, now time.Time, t *Task, o TaskOutcome) error {
	var p Protection
	if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
		return err
	}
	if p.State != StateResynchronizing && p.State != StateResyncRequired {
		return nil // cancelled by a failover, which owns the state now
	}
	if err := setState(tx, t.ProtectionID, StateResyncRequired); err != nil {
		return err
	}
	if o.ErrorCode == agentproto.CodeCancelled {
		return s.markResyncRequired(tx, now, p, p.LastErrorCode, "the resynchronization was cancelled")
	}
	reason := fmt.Sprintf("the resynchronization failed (%s): %s; fix the cause, then press Resynchronize", o.ErrorCode, o.Message)
	if err := setHealth(tx, p.ID, HealthCritical, []string{reason},
		map[string]any{"last_error_code": o.ErrorCode, "last_error_message": truncate(o.Message, 2000), "next_retry_at": nil}); err != nil {
		return err
	}
	return vmAlert(tx, p.ID, AlertProtectionCritical, HealthCritical, reason)
}

// replicaDataDeleted ends a protection whose replica data is gone.
func replicaDataDeleted(_ *Store, tx *gorm.DB, now time.Time, t *Task, _ string) error {
	if moving, err := isMoveTask(tx, t); err != nil || moving {
		return err // a move deleted the old target's replica; the protection lives on the new one
	}
	if err := queueContainerCleanup(tx, now, t.ProtectionID); err != nil {
		return err
	}
	return forgetProtection(tx, now, t.ProtectionID)
}

// deleteFailed leaves the protection disabling, Critical: disabling again
// (deleting or keeping the data) is the way out.
func deleteFailed(_ *Store, tx *gorm.DB, _ time.Time, t *Task, o TaskOutcome) error {
	if o.ErrorCode == agentproto.CodeCancelled || o.ErrorCode == agentproto.CodeProtectionDisabled {
		return nil
	}
	if moving, err := isMoveTask(tx, t); err != nil || moving {
		return err // the old replica of a finished move stays; the job's error says where
	}
	reason := fmt.Sprintf("deleting the replica data failed (%s): %s; disable protection again to retry, or keep the data", o.ErrorCode, o.Message)
	if err := setHealth(tx, t.ProtectionID, HealthCritical, []string{reason},
		map[string]any{"last_error_code": o.ErrorCode, "last_error_message": truncate(o.Message, 2000)}); err != nil {
		return err
	}
	return vmAlert(tx, t.ProtectionID, AlertProtectionCritical, HealthCritical, reason)
}

// cycleFailed handles a scheduled cycle's failure: the scheduler runs the
// next one on the reference back-off (or in the resync window).
func (s *Store) cycleFailed(tx *gorm.DB, now time.Time, t *Task, o TaskOutcome) error {
	var p Protection
	if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
		return err
	}
	if o.ErrorCode == agentproto.CodeResyncRequired {
		return s.markResyncRequired(tx, now, p, o.ErrorCode, o.Message)
	}
	return recordCycleFailure(tx, now, t, o)
}

// isSeed says whether a replicate task is a move's seed (the only one that
// keeps the driver's tracking).
func isSeed(t *Task) bool {
	var pl struct {
		KeepTracking bool `json:"keep_tracking"`
	}
	return t.Kind == agentproto.TaskReplicate && json.Unmarshal([]byte(t.Payload), &pl) == nil && pl.KeepTracking
}
