package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// loginFrom asks for an API token from a given loopback address (the
// vault takes the connection's address, trusting no proxy header).
func loginFrom(t *testing.T, tv *testVault, from, username, password string) (int, http.Header, string) {
	t.Helper()
	tr := tv.srv.Client().Transport.(*http.Transport).Clone()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	defer tr.CloseIdleConnections()
	body, _ := json.Marshal(map[string]string{"username": username, "password": password})
	req, _ := http.NewRequest(http.MethodPost, tv.URL+"/api/v1/auth/token", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("login from %s: %v", from, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

// Failed logins used to be counted per user name and per address: any
// client could lock the Owner out with ten wrong passwords, and one
// address's failures locked out everyone behind it. They are counted per
// user and address together now, with a vault-wide budget, and every
// refusal says when to try again.
func TestLoginThrottlingCannotBeTurnedAgainstTheVictim(t *testing.T) {
	tv := newTestVault(t, "")
	victim, password := tv.createUser("Owner")
	other, otherPassword := tv.createUser("Reader")

	// A stranger guesses the victim's password from another address.
	for i := range 10 {
		if status, _, body := loginFrom(t, tv, "127.0.0.2", victim, "guess "+strconv.Itoa(i)); status != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d %s", i, status, body)
		}
	}
	status, hdr, body := loginFrom(t, tv, "127.0.0.2", victim, password)
	if status != http.StatusTooManyRequests || !strings.Contains(body, "too_many_login_attempts") {
		t.Fatalf("the guesser's pair is not locked: %d %s", status, body)
	}
	if s, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || s < 60 || s > 15*60 {
		t.Fatalf("Retry-After %q on a locked pair", hdr.Get("Retry-After"))
	}
	// The victim, from their own address, is not locked out.
	if status, _, body := loginFrom(t, tv, "127.0.0.1", victim, password); status != http.StatusOK {
		t.Fatalf("the victim was locked out by a stranger: %d %s", status, body)
	}
	// Another user behind the guesser's address is not locked out either.
	if status, _, body := loginFrom(t, tv, "127.0.0.2", other, otherPassword); status != http.StatusOK {
		t.Fatalf("a user behind the guessing address was locked out: %d %s", status, body)
	}

	// Guessing across many names and addresses spends the vault-wide
	// budget: then every attempt waits a second or so.
	for i := 0; ; i++ {
		status, hdr, body := loginFrom(t, tv, fmt.Sprintf("127.0.%d.%d", 1+i/200, 3+i%200), fmt.Sprintf("nobody%d", i), "x")
		if status == http.StatusTooManyRequests {
			if i < 50 || !strings.Contains(body, "many failed logins") || hdr.Get("Retry-After") == "" {
				t.Fatalf("after %d failures: %d %s (Retry-After %q)", i, status, body, hdr.Get("Retry-After"))
			}
			break
		}
		if status != http.StatusUnauthorized || i > 100 {
			t.Fatalf("failure %d: %d %s", i, status, body)
		}
	}
	tv.Clock.T = tv.Clock.T.Add(2 * time.Second)
	if status, _, body := loginFrom(t, tv, "127.0.0.1", victim, password); status != http.StatusOK {
		t.Fatalf("a moment after the budget ran out: %d %s", status, body)
	}
}
