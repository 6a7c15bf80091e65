package main

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/models"
)

// The audit log page (Contributor and Owner) lists who changed what,
// filtered by user, action and object, each object linked to its page.
func TestTheAuditPageFiltersByUserActionAndObjectAndLinksEach(t *testing.T) {
	tv := newTestVault(t, "")
	ctx := context.Background()
	alice, _ := tv.createUser("Contributor")
	aliceActor := models.Actor{Username: alice}
	policy := models.DefaultPolicy()
	policy.Name = "Gold"
	if err := tv.Store.CreatePolicy(ctx, aliceActor, &policy); err != nil {
		t.Fatal(err)
	}
	target, err := tv.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/replicas"})
	if err != nil {
		t.Fatal(err)
	}
	p := tv.login("Contributor")
	resp, doc := p.get("/audit")
	if resp.StatusCode != http.StatusOK || testid(doc, "audit-row").Length() < 2 {
		t.Fatalf("audit page: %d, %d rows", resp.StatusCode, testid(doc, "audit-row").Length())
	}
	if doc.Find(`nav a[href="/audit"]`).Length() != 1 {
		t.Fatal("no Audit log in the Contributor's menu")
	}
	// By user: only alice's policy.
	_, doc = p.get("/audit?actor=" + alice)
	if got := strings.Join(texts(testid(doc, "audit-action")), ","); got != "policy.create" {
		t.Fatalf("alice's events: %q", got)
	}
	if href, _ := testid(doc, "audit-object").Attr("href"); href != "/policies/"+policy.ID {
		t.Fatalf("the policy's link %q", href)
	}
	// By action and by object.
	_, doc = p.get("/audit?action=target.create")
	if got := texts(testid(doc, "audit-object")); len(got) != 1 || got[0] != "nas" {
		t.Fatalf("target.create events: %v", got)
	}
	_, doc = p.get("/audit?object_kind=target&object_id=" + target.ID)
	if href, _ := testid(doc, "audit-object").Attr("href"); testid(doc, "audit-row").Length() != 1 || href != "/targets/"+target.ID {
		t.Fatalf("the target's events: %d, link %q", testid(doc, "audit-row").Length(), href)
	}
	// The filters offer what the log holds.
	if doc.Find(`[data-testid="audit-filter-actor"] option[value="`+alice+`"]`).Length() != 1 {
		t.Fatal("the user filter does not offer alice")
	}
	// A misspelt filter is refused, not ignored.
	if resp, _ := p.get("/audit?acter=" + alice); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("misspelt filter: %d", resp.StatusCode)
	}
	// Readers and Operators do not see it.
	for _, role := range []string{"Reader", "Operator"} {
		if resp, _ := tv.login(role).get("/audit"); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s on /audit: %d", role, resp.StatusCode)
		}
	}
	// The API takes the same filters.
	var list struct {
		Items []struct{ Action, Actor string }
	}
	if status := tv.api(http.MethodGet, "/api/v1/audit?actor="+alice, tv.apiToken("Contributor"), nil, &list); status != http.StatusOK ||
		len(list.Items) != 1 || list.Items[0].Action != "policy.create" {
		t.Fatalf("API audit by actor: %d %+v", status, list.Items)
	}
}
