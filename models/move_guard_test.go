package models_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// seedLeased starts a move of a replicating VM and runs it up to the leased seed.
func seedLeased(t *testing.T, h *harness, old string) (models.VMSummary, *models.Host, *models.Target, *models.Job, models.Task) {
	t.Helper()
	vm, host := movableVM(t, h)
	nas2 := mustDirectoryTarget(t, h, "nas2")
	job, err := h.s.StartMove(t.Context(), alice, vm.ID, nas2.ID, old)
	if err != nil {
		t.Fatal(err)
	}
	complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
	complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
	return vm, host, nas2, job, leaseOne(t, h, host.ID, agentproto.TaskReplicate)
}

// Found in review, now guarded: a seed that fails recoverably (the new NAS is away) is retried
// for ever (TaskReplicate retries: 0), and while it waits out its back-off
// the VM gets no cycle to its old target; its health stays Normal (the move
// skips protectionRetrying).
func TestASeedThatKeepsFailingGivesUpSoTheOldTargetsCyclesGoOn(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host, _, _, seed := seedLeased(t, h, models.OldReplicaKeep)
		complete(t, h, host.ID, seed, models.TaskOutcome{ErrorCode: agentproto.CodeTargetUnavailable, Message: "nas2 unmounted", Recoverable: true})
		for i := 0; i < 12; i++ {
			h.advance(10 * time.Minute)
			if q := scheduled(t, h); len(q) != 0 {
				return // a cycle to the old target ran: fine
			}
			// the seed comes back and fails again
			tasks, _ := h.s.LeaseTasks(ctx, host.ID, 5, time.Minute)
			for _, tk := range tasks {
				complete(t, h, host.ID, tk, models.TaskOutcome{ErrorCode: agentproto.CodeTargetUnavailable, Message: "nas2 unmounted", Recoverable: true})
			}
		}
		p, _ := h.s.GetProtection(ctx, vm.ID)
		t.Fatalf("2 h without a cycle to the old target while the seed retries; protection health %s %s, last point %v (now %v)",
			p.Health, p.HealthReasons, p.LastRecoveryPointAt, h.clock.T)
	})
}

// The new target of a move holds no protection while it is seeded, yet it
// cannot be deleted: the seed's success would have nowhere to switch to
// (found in review: the task stayed leased and the VM busy).
func TestTheNewTargetOfAMoveCannotBeDeletedWhileItIsSeeded(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		_, host, nas2, _, seed := seedLeased(t, h, models.OldReplicaDelete)
		wantConflict(t, h.s.DeleteTarget(ctx, alice, nas2.ID), "target_in_use")
		// The move goes on: the seed's success switches the VM to it.
		complete(t, h, host.ID, seed, cycleResult(seed, h.clock.T))
		if got, _ := h.s.GetTarget(ctx, nas2.ID); got == nil {
			t.Fatal("the move's target is gone")
		}
	})
}

// Nor can its path change: the switch would point the VM at a place the
// seed never wrote, with the seed's point listed (found in review).
func TestTheNewTargetOfAMoveCannotChangeItsPathWhileItIsSeeded(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host, nas2, _, seed := seedLeased(t, h, models.OldReplicaDelete)
		_, err := h.s.UpdateTarget(ctx, alice, nas2.ID, models.TargetInput{Name: "nas2", Kind: models.TargetDirectory, Path: "/srv/elsewhere"})
		wantConflict(t, err, "target_in_use")
		complete(t, h, host.ID, seed, cycleResult(seed, h.clock.T))
		got, _ := h.s.GetVM(ctx, vm.ID)
		if want := payloadOf(t, seed).Target.Path; !strings.HasPrefix(got.Placement.ReplicaLocation, want+"/") {
			t.Fatalf("seeded %s, but the VM now replicates to %s", want, got.Placement.ReplicaLocation)
		}
	})
}

// Found in review, now guarded: a scheduled cycle queued with the old target's payload (the
// PostgreSQL race of StartMove and ScheduleReplications / Replicate now,
// both reading "no task" under READ COMMITTED) runs after the switch: it is
// leased (the VM is Protected), writes to the OLD target, acknowledges the
// driver's tracking, and its result is recorded as a point of the VM, now on
// the new target. Simulated here by inserting that cycle as the race leaves it.
func TestACycleQueuedForTheOldTargetNeverRunsAfterTheSwitch(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := movableVM(t, h)
		before, _ := h.s.GetProtection(ctx, vm.ID)
		nas2 := mustDirectoryTarget(t, h, "nas2")
		h.advance(5 * time.Minute)
		// What ScheduleReplications would queue at the same instant.
		q := scheduled(t, h)
		if len(q) != 1 {
			t.Fatalf("queued %d", len(q))
		}
		stale := q[0]
		if err := h.rawDB(t).Model(&models.Task{}).Where("id = ?", stale.ID).Update("state", "review_hidden").Error; err != nil {
			t.Fatal(err)
		}
		job, err := h.s.StartMove(ctx, alice, vm.ID, nas2.ID, models.OldReplicaKeep)
		if err != nil {
			t.Fatal(err)
		}
		// Both transactions committed; the scheduler's insert came last (its
		// id is the newer one).
		time.Sleep(2 * time.Millisecond)
		newID := models.NewID("task")
		if err := h.rawDB(t).Model(&models.Task{}).Where("id = ?", stale.ID).Updates(map[string]any{"state": models.TaskQueued, "id": newID}).Error; err != nil {
			t.Fatal(err)
		}
		stale.ID = newID
		// The host runs them one at a time, in id order (the cycle's is older).
		var seedPoint string
		for i := 0; i < 6; i++ {
			tasks, err := h.s.LeaseTasks(ctx, host.ID, 5, time.Minute)
			if err != nil || len(tasks) == 0 {
				break
			}
			tk := tasks[0]
			pl := payloadOf(t, tk)
			o := models.TaskOutcome{Result: "{}"}
			if tk.Kind == agentproto.TaskReplicate {
				o = cycleResult(tk, h.clock.T)
				if tk.JobID == job.ID {
					seedPoint = pl.PointID
				}
			}
			t.Logf("ran %s (job %q) to %s", tk.Kind, tk.JobID, pl.Target.Path)
			complete(t, h, host.ID, tk, o)
			h.advance(time.Second)
		}
		p, _ := h.s.GetProtection(ctx, vm.ID)
		points, _ := listPoints(t, h, vm.ID)
		var ids []string
		for _, pt := range points {
			ids = append(ids, pt.ID)
		}
		onNew := p.TargetID == nas2.ID
		stalePoint := payloadOf(t, stale).PointID
		for _, id := range ids {
			if id == stalePoint && onNew {
				t.Fatalf("the VM is on %s (was %s) and lists point %s, written by a cycle to the old target %s (whose replica the move deletes); points %v, seed point %s",
					nas2.Path, before.TargetID, stalePoint, payloadOf(t, stale).Target.Path, ids, seedPoint)
			}
		}
	})
}

// Found in review: a new target whose path lies inside the VM's old replica
// directory was accepted: the move's last step (delete the old replica:
// rename <old>/<key> away and remove it) deletes the new replica with it.
func TestATargetInsideAnotherTargetsDirectoryIsRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, _ := movableVM(t, h)
		p, _ := h.s.GetProtection(ctx, vm.ID)
		old := "/srv/lifeboat/nas/" + p.ReplicaKey
		_, err := h.s.CreateTarget(ctx, alice, models.TargetInput{Name: "inner", Kind: models.TargetDirectory, Path: old + "/sub"})
		if err == nil || !strings.Contains(err.Error(), "inside the directory of target") {
			t.Fatalf("a target inside the replica directory %s (which a move's last step deletes): %v", old, err)
		}
	})
}

// Found in review, now guarded: the seed copies the VM whole, but its RPO history row is not a
// baseline: the capacity planner takes it for one delta cycle's churn.
func TestTheSeedsHistoryRowIsABaselineNotChurn(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _, _, seed := seedLeased(t, h, models.OldReplicaKeep)
		var pl agentproto.ReplicationPayload
		json.Unmarshal([]byte(seed.Payload), &pl)
		b, _ := json.Marshal(agentproto.ReplicateResult{PointID: pl.PointID, Time: h.clock.T, Consistency: "crash", SizeBytes: 1 << 30, BytesSent: 1 << 30})
		complete(t, h, host.ID, seed, models.TaskOutcome{Result: string(b)})
		var rows []models.RPOHistory
		if err := h.rawDB(t).Where("vm_id = ?", vm.ID).Order("time").Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		last := rows[len(rows)-1]
		if !last.Baseline {
			t.Fatalf("the seed's history row (%d bytes sent, a whole copy) is baseline=%v; rows %d", last.BytesSent, last.Baseline, len(rows))
		}
	})
}

var _ = strings.Join

// Found in review, now guarded: the race itself, on PostgreSQL: Replicate now and StartMove at
// once both succeed, leaving a cycle to the old target beside the move.
func TestReplicateNowAndAMoveAtOnceQueueOneOfThem(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		if !models.IsPostgres(h.dsn) {
			t.Skip("PostgreSQL only")
		}
		ctx := t.Context()
		vm, _ := movableVM(t, h)
		nas2 := mustDirectoryTarget(t, h, "nas2")
		both := 0
		for i := 0; i < 40; i++ {
			start := make(chan struct{})
			errs := make(chan error, 2)
			var moveJob *models.Job
			go func() {
				<-start
				j, err := h.s.StartMove(ctx, alice, vm.ID, nas2.ID, models.OldReplicaKeep)
				moveJob = j
				errs <- err
			}()
			go func() { <-start; _, err := h.s.ReplicateNow(ctx, alice, vm.ID); errs <- err }()
			close(start)
			e1, e2 := <-errs, <-errs
			if e1 == nil && e2 == nil {
				both++
				t.Logf("round %d: both a move (%s) and a Replicate now cycle were queued", i, moveJob.ID)
				break
			}
			// clean up whatever got queued, for the next round
			if err := h.rawDB(t).Exec("UPDATE tasks SET state = 'Cancelled' WHERE state IN ('Waiting','Queued','Leased')").Error; err != nil {
				t.Fatal(err)
			}
			h.rawDB(t).Exec("UPDATE jobs SET state = 'Cancelled'")
		}
		if both > 0 {
			t.Fatalf("StartMove and ReplicateNow both succeeded %d time(s): a cycle to the old target is queued beside the move", both)
		}
	})
}
