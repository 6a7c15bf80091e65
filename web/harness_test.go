package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"

	"github.com/lifeboat-dr/lifeboat/handlers"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/models/storetest"
	"github.com/lifeboat-dr/lifeboat/web/pki"
)

// testVault is the real vault handler (routes, middleware, store) behind a
// real TLS listener on loopback, on a fresh database.
type testVault struct {
	t     testing.TB
	URL   string
	Store *models.Store
	Clock *storetest.Clock
	srv   *httptest.Server
	logs  *lockedBuffer
}

// forEachBackend runs fn on SQLite, and on PostgreSQL when configured.
func forEachBackend(t *testing.T, fn func(t *testing.T, tv *testVault)) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) { fn(t, newTestVault(t, b.DSN(t))) })
	}
}

// newTestVault starts a vault on SQLite.
func newTestVault(t testing.TB, dsn string) *testVault {
	t.Helper()
	if dsn == "" {
		dsn = storetest.SQLiteDSN(t)
	}
	clock := storetest.NewClock()
	store := storetest.Open(t, dsn, clock)
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := handlers.New(handlers.Deps{Store: store, Logger: log, Now: clock.Now, SecureCookies: true, CA: agentCA{ca},
		Agent:    handlers.AgentSettings{Heartbeat: time.Second, PollWait: 300 * time.Millisecond, Progress: time.Second, Lease: 10 * time.Second},
		VaultURL: "https://vault.test", CAFingerprint: "test-fingerprint"})
	srv := httptest.NewUnstartedServer(newEcho(h, log))
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &testVault{t: t, URL: srv.URL, Store: store, Clock: clock, srv: srv, logs: logs}
}

// createUser adds a user with role and returns its name and password.
func (tv *testVault) createUser(role string) (string, string) {
	tv.t.Helper()
	name := strings.ToLower(role) + "-" + storetest.Name("u")
	password := "correct horse battery " + name
	if _, err := tv.Store.CreateUser(context.Background(), models.SystemActor, models.UserInput{Username: name, Password: password, Role: role}); err != nil {
		tv.t.Fatalf("create %s user: %v", role, err)
	}
	return name, password
}

// apiToken returns an API token of a new user with role.
func (tv *testVault) apiToken(role string) string {
	tv.t.Helper()
	name, password := tv.createUser(role)
	var out struct{ Token string }
	status := tv.api(http.MethodPost, "/api/v1/auth/token", "", map[string]string{"username": name, "password": password}, &out)
	if status != http.StatusOK || out.Token == "" {
		tv.t.Fatalf("get a token for %s: status %d", role, status)
	}
	return out.Token
}

// api calls the JSON API; body is marshalled unless it is a string (sent as
// is); the answer is decoded into out when out is not nil.
func (tv *testVault) api(method, path, token string, body any, out any) int {
	tv.t.Helper()
	status, raw := tv.apiRaw(method, path, token, body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			tv.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return status
}

// apiRaw is api returning the raw body.
func (tv *testVault) apiRaw(method, path, token string, body any) (int, []byte) {
	tv.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			tv.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, tv.URL+path, rd)
	if err != nil {
		tv.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := tv.srv.Client().Do(req)
	if err != nil {
		tv.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// portal is a browser-like client: cookies, redirects, forms with CSRF.
type portal struct {
	tv     *testVault
	client *http.Client
}

// newPortal makes an anonymous portal client.
func (tv *testVault) newPortal() *portal {
	jar, _ := cookiejar.New(nil)
	// A copy: the server's client is shared, and each portal is a browser
	// of its own, with its own cookies.
	c := *tv.srv.Client()
	c.Jar = jar
	return &portal{tv: tv, client: &c}
}

// login returns a portal client logged in as a new user with role.
func (tv *testVault) login(role string) *portal {
	tv.t.Helper()
	name, password := tv.createUser(role)
	p := tv.newPortal()
	p.get("/login")
	resp, _ := p.post("/login", url.Values{"username": {name}, "password": {password}})
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
		tv.t.Fatalf("login as %s: status %d at %s", role, resp.StatusCode, resp.Request.URL)
	}
	return p
}

// csrf is the token the vault set in the CSRF cookie (a browser copies it
// from the hidden form field; the value is the same).
func (p *portal) csrf() string {
	u, _ := url.Parse(p.tv.URL)
	for _, c := range p.client.Jar.Cookies(u) {
		if c.Name == "lifeboat_csrf" {
			return c.Value
		}
	}
	return ""
}

// get fetches a page and parses it.
func (p *portal) get(path string) (*http.Response, *goquery.Document) {
	p.tv.t.Helper()
	resp, err := p.client.Get(p.tv.URL + path)
	if err != nil {
		p.tv.t.Fatalf("GET %s: %v", path, err)
	}
	return p.parse(resp)
}

// post submits a form with the CSRF token, following the redirect.
func (p *portal) post(path string, form url.Values) (*http.Response, *goquery.Document) {
	p.tv.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if form.Get("csrf") == "" {
		form.Set("csrf", p.csrf())
	}
	resp, err := p.client.PostForm(p.tv.URL+path, form)
	if err != nil {
		p.tv.t.Fatalf("POST %s: %v", path, err)
	}
	return p.parse(resp)
}

func (p *portal) parse(resp *http.Response) (*http.Response, *goquery.Document) {
	defer resp.Body.Close()
	doc, err := goquery.NewDocumentFromReader(resp.Body)
	if err != nil {
		p.tv.t.Fatalf("parse %s: %v", resp.Request.URL, err)
	}
	return resp, doc
}

// testid finds elements by data-testid.
func testid(doc *goquery.Document, id string) *goquery.Selection {
	return doc.Find(`[data-testid="` + id + `"]`)
}

// lockedBuffer lets the server's goroutines share the log buffer.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
