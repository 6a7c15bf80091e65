package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/models"
)

// These tests complete admin_pages_test.go: role visibility, refused edits,
// targets in use, the users' forms and the account page's token form.

func TestTargetPagesShowDataToReadersButNoForms(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		ctx := context.Background()
		tg, err := tv.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "NAS", Kind: models.TargetDirectory, Path: "/srv/replicas"})
		if err != nil {
			t.Fatal(err)
		}
		p := tv.login("Reader")
		resp, doc := p.get("/targets")
		if resp.StatusCode != http.StatusOK || strings.Join(texts(testid(doc, "target-name")), ",") != "NAS" {
			t.Fatalf("reader's target list: %d %v", resp.StatusCode, texts(testid(doc, "target-name")))
		}
		if got := testid(doc, "target-kind").Text(); got != "Directory" {
			t.Fatalf("kind shown as %q", got)
		}
		if !strings.Contains(testid(doc, "target-row").Text(), "/srv/replicas") {
			t.Fatal("the location is not in the row")
		}
		if testid(doc, "new-target").Length() != 0 {
			t.Fatal("a Reader is offered the New target button")
		}
		_, doc = p.get("/targets/" + tg.ID)
		if testid(doc, "target-save").Length() != 0 || testid(doc, "target-delete").Length() != 0 {
			t.Fatal("a Reader is offered save or delete")
		}
		if resp, _ := p.get("/targets/new"); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("Reader on /targets/new: %d, want 403", resp.StatusCode)
		}
		if resp, _ := p.post("/targets/"+tg.ID+"/delete", nil); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("Reader deleting a target: %d, want 403", resp.StatusCode)
		}
		if _, err := tv.Store.GetTarget(ctx, tg.ID); err != nil {
			t.Fatal("the target went away after a refused delete")
		}
	})
}

func TestRefusedTargetFormsNameTheFieldKeepTheTextAndNeverTheSecret(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		ctx := context.Background()
		p := tv.login("Contributor")

		resp, doc := p.post("/targets", url.Values{"name": {"Dir"}, "kind": {"directory"}, "path": {"relative/path"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-path").Length() != 1 {
			t.Fatalf("relative path: %d", resp.StatusCode)
		}
		if v, _ := doc.Find(`input[name="path"]`).Attr("value"); v != "relative/path" {
			t.Fatalf("typed path lost: %q", v)
		}
		resp, doc = p.post("/targets", url.Values{"name": {"Odd"}, "kind": {"tape"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-kind").Length() != 1 {
			t.Fatalf("unknown kind: %d", resp.StatusCode)
		}
		resp, doc = p.post("/targets", url.Values{"name": {"Azure"}, "kind": {"azure_blob"}, "account_url": {"https://lb.blob.core.windows.net"},
			"container": {"lifeboat"}, "credential_kind": {"sas"}, "credential": {"this-is-not-a-sas"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-sas").Length() != 1 {
			t.Fatalf("bad SAS: %d", resp.StatusCode)
		}
		if html, _ := doc.Html(); strings.Contains(html, "this-is-not-a-sas") {
			t.Fatal("a refused SAS was echoed")
		}
		resp, doc = p.post("/targets", url.Values{"name": {""}, "kind": {"directory"}, "path": {"/srv/x"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-name").Length() != 1 {
			t.Fatalf("no name: %d", resp.StatusCode)
		}

		tg, err := tv.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "Azure West", Kind: models.TargetAzureBlob,
			AccountURL: "https://lbreplicas.blob.core.windows.net", Container: "lifeboat", CredentialKind: models.CredentialAccountKey, Credential: testAccountKey})
		if err != nil {
			t.Fatal(err)
		}
		const newKey = "bmV3LWFjY291bnQta2V5LXR5cGVkLWluLXRoZS1yZWZ1c2VkLWZvcm0=" // base64, not a real key
		resp, doc = p.post("/targets/"+tg.ID, url.Values{"name": {"Azure West renamed"}, "kind": {"azure_blob"},
			"account_url": {"https://lbreplicas.blob.core.windows.net"}, "container": {"Bad_Container"},
			"credential_kind": {"account_key"}, "credential": {newKey}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-container").Length() != 1 {
			t.Fatalf("refused edit: %d", resp.StatusCode)
		}
		html, _ := doc.Html()
		if strings.Contains(html, testAccountKey) || strings.Contains(html, newKey) {
			t.Fatal("a refused edit shows a credential")
		}
		if v, _ := doc.Find(`input[name="credential"]`).Attr("value"); v != "" {
			t.Fatalf("the credential input is filled: %q", v)
		}
		if v, _ := doc.Find(`input[name="name"]`).Attr("value"); v != "Azure West renamed" {
			t.Fatalf("typed name lost: %q", v)
		}
		if testid(doc, "credential-stored").Length() != 1 {
			t.Fatal("the refused edit does not say a credential is stored")
		}
		stored, _ := tv.Store.GetTarget(ctx, tg.ID)
		if cred, _ := tv.Store.TargetCredential(stored); cred != testAccountKey || stored.Name != "Azure West" {
			t.Fatal("a refused edit changed the target")
		}
		for _, path := range []string{"/targets", "/targets/" + tg.ID} {
			_, doc := p.get(path)
			if html, _ := doc.Html(); strings.Contains(html, testAccountKey) {
				t.Fatalf("%s shows the stored credential", path)
			}
		}
	})
}

func TestDeletingATargetInUseIsRefusedWithTheReason(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		seedInventory(t, av.testVault, av.raw)
		targets, _, err := av.Store.ListTargets(context.Background(), models.Page{})
		if err != nil || len(targets) != 1 {
			t.Fatalf("targets: %v %d", err, len(targets))
		}
		p := av.login("Contributor")
		resp, doc := p.post("/targets/"+targets[0].ID+"/delete", nil)
		if resp.StatusCode != http.StatusConflict || !strings.Contains(testid(doc, "form-error").Text(), "disable their protection first") {
			t.Fatalf("delete in use: %d %q", resp.StatusCode, testid(doc, "form-error").Text())
		}
		_, doc = p.get("/targets")
		if strings.Join(texts(testid(doc, "target-name")), ",") != "nas" {
			t.Fatal("the target in use left the list")
		}
	})
}

func TestUsersPagesAreForOwnersOnly(t *testing.T) {
	tv := newTestVault(t, "")
	for _, role := range []string{"Reader", "Operator", "Contributor"} {
		p := tv.login(role)
		for _, path := range []string{"/users", "/users/new"} {
			if resp, _ := p.get(path); resp.StatusCode != http.StatusForbidden {
				t.Fatalf("%s on %s: %d, want 403", role, path, resp.StatusCode)
			}
		}
		if resp, _ := p.post("/users", url.Values{"username": {"mallory"}, "password": {"a long enough password"}, "role": {"Owner"}}); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s creating a user: %d, want 403", role, resp.StatusCode)
		}
	}
	p := tv.login("Owner")
	resp, doc := p.get("/users")
	if resp.StatusCode != http.StatusOK || testid(doc, "users-table").Length() != 1 {
		t.Fatalf("Owner's users page: %d", resp.StatusCode)
	}
	roles := map[string]string{}
	names, rs := texts(testid(doc, "user-name")), texts(testid(doc, "user-role"))
	for i := range names {
		roles[names[i]] = rs[i]
	}
	if len(roles) != 4 || roles["mallory"] != "" || testid(doc, "new-user").Length() != 1 {
		t.Fatalf("users listed: %v", roles)
	}
}

func TestUserFormsKeepTypedValuesAndANewPasswordLogsIn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		p := tv.login("Owner")
		resp, doc := p.post("/users", url.Values{"username": {"bob"}, "password": {"Zq9-short"}, "role": {"Contributor"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-password").Length() != 1 {
			t.Fatalf("short password: %d", resp.StatusCode)
		}
		if v, _ := doc.Find(`input[name="username"]`).Attr("value"); v != "bob" {
			t.Fatalf("typed username lost: %q", v)
		}
		if v, _ := doc.Find(`select[name="role"] option[selected]`).Attr("value"); v != "Contributor" {
			t.Fatalf("chosen role lost: %q", v)
		}
		if html, _ := doc.Html(); strings.Contains(html, "Zq9-short") {
			t.Fatal("the refused password was echoed")
		}
		resp, doc = p.post("/users", url.Values{"username": {"bob"}, "password": {"bob's first long password"}, "role": {"Emperor"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-role").Length() != 1 {
			t.Fatalf("unknown role: %d", resp.StatusCode)
		}
		p.post("/users", url.Values{"username": {"bob"}, "password": {"bob's first long password"}, "role": {"Reader"}})
		users, _, _ := tv.Store.ListUsers(context.Background(), models.Page{})
		var bob models.User
		for _, u := range users {
			if u.Username == "bob" {
				bob = u
			}
		}
		if bob.ID == "" {
			t.Fatal("bob was not created")
		}
		_, doc = p.get("/users/" + bob.ID)
		if testid(doc, "user-title").Text() != "User bob" || testid(doc, "user-delete").Length() != 1 {
			t.Fatal("the user's page lacks its title or its delete button")
		}
		if _, ok := doc.Find(`form[action="/users/` + bob.ID + `/delete"]`).Attr("data-confirm"); !ok {
			t.Fatal("deleting a user is not confirmed")
		}
		bobs := tv.newPortal()
		bobs.get("/login")
		bobs.post("/login", url.Values{"username": {"bob"}, "password": {"bob's first long password"}})
		resp, doc = p.post("/users/"+bob.ID, url.Values{"role": {"Operator"}, "password": {"bob's second long password"}})
		if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/users" {
			t.Fatalf("set a new password: %d at %s", resp.StatusCode, resp.Request.URL)
		}
		if !strings.Contains(strings.Join(texts(testid(doc, "user-role")), ","), "Operator") {
			t.Fatal("the new role is not in the list")
		}
		if resp, _ := bobs.get("/account"); resp.Request.URL.Path != "/login" {
			t.Fatal("bob's session survived the password reset")
		}
		fresh := tv.newPortal()
		fresh.get("/login")
		if resp, _ := fresh.post("/login", url.Values{"username": {"bob"}, "password": {"bob's first long password"}}); resp.Request.URL.Path == "/" {
			t.Fatal("the old password still logs in")
		}
		if resp, _ := fresh.post("/login", url.Values{"username": {"bob"}, "password": {"bob's second long password"}}); resp.Request.URL.Path != "/" {
			t.Fatal("the new password does not log in")
		}
	})
}

func TestAccountPageListsTokensAndRefusesABadTokenForm(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		p := tv.login("Operator")
		resp, doc := p.get("/account")
		if resp.StatusCode != http.StatusOK || !strings.Contains(testid(doc, "account-title").Text(), "Operator") {
			t.Fatalf("account page: %d %q", resp.StatusCode, testid(doc, "account-title").Text())
		}
		if v, _ := doc.Find(`input[name="expires_in_days"]`).Attr("value"); v != "90" {
			t.Fatalf("default validity %q, want 90", v)
		}
		resp, doc = p.post("/account/tokens", url.Values{"name": {""}, "expires_in_days": {"12"}})
		if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-name").Length() != 1 {
			t.Fatalf("token without a name: %d", resp.StatusCode)
		}
		if v, _ := doc.Find(`input[name="expires_in_days"]`).Attr("value"); v != "12" {
			t.Fatalf("typed days lost: %q", v)
		}
		for _, days := range []string{"0", "366", "ten"} {
			resp, doc = p.post("/account/tokens", url.Values{"name": {"ci"}, "expires_in_days": {days}})
			if resp.StatusCode != http.StatusBadRequest || testid(doc, "error-expires_in_days").Length() != 1 {
				t.Fatalf("%s days: %d", days, resp.StatusCode)
			}
		}
		resp, doc = p.post("/account/tokens", url.Values{"name": {"ci"}, "expires_in_days": {"365"}})
		if resp.StatusCode != http.StatusCreated || testid(doc, "new-token").Length() != 1 {
			t.Fatalf("365 days: %d", resp.StatusCode)
		}
		if !strings.Contains(testid(doc, "new-token-panel").Text(), "only this once") {
			t.Fatal("no warning that the secret is shown once")
		}
		if strings.Join(texts(testid(doc, "token-name")), ",") != "ci" {
			t.Fatalf("token list: %v", texts(testid(doc, "token-name")))
		}
		other := tv.login("Operator")
		_, doc = other.get("/account")
		if testid(doc, "tokens-empty").Length() != 1 {
			t.Fatal("another user sees someone else's tokens")
		}
	})
}
