package models

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
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

// HasQueuedTasks says whether a task waits for hostID now, reading
// outside a transaction (on SQLite's readers): a poll that finds none
// waits without taking the writer to lease nothing. A task queued after
// the look wakes the poll (handlers take the wake-up channel first).
func (s *Store) HasQueuedTasks(ctx context.Context, hostID string) (bool, error) {
	var ids []string
	err := s.db.WithContext(ctx).Model(&Task{}).Where("host_id = ? AND state = ? AND (not_before IS NULL OR not_before <= ?)", hostID, TaskQueued, s.Now()).
		Limit(1).Pluck("id", &ids).Error
	return len(ids) > 0, translateError(err)
}

// LeaseTasks hands up to max queued tasks of a host to its agent until
// lease from now. Tasks of one protection run one at a time, in order: one
// waits while another of the same VM is leased (a verify waits for the
// cycle, a cycle for the verify), so no two ever write, or read and write,
// one replica at once. A task waiting out its back-off waits. A task whose
// kind the agent does not list in its features fails at once, with what
// to do, instead of being sent. On PostgreSQL the rows are locked with
// SKIP LOCKED so that several vaults never hand the same task out twice.
func (s *Store) LeaseTasks(ctx context.Context, hostID string, max int, lease time.Duration) ([]Task, error) {
	if max <= 0 {
		return nil, nil
	}
	now := s.Now()
	until := now.Add(lease)
	var tasks []Task
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var host Host
		if err := tx.First(&host, "id = ?", hostID).Error; err != nil {
			return err
		}
		q := tx.Where("host_id = ? AND state = ? AND (not_before IS NULL OR not_before <= ?)", hostID, TaskQueued, now).Order("id").Limit(max * 4)
		if s.kind == "postgres" {
			q = q.Clauses(clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"})
		}
		var candidates []Task
		if err := q.Find(&candidates).Error; err != nil {
			return err
		}
		// Replication before side tasks: a verify waits while its VM has a
		// cycle or resync ready, so a verify retrying never delays the RPO.
		slices.SortStableFunc(candidates, func(a, b Task) int {
			return cmp.Compare(boolInt(a.Kind == agentproto.TaskVerify), boolInt(b.Kind == agentproto.TaskVerify))
		})
		busy, err := busyProtections(tx, candidates)
		if err != nil {
			return err
		}
		states, err := protectionStates(tx, candidates)
		if err != nil {
			return err
		}
		for i := range candidates {
			t := &candidates[i]
			if len(tasks) == max {
				break
			}
			if t.ProtectionID != "" && busy[t.ProtectionID] {
				continue
			}
			if t.Kind == agentproto.TaskReplicate && t.JobID == "" && states[t.ProtectionID] != StateProtected {
				// Queued before its VM came to need a resync (a verify beside
				// it found the replica changed): a cycle now would hide that.
				if err := finishTask(tx, now, t, TaskCancelled, "", agentproto.CodeCancelled,
					"not run: the VM is "+states[t.ProtectionID]+" now", ""); err != nil {
					return err
				}
				continue
			}
			if missing := missingFeature(host, t.Kind); missing != "" {
				o := TaskOutcome{ErrorCode: agentproto.CodeAgentUpgradeRequired, Message: fmt.Sprintf(
					"the agent of host %s (version %s) cannot run %s tasks (it lacks %q); upgrade it to the vault's version, then run the job again", host.Name, host.AgentVersion, t.Kind, missing)}
				if err := s.endTask(tx, now, t, TaskFailed, o); err != nil {
					return err
				}
				continue
			}
			updates := map[string]any{}
			if t.Kind == agentproto.TaskMaterialize {
				payload, failed, err := resolveMaterializePoint(tx, t)
				if err != nil {
					return err
				}
				if failed != nil {
					if err := s.endTask(tx, now, t, TaskFailed, *failed); err != nil {
						return err
					}
					continue
				}
				t.Payload, updates["payload"] = payload, payload
			}
			if t.ProtectionID != "" {
				busy[t.ProtectionID] = true
			}
			t.State, t.LeaseExpiresAt, t.Attempts = TaskLeased, &until, t.Attempts+1
			updates["state"], updates["lease_expires_at"], updates["attempts"] = t.State, until, t.Attempts
			// A new run has sent nothing yet: the last run's progress is no backlog.
			updates["bytes_done"], updates["bytes_total"], updates["bytes_at"] = 0, 0, nil
			if t.Failures > 0 {
				// A retry reads the disks the VM has now, not those it had
				// when it first failed.
				payload, err := refreshedPayload(tx, t)
				if err != nil {
					return err
				}
				t.Payload, updates["payload"] = payload, payload
			}
			if err := tx.Model(&Task{}).Where("id = ?", t.ID).Updates(updates).Error; err != nil {
				return err
			}
			msg := "running on the host"
			if t.Attempts > 1 {
				msg = fmt.Sprintf("running on the host (attempt %d)", t.Attempts)
			}
			if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Updates(map[string]any{"state": JobInProgress, "started_at": now, "message": msg}).Error; err != nil {
				return err
			}
			tasks = append(tasks, *t)
		}
		return nil
	})
	return tasks, err
}

// busyProtections are the protections, among the candidates', that have a
// task leased now (on any host).
func busyProtections(tx *gorm.DB, candidates []Task) (map[string]bool, error) {
	ids := map[string]bool{}
	var list []string
	for _, t := range candidates {
		if t.ProtectionID != "" && !ids[t.ProtectionID] {
			ids[t.ProtectionID] = true
			list = append(list, t.ProtectionID)
		}
	}
	busy := map[string]bool{}
	if len(list) == 0 {
		return busy, nil
	}
	var leased []string
	if err := tx.Model(&Task{}).Where("protection_id IN ? AND state = ?", list, TaskLeased).Pluck("protection_id", &leased).Error; err != nil {
		return nil, err
	}
	for _, id := range leased {
		busy[id] = true
	}
	return busy, nil
}

// protectionStates are the states of the candidates' protections.
func protectionStates(tx *gorm.DB, candidates []Task) (map[string]string, error) {
	var ids []string
	for _, t := range candidates {
		if t.ProtectionID != "" {
			ids = append(ids, t.ProtectionID)
		}
	}
	out := map[string]string{}
	if len(ids) == 0 {
		return out, nil
	}
	var rows []struct{ ID, State string }
	if err := tx.Model(&Protection{}).Select("id, state").Where("id IN ?", ids).Find(&rows).Error; err != nil {
		return nil, err
	}
	for _, r := range rows {
		out[r.ID] = r.State
	}
	return out, nil
}

// missingFeature is the feature a host's agent lacks to run a kind of
// task, or "". An agent that has not said what it can do yet (features
// empty: before its first heartbeat since the vault learnt to ask) is
// taken at its word for the task kinds it ran before.
func missingFeature(h Host, kind string) string {
	if h.Features == "" {
		return ""
	}
	have := map[string]bool{}
	for _, f := range strings.Fields(h.Features) {
		have[f] = true
	}
	need := []string{kind}
	switch kind {
	case agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica, agentproto.TaskReplicate, agentproto.TaskVerify,
		agentproto.TaskResync, agentproto.TaskDeleteReplica:
		// Without it, an agent would keep replicas by the host-local VM id,
		// shared by VMs of one name on two hosts.
		need = append(need, agentproto.FeatureReplicaKeys)
	}
	for _, f := range need {
		if !have[f] {
			return f
		}
	}
	return ""
}

// createOneStepJob stores a job that is one step run by one task on a
// host, in progress from now and waiting for the host's agent.
func createOneStepJob(tx *gorm.DB, now time.Time, a Actor, job Job, stepName string, task Task) (*Job, error) {
	return createJob(tx, now, a, job, []jobStepSpec{{Name: stepName, Task: &task}})
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
	Attempt    int // the run reporting (0: the agent does not say)
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
		if t.State != TaskLeased || (p.Attempt != 0 && p.Attempt != t.Attempts) {
			return ErrLeaseLost
		}
		cancel = t.CancelRequest
		// A run that reports is alive: earlier expiries no longer count.
		percent := min(max(p.Percent, 0), 100)
		msg := p.Message
		if p.Step != "" {
			msg = p.Step + ": " + p.Message
		}
		update := map[string]any{"lease_expires_at": until, "expiries": 0, "progress_percent": percent, "progress_message": truncate(msg, 500)}
		maps.Copy(update, nextRate(t, p, s.Now()))
		if err := tx.Model(&Task{}).Where("id = ?", t.ID).Updates(update).Error; err != nil {
			return err
		}
		if p.BytesTotal > 0 {
			msg += fmt.Sprintf(" (%s of %s)", agentproto.FormatBytes(p.BytesDone), agentproto.FormatBytes(p.BytesTotal))
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
	// Attempt is the run the agent reports on (0: an agent that does not
	// say). A result of an earlier run than the one leased now is refused:
	// the vault gave that run up.
	Attempt int
}

// CompleteTask records the end of a task. Delivering the same end twice is
// harmless (agents retry until they get an answer). A recoverable failure
// runs again after the reference back-off, while the kind's rules allow;
// what the end means for the protection is the kind's rules' (taskrules.go).
func (s *Store) CompleteTask(ctx context.Context, hostID, taskID string, o TaskOutcome) error {
	now := s.Now()
	return s.tx(ctx, func(tx *gorm.DB) error {
		t, err := leasedTask(tx, hostID, taskID)
		if err != nil {
			return err
		}
		if err := s.completeTask(tx, now, t, o); err != nil {
			return err
		}
		return s.movePlanOn(tx, now, t)
	})
}

// completeTask records the end of a task (CompleteTask).
func (s *Store) completeTask(tx *gorm.DB, now time.Time, t *Task, o TaskOutcome) error {
	var err error
	switch t.State {
	case TaskFailed:
		if lateRecoverySuccess(t, o) {
			return s.takeLateMaterialize(tx, now, t, o)
		}
		return nil // already recorded
	case TaskSucceeded, TaskCancelled:
		return nil // already recorded
	case TaskWaiting, TaskQueued:
		// Only a leased run may end a task: one the vault took back
		// (its lease expired, or its failure was recorded and it waits
		// to run again) reports nothing more; a delivery repeated after
		// a lost answer changes nothing.
		return ErrLeaseLost
	}
	if t.State == TaskLeased && o.Attempt != 0 && o.Attempt != t.Attempts {
		return ErrLeaseLost // a run the vault gave up on; the current one reports for itself
	}
	if t.Kind == agentproto.TaskVerify && o.ErrorCode == "" {
		if o, err = s.verifyOutcome(tx, now, t, o); err != nil {
			return err
		}
	}
	rule := ruleFor(t)
	switch {
	case o.ErrorCode == "":
		if err := finishTask(tx, now, t, TaskSucceeded, o.Result, "", "", ""); err != nil {
			return err
		}
		if err := clearLegacyKey(tx, t); err != nil {
			return err
		}
		if rule.succeeded != nil {
			if err := rule.succeeded(s, tx, now, t, o.Result); err != nil {
				return err
			}
		}
		if t.JobID == "" {
			return nil
		}
		return advanceJob(tx, now, t.JobID)
	case t.CancelRequest:
		return s.endTask(tx, now, t, TaskCancelled, TaskOutcome{Result: o.Result, ErrorCode: agentproto.CodeCancelled, Message: "cancelled by an operator"})
	case t.Kind == agentproto.TaskReplicate && t.JobID == "":
		// A scheduled cycle: the scheduler retries it on the reference
		// back-off, not the task queue.
		if err := finishTask(tx, now, t, TaskFailed, o.Result, o.ErrorCode, o.Message, ""); err != nil {
			return err
		}
		return s.cycleFailed(tx, now, t, o)
	case o.Recoverable && rule.attemptsLeft(t):
		return s.retryTask(tx, now, t, o, rule)
	default:
		return s.endTask(tx, now, t, TaskFailed, o)
	}
}

// movePlanOn lets the recovery plan a task's job belongs to go on at once
// (a script of the plan, or a VM's job of one of its groups), rather than
// at the watch loop's next pass.
func (s *Store) movePlanOn(tx *gorm.DB, now time.Time, t *Task) error {
	if t.JobID == "" {
		return nil
	}
	var job Job
	if err := tx.Select("id", "target_kind", "parent_job_id").First(&job, "id = ?", t.JobID).Error; err != nil {
		return err
	}
	switch {
	case job.TargetKind == "recovery_plan":
		return s.advancePlan(tx, now, job.ID)
	case job.ParentJobID != "":
		var parent Job
		if err := tx.Select("id", "target_kind").First(&parent, "id = ?", job.ParentJobID).Error; err != nil || parent.TargetKind != "recovery_plan" {
			return err
		}
		return s.advancePlan(tx, now, parent.ID)
	}
	return nil
}

// retryTask puts a task that failed recoverably back in the queue, to be
// leased again after the back-off counted from its first failure (1, 2, 4,
// 8, 10 minutes, then every 30), and shows the error meanwhile.
func (s *Store) retryTask(tx *gorm.DB, now time.Time, t *Task, o TaskOutcome, rule taskRule) error {
	first := now
	if t.FirstFailureAt != nil {
		first = *t.FirstFailureAt
	}
	t.Failures++
	next := NextRetry(first, t.Failures)
	if err := tx.Model(&Task{}).Where("id = ?", t.ID).Updates(map[string]any{"state": TaskQueued, "lease_expires_at": nil,
		"not_before": next, "first_failure_at": first, "failures": t.Failures,
		"error_code": o.ErrorCode, "error_message": truncate(o.Message, 2000)}).Error; err != nil {
		return err
	}
	msg := fmt.Sprintf("attempt %d failed (%s: %s); it runs again at %s", t.Attempts, o.ErrorCode, o.Message, next.UTC().Format(time.RFC3339))
	if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Updates(map[string]any{"state": JobInProgress, "message": truncate(msg, 2000)}).Error; err != nil {
		return err
	}
	if rule.retrying != nil {
		return rule.retrying(s, tx, now, t, o, next)
	}
	return nil
}

// refreshedPayload is a retried replication task's payload, made when it
// is leased again, with the VM's disks as they are now: a disk removed while the task waited must not be
// read again for ever, and one added gets its replica. The rest (its point
// id, whether to read the replica back) stays.
func refreshedPayload(tx *gorm.DB, t *Task) (string, error) {
	if t.ProtectionID == "" || (t.Kind != agentproto.TaskReplicate && t.Kind != agentproto.TaskResync) {
		return t.Payload, nil
	}
	var pl agentproto.ReplicationPayload
	if err := json.Unmarshal([]byte(t.Payload), &pl); err != nil {
		return t.Payload, nil
	}
	w, err := loadWork(tx, t.ProtectionID)
	if err != nil {
		return "", err
	}
	pl.Disks = w.Payload.Disks
	if pl.KeepPoints, err = pointsInUse(tx, t.ProtectionID); err != nil {
		return "", err
	}
	if moving, err := isMoveTask(tx, t); err != nil {
		return "", err
	} else if moving {
		// A move's seed: every disk is new on the new target, and the old
		// target's points are not there to keep.
		for i := range pl.Disks {
			pl.Disks[i].New = true
		}
		pl.KeepPoints = nil
	}
	b, err := json.Marshal(pl)
	return string(b), err
}

// endTask ends a task that did not succeed, and carries the end to its
// protection by the kind's rules.
func (s *Store) endTask(tx *gorm.DB, now time.Time, t *Task, state string, o TaskOutcome) error {
	if err := finishTask(tx, now, t, state, o.Result, o.ErrorCode, o.Message, actionFor(o.ErrorCode)); err != nil {
		return err
	}
	if f := ruleFor(t).failed; f != nil && t.ProtectionID != "" {
		return f(s, tx, now, t, o)
	}
	return nil
}

// clearLegacyKey: a task of the protection succeeded, so its agent found
// (or moved) the replicas under the new key; the legacy key is done.
func clearLegacyKey(tx *gorm.DB, t *Task) error {
	if t.ProtectionID == "" {
		return nil
	}
	return tx.Model(&Protection{}).Where("id = ? AND legacy_replica_key <> ''", t.ProtectionID).Update("legacy_replica_key", "").Error
}

// actionFor is what to do about a task error: the error table's advice
// (agentproto.Errors), or the general one for a code it does not know.
func actionFor(code string) string {
	if e, ok := agentproto.LookupError(code, "task"); ok {
		return e.Action
	}
	return "see the host's agent log; fix the cause, then run the job again"
}

// ReapExpiredLeases returns tasks whose lease ran out (their agent died or
// lost the vault) to the queue at once, or fails them after MaxTaskAttempts
// such expiries.
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
			expiries := t.Expiries + 1
			switch {
			case t.CancelRequest:
				if err := s.endTask(tx, now, t, TaskCancelled, TaskOutcome{ErrorCode: agentproto.CodeCancelled, Message: "cancelled by an operator"}); err != nil {
					return err
				}
				continue
			case ruleFor(t).once:
				// Its lease ran out, so it may have run: not handed out again.
				o := TaskOutcome{ErrorCode: agentproto.CodeLeaseExpired, Message: "the host's agent stopped reporting on this task; it may or may not have run (it is never run twice by itself): check on the host, then run the job again"}
				if err := s.endTask(tx, now, t, TaskFailed, o); err != nil {
					return err
				}
				continue
			case expiries >= MaxTaskAttempts:
				o := TaskOutcome{ErrorCode: agentproto.CodeLeaseExpired, Recoverable: true,
					Message: fmt.Sprintf("the host's agent stopped reporting on this task %d times; check that it runs and reaches the vault", expiries)}
				var err error
				switch rule := ruleFor(t); {
				case t.Kind == agentproto.TaskReplicate && t.JobID == "":
					// A scheduled cycle: the scheduler tries again on the back-off.
					if err = finishTask(tx, now, t, TaskFailed, "", o.ErrorCode, o.Message, ""); err == nil {
						err = s.cycleFailed(tx, now, t, o)
					}
				case rule.retries == 0:
					// A kind that keeps trying while its error persists (a
					// resync, an initial copy): on the back-off.
					t.Expiries = 0
					if err = tx.Model(&Task{}).Where("id = ?", t.ID).Update("expiries", 0).Error; err == nil {
						err = s.retryTask(tx, now, t, o, rule)
					}
				default:
					o.Message += ", then run the job again"
					err = s.endTask(tx, now, t, TaskFailed, o)
				}
				if err != nil {
					return err
				}
				continue
			}
			if err := tx.Model(&Task{}).Where("id = ?", t.ID).Updates(map[string]any{"state": TaskQueued, "lease_expires_at": nil, "expiries": expiries}).Error; err != nil {
				return err
			}
			if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Updates(map[string]any{"state": JobNotStarted,
				"message": "the agent stopped reporting; waiting to run it again"}).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.leaseExpiries.Add(int64(n))
	}
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
		return s.cancelJob(tx, now, a, j)
	})
}

// cancelJob cancels one job; a recovery plan's job, its VM jobs too, and
// the steps it had not started or waits on.
func (s *Store) cancelJob(tx *gorm.DB, now time.Time, a Actor, j Job) error {
	var tasks []Task
	if err := tx.Where("job_id = ? AND state IN ?", j.ID, []string{TaskWaiting, TaskQueued, TaskLeased}).Find(&tasks).Error; err != nil {
		return err
	}
	for i := range tasks {
		t := &tasks[i]
		if t.State == TaskQueued || t.State == TaskWaiting {
			if err := s.endTask(tx, now, t, TaskCancelled, TaskOutcome{ErrorCode: agentproto.CodeCancelled, Message: "cancelled by " + a.Username}); err != nil {
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
	if j.TargetKind == "recovery_plan" {
		var children []Job
		if err := tx.Where("parent_job_id = ? AND state IN ?", j.ID, []string{JobNotStarted, JobInProgress, JobWaitingForInput, JobSuspended}).Find(&children).Error; err != nil {
			return err
		}
		for _, c := range children {
			if err := s.cancelJob(tx, now, a, c); err != nil {
				return err
			}
		}
		if err := tx.Model(&JobStep{}).Where("job_id = ? AND (state IN ? OR (state = ? AND plan_kind = ?))", j.ID,
			[]string{JobNotStarted, JobWaitingForInput}, JobInProgress, PlanStepGroup).
			Updates(map[string]any{"state": JobCancelled, "ended_at": now, "message": "cancelled by " + a.Username}).Error; err != nil {
			return err
		}
		if err := settleJob(tx, now, j.ID, agentproto.CodeCancelled, "cancelled by "+a.Username, ""); err != nil {
			return err
		}
	}
	return s.audit(tx, a, "job.cancel", "job", j.ID, j.Type, nil)
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
		if err := cancelLaterSteps(tx, t.JobID); err != nil {
			return err
		}
	}
	return settleJob(tx, now, t.JobID, code, message, action)
}

// cancelLaterSteps says, of a job whose step did not succeed, that the
// steps not started will not run, so the job can end.
func cancelLaterSteps(tx *gorm.DB, jobID string) error {
	if err := tx.Model(&Task{}).Where("job_id = ? AND state = ?", jobID, TaskWaiting).Update("state", TaskCancelled).Error; err != nil {
		return err
	}
	return tx.Model(&JobStep{}).Where("job_id = ? AND state = ?", jobID, JobNotStarted).
		Updates(map[string]any{"state": JobCancelled, "message": "not run: an earlier step did not succeed"}).Error
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

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
