package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// MaxTaskAttempts bounds how often a task whose lease expired (its agent
// died or lost the vault) is handed out again.
const MaxTaskAttempts = 5

// ErrLeaseLost is returned to an agent that reports on a task it no longer
// holds: cancelled, finished, or handed to another attempt.
var ErrLeaseLost = errors.New("the task is no longer leased to this host")

// Job types.
const JobCheckHost = "Check host prerequisites"

// StartHostCheck creates the "Check host prerequisites" job for a host,
// with one step whose task the host's agent will run.
func (s *Store) StartHostCheck(ctx context.Context, a Actor, hostID, payload string) (*Job, error) {
	now := s.Now()
	var job Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var h Host
		if err := tx.First(&h, "id = ? AND revoked_at IS NULL", hostID).Error; err != nil {
			return err
		}
		created, err := createOneStepJob(tx, now, a, Job{Type: JobCheckHost, TargetKind: "host", TargetID: h.ID, TargetName: h.Name},
			"Check prerequisites", Task{HostID: h.ID, Kind: agentproto.TaskCheckPrerequisites, Payload: payload})
		if err != nil {
			return err
		}
		job = *created
		return s.audit(tx, a, "job.create", "job", job.ID, job.Type, map[string]string{"host": h.Name})
	})
	if err != nil {
		return nil, err
	}
	return &job, nil
}

// LeaseTasks hands up to max queued tasks of a host to its agent until
// lease from now. On PostgreSQL the rows are locked with SKIP LOCKED so that
// several vaults never hand the same task out twice.
func (s *Store) LeaseTasks(ctx context.Context, hostID string, max int, lease time.Duration) ([]Task, error) {
	if max <= 0 {
		return nil, nil
	}
	now := s.Now()
	until := now.Add(lease)
	var tasks []Task
	err := s.tx(ctx, func(tx *gorm.DB) error {
		q := tx.Where("host_id = ? AND state = ?", hostID, TaskQueued).Order("id").Limit(max)
		if s.kind == "postgres" {
			q = q.Clauses(clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"})
		}
		if err := q.Find(&tasks).Error; err != nil {
			return err
		}
		for i := range tasks {
			t := &tasks[i]
			t.State, t.LeaseExpiresAt, t.Attempts = TaskLeased, &until, t.Attempts+1
			if err := tx.Model(&Task{}).Where("id = ?", t.ID).Updates(map[string]any{"state": t.State, "lease_expires_at": until, "attempts": t.Attempts}).Error; err != nil {
				return err
			}
			msg := "running on the host"
			if t.Attempts > 1 {
				msg = fmt.Sprintf("running on the host (attempt %d of %d)", t.Attempts, MaxTaskAttempts)
			}
			if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Updates(map[string]any{"state": JobInProgress, "started_at": now, "message": msg}).Error; err != nil {
				return err
			}
		}
		return nil
	})
	return tasks, err
}

// createOneStepJob stores a job that is one step run by one task on a
// host, in progress from now and waiting for the host's agent.
func createOneStepJob(tx *gorm.DB, now time.Time, a Actor, job Job, stepName string, task Task) (*Job, error) {
	job.ID, job.State, job.CreatedBy, job.StartedAt = NewID(prefixJob), JobInProgress, a.Username, &now
	step := JobStep{ID: NewID(prefixJobStep), JobID: job.ID, Seq: 1, Name: stepName, State: JobNotStarted,
		Message: "waiting for the host's agent to pick it up"}
	task.ID, task.JobID, task.StepID, task.State = NewID(prefixTask), job.ID, step.ID, TaskQueued
	if err := tx.Omit("Steps").Create(&job).Error; err != nil {
		return nil, err
	}
	if err := tx.Create(&step).Error; err != nil {
		return nil, err
	}
	if err := tx.Create(&task).Error; err != nil {
		return nil, err
	}
	job.Steps = []JobStep{step}
	return &job, nil
}

// leasedTask loads a task that hostID holds, for a report about it.
func leasedTask(tx *gorm.DB, hostID, taskID string) (*Task, error) {
	var t Task
	if err := tx.First(&t, "id = ? AND host_id = ?", taskID, hostID).Error; err != nil {
		return nil, err // another host's task is simply not found
	}
	return &t, nil
}

// TaskProgress is an agent's progress report on a task.
type TaskProgress struct {
	Step       string
	Percent    int
	BytesDone  int64
	BytesTotal int64
	Message    string
}

// ReportProgress records progress on the task's job step and extends the
// lease; it answers whether the vault wants the task cancelled.
func (s *Store) ReportProgress(ctx context.Context, hostID, taskID string, p TaskProgress, lease time.Duration) (cancel bool, until time.Time, err error) {
	until = s.Now().Add(lease)
	err = s.tx(ctx, func(tx *gorm.DB) error {
		t, err := leasedTask(tx, hostID, taskID)
		if err != nil {
			return err
		}
		if t.State != TaskLeased {
			return ErrLeaseLost
		}
		cancel = t.CancelRequest
		if err := tx.Model(&Task{}).Where("id = ?", t.ID).Update("lease_expires_at", until).Error; err != nil {
			return err
		}
		percent := min(max(p.Percent, 0), 100)
		msg := p.Message
		if p.Step != "" {
			msg = p.Step + ": " + p.Message
		}
		if p.BytesTotal > 0 {
			msg += fmt.Sprintf(" (%d of %d bytes)", p.BytesDone, p.BytesTotal)
		}
		return tx.Model(&JobStep{}).Where("id = ?", t.StepID).Updates(map[string]any{"progress": percent, "message": truncate(msg, 2000)}).Error
	})
	return cancel, until, err
}

// TaskOutcome is how an agent ended a task.
type TaskOutcome struct {
	Result      string // JSON
	ErrorCode   string // empty on success
	Message     string
	Recoverable bool
}

// CompleteTask records the end of a task. Delivering the same end twice is
// harmless (agents retry until they get an answer). A recoverable failure
// goes back to the queue while attempts remain.
func (s *Store) CompleteTask(ctx context.Context, hostID, taskID string, o TaskOutcome) error {
	now := s.Now()
	return s.tx(ctx, func(tx *gorm.DB) error {
		t, err := leasedTask(tx, hostID, taskID)
		if err != nil {
			return err
		}
		switch t.State {
		case TaskSucceeded, TaskFailed, TaskCancelled:
			return nil // already recorded
		}
		if t.Kind == agentproto.TaskVerify && o.ErrorCode == "" {
			if o, err = s.verifyOutcome(tx, now, t, o); err != nil {
				return err
			}
		}
		switch {
		case o.ErrorCode == "":
			if err := finishTask(tx, now, t, TaskSucceeded, o.Result, "", "", ""); err != nil {
				return err
			}
			return afterTaskSucceeded(tx, now, t, o.Result)
		case t.Kind == agentproto.TaskReplicate && t.JobID == "":
			// A scheduled cycle: the scheduler retries it on the reference
			// back-off, not the task queue.
			if err := finishTask(tx, now, t, TaskFailed, o.Result, o.ErrorCode, o.Message, ""); err != nil {
				return err
			}
			if o.ErrorCode == agentproto.CodeResyncRequired {
				var p Protection
				if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
					return err
				}
				return s.markResyncRequired(tx, now, p, o.ErrorCode, o.Message)
			}
			return recordCycleFailure(tx, now, t, o)
		case t.CancelRequest:
			return finishTask(tx, now, t, TaskCancelled, o.Result, "cancelled", "cancelled by an operator", "")
		case o.Recoverable && t.Attempts < MaxTaskAttempts:
			if err := tx.Model(&Task{}).Where("id = ?", t.ID).Updates(map[string]any{"state": TaskQueued, "lease_expires_at": nil,
				"error_code": o.ErrorCode, "error_message": truncate(o.Message, 2000)}).Error; err != nil {
				return err
			}
			return tx.Model(&JobStep{}).Where("id = ?", t.StepID).Updates(map[string]any{"state": JobNotStarted,
				"message": truncate(fmt.Sprintf("attempt %d failed (%s: %s); it will be retried", t.Attempts, o.ErrorCode, o.Message), 2000)}).Error
		default:
			return finishTask(tx, now, t, TaskFailed, o.Result, o.ErrorCode, o.Message, actionFor(o.ErrorCode))
		}
	})
}

// actionFor is what to do about a task error: the error table's advice
// (agentproto.Errors), or the general one for a code it does not know.
func actionFor(code string) string {
	if e, ok := agentproto.LookupError(code, "task"); ok {
		return e.Action
	}
	return "see the host's agent log; fix the cause, then run the job again"
}

// ReapExpiredLeases returns tasks whose lease ran out to the queue, with
// their attempt count, or fails them when no attempt is left.
func (s *Store) ReapExpiredLeases(ctx context.Context) (int, error) {
	now := s.Now()
	n := 0
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var tasks []Task
		if err := tx.Where("state = ? AND lease_expires_at < ?", TaskLeased, now).Find(&tasks).Error; err != nil {
			return err
		}
		for i := range tasks {
			t := &tasks[i]
			n++
			if t.Attempts >= MaxTaskAttempts || t.CancelRequest {
				code, msg := "lease_expired", fmt.Sprintf("the host's agent stopped reporting on this task %d times", t.Attempts)
				state := TaskFailed
				if t.CancelRequest {
					state, code, msg = TaskCancelled, "cancelled", "cancelled by an operator"
				}
				if err := finishTask(tx, now, t, state, "", code, msg, "check that the host's agent runs and reaches the vault, then run the job again"); err != nil {
					return err
				}
				continue
			}
			if err := tx.Model(&Task{}).Where("id = ?", t.ID).Updates(map[string]any{"state": TaskQueued, "lease_expires_at": nil}).Error; err != nil {
				return err
			}
			if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Updates(map[string]any{"state": JobNotStarted,
				"message": "the agent stopped reporting; waiting to run it again"}).Error; err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// CancelRequests lists the tasks of a host that the vault wants cancelled.
func (s *Store) CancelRequests(ctx context.Context, hostID string) ([]string, error) {
	var ids []string
	err := s.db.WithContext(ctx).Model(&Task{}).Where("host_id = ? AND state = ? AND cancel_request", hostID, TaskLeased).Pluck("id", &ids).Error
	return ids, translateError(err)
}

// CancelJob asks every unfinished task of a job to stop: queued ones end at
// once, running ones when their agent hears of it.
func (s *Store) CancelJob(ctx context.Context, a Actor, jobID string) error {
	now := s.Now()
	return s.tx(ctx, func(tx *gorm.DB) error {
		var j Job
		if err := tx.First(&j, "id = ?", jobID).Error; err != nil {
			return err
		}
		switch j.State {
		case JobSucceeded, JobFailed, JobCancelled:
			return &ConflictError{Code: "job_ended", Message: fmt.Sprintf("the job has already ended (%s)", j.State)}
		}
		var tasks []Task
		if err := tx.Where("job_id = ? AND state IN ?", j.ID, []string{TaskWaiting, TaskQueued, TaskLeased}).Find(&tasks).Error; err != nil {
			return err
		}
		for i := range tasks {
			t := &tasks[i]
			if t.State == TaskQueued || t.State == TaskWaiting {
				if err := finishTask(tx, now, t, TaskCancelled, "", "cancelled", "cancelled by "+a.Username, ""); err != nil {
					return err
				}
				continue
			}
			if err := tx.Model(&Task{}).Where("id = ?", t.ID).Update("cancel_request", true).Error; err != nil {
				return err
			}
			if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Update("message", "cancelling: waiting for the host's agent to stop").Error; err != nil {
				return err
			}
		}
		return s.audit(tx, a, "job.cancel", "job", j.ID, j.Type, nil)
	})
}

// finishTask ends a task and carries its end to its step and its job.
func finishTask(tx *gorm.DB, now time.Time, t *Task, state, result, code, message, action string) error {
	if err := tx.Model(&Task{}).Where("id = ?", t.ID).Updates(map[string]any{"state": state, "result": result,
		"error_code": code, "error_message": truncate(message, 2000), "lease_expires_at": nil}).Error; err != nil {
		return err
	}
	stepState, progress, stepMsg := JobFailed, -1, message
	switch state {
	case TaskSucceeded:
		stepState, progress, stepMsg = JobSucceeded, 100, "done"
	case TaskCancelled:
		stepState = JobCancelled
	}
	updates := map[string]any{"state": stepState, "ended_at": now, "message": truncate(stepMsg, 2000)}
	if progress >= 0 {
		updates["progress"] = progress
	}
	if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Updates(updates).Error; err != nil {
		return err
	}
	if state != TaskSucceeded && t.JobID != "" {
		// Later steps will not run: say so, so the job can end.
		var later []Task
		if err := tx.Where("job_id = ? AND state = ?", t.JobID, TaskWaiting).Find(&later).Error; err != nil {
			return err
		}
		for _, l := range later {
			if err := tx.Model(&Task{}).Where("id = ?", l.ID).Update("state", TaskCancelled).Error; err != nil {
				return err
			}
		}
		if err := tx.Model(&JobStep{}).Where("job_id = ? AND state = ?", t.JobID, JobNotStarted).
			Updates(map[string]any{"state": JobCancelled, "message": "not run: an earlier step did not succeed"}).Error; err != nil {
			return err
		}
		if t.Kind == agentproto.TaskResync {
			if err := moveProtection(tx, t.ProtectionID, StateResyncRequired); err != nil {
				return err
			}
		}
		if t.ProtectionID != "" && state == TaskFailed {
			reasons, _ := json.Marshal([]string{"the last protection job failed: " + message})
			if err := tx.Model(&Protection{}).Where("id = ?", t.ProtectionID).Updates(map[string]any{"health": HealthCritical,
				"health_reasons": string(reasons), "last_error_code": code, "last_error_message": truncate(message, 2000)}).Error; err != nil {
				return err
			}
			if err := vmAlert(tx, t.ProtectionID, AlertProtectionCritical, HealthCritical, fmt.Sprintf("a protection job failed (%s): %s", code, message)); err != nil {
				return err
			}
		}
	}
	return settleJob(tx, now, t.JobID, code, message, action)
}

// settleJob ends a job once none of its steps is waiting or running.
func settleJob(tx *gorm.DB, now time.Time, jobID, code, message, action string) error {
	var steps []JobStep
	if err := tx.Where("job_id = ?", jobID).Find(&steps).Error; err != nil {
		return err
	}
	state := JobSucceeded
	for _, st := range steps {
		switch st.State {
		case JobNotStarted, JobInProgress, JobWaitingForInput, JobSuspended:
			return nil
		case JobFailed:
			state = JobFailed
		case JobCancelled:
			if state != JobFailed {
				state = JobCancelled
			}
		}
	}
	updates := map[string]any{"state": state, "ended_at": now}
	if state == JobFailed {
		updates["error_code"], updates["error_message"], updates["error_action"] = code, truncate(message, 2000), truncate(action, 2000)
	}
	return tx.Model(&Job{}).Where("id = ?", jobID).Updates(updates).Error
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// GetTask returns one task.
func (s *Store) GetTask(ctx context.Context, id string) (*Task, error) {
	var t Task
	if err := s.db.WithContext(ctx).First(&t, "id = ?", id).Error; err != nil {
		return nil, translateError(err)
	}
	return &t, nil
}

// JobTasks lists a job's tasks, for its page.
func (s *Store) JobTasks(ctx context.Context, jobID string) ([]Task, error) {
	var out []Task
	err := s.db.WithContext(ctx).Where("job_id = ?", jobID).Order("id").Find(&out).Error
	return out, translateError(err)
}
