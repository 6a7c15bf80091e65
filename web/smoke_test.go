package main

import (
	"database/sql"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models/storetest"
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

func TestHealthzAnswers503WhenANewerVaultMigratedTheDatabase(t *testing.T) {
	dsn := storetest.SQLiteDSN(t)
	tv := newTestVault(t, dsn)
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'from_a_later_vault', CURRENT_TIMESTAMP)"); err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	if status := tv.api(http.MethodGet, "/healthz", "", nil, &out); status != http.StatusServiceUnavailable || out["code"] != "schema_too_new" ||
		!strings.Contains(out["reason"], "version 99") {
		t.Fatalf("healthz on a newer schema: %d %v", status, out)
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

func TestUnknownAddressesAnswerAPageOutsideTheAPIAndJSONInsideIt(t *testing.T) {
	tv := newTestVault(t, "")
	p := tv.login("Reader")
	resp, doc := p.get("/no-such-page")
	if resp.StatusCode != http.StatusNotFound || testid(doc, "error-code").Text() != "route_not_found" {
		t.Fatalf("portal 404: %d %q", resp.StatusCode, testid(doc, "error-code").Text())
	}
	status, raw := tv.apiRaw(http.MethodGet, "/api/v1/no-such-thing", "", nil)
	if status != http.StatusNotFound || !strings.Contains(string(raw), `"code":"route_not_found"`) {
		t.Fatalf("API 404: %d %s", status, raw)
	}
	status, raw = tv.apiRaw(http.MethodPatch, "/api/v1/policies", tv.apiToken("Reader"), nil)
	if status != http.StatusMethodNotAllowed || !strings.Contains(string(raw), `"code":"method_not_allowed"`) {
		t.Fatalf("API 405: %d %s", status, raw)
	}
	resp, doc = p.post("/", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed || testid(doc, "error-code").Text() != "method_not_allowed" {
		t.Fatalf("portal 405: %d %q", resp.StatusCode, testid(doc, "error-code").Text())
	}
}

func TestLoginRedirectStaysInsideThePortal(t *testing.T) {
	tv := newTestVault(t, "")
	name, password := tv.createUser("Reader")
	for _, next := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example"} {
		p := tv.newPortal()
		p.get("/login")
		resp, _ := p.post("/login", url.Values{"username": {name}, "password": {password}, "next": {next}})
		if resp.Request.URL.Host != strings.TrimPrefix(tv.URL, "https://") || resp.Request.URL.Path != "/" {
			t.Fatalf("next=%q led to %s", next, resp.Request.URL)
		}
	}
}

func TestWrongPasswordIsRefusedWithoutSayingWhichPartWasWrong(t *testing.T) {
	tv := newTestVault(t, "")
	name, _ := tv.createUser("Reader")
	for _, user := range []string{name, "nobody-by-this-name"} {
		p := tv.newPortal()
		p.get("/login")
		resp, doc := p.post("/login", url.Values{"username": {user}, "password": {"wrong password!"}})
		if resp.StatusCode != http.StatusUnauthorized || testid(doc, "login-error").Text() != "Wrong username or password." {
			t.Fatalf("%s: %d %q", user, resp.StatusCode, testid(doc, "login-error").Text())
		}
	}
	if strings.Contains(tv.logs.String(), "wrong password!") {
		t.Fatal("a password reached the log")
	}
}

func TestRepeatedFailedLoginsAreThrottledButNotForever(t *testing.T) {
	tv := newTestVault(t, "")
	name, password := tv.createUser("Reader")
	for i := 0; i < 10; i++ {
		status := tv.api(http.MethodPost, "/api/v1/auth/token", "", map[string]string{"username": name, "password": "guess number " + strconv.Itoa(i)}, nil)
		if status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", i, status)
		}
	}
	status, raw := tv.apiRaw(http.MethodPost, "/api/v1/auth/token", "", map[string]string{"username": name, "password": password})
	if status != http.StatusTooManyRequests || !strings.Contains(string(raw), "too_many_login_attempts") {
		t.Fatalf("11th attempt, even with the right password: %d %s", status, raw)
	}
	p := tv.newPortal()
	p.get("/login")
	resp, doc := p.post("/login", url.Values{"username": {name}, "password": {password}})
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(testid(doc, "login-error").Text(), "too many failed logins") {
		t.Fatalf("portal login while throttled: %d %q", resp.StatusCode, testid(doc, "login-error").Text())
	}
	tv.Clock.T = tv.Clock.T.Add(16 * time.Minute)
	if status := tv.api(http.MethodPost, "/api/v1/auth/token", "", map[string]string{"username": name, "password": password}, nil); status != http.StatusOK {
		t.Fatalf("after the window: %d, want 200", status)
	}
}
