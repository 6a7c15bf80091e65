package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/handlers"
	"github.com/lifeboat-dr/lifeboat/models"
)

// expectedRole is the access policy written down independently of
// routes.go: the role a route should need, derived from its address and
// method. A route this function does not know fails the test, so a new
// route cannot slip in without a decision about who may call it.
func expectedRole(method, path string) (role string, known bool) {
	api := strings.HasPrefix(path, "/api/v1/")
	p := strings.TrimPrefix(path, "/api/v1")
	switch {
	case path == "/login", path == "/api/v1/auth/token", path == "/api/v1/openapi.json":
		return "", true
	case path == "/metrics":
		return "", true // no role: loopback or a scrape token (metrics_test.go)
	case strings.HasPrefix(p, "/users"):
		return models.RoleOwner, true
	case path == "/logout", strings.HasPrefix(path, "/account"), api && strings.HasPrefix(p, "/tokens"):
		return models.RoleReader, true
	case p == "/audit": // the API and the portal page: who changed what is for those who change things
		return models.RoleContributor, true
	case method == http.MethodPost && strings.HasPrefix(p, "/alerts/"):
		return models.RoleOperator, true // on-call operators acknowledge and resolve alerts
	case method == http.MethodPost && strings.HasPrefix(p, "/vms/") && (strings.Contains(p, "/test-failover") || strings.Contains(p, "/failover") || strings.HasSuffix(p, "/reprotect") ||
		strings.HasSuffix(p, "/replicate-now")), // a fresh point before a drill or failover; no configuration changes
		method == http.MethodPost && strings.HasPrefix(p, "/jobs/") && (strings.HasSuffix(p, "/restart") || strings.HasSuffix(p, "/resume") || strings.HasSuffix(p, "/cancel")), // cancel: of recovery jobs, for Operators
		method == http.MethodPost && strings.HasPrefix(p, "/recovery-plans/") && strings.HasSuffix(p, "/run"):
		return models.RoleOperator, true // operators fail over and back, and restart what failed, and change no configuration
	case method == http.MethodGet && strings.HasSuffix(p, "/new"):
		return models.RoleContributor, true
	case method == http.MethodGet:
		return models.RoleReader, true
	case method == http.MethodPost || method == http.MethodPut || method == http.MethodDelete:
		return models.RoleContributor, true
	}
	return "", false
}

// TestEveryRouteChecksTheRoleItNeeds calls every registered route as an
// anonymous caller and as each role, and checks who is let through.
func TestEveryRouteChecksTheRoleItNeeds(t *testing.T) {
	tv := newTestVault(t, "")
	ctx := context.Background()
	users := map[string]*models.User{}
	for _, role := range models.Roles {
		name, password := tv.createUser(role)
		u, err := tv.Store.Authenticate(ctx, name, password)
		if err != nil {
			t.Fatal(err)
		}
		users[role] = u
	}
	// A fresh session and token per call: a call may end its own session
	// (POST /logout) and must not change the outcome of the next one.
	credentials := func(role string) (session, token string) {
		u := users[role]
		if u == nil {
			return "", ""
		}
		session, err := tv.Store.CreateSession(ctx, models.SystemActor, u)
		if err != nil {
			t.Fatal(err)
		}
		_, token, err = tv.Store.CreateToken(ctx, models.SystemActor, u, "matrix", models.LoginTokenLifetime)
		if err != nil {
			t.Fatal(err)
		}
		return session, token
	}

	e := newEcho(handlers.New(handlers.Deps{Store: tv.Store, Logger: slog.New(slog.DiscardHandler)}), slog.New(slog.DiscardHandler))
	checked := 0
	for _, r := range e.Routes() {
		if r.Path == "/healthz" || strings.HasPrefix(r.Path, "/static") || r.Method == echo.RouteNotFound || strings.HasSuffix(r.Path, "/*") {
			continue
		}
		if strings.HasPrefix(r.Path, "/agent/") {
			checkAgentRouteRefusesUsers(t, tv, r.Method, r.Path, credentials)
			continue
		}
		need, known := expectedRole(r.Method, r.Path)
		if !known {
			t.Errorf("%s %s: no access rule in expectedRole; decide who may call it", r.Method, r.Path)
			continue
		}
		path := fillParams(r.Path)
		for _, role := range append([]string{""}, models.Roles...) {
			session, token := credentials(role)
			status := callAs(t, tv, r.Method, path, session, token)
			allowed := models.RoleRank(role) >= models.RoleRank(need)
			switch {
			case need == "":
				// Public: the route itself decides (a login with no
				// password is a 401 of its own); no role may be refused.
				if status == http.StatusForbidden {
					t.Errorf("%s %s as %q: 403 on a public route", r.Method, r.Path, role)
				}
			case allowed && (status == http.StatusUnauthorized || status == http.StatusForbidden):
				t.Errorf("%s %s as %q: status %d, but %q should be let through (needs %q)", r.Method, r.Path, role, status, role, need)
			case !allowed && role == "" && !isAuthChallenge(path, r.Method, status):
				t.Errorf("%s %s anonymous: status %d, want a login challenge", r.Method, r.Path, status)
			case !allowed && role != "" && status != http.StatusForbidden:
				t.Errorf("%s %s as %s: status %d, want 403 (needs %s)", r.Method, r.Path, role, status, need)
			}
			checked++
		}
	}
	if checked < 300 {
		t.Fatalf("only %d route × role calls checked; the route walk is broken", checked)
	}
}

// checkAgentRouteRefusesUsers: the agent endpoint admits hosts by their
// certificate (or, to register, a key's secret), never a user's session or
// token, whatever the role.
func checkAgentRouteRefusesUsers(t *testing.T, tv *testVault, method, path string, credentials func(string) (string, string)) {
	for _, role := range append([]string{""}, models.Roles...) {
		session, token := credentials(role)
		status := callAs(t, tv, method, fillParams(path), session, token)
		if path == "/agent/v1/register" {
			if status < 400 {
				t.Errorf("%s %s as %q: %d; registering needs a registration key", method, path, role, status)
			}
		} else if status != http.StatusUnauthorized {
			t.Errorf("%s %s as %q: %d, want 401 (hosts only)", method, path, role, status)
		}
	}
}

func isAuthChallenge(path, method string, status int) bool {
	if strings.HasPrefix(path, "/api/") || method != http.MethodGet {
		return status == http.StatusUnauthorized
	}
	return status == http.StatusSeeOther // to the login page
}

func fillParams(path string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, ":") {
			parts[i] = "1"
		}
	}
	return strings.Join(parts, "/")
}

// callAs makes one request without following redirects: the session cookie
// and a valid CSRF pair for the portal, the bearer token for the API.
func callAs(t *testing.T, tv *testVault, method, path, session, token string) int {
	t.Helper()
	const csrf = "matrix-csrf-token-0123456789abcdef"
	var body *strings.Reader
	api := strings.HasPrefix(path, "/api/")
	switch {
	case api && (method == http.MethodPost || method == http.MethodPut):
		body = strings.NewReader("{}")
	case !api && method != http.MethodGet:
		body = strings.NewReader(url.Values{"csrf": {csrf}}.Encode())
	default:
		body = strings.NewReader("")
	}
	req, err := http.NewRequest(method, tv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if api {
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
	} else {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: "lifeboat_csrf", Value: csrf})
		if session != "" {
			req.AddCookie(&http.Cookie{Name: handlers.SessionCookie, Value: session})
		}
	}
	client := *tv.srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
