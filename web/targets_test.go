package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/models"
)

// The path of a target that holds replicas cannot change: the page would
// show the new path while the VMs write to the old one. The refusal names
// the VMs and where their replicas stay; the API says the same.
func TestATargetHoldingReplicasKeepsItsPath(t *testing.T) {
	tv := newTestVault(t, "")
	s := seedInventory(t, tv, nil)
	ctx := context.Background()
	policy := models.DefaultPolicy()
	policy.Name = "Gold"
	tv.Store.CreatePolicy(ctx, models.SystemActor, &policy)
	target, err := tv.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/replicas"})
	if err != nil {
		t.Fatal(err)
	}
	// Unused, the path may change.
	p := tv.login("Contributor")
	resp, _ := p.post("/targets/"+target.ID, url.Values{"name": {"nas"}, "kind": {"directory"}, "path": {"/srv/replicas2"}})
	if got, _ := tv.Store.GetTarget(ctx, target.ID); resp.StatusCode != http.StatusOK || got.Path != "/srv/replicas2" {
		t.Fatalf("an unused target's path: %d %q", resp.StatusCode, got.Path)
	}
	if _, err := tv.Store.EnableProtection(ctx, models.SystemActor, s.unprotectedVM, policy.ID, target.ID); err != nil {
		t.Fatal(err)
	}
	resp, doc := p.post("/targets/"+target.ID, url.Values{"name": {"nas"}, "kind": {"directory"}, "path": {"/mnt/elsewhere"}})
	msg := testid(doc, "form-error").Text()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(msg, "db") || !strings.Contains(msg, "/srv/replicas2") {
		t.Fatalf("path change of a target in use: %d %q", resp.StatusCode, msg)
	}
	if got, _ := tv.Store.GetTarget(ctx, target.ID); got.Path != "/srv/replicas2" {
		t.Fatalf("the path changed to %q", got.Path)
	}
	// A rename is still fine.
	resp, _ = p.post("/targets/"+target.ID, url.Values{"name": {"NAS 1"}, "kind": {"directory"}, "path": {"/srv/replicas2"}})
	if got, _ := tv.Store.GetTarget(ctx, target.ID); resp.StatusCode != http.StatusOK || got.Name != "NAS 1" {
		t.Fatalf("rename of a target in use: %d %q", resp.StatusCode, got.Name)
	}
	status, raw := tv.apiRaw(http.MethodPut, "/api/v1/targets/"+target.ID, tv.apiToken("Contributor"), `{"name":"NAS 1","kind":"directory","path":"/mnt/elsewhere"}`)
	body := string(raw)
	if status != http.StatusConflict || !strings.Contains(body, `"target_in_use"`) || !strings.Contains(body, "db") {
		t.Fatalf("API path change of a target in use: %d %s", status, body)
	}
}

// A directory target says whether hosts may create its path; off by
// default, set only on purpose, and shown back by the form and the API.
func TestCreatingATargetsPathIsAChoiceMadeOnPurpose(t *testing.T) {
	tv := newTestVault(t, "")
	p := tv.login("Contributor")
	_, doc := p.get("/targets/new")
	if _, checked := doc.Find(`[data-testid="target-create-path"]`).Attr("checked"); checked || testid(doc, "target-create-path").Length() != 1 {
		t.Fatal("the create-the-directory choice is missing or made by default")
	}
	p.post("/targets", url.Values{"name": {"local"}, "kind": {"directory"}, "path": {"/var/lib/lifeboat-replicas"}, "create_path": {"on"}})
	p.post("/targets", url.Values{"name": {"share"}, "kind": {"directory"}, "path": {"/mnt/nas"}})
	status, raw := tv.apiRaw(http.MethodGet, "/api/v1/targets", tv.apiToken("Reader"), nil)
	body := string(raw)
	if status != http.StatusOK || !strings.Contains(body, `"name":"local"`) {
		t.Fatalf("targets: %d %s", status, body)
	}
	targets, _, _ := tv.Store.ListTargets(context.Background(), models.Page{Limit: 10})
	for _, tg := range targets {
		if tg.CreatePath != (tg.Name == "local") {
			t.Fatalf("target %s: create_path %v", tg.Name, tg.CreatePath)
		}
		_, doc := p.get("/targets/" + tg.ID)
		if _, checked := doc.Find(`[data-testid="target-create-path"]`).Attr("checked"); checked != tg.CreatePath {
			t.Fatalf("target %s's form shows create_path %v", tg.Name, checked)
		}
	}
	if !strings.Contains(body, `"create_path":true`) || !strings.Contains(body, `"create_path":false`) {
		t.Fatalf("the API does not say create_path: %s", body)
	}
}

// The form shows one kind's fields; without JavaScript, links switch the
// kind. A target reached with a SAS warns that every host gets that SAS.
func TestTheTargetFormShowsOneKindAndWarnsOfASharedSAS(t *testing.T) {
	tv := newTestVault(t, "")
	p := tv.login("Contributor")
	_, doc := p.get("/targets/new")
	if _, hidden := doc.Find(`[data-testid="azure-fields"]`).Attr("hidden"); !hidden {
		t.Fatal("the Azure fields show on a new directory target")
	}
	if _, hidden := doc.Find(`[data-testid="directory-fields"]`).Attr("hidden"); hidden {
		t.Fatal("the directory fields are hidden on a new directory target")
	}
	if href, _ := doc.Find(`[data-testid="target-kind-links"] a`).First().Attr("href"); href != "/targets/new?kind=azure_blob" {
		t.Fatalf("no-JavaScript kind link %q", href)
	}
	_, doc = p.get("/targets/new?kind=azure_blob")
	if _, hidden := doc.Find(`[data-testid="azure-fields"]`).Attr("hidden"); hidden {
		t.Fatal("?kind=azure_blob does not show the Azure fields")
	}
	if testid(doc, "sas-warning").Length() != 1 {
		t.Fatal("the form does not say what a SAS credential means")
	}
	resp, _ := p.post("/targets", url.Values{"name": {"blob"}, "kind": {"azure_blob"}, "account_url": {"https://lb.blob.core.windows.net"},
		"container": {"lifeboat"}, "credential_kind": {"sas"}, "credential": {"sv=2024-08-04&ss=b&srt=sco&sp=rwdlac&sig=abc"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create SAS target: %d", resp.StatusCode)
	}
	targets, _, _ := tv.Store.ListTargets(context.Background(), models.Page{Limit: 10})
	_, doc = p.get("/targets/" + targets[0].ID)
	if !strings.Contains(testid(doc, "target-sas-warning").Text(), "every host agent gets that same SAS") {
		t.Fatal("the SAS target's page does not warn")
	}
}
