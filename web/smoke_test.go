package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestHealthzAnswersOKWhenTheDatabaseAnswers(t *testing.T) {
	tv := newTestVault(t, "")
	var out map[string]string
	if status := tv.api(http.MethodGet, "/healthz", "", nil, &out); status != http.StatusOK || out["status"] != "ok" {
		t.Fatalf("healthz: %d %v", status, out)
	}
	tv.Store.Close()
	if status := tv.api(http.MethodGet, "/healthz", "", nil, &out); status != http.StatusServiceUnavailable {
		t.Fatalf("healthz with the database closed: %d, want 503", status)
	}
}

func TestPolicyCreatedThroughThePortalFormAppearsInTheList(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		p := tv.login("Contributor")
		_, doc := p.get("/policies")
		if testid(doc, "policies-empty").Length() != 1 {
			t.Fatal("an empty policy list must say so")
		}
		form := url.Values{
			"name": {"Gold"}, "copy_frequency_seconds": {"30"}, "retention_hours": {"24"},
			"app_consistent_frequency_hours": {"4"}, "resync_window.start": {"18:30"}, "resync_window.end": {"06:00"},
			"bandwidth.work_hours.start": {"08:00"}, "bandwidth.work_hours.end": {"18:00"},
			"bandwidth.work_hours_mbps": {"100"}, "bandwidth.off_hours_mbps": {"0"},
		}
		resp, doc := p.post("/policies", form)
		if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/policies" {
			t.Fatalf("create: %d at %s", resp.StatusCode, resp.Request.URL)
		}
		if got := testid(doc, "policy-name").Text(); got != "Gold" {
			t.Fatalf("list shows %q, want Gold", got)
		}
		if !strings.Contains(testid(doc, "flash").Text(), "Gold") {
			t.Fatal("no confirmation after creating")
		}
		form.Set("retention_hours", "30")
		form.Set("name", "Silver")
		resp, doc = p.post("/policies", form)
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-retention_hours").Length() != 1 {
			t.Fatalf("invalid retention: status %d, inline error %q", resp.StatusCode, testid(doc, "error-retention_hours").Text())
		}
		if v, _ := doc.Find(`input[name="name"]`).Attr("value"); v != "Silver" {
			t.Fatalf("the refused form must keep what was typed, got name %q", v)
		}
	})
}
