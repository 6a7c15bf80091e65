package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Running a recovery plan (DESIGN.md §1): its groups in order, the VMs of
// a group in parallel, each group between its pre and post actions. A
// plan's run is one job whose steps are its actions and groups; a group's
// step starts one job per VM (the same jobs a VM's page starts, with the
// plan's job as their parent) and succeeds when they all did. The vault's
// watch loop moves plans on (AdvancePlans); a manual action waits in
// WaitingForInput until an operator resumes the job.

// Plan operations.
const (
	PlanTestFailover        = "test_failover"
	PlanCleanupTestFailover = "cleanup_test_failover"
	PlanPlannedFailover     = "planned_failover"
	PlanUnplannedFailover   = "unplanned_failover"
	PlanCommit              = "commit"
)

// PlanOperations are the operations a plan runs, with their job types.
var PlanOperations = map[string]string{
	PlanTestFailover:        "Recovery plan: test failover",
	PlanCleanupTestFailover: "Recovery plan: cleanup test failover",
	PlanPlannedFailover:     "Recovery plan: planned failover",
	PlanUnplannedFailover:   "Recovery plan: unplanned failover",
	PlanCommit:              "Recovery plan: commit",
}

// Kinds of a plan job's steps (JobStep.PlanKind).
const (
	PlanStepGroup  = "group"
	PlanStepScript = "script"
	PlanStepManual = "manual"
)

// Directions of a plan's run, as scripts are told.
const (
	DirectionPrimaryToRecovery = "primary_to_recovery"
	DirectionRecoveryToPrimary = "recovery_to_primary"
)

// ScriptTimeout bounds a plan's script.
const ScriptTimeout = 10 * time.Minute

// PlanRunRequest says how to run a plan.
type PlanRunRequest struct {
	Operation      string
	RecoveryPoint  string // test and unplanned failover
	RecoveryHostID string // where VMs are recovered and scripts run; each VM's default when empty
	ShutDownSource bool   // unplanned failover
	Notes          string // cleanup
	// SkipIneligible runs the plan without the VMs that cannot take part
	// (not protected, or in a state the operation does not apply to),
	// saying which and why; without it the plan refuses to start.
	SkipIneligible bool
}

// planRun is what a plan's job keeps of its run (Job.Payload).
type planRun struct {
	Request    PlanRunRequest         `json:"request"`
	ScriptHost string                 `json:"script_host"`
	Direction  string                 `json:"direction"`
	VMs        []agentproto.PlanVMMap `json:"vms"`
	Skipped    map[string]string      `json:"skipped"` // VM id → why
}

// planEligible says why a VM cannot take part in a plan's operation, or "".
func planEligible(tx *gorm.DB, vmID, op string) (string, error) {
	var p Protection
	if err := tx.First(&p, "vm_id = ?", vmID).Error; errors.Is(err, gorm.ErrRecordNotFound) {
		// A re-protected VM's protection belongs to its recovered VM.
		if err := tx.First(&p, "home_vm_id = ?", vmID).Error; err != nil {
			return "not protected", nil
		}
	} else if err != nil {
		return "", err
	}
	ok := false
	switch op {
	case PlanTestFailover:
		ok = !p.TestFailover && CanRecoverFrom(p.State)
	case PlanCleanupTestFailover:
		ok = p.TestFailover
	case PlanPlannedFailover:
		ok = p.State == StateProtected
	case PlanUnplannedFailover:
		ok = CanRecoverFrom(p.State)
	case PlanCommit:
		ok = p.State == StateFailedOver
	}
	if ok {
		return "", nil
	}
	if op == PlanCleanupTestFailover {
		return "has no test failover to clean up", nil
	}
	return "is " + p.State + ", which this operation does not apply to", nil
}

// planVMOf is the protection's VM a plan entry stands for: the VM itself,
// or, once re-protected, its recovered VM (failback runs from there).
func planVMOf(tx *gorm.DB, vmID string) (*protectionWork, error) {
	var p Protection
	if err := tx.First(&p, "vm_id = ?", vmID).Error; err != nil {
		if err := tx.First(&p, "home_vm_id = ?", vmID).Error; err != nil {
			return nil, err
		}
	}
	return loadWork(tx, p.ID)
}

// RunPlan starts running a recovery plan.
func (s *Store) RunPlan(ctx context.Context, a Actor, planID string, req PlanRunRequest) (*Job, error) {
	now := s.Now()
	var job *Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var plan RecoveryPlan
		if err := s.preloadPlan(tx).First(&plan, "id = ?", planID).Error; err != nil {
			return err
		}
		jobType, ok := PlanOperations[req.Operation]
		if !ok {
			return &ValidationError{Fields: []FieldError{{Field: "operation", Reason: "must be test_failover, cleanup_test_failover, planned_failover, unplanned_failover or commit"}}}
		}
		if len(req.Notes) > 2000 {
			return &ValidationError{Fields: []FieldError{{Field: "notes", Reason: "at most 2000 characters"}}}
		}
		run := planRun{Request: req, Direction: DirectionPrimaryToRecovery, Skipped: map[string]string{}}
		var problems []string
		total := 0
		for _, g := range plan.Groups {
			for _, m := range g.VMs {
				total++
				why, err := planEligible(tx, m.VMID, req.Operation)
				if err != nil {
					return err
				}
				var vm VM
				if err := tx.First(&vm, "id = ?", m.VMID).Error; err != nil {
					return err
				}
				if why != "" {
					run.Skipped[m.VMID] = why
					problems = append(problems, fmt.Sprintf("VM %s %s", vm.Name, why))
					continue
				}
				entry, err := planVMEntry(tx, m.VMID, g.Name, req)
				if err != nil {
					return err
				}
				run.VMs = append(run.VMs, entry)
			}
		}
		if total == 0 {
			return &ConflictError{Code: "plan_empty", Message: "the plan has no VM; add groups and VMs to it first"}
		}
		if len(problems) > 0 && !req.SkipIneligible {
			return &ConflictError{Code: "plan_vms_not_ready", Message: "the plan cannot run: " + strings.Join(problems, "; ") +
				"; fix them, or run it with skip_ineligible to leave them out"}
		}
		if len(run.VMs) == 0 {
			return &ConflictError{Code: "plan_vms_not_ready", Message: "no VM of the plan can take part: " + strings.Join(problems, "; ")}
		}
		for _, m := range run.VMs {
			if w, err := planVMOf(tx, m.SourceID); err == nil && w.Protection.HomeVMID != "" && req.Operation != PlanTestFailover && req.Operation != PlanCleanupTestFailover {
				run.Direction = DirectionRecoveryToPrimary
			}
		}
		run.ScriptHost = req.RecoveryHostID
		if run.ScriptHost == "" {
			run.ScriptHost = run.VMs[0].RecoveryHostID
		}
		b, _ := json.Marshal(run)
		check := fmt.Sprintf("%d VM(s) take part", len(run.VMs))
		if len(problems) > 0 {
			check += "; left out: " + strings.Join(problems, "; ")
		}
		steps := []jobStepSpec{{Name: "Check the plan's VMs", Message: check}}
		var specs []JobStep
		for _, g := range plan.Groups {
			for _, act := range g.Actions {
				if act.Phase == PhasePre {
					specs = append(specs, actionStep(g, act))
				}
			}
			specs = append(specs, JobStep{Name: fmt.Sprintf("Group %d (%s): %s of %d VM(s)", g.Seq, g.Name, strings.ReplaceAll(req.Operation, "_", " "), len(g.VMs)),
				PlanKind: PlanStepGroup, PlanRef: g.ID})
			for _, act := range g.Actions {
				if act.Phase == PhasePost {
					specs = append(specs, actionStep(g, act))
				}
			}
		}
		created, err := createJob(tx, now, a, Job{Type: jobType, TargetKind: "recovery_plan", TargetID: plan.ID, TargetName: plan.Name, Payload: string(b), Notes: req.Notes}, steps)
		if err != nil {
			return err
		}
		for i, st := range specs {
			st.ID, st.JobID, st.Seq, st.State = NewID(prefixJobStep), created.ID, len(steps)+i+1, JobNotStarted
			if err := tx.Create(&st).Error; err != nil {
				return err
			}
		}
		job = created
		if err := s.audit(tx, a, "plan.run", "recovery_plan", plan.ID, plan.Name, map[string]string{"operation": req.Operation, "job": created.ID}); err != nil {
			return err
		}
		return s.advancePlan(tx, now, created.ID)
	})
	if err != nil {
		return nil, err
	}
	return s.GetJob(ctx, job.ID)
}

func actionStep(g PlanGroup, act PlanAction) JobStep {
	what := "script " + act.Script
	if act.Kind == ActionManual {
		what = "manual action"
	}
	return JobStep{Name: fmt.Sprintf("Group %d (%s), %s action %q: %s", g.Seq, g.Name, act.Phase, act.Name, what), PlanKind: act.Kind, PlanRef: act.ID}
}

// planVMEntry says what a VM becomes in the operation: the VM map the
// scripts get.
func planVMEntry(tx *gorm.DB, vmID, group string, req PlanRunRequest) (agentproto.PlanVMMap, error) {
	w, err := planVMOf(tx, vmID)
	if err != nil {
		return agentproto.PlanVMMap{}, err
	}
	p := w.Protection
	m := agentproto.PlanVMMap{SourceID: w.VM.ID, SourceName: w.VM.Name, Group: group, RecoveryHostID: req.RecoveryHostID}
	switch req.Operation {
	case PlanTestFailover, PlanCleanupTestFailover:
		m.RecoveryID, m.RecoveryName = "lifeboat-"+w.VM.ID+"-test", TestFailoverVMName(w.VM.Name)
		if req.Operation == PlanCleanupTestFailover {
			m.RecoveryID, m.RecoveryHostID = p.TestFailoverVMID, p.TestFailoverHostID
		}
	case PlanCommit:
		m.RecoveryID, m.RecoveryName, m.RecoveryHostID = p.FailoverVMID, w.VM.Name, p.FailoverHostID
	default:
		m.RecoveryID, m.RecoveryName = "lifeboat-"+w.VM.ID, w.VM.Name
		var home VM
		if p.HomeVMID != "" && tx.First(&home, "id = ?", p.HomeVMID).Error == nil && (req.RecoveryHostID == "" || req.RecoveryHostID == home.HostID) {
			m.RecoveryID, m.RecoveryName, m.RecoveryHostID = home.ExternalID, home.Name, home.HostID
		}
	}
	if m.RecoveryHostID == "" {
		m.RecoveryHostID = w.Host.ID
	}
	return m, nil
}

// AdvancePlans moves every running plan on: the next step of each starts
// once the one before it ended. It returns the hosts that have a plan's
// task queued, to wake. The watch loop calls it.
func (s *Store) AdvancePlans(ctx context.Context) ([]string, error) {
	var ids []string
	if err := s.db.WithContext(ctx).Model(&Job{}).Where("target_kind = ? AND state = ?", "recovery_plan", JobInProgress).Pluck("id", &ids).Error; err != nil {
		return nil, translateError(err)
	}
	for _, id := range ids {
		if err := s.tx(ctx, func(tx *gorm.DB) error { return s.advancePlan(tx, s.Now(), id) }); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// One plan that cannot go on must not hold up the others: it
			// fails, saying why.
			if ferr := s.tx(ctx, func(tx *gorm.DB) error {
				return tx.Model(&Job{}).Where("id = ? AND state = ?", id, JobInProgress).Updates(map[string]any{"state": JobFailed, "ended_at": s.Now(),
					"error_code": "plan_vm_failed", "error_message": truncate("the plan could not go on: "+err.Error(), 2000)}).Error
			}); ferr != nil {
				return nil, ferr
			}
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	hosts, err := queuedHosts(s.db.WithContext(ctx), ids)
	return hosts, translateError(err)
}

// queuedHosts are the hosts with a queued task in the jobs, or in the jobs
// they are the parents of (a plan's VM jobs).
func queuedHosts(db *gorm.DB, jobIDs []string) ([]string, error) {
	var hosts []string
	err := db.Model(&Task{}).Distinct("host_id").Where("state = ? AND (job_id IN ? OR job_id IN (?))", TaskQueued, jobIDs,
		db.Model(&Job{}).Select("id").Where("parent_job_id IN ?", jobIDs)).Pluck("host_id", &hosts).Error
	return hosts, err
}

// advancePlan looks at a plan job's steps in order: it waits on the one
// running, ends a group whose VM jobs all ended, starts the next, and
// ends the job after the last.
func (s *Store) advancePlan(tx *gorm.DB, now time.Time, jobID string) error {
	var job Job
	if err := tx.First(&job, "id = ?", jobID).Error; err != nil {
		return err
	}
	if job.State != JobInProgress {
		return nil
	}
	var run planRun
	if err := json.Unmarshal([]byte(job.Payload), &run); err != nil {
		return fmt.Errorf("plan job %s: %w", job.ID, err)
	}
	var steps []JobStep
	if err := tx.Where("job_id = ?", job.ID).Order("seq").Find(&steps).Error; err != nil {
		return err
	}
	for i := range steps {
		st := &steps[i]
		switch st.State {
		case JobSucceeded:
			continue
		case JobFailed, JobCancelled, JobWaitingForInput:
			return nil // finishTask or resume settle these
		case JobInProgress:
			if st.PlanKind != PlanStepGroup {
				return nil // its script runs
			}
			done, err := s.groupEnded(tx, now, &job, st)
			if err != nil || !done {
				return err
			}
			if st.State != JobSucceeded {
				return nil
			}
			continue
		}
		return s.startPlanStep(tx, now, &job, run, st)
	}
	return settleJob(tx, now, job.ID, "", "", "")
}

// startPlanStep starts a plan's step that has not started.
func (s *Store) startPlanStep(tx *gorm.DB, now time.Time, job *Job, run planRun, st *JobStep) error {
	a := Actor{Username: job.CreatedBy}
	switch st.PlanKind {
	case PlanStepManual:
		var act PlanAction
		if err := tx.First(&act, "id = ?", st.PlanRef).Error; err != nil {
			return err
		}
		if err := tx.Model(&JobStep{}).Where("id = ?", st.ID).Updates(map[string]any{"state": JobWaitingForInput, "started_at": now,
			"message": "waiting for an operator: " + act.Instructions + " — then resume the job"}).Error; err != nil {
			return err
		}
		return tx.Model(&Job{}).Where("id = ?", job.ID).Update("state", JobWaitingForInput).Error
	case PlanStepScript:
		var act PlanAction
		if err := tx.First(&act, "id = ?", st.PlanRef).Error; err != nil {
			return err
		}
		var g PlanGroup
		if err := tx.First(&g, "id = ?", act.GroupID).Error; err != nil {
			return err
		}
		var plan RecoveryPlan
		if err := tx.First(&plan, "id = ?", job.TargetID).Error; err != nil {
			return err
		}
		c := agentproto.PlanContext{JobID: job.ID, FailoverType: run.Request.Operation, Direction: run.Direction, Phase: act.Phase, Action: act.Name, VMs: run.VMs}
		c.Plan.ID, c.Plan.Name = plan.ID, plan.Name
		c.Group.Seq, c.Group.Name = g.Seq, g.Name
		ctxJSON, _ := json.Marshal(c)
		b, _ := json.Marshal(agentproto.ScriptPayload{Path: act.Script, Context: ctxJSON, TimeoutSeconds: int(ScriptTimeout / time.Second)})
		t := Task{ID: NewID(prefixTask), JobID: job.ID, StepID: st.ID, HostID: run.ScriptHost, Kind: agentproto.TaskRunScript, Payload: string(b), State: TaskQueued}
		if err := tx.Create(&t).Error; err != nil {
			return err
		}
		return tx.Model(&JobStep{}).Where("id = ?", st.ID).Updates(map[string]any{"state": JobInProgress, "started_at": now,
			"message": "waiting for the recovery host's agent to run it"}).Error
	case PlanStepGroup:
		var members []PlanGroupVM
		if err := tx.Where("group_id = ?", st.PlanRef).Order("seq").Find(&members).Error; err != nil {
			return err
		}
		var children []string
		var names []string
		for _, m := range members {
			if _, skipped := run.Skipped[m.VMID]; skipped {
				continue
			}
			child, err := s.startPlanVM(tx, now, a, job.ID, m.VMID, run.Request)
			if err != nil {
				msg := fmt.Sprintf("could not start the %s of VM %s: %v", strings.ReplaceAll(run.Request.Operation, "_", " "), m.VMID, err)
				return s.failPlanStep(tx, now, job, st, "plan_vm_failed", msg)
			}
			children = append(children, child.ID)
			names = append(names, child.TargetName)
		}
		if len(children) == 0 && len(members) == 0 {
			return s.failPlanStep(tx, now, job, st, "plan_vm_failed", "the group has no VM any more (the plan was changed while it ran)")
		}
		b, _ := json.Marshal(children)
		return tx.Model(&JobStep{}).Where("id = ?", st.ID).Updates(map[string]any{"state": JobInProgress, "started_at": now, "output": string(b),
			"message": fmt.Sprintf("running in parallel: %s", strings.Join(names, ", "))}).Error
	}
	return fmt.Errorf("plan step %s has no kind", st.ID)
}

// startPlanVM starts one VM's job of a plan's operation.
func (s *Store) startPlanVM(tx *gorm.DB, now time.Time, a Actor, parent, vmID string, req PlanRunRequest) (*Job, error) {
	w, err := planVMOf(tx, vmID)
	if err != nil {
		return nil, err
	}
	id := w.VM.ID
	rr := RecoveryRequest{RecoveryPoint: req.RecoveryPoint, RecoveryHostID: req.RecoveryHostID, ShutDownSource: req.ShutDownSource, Parent: parent}
	switch req.Operation {
	case PlanTestFailover:
		return s.startTestFailover(tx, now, a, id, rr)
	case PlanCleanupTestFailover:
		return s.cleanupTestFailover(tx, now, a, id, req.Notes, parent)
	case PlanPlannedFailover:
		return s.startFailover(tx, now, a, id, true, rr)
	case PlanUnplannedFailover:
		return s.startFailover(tx, now, a, id, false, rr)
	case PlanCommit:
		return s.commitFailover(tx, now, a, id, parent)
	}
	return nil, fmt.Errorf("unknown plan operation %q", req.Operation)
}

// groupEnded ends a group's step once its VMs' jobs all ended: it
// succeeds if they all did; else it fails, naming them, and so does the
// plan.
func (s *Store) groupEnded(tx *gorm.DB, now time.Time, job *Job, st *JobStep) (bool, error) {
	var ids []string
	_ = json.Unmarshal([]byte(st.Output), &ids)
	var children []Job
	if len(ids) > 0 {
		if err := tx.Where("id IN ?", ids).Find(&children).Error; err != nil {
			return false, err
		}
	}
	var failed []string
	code := ""
	for _, c := range children {
		switch c.State {
		case JobSucceeded:
		case JobFailed, JobCancelled:
			failed = append(failed, fmt.Sprintf("VM %s: %s (%s: %s)", c.TargetName, c.State, c.ErrorCode, c.ErrorMessage))
			if code == "" {
				code = c.ErrorCode
			}
		default:
			return false, nil
		}
	}
	if len(failed) > 0 {
		if code == "" {
			code = "plan_vm_failed"
		}
		return true, s.failPlanStep(tx, now, job, st, code, strings.Join(failed, "; "))
	}
	st.State = JobSucceeded
	return true, tx.Model(&JobStep{}).Where("id = ?", st.ID).Updates(map[string]any{"state": JobSucceeded, "progress": 100, "ended_at": now,
		"message": fmt.Sprintf("all %d VM job(s) succeeded", len(children))}).Error
}

// failPlanStep fails a plan's step: the later steps do not run, and the
// job fails with why.
func (s *Store) failPlanStep(tx *gorm.DB, now time.Time, job *Job, st *JobStep, code, msg string) error {
	st.State = JobFailed
	if err := tx.Model(&JobStep{}).Where("id = ?", st.ID).Updates(map[string]any{"state": JobFailed, "ended_at": now, "message": truncate(msg, 2000)}).Error; err != nil {
		return err
	}
	if err := cancelLaterSteps(tx, job.ID); err != nil {
		return err
	}
	if err := settleJob(tx, now, job.ID, code, msg, "see the failed VM jobs; fix the cause, then run the plan again (VMs that succeeded are refused, or left out with skip_ineligible)"); err != nil {
		return err
	}
	if job.Type == PlanOperations[PlanPlannedFailover] || job.Type == PlanOperations[PlanUnplannedFailover] {
		return raiseAlert(tx, AlertFailoverFailed, HealthCritical, "recovery_plan", job.TargetID, fmt.Sprintf(
			"the %s of recovery plan %s failed: %s", strings.ToLower(strings.TrimPrefix(job.Type, "Recovery plan: ")), job.TargetName, truncate(msg, 1500)))
	}
	return nil
}

// ResumeJob completes the manual action a job waits on, with the
// operator's notes, and lets the plan go on.
func (s *Store) ResumeJob(ctx context.Context, a Actor, jobID, notes string) (*Job, error) {
	now := s.Now()
	if len(notes) > 2000 {
		return nil, &ValidationError{Fields: []FieldError{{Field: "notes", Reason: "at most 2000 characters"}}}
	}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var job Job
		if err := tx.First(&job, "id = ?", jobID).Error; err != nil {
			return err
		}
		if job.State != JobWaitingForInput {
			return &ConflictError{Code: "job_not_waiting", Message: fmt.Sprintf("the job is %s; only a job waiting for input can be resumed", job.State)}
		}
		var st JobStep
		if err := tx.Where("job_id = ? AND state = ?", job.ID, JobWaitingForInput).Order("seq").First(&st).Error; err != nil {
			return err
		}
		msg := "done, confirmed by " + a.Username
		if notes != "" {
			msg += ": " + notes
		}
		if err := tx.Model(&JobStep{}).Where("id = ?", st.ID).Updates(map[string]any{"state": JobSucceeded, "progress": 100, "ended_at": now,
			"message": truncate(msg, 2000)}).Error; err != nil {
			return err
		}
		if err := tx.Model(&Job{}).Where("id = ?", job.ID).Update("state", JobInProgress).Error; err != nil {
			return err
		}
		if err := s.audit(tx, a, "job.resume", "job", job.ID, job.Type, map[string]string{"step": st.Name, "notes": notes}); err != nil {
			return err
		}
		return s.advancePlan(tx, now, job.ID)
	})
	if err != nil {
		return nil, err
	}
	return s.GetJob(ctx, jobID)
}

// scriptRan records a plan's script's output on its step.
func scriptRan(_ *Store, tx *gorm.DB, _ time.Time, t *Task, result string) error {
	var r agentproto.ScriptResult
	_ = json.Unmarshal([]byte(result), &r)
	msg := "exited 0"
	if out := strings.TrimSpace(r.Output); out != "" {
		msg += "; output: " + out
	}
	return tx.Model(&JobStep{}).Where("id = ?", t.StepID).Updates(map[string]any{"message": truncate(msg, 2000), "output": r.Output}).Error
}

// QueuedTaskHosts are the hosts with a queued task in a job, in the
// recovery plan it belongs to, or in that plan's VM jobs.
func (s *Store) QueuedTaskHosts(ctx context.Context, jobID string) []string {
	db := s.db.WithContext(ctx)
	var job Job
	if err := db.Select("id", "parent_job_id").First(&job, "id = ?", jobID).Error; err != nil {
		return nil
	}
	root := job.ID
	if job.ParentJobID != "" {
		root = job.ParentJobID
	}
	hosts, _ := queuedHosts(db, []string{root})
	return hosts
}

// restartPlan runs a failed plan again from its failed step: a group's
// failed VM jobs are restarted (those that succeeded are not run again),
// a failed script runs again; the steps after it run as before.
func (s *Store) restartPlan(tx *gorm.DB, now time.Time, a Actor, job Job) error {
	var st JobStep
	if err := tx.Where("job_id = ? AND state = ?", job.ID, JobFailed).Order("seq").First(&st).Error; err != nil {
		return &ConflictError{Code: "job_not_restartable", Message: "the plan's job has no failed step to run again"}
	}
	switch st.PlanKind {
	case PlanStepGroup:
		var ids []string
		_ = json.Unmarshal([]byte(st.Output), &ids)
		if len(ids) == 0 {
			return &ConflictError{Code: "job_not_restartable", Message: "the group's VM jobs never started; run the plan again"}
		}
		var children []Job
		if err := tx.Where("id IN ?", ids).Find(&children).Error; err != nil {
			return err
		}
		for _, c := range children {
			switch c.State {
			case JobFailed:
				if err := s.restartJob(tx, now, a, c); err != nil {
					return fmt.Errorf("VM %s: %w", c.TargetName, err)
				}
			case JobCancelled:
				return &ConflictError{Code: "job_not_restartable", Message: fmt.Sprintf("the job of VM %s was cancelled; run the plan again", c.TargetName)}
			}
		}
	case PlanStepScript:
		var old Task
		if err := tx.Where("step_id = ?", st.ID).Order("created_at DESC").First(&old).Error; err != nil {
			return err
		}
		t := Task{ID: NewID(prefixTask), JobID: job.ID, StepID: st.ID, HostID: old.HostID, Kind: old.Kind, Payload: old.Payload, State: TaskQueued}
		if err := tx.Create(&t).Error; err != nil {
			return err
		}
	default:
		return &ConflictError{Code: "job_not_restartable", Message: "the failed step cannot run again; run the plan again"}
	}
	if err := tx.Model(&JobStep{}).Where("id = ?", st.ID).Updates(map[string]any{"state": JobInProgress, "ended_at": nil,
		"message": "restarted by " + a.Username}).Error; err != nil {
		return err
	}
	if err := rerunStepsAfter(tx, job.ID, st.Seq); err != nil {
		return err
	}
	if err := reopenJob(tx, job.ID); err != nil {
		return err
	}
	return s.audit(tx, a, "job.restart", "job", job.ID, job.Type, map[string]string{"plan": job.TargetName, "from_step": st.Name})
}
