package models

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// JobVerifyPoint is the job that reads a recovery point back from storage.
const JobVerifyPoint = "Verify recovery point"

// StartVerify starts reading a recovery point back on the VM's host and
// checking every block against its recorded hash. It runs when no other
// task of the VM runs (LeaseTasks), so it never reads a replica a cycle is
// writing; its failure is its own and never touches replication.
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
		var pending int64
		if err := tx.Model(&Task{}).Where("protection_id = ? AND kind = ? AND state IN ?", p.ID, agentproto.TaskVerify,
			[]string{TaskQueued, TaskLeased}).Count(&pending).Error; err != nil {
			return err
		}
		if pending > 0 {
			return &ConflictError{Code: "replication_busy", Message: "a verify of this VM is waiting or running; start another when it ends (see the Jobs tab)"}
		}
		w, err := loadWork(tx, p.ID)
		if err != nil {
			return err
		}
		payload := w.Payload
		payload.PointID = point.ID
		b, _ := json.Marshal(payload)
		created, err := createOneStepJob(tx, now, a, Job{Type: JobVerifyPoint, TargetKind: "vm", TargetID: w.VM.ID, TargetName: w.VM.Name},
			"Read the point back and check its blocks", Task{HostID: w.VM.HostID, ProtectionID: p.ID, Kind: agentproto.TaskVerify, Payload: string(b)})
		if err != nil {
			return err
		}
		job = *created
		return s.audit(tx, a, "recovery_point.verify", "vm", w.VM.ID, w.VM.Name, map[string]string{"point": point.ID})
	})
	if err != nil {
		return nil, err
	}
	return &job, nil
}

// verified says in the verify job's step which point was checked and how
// much of it: a success says what it proved.
func verified(_ *Store, tx *gorm.DB, _ time.Time, t *Task, result string) error {
	var r agentproto.VerifyResult
	if t.StepID == "" || json.Unmarshal([]byte(result), &r) != nil || r.PointID == "" {
		return nil
	}
	msg := fmt.Sprintf("recovery point %s read back: all %d blocks (%s) match their recorded hashes",
		r.PointID, r.BlocksChecked, agentproto.FormatBytes(r.BlocksChecked*4096))
	var point RecoveryPoint
	if tx.First(&point, "id = ?", r.PointID).Error == nil {
		msg = fmt.Sprintf("%s read back: all %d blocks (%s) match their recorded hashes", describePoint(&point, ""),
			r.BlocksChecked, agentproto.FormatBytes(r.BlocksChecked*4096))
	}
	return tx.Model(&JobStep{}).Where("id = ?", t.StepID).Update("message", msg).Error
}

// verifyOutcome turns a verify result with mismatches into a failure that
// says where, and marks the VM for resynchronization.
func (s *Store) verifyOutcome(tx *gorm.DB, now time.Time, t *Task, o TaskOutcome) (TaskOutcome, error) {
	var r agentproto.VerifyResult
	if err := json.Unmarshal([]byte(o.Result), &r); err != nil || len(r.Mismatches) == 0 {
		return o, nil
	}
	// Disks are named by their file, as Resynchronize and the VM page
	// name them, not by the replica's id.
	var disks []ReplicaDisk
	if err := tx.Where("protection_id = ?", t.ProtectionID).Find(&disks).Error; err != nil {
		return o, err
	}
	fileOf := map[string]string{}
	for _, d := range disks {
		fileOf[d.Name] = filepath.Base(d.SourcePath)
	}
	where := ""
	for i, m := range r.Mismatches {
		if i == 5 {
			where += fmt.Sprintf(" and %d more", len(r.Mismatches)-5)
			break
		}
		name := m.Disk
		if f := fileOf[m.Disk]; f != "" {
			name = f
		}
		where += fmt.Sprintf(" disk %s at offset %d;", name, m.Offset)
	}
	o.ErrorCode, o.Recoverable = agentproto.CodeReplicaMismatch, false
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
		w, err := protectionOf(tx, vmID) // an unprotected VM: not_protected
		if err != nil {
			return err
		}
		p := w.Protection
		if p.PausedAt != nil {
			return &ConflictError{Code: "replication_paused", Message: fmt.Sprintf("replication of VM %s is paused (by %s); resume it first", w.VM.Name, p.PausedBy)}
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
		created, err := s.startResync(tx, now, a, p, "started by "+a.Username)
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
// to Resynchronizing (by way of ResyncRequired, from Protected).
func (s *Store) startResync(tx *gorm.DB, now time.Time, a Actor, p Protection, why string) (*Job, error) {
	w, err := loadWork(tx, p.ID)
	if err != nil {
		return nil, err
	}
	payload := w.Payload
	payload.PointID, payload.BandwidthMbps = NewID(prefixRecoveryPoint), BandwidthAt(w.Policy, now, s.loc())
	payload.ResyncThresholdPercent = 0 // a resync sends whatever differs
	if payload.KeepPoints, err = pointsInUse(tx, p.ID); err != nil {
		return nil, err
	}
	// Reading the replica back finds blocks the storage changed. On a
	// directory it is a local read; on Azure it downloads the replica, so
	// only when a verify found such blocks.
	payload.CheckReplica = payload.Target.Kind == TargetDirectory || p.LastErrorCode == agentproto.CodeReplicaMismatch
	b, _ := json.Marshal(payload)
	created, err := createOneStepJob(tx, now, a, Job{Type: JobResync, TargetKind: "vm", TargetID: w.VM.ID, TargetName: w.VM.Name},
		"Compare block hashes and send the blocks that differ", Task{HostID: w.VM.HostID, ProtectionID: p.ID, Kind: agentproto.TaskResync, Payload: string(b)})
	if err != nil {
		return nil, err
	}
	if err := setState(tx, p.ID, StateResyncRequired); err != nil {
		return nil, err
	}
	if err := setState(tx, p.ID, StateResynchronizing); err != nil {
		return nil, err
	}
	return created, s.audit(tx, a, "protection.resync", "vm", w.VM.ID, w.VM.Name, map[string]string{"why": why})
}
