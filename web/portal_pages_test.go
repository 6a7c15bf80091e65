package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/models"
)

// ownLogin logs a new user with role into a portal client of its own.
// tv.newPortal sets its cookie jar on the test server's one shared client,
// so a later tv.login or tv.newPortal takes over every earlier portal's
// session; a test that keeps two sessions apart uses this instead.
func ownLogin(t *testing.T, tv *testVault, name, password string) (*portal, bool) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	p := &portal{tv: tv, client: &http.Client{Transport: tv.srv.Client().Transport, Jar: jar}}
	p.get("/login")
	resp, _ := p.post("/login", url.Values{"username": {name}, "password": {password}})
	return p, resp.StatusCode == http.StatusOK && resp.Request.URL.Path == "/"
}

// These tests complete pages_inventory_test.go and admin_pages_test.go:
// what a Reader sees and is not offered, how refused filters are named,
// paging, and secrets on every target page.

func TestReaderSeesTheInventoryAndJobsButIsOfferedNoChange(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		s := seedInventory(t, av.testVault, av.raw)
		p := av.login("Reader")
		// Each page with the content a Reader must see and the controls
		// a Reader must not be offered.
		pages := []struct {
			path   string
			shown  []string
			hidden []string
		}{
			{"/sites", []string{"site-name", "site-connected", "site-disconnected"}, []string{"new-site"}},
			{"/sites/" + s.site, []string{"site-title", "host-name", "host-state"}, []string{"site-save", "site-delete", "registration-key"}},
			{"/hosts/" + s.host, []string{"host-title", "host-props", "vm-name"}, []string{"host-check", "host-delete"}},
			{"/vms", []string{"vm-filters", "vm-name", "vm-protection", "vm-health"}, nil},
			{"/vms/" + s.protectedVM, []string{"vm-title", "vm-props", "disk-row", "vm-rpo"}, nil},
			{"/jobs", []string{"job-filters", "job-type", "job-state"}, nil},
			{"/jobs/" + s.runningJob, []string{"job-title", "step-name", "step-progress"}, []string{"job-cancel"}},
			{"/targets", []string{"target-name"}, []string{"new-target"}},
		}
		for _, pg := range pages {
			resp, doc := p.get(pg.path)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d", pg.path, resp.StatusCode)
				continue
			}
			for _, id := range pg.shown {
				if testid(doc, id).Length() == 0 {
					t.Errorf("%s: %s is not shown to a Reader", pg.path, id)
				}
			}
			for _, id := range pg.hidden {
				if testid(doc, id).Length() != 0 {
					t.Errorf("%s: a Reader is offered %s", pg.path, id)
				}
			}
		}
		// The list row carries the disks and the VM's host.
		_, doc := p.get("/vms?health=Unprotected")
		row := testid(doc, "vm-row")
		if row.Length() != 1 || !strings.Contains(row.Text(), "hv1") || !strings.Contains(row.Text(), "2") {
			t.Fatalf("unprotected VM row: %q", row.Text())
		}
		// The routes refuse a Reader anyway.
		for _, path := range []string{"/sites/new", "/targets/new", "/users"} {
			if resp, _ := p.get(path); resp.StatusCode != http.StatusForbidden {
				t.Errorf("GET %s as a Reader: %d, want 403", path, resp.StatusCode)
			}
		}
		if resp, _ := p.post("/sites/"+s.site+"/delete", nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("delete a site as a Reader: %d, want 403", resp.StatusCode)
		}
		if _, err := av.Store.GetSite(context.Background(), s.site); err != nil {
			t.Fatal("a Reader deleted a site")
		}
	})
}

func TestRefusedListFiltersAnswer400NamingTheField(t *testing.T) {
	tv := newTestVault(t, "")
	p := tv.login("Reader")
	for path, field := range map[string]string{
		"/vms?health=Sick":                        "health",
		"/jobs?state=Done":                        "state",
		"/jobs?since=1y":                          "since",
		"/jobs?limit=0":                           "limit",
		"/vms?cursor=" + strings.Repeat("x", 101): "cursor",
	} {
		resp, doc := p.get(path)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(testid(doc, "error-message").Text(), field) {
			t.Errorf("%s: %d %q, want 400 naming %s", path, resp.StatusCode, testid(doc, "error-message").Text(), field)
		}
	}
}

func TestVMAndJobListsPageWithTheNextLink(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		ctx := context.Background()
		site := &models.Site{Name: "Paris"}
		if err := tv.Store.CreateSite(ctx, models.SystemActor, site); err != nil {
			t.Fatal(err)
		}
		host := &models.Host{SiteID: site.ID, Name: "hv1"}
		if err := tv.Store.CreateHost(ctx, models.SystemActor, host); err != nil {
			t.Fatal(err)
		}
		var reports []models.VMReport
		for i := 0; i < 5; i++ {
			reports = append(reports, models.VMReport{ExternalID: fmt.Sprint("vm", i), Name: fmt.Sprint("vm", i)})
			if err := tv.Store.CreateJob(ctx, models.SystemActor, &models.Job{Type: "Resync", State: models.JobSucceeded}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tv.Store.ReportInventory(ctx, host.ID, reports); err != nil {
			t.Fatal(err)
		}
		p := tv.login("Reader")
		for _, list := range []struct{ path, row string }{{"/vms?limit=2", "vm-row"}, {"/jobs?type=Resync&limit=2", "job-row"}} {
			seen, path := 0, list.path
			for pages := 0; path != ""; pages++ {
				if pages > 5 {
					t.Fatalf("%s: the next link never ends", list.path)
				}
				resp, doc := p.get(path)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: %d", path, resp.StatusCode)
				}
				seen += testid(doc, list.row).Length()
				path, _ = testid(doc, "next-page").Attr("href")
			}
			if seen != 5 {
				t.Errorf("%s: %d rows over all pages, want 5", list.path, seen)
			}
		}
	})
}

func TestNoTargetPageEverShowsAStoredSecret(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		const sas = "sv=2024-01-01&ss=b&sig=c2VjcmV0LXNhcy1zaWduYXR1cmU"
		const newKey = "bmV3LWFjY291bnQta2V5LW9mLWxpZmVib2F0LXRlc3Rz"
		p := tv.login("Contributor")
		form := url.Values{"name": {"Azure SAS"}, "kind": {"azure_blob"}, "account_url": {"https://lbreplicas.blob.core.windows.net"},
			"container": {"lifeboat"}, "credential_kind": {"sas"}, "credential": {sas}}
		if resp, _ := p.post("/targets", form); resp.StatusCode != http.StatusOK {
			t.Fatalf("create: %d", resp.StatusCode)
		}
		targets, _, _ := tv.Store.ListTargets(context.Background(), models.Page{})
		if len(targets) != 1 {
			t.Fatalf("%d targets", len(targets))
		}
		id := targets[0].ID
		if cred, _ := tv.Store.TargetCredential(&targets[0]); cred != sas {
			t.Fatal("the SAS was not stored")
		}
		noSecret := func(what string, secrets ...string) {
			t.Helper()
			for _, path := range []string{"/targets", "/targets/" + id, "/targets/new", "/"} {
				_, doc := p.get(path)
				html, _ := doc.Html()
				for _, s := range secrets {
					if strings.Contains(html, s) || strings.Contains(html, url.QueryEscape(s)) || strings.Contains(html, strings.ReplaceAll(s, "&", "&amp;")) {
						t.Fatalf("%s: %s shows the secret", what, path)
					}
				}
			}
		}
		noSecret("after create", sas)
		_, doc := p.get("/targets/" + id)
		if testid(doc, "credential-stored").Length() != 1 {
			t.Fatal("the edit form does not say a credential is stored")
		}
		if v, _ := doc.Find(`input[name="credential"]`).Attr("value"); v != "" {
			t.Fatalf("the credential input is filled: %q", v)
		}
		// A refused edit with a new secret typed does not echo it.
		form.Set("credential_kind", "account_key")
		form.Set("credential", newKey)
		form.Set("account_url", "ftp://nowhere")
		resp, doc := p.post("/targets/"+id, form)
		if html, _ := doc.Html(); resp.StatusCode != http.StatusBadRequest || testid(doc, "error-account_url").Length() != 1 || strings.Contains(html, newKey) {
			t.Fatalf("refused edit: %d, echoes the key %v", resp.StatusCode, strings.Contains(html, newKey))
		}
		// A saved new secret replaces the old one and is not shown either.
		form.Set("account_url", "https://lbreplicas.blob.core.windows.net")
		if resp, _ := p.post("/targets/"+id, form); resp.StatusCode != http.StatusOK {
			t.Fatalf("edit with a new key: %d", resp.StatusCode)
		}
		stored, _ := tv.Store.GetTarget(context.Background(), id)
		if cred, _ := tv.Store.TargetCredential(stored); cred != newKey || stored.CredentialKind != models.CredentialAccountKey {
			t.Fatalf("after the edit: kind %q, new key stored %v", stored.CredentialKind, cred == newKey)
		}
		noSecret("after edit", sas, newKey)
	})
}

func TestDirectoryTargetNeedsAPathAndKindMustBeKnown(t *testing.T) {
	tv := newTestVault(t, "")
	p := tv.login("Contributor")
	resp, doc := p.post("/targets", url.Values{"name": {"NAS"}, "kind": {"directory"}, "path": {""}})
	if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-path").Length() != 1 {
		t.Fatalf("no path: %d", resp.StatusCode)
	}
	if v, _ := doc.Find(`input[name="name"]`).Attr("value"); v != "NAS" {
		t.Fatalf("typed name lost: %q", v)
	}
	resp, doc = p.post("/targets", url.Values{"name": {"NAS"}, "kind": {"tape"}})
	if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-kind").Length() != 1 {
		t.Fatalf("unknown kind: %d", resp.StatusCode)
	}
	_, doc = p.get("/targets")
	if testid(doc, "targets-empty").Length() != 1 {
		t.Fatal("a refused target was stored")
	}
}

func TestOwnerSetsAUsersNewPasswordOnlyWhenGivenAndValid(t *testing.T) {
	tv := newTestVault(t, "")
	name, password := tv.createUser("Reader")
	users, _, _ := tv.Store.ListUsers(context.Background(), models.Page{})
	var id string
	for _, u := range users {
		if u.Username == name {
			id = u.ID
		}
	}
	ownerName, ownerPassword := tv.createUser("Owner")
	p, ok := ownLogin(t, tv, ownerName, ownerPassword)
	if !ok {
		t.Fatal("the Owner does not log in")
	}
	resp, doc := p.post("/users/"+id, url.Values{"role": {"Operator"}, "password": {"short"}})
	if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-password").Length() != 1 {
		t.Fatalf("short new password: %d", resp.StatusCode)
	}
	resp, doc = p.post("/users/"+id, url.Values{"role": {"Superuser"}})
	if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-role").Length() != 1 {
		t.Fatalf("unknown role: %d", resp.StatusCode)
	}
	if u, _ := tv.Store.GetUser(context.Background(), id); u.Role != models.RoleReader {
		t.Fatalf("a refused edit changed the role to %s", u.Role)
	}
	// An empty password keeps the old one.
	if resp, _ := p.post("/users/"+id, url.Values{"role": {"Operator"}, "password": {""}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("role only: %d", resp.StatusCode)
	}
	logsIn := func(pw string) bool {
		_, ok := ownLogin(t, tv, name, pw)
		return ok
	}
	if !logsIn(password) {
		t.Fatal("a role change without a password changed the password")
	}
	if resp, _ := p.post("/users/"+id, url.Values{"role": {"Operator"}, "password": {"an owner-chosen long password"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("new password: %d", resp.StatusCode)
	}
	if !logsIn("an owner-chosen long password") || logsIn(password) {
		t.Fatal("the new password does not replace the old one")
	}
}

func TestLastOwnerDeletionIsRefusedWithTheReason(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		p := tv.login("Owner")
		users, _, _ := tv.Store.ListUsers(context.Background(), models.Page{})
		if len(users) != 1 {
			t.Fatalf("%d users", len(users))
		}
		resp, doc := p.post("/users/"+users[0].ID+"/delete", nil)
		if resp.StatusCode != http.StatusConflict || !strings.Contains(testid(doc, "form-error").Text(), "last Owner") {
			t.Fatalf("delete the last Owner: %d %q", resp.StatusCode, testid(doc, "form-error").Text())
		}
		if _, err := tv.Store.GetUser(context.Background(), users[0].ID); err != nil {
			t.Fatal("the last Owner was deleted")
		}
	})
}

func TestNewTokenIsShownOnceWithAWarningAndListedWithoutItsSecret(t *testing.T) {
	tv := newTestVault(t, "")
	p := tv.login("Operator")
	resp, doc := p.post("/account/tokens", url.Values{"name": {""}, "expires_in_days": {"30"}})
	if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-name").Length() != 1 {
		t.Fatalf("unnamed token: %d", resp.StatusCode)
	}
	resp, doc = p.post("/account/tokens", url.Values{"name": {"nightly export"}, "expires_in_days": {"7"}})
	panel := testid(doc, "new-token-panel")
	secret := strings.TrimSpace(testid(doc, "new-token").Text())
	if resp.StatusCode != http.StatusCreated || secret == "" || !strings.Contains(strings.ToLower(panel.Text()), "once") {
		t.Fatalf("new token: %d, panel %q", resp.StatusCode, panel.Text())
	}
	_, doc = p.get("/account")
	if got := texts(testid(doc, "token-name")); len(got) != 1 || got[0] != "nightly export" {
		t.Fatalf("token list: %v", got)
	}
	if testid(doc, "new-token").Length() != 0 {
		t.Fatal("the account page shows a token secret again")
	}
	// Another user does not see it, and the owner still does.
	otherName, otherPassword := tv.createUser("Reader")
	other, ok := ownLogin(t, tv, otherName, otherPassword)
	if !ok {
		t.Fatal("the other user does not log in")
	}
	if _, doc = other.get("/account"); testid(doc, "token-row").Length() != 0 {
		t.Fatal("another user's token is listed")
	}
	if _, doc = p.get("/account"); testid(doc, "token-row").Length() != 1 {
		t.Fatal("the token's owner no longer sees it")
	}
}

// Pages behind a login are never cached (a shared browser's back button
// after a logout, a proxy); the login page may be.
func TestLoggedInPagesAreNotCached(t *testing.T) {
	tv := newTestVault(t, "")
	p := tv.login(models.RoleReader)
	for _, path := range []string{"/", "/vms", "/jobs"} {
		if resp, _ := p.get(path); resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: %d, Cache-Control %q; want no-store", path, resp.StatusCode, resp.Header.Get("Cache-Control"))
		}
	}
}
