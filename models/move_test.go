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

// movableVM is a replicating VM whose host's agent can seed a move.
func movableVM(t *testing.T, h *harness) (models.VMSummary, *models.Host) {
	t.Helper()
	vm, host := replicatingVM(t, h)
	if err := h.rawDB(t).Model(&models.Host{}).Where("id = ?", host.ID).
		Update("features", strings.Join([]string{agentproto.FeatureReplicaKeys, agentproto.FeatureMoveSeed, agentproto.TaskProtectionCheck,
			agentproto.TaskCreateReplica, agentproto.TaskReplicate, agentproto.TaskResync, agentproto.TaskDeleteReplica}, " ")).Error; err != nil {
		t.Fatal(err)
	}
	return vm, host
}

func payloadOf(t *testing.T, task models.Task) agentproto.ReplicationPayload {
	t.Helper()
	var pl agentproto.ReplicationPayload
	if err := json.Unmarshal([]byte(task.Payload), &pl); err != nil {
		t.Fatal(err)
	}
	return pl
}

func TestAMoveSeedsTheNewTargetWhileTheOldKeepsItsPointsThenSwitchesAndDeletesTheOld(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := movableVM(t, h)
		before, _ := h.s.GetProtection(ctx, vm.ID)
		nas2 := mustDirectoryTarget(t, h, "nas2")
		job, err := h.s.StartMove(ctx, alice, vm.ID, nas2.ID, models.OldReplicaDelete)
		if err != nil || len(job.Steps) != 4 {
			t.Fatalf("start move: %+v %v", job, err)
		}
		wantAudit(t, h, "protection.move", vm.ID)
		h.advance(10 * time.Minute)
		if q := scheduled(t, h); len(q) != 0 {
			t.Fatalf("a cycle beside the move: %+v", q)
		}
		for _, kind := range []string{agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica} {
			task := leaseOne(t, h, host.ID, kind)
			if pl := payloadOf(t, task); pl.Target.Path != nas2.Path || !pl.Disks[0].New {
				t.Fatalf("%s of the move: %+v, want the new target, disks new", kind, pl)
			}
			complete(t, h, host.ID, task, models.TaskOutcome{Result: "{}"})
		}
		seed := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		pl := payloadOf(t, seed)
		if pl.Target.Path != nas2.Path || !pl.Disks[0].New || pl.ReplicaKey != before.ReplicaKey {
			t.Fatalf("the seed: %+v", pl)
		}
		// While it seeds, the VM is on its old target with its old point.
		if p, _ := h.s.GetProtection(ctx, vm.ID); p.TargetID != before.TargetID {
			t.Fatal("switched before the seed ended")
		}
		if points, _ := listPoints(t, h, vm.ID); len(points) != 1 {
			t.Fatalf("old points during the seed: %d", len(points))
		}
		complete(t, h, host.ID, seed, cycleResult(seed, h.clock.T))
		after, _ := h.s.GetProtection(ctx, vm.ID)
		points, _ := listPoints(t, h, vm.ID)
		if after.TargetID != nas2.ID || after.State != models.StateProtected || after.Health != models.HealthNormal || len(points) != 1 || points[0].ID != pl.PointID {
			t.Fatalf("after the seed: %+v, points %+v", after, points)
		}
		got, _ := h.s.GetVM(ctx, vm.ID)
		if got.Placement.ReplicaLocation != "/srv/lifeboat/nas2/"+vm.ID {
			t.Fatalf("replica location after the move: %q", got.Placement.ReplicaLocation)
		}
		del := leaseOne(t, h, host.ID, agentproto.TaskDeleteReplica)
		if pl := payloadOf(t, del); pl.Target.Path != "/srv/lifeboat/nas" || pl.ReplicaKey != before.ReplicaKey {
			t.Fatalf("the delete step: %+v, want the old target", pl)
		}
		// The old target is away: the deletion is retried, and cycles to the
		// new target do not wait for it.
		complete(t, h, host.ID, del, models.TaskOutcome{ErrorCode: agentproto.CodeTargetUnavailable, Message: "old NAS unmounted", Recoverable: true})
		h.advance(5 * time.Minute)
		if q := scheduled(t, h); len(q) != 1 {
			t.Fatalf("a cycle waited for the old replica's deletion: %+v", q)
		}
		// The host runs both, one at a time.
		ran := map[string]bool{}
		for range 2 {
			tasks, err := h.s.LeaseTasks(ctx, host.ID, 5, time.Minute)
			if err != nil || len(tasks) != 1 {
				t.Fatalf("lease: %+v %v", tasks, err)
			}
			o := models.TaskOutcome{Result: "{}"}
			if tasks[0].Kind == agentproto.TaskReplicate {
				if pl := payloadOf(t, tasks[0]); pl.Target.Path != nas2.Path || pl.Disks[0].New {
					t.Fatalf("the cycle after the move: %+v", pl)
				}
				o = cycleResult(tasks[0], h.clock.T)
			}
			ran[tasks[0].Kind] = true
			complete(t, h, host.ID, tasks[0], o)
		}
		if !ran[agentproto.TaskReplicate] || !ran[agentproto.TaskDeleteReplica] {
			t.Fatalf("ran %v", ran)
		}
		if j, _ := h.s.GetJob(ctx, job.ID); j.State != models.JobSucceeded {
			t.Fatalf("move job: %+v", j)
		}
		if _, err := h.s.GetProtection(ctx, vm.ID); err != nil {
			t.Fatalf("deleting the old replica ended the protection: %v", err)
		}
	})
}

func TestAMoveThatFailsLeavesTheVMOnItsOldTargetAsItWas(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := movableVM(t, h)
		before, _ := h.s.GetProtection(ctx, vm.ID)
		nas2 := mustDirectoryTarget(t, h, "nas2")

		// Failed at the check: nothing else changes.
		job, err := h.s.StartMove(ctx, alice, vm.ID, nas2.ID, models.OldReplicaKeep)
		if err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck),
			models.TaskOutcome{ErrorCode: agentproto.CodePrerequisitesFailed, Message: "Target directory /srv/lifeboat/nas2: not writable"})
		j, _ := h.s.GetJob(ctx, job.ID)
		p, _ := h.s.GetProtection(ctx, vm.ID)
		if j.State != models.JobFailed || p.TargetID != before.TargetID || p.Health != models.HealthNormal || p.State != models.StateProtected {
			t.Fatalf("a move failed at its check: job %s, protection %+v", j.State, p)
		}

		// Failed during the seed: the VM replicates to its old target as before.
		job, err = h.s.StartMove(ctx, alice, vm.ID, nas2.ID, models.OldReplicaKeep)
		if err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		seed := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		if !payloadOf(t, seed).KeepTracking {
			t.Fatal("a seed must leave the driver's change tracking to the old replica")
		}
		complete(t, h, host.ID, seed, models.TaskOutcome{ErrorCode: agentproto.CodeDiskResized, Message: "disk shrank"})
		j, _ = h.s.GetJob(ctx, job.ID)
		p, _ = h.s.GetProtection(ctx, vm.ID)
		if j.State != models.JobFailed || p.TargetID != before.TargetID || p.State != models.StateProtected || p.Health != models.HealthNormal {
			t.Fatalf("a move failed in its seed: job %s, protection %s %s on %s", j.State, p.State, p.Health, p.TargetID)
		}
		h.advance(5 * time.Minute)
		scheduled(t, h)
		if pl := payloadOf(t, leaseOne(t, h, host.ID, agentproto.TaskReplicate)); pl.Target.Path != "/srv/lifeboat/nas" || pl.Disks[0].New || pl.KeepTracking {
			t.Fatalf("the cycle after the failed move: %+v, want the old target as before", pl)
		}
		if points, _ := listPoints(t, h, vm.ID); len(points) != 1 {
			t.Fatalf("the old points after a failed move: %d", len(points))
		}
	})
}

func TestAMoveIsRefusedUntilTheVMCanMove(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := movableVM(t, h)
		p, _ := h.s.GetProtection(ctx, vm.ID)
		nas2 := mustDirectoryTarget(t, h, "nas2")
		fields := func(err error) string {
			var v *models.ValidationError
			if !errors.As(err, &v) {
				t.Fatalf("error %v, want a validation error", err)
			}
			var names []string
			for _, f := range v.Fields {
				names = append(names, f.Field)
			}
			return strings.Join(names, ",")
		}
		if _, err := h.s.StartMove(ctx, alice, vm.ID, p.TargetID, models.OldReplicaKeep); fields(err) != "target_id" {
			t.Fatal("a move to the VM's own target")
		}
		if _, err := h.s.StartMove(ctx, alice, vm.ID, "tgt_nope", "maybe"); fields(err) != "target_id,old_replica" {
			t.Fatal("an unknown target and choice")
		}
		if err := h.s.PauseReplication(ctx, alice, vm.ID); err != nil {
			t.Fatal(err)
		}
		_, err := h.s.StartMove(ctx, alice, vm.ID, nas2.ID, models.OldReplicaKeep)
		wantConflict(t, err, "replication_paused")
		h.s.ResumeReplication(ctx, alice, vm.ID)
		h.advance(5 * time.Minute)
		scheduled(t, h)
		_, err = h.s.StartMove(ctx, alice, vm.ID, nas2.ID, models.OldReplicaKeep)
		wantConflict(t, err, "replication_busy")
		leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		_, err = h.s.StartMove(ctx, alice, vm.ID, nas2.ID, models.OldReplicaKeep)
		wantConflict(t, err, "replication_busy")
	})
}

func TestAMoveWaitsForAnAgentThatCopiesANewReplicaWhole(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, _ := replicatingVM(t, h) // its host has listed no features
		_, err := h.s.StartMove(t.Context(), alice, vm.ID, mustDirectoryTarget(t, h, "nas2").ID, models.OldReplicaKeep)
		wantConflict(t, err, agentproto.CodeAgentUpgradeRequired)
	})
}

func TestAMoveWhoseVMBeganFailingOverDuringTheSeedIsAbandonedAndTheVMKeepsItsOldPoints(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := movableVM(t, h)
		before, _ := h.s.GetProtection(ctx, vm.ID)
		job, err := h.s.StartMove(ctx, alice, vm.ID, mustDirectoryTarget(t, h, "nas2").ID, models.OldReplicaDelete)
		if err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		seed := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		// A failover starts while the agent seeds (its recovery reads the old points).
		if err := h.rawDB(t).Model(&models.Protection{}).Where("id = ?", before.ID).Update("state", models.StateFailingOver).Error; err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, seed, cycleResult(seed, h.clock.T))
		j, _ := h.s.GetJob(ctx, job.ID)
		p, _ := h.s.GetProtection(ctx, vm.ID)
		points, _ := listPoints(t, h, vm.ID)
		if j.State != models.JobFailed || j.ErrorCode != "move_abandoned" || p.TargetID != before.TargetID || len(points) != 1 || points[0].ID == payloadOf(t, seed).PointID {
			t.Fatalf("a seed that ended during a failover: job %s %s, target %s (was %s), points %+v", j.State, j.ErrorCode, p.TargetID, before.TargetID, points)
		}
		if tasks, _ := h.s.LeaseTasks(ctx, host.ID, 5, time.Minute); len(tasks) != 0 {
			t.Fatalf("the old replica's deletion ran after an abandoned move: %+v", tasks)
		}
	})
}

func TestADiskAddedDuringAMoveIsCopiedToTheNewTargetByTheNextCycle(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host := movableVM(t, h)
		nas2 := mustDirectoryTarget(t, h, "nas2")
		if _, err := h.s.StartMove(ctx, alice, vm.ID, nas2.ID, models.OldReplicaKeep); err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		seed := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		err := h.s.ReportInventory(ctx, host.ID, []models.VMReport{{ExternalID: "web", Name: "vm web", PowerState: models.PowerRunning, Disks: []models.DiskReport{
			{Path: "/var/lib/vms/web.qcow2", SizeBytes: 1 << 30, Format: "qcow2"}, {Path: "/var/lib/vms/web-b.qcow2", SizeBytes: 1 << 30, Format: "qcow2"}}}})
		if err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, seed, cycleResult(seed, h.clock.T))
		h.advance(5 * time.Minute)
		scheduled(t, h)
		next := payloadOf(t, leaseOne(t, h, host.ID, agentproto.TaskReplicate))
		if len(next.Disks) != 2 || next.Target.Path != nas2.Path {
			t.Fatalf("the cycle after the move: %+v", next)
		}
		for _, d := range next.Disks {
			if d.New != strings.HasSuffix(d.Path, "web-b.qcow2") {
				t.Fatalf("disk %s new=%v: only the disk added during the move is new on the new target", d.Path, d.New)
			}
		}
	})
}
