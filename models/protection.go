package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// The job of enabling protection and its steps (DESIGN.md §1).
const (
	JobEnableProtection = "Enable protection"
	stepPrerequisites   = "Prerequisites check"
	stepCreate          = "Create replication"
	stepInitial         = "Start initial replication"
	stepFinalize        = "Finalize protection"
)

// EnableProtection starts protecting a VM under a policy to a target: it
// records the protection and starts the "Enable protection" job, whose
// steps run on the VM's host one after the other.
func (s *Store) EnableProtection(ctx context.Context, a Actor, vmID, policyID, targetID string) (*Job, error) {
	now := s.Now()
	var job Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var vm VM
		if err := tx.Preload("Disks").First(&vm, "id = ?", vmID).Error; err != nil {
			return err
		}
		var host Host
		if err := tx.First(&host, "id = ?", vm.HostID).Error; err != nil {
			return err
		}
		v := &ValidationError{}
		var policy Policy
		if err := tx.First(&policy, "id = ?", policyID).Error; err != nil {
			v.Add("policy_id", "no replication policy %q", policyID)
		}
		var target Target
		if err := tx.First(&target, "id = ?", targetID).Error; err != nil {
			v.Add("target_id", "no storage target %q", targetID)
		}
		if err := v.Err(); err != nil {
			return err
		}
		switch {
		case host.RevokedAt != nil:
			return &ConflictError{Code: "host_removed", Message: "the VM's host was removed from the vault; register it again first"}
		case vm.MissingSince != nil:
			return &ConflictError{Code: "vm_not_found", Message: "the host no longer reports this VM"}
		case len(vm.Disks) == 0:
			return &ConflictError{Code: "vm_has_no_disks", Message: "the host reports no disk for this VM; there is nothing to replicate"}
		}
		var existing []Protection
		if err := tx.Where("vm_id = ?", vm.ID).Limit(1).Find(&existing).Error; err != nil {
			return err
		}
		if len(existing) > 0 && existing[0].State == StateDisablingProtection {
			return &ConflictError{Code: "already_protected", Message: "the VM's replica data is being deleted; wait for its Disable protection job to end (or disable again, keeping the data) before protecting it again"}
		}
		if len(existing) > 0 {
			return &ConflictError{Code: "already_protected", Message: "the VM is already protected; disable its protection first to change policy or target"}
		}
		p := Protection{ID: NewID(prefixProtection), VMID: vm.ID, PolicyID: policy.ID, TargetID: target.ID, State: StateEnablingProtection, Health: HealthNormal}
		if err := tx.Create(&p).Error; err != nil {
			return err
		}
		payload := agentproto.ReplicationPayload{ProtectionID: p.ID, VMID: vm.ExternalID, RetentionHours: policy.RetentionHours, MinFreeBytes: 1 << 30,
			BandwidthMbps: BandwidthAt(policy, now, s.loc())}
		payload.Target.Kind, payload.Target.Path = target.Kind, target.Path
		if target.Kind == TargetAzureBlob {
			payload.Target.ContainerURL = VMContainerURL(&target, vm.ID)
		}
		for _, d := range vm.Disks {
			rd := ReplicaDisk{ID: NewID(prefixReplicaDisk), ProtectionID: p.ID, DiskID: d.ID, Name: d.ID, SizeBytes: d.SizeBytes}
			if err := tx.Create(&rd).Error; err != nil {
				return err
			}
			payload.Disks = append(payload.Disks, agentproto.ReplicaDisk{ReplicaID: rd.Name, Path: d.Path, SizeBytes: d.SizeBytes})
		}
		job = Job{ID: NewID(prefixJob), Type: JobEnableProtection, State: JobInProgress, TargetKind: "vm", TargetID: vm.ID,
			TargetName: vm.Name, CreatedBy: a.Username, StartedAt: &now}
		if err := tx.Omit("Steps").Create(&job).Error; err != nil {
			return err
		}
		kinds := []string{agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica, agentproto.TaskReplicate, ""}
		for i, name := range []string{stepPrerequisites, stepCreate, stepInitial, stepFinalize} {
			step := JobStep{ID: NewID(prefixJobStep), JobID: job.ID, Seq: i + 1, Name: name, State: JobNotStarted}
			if err := tx.Create(&step).Error; err != nil {
				return err
			}
			job.Steps = append(job.Steps, step)
			if kinds[i] == "" {
				continue
			}
			pl := payload
			if kinds[i] == agentproto.TaskReplicate {
				pl.PointID = NewID(prefixRecoveryPoint)
			}
			b, _ := json.Marshal(pl)
			state := TaskWaiting
			if i == 0 {
				state = TaskQueued
				step.Message = "waiting for the host's agent to pick it up"
			}
			task := Task{ID: NewID(prefixTask), JobID: job.ID, StepID: step.ID, HostID: host.ID, ProtectionID: p.ID, Kind: kinds[i], Payload: string(b), State: state}
			if err := tx.Create(&task).Error; err != nil {
				return err
			}
		}
		return s.audit(tx, a, "protection.enable", "vm", vm.ID, vm.Name, map[string]string{"policy": policy.Name, "target": target.Name})
	})
	if err != nil {
		return nil, err
	}
	return &job, nil
}

// JobDisableProtection is the job that deletes a VM's replica data when
// its protection is disabled.
const JobDisableProtection = "Disable protection"

// DisableProtection stops protecting a VM. With deleteData false the
// replicas stay on the target and the VM is Unprotected at once. With
// deleteData true the protection moves to DisablingProtection and a
// "Disable protection" job has the host's agent delete the replicas and
// their recovery points; the VM is Unprotected when that succeeds. If it
// fails, the protection stays, Critical, and disabling again (either way)
// is the way out. Replication tasks in flight are cancelled either way.
func (s *Store) DisableProtection(ctx context.Context, a Actor, vmID string, deleteData bool) (*Job, error) {
	now := s.Now()
	var job *Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var p Protection
		if err := tx.First(&p, "vm_id = ?", vmID).Error; err != nil {
			return err
		}
		if err := CheckTransition(p.State, StateDisablingProtection); err != nil && p.State != StateEnablingProtection && p.State != StateDisablingProtection {
			return err
		}
		var tasks []Task
		if err := tx.Where("protection_id = ? AND state IN ?", p.ID, []string{TaskWaiting, TaskQueued, TaskLeased}).Find(&tasks).Error; err != nil {
			return err
		}
		for i := range tasks {
			if err := finishTask(tx, now, &tasks[i], TaskCancelled, "", "protection_disabled", "protection was disabled", ""); err != nil {
				return err
			}
		}
		if !deleteData {
			if err := forgetProtection(tx, now, p.ID); err != nil {
				return err
			}
			return s.audit(tx, a, "protection.disable", "vm", vmID, "", map[string]string{"replica_data": "kept on the target"})
		}
		var vm VM
		if err := tx.First(&vm, "id = ?", vmID).Error; err != nil {
			return err
		}
		var target Target
		if err := tx.First(&target, "id = ?", p.TargetID).Error; err != nil {
			return err
		}
		payload := agentproto.ReplicationPayload{ProtectionID: p.ID, VMID: vm.ExternalID}
		payload.Target.Kind, payload.Target.Path = target.Kind, target.Path
		if target.Kind == TargetAzureBlob {
			payload.Target.ContainerURL = VMContainerURL(&target, vm.ID)
		}
		b, _ := json.Marshal(payload)
		if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"state": StateDisablingProtection,
			"next_retry_at": nil}).Error; err != nil {
			return err
		}
		created, err := createOneStepJob(tx, now, a, Job{Type: JobDisableProtection, TargetKind: "vm", TargetID: vm.ID, TargetName: vm.Name},
			"Delete replica data", Task{HostID: vm.HostID, ProtectionID: p.ID, Kind: agentproto.TaskDeleteReplica, Payload: string(b)})
		if err != nil {
			return err
		}
		job = created
		return s.audit(tx, a, "protection.disable", "vm", vmID, vm.Name, map[string]string{"replica_data": "deleted by job " + created.ID})
	})
	if err != nil {
		return nil, err
	}
	return job, nil
}

// forgetProtection removes a protection and what the vault knows of its
// replicas.
func forgetProtection(tx *gorm.DB, now time.Time, protectionID string) error {
	var p Protection
	if err := tx.First(&p, "id = ?", protectionID).Error; err != nil {
		return err
	}
	if err := resolveAlerts(tx, now, p.VMID, AlertProtectionCritical, AlertRPOExceeded); err != nil {
		return err
	}
	for _, m := range []any{&RecoveryPoint{}, &ReplicaDisk{}} {
		if err := tx.Where("protection_id = ?", protectionID).Delete(m).Error; err != nil {
			return err
		}
	}
	return tx.Where("id = ?", protectionID).Delete(&Protection{}).Error
}

// GetProtection returns a VM's protection, or ErrNotFound.
func (s *Store) GetProtection(ctx context.Context, vmID string) (*Protection, error) {
	var p Protection
	if err := s.db.WithContext(ctx).First(&p, "vm_id = ?", vmID).Error; err != nil {
		return nil, translateError(err)
	}
	return &p, nil
}

// ListRecoveryPoints lists a VM's recovery points, newest first (point ids
// are made when their cycle is scheduled, so id order is cycle order).
func (s *Store) ListRecoveryPoints(ctx context.Context, vmID string, page Page) ([]RecoveryPoint, string, error) {
	p, err := s.GetProtection(ctx, vmID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, "", nil
		}
		return nil, "", err
	}
	var out []RecoveryPoint
	next, err := paginate(s.db.WithContext(ctx).Model(&RecoveryPoint{}).Where("protection_id = ?", p.ID), page, true, &out)
	return out, next, err
}

// afterTaskSucceeded carries a task's success further: a replication cycle
// records its point, and a job moves to its next step.
func afterTaskSucceeded(tx *gorm.DB, now time.Time, t *Task, result string) error {
	if t.Kind == agentproto.TaskReplicate || t.Kind == agentproto.TaskResync {
		if err := recordCycle(tx, now, t, result); err != nil {
			return err
		}
	}
	if t.Kind == agentproto.TaskResync {
		if err := moveProtection(tx, t.ProtectionID, StateProtected); err != nil {
			return err
		}
		var r agentproto.ReplicateResult
		if json.Unmarshal([]byte(result), &r) == nil && t.StepID != "" {
			msg := fmt.Sprintf("sent %d bytes of blocks that differed from the source; %d block(s) had been changed by the storage; new recovery point %s",
				r.BytesSent, r.Repaired, r.Time.UTC().Format(time.RFC3339))
			if err := tx.Model(&JobStep{}).Where("id = ?", t.StepID).Update("message", msg).Error; err != nil {
				return err
			}
		}
	}
	if t.Kind == agentproto.TaskCreateReplica {
		if err := moveProtection(tx, t.ProtectionID, StateInitialReplication); err != nil {
			return err
		}
	}
	if t.Kind == agentproto.TaskDeleteReplica {
		if err := queueContainerCleanup(tx, now, t.ProtectionID); err != nil {
			return err
		}
		if err := forgetProtection(tx, now, t.ProtectionID); err != nil {
			return err
		}
	}
	if t.JobID == "" {
		return nil
	}
	return advanceJob(tx, now, t.JobID)
}

// advanceJob starts a job's next step: it queues the step's waiting task,
// or, for the final step of enabling protection, finishes it in the vault.
func advanceJob(tx *gorm.DB, now time.Time, jobID string) error {
	var step JobStep
	err := tx.Where("job_id = ? AND state = ?", jobID, JobNotStarted).Order("seq").First(&step).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var task Task
	err = tx.Where("step_id = ? AND state = ?", step.ID, TaskWaiting).First(&task).Error
	switch {
	case err == nil:
		if err := tx.Model(&Task{}).Where("id = ?", task.ID).Update("state", TaskQueued).Error; err != nil {
			return err
		}
		return tx.Model(&JobStep{}).Where("id = ?", step.ID).Update("message", "waiting for the host's agent to pick it up").Error
	case !errors.Is(err, gorm.ErrRecordNotFound):
		return err
	}
	if step.Name != stepFinalize {
		return nil
	}
	var job Job
	if err := tx.First(&job, "id = ?", jobID).Error; err != nil {
		return err
	}
	var p Protection
	if err := tx.First(&p, "vm_id = ?", job.TargetID).Error; err != nil {
		return err
	}
	if err := moveProtection(tx, p.ID, StateProtected); err != nil {
		return err
	}
	if err := tx.Model(&JobStep{}).Where("id = ?", step.ID).Updates(map[string]any{"state": JobSucceeded, "progress": 100,
		"started_at": now, "ended_at": now, "message": "protected: replication runs at the policy's copy frequency"}).Error; err != nil {
		return err
	}
	return settleJob(tx, now, jobID, "", "", "")
}

func moveProtection(tx *gorm.DB, protectionID, to string) error {
	var p Protection
	if err := tx.First(&p, "id = ?", protectionID).Error; err != nil {
		return err
	}
	if p.State == to {
		return nil
	}
	if err := CheckTransition(p.State, to); err != nil {
		return err
	}
	return tx.Model(&Protection{}).Where("id = ?", p.ID).Update("state", to).Error
}

// recordCycle records a successful replication cycle: its recovery point,
// the points retention removed, and a clean slate for the retry schedule.
func recordCycle(tx *gorm.DB, now time.Time, t *Task, result string) error {
	var r agentproto.ReplicateResult
	if err := json.Unmarshal([]byte(result), &r); err != nil || r.PointID == "" {
		return fmt.Errorf("the agent's replication result cannot be read: %v", err)
	}
	consistency := ConsistencyCrash
	if r.Consistency == ConsistencyApp {
		consistency = ConsistencyApp
	}
	point := RecoveryPoint{ID: r.PointID, ProtectionID: t.ProtectionID, Time: r.Time.UTC(), Consistency: consistency, SizeBytes: r.SizeBytes}
	if err := tx.Create(&point).Error; err != nil {
		return err
	}
	if len(r.Pruned) > 0 {
		if err := tx.Where("protection_id = ? AND id IN ?", t.ProtectionID, r.Pruned).Delete(&RecoveryPoint{}).Error; err != nil {
			return err
		}
	}
	for name, size := range r.DiskSizes {
		// A disk that grew has a larger replica: the next cycles say so.
		if err := tx.Model(&ReplicaDisk{}).Where("protection_id = ? AND name = ? AND size_bytes < ?", t.ProtectionID, name, size).
			Update("size_bytes", size).Error; err != nil {
			return err
		}
	}
	var p Protection
	if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
		return err
	}
	if err := resolveAlerts(tx, now, p.VMID, AlertProtectionCritical, AlertRPOExceeded); err != nil {
		return err
	}
	return tx.Model(&Protection{}).Where("id = ?", t.ProtectionID).Updates(map[string]any{
		"last_recovery_point_at": point.Time, "last_cycle_at": now, "bytes_sent": gorm.Expr("bytes_sent + ?", r.BytesSent),
		"last_cycle_bytes": r.BytesSent, "last_cycle_seconds": r.TransferSeconds,
		"failures": 0, "first_failure_at": nil, "next_retry_at": nil, "last_error_code": "", "last_error_message": "",
		"health": HealthNormal, "health_reasons": "[]",
	}).Error
}

// recordCycleFailure notes a failed replication cycle: the error, and when
// to try again (the reference back-off), or none for an error that needs an
// administrator.
func recordCycleFailure(tx *gorm.DB, now time.Time, t *Task, o TaskOutcome) error {
	var p Protection
	if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
		return err
	}
	first := now
	if p.FirstFailureAt != nil {
		first = *p.FirstFailureAt
	}
	failures := p.Failures + 1
	health, reason := HealthWarning, fmt.Sprintf("replication failed %d time(s): %s", failures, o.Message)
	updates := map[string]any{"failures": failures, "first_failure_at": first, "last_cycle_at": now,
		"last_error_code": o.ErrorCode, "last_error_message": truncate(o.Message, 2000)}
	if o.Recoverable {
		updates["next_retry_at"] = NextRetry(first, failures)
	} else {
		health, reason = HealthCritical, "replication stopped: "+o.Message+"; fix the cause, then disable and enable protection again"
		updates["next_retry_at"] = nil
	}
	reasons, _ := json.Marshal([]string{reason})
	updates["health"], updates["health_reasons"] = health, string(reasons)
	if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(updates).Error; err != nil {
		return err
	}
	if health == HealthCritical {
		return vmAlert(tx, p.ID, AlertProtectionCritical, HealthCritical, fmt.Sprintf("%s (%s)", reason, o.ErrorCode))
	}
	return nil
}

// ScheduleReplications queues a replication cycle for every protected VM
// whose copy frequency has passed since its last cycle, whose retry time
// (after failures) has come, and that has no cycle waiting or running.
func (s *Store) ScheduleReplications(ctx context.Context) ([]Task, error) {
	now := s.Now()
	var queued []Task
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var ps []Protection
		if err := tx.Where("state = ? AND health <> ?", StateProtected, HealthCritical).Find(&ps).Error; err != nil {
			return err
		}
		// Few policies serve many VMs: read them once per pass.
		var policyList []Policy
		if err := tx.Find(&policyList).Error; err != nil {
			return err
		}
		policies := make(map[string]Policy, len(policyList))
		for _, pol := range policyList {
			policies[pol.ID] = pol
		}
		for _, p := range ps {
			policy, ok := policies[p.PolicyID]
			if !ok {
				continue // deleting a policy in use is refused; nothing to schedule by
			}
			if err := refreshHealth(tx, now, p, policy); err != nil {
				return err
			}
			busy, err := replicationBusy(tx, p.ID)
			if err != nil {
				return err
			}
			if busy || (p.NextRetryAt != nil && p.NextRetryAt.After(now)) {
				continue
			}
			if p.NextRetryAt == nil && p.LastCycleAt != nil && now.Sub(*p.LastCycleAt) < time.Duration(policy.CopyFrequencySeconds)*time.Second {
				continue
			}
			last, payload, err := lastReplication(tx, p.ID)
			if err != nil {
				return err
			}
			payload.PointID, payload.RetentionHours = NewID(prefixRecoveryPoint), policy.RetentionHours
			payload.AppConsistent = false
			payload.ResyncThresholdPercent = ResyncThresholdPercent
			payload.BandwidthMbps = BandwidthAt(policy, now, s.loc())
			if policy.AppConsistentFrequencyHours > 0 {
				var lastApp RecoveryPoint
				err := tx.Where("protection_id = ? AND consistency = ?", p.ID, ConsistencyApp).Order("time DESC").First(&lastApp).Error
				switch {
				case errors.Is(err, gorm.ErrRecordNotFound):
					payload.AppConsistent = true
				case err != nil:
					return err
				default:
					payload.AppConsistent = now.Sub(lastApp.Time) >= time.Duration(policy.AppConsistentFrequencyHours)*time.Hour
				}
			}
			b, _ := json.Marshal(payload)
			t := Task{ID: NewID(prefixTask), HostID: last.HostID, ProtectionID: p.ID, Kind: agentproto.TaskReplicate, Payload: string(b), State: TaskQueued}
			if err := tx.Create(&t).Error; err != nil {
				return err
			}
			queued = append(queued, t)
		}
		resyncs, err := s.startWindowResyncs(tx, now, policies)
		queued = append(queued, resyncs...)
		return err
	})
	return queued, err
}

// ResyncThresholdPercent is the share of a disk whose changes, pending at
// a scheduled cycle, make the VM need a resynchronization instead (the
// reference's 50 %): so much is better sent in the off-hours window.
const ResyncThresholdPercent = 50

// startWindowResyncs starts the resync of every VM that needs one and whose
// policy's resync window is open now, unless a task of it is running.
func (s *Store) startWindowResyncs(tx *gorm.DB, now time.Time, policies map[string]Policy) ([]Task, error) {
	var ps []Protection
	if err := tx.Where("state = ? AND health <> ?", StateResyncRequired, HealthCritical).Find(&ps).Error; err != nil {
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
		var vm VM
		if err := tx.First(&vm, "id = ?", p.VMID).Error; err != nil {
			return nil, err
		}
		job, err := s.startResync(tx, now, SystemActor, p, vm, "started in the policy's resync window")
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
	if CheckTransition(p.State, StateResyncRequired) != nil {
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
	reasons, _ := json.Marshal([]string{reason})
	return tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"state": StateResyncRequired,
		"health": HealthWarning, "health_reasons": string(reasons), "next_retry_at": nil,
		"last_error_code": code, "last_error_message": truncate(why, 2000)}).Error
}

// refreshHealth keeps a protected VM's stored health in step with its RPO:
// Warning while the newest point is older than twice the copy frequency
// (with the last error, if a cycle failed), Normal again once it is not.
// Critical is left alone: only an administrator's fix clears it.
func refreshHealth(tx *gorm.DB, now time.Time, p Protection, policy Policy) error {
	if p.Health == HealthCritical {
		return nil
	}
	var rpo time.Duration
	if p.LastRecoveryPointAt != nil {
		rpo = now.Sub(*p.LastRecoveryPointAt)
	}
	recoverable := ""
	if p.LastErrorCode != "" {
		recoverable = fmt.Sprintf("the last replication cycle failed (%s): %s", p.LastErrorCode, p.LastErrorMessage)
	}
	h := AssessHealth(rpo, p.LastRecoveryPointAt != nil, time.Duration(policy.CopyFrequencySeconds)*time.Second, "", recoverable)
	reasons, _ := json.Marshal(append([]string{}, h.Reasons...))
	if h.Health == p.Health && string(reasons) == p.HealthReasons {
		return nil
	}
	if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"health": h.Health, "health_reasons": string(reasons)}).Error; err != nil {
		return err
	}
	freq := time.Duration(policy.CopyFrequencySeconds) * time.Second
	if p.LastRecoveryPointAt != nil && rpo > 2*freq {
		return vmAlert(tx, p.ID, AlertRPOExceeded, HealthWarning, fmt.Sprintf("the newest recovery point is %s old, more than twice the copy frequency (%s)",
			rpo.Truncate(time.Second), freq))
	}
	return resolveAlerts(tx, now, p.VMID, AlertRPOExceeded)
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

// JobVerifyPoint is the job that reads a recovery point back from storage.
const JobVerifyPoint = "Verify recovery point"

// StartVerify starts reading a recovery point back on the VM's host and
// checking every block against its recorded hash.
func (s *Store) StartVerify(ctx context.Context, a Actor, vmID, pointID string) (*Job, error) {
	now := s.Now()
	var job Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var p Protection
		if err := tx.First(&p, "vm_id = ?", vmID).Error; err != nil {
			return err
		}
		var point RecoveryPoint
		if err := tx.First(&point, "id = ? AND protection_id = ?", pointID, p.ID).Error; err != nil {
			return err
		}
		last, payload, err := lastReplication(tx, p.ID)
		if err != nil {
			return err
		}
		payload.PointID = point.ID
		b, _ := json.Marshal(payload)
		var vm VM
		if err := tx.First(&vm, "id = ?", vmID).Error; err != nil {
			return err
		}
		created, err := createOneStepJob(tx, now, a, Job{Type: JobVerifyPoint, TargetKind: "vm", TargetID: vm.ID, TargetName: vm.Name},
			"Read the point back and check its blocks", Task{HostID: last.HostID, ProtectionID: p.ID, Kind: agentproto.TaskVerify, Payload: string(b)})
		if err != nil {
			return err
		}
		job = *created
		return s.audit(tx, a, "recovery_point.verify", "vm", vm.ID, vm.Name, map[string]string{"point": point.ID})
	})
	if err != nil {
		return nil, err
	}
	return &job, nil
}

// verifyOutcome turns a verify result with mismatches into a failure that
// says where, and marks the VM for resynchronization.
func (s *Store) verifyOutcome(tx *gorm.DB, now time.Time, t *Task, o TaskOutcome) (TaskOutcome, error) {
	var r agentproto.VerifyResult
	if err := json.Unmarshal([]byte(o.Result), &r); err != nil || len(r.Mismatches) == 0 {
		return o, nil
	}
	where := ""
	for i, m := range r.Mismatches {
		if i == 5 {
			where += fmt.Sprintf(" and %d more", len(r.Mismatches)-5)
			break
		}
		where += fmt.Sprintf(" disk %s at offset %d;", m.Disk, m.Offset)
	}
	o.ErrorCode, o.Recoverable = "replica_mismatch", false
	o.Message = fmt.Sprintf("%d of %d blocks of the recovery point differ from their recorded hashes:%s the storage changed them; resynchronize the VM", len(r.Mismatches), r.BlocksChecked, where)
	var p Protection
	if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
		return o, err
	}
	return o, s.markResyncRequired(tx, now, p, o.ErrorCode, o.Message)
}

// JobResync is the job that repairs a replica.
const JobResync = "Resynchronize"

// StartResync resynchronizes a protected VM now: the replica is checked
// against its recorded hashes and every block that differs from the source
// is sent, ending with a new recovery point.
func (s *Store) StartResync(ctx context.Context, a Actor, vmID string) (*Job, error) {
	now := s.Now()
	var job Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var p Protection
		if err := tx.First(&p, "vm_id = ?", vmID).Error; err != nil {
			return err
		}
		if p.State != StateProtected && p.State != StateResyncRequired {
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf("a VM in state %s cannot be resynchronized; wait for it to be Protected", p.State)}
		}
		busy, err := replicationBusy(tx, p.ID)
		if err != nil {
			return err
		}
		if busy {
			return &ConflictError{Code: "replication_busy", Message: "a replication task of this VM is running; try again when it ends"}
		}
		var vm VM
		if err := tx.First(&vm, "id = ?", vmID).Error; err != nil {
			return err
		}
		created, err := s.startResync(tx, now, a, p, vm, "started by "+a.Username)
		if err != nil {
			return err
		}
		job = *created
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &job, nil
}

// startResync creates the Resynchronize job of a protection and moves it
// to Resynchronizing.
func (s *Store) startResync(tx *gorm.DB, now time.Time, a Actor, p Protection, vm VM, why string) (*Job, error) {
	last, payload, err := lastReplication(tx, p.ID)
	if err != nil {
		return nil, err
	}
	var policy Policy
	if err := tx.First(&policy, "id = ?", p.PolicyID).Error; err != nil {
		return nil, err
	}
	payload.PointID, payload.AppConsistent, payload.BandwidthMbps = NewID(prefixRecoveryPoint), false, BandwidthAt(policy, now, s.loc())
	payload.ResyncThresholdPercent = 0 // a resync sends whatever differs
	// Reading the replica back finds blocks the storage changed. On a
	// directory it is a local read; on Azure it downloads the replica, so
	// only when a verify found such blocks.
	payload.CheckReplica = payload.Target.Kind == TargetDirectory || p.LastErrorCode == "replica_mismatch"
	b, _ := json.Marshal(payload)
	created, err := createOneStepJob(tx, now, a, Job{Type: JobResync, TargetKind: "vm", TargetID: vm.ID, TargetName: vm.Name},
		"Compare block hashes and send the blocks that differ", Task{HostID: last.HostID, ProtectionID: p.ID, Kind: agentproto.TaskResync, Payload: string(b)})
	if err != nil {
		return nil, err
	}
	if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Update("state", StateResynchronizing).Error; err != nil {
		return nil, err
	}
	return created, s.audit(tx, a, "protection.resync", "vm", vm.ID, vm.Name, map[string]string{"why": why})
}

// replicationBusy says whether a task of the protection is waiting, queued
// or running: a new cycle or resync must not start beside it.
func replicationBusy(tx *gorm.DB, protectionID string) (bool, error) {
	var n int64
	err := tx.Model(&Task{}).Where("protection_id = ? AND state IN ?", protectionID, []string{TaskWaiting, TaskQueued, TaskLeased}).Count(&n).Error
	return n > 0, err
}

// lastReplication is the protection's newest replication task and its
// payload: the template for the next cycle, verify or resync.
func lastReplication(tx *gorm.DB, protectionID string) (Task, agentproto.ReplicationPayload, error) {
	var last Task
	var payload agentproto.ReplicationPayload
	if err := tx.Where("protection_id = ? AND kind = ?", protectionID, agentproto.TaskReplicate).Order("id DESC").First(&last).Error; err != nil {
		return last, payload, err
	}
	if err := json.Unmarshal([]byte(last.Payload), &payload); err != nil {
		return last, payload, err
	}
	// Sizes from the replica records, which follow a disk that grew.
	var disks []ReplicaDisk
	if err := tx.Where("protection_id = ?", protectionID).Find(&disks).Error; err != nil {
		return last, payload, err
	}
	for i, d := range payload.Disks {
		for _, rd := range disks {
			if rd.Name == d.ReplicaID && rd.SizeBytes > d.SizeBytes {
				payload.Disks[i].SizeBytes = rd.SizeBytes
			}
		}
	}
	return last, payload, nil
}
