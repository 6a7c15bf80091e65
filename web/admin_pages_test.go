package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/models"
)

const testAccountKey = "c2VjcmV0LWFjY291bnQta2V5LW9mLWxpZmVib2F0LXRlc3Rz" // base64, not a real key

func TestStorageTargetsAreManagedInThePortalWithoutEverShowingTheSecret(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		p := tv.login("Contributor")
		_, doc := p.get("/targets")
		if testid(doc, "targets-empty").Length() != 1 {
			t.Fatal("empty target list must say so")
		}
		azure := url.Values{"name": {"Azure West"}, "kind": {"azure_blob"}, "account_url": {"https://lbreplicas.blob.core.windows.net"},
			"container": {"lifeboat"}, "credential_kind": {"account_key"}, "credential": {testAccountKey}}
		bad := url.Values{}
		for k, v := range azure {
			bad[k] = v
		}
		bad.Set("container", "Not_Valid")
		resp, doc := p.post("/targets", bad)
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-container").Length() != 1 {
			t.Fatalf("bad container: %d", resp.StatusCode)
		}
		html, _ := doc.Html()
		if strings.Contains(html, testAccountKey) {
			t.Fatal("a refused form echoed the account key")
		}
		if v, _ := doc.Find(`input[name="account_url"]`).Attr("value"); v != "https://lbreplicas.blob.core.windows.net" {
			t.Fatalf("typed URL lost: %q", v)
		}
		resp, doc = p.post("/targets", azure)
		if resp.StatusCode != http.StatusOK || texts(testid(doc, "target-name"))[0] != "Azure West" {
			t.Fatalf("create: %d", resp.StatusCode)
		}
		_, doc = p.post("/targets", url.Values{"name": {"NAS"}, "kind": {"directory"}, "path": {"/srv/replicas"}})
		if got := texts(testid(doc, "target-name")); strings.Join(got, ",") != "Azure West,NAS" {
			t.Fatalf("list: %v", got)
		}
		targets, _, _ := tv.Store.ListTargets(context.Background(), models.Page{})
		azureID := targets[0].ID
		_, doc = p.get("/targets/" + azureID)
		html, _ = doc.Html()
		if strings.Contains(html, testAccountKey) || testid(doc, "credential-stored").Length() != 1 {
			t.Fatal("the edit page shows the secret, or does not say one is stored")
		}
		edit := url.Values{}
		for k, v := range azure {
			edit[k] = v
		}
		edit.Set("credential", "")
		edit.Set("container", "lifeboat2")
		if resp, _ := p.post("/targets/"+azureID, edit); resp.StatusCode != http.StatusOK {
			t.Fatalf("edit keeping the credential: %d", resp.StatusCode)
		}
		stored, _ := tv.Store.GetTarget(context.Background(), azureID)
		if cred, _ := tv.Store.TargetCredential(stored); cred != testAccountKey || stored.Container != "lifeboat2" {
			t.Fatalf("after the edit: container %q, credential kept %v", stored.Container, cred == testAccountKey)
		}
		resp, doc = p.post("/targets/"+azureID+"/delete", nil)
		if resp.StatusCode != http.StatusOK || strings.Contains(strings.Join(texts(testid(doc, "target-name")), ","), "Azure West") {
			t.Fatalf("delete: %d", resp.StatusCode)
		}
	})
}

func TestUsersPageManagesUsersAndKeepsTheLastOwner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		p := tv.login("Owner")
		resp, doc := p.post("/users", url.Values{"username": {"Bad Name"}, "password": {"short"}, "role": {"Reader"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-username").Length() != 1 || testid(doc, "error-password").Length() != 1 {
			t.Fatalf("invalid user: %d", resp.StatusCode)
		}
		resp, doc = p.post("/users", url.Values{"username": {"alice"}, "password": {"alice's long password"}, "role": {"Operator"}})
		if resp.StatusCode != http.StatusOK || !strings.Contains(strings.Join(texts(testid(doc, "user-name")), ","), "alice") {
			t.Fatalf("create: %d", resp.StatusCode)
		}
		users, _, _ := tv.Store.ListUsers(context.Background(), models.Page{})
		var owner, alice models.User
		for _, u := range users {
			if u.Username == "alice" {
				alice = u
			} else {
				owner = u
			}
		}
		if resp, _ := p.post("/users/"+alice.ID, url.Values{"role": {"Contributor"}}); resp.StatusCode != http.StatusOK {
			t.Fatalf("change role: %d", resp.StatusCode)
		}
		if u, _ := tv.Store.GetUser(context.Background(), alice.ID); u.Role != models.RoleContributor {
			t.Fatalf("role is %s", u.Role)
		}
		resp, doc = p.post("/users/"+owner.ID, url.Values{"role": {"Reader"}})
		if resp.StatusCode != http.StatusConflict || !strings.Contains(testid(doc, "form-error").Text(), "last Owner") {
			t.Fatalf("demote the last Owner: %d %q", resp.StatusCode, testid(doc, "form-error").Text())
		}
		resp, _ = p.post("/users/"+owner.ID+"/delete", nil)
		if resp.StatusCode != http.StatusConflict {
			t.Fatalf("delete the last Owner: %d", resp.StatusCode)
		}
		resp, doc = p.post("/users/"+alice.ID+"/delete", nil)
		if resp.StatusCode != http.StatusOK || strings.Contains(strings.Join(texts(testid(doc, "user-name")), ","), "alice") {
			t.Fatalf("delete alice: %d", resp.StatusCode)
		}
	})
}

func TestAccountTokenWorksOnTheAPIUntilRevoked(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		p := tv.login("Reader")
		_, doc := p.get("/account")
		if testid(doc, "tokens-empty").Length() != 1 {
			t.Fatal("no empty-tokens message")
		}
		resp, doc := p.post("/account/tokens", url.Values{"name": {"backup script"}, "expires_in_days": {"400"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-expires_in_days").Length() != 1 {
			t.Fatalf("400 days: %d", resp.StatusCode)
		}
		resp, doc = p.post("/account/tokens", url.Values{"name": {"backup script"}, "expires_in_days": {"30"}})
		secret := strings.TrimSpace(testid(doc, "new-token").Text())
		if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(secret, "lbt_") {
			t.Fatalf("create token: %d %q", resp.StatusCode, secret)
		}
		if status := tv.api(http.MethodGet, "/api/v1/policies", secret, nil, nil); status != http.StatusOK {
			t.Fatalf("the new token on the API: %d", status)
		}
		_, doc = p.get("/account")
		if html, _ := doc.Html(); strings.Contains(html, secret) {
			t.Fatal("the secret is shown again")
		}
		action, _ := doc.Find(`[data-testid="token-row"] form`).Attr("action")
		if resp, _ := p.post(action, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("revoke: %d", resp.StatusCode)
		}
		if status := tv.api(http.MethodGet, "/api/v1/policies", secret, nil, nil); status != http.StatusUnauthorized {
			t.Fatalf("a revoked token: %d, want 401", status)
		}
		other := tv.login("Reader")
		if resp, _ := other.post(action, nil); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("revoking another user's token: %d, want 404", resp.StatusCode)
		}
	})
}

func TestOwnPasswordChangeNeedsTheCurrentOneAndEndsSessions(t *testing.T) {
	tv := newTestVault(t, "")
	name, password := tv.createUser("Reader")
	p := tv.newPortal()
	p.get("/login")
	p.post("/login", url.Values{"username": {name}, "password": {password}})
	resp, doc := p.post("/account/password", url.Values{"current_password": {"not it at all"}, "new_password": {"a brand new long password"}})
	if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-current_password").Length() != 1 {
		t.Fatalf("wrong current password: %d", resp.StatusCode)
	}
	second := tv.newPortal()
	second.get("/login")
	second.post("/login", url.Values{"username": {name}, "password": {password}})
	resp, doc = p.post("/account/password", url.Values{"current_password": {password}, "new_password": {"a brand new long password"}})
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/login" || !strings.Contains(testid(doc, "flash").Text(), "Log in again") {
		t.Fatalf("change: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	if resp, _ := second.get("/account"); resp.Request.URL.Path != "/login" {
		t.Fatal("another session survived the password change")
	}
	fresh := tv.newPortal()
	fresh.get("/login")
	if resp, _ := fresh.post("/login", url.Values{"username": {name}, "password": {"a brand new long password"}}); resp.Request.URL.Path != "/" {
		t.Fatal("the new password does not log in")
	}
}
