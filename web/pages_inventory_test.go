package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"

	"github.com/lifeboat-dr/lifeboat/models"
)

func texts(sel *goquery.Selection) []string {
	var out []string
	sel.Each(func(_ int, s *goquery.Selection) { out = append(out, strings.TrimSpace(s.Text())) })
	return out
}

func TestEmptyInventoryPagesSayWhatComesNext(t *testing.T) {
	tv := newTestVault(t, "")
	p := tv.login("Reader")
	for path, id := range map[string]string{"/sites": "sites-empty", "/vms": "vms-empty", "/jobs": "jobs-empty"} {
		resp, doc := p.get(path)
		if resp.StatusCode != http.StatusOK || testid(doc, id).Length() != 1 {
			t.Errorf("%s: status %d, empty message found %d times", path, resp.StatusCode, testid(doc, id).Length())
		}
	}
	_, doc := p.get("/sites")
	if testid(doc, "new-site").Length() != 0 {
		t.Error("a Reader is offered the New site button")
	}
}

func TestSiteIsCreatedEditedAndDeletedThroughThePortal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		p := tv.login("Contributor")
		resp, doc := p.post("/sites", url.Values{"name": {"  "}, "description": {"kept"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-name").Length() != 1 {
			t.Fatalf("empty name: %d", resp.StatusCode)
		}
		if v, _ := doc.Find(`input[name="description"]`).Attr("value"); v != "kept" {
			t.Fatalf("typed description lost: %q", v)
		}
		resp, doc = p.post("/sites", url.Values{"name": {"Paris"}, "description": {"Main datacenter"}})
		if resp.StatusCode != http.StatusOK || testid(doc, "site-title").Text() != "Site Paris" {
			t.Fatalf("create: %d %q", resp.StatusCode, testid(doc, "site-title").Text())
		}
		sitePath := resp.Request.URL.Path
		if testid(doc, "hosts-empty").Length() != 1 {
			t.Fatal("a new site must say it has no host yet")
		}
		resp, _ = p.post(sitePath, url.Values{"name": {"Paris-1"}, "description": {"Renamed"}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("edit: %d", resp.StatusCode)
		}
		_, doc = p.get("/sites")
		if got := texts(testid(doc, "site-name")); len(got) != 1 || got[0] != "Paris-1" {
			t.Fatalf("list after edit: %v", got)
		}
		resp, doc = p.post(sitePath+"/delete", nil)
		if resp.StatusCode != http.StatusOK || testid(doc, "sites-empty").Length() != 1 {
			t.Fatalf("delete: %d", resp.StatusCode)
		}
	})
}

func TestSiteWithHostsIsNotDeletedAndThePageSaysWhy(t *testing.T) {
	tv := newTestVault(t, "")
	s := seedInventory(t, tv, nil)
	p := tv.login("Contributor")
	resp, doc := p.post("/sites/"+s.site+"/delete", nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(testid(doc, "form-error").Text(), "host") {
		t.Fatalf("delete a site with a host: %d %q", resp.StatusCode, testid(doc, "form-error").Text())
	}
	if _, err := tv.Store.GetSite(context.Background(), s.site); err != nil {
		t.Fatal("the site was deleted")
	}
}

func TestSitesHostsAndVMsPagesShowTheInventory(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		s := seedInventory(t, av.testVault, av.raw)
		p := av.login("Reader")
		_, doc := p.get("/sites")
		if got := texts(testid(doc, "site-connected")); len(got) != 2 || got[0] != "1" || got[1] != "0" {
			t.Fatalf("connected host counts: %v", got)
		}
		_, doc = p.get("/sites/" + s.site)
		if texts(testid(doc, "host-name"))[0] != "hv1" || !strings.Contains(testid(doc, "host-state").Text(), "Connected") {
			t.Fatal("site page does not list its connected host")
		}
		_, doc = p.get("/hosts/" + s.host)
		if got := texts(testid(doc, "vm-name")); len(got) != 2 {
			t.Fatalf("host page VMs: %v", got)
		}
		_, doc = p.get("/vms/" + s.protectedVM)
		if testid(doc, "vm-title").Text() != "VM web" || !strings.Contains(testid(doc, "vm-health").Text(), "Warning") ||
			!strings.Contains(testid(doc, "vm-health-reasons").Text(), "RPO above") || testid(doc, "vm-rpo").Text() != "1 min 30 s" {
			t.Fatalf("protected VM page: title %q health %q rpo %q", testid(doc, "vm-title").Text(), testid(doc, "vm-health").Text(), testid(doc, "vm-rpo").Text())
		}
		_, doc = p.get("/vms/" + s.unprotectedVM)
		if testid(doc, "disk-row").Length() != 2 || testid(doc, "vm-not-protected").Length() != 1 {
			t.Fatal("unprotected VM page: disks or 'not protected' missing")
		}
		resp, doc := p.get("/vms/vm_nonexistent")
		if resp.StatusCode != http.StatusNotFound || testid(doc, "error-code").Text() != "not_found" {
			t.Fatalf("unknown VM: %d", resp.StatusCode)
		}
	})
}

func TestVMListFiltersBySiteHostAndHealth(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		s := seedInventory(t, av.testVault, av.raw)
		ctx := context.Background()
		other := &models.Host{SiteID: s.otherSite, Name: "hv2"}
		if err := av.Store.CreateHost(ctx, models.SystemActor, other); err != nil {
			t.Fatal(err)
		}
		if err := av.Store.ReportInventory(ctx, other.ID, []models.VMReport{{ExternalID: "mail", Name: "mail"}}); err != nil {
			t.Fatal(err)
		}
		p := av.login("Reader")
		cases := map[string][]string{
			"/vms":                                           {"web", "db", "mail"},
			"/vms?site_id=" + s.site:                         {"web", "db"},
			"/vms?site_id=" + s.otherSite:                    {"mail"},
			"/vms?host_id=" + other.ID:                       {"mail"},
			"/vms?health=Warning":                            {"web"},
			"/vms?health=Unprotected":                        {"db", "mail"},
			"/vms?health=Critical":                           nil,
			"/vms?site_id=" + s.site + "&health=Unprotected": {"db"},
		}
		for path, want := range cases {
			resp, doc := p.get(path)
			got := texts(testid(doc, "vm-name"))
			if resp.StatusCode != http.StatusOK || strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%s: %d %v, want %v", path, resp.StatusCode, got, want)
			}
		}
		resp, _ := p.get("/vms?health=Sick")
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("unknown health: %d, want 400", resp.StatusCode)
		}
	})
}

func TestJobsListFiltersAndTheJobPageShowsStepsAndError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		s := seedInventory(t, tv, nil)
		old := &models.Job{Type: "Check host prerequisites", State: models.JobSucceeded}
		tv.Clock.T = tv.Clock.T.Add(-48 * 3600e9)
		if err := tv.Store.CreateJob(context.Background(), models.SystemActor, old); err != nil {
			t.Fatal(err)
		}
		tv.Clock.T = tv.Clock.T.Add(48 * 3600e9)
		p := tv.login("Reader")
		cases := map[string][]string{
			"/jobs":                       {"Check host prerequisites", "Resync", "Failover"},
			"/jobs?state=Failed":          {"Failover"},
			"/jobs?type=Resync":           {"Resync"},
			"/jobs?since=24h":             {"Resync", "Failover"},
			"/jobs?state=Failed&since=1h": {"Failover"},
			"/jobs?state=WaitingForInput": nil,
		}
		for path, want := range cases {
			resp, doc := p.get(path)
			got := texts(testid(doc, "job-type"))
			// Newest first, in the order they were stored.
			if resp.StatusCode != http.StatusOK || strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%s: %d %v, want %v", path, resp.StatusCode, got, want)
			}
		}
		for _, bad := range []string{"/jobs?state=Done", "/jobs?since=1y"} {
			if resp, _ := p.get(bad); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: %d, want 400", bad, resp.StatusCode)
			}
		}
		_, doc := p.get("/jobs/" + s.failedJob)
		if got := texts(testid(doc, "step-name")); strings.Join(got, ",") != "Prerequisites check,Fail over" {
			t.Fatalf("steps: %v", got)
		}
		if testid(doc, "job-error-code").Text() != "replica_missing" || !strings.Contains(testid(doc, "job-error-action").Text(), "re-enable protection") {
			t.Fatal("the failed job's error and action are not shown")
		}
		if got := texts(testid(doc, "step-progress")); !strings.Contains(got[1], "40 %") {
			t.Fatalf("step progress: %v", got)
		}
	})
}
