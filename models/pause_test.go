package models_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// replicatingVM is a protected VM whose initial replication ended now.
func replicatingVM(t *testing.T, h *harness) (models.VMSummary, *models.Host) {
	t.Helper()
	vm, host, _ := protectedVM(t, h) // policy: copy every 5 minutes
	complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
	complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
	initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
	complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))
	return vm, host
}

func scheduled(t *testing.T, h *harness) []models.Task {
	t.Helper()
	q, err := h.s.ScheduleReplications(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestAPausedVMStartsNoCycleShowsWhoPausedItAndResumingQueuesTheDueCycle(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := replicatingVM(t, h)
		h.advance(time.Minute)
		pausedAt := h.clock.T
		if err := h.s.PauseReplication(ctx, alice, vm.ID); err != nil {
			t.Fatal(err)
		}
		wantAudit(t, h, "protection.pause", vm.ID)
		want := "replication paused by alice at " + pausedAt.UTC().Format(time.RFC3339)
		got, _ := h.s.GetVM(ctx, vm.ID)
		if got.Health != models.HealthWarning || len(got.HealthReasons) == 0 || !strings.HasPrefix(got.HealthReasons[0], want) {
			t.Fatalf("paused VM: health %s %q, want Warning with %q", got.Health, got.HealthReasons, want)
		}
		if got.Placement == nil || got.Placement.PausedBy != "alice" || !got.Placement.PausedAt.Equal(pausedAt) {
			t.Fatalf("placement of a paused VM: %+v", got.Placement)
		}
		// Two copy frequencies pass: nothing is scheduled, and the reason stays.
		for range 3 {
			h.advance(5 * time.Minute)
			if q := scheduled(t, h); len(q) != 0 {
				t.Fatalf("a paused VM got a cycle: %+v", q)
			}
		}
		got, _ = h.s.GetVM(ctx, vm.ID)
		if !strings.Contains(strings.Join(got.HealthReasons, "\n"), want) {
			t.Fatalf("the pause reason went after scheduling passes: %q", got.HealthReasons)
		}
		wantConflict(t, h.s.PauseReplication(ctx, alice, vm.ID), "replication_paused")
		_, err := h.s.ReplicateNow(ctx, alice, vm.ID)
		wantConflict(t, err, "replication_paused")
		_, err = h.s.StartResync(ctx, alice, vm.ID)
		wantConflict(t, err, "replication_paused")

		task, err := h.s.ResumeReplication(ctx, alice, vm.ID)
		if err != nil || task == nil || task.Kind != agentproto.TaskReplicate || task.HostID != host.ID {
			t.Fatalf("resume with a cycle due: %+v %v", task, err)
		}
		wantAudit(t, h, "protection.resume", vm.ID)
		got, _ = h.s.GetVM(ctx, vm.ID)
		if strings.Contains(strings.Join(got.HealthReasons, "\n"), "paused") || got.Placement.PausedAt != nil {
			t.Fatalf("resumed VM still says paused: %q %+v", got.HealthReasons, got.Placement)
		}
		if q := scheduled(t, h); len(q) != 0 {
			t.Fatalf("a second cycle beside the one resume queued: %+v", q)
		}
		_, err = h.s.ResumeReplication(ctx, alice, vm.ID)
		wantConflict(t, err, "not_paused")
	})
}

func TestACycleRunningWhenPausedFinishesAndNoOtherStarts(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := replicatingVM(t, h)
		h.advance(5 * time.Minute)
		if q := scheduled(t, h); len(q) != 1 {
			t.Fatalf("no cycle at the copy frequency: %+v", q)
		}
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		if err := h.s.PauseReplication(ctx, alice, vm.ID); err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, cycle, cycleResult(cycle, h.clock.T))
		points, _ := listPoints(t, h, vm.ID)
		if len(points) != 2 {
			t.Fatalf("the running cycle's point was not recorded: %d points", len(points))
		}
		got, _ := h.s.GetVM(ctx, vm.ID)
		if got.Health != models.HealthWarning || !strings.HasPrefix(strings.Join(got.HealthReasons, "\n"), "replication paused by alice") {
			t.Fatalf("after the running cycle: %s %q", got.Health, got.HealthReasons)
		}
		h.advance(10 * time.Minute)
		if q := scheduled(t, h); len(q) != 0 {
			t.Fatalf("a cycle after the running one ended, while paused: %+v", q)
		}
	})
}

func TestPausingOrResumingAnUnprotectedVMSaysItIsNotProtected(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		host := mustHost(t, h, mustSite(t, h, "s").ID, "hv", models.HostConnected)
		vm := mustVMs(t, h, host.ID, "web")["web"]
		wantConflict(t, h.s.PauseReplication(t.Context(), alice, vm.ID), "not_protected")
		_, err := h.s.ResumeReplication(t.Context(), alice, vm.ID)
		wantConflict(t, err, "not_protected")
		_, err = h.s.ReplicateNow(t.Context(), alice, vm.ID)
		wantConflict(t, err, "not_protected")
		_, err = h.s.ChangePolicy(t.Context(), alice, vm.ID, mustPolicy(t, h, "p").ID, "")
		wantConflict(t, err, "not_protected")
	})
}

func TestReplicateNowQueuesACycleBeforeTheCopyFrequencyOnceAndRefusesWhileOneRuns(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := replicatingVM(t, h)
		h.advance(10 * time.Second) // far from the 5-minute copy frequency
		first, err := h.s.ReplicateNow(ctx, alice, vm.ID)
		if err != nil || first.Queued || first.PointID == "" || first.Task.HostID != host.ID {
			t.Fatalf("replicate now: %+v %v", first, err)
		}
		wantAudit(t, h, "protection.replicate_now", vm.ID)
		again, err := h.s.ReplicateNow(ctx, alice, vm.ID)
		if err != nil || !again.Queued || again.PointID != first.PointID {
			t.Fatalf("replicate now with a cycle queued: %+v %v, want the queued one (%s)", again, err, first.PointID)
		}
		if q := scheduled(t, h); len(q) != 0 {
			t.Fatalf("the scheduler added a cycle beside it: %+v", q)
		}
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		var pl agentproto.ReplicationPayload
		json.Unmarshal([]byte(cycle.Payload), &pl)
		if pl.PointID != first.PointID || len(pl.Disks) != 1 || pl.Disks[0].New {
			t.Fatalf("the cycle leased: %+v, want point %s and its copied disk", pl, first.PointID)
		}
		_, err = h.s.ReplicateNow(ctx, alice, vm.ID)
		wantConflict(t, err, "replication_busy")
		complete(t, h, host.ID, cycle, cycleResult(cycle, h.clock.T))
		points, _ := listPoints(t, h, vm.ID)
		if len(points) != 2 || points[0].ID != first.PointID {
			t.Fatalf("points after replicate now: %+v", points)
		}
	})
}

func TestChangingThePolicyKeepsTheReplicasAndTheNextCycleFollowsTheNewPolicy(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := replicatingVM(t, h)
		before, _ := h.s.GetProtection(ctx, vm.ID)
		_, err := h.s.ChangePolicy(ctx, alice, vm.ID, "pol_nope", "")
		var v *models.ValidationError
		if !errors.As(err, &v) || len(v.Fields) != 1 || v.Fields[0].Field != "policy_id" {
			t.Fatalf("unknown policy: %v, want a validation error naming policy_id", err)
		}
		other := mustDirectoryTarget(t, h, "other")
		gold := models.DefaultPolicy()
		gold.Name, gold.CopyFrequencySeconds, gold.RetentionHours = "gold", 30, 2
		gold.AppConsistentFrequencyHours = 0
		if err := h.s.CreatePolicy(ctx, alice, &gold); err != nil {
			t.Fatal(err)
		}
		_, err = h.s.ChangePolicy(ctx, alice, vm.ID, gold.ID, other.ID)
		wantConflict(t, err, "target_change_not_supported")
		changed, err := h.s.ChangePolicy(ctx, alice, vm.ID, gold.ID, before.TargetID)
		if err != nil || !changed {
			t.Fatalf("change policy: %v %v", changed, err)
		}
		wantAudit(t, h, "protection.change_policy", vm.ID)
		if changed, err := h.s.ChangePolicy(ctx, alice, vm.ID, gold.ID, ""); err != nil || changed {
			t.Fatalf("the same policy again: changed %v %v", changed, err)
		}
		after, _ := h.s.GetProtection(ctx, vm.ID)
		if after.PolicyID != gold.ID || after.TargetID != before.TargetID || after.ReplicaKey != before.ReplicaKey || after.State != models.StateProtected {
			t.Fatalf("protection after the change: %+v (before %+v)", after, before)
		}
		// The new copy frequency (30 s) schedules the next cycle; the old
		// (5 min) would not yet.
		h.advance(30 * time.Second)
		if q := scheduled(t, h); len(q) != 1 {
			t.Fatalf("no cycle at the new copy frequency: %+v", q)
		}
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		var pl agentproto.ReplicationPayload
		json.Unmarshal([]byte(cycle.Payload), &pl)
		if pl.RetentionHours != 2 || pl.ReplicaKey != before.ReplicaKey || len(pl.Disks) != 1 || pl.Disks[0].New {
			t.Fatalf("the cycle after the change: %+v, want retention 2 h into the same replicas, no disk new", pl)
		}
	})
}

func TestAPausedVMStillSaysSoWhenItsRunningCycleFails(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := replicatingVM(t, h)
		h.advance(5 * time.Minute)
		scheduled(t, h)
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		if err := h.s.PauseReplication(ctx, alice, vm.ID); err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, cycle, models.TaskOutcome{ErrorCode: agentproto.CodeTargetUnavailable, Message: "NAS unreachable", Recoverable: true})
		got, _ := h.s.GetVM(ctx, vm.ID)
		all := strings.Join(got.HealthReasons, "\n")
		if got.Health != models.HealthWarning || !strings.Contains(all, "NAS unreachable") || !strings.Contains(all, "replication paused by alice") {
			t.Fatalf("a paused VM whose cycle failed: %s %q", got.Health, got.HealthReasons)
		}
		h.advance(time.Hour) // past the back-off: still no retry while paused
		if q := scheduled(t, h); len(q) != 0 {
			t.Fatalf("a paused VM's failed cycle was retried: %+v", q)
		}
	})
}

func TestAPausedVMThatNeedsAResyncWaitsPastItsWindowAndKeepsBothReasons(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := replicatingVM(t, h) // resync window 18:30–06:00 UTC; the clock says 10:00
		h.advance(6 * time.Minute)
		scheduled(t, h)
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, cycle, models.TaskOutcome{ErrorCode: agentproto.CodeResyncRequired, Message: "60 % of disk d0 changed"})
		if err := h.s.PauseReplication(ctx, alice, vm.ID); err != nil {
			t.Fatal(err)
		}
		got, _ := h.s.GetVM(ctx, vm.ID)
		all := strings.Join(got.HealthReasons, "\n")
		if got.ProtectionState != models.StateResyncRequired || !strings.Contains(all, "resynchronization required") || !strings.Contains(all, "replication paused by alice") {
			t.Fatalf("paused while it needs a resync: %s %q", got.ProtectionState, got.HealthReasons)
		}
		h.advance(9 * time.Hour) // 19:06, inside the window
		if q := scheduled(t, h); len(q) != 0 {
			t.Fatalf("the window started a paused VM's resync: %+v", q)
		}
		if _, err := h.s.ResumeReplication(ctx, alice, vm.ID); err != nil {
			t.Fatal(err)
		}
		got, _ = h.s.GetVM(ctx, vm.ID)
		if all := strings.Join(got.HealthReasons, "\n"); strings.Contains(all, "paused") || !strings.Contains(all, "resynchronization required") {
			t.Fatalf("resumed: %q", got.HealthReasons)
		}
		if q := scheduled(t, h); len(q) != 1 || q[0].Kind != agentproto.TaskResync {
			t.Fatalf("resumed inside the window, no resync: %+v", q)
		}
	})
}

// A cycle queued before the pause (due, not started yet) does not start
// after it: pausing cancels it, and the host is handed nothing.
func TestPausingCancelsACycleQueuedAndNotStarted(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		h.advance(6 * time.Minute)
		if q := schedule(t, h); len(q) != 1 {
			t.Fatalf("no cycle queued: %v", q)
		}
		if err := h.s.PauseReplication(t.Context(), alice, vm.ID); err != nil {
			t.Fatal(err)
		}
		if tasks, err := h.s.LeaseTasks(t.Context(), host.ID, 5, time.Minute); err != nil || len(tasks) != 0 {
			t.Fatalf("handed out after the pause: %+v %v", tasks, err)
		}
		h.advance(time.Hour)
		if q := schedule(t, h); len(q) != 0 {
			t.Fatalf("queued while paused: %v", q)
		}
	})
}
