package models_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/models/storetest"
)

// replicating is a VM whose protection job ran to the end: Protected, with
// its initial point.
func replicating(t *testing.T, h *harness) (models.VMSummary, *models.Host, string) {
	t.Helper()
	vm, host, _ := protectedVM(t, h)
	complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
	complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
	initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
	complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))
	var pl agentproto.ReplicationPayload
	if err := json.Unmarshal([]byte(initial.Payload), &pl); err != nil {
		t.Fatal(err)
	}
	return vm, host, pl.PointID
}

func schedule(t *testing.T, h *harness) []models.Task {
	t.Helper()
	q, err := h.s.ScheduleReplications(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func leaseAll(t *testing.T, h *harness, hostID string) []models.Task {
	t.Helper()
	tasks, err := h.s.LeaseTasks(t.Context(), hostID, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tasks
}

func wantProtection(t *testing.T, h *harness, vmID, state, health string) models.Protection {
	t.Helper()
	p, err := h.s.GetProtection(t.Context(), vmID)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != state || p.Health != health {
		t.Fatalf("protection %s/%s (%s), want %s/%s", p.State, p.Health, p.HealthReasons, state, health)
	}
	return *p
}

func TestAVerifyWaitsForTheCycleAndItsFailuresNeverStopReplication(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, initial := replicating(t, h)
		h.advance(6 * time.Minute)
		if q := schedule(t, h); len(q) != 1 {
			t.Fatalf("scheduled %d", len(q))
		}
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		job, err := h.s.StartVerify(t.Context(), alice, vm.ID, initial)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.s.StartVerify(t.Context(), alice, vm.ID, initial)
		wantConflict(t, err, "replication_busy")
		// The cycle runs: the verify of the same replica waits for it.
		if got := leaseAll(t, h, host.ID); len(got) != 0 {
			t.Fatalf("leased beside a running cycle: %+v", got)
		}
		complete(t, h, host.ID, cycle, cycleResult(cycle, h.clock.T))
		verify := leaseOne(t, h, host.ID, agentproto.TaskVerify)

		// A verify that fails recoverably, again and again, retries on the
		// back-off, alone: cycles go on and the VM never turns Critical.
		cycles := 0
		for i := 1; i <= models.MaxTaskAttempts; i++ {
			complete(t, h, host.ID, verify, models.TaskOutcome{ErrorCode: agentproto.CodeTargetUnavailable, Message: "NAS unreachable", Recoverable: true, Attempt: verify.Attempts})
			got, _ := h.s.GetJob(t.Context(), job.ID)
			if i == models.MaxTaskAttempts {
				if got.State != models.JobFailed {
					t.Fatalf("after %d failures the verify job is %s", i, got.State)
				}
				break
			}
			if got.State != models.JobInProgress || !strings.Contains(got.Steps[0].Message, "NAS unreachable") {
				t.Fatalf("a retrying verify shows %s %q", got.State, got.Steps[0].Message)
			}
			// Cycles go on while the verify waits out its back-off: they
			// and the verify run one after the other, never together.
			h.advance(30 * time.Minute)
			schedule(t, h)
			verify = models.Task{}
			for verify.ID == "" {
				tasks := leaseAll(t, h, host.ID)
				if len(tasks) != 1 {
					t.Fatalf("leased %d tasks of one VM at once", len(tasks))
				}
				if tasks[0].Kind == agentproto.TaskVerify {
					verify = tasks[0]
					continue
				}
				complete(t, h, host.ID, tasks[0], cycleResult(tasks[0], h.clock.T))
				cycles++
			}
			if verify.Attempts != i+1 {
				t.Fatalf("attempt %d, want %d", verify.Attempts, i+1)
			}
		}
		// A cycle the verify made wait runs now; the VM was never Critical.
		for _, c := range leaseAll(t, h, host.ID) {
			complete(t, h, host.ID, c, cycleResult(c, h.clock.T))
			cycles++
		}
		if cycles < models.MaxTaskAttempts-1 {
			t.Fatalf("%d cycles ran beside %d verify attempts", cycles, models.MaxTaskAttempts)
		}
		wantProtection(t, h, vm.ID, models.StateProtected, models.HealthNormal)

		// A point retention pruned: that verify fails, alone.
		job, err = h.s.StartVerify(t.Context(), alice, vm.ID, initial)
		if err != nil {
			t.Fatal(err)
		}
		verify = leaseOne(t, h, host.ID, agentproto.TaskVerify)
		complete(t, h, host.ID, verify, models.TaskOutcome{ErrorCode: agentproto.CodePointNotFound, Message: "point " + initial + " is not on the target"})
		if got, _ := h.s.GetJob(t.Context(), job.ID); got.State != models.JobFailed || got.ErrorCode != agentproto.CodePointNotFound {
			t.Fatalf("verify of a pruned point: %s %s", got.State, got.ErrorCode)
		}
		wantProtection(t, h, vm.ID, models.StateProtected, models.HealthNormal)
		h.advance(6 * time.Minute)
		if q := schedule(t, h); len(q) != 1 {
			t.Fatal("no cycle after a failed verify")
		}
	})
}

func TestAVerifyMismatchLeadsToAResyncThatStartsWhenTheWindowOpens(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, initial := replicating(t, h) // 10:00; window 18:30–06:00
		if _, err := h.s.StartVerify(t.Context(), alice, vm.ID, initial); err != nil {
			t.Fatal(err)
		}
		verify := leaseOne(t, h, host.ID, agentproto.TaskVerify)
		b, _ := json.Marshal(agentproto.VerifyResult{PointID: initial, BlocksChecked: 262144, Mismatches: []agentproto.Mismatch{{Disk: "d0", Offset: 8192}}})
		complete(t, h, host.ID, verify, models.TaskOutcome{Result: string(b)})
		p := wantProtection(t, h, vm.ID, models.StateResyncRequired, models.HealthWarning)
		if !strings.Contains(p.HealthReasons, "18:30") {
			t.Fatalf("reasons %s: the window is not named", p.HealthReasons)
		}
		h.advance(8*time.Hour + 31*time.Minute) // 18:31
		q := schedule(t, h)
		if len(q) != 1 || q[0].Kind != agentproto.TaskResync {
			t.Fatalf("in the window: %+v", q)
		}
		wantProtection(t, h, vm.ID, models.StateResynchronizing, models.HealthWarning)
	})
}

func TestARecoverableResyncFailureBacksOffShowsItsErrorAndRecoversByItself(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		h.advance(6 * time.Minute)
		schedule(t, h)
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskReplicate), models.TaskOutcome{ErrorCode: agentproto.CodeResyncRequired, Message: "much changed"})
		job, err := h.s.StartResync(t.Context(), alice, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		resync := leaseOne(t, h, host.ID, agentproto.TaskResync)
		first := h.clock.T
		for i, delay := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 30 * time.Minute, 30 * time.Minute} {
			complete(t, h, host.ID, resync, models.TaskOutcome{ErrorCode: agentproto.CodeTargetFull, Message: "no space left on /nas", Recoverable: true, Attempt: resync.Attempts})
			p := wantProtection(t, h, vm.ID, models.StateResynchronizing, models.HealthWarning)
			if !strings.Contains(p.HealthReasons, "no space left on /nas") || p.LastErrorCode != agentproto.CodeTargetFull {
				t.Fatalf("while it retries the VM says %s (%s)", p.HealthReasons, p.LastErrorCode)
			}
			if got, _ := h.s.GetJob(t.Context(), job.ID); got.State != models.JobInProgress || !strings.Contains(got.Steps[0].Message, "no space left on /nas") {
				t.Fatalf("while it retries the job says %s %q", got.State, got.Steps[0].Message)
			}
			// Not before the back-off; at it, exactly once.
			next := models.NextRetry(first, i+1)
			if want := first.Add(delay); i == 0 && !next.Equal(want) {
				t.Fatalf("first retry at %s, want %s", next, want)
			}
			h.clock.T = next.Add(-time.Second)
			if got := leaseAll(t, h, host.ID); len(got) != 0 {
				t.Fatalf("failure %d: re-leased before the back-off", i+1)
			}
			h.clock.T = next
			resync = leaseOne(t, h, host.ID, agentproto.TaskResync)
			if resync.Attempts != i+2 {
				t.Fatalf("attempt %d, want %d", resync.Attempts, i+2)
			}
			// The previous attempt's late report is refused.
			if err := h.s.CompleteTask(t.Context(), host.ID, resync.ID, models.TaskOutcome{Result: "{}", Attempt: resync.Attempts - 1}); !errors.Is(err, models.ErrLeaseLost) {
				t.Fatalf("a stale attempt's result: %v", err)
			}
		}
		// Space is freed: the next attempt succeeds and replication resumes.
		complete(t, h, host.ID, resync, cycleResult(resync, h.clock.T))
		wantProtection(t, h, vm.ID, models.StateProtected, models.HealthNormal)
		h.advance(6 * time.Minute)
		if q := schedule(t, h); len(q) != 1 || q[0].Kind != agentproto.TaskReplicate {
			t.Fatalf("cycles did not resume: %+v", q)
		}
	})
}

func TestEveryWriteOfAProtectionStatePassesTheTransitionTable(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, _, _ := replicating(t, h)
		p := wantProtection(t, h, vm.ID, models.StateProtected, models.HealthNormal)
		db := h.s.DB().WithContext(t.Context())
		// Protected → Resynchronizing skips ResyncRequired: refused however
		// it is written.
		writes := map[string]func() error{
			"Update": func() error {
				return db.Model(&models.Protection{}).Where("id = ?", p.ID).Update("state", models.StateResynchronizing).Error
			},
			"Updates(map)": func() error {
				return db.Model(&models.Protection{}).Where("id = ?", p.ID).Updates(map[string]any{"state": models.StateResynchronizing}).Error
			},
			"Updates(row)": func() error {
				return db.Model(&models.Protection{}).Where("id = ?", p.ID).Updates(&models.Protection{State: models.StateResynchronizing}).Error
			},
			"Save": func() error { q := p; q.State = models.StateResynchronizing; return db.Save(&q).Error },
			"in a tx": func() error {
				return db.Transaction(func(tx *gorm.DB) error {
					return tx.Model(&models.Protection{}).Where("vm_id = ?", vm.ID).Update("state", models.StateResynchronizing).Error
				})
			},
			"a new row": func() error {
				q := p
				q.ID, q.VMID, q.State = "prot_new", "vm_other", models.StateProtected
				return db.Create(&q).Error
			},
		}
		for name, write := range writes {
			if err := write(); err == nil || !strings.Contains(err.Error(), "cannot go to") {
				t.Errorf("%s: a forbidden transition was written (err %v)", name, err)
			}
			wantProtection(t, h, vm.ID, models.StateProtected, models.HealthNormal)
		}
		// An allowed one passes.
		if err := db.Model(&models.Protection{}).Where("id = ?", p.ID).Update("state", models.StateResyncRequired).Error; err != nil {
			t.Fatalf("an allowed transition: %v", err)
		}
		wantProtection(t, h, vm.ID, models.StateResyncRequired, models.HealthNormal)
	})
}

func TestAHostWhoseVMsAreProtectedCannotBeRemoved(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		err := h.s.RevokeHost(t.Context(), alice, host.ID)
		wantConflict(t, err, "host_has_protected_vms")
		if !strings.Contains(err.Error(), vm.Name) {
			t.Fatalf("the refusal does not name the VM: %v", err)
		}
		if _, err := h.s.DisableProtection(t.Context(), alice, vm.ID, false); err != nil {
			t.Fatal(err)
		}
		if err := h.s.RevokeHost(t.Context(), alice, host.ID); err != nil {
			t.Fatalf("remove the host once its VMs are unprotected: %v", err)
		}
	})
}

func TestATaskKindTheAgentDoesNotListIsNotSentAndSaysToUpgrade(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, job := protectedVM(t, h)
		// An agent that speaks of its features, without replica keys.
		if err := h.s.Heartbeat(t.Context(), host.ID, "0.0.9", 2, "filedisk", []string{agentproto.TaskProtectionCheck, agentproto.TaskReplicate}); err != nil {
			t.Fatal(err)
		}
		if got := leaseAll(t, h, host.ID); len(got) != 0 {
			t.Fatalf("sent to an agent that lacks a feature: %+v", got)
		}
		got, _ := h.s.GetJob(t.Context(), job.ID)
		if got.State != models.JobFailed || got.ErrorCode != agentproto.CodeAgentUpgradeRequired || !strings.Contains(got.ErrorMessage, agentproto.FeatureReplicaKeys) {
			t.Fatalf("job %s %s %q", got.State, got.ErrorCode, got.ErrorMessage)
		}
		p := wantProtection(t, h, vm.ID, models.StateEnablingProtection, models.HealthCritical)
		if !strings.Contains(p.HealthReasons, "upgrade") {
			t.Fatalf("reasons %s", p.HealthReasons)
		}
	})
}

func TestReplicasOfAnEarlierVersionGetTheVMIdAndSharedOnesAreRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		site := mustSite(t, h, "s")
		hostA := mustHost(t, h, site.ID, "hv-a", models.HostConnected)
		hostB := mustHost(t, h, site.ID, "hv-b", models.HostConnected)
		hostC := mustHost(t, h, site.ID, "hv-c", models.HostConnected)
		a := mustVMs(t, h, hostA.ID, "app")["app"]
		b := mustVMs(t, h, hostB.ID, "app")["app"] // the same host-local name
		c := mustVMs(t, h, hostC.ID, "db")["db"]
		policy, target := mustPolicy(t, h, "p"), mustDirectoryTarget(t, h, "nas")
		for _, vm := range []models.VMSummary{a, b, c} {
			insertProtection(t, h, vm.ID, policy.ID, target.ID, models.HealthNormal)
		}
		// As the earlier version left them: no key.
		if err := h.rawDB(t).Exec("UPDATE protections SET replica_key = '', legacy_replica_key = ''").Error; err != nil {
			t.Fatal(err)
		}
		storetest.Open(t, h.dsn, h.clock) // the vault starts again, and migrates
		for _, vm := range []models.VMSummary{a, b} {
			p := wantProtection(t, h, vm.ID, models.StateProtected, models.HealthCritical)
			if p.ReplicaKey != vm.ID || p.LegacyReplicaKey != "" || !strings.Contains(p.HealthReasons, "hv-a") || !strings.Contains(p.HealthReasons, "hv-b") {
				t.Fatalf("a shared directory: key %q legacy %q, %s", p.ReplicaKey, p.LegacyReplicaKey, p.HealthReasons)
			}
		}
		// The unshared one keeps going; its agent moves the directory.
		p := wantProtection(t, h, c.ID, models.StateProtected, models.HealthNormal)
		if p.ReplicaKey != c.ID || p.LegacyReplicaKey != "db" {
			t.Fatalf("the unshared VM: key %q legacy %q", p.ReplicaKey, p.LegacyReplicaKey)
		}
	})
}

func TestOnlyALeasedRunEndsATaskAndARepeatedDeliveryCountsOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, point := replicating(t, h)
		if _, err := h.s.StartVerify(t.Context(), alice, vm.ID, point); err != nil {
			t.Fatal(err)
		}
		verify := leaseOne(t, h, host.ID, agentproto.TaskVerify)
		fail := models.TaskOutcome{ErrorCode: agentproto.CodeTargetUnavailable, Message: "NAS away", Recoverable: true, Attempt: verify.Attempts}
		complete(t, h, host.ID, verify, fail)
		for range 4 { // the answer was lost: the agent delivers again
			if err := h.s.CompleteTask(t.Context(), host.ID, verify.ID, fail); !errors.Is(err, models.ErrLeaseLost) {
				t.Fatalf("a repeated delivery: %v", err)
			}
		}
		var failures int
		h.rawDB(t).Model(&models.Task{}).Where("id = ?", verify.ID).Pluck("failures", &failures)
		if failures != 1 {
			t.Fatalf("one failed attempt counted %d times", failures)
		}
		// A cycle whose lease ran out: its run's late report is refused.
		h.advance(31 * time.Minute)
		schedule(t, h)
		cycle := leaseAll(t, h, host.ID)[0]
		h.advance(2 * time.Minute)
		if _, err := h.s.ReapExpiredLeases(t.Context()); err != nil {
			t.Fatal(err)
		}
		err := h.s.CompleteTask(t.Context(), host.ID, cycle.ID, models.TaskOutcome{ErrorCode: agentproto.CodeLeaseLost, Message: "lease lost", Attempt: cycle.Attempts})
		if !errors.Is(err, models.ErrLeaseLost) {
			t.Fatalf("a result for a task taken back: %v", err)
		}
		wantProtection(t, h, vm.ID, models.StateProtected, models.HealthWarning) // the RPO, never Critical
	})
}

func TestACycleWhoseLeaseKeepsExpiringBacksOffInsteadOfStoppingTheVM(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		h.advance(6 * time.Minute)
		schedule(t, h)
		for range models.MaxTaskAttempts {
			leaseAll(t, h, host.ID)
			h.advance(2 * time.Minute)
			if _, err := h.s.ReapExpiredLeases(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		p, _ := h.s.GetProtection(t.Context(), vm.ID)
		if p.Health == models.HealthCritical || p.NextRetryAt == nil || p.LastErrorCode != agentproto.CodeLeaseExpired {
			t.Fatalf("after the agent stopped reporting: %s %s next %v", p.Health, p.HealthReasons, p.NextRetryAt)
		}
		h.clock.T = *p.NextRetryAt
		if q := schedule(t, h); len(q) != 1 {
			t.Fatal("no cycle after the back-off")
		}
	})
}

func TestACycleQueuedBesideAVerifyThatFindsAMismatchIsNotRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, point := replicating(t, h)
		if _, err := h.s.StartVerify(t.Context(), alice, vm.ID, point); err != nil {
			t.Fatal(err)
		}
		verify := leaseOne(t, h, host.ID, agentproto.TaskVerify)
		h.advance(6 * time.Minute)
		if q := schedule(t, h); len(q) != 1 {
			t.Fatal("no cycle queued beside the verify")
		}
		b, _ := json.Marshal(agentproto.VerifyResult{PointID: point, BlocksChecked: 10, Mismatches: []agentproto.Mismatch{{Disk: "d0", Offset: 0}}})
		complete(t, h, host.ID, verify, models.TaskOutcome{Result: string(b), Attempt: verify.Attempts})
		if got := leaseAll(t, h, host.ID); len(got) != 0 {
			t.Fatalf("a cycle ran on a replica known to be changed: %+v", got)
		}
		p := wantProtection(t, h, vm.ID, models.StateResyncRequired, models.HealthWarning)
		if p.LastErrorCode != agentproto.CodeReplicaMismatch {
			t.Fatalf("the mismatch was forgotten: %q", p.LastErrorCode)
		}
	})
}

func TestARetriedResyncReadsTheDisksTheVMHasNow(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		if err := h.s.ReportInventory(t.Context(), host.ID, []models.VMReport{{ExternalID: "web", Name: vm.Name, PowerState: models.PowerRunning,
			Disks: []models.DiskReport{diskReport("/var/lib/vms/web.qcow2", 1<<30), diskReport("/var/lib/vms/web-data.qcow2", 1<<30)}}}); err != nil {
			t.Fatal(err)
		}
		h.advance(6 * time.Minute)
		schedule(t, h)
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskReplicate), models.TaskOutcome{ErrorCode: agentproto.CodeResyncRequired, Message: "much changed"})
		if _, err := h.s.StartResync(t.Context(), alice, vm.ID); err != nil {
			t.Fatal(err)
		}
		resync := leaseOne(t, h, host.ID, agentproto.TaskResync)
		complete(t, h, host.ID, resync, models.TaskOutcome{ErrorCode: agentproto.CodeTargetFull, Message: "full", Recoverable: true, Attempt: resync.Attempts})
		// The data disk is removed while the resync waits.
		if err := h.s.ReportInventory(t.Context(), host.ID, []models.VMReport{{ExternalID: "web", Name: vm.Name, PowerState: models.PowerRunning,
			Disks: []models.DiskReport{diskReport("/var/lib/vms/web.qcow2", 1<<30)}}}); err != nil {
			t.Fatal(err)
		}
		h.advance(time.Minute)
		resync = leaseOne(t, h, host.ID, agentproto.TaskResync)
		var pl agentproto.ReplicationPayload
		json.Unmarshal([]byte(resync.Payload), &pl)
		if len(pl.Disks) != 1 || pl.Disks[0].Path != "/var/lib/vms/web.qcow2" {
			t.Fatalf("the retried resync reads %+v", pl.Disks)
		}
	})
}

func TestPointsTheTargetNoLongerHasAreForgotten(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, first := replicating(t, h)
		h.advance(6 * time.Minute)
		schedule(t, h)
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, cycle, cycleResult(cycle, h.clock.T))
		// A later run pruned the first point but its result never came;
		// the next result lists what the target holds.
		h.advance(6 * time.Minute)
		schedule(t, h)
		cycle = leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		var pl agentproto.ReplicationPayload
		json.Unmarshal([]byte(cycle.Payload), &pl)
		points, _ := listPoints(t, h, vm.ID)
		var keep []string
		for _, p := range points {
			if p.ID != first {
				keep = append(keep, p.ID)
			}
		}
		b, _ := json.Marshal(agentproto.ReplicateResult{PointID: pl.PointID, Time: h.clock.T, Consistency: "crash", SizeBytes: 1 << 30,
			Pruned: []string{}, Points: append(keep, pl.PointID)})
		complete(t, h, host.ID, cycle, models.TaskOutcome{Result: string(b)})
		points, _ = listPoints(t, h, vm.ID)
		if len(points) != 2 {
			t.Fatalf("%d points, want the 2 the target has", len(points))
		}
		for _, p := range points {
			if p.ID == first {
				t.Fatal("a point the target no longer has is still offered")
			}
		}
	})
}
