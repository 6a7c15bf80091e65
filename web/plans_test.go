package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"

	"github.com/lifeboat-dr/lifeboat/handlers"
	"github.com/lifeboat-dr/lifeboat/models"
)

// planTestVMs reports n VMs named "vm-000"… on a new host "hv1" and returns
// their ids in name order.
func planTestVMs(t *testing.T, tv *testVault, n int) []string {
	t.Helper()
	ctx := context.Background()
	site := &models.Site{Name: "Primary"}
	if err := tv.Store.CreateSite(ctx, models.SystemActor, site); err != nil {
		t.Fatal(err)
	}
	host := &models.Host{SiteID: site.ID, Name: "hv1", State: models.HostConnected}
	if err := tv.Store.CreateHost(ctx, models.SystemActor, host); err != nil {
		t.Fatal(err)
	}
	reports := make([]models.VMReport, n)
	for i := range reports {
		reports[i] = models.VMReport{ExternalID: fmt.Sprintf("ext-%03d", i), Name: fmt.Sprintf("vm-%03d", i), PowerState: "Running"}
	}
	if err := tv.Store.ReportInventory(ctx, host.ID, reports); err != nil {
		t.Fatal(err)
	}
	vms, _, err := tv.Store.ListVMs(ctx, models.VMFilter{HostID: host.ID}, models.Page{Limit: models.MaxPageSize})
	if err != nil || len(vms) != n {
		t.Fatalf("list reported VMs: %d, %v", len(vms), err)
	}
	slices.SortFunc(vms, func(a, b models.VMSummary) int { return strings.Compare(a.Name, b.Name) })
	ids := make([]string, n)
	for i, vm := range vms {
		ids[i] = vm.ID
	}
	return ids
}

// apiFields are the field names of a validation error answer.
func apiFields(t *testing.T, raw []byte) []string {
	t.Helper()
	var body struct {
		Error struct {
			Code    string
			Details struct{ Fields []models.FieldError }
		}
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("decode error body %q: %v", raw, err)
	}
	var out []string
	for _, f := range body.Error.Details.Fields {
		out = append(out, f.Field)
	}
	return out
}

func TestRecoveryPlanAPICreateGetUpdateListDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		vm := planTestVMs(t, tv, 3)
		token := tv.apiToken(models.RoleContributor)
		body := map[string]any{
			"name": "Tier 1", "description": "databases, then web",
			"groups": []map[string]any{
				{"name": "Databases", "vm_ids": []string{vm[1], vm[0]}, "actions": []map[string]any{
					{"phase": "post", "kind": "manual", "name": "Check the DB", "instructions": "Open the DB console"},
					{"phase": "pre", "kind": "script", "name": "Stop jobs", "script": "/opt/stop.sh"},
				}},
				{"name": "Web", "vm_ids": []string{vm[2]}},
			},
		}
		var created handlers.PlanJSON
		if status := tv.api(http.MethodPost, "/api/v1/recovery-plans", token, body, &created); status != http.StatusCreated {
			t.Fatalf("create: status %d", status)
		}
		if created.ID == "" || created.Name != "Tier 1" || created.Description != "databases, then web" || len(created.Groups) != 2 {
			t.Fatalf("created = %+v", created)
		}
		g1 := created.Groups[0]
		if g1.Name != "Databases" || !slices.Equal(g1.VMIDs, []string{vm[1], vm[0]}) || len(g1.Actions) != 2 ||
			g1.Actions[0] != (handlers.PlanActionJSON{Phase: "pre", Kind: "script", Name: "Stop jobs", Script: "/opt/stop.sh"}) ||
			g1.Actions[1] != (handlers.PlanActionJSON{Phase: "post", Kind: "manual", Name: "Check the DB", Instructions: "Open the DB console"}) {
			t.Errorf("group 1 = %+v, want the VMs in order and the pre action before the post one", g1)
		}
		if g2 := created.Groups[1]; g2.Name != "Web" || !slices.Equal(g2.VMIDs, []string{vm[2]}) || g2.Actions == nil {
			t.Errorf("group 2 = %+v (actions must be [] not null)", g2)
		}

		var got handlers.PlanJSON
		if status := tv.api(http.MethodGet, "/api/v1/recovery-plans/"+created.ID, token, nil, &got); status != http.StatusOK {
			t.Fatalf("get: status %d", status)
		}
		if got.Name != "Tier 1" || len(got.Groups) != 2 || !slices.Equal(got.Groups[0].VMIDs, g1.VMIDs) {
			t.Errorf("get = %+v", got)
		}

		// PUT replaces the whole plan: one group, the VMs moved, no actions.
		update := map[string]any{"name": "Tier 1 (all)", "groups": []map[string]any{{"name": "Everything", "vm_ids": []string{vm[2], vm[0]}}}}
		var updated handlers.PlanJSON
		if status := tv.api(http.MethodPut, "/api/v1/recovery-plans/"+created.ID, token, update, &updated); status != http.StatusOK {
			t.Fatalf("update: status %d", status)
		}
		if updated.Name != "Tier 1 (all)" || updated.Description != "" || len(updated.Groups) != 1 ||
			!slices.Equal(updated.Groups[0].VMIDs, []string{vm[2], vm[0]}) || len(updated.Groups[0].Actions) != 0 {
			t.Errorf("updated = %+v", updated)
		}

		var list struct {
			Items      []handlers.PlanJSON `json:"items"`
			NextCursor string              `json:"next_cursor"`
		}
		if status := tv.api(http.MethodGet, "/api/v1/recovery-plans", token, nil, &list); status != http.StatusOK {
			t.Fatalf("list: status %d", status)
		}
		if len(list.Items) != 1 || list.Items[0].ID != created.ID || len(list.Items[0].Groups) != 1 {
			t.Errorf("list = %+v", list)
		}

		if status := tv.api(http.MethodDelete, "/api/v1/recovery-plans/"+created.ID, token, nil, nil); status != http.StatusNoContent {
			t.Fatalf("delete: status %d", status)
		}
		if status := tv.api(http.MethodGet, "/api/v1/recovery-plans/"+created.ID, token, nil, nil); status != http.StatusNotFound {
			t.Errorf("get after delete: status %d, want 404", status)
		}
	})
}

func TestRecoveryPlanAPIRefusalsNameTheField(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		vm := planTestVMs(t, tv, models.MaxPlanVMs+1)
		token := tv.apiToken(models.RoleContributor)
		group := func(ids ...string) map[string]any { return map[string]any{"vm_ids": ids} }
		cases := []struct {
			name  string
			body  map[string]any
			field string
		}{
			{"a VM in two groups", map[string]any{"name": "p", "groups": []any{group(vm[0], vm[1]), group(vm[2], vm[0])}}, "groups[1].vm_ids"},
			{"an unknown VM", map[string]any{"name": "p", "groups": []any{group("vm_nope")}}, "groups[0].vm_ids"},
			{"more than 100 VMs", map[string]any{"name": "p", "groups": []any{group(vm[:60]...), group(vm[60:]...)}}, "groups"},
			{"a relative script", map[string]any{"name": "p", "groups": []any{
				map[string]any{"actions": []any{map[string]any{"phase": "pre", "kind": "script", "name": "s", "script": "stop.sh"}}}}}, "groups[0].actions[0].script"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				status, raw := tv.apiRaw(http.MethodPost, "/api/v1/recovery-plans", token, c.body)
				if status != http.StatusBadRequest || !slices.Contains(apiFields(t, raw), c.field) {
					t.Fatalf("status %d, body %s; want 400 naming %s", status, raw, c.field)
				}
			})
		}
		var list struct{ Items []handlers.PlanJSON }
		tv.api(http.MethodGet, "/api/v1/recovery-plans", token, nil, &list)
		if len(list.Items) != 0 {
			t.Fatalf("refused plans were stored: %+v", list.Items)
		}

		// A PUT must say which groups the plan keeps, so a rename cannot
		// silently empty the plan.
		var p handlers.PlanJSON
		if status := tv.api(http.MethodPost, "/api/v1/recovery-plans", token, map[string]any{"name": "Kept", "groups": []any{group(vm[0])}}, &p); status != http.StatusCreated {
			t.Fatalf("create: %d", status)
		}
		status, raw := tv.apiRaw(http.MethodPut, "/api/v1/recovery-plans/"+p.ID, token, map[string]any{"name": "Renamed"})
		if status != http.StatusBadRequest || !slices.Contains(apiFields(t, raw), "groups") {
			t.Fatalf("PUT without groups: %d %s, want 400 naming groups", status, raw)
		}
		var got handlers.PlanJSON
		tv.api(http.MethodGet, "/api/v1/recovery-plans/"+p.ID, token, nil, &got)
		if got.Name != "Kept" || len(got.Groups) != 1 {
			t.Fatalf("plan after a refused PUT = %+v", got)
		}
	})
}

func TestRecoveryPlanAPIReaderMayReadButNotWrite(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		writer, reader := tv.apiToken(models.RoleContributor), tv.apiToken(models.RoleReader)
		var p handlers.PlanJSON
		if status := tv.api(http.MethodPost, "/api/v1/recovery-plans", writer, map[string]any{"name": "Tier 1"}, &p); status != http.StatusCreated {
			t.Fatalf("create: %d", status)
		}
		if status := tv.api(http.MethodGet, "/api/v1/recovery-plans/"+p.ID, reader, nil, nil); status != http.StatusOK {
			t.Errorf("reader GET: %d, want 200", status)
		}
		writes := []struct{ method, path string }{
			{http.MethodPost, "/api/v1/recovery-plans"},
			{http.MethodPut, "/api/v1/recovery-plans/" + p.ID},
			{http.MethodDelete, "/api/v1/recovery-plans/" + p.ID},
		}
		for _, w := range writes {
			if status := tv.api(w.method, w.path, reader, map[string]any{"name": "Hijack", "groups": []any{}}, nil); status != http.StatusForbidden {
				t.Errorf("reader %s %s: %d, want 403", w.method, w.path, status)
			}
		}
		var got handlers.PlanJSON
		tv.api(http.MethodGet, "/api/v1/recovery-plans/"+p.ID, writer, nil, &got)
		if got.Name != "Tier 1" {
			t.Errorf("the reader changed the plan: %+v", got)
		}
	})
}

// groupNames are the plan page's group names in order.
func groupNames(doc *goquery.Document) []string {
	var out []string
	testid(doc, "group-name").Each(func(_ int, s *goquery.Selection) { out = append(out, s.Text()) })
	return out
}

// groupVMNames are the VM names shown in the group at 1-based position seq.
func groupVMNames(doc *goquery.Document, seq int) []string {
	var out []string
	testid(doc, "plan-group").Eq(seq - 1).Find(`[data-testid="plan-vm-name"]`).Each(func(_ int, s *goquery.Selection) { out = append(out, s.Text()) })
	return out
}

// wantPage checks that a portal form was accepted and led to the plan page.
func wantPlanPage(t *testing.T, what string, resp *http.Response, doc *goquery.Document, planPath string) {
	t.Helper()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != planPath {
		t.Fatalf("%s: status %d at %s; error %q", what, resp.StatusCode, resp.Request.URL, testid(doc, "form-error").Text()+testid(doc, "error-message").Text())
	}
	if testid(doc, "flash").Length() != 1 {
		t.Fatalf("%s: no confirmation", what)
	}
}

func TestRecoveryPlanBuiltStepByStepInThePortal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		p := tv.login(models.RoleContributor)
		_, doc := p.get("/recovery-plans")
		if testid(doc, "plans-empty").Length() != 1 {
			t.Fatal("an empty plan list must say so")
		}
		_, doc = p.get("/recovery-plans/new")
		if testid(doc, "plan-form").Length() != 1 {
			t.Fatal("no new plan form")
		}
		resp, doc := p.post("/recovery-plans", url.Values{"name": {"Tier 1"}, "description": {"databases first"}})
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.Path, "/recovery-plans/plan_") {
			t.Fatalf("create: %d at %s", resp.StatusCode, resp.Request.URL)
		}
		planPath := resp.Request.URL.Path
		if !strings.Contains(testid(doc, "plan-title").Text(), "Tier 1") || testid(doc, "groups-empty").Length() != 1 {
			t.Fatal("a new plan's page must show its name and say it has no group")
		}
		if testid(doc, "plan-run-form").Length() != 0 {
			t.Fatal("a plan without VMs offers to run")
		}

		resp, doc = p.post(planPath+"/groups", url.Values{"name": {"Databases"}})
		wantPlanPage(t, "add group", resp, doc, planPath)
		if testid(doc, "group-1-no-vms").Length() != 1 || !strings.Contains(testid(doc, "group-1-no-vms").Text(), "host agent") {
			t.Fatal("with no VMs in the vault the group must say where VMs come from")
		}
		resp, doc = p.post(planPath+"/groups", url.Values{"name": {"Web"}})
		wantPlanPage(t, "add second group", resp, doc, planPath)
		if got := groupNames(doc); !slices.Equal(got, []string{"Databases", "Web"}) {
			t.Fatalf("groups = %v", got)
		}

		vm := planTestVMs(t, tv, 3)
		_, doc = p.get(planPath)
		if n := testid(doc, "group-1-add-vm-form").Find("option").Length(); n != 3 {
			t.Fatalf("the Add VM select offers %d VMs, want 3", n)
		}
		for _, step := range []struct {
			group int
			vm    string
		}{{1, vm[0]}, {1, vm[1]}, {2, vm[2]}} {
			resp, doc = p.post(fmt.Sprintf("%s/groups/%d/vms", planPath, step.group), url.Values{"vm_id": {step.vm}})
			wantPlanPage(t, "add VM", resp, doc, planPath)
		}
		if got := groupVMNames(doc, 1); !slices.Equal(got, []string{"vm-000", "vm-001"}) {
			t.Fatalf("group 1 VMs = %v", got)
		}
		if got := groupVMNames(doc, 2); !slices.Equal(got, []string{"vm-002"}) {
			t.Fatalf("group 2 VMs = %v", got)
		}
		if host := testid(doc, "plan-vm-host").First().Text(); host != "hv1" {
			t.Errorf("VM host shown as %q, want hv1", host)
		}
		if !strings.Contains(testid(doc, "group-1-no-vms").Text(), "already in this plan") {
			t.Error("once every VM is in the plan the Add VM form must say so")
		}
		if testid(doc, "plan-run-form").Length() != 1 || testid(doc, "plan-operation").Length() != 1 {
			t.Error("a plan with VMs must offer to run it")
		}
		if _, doc := tv.login(models.RoleReader).get(planPath); testid(doc, "plan-run-form").Length() != 0 {
			t.Error("a Reader is offered to run a plan")
		}

		resp, doc = p.post(planPath+"/groups/1/actions", url.Values{"phase": {"post"}, "kind": {"manual"}, "name": {"Check the DB"}, "instructions": {"Open the DB console"}})
		wantPlanPage(t, "add manual action", resp, doc, planPath)
		resp, doc = p.post(planPath+"/groups/1/actions", url.Values{"phase": {"pre"}, "kind": {"script"}, "name": {"Stop jobs"}, "script": {"/opt/stop.sh"}})
		wantPlanPage(t, "add script action", resp, doc, planPath)
		if s := testid(doc, "group-1-pre-actions"); s.Find(`[data-testid="plan-action-script"]`).Text() != "/opt/stop.sh" {
			t.Fatalf("pre actions of group 1 = %q", s.Text())
		}
		if s := testid(doc, "group-1-post-actions"); s.Find(`[data-testid="plan-action-instructions"]`).Text() != "Open the DB console" {
			t.Fatalf("post actions of group 1 = %q", s.Text())
		}

		resp, doc = p.post(planPath+"/groups/2/move", url.Values{"direction": {"up"}})
		wantPlanPage(t, "move up", resp, doc, planPath)
		if got := groupNames(doc); !slices.Equal(got, []string{"Web", "Databases"}) {
			t.Fatalf("groups after moving Web up = %v", got)
		}
		if got := groupVMNames(doc, 2); !slices.Equal(got, []string{"vm-000", "vm-001"}) {
			t.Fatalf("the VMs must move with their group: group 2 VMs = %v", got)
		}
		if testid(doc, "group-2-pre-actions").Length() != 1 || testid(doc, "group-1-pre-actions").Length() != 0 {
			t.Fatal("the actions must move with their group")
		}

		resp, doc = p.post(fmt.Sprintf("%s/groups/2/vms/%s/delete", planPath, vm[0]), nil)
		wantPlanPage(t, "remove VM", resp, doc, planPath)
		if got := groupVMNames(doc, 2); !slices.Equal(got, []string{"vm-001"}) {
			t.Fatalf("group 2 VMs after removing vm-000 = %v", got)
		}
		if n := testid(doc, "group-1-add-vm-form").Find("option").Length(); n != 1 {
			t.Fatalf("a removed VM must be offered again: %d options, want 1", n)
		}

		removeAction, _ := testid(doc, "group-2-post-actions").Find("form").Attr("action")
		if !strings.Contains(removeAction, "/groups/2/actions/act_") {
			t.Fatalf("the post action's Remove form posts to %q", removeAction)
		}
		resp, doc = p.post(removeAction, nil)
		wantPlanPage(t, "remove action", resp, doc, planPath)
		if testid(doc, "group-2-post-empty").Length() != 1 || testid(doc, "group-2-pre-actions").Length() != 1 {
			t.Fatal("removing the post action must leave only the pre action")
		}

		resp, doc = p.post(planPath+"/groups/1/delete", nil)
		wantPlanPage(t, "delete group", resp, doc, planPath)
		if got := groupNames(doc); !slices.Equal(got, []string{"Databases"}) {
			t.Fatalf("groups after deleting Web = %v", got)
		}

		_, doc = p.get("/recovery-plans")
		if testid(doc, "plan-name").Text() != "Tier 1" || testid(doc, "plan-groups").Text() != "1" || testid(doc, "plan-vms").Text() != "1" {
			t.Fatalf("list row = %q", testid(doc, "plan-row").Text())
		}

		resp, doc = p.post(planPath+"/delete", nil)
		if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/recovery-plans" || testid(doc, "plans-empty").Length() != 1 {
			t.Fatalf("delete: %d at %s", resp.StatusCode, resp.Request.URL)
		}
		if resp, _ := p.get(planPath); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("deleted plan page: %d, want 404", resp.StatusCode)
		}
	})
}

func TestRecoveryPlanPortalRefusalsShowInline(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		p := tv.login(models.RoleContributor)
		resp, _ := p.post("/recovery-plans", url.Values{"name": {"Tier 1"}})
		planPath := resp.Request.URL.Path
		p.post(planPath+"/groups", url.Values{"name": {"Databases"}})

		form := url.Values{"phase": {"pre"}, "kind": {"script"}, "name": {"Stop jobs"}, "script": {"scripts/stop.sh"}}
		resp, doc := p.post(planPath+"/groups/1/actions", form)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("relative script: status %d, want 400", resp.StatusCode)
		}
		if msg := testid(doc, "error-groups[0].actions[0].script").Text(); !strings.Contains(msg, "absolute path") {
			t.Fatalf("inline error = %q, want the reason next to the script field", msg)
		}
		if v, _ := testid(doc, "group-1-add-action-form").Find(`input[name="script"]`).Attr("value"); v != "scripts/stop.sh" {
			t.Fatalf("the refused form must keep what was typed, script = %q", v)
		}
		if testid(doc, "plan-group").Length() != 1 || testid(doc, "group-1-pre-empty").Length() != 1 {
			t.Fatal("the refused page must show the plan as stored, without the action")
		}

		// Another plan's name is refused next to the name field.
		p.post("/recovery-plans", url.Values{"name": {"Tier 2"}})
		resp, doc = p.post(planPath, url.Values{"name": {"Tier 2"}, "description": {"typed"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-name").Length() != 1 {
			t.Fatalf("duplicate name: status %d, inline error %q", resp.StatusCode, testid(doc, "error-name").Text())
		}
		if v := testid(doc, "plan-form").Find("textarea").Text(); v != "typed" {
			t.Fatalf("the refused form must keep the typed description, got %q", v)
		}

		if resp, _ := p.post(planPath+"/groups/7/delete", nil); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("deleting a group that does not exist: %d, want 404", resp.StatusCode)
		}
		resp, doc = p.post(planPath+"/groups/1/move", url.Values{"direction": {"up"}})
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(testid(doc, "form-error").Text(), "first") {
			t.Fatalf("moving the first group up: %d %q, want 400 saying it is first", resp.StatusCode, testid(doc, "form-error").Text())
		}
	})
}

func TestRecoveryPlanPageHidesEditingFromReaders(t *testing.T) {
	tv := newTestVault(t, "")
	plan, err := tv.Store.CreatePlan(context.Background(), models.SystemActor, models.PlanInput{Name: "Tier 1", Groups: []models.GroupInput{{Name: "Databases"}}})
	if err != nil {
		t.Fatal(err)
	}
	p := tv.login(models.RoleReader)
	resp, doc := p.get("/recovery-plans/" + plan.ID)
	if resp.StatusCode != http.StatusOK || groupNames(doc)[0] != "Databases" {
		t.Fatalf("reader plan page: %d, groups %v", resp.StatusCode, groupNames(doc))
	}
	for _, id := range []string{"plan-form", "add-group-form", "plan-delete", "group-1-delete", "group-1-add-action-form", "group-1-no-vms"} {
		if testid(doc, id).Length() != 0 {
			t.Errorf("a Reader sees %s", id)
		}
	}
	if resp, _ := p.post("/recovery-plans/"+plan.ID+"/groups", url.Values{"name": {"Web"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("reader adds a group: %d, want 403", resp.StatusCode)
	}
}
