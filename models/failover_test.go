package models_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

func materializePayload(t *testing.T, task models.Task) agentproto.MaterializePayload {
	t.Helper()
	var pl agentproto.MaterializePayload
	if err := json.Unmarshal([]byte(task.Payload), &pl); err != nil {
		t.Fatal(err)
	}
	return pl
}

func materializedResult(pl agentproto.MaterializePayload) models.TaskOutcome {
	b, _ := json.Marshal(agentproto.MaterializeResult{VM: agentproto.VM{ID: pl.VMID, Name: pl.VMName}, PointID: pl.PointID,
		BytesWritten: 4096, Started: pl.Start, Isolated: pl.Test})
	return models.TaskOutcome{Result: string(b)}
}

// cycleWith completes a scheduled cycle whose point has the consistency.
func cycleWith(t *testing.T, h *harness, host *models.Host, consistency string) string {
	t.Helper()
	h.advance(time.Hour)
	schedule(t, h)
	task := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
	var pl agentproto.ReplicationPayload
	json.Unmarshal([]byte(task.Payload), &pl)
	b, _ := json.Marshal(agentproto.ReplicateResult{PointID: pl.PointID, Time: h.clock.T, Consistency: consistency, SizeBytes: 1 << 30})
	complete(t, h, host.ID, task, models.TaskOutcome{Result: string(b)})
	return pl.PointID
}

func wantJob(t *testing.T, h *harness, id, state string) *models.Job {
	t.Helper()
	j, err := h.s.GetJob(t.Context(), id)
	if err != nil || j.State != state {
		t.Fatalf("job %s: %+v %v, want %s", id, j, err, state)
	}
	return j
}

func TestATestFailoverMakesAnIsolatedCopyBesideReplicationAndItsCleanupRecordsTheDrill(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, first := replicating(t, h)
		other := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		if d, _ := h.s.Dashboard(t.Context()); d.VMsWithoutDrill != 1 {
			t.Fatalf("VMs without a drill: %d", d.VMsWithoutDrill)
		}
		_, err := h.s.StartTestFailover(t.Context(), alice, vm.ID, models.RecoveryRequest{RecoveryPoint: models.PointLatestAppConsistent, RecoveryHostID: other.ID})
		wantConflict(t, err, "no_recovery_point")
		_, err = h.s.StartTestFailover(t.Context(), alice, vm.ID, models.RecoveryRequest{RecoveryPoint: "rp-nope", RecoveryHostID: other.ID})
		wantFields(t, err, "recovery_point")

		job, err := h.s.StartTestFailover(t.Context(), alice, vm.ID, models.RecoveryRequest{RecoveryHostID: other.ID})
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.s.StartTestFailover(t.Context(), alice, vm.ID, models.RecoveryRequest{RecoveryHostID: other.ID})
		wantConflict(t, err, "test_failover_exists")
		task := leaseOne(t, h, other.ID, agentproto.TaskMaterialize)
		pl := materializePayload(t, task)
		if pl.PointID != first || !pl.Test || !pl.Start || pl.VMName != vm.Name+"-test" || pl.SourceVMID != vm.ID || pl.Replication.ReplicaKey != vm.ID {
			t.Fatalf("materialize payload %+v", pl)
		}
		// While the copy reads the point, the VM's cycle waits; replication
		// is not stopped.
		h.advance(time.Hour)
		q := schedule(t, h)
		if len(q) != 1 {
			t.Fatalf("no cycle scheduled beside the test failover's copy: %+v", q)
		}
		var cyc agentproto.ReplicationPayload
		json.Unmarshal([]byte(q[0].Payload), &cyc)
		if len(cyc.KeepPoints) != 1 || cyc.KeepPoints[0] != first {
			t.Fatalf("the cycle beside the copy may prune the point it reads: keep %v", cyc.KeepPoints)
		}
		if got := leaseAll(t, h, host.ID); len(got) != 0 {
			t.Fatalf("a cycle ran beside the test failover's copy: %+v", got)
		}
		complete(t, h, other.ID, task, materializedResult(pl))
		wantJob(t, h, job.ID, models.JobSucceeded)
		p := wantProtection(t, h, vm.ID, models.StateProtected, models.HealthWarning) // the hour without a cycle
		if !p.TestFailover || p.TestFailoverHostID != other.ID || p.TestFailoverPointID != first {
			t.Fatalf("test failover not recorded: %+v", p)
		}
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, cycle, cycleResult(cycle, h.clock.T))

		cleanup, err := h.s.CleanupTestFailover(t.Context(), alice, vm.ID, "booted, app answered on :443")
		if err != nil {
			t.Fatal(err)
		}
		remove := leaseOne(t, h, other.ID, agentproto.TaskRemoveVM)
		var power agentproto.PowerPayload
		json.Unmarshal([]byte(remove.Payload), &power)
		if power.VMID != pl.VMID {
			t.Fatalf("cleanup removes %q, the test VM is %q", power.VMID, pl.VMID)
		}
		complete(t, h, other.ID, remove, models.TaskOutcome{Result: `{"was_running":true,"power_state":"Off"}`})
		wantJob(t, h, cleanup.ID, models.JobSucceeded)
		p = wantProtection(t, h, vm.ID, models.StateProtected, models.HealthNormal)
		if p.TestFailover || p.LastDrillAt == nil || p.LastDrillNotes != "booted, app answered on :443" || p.LastDrillPointID != first {
			t.Fatalf("drill not recorded: %+v", p)
		}
		if d, _ := h.s.Dashboard(t.Context()); d.VMsWithoutDrill != 0 {
			t.Fatalf("VMs without a drill after one: %d", d.VMsWithoutDrill)
		}
		_, err = h.s.CleanupTestFailover(t.Context(), alice, vm.ID, "")
		wantConflict(t, err, "no_test_failover")
	})
}

func TestRecoveryIsRefusedWithTheReasonForBadInput(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		down := mustHost(t, h, host.SiteID, "down", models.HostDisconnected)
		old := mustHost(t, h, host.SiteID, "old", models.HostConnected)
		h.rawDB(t).Model(&models.Host{}).Where("id = ?", old.ID).Update("features", "check_prerequisites replicate replica_keys")
		_, err := h.s.StartTestFailover(t.Context(), alice, vm.ID, models.RecoveryRequest{RecoveryHostID: down.ID})
		wantConflict(t, err, "recovery_host_disconnected")
		_, err = h.s.StartFailover(t.Context(), alice, vm.ID, true, models.RecoveryRequest{RecoveryHostID: old.ID})
		wantConflict(t, err, "recovery_host_unsupported")
		// Planned failover onto the VM's own host: a VM of its name is there.
		_, err = h.s.StartFailover(t.Context(), alice, vm.ID, true, models.RecoveryRequest{})
		wantConflict(t, err, "recovery_vm_exists")
		_, err = h.s.CommitFailover(t.Context(), alice, vm.ID)
		wantConflict(t, err, "nothing_to_commit")

		unprotected := mustVMs(t, h, host.ID, "web", "db")["db"]
		_, err = h.s.StartTestFailover(t.Context(), alice, unprotected.ID, models.RecoveryRequest{})
		wantConflict(t, err, "not_protected")

		// Only inconsistent points: refused unless named.
		bad := cycleWith(t, h, host, models.ConsistencyInconsistent)
		h.rawDB(t).Where("consistency <> ?", models.ConsistencyInconsistent).Delete(&models.RecoveryPoint{})
		other := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		_, err = h.s.StartTestFailover(t.Context(), alice, vm.ID, models.RecoveryRequest{RecoveryHostID: other.ID})
		wantConflict(t, err, "inconsistent_point")
		if _, err := h.s.StartTestFailover(t.Context(), alice, vm.ID, models.RecoveryRequest{RecoveryPoint: bad, RecoveryHostID: other.ID}); err != nil {
			t.Fatalf("an inconsistent point named by its id: %v", err)
		}
		_, err = h.s.StartFailover(t.Context(), alice, vm.ID, false, models.RecoveryRequest{RecoveryHostID: other.ID})
		wantConflict(t, err, "failover_running")
	})
}

func TestPlannedFailoverStopsWhenTheSourceWillNotShutDownAndRunsToTheEndWhenRestarted(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, first := replicating(t, h)
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		job, err := h.s.StartFailover(t.Context(), alice, vm.ID, true, models.RecoveryRequest{RecoveryHostID: dr.ID})
		if err != nil {
			t.Fatal(err)
		}
		wantProtection(t, h, vm.ID, models.StateFailingOver, models.HealthNormal)
		h.advance(time.Hour)
		if q := schedule(t, h); len(q) != 0 {
			t.Fatalf("cycles scheduled while failing over: %+v", q)
		}
		shutdown := leaseOne(t, h, host.ID, agentproto.TaskShutdownVM)
		complete(t, h, host.ID, shutdown, models.TaskOutcome{ErrorCode: agentproto.CodeVMWillNotStop, Message: "the stop command failed; it may still run"})
		failed := wantJob(t, h, job.ID, models.JobFailed)
		if failed.ErrorCode != agentproto.CodeVMWillNotStop || failed.Steps[1].State != models.JobCancelled || failed.Steps[2].State != models.JobCancelled {
			t.Fatalf("failed job %+v", failed)
		}
		wantProtection(t, h, vm.ID, models.StateProtected, models.HealthNormal)
		alerts, _, _ := h.s.ListAlerts(t.Context(), models.AlertFilter{}, models.Page{})
		if len(alerts) != 1 || alerts[0].Kind != models.AlertFailoverFailed || !strings.Contains(alerts[0].Message, "restart the job") {
			t.Fatalf("alerts %+v", alerts)
		}
		if got := leaseAll(t, h, dr.ID); len(got) != 0 {
			t.Fatalf("the recovery host got work after the failover failed: %+v", got)
		}

		if _, err := h.s.RestartJob(t.Context(), alice, job.ID); err != nil {
			t.Fatal(err)
		}
		wantJob(t, h, job.ID, models.JobInProgress)
		wantProtection(t, h, vm.ID, models.StateFailingOver, models.HealthNormal)
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskShutdownVM), models.TaskOutcome{Result: `{"was_running":true,"power_state":"Off"}`})
		final := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, final, cycleResult(final, h.clock.T))
		task := leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		pl := materializePayload(t, task)
		var finalPl agentproto.ReplicationPayload
		json.Unmarshal([]byte(final.Payload), &finalPl)
		if pl.PointID != finalPl.PointID || pl.Test || !pl.Start || pl.VMName != vm.Name {
			t.Fatalf("materialize %+v, final cycle's point %s", pl, finalPl.PointID)
		}
		complete(t, h, dr.ID, task, materializedResult(pl))
		wantJob(t, h, job.ID, models.JobSucceeded)
		p := wantProtection(t, h, vm.ID, models.StateFailedOver, models.HealthNormal)
		if p.FailoverPointID != finalPl.PointID || p.FailoverHostID != dr.ID || p.FailoverKind != models.FailoverPlanned || p.FailedOverAt == nil {
			t.Fatalf("failover not recorded: %+v", p)
		}
		if alerts, _, _ := h.s.ListAlerts(t.Context(), models.AlertFilter{State: models.AlertActive}, models.Page{}); len(alerts) != 0 {
			t.Fatalf("the failover-failed alert stays: %+v", alerts)
		}
		_, err = h.s.StartFailover(t.Context(), alice, vm.ID, false, models.RecoveryRequest{RecoveryHostID: dr.ID})
		wantConflict(t, err, "already_failed_over")

		// Another point, then commit: the older points go, the vault
		// forgets them.
		change, err := h.s.ChangeRecoveryPoint(t.Context(), alice, vm.ID, first)
		if err != nil {
			t.Fatal(err)
		}
		again := leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		if pl := materializePayload(t, again); !pl.Replace || pl.PointID != first || pl.VMID != p.FailoverVMID {
			t.Fatalf("change point payload %+v", pl)
		}
		complete(t, h, dr.ID, again, materializedResult(materializePayload(t, again)))
		wantJob(t, h, change.ID, models.JobSucceeded)
		commit, err := h.s.CommitFailover(t.Context(), alice, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		ct := leaseOne(t, h, dr.ID, agentproto.TaskCommitPoint)
		b, _ := json.Marshal(agentproto.CommitResult{PointID: first, Deleted: []string{}, Points: []string{first, finalPl.PointID}})
		complete(t, h, dr.ID, ct, models.TaskOutcome{Result: string(b)})
		wantJob(t, h, commit.ID, models.JobSucceeded)
		p = wantProtection(t, h, vm.ID, models.StateCommitted, models.HealthNormal)
		if p.CommittedAt == nil || p.FailoverPointID != first {
			t.Fatalf("commit not recorded: %+v", p)
		}
		_, err = h.s.CommitFailover(t.Context(), alice, vm.ID)
		wantConflict(t, err, "nothing_to_commit")
	})
}

func TestAnUnplannedFailoverOfAVMWhoseHostIsGoneUsesTheNewestConsistentPointAndSaysWhatIsLost(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		crash := cycleWith(t, h, host, models.ConsistencyCrash)
		cycleWith(t, h, host, models.ConsistencyInconsistent)
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		h.rawDB(t).Model(&models.Host{}).Where("id = ?", host.ID).Update("state", models.HostDisconnected)
		_, err := h.s.StartFailover(t.Context(), alice, vm.ID, true, models.RecoveryRequest{RecoveryHostID: dr.ID})
		wantConflict(t, err, "recovery_host_disconnected")
		job, err := h.s.StartFailover(t.Context(), alice, vm.ID, false, models.RecoveryRequest{RecoveryPoint: models.PointLatest, RecoveryHostID: dr.ID, ShutDownSource: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(job.Steps) != 3 || !strings.Contains(job.Steps[0].Message, "not connected") || !strings.Contains(job.Steps[1].Message, crash) ||
			!strings.Contains(job.Steps[1].Message, "lost") {
			t.Fatalf("steps %+v", job.Steps)
		}
		task := leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		if pl := materializePayload(t, task); pl.PointID != crash {
			t.Fatalf("unplanned failover recovers %s, want the newest crash-consistent %s", pl.PointID, crash)
		}
		complete(t, h, dr.ID, task, materializedResult(materializePayload(t, task)))
		p := wantProtection(t, h, vm.ID, models.StateFailedOver, models.HealthWarning) // its newest point is inconsistent
		if p.FailoverKind != models.FailoverUnplanned {
			t.Fatalf("kind %q", p.FailoverKind)
		}
	})
}

func TestAnUnplannedFailoverToLatestProcessesTheSourcesDataFirstWhenItAnswers(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		earlier := cycleWith(t, h, host, models.ConsistencyCrash)
		job, err := h.s.StartFailover(t.Context(), alice, vm.ID, false, models.RecoveryRequest{RecoveryPoint: models.PointLatest, RecoveryHostID: dr.ID})
		if err != nil {
			t.Fatal(err)
		}
		final := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		var fp agentproto.ReplicationPayload
		json.Unmarshal([]byte(final.Payload), &fp)
		// The VM ran: its final point is inconsistent, so the newest
		// consistent one before it is recovered.
		b, _ := json.Marshal(agentproto.ReplicateResult{PointID: fp.PointID, Time: h.clock.T, Consistency: models.ConsistencyInconsistent, SizeBytes: 1 << 30})
		complete(t, h, host.ID, final, models.TaskOutcome{Result: string(b)})
		task := leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		if pl := materializePayload(t, task); pl.PointID != earlier {
			t.Fatalf("recovers %s, want %s (the final point %s is inconsistent)", pl.PointID, earlier, fp.PointID)
		}
		complete(t, h, dr.ID, task, materializedResult(materializePayload(t, task)))
		wantJob(t, h, job.ID, models.JobSucceeded)
	})
}

func TestARecoveryHostThatStopsAnsweringFailsTheStepAndTheJobRunsOnWhenRestarted(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, first := replicating(t, h)
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		job, err := h.s.StartFailover(t.Context(), alice, vm.ID, false, models.RecoveryRequest{RecoveryHostID: dr.ID})
		if err != nil {
			t.Fatal(err)
		}
		leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		// The source keeps its heartbeat; the recovery host goes silent.
		h.rawDB(t).Model(&models.Host{}).Where("id = ?", host.ID).Update("last_heartbeat", h.clock.T.Add(time.Minute))
		h.rawDB(t).Model(&models.Host{}).Where("id = ?", dr.ID).Update("last_heartbeat", h.clock.T)
		h.advance(time.Minute)
		if _, err := h.s.MarkSilentHostsDisconnected(t.Context(), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		failed := wantJob(t, h, job.ID, models.JobFailed)
		if failed.ErrorCode != agentproto.CodeHostDisconnected || !strings.Contains(failed.ErrorMessage, "dr stopped answering") {
			t.Fatalf("job %+v", failed)
		}
		wantProtection(t, h, vm.ID, models.StateProtected, models.HealthNormal)
		h.rawDB(t).Model(&models.Host{}).Where("id = ?", dr.ID).Update("state", models.HostConnected)
		if _, err := h.s.RestartJob(t.Context(), alice, job.ID); err != nil {
			t.Fatal(err)
		}
		task := leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		if pl := materializePayload(t, task); pl.PointID != first {
			t.Fatalf("restarted materialize reads %s, want %s", pl.PointID, first)
		}
		complete(t, h, dr.ID, task, materializedResult(materializePayload(t, task)))
		wantJob(t, h, job.ID, models.JobSucceeded)
		wantProtection(t, h, vm.ID, models.StateFailedOver, models.HealthNormal)
	})
}

func TestCancellingAPlannedFailoverAfterTheShutdownStartsTheSourceAgain(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		job, err := h.s.StartFailover(t.Context(), alice, vm.ID, true, models.RecoveryRequest{RecoveryHostID: dr.ID})
		if err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskShutdownVM), models.TaskOutcome{Result: `{"was_running":true,"power_state":"Off"}`})
		if err := h.s.CancelJob(t.Context(), alice, job.ID); err != nil {
			t.Fatal(err)
		}
		wantJob(t, h, job.ID, models.JobCancelled)
		wantProtection(t, h, vm.ID, models.StateProtected, models.HealthNormal)
		start := leaseOne(t, h, host.ID, agentproto.TaskStartVM)
		var pl agentproto.PowerPayload
		json.Unmarshal([]byte(start.Payload), &pl)
		if pl.VMID != "web" {
			t.Fatalf("starts %q", pl.VMID)
		}
		complete(t, h, host.ID, start, models.TaskOutcome{Result: `{"was_running":false,"power_state":"Running"}`})
		if got := leaseAll(t, h, dr.ID); len(got) != 0 {
			t.Fatalf("the cancelled failover went on: %+v", got)
		}
	})
}

func TestARestartedPlannedFailoverShutsDownAndRunsAFinalCycleAgain(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		job, err := h.s.StartFailover(t.Context(), alice, vm.ID, true, models.RecoveryRequest{RecoveryHostID: dr.ID})
		if err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskShutdownVM), models.TaskOutcome{Result: `{"was_running":true,"power_state":"Off"}`})
		final := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, final, cycleResult(final, h.clock.T))
		complete(t, h, dr.ID, leaseOne(t, h, dr.ID, agentproto.TaskMaterialize), models.TaskOutcome{ErrorCode: agentproto.CodeRecoveryHostFull, Message: "full"})
		wantJob(t, h, job.ID, models.JobFailed)
		// Meanwhile the source ran again and a cycle made a newer point.
		newer := cycleWith(t, h, host, models.ConsistencyCrash)
		if _, err := h.s.RestartJob(t.Context(), alice, job.ID); err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskShutdownVM), models.TaskOutcome{Result: `{"was_running":true,"power_state":"Off"}`})
		again := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		var a, f agentproto.ReplicationPayload
		json.Unmarshal([]byte(again.Payload), &a)
		json.Unmarshal([]byte(final.Payload), &f)
		if a.PointID == f.PointID || a.PointID == newer {
			t.Fatalf("the restarted final cycle makes point %s (first final %s, newer %s)", a.PointID, f.PointID, newer)
		}
		complete(t, h, host.ID, again, cycleResult(again, h.clock.T))
		task := leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		if pl := materializePayload(t, task); pl.PointID != a.PointID {
			t.Fatalf("the restart recovers %s, not its new final point %s", pl.PointID, a.PointID)
		}
	})
}

func TestAMaterializeFailedForASilentHostThatReportsDoneAfterAllIsTaken(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		job, err := h.s.StartFailover(t.Context(), alice, vm.ID, false, models.RecoveryRequest{RecoveryHostID: dr.ID})
		if err != nil {
			t.Fatal(err)
		}
		task := leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		h.rawDB(t).Model(&models.Host{}).Where("id = ?", host.ID).Update("last_heartbeat", h.clock.T.Add(time.Minute))
		h.rawDB(t).Model(&models.Host{}).Where("id = ?", dr.ID).Update("last_heartbeat", h.clock.T)
		h.advance(time.Minute)
		if _, err := h.s.MarkSilentHostsDisconnected(t.Context(), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		wantJob(t, h, job.ID, models.JobFailed)
		wantProtection(t, h, vm.ID, models.StateProtected, models.HealthNormal)
		// The agent was only cut off: it made and started the VM.
		o := materializedResult(materializePayload(t, task))
		o.Attempt = 1
		complete(t, h, dr.ID, task, o)
		wantJob(t, h, job.ID, models.JobSucceeded)
		wantProtection(t, h, vm.ID, models.StateFailedOver, models.HealthNormal)
	})
}

// Instant recovery goes only to a host whose agent says it can start a
// VM before its disks are copied, and tells that agent to.
func TestInstantRecoveryNeedsAHostThatOffersItAndSaysSoInTheTask(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		plain := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		h.rawDB(t).Model(&models.Host{}).Where("id = ?", plain.ID).Update("features", "inventory materialize remove_vm replica_keys")
		_, err := h.s.StartTestFailover(t.Context(), alice, vm.ID, models.RecoveryRequest{RecoveryHostID: plain.ID, Instant: true})
		wantConflict(t, err, "instant_not_supported")
		_, err = h.s.StartFailover(t.Context(), alice, vm.ID, false, models.RecoveryRequest{RecoveryHostID: plain.ID, Instant: true})
		wantConflict(t, err, "instant_not_supported")

		qemuHost := mustHost(t, h, host.SiteID, "qemu-dr", models.HostConnected)
		h.rawDB(t).Model(&models.Host{}).Where("id = ?", qemuHost.ID).Update("features", "inventory instant_failover materialize remove_vm replica_keys")
		job, err := h.s.StartTestFailover(t.Context(), alice, vm.ID, models.RecoveryRequest{RecoveryHostID: qemuHost.ID, Instant: true})
		if err != nil {
			t.Fatal(err)
		}
		if j := wantJob(t, h, job.ID, models.JobInProgress); !strings.Contains(j.Steps[1].Name, "copy them to the host") {
			t.Fatalf("step %q", j.Steps[1].Name)
		}
		if pl := materializePayload(t, leaseOne(t, h, qemuHost.ID, agentproto.TaskMaterialize)); !pl.Instant || !pl.Test || !pl.Start {
			t.Fatalf("payload %+v: want an instant, isolated start", pl)
		}
	})
}
