package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// StartReprotect protects a committed failover's VM, on the recovery
// host, into the same target (DESIGN.md §5a): the protection now
// replicates that VM, its disks matched by name to the replicas, and its
// first cycle compares their blocks' hashes with the replica's, so only
// what changed since the point travels. After a failback it does the same
// the other way, and the VM first protected is the one replicated again.
func (s *Store) StartReprotect(ctx context.Context, a Actor, vmID string) (*Job, error) {
	now := s.Now()
	var job *Job
	err := s.tx(ctx, func(tx *gorm.DB) error {
		w, err := protectionOf(tx, vmID)
		if err != nil {
			return err
		}
		p := w.Protection
		if p.State != StateCommitted {
			return &ConflictError{Code: "invalid_protection_state", Message: fmt.Sprintf(
				"re-protect follows a committed failover; the VM is %s", p.State)}
		}
		if err := recoveryBusy(tx, vmID); err != nil {
			return err
		}
		var rvm VM
		if p.FailoverHostID == "" {
			// A re-protect that failed after it moved the protection: the
			// VM is the one protected now.
			err = tx.Preload("Disks").First(&rvm, "id = ?", p.VMID).Error
		} else {
			err = tx.Preload("Disks").Where("host_id = ? AND external_id = ? AND missing_since IS NULL", p.FailoverHostID, p.FailoverVMID).First(&rvm).Error
		}
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return &ConflictError{Code: "recovered_vm_not_listed", Message: fmt.Sprintf(
				"the recovery host has not listed the recovered VM (%s) yet; wait for its next inventory, a minute at most, and try again", p.FailoverVMID)}
		}
		if err != nil {
			return err
		}
		var host Host
		if err := tx.First(&host, "id = ?", rvm.HostID).Error; err != nil {
			return err
		}
		if !hostUp(host) {
			return &ConflictError{Code: "recovery_host_disconnected", Message: fmt.Sprintf("host %s is not connected; start its agent, then re-protect", host.Name)}
		}
		var other int64
		if err := tx.Model(&Protection{}).Where("vm_id = ? AND id <> ?", rvm.ID, p.ID).Count(&other).Error; err != nil {
			return err
		}
		if other > 0 {
			return &ConflictError{Code: "already_protected", Message: fmt.Sprintf("VM %s on host %s has a protection of its own; disable it first", rvm.Name, host.Name)}
		}
		if len(rvm.Disks) == 0 {
			return &ConflictError{Code: "vm_has_no_disks", Message: "the recovery host reports no disk for the recovered VM"}
		}
		if err := matchReplicas(tx, now, p.ID, rvm); err != nil {
			return err
		}
		home := p.HomeVMID
		switch {
		case rvm.ID == p.VMID:
			// unchanged: the protection was moved already
		case home == "":
			home = p.VMID
		case home == rvm.ID:
			home = "" // back where it started
		}
		from := w.VM
		if err := tx.Model(&Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"vm_id": rvm.ID, "home_vm_id": home,
			"failover_host_id": "", "failover_vm_id": "", "failover_point_id": "", "failover_kind": "",
			"failed_over_at": nil, "committed_at": nil, "next_retry_at": nil, "first_failure_at": nil, "failures": 0,
			// A pause was of the old direction's replication; re-protecting
			// asks for the new one to run.
			"paused_at": nil, "paused_by": ""}).Error; err != nil {
			return err
		}
		if err := setState(tx, p.ID, StateReprotecting); err != nil {
			return err
		}
		w2, err := loadWork(tx, p.ID)
		if err != nil {
			return err
		}
		pl := w2.Payload
		pl.PointID, pl.BandwidthMbps = NewID(prefixRecoveryPoint), BandwidthAt(w2.Policy, now, s.loc())
		b, _ := json.Marshal(pl)
		job, err = createJob(tx, now, a, Job{Type: JobReprotect, TargetKind: "vm", TargetID: rvm.ID, TargetName: rvm.Name}, []jobStepSpec{
			{Name: fmt.Sprintf("Replicate %s from host %s into the replicas of %s: only the blocks that differ", rvm.Name, host.Name, from.Name),
				Task: &Task{HostID: host.ID, ProtectionID: p.ID, Kind: agentproto.TaskReplicate, Payload: string(b)}},
		})
		if err != nil {
			return err
		}
		return s.audit(tx, a, "protection.reprotect", "vm", rvm.ID, rvm.Name, map[string]string{"from_vm": from.ID, "job": job.ID})
	})
	return job, err
}

// matchReplicas gives each disk of vm the replica of the disk of the same
// file name (a recovered VM's disks are named as the source's were); a
// disk without one gets a new replica (its first cycle copies it), and a
// replica without a disk is marked removed, kept while points hold it.
func matchReplicas(tx *gorm.DB, now time.Time, protectionID string, vm VM) error {
	var replicas []ReplicaDisk
	if err := tx.Where("protection_id = ? AND removed_at IS NULL", protectionID).Find(&replicas).Error; err != nil {
		return err
	}
	base := func(path string) string { return strings.TrimSuffix(filepath.Base(path), ".img") }
	byName := map[string]*ReplicaDisk{}
	for i := range replicas {
		byName[base(replicas[i].SourcePath)] = &replicas[i]
	}
	used := map[string]bool{}
	for _, d := range vm.Disks {
		rd, ok := byName[base(d.Path)]
		if ok && !used[rd.ID] {
			used[rd.ID] = true
			if err := tx.Model(&ReplicaDisk{}).Where("id = ?", rd.ID).Updates(map[string]any{"disk_id": d.ID, "source_path": d.Path,
				"size_bytes": max(rd.SizeBytes, d.SizeBytes)}).Error; err != nil {
				return err
			}
			continue
		}
		nd := ReplicaDisk{ID: NewID(prefixReplicaDisk), ProtectionID: protectionID, DiskID: d.ID, Name: d.ID, SourcePath: d.Path, SizeBytes: d.SizeBytes}
		if err := tx.Create(&nd).Error; err != nil {
			return err
		}
	}
	for _, rd := range replicas {
		if !used[rd.ID] {
			if err := tx.Model(&ReplicaDisk{}).Where("id = ?", rd.ID).Update("removed_at", now).Error; err != nil {
				return err
			}
		}
	}
	return nil
}

// reprotected ends a re-protect: the cycle made the VM's first point in
// this direction; it is Protected, its cycles run at the policy's
// frequency.
func reprotected(s *Store, tx *gorm.DB, now time.Time, t *Task, result string) error {
	return setStateFrom(tx, t.ProtectionID, StateReprotecting, StateProtected)
}

// reprotectFailed leaves the failover committed; the job can be
// restarted.
func reprotectFailed(_ *Store, tx *gorm.DB, _ time.Time, t *Task, o TaskOutcome) error {
	if err := setStateFrom(tx, t.ProtectionID, StateReprotecting, StateCommitted); err != nil {
		return err
	}
	if o.ErrorCode == agentproto.CodeCancelled {
		return nil
	}
	reason := fmt.Sprintf("re-protect failed (%s): %s; fix the cause, then restart the Re-protect job", o.ErrorCode, o.Message)
	return setHealth(tx, t.ProtectionID, HealthWarning, []string{reason},
		map[string]any{"last_error_code": o.ErrorCode, "last_error_message": truncate(o.Message, 2000)})
}
