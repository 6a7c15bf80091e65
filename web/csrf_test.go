package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/models"
)

func TestPortalFormsWithoutAValidCSRFTokenAreRefused(t *testing.T) {
	tv := newTestVault(t, "")
	p := tv.login("Owner")
	p.get("/policies/new") // sets the CSRF cookie, as a browser visit would
	valid := url.Values{
		"name": {"Gold"}, "copy_frequency_seconds": {"300"}, "retention_hours": {"24"},
		"app_consistent_frequency_hours": {"0"}, "resync_window.start": {"18:30"}, "resync_window.end": {"06:00"},
		"bandwidth.work_hours.start": {"08:00"}, "bandwidth.work_hours.end": {"18:00"},
		"bandwidth.work_hours_mbps": {"0"}, "bandwidth.off_hours_mbps": {"0"},
	}
	cases := []struct {
		name    string
		token   string
		headers map[string]string
	}{
		{"missing token", "", nil},
		{"wrong token", "not-the-token-the-vault-gave", nil},
		{"right token from another site", p.csrf(), map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			form := url.Values{}
			for k, v := range valid {
				form[k] = v
			}
			if tc.token != "" {
				form.Set("csrf", tc.token)
			}
			req, _ := http.NewRequest(http.MethodPost, tv.URL+"/policies", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := p.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, doc := p.parse(resp)
			if resp.StatusCode != http.StatusForbidden || testid(doc, "error-code").Text() != "csrf_invalid" {
				t.Fatalf("status %d code %q, want 403 csrf_invalid", resp.StatusCode, testid(doc, "error-code").Text())
			}
		})
	}
	items, _, err := tv.Store.ListPolicies(context.Background(), models.Page{})
	if err != nil || len(items) != 0 {
		t.Fatalf("a refused form must not create anything: %d policies, %v", len(items), err)
	}
	// The same form with the token goes through, so the refusals above were
	// about the token and nothing else.
	resp, _ := p.post("/policies", valid)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/policies" {
		t.Fatalf("with the token: %d at %s", resp.StatusCode, resp.Request.URL)
	}
}

func TestLoginFormNeedsTheCSRFToken(t *testing.T) {
	tv := newTestVault(t, "")
	name, password := tv.createUser("Reader")
	p := tv.newPortal()
	resp, _ := p.post("/login", url.Values{"username": {name}, "password": {password}}) // no GET first: no cookie
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("login without a CSRF cookie: %d, want 403", resp.StatusCode)
	}
}

func TestAPIIgnoresTheSessionCookie(t *testing.T) {
	tv := newTestVault(t, "")
	p := tv.login("Owner")
	resp, err := p.client.Get(tv.URL + "/api/v1/policies")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API with only a session cookie: %d, want 401 (the API takes bearer tokens, so it needs no CSRF token)", resp.StatusCode)
	}
}
