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

// Recovery (DESIGN.md §1, §5a): the recovery host's agent reads a point
// from the target and makes a VM of it. A test failover makes "<vm>-test",
// isolated, and replication goes on; a failover stops the source first
// (planned) or works with what the replica has (unplanned); commit keeps
// the point the VM runs from. Each is a job whose steps run on the source
// and recovery hosts one after the other (advanceJob).

// The recovery jobs.
const (
	JobTestFailover        = "Test failover"
	JobCleanupTestFailover = "Cleanup test failover"
	JobPlannedFailover     = "Planned failover"
	JobUnplannedFailover   = "Unplanned failover"
	JobChangeRecoveryPoint = "Change recovery point"
	JobCommitFailover      = "Commit failover"
	JobReprotect           = "Re-protect"
)

// recoveryJobTypes are the jobs of a VM's recovery; they may be restarted
// from their failed step.
var recoveryJobTypes = []string{JobTestFailover, JobCleanupTestFailover, JobPlannedFailover, JobUnplannedFailover,
	JobChangeRecoveryPoint, JobCommitFailover, JobReprotect}

var recoveryJobs = func() map[string]bool {
	m := map[string]bool{}
	for _, t := range recoveryJobTypes {
		m[t] = true
	}
	return m
}()

// OperatorMayCancel says whether an Operator may cancel a job: a recovery
// job, a recovery plan's, or the start of a source again.
func OperatorMayCancel(j *Job) bool {
	return recoveryJobs[j.Type] || j.TargetKind == "recovery_plan" || j.Type == JobStartVM
}

// IsRecoveryJob says whether a job type is one of the recovery jobs.
func IsRecoveryJob(jobType string) bool { return recoveryJobs[jobType] }

// Recovery point choices; anything else is a point's id.
const (
	PointLatest              = "latest"                // unplanned: process what the source has first, if it answers
	PointLatestProcessed     = "latest_processed"      // the newest crash- or app-consistent point
	PointLatestAppConsistent = "latest_app_consistent" // the newest app-consistent point
)

// Failover kinds, as Protection.FailoverKind records them.
const (
	FailoverPlanned   = "planned"
	FailoverUnplanned = "unplanned"
)

// RecoveryRequest says how to recover a VM.
type RecoveryRequest struct {
	// RecoveryPoint is a choice (PointLatest…) or a point's id. Empty
	// means latest_processed.
	RecoveryPoint string
	// RecoveryHostID is the host that runs the recovered VM; empty means
	// the VM's own host.
	RecoveryHostID string
	// ShutDownSource, for an unplanned failover: shut the source down
	// first if its host answers.
	ShutDownSource bool
	// Instant starts the recovered VM at once on the recovery point's
	// disks, served by the recovery host's agent, while they are copied to
	// the host (instant failover); the recovery host's driver must offer
	// it (agentproto.FeatureInstantFailover).
	Instant bool
	// Parent is the recovery plan's job this VM's job is part of.
	Parent string
}

// ShutdownTimeout is how long a planned failover waits for the source VM to
// stop.
const ShutdownTimeout = 5 * time.Minute

// jobStepSpec is one step of a job being created: run by a task, or done in
// the vault at once (Task nil, with Message saying what was decided).
type jobStepSpec struct {
	Name    string
	Task    *Task
	Message string
}

// createJob stores a job and its steps: the vault's steps done, the first
// task's step queued, the later tasks waiting for the steps before them.
func createJob(tx *gorm.DB, now time.Time, a Actor, job Job, steps []jobStepSpec) (*Job, error) {
	job.ID, job.State, job.CreatedBy, job.StartedAt = NewID(prefixJob), JobInProgress, a.Username, &now
	if err := tx.Omit("Steps").Create(&job).Error; err != nil {
		return nil, err
	}
	queued := false
	for i, spec := range steps {
		step := JobStep{ID: NewID(prefixJobStep), JobID: job.ID, Seq: i + 1, Name: spec.Name, State: JobNotStarted, Message: spec.Message}
		first := spec.Task != nil && !queued
		switch {
		case spec.Task == nil:
			step.State, step.Progress, step.StartedAt, step.EndedAt = JobSucceeded, 100, &now, &now
		case first:
			step.Message = "waiting for the host's agent to pick it up"
		}
		if err := tx.Create(&step).Error; err != nil {
			return nil, err
		}
		job.Steps = append(job.Steps, step)
		if spec.Task == nil {
			continue
		}
		t := *spec.Task
		t.ID, t.JobID, t.StepID, t.State = NewID(prefixTask), job.ID, step.ID, TaskWaiting
		if first {
			t.State, queued = TaskQueued, true
		}
		if err := tx.Create(&t).Error; err != nil {
			return nil, err
		}
	}
	return &job, nil
}

// CanRecoverFrom says whether a VM in a protection state has points to
// recover from and no failover under way: a test failover or an unplanned
// failover may start (a planned one needs Protected).
func CanRecoverFrom(state string) bool {
	return state == StateProtected || state == StateResyncRequired || state == StateResynchronizing
}

// Restartable says whether a job can run again from its failed step: a
// failed recovery job of a VM, or of a recovery plan.
func Restartable(j *Job) bool {
	return j.State == JobFailed && (recoveryJobs[j.Type] || j.TargetKind == "recovery_plan")
}

// hostUp says whether a host is registered and connected.
func hostUp(h Host) bool { return h.RevokedAt == nil && h.State == HostConnected }

// recoveryHost loads and checks the host that will run a recovered VM: it
// is registered, connected, its agent can materialize VMs, and it has no
// VM of the new VM's name that a failover of this VM did not make.
func recoveryHost(tx *gorm.DB, hostID, vmName string, ownID string) (*Host, error) {
	var h Host
	if err := tx.First(&h, "id = ?", hostID).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, &ValidationError{Fields: []FieldError{{Field: "recovery_host_id", Reason: fmt.Sprintf("no host %q", hostID)}}}
		}
		return nil, err
	}
	if !hostUp(h) {
		return nil, &ConflictError{Code: "recovery_host_disconnected", Message: fmt.Sprintf(
			"host %s is not connected (%s); start its agent, or choose a connected host", h.Name, h.State)}
	}
	for _, kind := range []string{agentproto.TaskMaterialize, agentproto.TaskRemoveVM} {
		if f := missingFeature(h, kind); f != "" {
			return nil, &ConflictError{Code: "recovery_host_unsupported", Message: fmt.Sprintf(
				"the agent on host %s (version %s) cannot %s; upgrade it, or choose another host", h.Name, h.AgentVersion, strings.ReplaceAll(f, "_", " "))}
		}
	}
	var clash []VM
	if err := tx.Where("host_id = ? AND name = ? AND missing_since IS NULL AND external_id <> ?", h.ID, vmName, ownID).Limit(1).Find(&clash).Error; err != nil {
		return nil, err
	}
	if len(clash) > 0 {
		return nil, &ConflictError{Code: "recovery_vm_exists", Message: fmt.Sprintf(
			"host %s already has a VM named %s; remove or rename it there, or choose another recovery host", h.Name, vmName)}
	}
	return &h, nil
}

// instantHost refuses an instant recovery on a host whose agent cannot
// start a VM before its disks are copied.
func instantHost(h *Host, instant bool) error {
	if !instant || slices.Contains(strings.Fields(h.Features), agentproto.FeatureInstantFailover) {
		return nil
	}
	return &ConflictError{Code: "instant_not_supported", Message: fmt.Sprintf(
		"host %s (driver %s) cannot start a VM before its disks are copied; instant failover needs a recovery host whose agent runs the qemu driver. Fail over without instant, or choose such a host", h.Name, h.Driver)}
}

// choosePoint resolves a recovery point choice among a protection's points.
// A point labelled inconsistent is taken only when named by its id.
func choosePoint(tx *gorm.DB, protectionID, choice string) (*RecoveryPoint, error) {
	if choice == "" {
		choice = PointLatestProcessed
	}
	var points []RecoveryPoint
	if err := tx.Where("protection_id = ?", protectionID).Order("time DESC, id DESC").Find(&points).Error; err != nil {
		return nil, err
	}
	if len(points) == 0 {
		return nil, &ConflictError{Code: "no_recovery_point", Message: "the VM has no recovery point yet; wait for its initial replication to finish"}
	}
	switch choice {
	case PointLatest, PointLatestProcessed:
		for i := range points {
			if points[i].Consistency != ConsistencyInconsistent {
				return &points[i], nil
			}
		}
		return nil, &ConflictError{Code: "inconsistent_point", Message: fmt.Sprintf(
			"every recovery point of the VM is labelled inconsistent (its disks were read while it wrote); name one by its id to accept that, for example %s", points[0].ID)}
	case PointLatestAppConsistent:
		for i := range points {
			if points[i].Consistency == ConsistencyApp {
				return &points[i], nil
			}
		}
		return nil, &ConflictError{Code: "no_recovery_point", Message: "the VM has no app-consistent recovery point; choose latest_processed, or a point by its id"}
	}
	for i := range points {
		if points[i].ID == choice {
			return &points[i], nil
		}
	}
	return nil, &ValidationError{Fields: []FieldError{{Field: "recovery_point", Reason: fmt.Sprintf(
		"%q is neither latest, latest_processed, latest_app_consistent nor a recovery point of this VM", choice)}}}
}

// describePoint is a point in words for a job step.
func describePoint(p *RecoveryPoint, why string) string {
	return fmt.Sprintf("recovery point %s of %s (%s-consistent%s)", p.ID, p.Time.UTC().Format(time.RFC3339), p.Consistency, why)
}

// materializeTask is the task that makes a VM of a point on a host and
// starts it: pl says which point (or how to choose it), the VM's id and
// name there, and whether it is a test, replaces or writes back; the
// source's replicas and disks come from w.
func materializeTask(w *protectionWork, host *Host, pl agentproto.MaterializePayload) *Task {
	pl.Replication, pl.SourceVMID, pl.Start = w.Payload, w.VM.ID, true
	b, _ := json.Marshal(pl)
	return &Task{HostID: host.ID, ProtectionID: w.Protection.ID, Kind: agentproto.TaskMaterialize, Payload: string(b)}
}

// finalCycleTask is a failover's last cycle on the source, and the point it
// makes: not throttled, the VM is down or about to go.
func finalCycleTask(w *protectionWork) (*Task, string) {
	pl := w.Payload
	pl.PointID, pl.BandwidthMbps = NewID(prefixRecoveryPoint), 0
	b, _ := json.Marshal(pl)
	return &Task{HostID: w.Host.ID, ProtectionID: w.Protection.ID, Kind: agentproto.TaskReplicate, Payload: string(b)}, pl.PointID
}

// shutdownStep shuts the source VM down.
func shutdownStep(w *protectionWork) jobStepSpec {
	return jobStepSpec{Name: fmt.Sprintf("Shut down %s on host %s", w.VM.Name, w.Host.Name),
		Task: powerTask(agentproto.TaskShutdownVM, w.Host.ID, w.Protection.ID, w.VM.ExternalID, ShutdownTimeout)}
}

// enterFailingOver moves a protection to FailingOver, by way of
// Protected from a resync's states, as the transition table has it.
func enterFailingOver(tx *gorm.DB, p Protection) error {
	if p.State != StateProtected {
		if err := setState(tx, p.ID, StateProtected); err != nil {
			return err
		}
	}
	return setState(tx, p.ID, StateFailingOver)
}

// powerTask is a shutdown, start or removal of a VM on a host.
func powerTask(kind, hostID, protectionID, vmID string, timeout time.Duration) *Task {
	b, _ := json.Marshal(agentproto.PowerPayload{VMID: vmID, TimeoutSeconds: int(timeout / time.Second)})
	return &Task{HostID: hostID, ProtectionID: protectionID, Kind: kind, Payload: string(b)}
}

// recoveryBusy refuses a recovery operation while another recovery job of
// the VM runs.
func recoveryBusy(tx *gorm.DB, vmID string) error {
	var n int64
	if err := tx.Model(&Job{}).Where("target_kind = ? AND target_id = ? AND type IN ? AND state IN ?", "vm", vmID, recoveryJobTypes,
		[]string{JobNotStarted, JobInProgress, JobWaitingForInput, JobSuspended}).Count(&n).Error; err != nil {
		return err
	}
	if n > 0 {
		return &ConflictError{Code: "failover_running", Message: "a failover, test failover or commit of this VM is running; wait for its job to end (or cancel it)"}
	}
	return nil
}

// protectionOf loads the work of a VM's protection, or says it has none.
func protectionOf(tx *gorm.DB, vmID string) (*protectionWork, error) {
	var p Protection
	err := tx.First(&p, "vm_id = ?", vmID).Error
	if err == nil {
		err = lockProtection(tx, p.ID)
	}
	if err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			var vm VM
			if err := tx.First(&vm, "id = ?", vmID).Error; err != nil {
				return nil, err
			}
			return nil, &ConflictError{Code: "not_protected", Message: fmt.Sprintf("VM %s is not protected; enable protection and wait for its first recovery point", vm.Name)}
		}
		return nil, err
	}
	return loadWork(tx, p.ID)
}

// TestFailoverVMName is the name of a VM's test failover VM.
func TestFailoverVMName(vmName string) string { return vmName + "-test" }

// StartTestFailover makes "<vm>-test" from a recovery point on the
// recovery host and starts it isolated. Replication of the VM goes on.
func (s *Store) StartTestFailover(ctx context.Context, a Actor, vmID string, req RecoveryRequest) (*Job, error) {
	now := s.Now()
	var job *Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var err error
		job, err = s.startTestFailover(tx, now, a, vmID, req)
		return err
	})
	return job, err
}

func (s *Store) startTestFailover(tx *gorm.DB, now time.Time, a Actor, vmID string, req RecoveryRequest) (job *Job, err error) {
	err = func() error {
		w, err := protectionOf(tx, vmID)
		if err != nil {
			return err
		}
		p := w.Protection
		switch {
		case p.TestFailover:
			return &ConflictError{Code: "test_failover_exists", Message: "the VM's last test failover was not cleaned up; run Cleanup test failover first"}
		case !CanRecoverFrom(p.State):
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf("a VM in state %s cannot be test failed over; it must be protected", p.State)}
		}
		if err := recoveryBusy(tx, vmID); err != nil {
			return err
		}
		if req.RecoveryPoint == PointLatest {
			req.RecoveryPoint = PointLatestProcessed // a test never touches the source
		}
		point, err := choosePoint(tx, p.ID, req.RecoveryPoint)
		if err != nil {
			return err
		}
		if req.RecoveryHostID == "" {
			req.RecoveryHostID = w.Host.ID
		}
		name := TestFailoverVMName(w.VM.Name)
		host, err := recoveryHost(tx, req.RecoveryHostID, name, "")
		if err != nil {
			return err
		}
		if err := instantHost(host, req.Instant); err != nil {
			return err
		}
		testID := "lifeboat-" + w.VM.ID + "-test"
		create := fmt.Sprintf("Create %s on host %s and start it isolated", name, host.Name)
		if req.Instant {
			create = fmt.Sprintf("Start %s on host %s isolated, on the recovery point's disks, and copy them to the host", name, host.Name)
		}
		job, err = createJob(tx, now, a, Job{Type: JobTestFailover, TargetKind: "vm", TargetID: w.VM.ID, TargetName: w.VM.Name, ParentJobID: req.Parent}, []jobStepSpec{
			{Name: "Choose the recovery point", Message: describePoint(point, "")},
			{Name: create, Task: materializeTask(w, host, agentproto.MaterializePayload{PointID: point.ID, VMID: testID, VMName: name, Test: true, Instant: req.Instant})},
		})
		if err != nil {
			return err
		}
		if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(testFailoverOn(host.ID, testID, point.ID, now)).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "failover.test", "vm", w.VM.ID, w.VM.Name, map[string]string{"point": point.ID, "recovery_host": host.Name, "job": job.ID})
	}()
	return job, err
}

// CleanupTestFailover deletes a VM's test failover VM and records the
// drill with the operator's notes.
func (s *Store) CleanupTestFailover(ctx context.Context, a Actor, vmID, notes string) (*Job, error) {
	now := s.Now()
	var job *Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var err error
		job, err = s.cleanupTestFailover(tx, now, a, vmID, notes, "")
		return err
	})
	return job, err
}

func (s *Store) cleanupTestFailover(tx *gorm.DB, now time.Time, a Actor, vmID, notes string, parent string) (job *Job, err error) {
	if len(notes) > 2000 {
		return nil, &ValidationError{Fields: []FieldError{{Field: "notes", Reason: "at most 2000 characters"}}}
	}
	err = func() error {
		w, err := protectionOf(tx, vmID)
		if err != nil {
			return err
		}
		p := w.Protection
		if !p.TestFailover {
			return &ConflictError{Code: "no_test_failover", Message: "the VM has no test failover to clean up"}
		}
		if err := recoveryBusy(tx, vmID); err != nil {
			return err
		}
		var host Host
		if err := tx.First(&host, "id = ?", p.TestFailoverHostID).Error; err != nil {
			return err
		}
		remove := powerTask(agentproto.TaskRemoveVM, host.ID, p.ID, p.TestFailoverVMID, ShutdownTimeout)
		job, err = createJob(tx, now, a, Job{Type: JobCleanupTestFailover, TargetKind: "vm", TargetID: w.VM.ID, TargetName: w.VM.Name, Notes: notes, ParentJobID: parent}, []jobStepSpec{
			{Name: fmt.Sprintf("Stop and delete %s on host %s", TestFailoverVMName(w.VM.Name), host.Name), Task: remove},
		})
		if err != nil {
			return err
		}
		return s.audit(tx, a, "failover.test_cleanup", "vm", w.VM.ID, w.VM.Name, map[string]string{"notes": notes, "job": job.ID})
	}()
	return job, err
}

// StartFailover fails a VM over to the recovery host. A planned failover
// shuts the source down (and stops if it will not), runs a final cycle and
// recovers from the point it makes: no write is lost. An unplanned one
// recovers from the chosen point, after processing what the source has
// when asked for "latest" and its host answers.
func (s *Store) StartFailover(ctx context.Context, a Actor, vmID string, planned bool, req RecoveryRequest) (*Job, error) {
	now := s.Now()
	var job *Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var err error
		job, err = s.startFailover(tx, now, a, vmID, planned, req)
		return err
	})
	return job, err
}

func (s *Store) startFailover(tx *gorm.DB, now time.Time, a Actor, vmID string, planned bool, req RecoveryRequest) (job *Job, err error) {
	err = func() error {
		w, err := protectionOf(tx, vmID)
		if err != nil {
			return err
		}
		p := w.Protection
		switch p.State {
		case StateFailedOver, StateCommitted:
			return &ConflictError{Code: "already_failed_over", Message: fmt.Sprintf("the VM is failed over already (%s); commit it, or change its recovery point", p.State)}
		case StateFailingOver:
			return &ConflictError{Code: "failover_running", Message: "a failover of this VM is running; wait for its job to end"}
		}
		if planned && p.State != StateProtected {
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf(
				"a planned failover needs a Protected VM, this one is %s; resynchronize first, or run an unplanned failover", p.State)}
		}
		if !planned && !CanRecoverFrom(p.State) {
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf("a VM in state %s cannot be failed over", p.State)}
		}
		if err := recoveryBusy(tx, vmID); err != nil {
			return err
		}
		// A failback: back to the VM first protected, which the failover
		// left (off) on its host; only the blocks that differ are written
		// into its disks.
		var home *VM
		if p.HomeVMID != "" {
			var vm VM
			if err := tx.First(&vm, "id = ? AND missing_since IS NULL", p.HomeVMID).Error; err == nil {
				home = &vm
				if req.RecoveryHostID == "" {
					req.RecoveryHostID = vm.HostID
				}
				if req.RecoveryHostID != vm.HostID {
					home = nil // to an alternate host: the VM is made there
				}
			}
		}
		if req.RecoveryHostID == "" {
			req.RecoveryHostID = w.Host.ID
		}
		recoveredID, recoveredName, ownID := "lifeboat-"+w.VM.ID, w.VM.Name, ""
		replace := false
		if home != nil {
			recoveredID, recoveredName, ownID = home.ExternalID, home.Name, home.ExternalID
		} else {
			// An earlier failover of this VM to that host left its recovered
			// VM there (off, after a failback): it is made again.
			var left int64
			if err := tx.Model(&VM{}).Where("host_id = ? AND external_id = ? AND missing_since IS NULL", req.RecoveryHostID, recoveredID).Count(&left).Error; err != nil {
				return err
			}
			replace, ownID = left > 0, recoveredID
		}
		host, err := recoveryHost(tx, req.RecoveryHostID, recoveredName, ownID)
		if err != nil {
			return err
		}
		if err := instantHost(host, req.Instant); err != nil {
			return err
		}
		if req.Instant && home != nil {
			return &ConflictError{Code: "instant_not_supported", Message: fmt.Sprintf(
				"a failback into %s on host %s writes only the blocks that differ into its disks, which an instant failover cannot do; fail back without instant, or to another host", home.Name, host.Name)}
		}
		sourceUp := hostUp(w.Host)
		if planned && !sourceUp {
			return &ConflictError{Code: "recovery_host_disconnected", Message: fmt.Sprintf(
				"the source host %s is not connected, so a planned failover cannot shut the VM down; run an unplanned failover", w.Host.Name)}
		}
		recover := func(pointID, choice string) *Task {
			return materializeTask(w, host, agentproto.MaterializePayload{PointID: pointID, PointChoice: choice, VMID: recoveredID,
				VMName: recoveredName, Replace: replace, WriteBack: home != nil, Instant: req.Instant})
		}
		createStep := fmt.Sprintf("Create %s on host %s and start it", recoveredName, host.Name)
		if req.Instant {
			createStep = fmt.Sprintf("Start %s on host %s on the recovery point's disks, and copy them to the host", recoveredName, host.Name)
		}
		if home != nil {
			createStep = fmt.Sprintf("Write the blocks that differ into %s on host %s and start it", recoveredName, host.Name)
		}
		var steps []jobStepSpec
		kind, jobType := FailoverUnplanned, JobUnplannedFailover
		if planned {
			kind, jobType = FailoverPlanned, JobPlannedFailover
			final, pointID := finalCycleTask(w)
			steps = []jobStepSpec{
				shutdownStep(w),
				{Name: "Replicate the last changes (final cycle)", Task: final},
				{Name: createStep, Task: recover(pointID, "")},
			}
		} else {
			choice := req.RecoveryPoint
			if choice == "" {
				choice = PointLatestProcessed
			}
			if req.ShutDownSource {
				if sourceUp {
					steps = append(steps, shutdownStep(w))
				} else {
					steps = append(steps, jobStepSpec{Name: "Shut down the source VM",
						Message: fmt.Sprintf("not done: host %s is not connected", w.Host.Name)})
				}
			}
			var materialize *Task
			if choice == PointLatest && sourceUp {
				final, _ := finalCycleTask(w)
				steps = append(steps, jobStepSpec{Name: "Process the data the source has (final cycle)", Task: final})
				// The point is chosen when the recovery host gets the task:
				// the final cycle's, unless it is labelled inconsistent.
				materialize = recover("", PointLatest)
			} else {
				if choice == PointLatest {
					choice = PointLatestProcessed
				}
				point, err := choosePoint(tx, p.ID, choice)
				if err != nil {
					return err
				}
				why := ""
				if req.RecoveryPoint == PointLatest {
					why = fmt.Sprintf("; host %s is not connected, so what it had not sent is lost", w.Host.Name)
				}
				steps = append(steps, jobStepSpec{Name: "Choose the recovery point", Message: describePoint(point, why)})
				materialize = recover(point.ID, "")
			}
			steps = append(steps, jobStepSpec{Name: createStep, Task: materialize})
		}
		if err := cancelReplication(s, tx, now, p.ID, "the VM is failing over"); err != nil {
			return err
		}
		if err := enterFailingOver(tx, p); err != nil {
			return err
		}
		if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"failover_host_id": host.ID,
			"failover_vm_id": recoveredID, "failover_kind": kind, "failover_point_id": "", "next_retry_at": nil}).Error; err != nil {
			return err
		}
		job, err = createJob(tx, now, a, Job{Type: jobType, TargetKind: "vm", TargetID: w.VM.ID, TargetName: w.VM.Name, ParentJobID: req.Parent}, steps)
		if err != nil {
			return err
		}
		return s.audit(tx, a, "failover."+kind, "vm", w.VM.ID, w.VM.Name, map[string]string{"recovery_host": host.Name,
			"recovery_point": req.RecoveryPoint, "job": job.ID})
	}()
	return job, err
}

// cancelReplication ends the protection's replication tasks that have not
// started (a resync's job with them); a running one is asked to stop.
func cancelReplication(s *Store, tx *gorm.DB, now time.Time, protectionID, why string) error {
	var tasks []Task
	if err := tx.Where("protection_id = ? AND state IN ? AND kind IN ?", protectionID, []string{TaskWaiting, TaskQueued, TaskLeased},
		[]string{agentproto.TaskReplicate, agentproto.TaskResync, agentproto.TaskVerify}).Find(&tasks).Error; err != nil {
		return err
	}
	for i := range tasks {
		t := &tasks[i]
		if t.State == TaskLeased {
			if err := tx.Model(&Task{}).Where("id = ?", t.ID).Update("cancel_request", true).Error; err != nil {
				return err
			}
			continue
		}
		if err := finishTask(tx, now, t, TaskCancelled, "", agentproto.CodeCancelled, why, ""); err != nil {
			return err
		}
	}
	return nil
}

// ChangeRecoveryPoint makes the failed-over VM again from another point:
// the recovery host stops it and replaces its disks. Allowed until commit.
func (s *Store) ChangeRecoveryPoint(ctx context.Context, a Actor, vmID, choice string) (*Job, error) {
	now := s.Now()
	var job *Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		w, err := protectionOf(tx, vmID)
		if err != nil {
			return err
		}
		p := w.Protection
		if p.State != StateFailedOver {
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf(
				"the recovery point can be changed only after a failover and before its commit; the VM is %s", p.State)}
		}
		if err := recoveryBusy(tx, vmID); err != nil {
			return err
		}
		if choice == PointLatest {
			choice = PointLatestProcessed
		}
		point, err := choosePoint(tx, p.ID, choice)
		if err != nil {
			return err
		}
		host, err := recoveryHost(tx, p.FailoverHostID, w.VM.Name, p.FailoverVMID)
		if err != nil {
			return err
		}
		// The VM runs: it is stopped first (Replace). After a failback into
		// the original VM its disks are written back, not made anew.
		pl := agentproto.MaterializePayload{PointID: point.ID, VMID: p.FailoverVMID, VMName: w.VM.Name, Replace: true}
		var home VM
		if p.HomeVMID != "" && tx.First(&home, "id = ? AND host_id = ? AND external_id = ?", p.HomeVMID, host.ID, p.FailoverVMID).Error == nil {
			pl.VMName, pl.WriteBack = home.Name, true
		}
		again := materializeTask(w, host, pl)
		job, err = createJob(tx, now, a, Job{Type: JobChangeRecoveryPoint, TargetKind: "vm", TargetID: w.VM.ID, TargetName: w.VM.Name}, []jobStepSpec{
			{Name: "Choose the recovery point", Message: describePoint(point, "")},
			{Name: fmt.Sprintf("Stop %s on host %s, write its disks from the point and start it", w.VM.Name, host.Name), Task: again},
		})
		if err != nil {
			return err
		}
		return s.audit(tx, a, "failover.change_point", "vm", w.VM.ID, w.VM.Name, map[string]string{"point": point.ID, "job": job.ID})
	})
	return job, err
}

// CommitFailover finalizes a failover: the point the VM runs from is kept
// and the older points are deleted from the target (the reference deletes
// the others too; a point newer than the committed one stays until
// retention removes it, since the directory target cannot drop it without
// rolling the replica back).
func (s *Store) CommitFailover(ctx context.Context, a Actor, vmID string) (*Job, error) {
	now := s.Now()
	var job *Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var err error
		job, err = s.commitFailover(tx, now, a, vmID, "")
		return err
	})
	return job, err
}

func (s *Store) commitFailover(tx *gorm.DB, now time.Time, a Actor, vmID string, parent string) (job *Job, err error) {
	err = func() error {
		w, err := protectionOf(tx, vmID)
		if err != nil {
			return err
		}
		p := w.Protection
		if p.State != StateFailedOver {
			return &ConflictError{Code: "nothing_to_commit", Message: fmt.Sprintf("the VM is %s: there is no failover to commit", p.State)}
		}
		if err := recoveryBusy(tx, vmID); err != nil {
			return err
		}
		var host Host
		if err := tx.First(&host, "id = ?", p.FailoverHostID).Error; err != nil {
			return err
		}
		if !hostUp(host) {
			return &ConflictError{Code: "recovery_host_disconnected", Message: fmt.Sprintf("the recovery host %s is not connected; start its agent, then commit", host.Name)}
		}
		pl := w.Payload
		pl.PointID = p.FailoverPointID
		b, _ := json.Marshal(pl)
		job, err = createJob(tx, now, a, Job{Type: JobCommitFailover, TargetKind: "vm", TargetID: w.VM.ID, TargetName: w.VM.Name, ParentJobID: parent}, []jobStepSpec{
			{Name: fmt.Sprintf("Keep recovery point %s and delete the older points", p.FailoverPointID),
				Task: &Task{HostID: host.ID, ProtectionID: p.ID, Kind: agentproto.TaskCommitPoint, Payload: string(b)}},
		})
		if err != nil {
			return err
		}
		return s.audit(tx, a, "failover.commit", "vm", w.VM.ID, w.VM.Name, map[string]string{"point": p.FailoverPointID, "job": job.ID})
	}()
	return job, err
}

// jobTypeOf is the type of a task's job ("" for a task without one).
func jobTypeOf(tx *gorm.DB, t *Task) (string, error) {
	if t.JobID == "" {
		return "", nil
	}
	var j Job
	if err := tx.Select("type").First(&j, "id = ?", t.JobID).Error; err != nil {
		return "", err
	}
	return j.Type, nil
}

// materialized records what a materialize made, by its job.
func materialized(s *Store, tx *gorm.DB, now time.Time, t *Task, result string) error {
	var r agentproto.MaterializeResult
	_ = json.Unmarshal([]byte(result), &r)
	var pl agentproto.MaterializePayload
	_ = json.Unmarshal([]byte(t.Payload), &pl)
	if r.PointID == "" {
		r.PointID = pl.PointID
	}
	if t.StepID != "" {
		msg := fmt.Sprintf("%s made from recovery point %s: %s (%d bytes) written in %.1f s", pl.VMName, r.PointID, agentproto.FormatBytes(r.BytesWritten), r.BytesWritten, r.Seconds)
		if r.Started {
			msg += "; started"
			if r.Isolated {
				msg += " isolated (no network)"
			}
		}
		if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Update("message", msg).Error; err != nil {
			return err
		}
	}
	typ, err := jobTypeOf(tx, t)
	if err != nil {
		return err
	}
	switch typ {
	case JobTestFailover:
		return tx.Model(&Protection{}).Where("id = ?", t.ProtectionID).Update("test_failover_point_id", r.PointID).Error
	case JobPlannedFailover, JobUnplannedFailover:
		if err := setState(tx, t.ProtectionID, StateFailedOver); err != nil {
			return err
		}
		var p Protection
		if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
			return err
		}
		if err := resolveAlerts(tx, now, p.VMID, AlertFailoverFailed); err != nil {
			return err
		}
		return tx.Model(&Protection{}).Where("id = ?", t.ProtectionID).Updates(map[string]any{"failover_point_id": r.PointID, "failed_over_at": now}).Error
	case JobChangeRecoveryPoint:
		return tx.Model(&Protection{}).Where("id = ?", t.ProtectionID).Update("failover_point_id", r.PointID).Error
	}
	return nil
}

// testVMRemoved records the drill, with the cleanup's notes, once its
// test VM is gone.
func testVMRemoved(_ *Store, tx *gorm.DB, _ time.Time, t *Task, _ string) error {
	if t.JobID == "" {
		return nil
	}
	var job Job
	if err := tx.Select("type", "notes").First(&job, "id = ?", t.JobID).Error; err != nil || job.Type != JobCleanupTestFailover {
		return err
	}
	var p Protection
	if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
		return err
	}
	updates := noTestFailover()
	updates["last_drill_at"], updates["last_drill_point_id"], updates["last_drill_notes"] = p.TestFailoverAt, p.TestFailoverPointID, job.Notes
	return tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(updates).Error
}

// testFailoverOn are the updates that record a protection's test failover:
// its VM on a host, made of a point, at a time.
func testFailoverOn(hostID, vmID, pointID string, at time.Time) map[string]any {
	return map[string]any{"test_failover": true, "test_failover_host_id": hostID, "test_failover_vm_id": vmID, "test_failover_point_id": pointID, "test_failover_at": at}
}

// noTestFailover are the updates that forget a protection's test failover.
func noTestFailover() map[string]any {
	return map[string]any{"test_failover": false, "test_failover_host_id": "", "test_failover_vm_id": "", "test_failover_point_id": "", "test_failover_at": nil}
}

// committed ends a failover's commit: the vault forgets the points the
// agent deleted.
func committed(_ *Store, tx *gorm.DB, now time.Time, t *Task, result string) error {
	var r agentproto.CommitResult
	if err := json.Unmarshal([]byte(result), &r); err != nil {
		return fmt.Errorf("commit result: %w", err)
	}
	if len(r.Points) > 0 {
		if err := tx.Where("protection_id = ? AND id NOT IN ?", t.ProtectionID, r.Points).Delete(&RecoveryPoint{}).Error; err != nil {
			return err
		}
	}
	if err := setState(tx, t.ProtectionID, StateCommitted); err != nil {
		return err
	}
	if t.StepID != "" {
		msg := fmt.Sprintf("kept recovery point %s; deleted %d older point(s)", r.PointID, len(r.Deleted))
		if newer := len(r.Points) - 1; newer > 0 {
			msg += fmt.Sprintf("; %d newer point(s) stay until retention removes them", newer)
		}
		if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Update("message", msg).Error; err != nil {
			return err
		}
	}
	return tx.Model(&Protection{}).Where("id = ?", t.ProtectionID).Update("committed_at", now).Error
}

// recoveryStepFailed carries a recovery job's failure to the protection:
// a test failover that made nothing is forgotten (one whose VM was made
// but did not start keeps it, for its cleanup); a failover that did not
// happen leaves the VM Protected, with the FailoverFailed alert.
func recoveryStepFailed(_ *Store, tx *gorm.DB, now time.Time, t *Task, o TaskOutcome) error {
	typ, err := jobTypeOf(tx, t)
	if err != nil {
		return err
	}
	return recoveryJobFailed(tx, now, t, o, typ)
}

// recoveryJobFailed is recoveryStepFailed for a task whose job type is known.
func recoveryJobFailed(tx *gorm.DB, now time.Time, t *Task, o TaskOutcome, typ string) error {
	var p Protection
	if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
		return err
	}
	switch typ {
	case JobTestFailover:
		if o.ErrorCode == agentproto.CodeVMStartFailed {
			return nil
		}
		return tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(noTestFailover()).Error
	case JobChangeRecoveryPoint:
		if o.ErrorCode == agentproto.CodeVMStartFailed {
			// Its disks are the new point's; only the start failed.
			var pl agentproto.MaterializePayload
			_ = json.Unmarshal([]byte(t.Payload), &pl)
			return tx.Model(&Protection{}).Where("id = ?", p.ID).Update("failover_point_id", pl.PointID).Error
		}
	case JobPlannedFailover, JobUnplannedFailover:
		if err := setStateFrom(tx, p.ID, StateFailingOver, StateProtected); err != nil {
			return err
		}
		if o.ErrorCode == agentproto.CodeCancelled {
			return startSourceAgain(tx, now, t, p)
		}
		return vmAlert(tx, p.ID, AlertFailoverFailed, HealthCritical, fmt.Sprintf(
			"the %s failed (%s): %s; fix the cause, then restart the job from the Jobs tab", strings.ToLower(typ), o.ErrorCode, o.Message))
	}
	return nil
}

// resolveMaterializePoint fills in the point of a materialize task that
// chose it late (unplanned failover to "latest": the final cycle's point,
// unless it is labelled inconsistent). A choice no point meets fails the
// task, with why.
func resolveMaterializePoint(tx *gorm.DB, t *Task) (string, *TaskOutcome, error) {
	var pl agentproto.MaterializePayload
	if err := json.Unmarshal([]byte(t.Payload), &pl); err != nil || pl.PointID != "" || pl.PointChoice == "" {
		return t.Payload, nil, nil
	}
	point, err := choosePoint(tx, t.ProtectionID, pl.PointChoice)
	var ce *ConflictError
	if errors.As(err, &ce) {
		return "", &TaskOutcome{ErrorCode: ce.Code, Message: ce.Message}, nil
	}
	if err != nil {
		return "", nil, err
	}
	pl.PointID = point.ID
	b, err := json.Marshal(pl)
	return string(b), nil, err
}

// RestartJob runs a failed recovery job again from its failed step: the
// steps that succeeded are not run again, and the VM re-enters the state
// the job needs (FailingOver for a failover).
func (s *Store) RestartJob(ctx context.Context, a Actor, jobID string) (*Job, error) {
	now := s.Now()
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var job Job
		if err := tx.First(&job, "id = ?", jobID).Error; err != nil {
			return err
		}
		if !Restartable(&job) {
			return &ConflictError{Code: "job_not_restartable", Message: fmt.Sprintf(
				"only a failed recovery job can be restarted; this is a %s job that is %s", job.Type, job.State)}
		}
		if job.TargetKind == "recovery_plan" {
			return s.restartPlan(tx, now, a, job)
		}
		return s.restartJob(tx, now, a, job)
	})
	if err != nil {
		return nil, err
	}
	return s.GetJob(ctx, jobID)
}

// restartJob runs a failed recovery job of a VM again (RestartJob).
func (s *Store) restartJob(tx *gorm.DB, now time.Time, a Actor, job Job) error {
	if !recoveryJobs[job.Type] || job.State != JobFailed {
		return &ConflictError{Code: "job_not_restartable", Message: fmt.Sprintf(
			"only a failed recovery job can be restarted; this is a %s job that is %s", job.Type, job.State)}
	}
	var tasks []Task
	if err := tx.Where("job_id = ?", job.ID).Find(&tasks).Error; err != nil {
		return err
	}
	var failed *Task
	for i := range tasks {
		if tasks[i].State == TaskFailed {
			failed = &tasks[i]
		}
	}
	if failed == nil {
		return &ConflictError{Code: "job_not_restartable", Message: "the job has no failed step to run again"}
	}
	if err := recoveryBusy(tx, job.TargetID); err != nil {
		return err
	}
	var p Protection
	if err := tx.First(&p, "id = ?", failed.ProtectionID).Error; err != nil {
		return err
	}
	if err := reenterRecovery(tx, now, job, p, failed); err != nil {
		return err
	}
	if job.Type == JobPlannedFailover {
		// The source may have run, and written, since the final cycle:
		// a planned failover runs again from the shutdown.
		if err := restartPlannedFailover(tx, job, tasks); err != nil {
			return err
		}
		return s.audit(tx, a, "job.restart", "job", job.ID, job.Type, map[string]string{"vm": job.TargetName, "from_step": "the shutdown"})
	}
	var step JobStep
	if err := tx.First(&step, "id = ?", failed.StepID).Error; err != nil {
		return err
	}
	if err := tx.Model(&Task{}).Where("id = ?", failed.ID).Updates(freshTask(TaskQueued)).Error; err != nil {
		return err
	}
	if err := tx.Model(&JobStep{}).Where("id = ?", failed.StepID).Updates(map[string]any{"state": JobNotStarted, "progress": 0,
		"ended_at": nil, "message": "restarted: waiting for the host's agent to pick it up"}).Error; err != nil {
		return err
	}
	if err := rerunStepsAfter(tx, job.ID, step.Seq); err != nil {
		return err
	}
	if err := reopenJob(tx, job.ID); err != nil {
		return err
	}
	return s.audit(tx, a, "job.restart", "job", job.ID, job.Type, map[string]string{"vm": job.TargetName, "from_step": failed.StepID})
}

// reenterRecovery puts a protection back where a recovery job that failed
// at task t needs it to run that step again.
func reenterRecovery(tx *gorm.DB, now time.Time, job Job, p Protection, t *Task) error {
	switch job.Type {
	case JobPlannedFailover, JobUnplannedFailover:
		if p.State != StateProtected && p.State != StateResyncRequired {
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf("the VM is %s now; the failover cannot be run again", p.State)}
		}
		return enterFailingOver(tx, p)
	case JobTestFailover:
		if p.TestFailover && t.Kind == agentproto.TaskMaterialize {
			return nil // its VM was made and did not start: the start runs again
		}
		if p.TestFailover {
			return &ConflictError{Code: "test_failover_exists", Message: "the VM has another test failover; clean it up first"}
		}
		var pl agentproto.MaterializePayload
		_ = json.Unmarshal([]byte(t.Payload), &pl)
		return tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(testFailoverOn(t.HostID, pl.VMID, pl.PointID, now)).Error
	case JobCleanupTestFailover:
		if !p.TestFailover {
			return &ConflictError{Code: "no_test_failover", Message: "the VM has no test failover to clean up any more"}
		}
	case JobReprotect:
		if p.State != StateCommitted {
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf("the VM is %s now, not Committed", p.State)}
		}
		return setState(tx, p.ID, StateReprotecting)
	case JobChangeRecoveryPoint, JobCommitFailover:
		if p.State != StateFailedOver {
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf("the VM is %s now, not FailedOver", p.State)}
		}
	}
	return nil
}

// failRecoveryTasks fails the recovery and plan jobs' tasks (queued or
// leased) of hosts that stopped answering: a failover must not wait, unseen,
// for a host that may never come back, whether its step was queued before
// or after the host went silent. The job can be restarted from the step
// once the host is back (or another is chosen); a late success of a
// materialize it failed is still taken (CompleteTask).
func (s *Store) failRecoveryTasks(tx *gorm.DB, now time.Time) error {
	var rows []struct {
		Task
		JobType       string
		HostName      string
		LastHeartbeat *time.Time
	}
	err := tx.Table("tasks").Select("tasks.*, jobs.type AS job_type, hosts.name AS host_name, hosts.last_heartbeat AS last_heartbeat").
		Joins("JOIN hosts ON hosts.id = tasks.host_id").Joins("JOIN jobs ON jobs.id = tasks.job_id").
		Where("(hosts.state = ? OR hosts.revoked_at IS NOT NULL) AND tasks.state IN ? AND (jobs.type IN ? OR jobs.target_kind = ?)",
			HostDisconnected, []string{TaskQueued, TaskLeased}, recoveryJobTypes, "recovery_plan").Find(&rows).Error
	if err != nil {
		return err
	}
	for i := range rows {
		r := &rows[i]
		o := TaskOutcome{ErrorCode: agentproto.CodeHostDisconnected, Message: fmt.Sprintf(
			"host %s stopped answering during the %s (no heartbeat since %s); the step did not finish. If the agent was only cut off, it may have done the step: check the host before recovering elsewhere; restarting the job finishes it there",
			r.HostName, strings.ToLower(r.JobType), formatTimePtr(r.LastHeartbeat))}
		if err := s.endTask(tx, now, &r.Task, TaskFailed, o); err != nil {
			return err
		}
	}
	return nil
}

// JobStartVM starts a source VM again after its failover was cancelled.
const JobStartVM = "Start VM"

// startSourceAgain: a failover cancelled after it shut its source down
// leaves the source as it was, running: a job starts it again (once).
func startSourceAgain(tx *gorm.DB, now time.Time, t *Task, p Protection) error {
	var shutdown Task
	err := tx.Where("job_id = ? AND kind = ? AND state = ?", t.JobID, agentproto.TaskShutdownVM, TaskSucceeded).First(&shutdown).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil // it was not shut down
	}
	if err != nil {
		return err
	}
	var r agentproto.PowerResult
	if json.Unmarshal([]byte(shutdown.Result), &r) != nil || !r.WasRunning {
		return nil
	}
	var n int64
	if err := tx.Model(&Job{}).Where("parent_job_id = ? AND type = ?", t.JobID, JobStartVM).Count(&n).Error; err != nil || n > 0 {
		return err
	}
	var pl agentproto.PowerPayload
	_ = json.Unmarshal([]byte(shutdown.Payload), &pl)
	var vm VM
	if err := tx.First(&vm, "id = ?", p.VMID).Error; err != nil {
		return err
	}
	_, err = createJob(tx, now, SystemActor, Job{Type: JobStartVM, TargetKind: "vm", TargetID: vm.ID, TargetName: vm.Name, ParentJobID: t.JobID}, []jobStepSpec{
		{Name: fmt.Sprintf("Start %s again: its failover was cancelled after it was shut down", vm.Name),
			Task: powerTask(agentproto.TaskStartVM, shutdown.HostID, p.ID, pl.VMID, 0)},
	})
	return err
}

// restartPlannedFailover runs a planned failover again from its first
// step: shut down, a new final cycle with a new point, and the VM made of
// that point. Its earlier final point may be older than the source now.
func restartPlannedFailover(tx *gorm.DB, job Job, tasks []Task) error {
	pointID := NewID(prefixRecoveryPoint)
	for _, t := range tasks {
		state, payload := TaskWaiting, t.Payload
		switch t.Kind {
		case agentproto.TaskShutdownVM:
			state = TaskQueued
		case agentproto.TaskReplicate:
			var pl agentproto.ReplicationPayload
			_ = json.Unmarshal([]byte(t.Payload), &pl)
			pl.PointID = pointID
			b, _ := json.Marshal(pl)
			payload = string(b)
		case agentproto.TaskMaterialize:
			var pl agentproto.MaterializePayload
			_ = json.Unmarshal([]byte(t.Payload), &pl)
			pl.PointID = pointID
			b, _ := json.Marshal(pl)
			payload = string(b)
		}
		updates := freshTask(state)
		updates["payload"] = payload
		if err := tx.Model(&Task{}).Where("id = ?", t.ID).Updates(updates).Error; err != nil {
			return err
		}
	}
	if err := tx.Model(&JobStep{}).Where("job_id = ?", job.ID).Updates(map[string]any{"state": JobNotStarted, "progress": 0,
		"started_at": nil, "ended_at": nil, "message": ""}).Error; err != nil {
		return err
	}
	return reopenJob(tx, job.ID)
}

// lateRecoverySuccess: a materialize the vault failed because its host
// went silent, reported done by that run after all (the agent was only
// cut off): the VM exists, and may run.
func lateRecoverySuccess(t *Task, o TaskOutcome) bool {
	return t.Kind == agentproto.TaskMaterialize && t.ErrorCode == agentproto.CodeHostDisconnected && o.ErrorCode == "" &&
		(o.Attempt == 0 || o.Attempt == t.Attempts)
}

// takeLateMaterialize takes such a success: the job succeeds after all
// and the VM is failed over, as it is on the host. If the VM's protection
// has moved on (another failover), two copies may run: an alert says so.
func (s *Store) takeLateMaterialize(tx *gorm.DB, now time.Time, t *Task, o TaskOutcome) error {
	var job Job
	if err := tx.First(&job, "id = ?", t.JobID).Error; err != nil {
		return err
	}
	var p Protection
	if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
		return err
	}
	var pl agentproto.MaterializePayload
	_ = json.Unmarshal([]byte(t.Payload), &pl)
	if job.State != JobFailed || reenterRecovery(tx, now, job, p, t) != nil {
		return raiseAlert(tx, AlertFailoverFailed, HealthCritical, "vm", p.VMID, fmt.Sprintf(
			"the agent of the recovery host reported, after the vault had given it up, that it made VM %s (%s) of recovery point %s and may have started it; the VM's recovery has moved on since, so two copies may run: check that host and stop the one not wanted",
			pl.VMName, pl.VMID, pl.PointID))
	}
	if err := finishTask(tx, now, t, TaskSucceeded, o.Result, "", "", ""); err != nil {
		return err
	}
	if err := materialized(s, tx, now, t, o.Result); err != nil {
		return err
	}
	return tx.Model(&Job{}).Where("id = ?", job.ID).Updates(map[string]any{"error_code": "", "error_message": "", "error_action": ""}).Error
}

// freshTask are the updates that make a task that ran (and failed) as
// new, in state: a restarted job's.
func freshTask(state string) map[string]any {
	return map[string]any{"state": state, "failures": 0, "expiries": 0, "first_failure_at": nil, "not_before": nil,
		"lease_expires_at": nil, "cancel_request": false, "error_code": "", "error_message": "", "result": ""}
}

// reopenJob puts a failed job back in progress, its error forgotten: it
// was restarted.
func reopenJob(tx *gorm.DB, jobID string) error {
	return tx.Model(&Job{}).Where("id = ?", jobID).Updates(map[string]any{"state": JobInProgress, "ended_at": nil,
		"error_code": "", "error_message": "", "error_action": ""}).Error
}

// rerunStepsAfter makes the steps after seq that a failure cancelled (and
// their tasks) wait to run again: a restarted job goes on as before.
func rerunStepsAfter(tx *gorm.DB, jobID string, seq int) error {
	later := tx.Model(&JobStep{}).Select("id").Where("job_id = ? AND seq > ? AND state = ?", jobID, seq, JobCancelled)
	if err := tx.Model(&Task{}).Where("step_id IN (?) AND state = ?", later, TaskCancelled).
		Updates(map[string]any{"state": TaskWaiting, "error_code": "", "error_message": ""}).Error; err != nil {
		return err
	}
	return tx.Model(&JobStep{}).Where("job_id = ? AND seq > ? AND state = ?", jobID, seq, JobCancelled).
		Updates(map[string]any{"state": JobNotStarted, "progress": 0, "started_at": nil, "ended_at": nil, "message": ""}).Error
}

// lockProtection takes a protection's row until the transaction ends, so
// that two changes of one VM's work (a move and a cycle, two failovers)
// are made one after the other, each seeing what the other queued. On
// PostgreSQL a row lock; on SQLite the store's one connection begins
// every transaction IMMEDIATE, so transactions run one at a time already.
func lockProtection(tx *gorm.DB, id string) error {
	if tx.Dialector.Name() != "postgres" {
		return nil
	}
	return tx.Exec("SELECT id FROM protections WHERE id = ? FOR UPDATE", id).Error
}
