package models_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/models"
)

// planVMs reports n VMs on a new host and returns their ids in report order.
func planVMs(t *testing.T, h *harness, n int) []string {
	t.Helper()
	site := mustSite(t, h, "Primary")
	host := mustHost(t, h, site.ID, "hv1", models.HostConnected)
	reports := make([]models.VMReport, n)
	for i := range reports {
		reports[i] = models.VMReport{ExternalID: fmt.Sprintf("vm-%03d", i), Name: fmt.Sprintf("vm %d", i)}
	}
	if err := h.s.ReportInventory(t.Context(), host.ID, reports); err != nil {
		t.Fatal(err)
	}
	byExternal := vmsOfHost(t, h, host.ID)
	ids := make([]string, n)
	for i := range reports {
		ids[i] = byExternal[reports[i].ExternalID].ID
	}
	return ids
}

func groupVMs(g models.PlanGroup) []string {
	return idsOf(g.VMs, func(m models.PlanGroupVM) string { return m.VMID })
}

func TestRecoveryPlanCreateGetUpdateDelete(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm := planVMs(t, h, 4)
		in := models.PlanInput{Name: " Tier 1 ", Description: "databases, then web", Groups: []models.GroupInput{
			{Name: "Databases", VMIDs: []string{vm[1], vm[0]}, Actions: []models.ActionInput{
				{Phase: models.PhasePost, Kind: models.ActionManual, Name: "Check replication", Instructions: "Look at the DB console"},
				{Phase: models.PhasePre, Kind: models.ActionScript, Name: "Stop jobs", Script: "/opt/scripts/stop.sh"},
				{Phase: models.PhasePost, Kind: models.ActionScript, Name: "Warm cache", Script: "/opt/scripts/warm.sh"},
			}},
			{VMIDs: []string{vm[2]}},
		}}
		p, err := h.s.CreatePlan(ctx, alice, in)
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if !strings.HasPrefix(p.ID, "plan_") || p.Name != "Tier 1" || p.Description != "databases, then web" || len(p.Groups) != 2 {
			t.Fatalf("plan = %+v", p)
		}
		g1, g2 := p.Groups[0], p.Groups[1]
		if g1.Name != "Databases" || g1.Seq != 1 || !slices.Equal(groupVMs(g1), []string{vm[1], vm[0]}) {
			t.Errorf("group 1 = %+v, want Databases with %s then %s", g1, vm[1], vm[0])
		}
		if g2.Name != "Group 2" || g2.Seq != 2 || !slices.Equal(groupVMs(g2), []string{vm[2]}) {
			t.Errorf("group 2 = %+v, want the default name and %s", g2, vm[2])
		}
		var actions []string
		for _, a := range g1.Actions {
			actions = append(actions, fmt.Sprintf("%s%d:%s", a.Phase, a.Seq, a.Name))
		}
		if want := []string{"pre1:Stop jobs", "post1:Check replication", "post2:Warm cache"}; !slices.Equal(actions, want) {
			t.Errorf("actions = %v, want %v (pre before post, each in order)", actions, want)
		}
		if got, err := h.s.GetPlan(ctx, p.ID); err != nil || len(got.Groups) != 2 {
			t.Fatalf("GetPlan = %+v, %v", got, err)
		}
		wantAudit(t, h, "recovery_plan.create", p.ID)

		// PlanToInput round-trips.
		back := models.PlanToInput(p)
		if back.Name != "Tier 1" || len(back.Groups) != 2 || !slices.Equal(back.Groups[0].VMIDs, []string{vm[1], vm[0]}) || len(back.Groups[0].Actions) != 3 {
			t.Errorf("PlanToInput = %+v", back)
		}

		// Saving replaces the groups entirely.
		oldGroups := []string{g1.ID, g2.ID}
		updated, err := h.s.UpdatePlan(ctx, alice, p.ID, models.PlanInput{Name: "Tier 1", Groups: []models.GroupInput{
			{Name: "Everything", VMIDs: []string{vm[3], vm[2]}},
		}})
		if err != nil {
			t.Fatalf("update: %v", err)
		}
		if len(updated.Groups) != 1 || updated.Groups[0].Name != "Everything" || !slices.Equal(groupVMs(updated.Groups[0]), []string{vm[3], vm[2]}) ||
			len(updated.Groups[0].Actions) != 0 || updated.Description != "" {
			t.Errorf("updated plan = %+v", updated)
		}
		if slices.Contains(oldGroups, updated.Groups[0].ID) {
			t.Error("an old group survived the update")
		}
		if n := h.countRows(t, &models.PlanGroup{}, ""); n != 1 {
			t.Errorf("group rows = %d, want 1", n)
		}
		if n := h.countRows(t, &models.PlanAction{}, ""); n != 0 {
			t.Errorf("action rows = %d, want 0: the old actions must go", n)
		}
		if n := h.countRows(t, &models.PlanGroupVM{}, ""); n != 2 {
			t.Errorf("group VM rows = %d, want 2", n)
		}
		wantAudit(t, h, "recovery_plan.update", p.ID)

		if err := h.s.DeletePlan(ctx, alice, p.ID); err != nil {
			t.Fatal(err)
		}
		_, err = h.s.GetPlan(ctx, p.ID)
		wantNotFound(t, "get deleted plan", err)
		for _, m := range []any{&models.PlanGroup{}, &models.PlanGroupVM{}, &models.PlanAction{}} {
			if n := h.countRows(t, m, ""); n != 0 {
				t.Errorf("%T rows left after deleting the plan: %d", m, n)
			}
		}
		wantAudit(t, h, "recovery_plan.delete", p.ID)
	})
}

func TestRecoveryPlanRefusals(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm := planVMs(t, h, 3)
		group := func(ids ...string) models.GroupInput { return models.GroupInput{VMIDs: ids} }
		cases := []struct {
			name   string
			in     models.PlanInput
			fields []string
		}{
			{"no name", models.PlanInput{Groups: []models.GroupInput{group(vm[0])}}, []string{"name"}},
			{"long description", models.PlanInput{Name: "p", Description: strings.Repeat("d", 501)}, []string{"description"}},
			{"a VM in two groups", models.PlanInput{Name: "p", Groups: []models.GroupInput{group(vm[0], vm[1]), group(vm[2], vm[0])}}, []string{"groups[1].vm_ids"}},
			{"a VM twice in one group", models.PlanInput{Name: "p", Groups: []models.GroupInput{group(vm[0], vm[0])}}, []string{"groups[0].vm_ids"}},
			{"an unknown VM", models.PlanInput{Name: "p", Groups: []models.GroupInput{group(vm[0]), group("vm_nope")}}, []string{"groups[1].vm_ids"}},
			{"too many groups", models.PlanInput{Name: "p", Groups: make([]models.GroupInput, models.MaxPlanGroups+1)}, []string{"groups"}},
			{"relative script", models.PlanInput{Name: "p", Groups: []models.GroupInput{{Actions: []models.ActionInput{
				{Phase: models.PhasePre, Kind: models.ActionScript, Name: "s", Script: "stop.sh"}}}}}, []string{"groups[0].actions[0].script"}},
			{"manual action without instructions", models.PlanInput{Name: "p", Groups: []models.GroupInput{{Actions: []models.ActionInput{
				{Phase: models.PhasePost, Kind: models.ActionManual, Name: "m"}}}}}, []string{"groups[0].actions[0].instructions"}},
			{"unknown phase and kind", models.PlanInput{Name: "p", Groups: []models.GroupInput{{Actions: []models.ActionInput{
				{Phase: "during", Kind: "email", Name: "x"}}}}}, []string{"groups[0].actions[0].phase", "groups[0].actions[0].kind"}},
			{"action without a name", models.PlanInput{Name: "p", Groups: []models.GroupInput{{Actions: []models.ActionInput{
				{Phase: models.PhasePre, Kind: models.ActionScript, Script: "/s.sh"}}}}}, []string{"groups[0].actions[0].name"}},
		}
		for _, c := range cases {
			_, err := h.s.CreatePlan(ctx, alice, c.in)
			t.Run(c.name, func(t *testing.T) { wantFields(t, err, c.fields...) })
		}
		if plans, _, err := h.s.ListPlans(ctx, models.Page{}); err != nil || len(plans) != 0 {
			t.Errorf("plans after refused creates = %d (%v), want 0", len(plans), err)
		}
		if n := h.countRows(t, &models.PlanGroup{}, ""); n != 0 {
			t.Errorf("group rows after refused creates = %d, want 0", n)
		}
		wantNoAudit(t, h, "recovery_plan.create")

		// A refused update leaves the plan as it was.
		p, err := h.s.CreatePlan(ctx, alice, models.PlanInput{Name: "Tier 1", Groups: []models.GroupInput{group(vm[0])}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.s.UpdatePlan(ctx, alice, p.ID, models.PlanInput{Name: "Tier 1", Groups: []models.GroupInput{group(vm[1]), group(vm[1])}})
		wantFields(t, err, "groups[1].vm_ids")
		got, _ := h.s.GetPlan(ctx, p.ID)
		if len(got.Groups) != 1 || !slices.Equal(groupVMs(got.Groups[0]), []string{vm[0]}) {
			t.Errorf("plan after a refused update = %+v", got)
		}
		wantNoAudit(t, h, "recovery_plan.update")

		_, err = h.s.CreatePlan(ctx, alice, models.PlanInput{Name: "Tier 1"})
		wantFields(t, err, "name")
		other, err := h.s.CreatePlan(ctx, alice, models.PlanInput{Name: "Tier 2"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.s.UpdatePlan(ctx, alice, other.ID, models.PlanInput{Name: "Tier 1"})
		wantFields(t, err, "name")

		_, err = h.s.GetPlan(ctx, "plan_nope")
		wantNotFound(t, "get", err)
		_, err = h.s.UpdatePlan(ctx, alice, "plan_nope", models.PlanInput{Name: "x"})
		wantNotFound(t, "update", err)
		wantNotFound(t, "delete", h.s.DeletePlan(ctx, alice, "plan_nope"))
	})
}

func TestRecoveryPlanHoldsAtMost100VMs(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm := planVMs(t, h, models.MaxPlanVMs+1)
		// Split over two groups: the limit is per plan, not per group.
		_, err := h.s.CreatePlan(ctx, alice, models.PlanInput{Name: "Too big", Groups: []models.GroupInput{
			{VMIDs: vm[:50]}, {VMIDs: vm[50:]},
		}})
		wantFields(t, err, "groups")
		p, err := h.s.CreatePlan(ctx, alice, models.PlanInput{Name: "Just right", Groups: []models.GroupInput{
			{VMIDs: vm[:50]}, {VMIDs: vm[50:100]},
		}})
		if err != nil {
			t.Fatalf("a plan of 100 VMs: %v", err)
		}
		if n := len(p.Groups[0].VMs) + len(p.Groups[1].VMs); n != 100 {
			t.Errorf("plan holds %d VMs, want 100", n)
		}
	})
}
