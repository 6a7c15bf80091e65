package models_test

import (
	"testing"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// A failed Enable protection used to leave the VM in EnablingProtection,
// Critical, with no way on but Disable then Enable. Enabling again now
// retries, with the same or (if nothing was written yet) another target.
func TestAFailedEnableProtectionCanBeRetriedWithAnotherTargetIfNothingWasWritten(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, job := protectedVM(t, h)
		first, _ := h.s.GetProtection(t.Context(), vm.ID)
		// Running: enabling again is refused, naming the job.
		_, err := h.s.EnableProtection(t.Context(), alice, vm.ID, first.PolicyID, first.TargetID)
		wantConflict(t, err, "already_protected")
		if stalled, _ := h.s.EnableStalled(t.Context(), vm.ID); stalled {
			t.Fatal("stalled while its job runs")
		}

		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck),
			models.TaskOutcome{ErrorCode: "target_unavailable", Message: "the directory /mnt/typo does not exist"})
		wantJob(t, h, job.ID, models.JobFailed)
		if stalled, err := h.s.EnableStalled(t.Context(), vm.ID); err != nil || !stalled {
			t.Fatalf("stalled %v %v after the failed job", stalled, err)
		}
		if n := len(openAlerts(t, h, models.AlertProtectionCritical)); n != 1 {
			t.Fatalf("%d critical alerts", n)
		}

		other := mustDirectoryTarget(t, h, "nas2")
		retry, err := h.s.EnableProtection(t.Context(), alice, vm.ID, first.PolicyID, other.ID)
		if err != nil {
			t.Fatalf("retry with another target: %v", err)
		}
		if retry.ID == job.ID || retry.Type != models.JobEnableProtection || len(retry.Steps) != 4 {
			t.Fatalf("retry job %+v", retry)
		}
		p, _ := h.s.GetProtection(t.Context(), vm.ID)
		if p.ID != first.ID || p.TargetID != other.ID || p.Health != models.HealthNormal || p.LastErrorCode != "" || p.State != models.StateEnablingProtection {
			t.Fatalf("protection after retry %+v", p)
		}
		if n := len(openAlerts(t, h, models.AlertProtectionCritical)); n != 0 {
			t.Fatalf("%d critical alerts left open after the retry", n)
		}
		// The retry runs to the end and protects the VM.
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		create := leaseOne(t, h, host.ID, agentproto.TaskCreateReplica)
		if pl := payloadOf(t, create); pl.Target.Path != other.Path {
			t.Fatalf("the retry writes to %q, want the new target %q", pl.Target.Path, other.Path)
		}
		complete(t, h, host.ID, create, models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))
		wantJob(t, h, retry.ID, models.JobSucceeded)
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.State != models.StateProtected {
			t.Fatalf("state %s after the retry", p.State)
		}
	})
}

func TestARetryAfterTheReplicaWasBegunKeepsItsTarget(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, job := protectedVM(t, h)
		first, _ := h.s.GetProtection(t.Context(), vm.ID)
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, models.TaskOutcome{ErrorCode: "disk_read_failed", Message: "I/O error"})
		wantJob(t, h, job.ID, models.JobFailed)

		other := mustDirectoryTarget(t, h, "nas2")
		_, err := h.s.EnableProtection(t.Context(), alice, vm.ID, first.PolicyID, other.ID)
		wantConflict(t, err, "partial_replica")
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.TargetID != first.TargetID {
			t.Fatal("a refused retry changed the target")
		}
		policy2 := mustPolicy(t, h, "p2")
		retry, err := h.s.EnableProtection(t.Context(), alice, vm.ID, policy2.ID, first.TargetID)
		if err != nil {
			t.Fatalf("retry with the same target and another policy: %v", err)
		}
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.PolicyID != policy2.ID || p.ReplicaKey != first.ReplicaKey {
			t.Fatalf("protection after the retry %+v", p)
		}
		wantJob(t, h, retry.ID, models.JobInProgress)
	})
}

// A directory target that holds another VM's replicas must hold its marker
// for the next VM's check: the payload says so (in_use).
func TestAPayloadSaysWhenItsTargetHoldsOtherVMsReplicas(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		first, host, _ := replicating(t, h)
		p, _ := h.s.GetProtection(t.Context(), first.ID)
		second := mustVMs(t, h, host.ID, "db")["db"]
		if _, err := h.s.EnableProtection(t.Context(), alice, second.ID, p.PolicyID, p.TargetID); err != nil {
			t.Fatal(err)
		}
		check := leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck)
		if pl := payloadOf(t, check); !pl.Target.InUse || !pl.Target.MustExist {
			t.Fatalf("the second VM's check: in_use %v must_exist %v", pl.Target.InUse, pl.Target.MustExist)
		}
	})
}
