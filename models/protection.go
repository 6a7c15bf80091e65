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
		if len(existing) > 0 && enabling(existing[0].State) {
			created, err := s.retryEnable(tx, now, a, vm, host, existing[0], policy, target)
			if err != nil {
				return err
			}
			job = *created
			return nil
		}
		if len(existing) > 0 && existing[0].State == StateDisablingProtection {
			return &ConflictError{Code: "already_protected", Message: "the VM's replica data is being deleted; wait for its Disable protection job to end (or disable again, keeping the data) before protecting it again"}
		}
		if len(existing) > 0 {
			return &ConflictError{Code: "already_protected", Message: "the VM is already protected; disable its protection first to change policy or target"}
		}
		// After a re-protect another VM (the recovered one) writes this
		// VM's replicas: a new protection of it would share them.
		var reprotected []Protection
		if err := tx.Where("home_vm_id = ? OR replica_key = ?", vm.ID, vm.ID).Limit(1).Find(&reprotected).Error; err != nil {
			return err
		}
		if len(reprotected) > 0 {
			var owner VM
			tx.First(&owner, "id = ?", reprotected[0].VMID)
			return &ConflictError{Code: "already_protected", Message: fmt.Sprintf(
				"the VM's replicas are replicated from VM %s since a failover; fail back to this VM and re-protect, or disable that protection first", owner.Name)}
		}
		// The replicas are named by the vault's VM id: VMs of one name on
		// two hosts never share them.
		if err := checkLocationFree(tx, target, vm.ID, ""); err != nil {
			return err
		}
		p := Protection{ID: NewID(prefixProtection), VMID: vm.ID, PolicyID: policy.ID, TargetID: target.ID, ReplicaKey: vm.ID,
			State: StateEnablingProtection, Health: HealthNormal}
		if err := tx.Create(&p).Error; err != nil {
			return err
		}
		created, err := startEnableJob(tx, now, s.loc(), a, vm, host, p, policy)
		if err != nil {
			return err
		}
		job = *created
		return s.audit(tx, a, "protection.enable", "vm", vm.ID, vm.Name, map[string]string{"policy": policy.Name, "target": target.Name})
	})
	if err != nil {
		return nil, err
	}
	return &job, nil
}

// startEnableJob records the protection's replica disks (one per disk the
// VM has now) and starts its "Enable protection" job: prerequisites check,
// create replication, initial replication, finalize.
func startEnableJob(tx *gorm.DB, now time.Time, loc *time.Location, a Actor, vm VM, host Host, p Protection, policy Policy) (*Job, error) {
	for _, d := range vm.Disks {
		rd := ReplicaDisk{ID: NewID(prefixReplicaDisk), ProtectionID: p.ID, DiskID: d.ID, Name: d.ID, SourcePath: d.Path, SizeBytes: d.SizeBytes}
		if err := tx.Create(&rd).Error; err != nil {
			return nil, err
		}
	}
	w, err := loadWork(tx, p.ID)
	if err != nil {
		return nil, err
	}
	payload := w.Payload
	payload.MinFreeBytes, payload.BandwidthMbps = 1<<30, BandwidthAt(policy, now, loc)
	if payload.Target.Kind == TargetDirectory {
		if payload.Target.InUse, err = targetInUseBy(tx, p.TargetID, p.ID); err != nil {
			return nil, err
		}
	}
	job := Job{ID: NewID(prefixJob), Type: JobEnableProtection, State: JobInProgress, TargetKind: "vm", TargetID: vm.ID,
		TargetName: vm.Name, CreatedBy: a.Username, StartedAt: &now}
	if err := tx.Omit("Steps").Create(&job).Error; err != nil {
		return nil, err
	}
	kinds := []string{agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica, agentproto.TaskReplicate, ""}
	for i, name := range []string{stepPrerequisites, stepCreate, stepInitial, stepFinalize} {
		step := JobStep{ID: NewID(prefixJobStep), JobID: job.ID, Seq: i + 1, Name: name, State: JobNotStarted}
		if err := tx.Create(&step).Error; err != nil {
			return nil, err
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
			return nil, err
		}
	}
	return &job, nil
}

// retryEnable runs enabling protection again for a VM whose Enable
// protection job ended without protecting it (failed or cancelled): the
// VM would otherwise sit in EnablingProtection, Critical, with no way on
// but disabling first. The same target keeps the replica made so far (the
// initial copy compares what is there); another target is taken only if
// nothing was written to the first one yet, since the vault will not
// leave a partial replica behind unasked.
func (s *Store) retryEnable(tx *gorm.DB, now time.Time, a Actor, vm VM, host Host, p Protection, policy Policy, target Target) (*Job, error) {
	var running []Task
	if err := tx.Where("protection_id = ? AND state IN ?", p.ID, []string{TaskWaiting, TaskQueued, TaskLeased}).Limit(1).Find(&running).Error; err != nil {
		return nil, err
	}
	if len(running) > 0 {
		return nil, &ConflictError{Code: "already_protected", Message: fmt.Sprintf(
			"protection is being enabled (job %s is running); wait for it to end, or cancel it, then enable again", running[0].JobID)}
	}
	if target.ID != p.TargetID {
		var wrote []Task
		if err := tx.Where("protection_id = ? AND kind IN ? AND attempts > 0", p.ID,
			[]string{agentproto.TaskCreateReplica, agentproto.TaskReplicate}).Limit(1).Find(&wrote).Error; err != nil {
			return nil, err
		}
		if len(wrote) > 0 {
			var old Target
			tx.First(&old, "id = ?", p.TargetID)
			return nil, &ConflictError{Code: "partial_replica", Message: fmt.Sprintf(
				"enabling protection had begun writing this VM's replica to target %s; retry with that target, or disable protection (choosing whether to delete the partial replica) and then enable it to target %s", old.Name, target.Name)}
		}
		if err := checkLocationFree(tx, target, p.replicaKey(), p.ID); err != nil {
			return nil, err
		}
	}
	if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"policy_id": policy.ID, "target_id": target.ID,
		"state": StateEnablingProtection, "health": HealthNormal, "health_reasons": "[]", "last_error_code": "", "last_error_message": "", "next_retry_at": nil,
		"first_failure_at": nil, "failures": 0}).Error; err != nil {
		return nil, err
	}
	// The VM's disks may have changed since: the replica disks are made
	// again from what it has now (no point holds them yet).
	if err := tx.Where("protection_id = ?", p.ID).Delete(&ReplicaDisk{}).Error; err != nil {
		return nil, err
	}
	if err := resolveAlerts(tx, now, vm.ID, AlertProtectionCritical); err != nil {
		return nil, err
	}
	p.PolicyID, p.TargetID = policy.ID, target.ID
	return startEnableJob(tx, now, s.loc(), a, vm, host, p, policy)
}

// enabling: the protection's Enable protection job has not ended it yet
// (before or during the initial copy).
func enabling(state string) bool {
	return state == StateEnablingProtection || state == StateInitialReplication
}

// EnableStalled says whether a VM's protection is stuck enabling: its
// Enable protection job ended (failed or cancelled) and nothing of it
// runs, so enabling again (retry, or another policy or target) is the way
// on.
func (s *Store) EnableStalled(ctx context.Context, vmID string) (bool, error) {
	var p Protection
	if err := s.db.WithContext(ctx).First(&p, "vm_id = ?", vmID).Error; err != nil {
		return false, err
	}
	if !enabling(p.State) {
		return false, nil
	}
	var n int64
	err := s.db.WithContext(ctx).Model(&Task{}).Where("protection_id = ? AND state IN ?", p.ID, []string{TaskWaiting, TaskQueued, TaskLeased}).Count(&n).Error
	return n == 0, err
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
			if err := finishTask(tx, now, &tasks[i], TaskCancelled, "", agentproto.CodeProtectionDisabled, "protection was disabled", ""); err != nil {
				return err
			}
		}
		if !deleteData {
			if err := forgetProtection(tx, now, p.ID); err != nil {
				return err
			}
			return s.audit(tx, a, "protection.disable", "vm", vmID, "", map[string]string{"replica_data": "kept on the target"})
		}
		w, err := loadWork(tx, p.ID)
		if err != nil {
			return err
		}
		vm := w.VM
		hostID, err := deletingHost(tx, w)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(w.Payload)
		if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"state": StateDisablingProtection,
			"next_retry_at": nil}).Error; err != nil {
			return err
		}
		created, err := createOneStepJob(tx, now, a, Job{Type: JobDisableProtection, TargetKind: "vm", TargetID: vm.ID, TargetName: vm.Name},
			"Delete replica data", Task{HostID: hostID, ProtectionID: p.ID, Kind: agentproto.TaskDeleteReplica, Payload: string(b)})
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

// ReplicatedFrom is the protection that, since a re-protect, replicates
// another VM (the failed-over one) into this VM's replicas, or ErrNotFound.
func (s *Store) ReplicatedFrom(ctx context.Context, vmID string) (*Protection, error) {
	var p Protection
	if err := s.db.WithContext(ctx).First(&p, "home_vm_id = ?", vmID).Error; err != nil {
		return nil, translateError(err)
	}
	return &p, nil
}

// ListReplicaDisks lists the replicas of a VM's disks, those of disks
// the VM no longer has (RemovedAt set) included, or none if it is not
// protected.
func (s *Store) ListReplicaDisks(ctx context.Context, vmID string) ([]ReplicaDisk, error) {
	p, err := s.GetProtection(ctx, vmID)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var out []ReplicaDisk
	err = s.db.WithContext(ctx).Where("protection_id = ?", p.ID).Order("source_path").Find(&out).Error
	return out, translateError(err)
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
	if err := setState(tx, p.ID, StateProtected); err != nil {
		return err
	}
	if err := tx.Model(&JobStep{}).Where("id = ?", step.ID).Updates(map[string]any{"state": JobSucceeded, "progress": 100,
		"started_at": now, "ended_at": now, "message": "protected: replication runs at the policy's copy frequency"}).Error; err != nil {
		return err
	}
	return settleJob(tx, now, jobID, "", "", "")
}

// deletingHost is the host that deletes a protection's replica data: the
// VM's, or, when that host was removed, another host of its site that
// reaches the same target.
func deletingHost(tx *gorm.DB, w *protectionWork) (string, error) {
	if w.Host.RevokedAt == nil {
		return w.Host.ID, nil
	}
	var others []Host
	if err := tx.Where("site_id = ? AND revoked_at IS NULL", w.Host.SiteID).Order("state, id").Find(&others).Error; err != nil {
		return "", err
	}
	for _, h := range others {
		if h.State == HostConnected {
			return h.ID, nil
		}
	}
	if len(others) > 0 {
		return others[0].ID, nil
	}
	where := replicaLocation(w.Target, w.Protection.ReplicaKey)
	return "", &ConflictError{Code: "host_removed", Message: fmt.Sprintf(
		"the VM's host %s was removed and no other host of its site is left to delete the replica data; disable protection keeping the data, then delete %s on the storage yourself", w.Host.Name, where)}
}
