package models_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// protectedVMs protects VMs of one host and runs their Enable protection
// jobs to the end.
func protectedVMs(t *testing.T, h *harness, names ...string) (map[string]models.VMSummary, *models.Host) {
	t.Helper()
	site := mustSite(t, h, "s")
	host := mustHost(t, h, site.ID, "hv", models.HostConnected)
	vms := mustVMs(t, h, host.ID, names...)
	policy, target := mustPolicy(t, h, "p"), mustDirectoryTarget(t, h, "nas")
	for _, n := range names {
		if _, err := h.s.EnableProtection(t.Context(), alice, vms[n].ID, policy.ID, target.ID); err != nil {
			t.Fatal(err)
		}
	}
	for _, kind := range []string{agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica, agentproto.TaskReplicate} {
		for _, task := range leaseAll(t, h, host.ID) {
			if task.Kind != kind {
				t.Fatalf("leased %s, want %s", task.Kind, kind)
			}
			o := models.TaskOutcome{Result: "{}"}
			if kind == agentproto.TaskReplicate {
				o = cycleResult(task, h.clock.T)
			}
			complete(t, h, host.ID, task, o)
		}
	}
	return vms, host
}

func advancePlans(t *testing.T, h *harness) {
	t.Helper()
	if _, err := h.s.AdvancePlans(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestARecoveryPlanRunsItsGroupsInOrderBetweenTheirActions(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vms, host := protectedVMs(t, h, "a", "b", "c")
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		unprotected := mustVMs(t, h, host.ID, "a", "b", "c", "d")["d"]
		in := models.PlanInput{Name: "Tier 1", Groups: []models.GroupInput{
			{Name: "Databases", VMIDs: []string{vms["a"].ID, vms["b"].ID},
				Actions: []models.ActionInput{{Phase: models.PhasePre, Kind: models.ActionScript, Name: "stop the app tier", Script: "/opt/dr/pre.sh"}}},
			{Name: "Web", VMIDs: []string{vms["c"].ID, unprotected.ID},
				Actions: []models.ActionInput{{Phase: models.PhasePost, Kind: models.ActionManual, Name: "DNS", Instructions: "point www at the recovery site"}}},
		}}
		plan, err := h.s.CreatePlan(t.Context(), alice, in)
		if err != nil {
			t.Fatal(err)
		}
		req := models.PlanRunRequest{Operation: models.PlanTestFailover, RecoveryHostID: dr.ID}
		_, err = h.s.RunPlan(t.Context(), alice, plan.ID, req)
		wantConflict(t, err, "plan_vms_not_ready")
		if !strings.Contains(err.Error(), "vm d not protected") {
			t.Fatalf("the refusal does not name the VM and why: %v", err)
		}
		req.SkipIneligible = true
		job, err := h.s.RunPlan(t.Context(), alice, plan.ID, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(job.Steps) != 5 || !strings.Contains(job.Steps[0].Message, "left out: VM vm d not protected") {
			t.Fatalf("steps %+v", job.Steps)
		}

		// The pre action's script runs on the recovery host, with the plan's
		// context.
		script := leaseOne(t, h, dr.ID, agentproto.TaskRunScript)
		var sp agentproto.ScriptPayload
		json.Unmarshal([]byte(script.Payload), &sp)
		var pc agentproto.PlanContext
		json.Unmarshal(sp.Context, &pc)
		if sp.Path != "/opt/dr/pre.sh" || pc.FailoverType != models.PlanTestFailover || pc.Direction != models.DirectionPrimaryToRecovery ||
			pc.Group.Name != "Databases" || pc.Phase != "pre" || len(pc.VMs) != 3 || pc.VMs[0].RecoveryName != "vm a-test" || pc.Plan.Name != "Tier 1" {
			t.Fatalf("script payload %s, context %+v", sp.Path, pc)
		}
		advancePlans(t, h)
		if got := leaseAll(t, h, dr.ID); len(got) != 0 {
			t.Fatalf("the group started before its pre action ended: %+v", got)
		}
		b, _ := json.Marshal(agentproto.ScriptResult{Output: "app tier stopped\n"})
		complete(t, h, dr.ID, script, models.TaskOutcome{Result: string(b)})
		advancePlans(t, h)

		// Group 1's two VMs fail over together; group 2 waits for them.
		first := leaseAll(t, h, dr.ID)
		if len(first) != 2 || first[0].Kind != agentproto.TaskMaterialize || first[1].Kind != agentproto.TaskMaterialize {
			t.Fatalf("group 1: %+v", first)
		}
		complete(t, h, dr.ID, first[0], materializedResult(materializePayload(t, first[0])))
		advancePlans(t, h)
		if got := leaseAll(t, h, dr.ID); len(got) != 0 {
			t.Fatalf("group 2 started before group 1 ended: %+v", got)
		}
		complete(t, h, dr.ID, first[1], materializedResult(materializePayload(t, first[1])))
		advancePlans(t, h)
		second := leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		if pl := materializePayload(t, second); pl.SourceVMID != vms["c"].ID {
			t.Fatalf("group 2 recovers %s", pl.SourceVMID)
		}
		complete(t, h, dr.ID, second, materializedResult(materializePayload(t, second)))
		advancePlans(t, h)

		// The post action waits for an operator.
		got := wantJob(t, h, job.ID, models.JobWaitingForInput)
		if got.Steps[4].State != models.JobWaitingForInput || !strings.Contains(got.Steps[4].Message, "point www") ||
			!strings.Contains(got.Steps[1].Message, "app tier stopped") {
			t.Fatalf("steps %+v", got.Steps)
		}
		children, _, _ := h.s.ListJobs(t.Context(), models.JobFilter{Parent: job.ID}, models.Page{})
		if len(children) != 3 {
			t.Fatalf("%d VM jobs, want 3", len(children))
		}
		if _, err := h.s.ResumeJob(t.Context(), alice, job.ID, "www now points at dr"); err != nil {
			t.Fatal(err)
		}
		done := wantJob(t, h, job.ID, models.JobSucceeded)
		if !strings.Contains(done.Steps[4].Message, "www now points at dr") {
			t.Fatalf("the operator's notes are not in the job: %+v", done.Steps[4])
		}
		_, err = h.s.ResumeJob(t.Context(), alice, job.ID, "")
		wantConflict(t, err, "job_not_waiting")
	})
}

func TestAPlanStopsAtAGroupWhoseVMFailedAndAtAFailedScript(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vms, host := protectedVMs(t, h, "a", "b")
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		plan, err := h.s.CreatePlan(t.Context(), alice, models.PlanInput{Name: "p", Groups: []models.GroupInput{
			{Name: "one", VMIDs: []string{vms["a"].ID}},
			{Name: "two", VMIDs: []string{vms["b"].ID}, Actions: []models.ActionInput{{Phase: models.PhasePre, Kind: models.ActionScript, Name: "s", Script: "/x.sh"}}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		job, err := h.s.RunPlan(t.Context(), alice, plan.ID, models.PlanRunRequest{Operation: models.PlanPlannedFailover, RecoveryHostID: dr.ID})
		if err != nil {
			t.Fatal(err)
		}
		shutdown := leaseOne(t, h, host.ID, agentproto.TaskShutdownVM)
		complete(t, h, host.ID, shutdown, models.TaskOutcome{ErrorCode: agentproto.CodeVMWillNotStop, Message: "the guest ignored it"})
		advancePlans(t, h)
		failed := wantJob(t, h, job.ID, models.JobFailed)
		if failed.ErrorCode != agentproto.CodeVMWillNotStop || !strings.Contains(failed.ErrorMessage, "vm a") ||
			failed.Steps[2].State != models.JobCancelled || failed.Steps[3].State != models.JobCancelled {
			t.Fatalf("failed plan %+v", failed)
		}
		h.advance(time.Minute)
		if got := leaseAll(t, h, dr.ID); len(got) != 0 {
			t.Fatalf("a later group ran after a failed one: %+v", got)
		}
		alerts, _, _ := h.s.ListAlerts(t.Context(), models.AlertFilter{State: models.AlertActive}, models.Page{})
		plans := 0
		for _, a := range alerts {
			if a.Kind == models.AlertFailoverFailed && a.ObjectKind == "recovery_plan" {
				plans++
			}
		}
		if plans != 1 {
			t.Fatalf("alerts %+v", alerts)
		}

		// Restarted: the failed VM's job runs again (from its shutdown), then
		// the next group, after its script.
		if _, err := h.s.RestartJob(t.Context(), alice, job.ID); err != nil {
			t.Fatal(err)
		}
		wantJob(t, h, job.ID, models.JobInProgress)
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskShutdownVM), models.TaskOutcome{Result: `{"was_running":true,"power_state":"Off"}`})
		final := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, final, cycleResult(final, h.clock.T))
		m := leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		complete(t, h, dr.ID, m, materializedResult(materializePayload(t, m)))
		script := leaseOne(t, h, dr.ID, agentproto.TaskRunScript)
		complete(t, h, dr.ID, script, models.TaskOutcome{ErrorCode: agentproto.CodeScriptFailed, Message: "exit 3"})
		if failed := wantJob(t, h, job.ID, models.JobFailed); failed.ErrorCode != agentproto.CodeScriptFailed {
			t.Fatalf("plan after its script failed: %+v", failed)
		}
		if _, err := h.s.RestartJob(t.Context(), alice, job.ID); err != nil {
			t.Fatal(err)
		}
		complete(t, h, dr.ID, leaseOne(t, h, dr.ID, agentproto.TaskRunScript), models.TaskOutcome{Result: `{"exit_code":0,"output":"ok"}`})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskShutdownVM), models.TaskOutcome{Result: `{"was_running":true,"power_state":"Off"}`})
		final = leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, final, cycleResult(final, h.clock.T))
		m = leaseOne(t, h, dr.ID, agentproto.TaskMaterialize)
		complete(t, h, dr.ID, m, materializedResult(materializePayload(t, m)))
		wantJob(t, h, job.ID, models.JobSucceeded)
		wantProtection(t, h, vms["b"].ID, models.StateFailedOver, models.HealthNormal)
	})
}

func TestCancellingAPlanWaitingForAnOperatorEndsItAndItsVMJobs(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vms, host := protectedVMs(t, h, "a", "b")
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		plan, err := h.s.CreatePlan(t.Context(), alice, models.PlanInput{Name: "p", Groups: []models.GroupInput{
			{Name: "one", VMIDs: []string{vms["a"].ID}, Actions: []models.ActionInput{{Phase: models.PhasePre, Kind: models.ActionManual, Name: "m", Instructions: "check the network"}}},
			{Name: "two", VMIDs: []string{vms["b"].ID}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		job, err := h.s.RunPlan(t.Context(), alice, plan.ID, models.PlanRunRequest{Operation: models.PlanTestFailover, RecoveryHostID: dr.ID})
		if err != nil {
			t.Fatal(err)
		}
		wantJob(t, h, job.ID, models.JobWaitingForInput)
		if err := h.s.CancelJob(t.Context(), alice, job.ID); err != nil {
			t.Fatal(err)
		}
		wantJob(t, h, job.ID, models.JobCancelled)

		// Cancelled while a group's VM jobs run: they are cancelled too.
		job, err = h.s.RunPlan(t.Context(), alice, plan.ID, models.PlanRunRequest{Operation: models.PlanTestFailover, RecoveryHostID: dr.ID})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.ResumeJob(t.Context(), alice, job.ID, ""); err != nil {
			t.Fatal(err)
		}
		children, _, _ := h.s.ListJobs(t.Context(), models.JobFilter{Parent: job.ID}, models.Page{})
		if len(children) != 1 {
			t.Fatalf("%d VM jobs", len(children))
		}
		if err := h.s.CancelJob(t.Context(), alice, job.ID); err != nil {
			t.Fatal(err)
		}
		wantJob(t, h, job.ID, models.JobCancelled)
		wantJob(t, h, children[0].ID, models.JobCancelled)
		if p := wantProtection(t, h, vms["a"].ID, models.StateProtected, models.HealthNormal); p.TestFailover {
			t.Fatal("a cancelled test failover is still recorded")
		}
	})
}

func TestAPlansScriptWhoseLeaseRanOutIsNeverHandedOutAgain(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vms, host := protectedVMs(t, h, "a")
		dr := mustHost(t, h, host.SiteID, "dr", models.HostConnected)
		plan, err := h.s.CreatePlan(t.Context(), alice, models.PlanInput{Name: "p", Groups: []models.GroupInput{
			{Name: "one", VMIDs: []string{vms["a"].ID}, Actions: []models.ActionInput{{Phase: models.PhasePre, Kind: models.ActionScript, Name: "s", Script: "/x.sh"}}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		job, err := h.s.RunPlan(t.Context(), alice, plan.ID, models.PlanRunRequest{Operation: models.PlanTestFailover, RecoveryHostID: dr.ID})
		if err != nil {
			t.Fatal(err)
		}
		leaseOne(t, h, dr.ID, agentproto.TaskRunScript)
		h.advance(2 * time.Minute) // past the lease
		if _, err := h.s.ReapExpiredLeases(t.Context()); err != nil {
			t.Fatal(err)
		}
		if failed := wantJob(t, h, job.ID, models.JobFailed); failed.ErrorCode != agentproto.CodeLeaseExpired {
			t.Fatalf("plan after its script's lease ran out: %+v", failed)
		}
		h.advance(time.Hour)
		if got := leaseAll(t, h, dr.ID); len(got) != 0 {
			t.Fatalf("the script was handed out again: %+v", got)
		}
	})
}
