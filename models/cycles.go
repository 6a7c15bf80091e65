package models

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// recordCycle records a successful replication cycle (initial, scheduled
// or a resync): its recovery point, labelled as the agent's capture was,
// the points retention removed, the disks it copied for the first time,
// the removed disks no point holds any more, and a clean slate for the
// retry schedule.
func recordCycle(s *Store, tx *gorm.DB, now time.Time, t *Task, result string) error {
	var r agentproto.ReplicateResult
	if err := json.Unmarshal([]byte(result), &r); err != nil || r.PointID == "" {
		return fmt.Errorf("the agent's replication result cannot be read: %v", err)
	}
	var pl agentproto.ReplicationPayload
	payloadOK := json.Unmarshal([]byte(t.Payload), &pl) == nil
	point := RecoveryPoint{ID: r.PointID, ProtectionID: t.ProtectionID, Time: r.Time.UTC(), ReadStartedAt: utcPtr(r.ReadStartedAt),
		Consistency: truthfulConsistency(r.Consistency), Capture: truncate(r.Capture, 20), CaptureNote: truncate(r.CaptureNote, 1000), SizeBytes: r.SizeBytes,
		AppAsked: pl.AppConsistent}
	if err := tx.Create(&point).Error; err != nil {
		return err
	}
	if len(r.Pruned) > 0 {
		if err := tx.Where("protection_id = ? AND id IN ?", t.ProtectionID, r.Pruned).Delete(&RecoveryPoint{}).Error; err != nil {
			return err
		}
	}
	if len(r.Points) > 0 && slices.Contains(r.Points, point.ID) {
		// The target's own list: a point it no longer has (pruned by a run
		// whose result never arrived) must not be offered for recovery.
		if err := tx.Where("protection_id = ? AND id NOT IN ?", t.ProtectionID, r.Points).Delete(&RecoveryPoint{}).Error; err != nil {
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
	// Every disk the cycle was given is copied now, whether or not the
	// agent listed its size.
	if payloadOK {
		var names []string
		for _, d := range pl.Disks {
			names = append(names, d.ReplicaID)
		}
		if len(names) > 0 {
			if err := tx.Model(&ReplicaDisk{}).Where("protection_id = ? AND name IN ? AND copied_at IS NULL", t.ProtectionID, names).
				Update("copied_at", now).Error; err != nil {
				return err
			}
		}
	}
	if err := forgetRetiredDisks(tx, t.ProtectionID); err != nil {
		return err
	}
	var p Protection
	if err := tx.First(&p, "id = ?", t.ProtectionID).Error; err != nil {
		return err
	}
	if err := resolveAlerts(tx, now, p.VMID, AlertProtectionCritical, AlertRPOExceeded); err != nil {
		return err
	}
	row := historyRow(p.VMID, now, point.Time, p.LastRecoveryPointAt, r.BytesSent, r.TransferSeconds)
	// A whole copy (the first, a move's seed, a re-protect's first cycle:
	// every disk new) or a resync is not the VM's churn.
	allNew := payloadOK && len(pl.Disks) > 0
	for _, d := range pl.Disks {
		allNew = allNew && d.New
	}
	row.Baseline = p.LastRecoveryPointAt == nil || t.Kind == agentproto.TaskResync || allNew
	if err := tx.Create(&row).Error; err != nil {
		return err
	}
	if err := tx.Model(&Protection{}).Where("id = ?", t.ProtectionID).Updates(map[string]any{
		"last_recovery_point_at": point.Time, "last_cycle_at": now, "bytes_sent": gorm.Expr("bytes_sent + ?", r.BytesSent),
		"last_cycle_bytes": r.BytesSent, "last_cycle_seconds": r.TransferSeconds,
		"failures": 0, "first_failure_at": nil, "next_retry_at": nil, "last_error_code": "", "last_error_message": "",
	}).Error; err != nil {
		return err
	}
	// The protection as just updated (the row is ours in this transaction).
	p.LastRecoveryPointAt, p.LastCycleAt = &point.Time, &now
	p.Failures, p.FirstFailureAt, p.NextRetryAt, p.LastErrorCode, p.LastErrorMessage = 0, nil, nil, "", ""
	var policy Policy
	if err := tx.First(&policy, "id = ?", p.PolicyID).Error; err != nil {
		return err
	}
	h, err := assessProtection(tx, now, p, policy)
	if err != nil {
		return err
	}
	if reasons, _ := json.Marshal(append([]string{}, h.Reasons...)); h.Health == p.Health && string(reasons) == p.HealthReasons {
		return nil // as it was: most cycles of a healthy VM
	}
	return setHealth(tx, p.ID, h.Health, h.Reasons, nil)
}

// truthfulConsistency maps an agent's label to the vault's; anything it
// does not know is inconsistent, never more.
func truthfulConsistency(label string) string {
	switch label {
	case ConsistencyApp, ConsistencyCrash:
		return label
	}
	return ConsistencyInconsistent
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// forgetRetiredDisks drops the records of removed disks that no recovery
// point holds any more (every point left was made after the removal).
func forgetRetiredDisks(tx *gorm.DB, protectionID string) error {
	// One statement: a protection without points keeps them (the minimum
	// is NULL, and so is the comparison).
	return tx.Where("protection_id = ? AND removed_at IS NOT NULL AND removed_at < (SELECT MIN(time) FROM recovery_points WHERE protection_id = ?)",
		protectionID, protectionID).Delete(&ReplicaDisk{}).Error
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
	health, reason := HealthWarning, fmt.Sprintf("replication failed %d time(s) (%s): %s", failures, o.ErrorCode, o.Message)
	updates := map[string]any{"failures": failures, "first_failure_at": first, "last_cycle_at": now,
		"last_error_code": o.ErrorCode, "last_error_message": truncate(o.Message, 2000)}
	if o.Recoverable {
		next := NextRetry(first, failures)
		updates["next_retry_at"] = next
		reason += fmt.Sprintf("; the next attempt is at %s", next.UTC().Format(time.RFC3339))
	} else {
		health, reason = HealthCritical, "replication stopped ("+o.ErrorCode+"): "+o.Message+"; fix the cause, then disable and enable protection again"
		updates["next_retry_at"] = nil
	}
	if err := setHealth(tx, p.ID, health, []string{reason}, updates); err != nil {
		return err
	}
	if health == HealthCritical {
		return vmAlert(tx, p.ID, AlertProtectionCritical, HealthCritical, fmt.Sprintf("%s (%s)", reason, o.ErrorCode))
	}
	return nil
}

// assessProtection is a protected VM's health now: the RPO against the
// copy frequency, a failing cycle, disks removed from the VM, and
// recovery points that are not crash-consistent. Each reason ends with its
// code from the error table.
func assessProtection(tx *gorm.DB, now time.Time, p Protection, policy Policy) (HealthStatus, error) {
	var rpo time.Duration
	if p.LastRecoveryPointAt != nil {
		rpo = now.Sub(*p.LastRecoveryPointAt)
	}
	recoverable := ""
	if p.LastErrorCode != "" {
		recoverable = fmt.Sprintf("the last replication cycle failed (%s): %s", p.LastErrorCode, p.LastErrorMessage)
		if p.NextRetryAt != nil {
			recoverable += fmt.Sprintf("; the next attempt is at %s", p.NextRetryAt.UTC().Format(time.RFC3339))
		}
	}
	h := AssessHealth(rpo, p.LastRecoveryPointAt != nil, time.Duration(policy.CopyFrequencySeconds)*time.Second, "", recoverable)
	warn := func(reason string) {
		if h.Health == HealthNormal {
			h.Health = HealthWarning
		}
		h.Reasons = append(h.Reasons, reason)
	}
	if p.PausedAt != nil {
		warn(pausedReason(p))
	}
	// A host that went silent runs no cycle: its VMs may look fine by
	// their RPO for a while, but nothing protects their new writes.
	var host Host
	err := tx.Model(&Host{}).Joins("JOIN vms ON vms.host_id = hosts.id").Where("vms.id = ?", p.VMID).Select("hosts.*").First(&host).Error
	switch {
	case err == nil && host.RebuiltAt != nil:
		warn(awaitingHostReason(host.Name)) // known from replica storage only (rebuild.go)
	case err == nil && host.State == HostDisconnected:
		since := "it connected"
		if host.LastHeartbeat != nil {
			since = host.LastHeartbeat.UTC().Format(time.RFC3339)
		}
		warn(fmt.Sprintf("its host %s is disconnected (no heartbeat since %s): no cycle runs until its agent is back; the recovery points made so far can still be recovered (%s)",
			host.Name, since, agentproto.CodeHostDisconnected))
	case err != nil && err != gorm.ErrRecordNotFound:
		return h, err
	}
	var removed []ReplicaDisk
	if err := tx.Where("protection_id = ? AND removed_at IS NOT NULL", p.ID).Order("source_path").Find(&removed).Error; err != nil {
		return h, err
	}
	for _, rd := range removed {
		warn(fmt.Sprintf("disk %s was removed from the VM at %s and is no longer replicated; the recovery points made before keep it until retention removes them (%s)",
			rd.SourcePath, rd.RemovedAt.UTC().Format(time.RFC3339), agentproto.CodeDiskRemoved))
	}
	// The policy asks for app-consistent points, and the last point made
	// when one was due is not: the host cannot quiesce this VM.
	if policy.AppConsistentFrequencyHours > 0 {
		var asked RecoveryPoint
		err := tx.Where("protection_id = ? AND app_asked = ?", p.ID, true).Order("time DESC").First(&asked).Error
		switch {
		// A VM powered off has nothing in memory to quiesce: its point is
		// as good as an application's own, whatever the agent could do.
		case err == nil && asked.Consistency != ConsistencyApp && asked.Capture != "powered_off":
			why := asked.CaptureNote
			if why == "" {
				why = "the agent did not say why"
			}
			warn(fmt.Sprintf("the policy asks for an app-consistent point every %d h, but the point of %s that was to be one is %s (%s); give the host's agent a --freeze-command (filedisk) or run qemu-guest-agent in the guest (qemu), or turn app-consistent points off in the policy (%s)",
				policy.AppConsistentFrequencyHours, asked.Time.UTC().Format(time.RFC3339), asked.Consistency, why, agentproto.CodeAppConsistencyMissed))
		case err != nil && err != gorm.ErrRecordNotFound:
			return h, err
		}
	}
	var newest RecoveryPoint
	err = tx.Where("protection_id = ?", p.ID).Order("time DESC").First(&newest).Error
	switch {
	case err == nil && newest.Consistency == ConsistencyInconsistent:
		why := newest.CaptureNote
		if why == "" {
			why = "its disks were read while it wrote"
		}
		warn(fmt.Sprintf("the newest recovery point is not crash-consistent (%s); for consistent points power the VM off, keep its disks on XFS or btrfs (reflinks), or give its host's agent a --freeze-command (%s)",
			why, agentproto.CodeInconsistentPoints))
	case err != nil && err != gorm.ErrRecordNotFound:
		return h, err
	}
	return h, nil
}

// refreshHealth keeps a protected VM's stored health in step with its
// state (assessProtection), and raises or resolves the RPO alert.
// Critical is left alone: only an administrator's fix clears it.
func refreshHealth(tx *gorm.DB, now time.Time, p Protection, policy Policy) error {
	if p.Health == HealthCritical {
		return nil
	}
	h, err := assessProtection(tx, now, p, policy)
	if err != nil {
		return err
	}
	reasons, _ := json.Marshal(append([]string{}, h.Reasons...))
	if h.Health == p.Health && string(reasons) == p.HealthReasons {
		return nil // nothing changed: nor did the alerts
	}
	if err := setHealth(tx, p.ID, h.Health, h.Reasons, nil); err != nil {
		return err
	}
	var rpo time.Duration
	if p.LastRecoveryPointAt != nil {
		rpo = now.Sub(*p.LastRecoveryPointAt)
	}
	freq := time.Duration(policy.CopyFrequencySeconds) * time.Second
	if p.LastRecoveryPointAt != nil && rpo > 2*freq {
		return vmAlert(tx, p.ID, AlertRPOExceeded, HealthWarning, fmt.Sprintf("the newest recovery point is %s old, more than twice the copy frequency (%s)",
			rpo.Truncate(time.Second), freq))
	}
	return resolveAlerts(tx, now, p.VMID, AlertRPOExceeded)
}
