package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// runningVault is the real program, run() with its flags, serving real TLS
// on a loopback port.
type runningVault struct {
	URL    string
	Client *http.Client // trusts only the vault CA
	stdout *lockedBuffer
	stop   func() error
}

var servingLine = regexp.MustCompile(`serving (https://\S+)`)

func startVault(t *testing.T, dataDir string, extraArgs ...string) *runningVault {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	out := &lockedBuffer{}
	args := append([]string{"--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-level", "warn"}, extraArgs...)
	done := make(chan error, 1)
	go func() {
		err := run(ctx, args, func(string) string { return "" }, pw, io.Discard)
		pw.CloseWithError(errors.New("vault stopped"))
		done <- err
	}()
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			out.Write(append(sc.Bytes(), '\n'))
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil && !sent {
				urlc <- m[1]
				sent = true
			}
		}
		if !sent {
			close(urlc)
		}
	}()
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() { cancel(); stopErr = <-done })
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	select {
	case url, ok := <-urlc:
		if !ok {
			t.Fatalf("vault exited before serving: %v; output:\n%s", stop(), out.String())
		}
		caPEM, err := os.ReadFile(filepath.Join(dataDir, "tls", "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		return &runningVault{URL: url, Client: client, stdout: out, stop: stop}
	case <-time.After(30 * time.Second):
		t.Fatalf("vault did not start in 30 s; output:\n%s", out.String())
	}
	return nil
}

func TestVaultServesTLSFromItsOwnCAAndReusesItAfterARestart(t *testing.T) {
	dir := t.TempDir()
	v := startVault(t, dir, "--admin-password", "first-owner-password")
	if !strings.Contains(v.stdout.String(), `Created the first Owner: user "admin"`) {
		t.Fatalf("first start must say how to log in; stdout:\n%s", v.stdout.String())
	}
	// The client trusts only the vault CA: the handshake proves the chain.
	resp, err := v.Client.Get(v.URL + "/healthz")
	if err != nil {
		t.Fatalf("healthz over TLS verified against the vault CA: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	body, _ := json.Marshal(map[string]string{"username": "admin", "password": "first-owner-password"})
	resp, err = v.Client.Post(v.URL+"/api/v1/auth/token", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(tok.Token, "lbt_") {
		t.Fatalf("token with the admin password: %d %q", resp.StatusCode, tok.Token)
	}
	caBefore, _ := os.ReadFile(filepath.Join(dir, "tls", "ca.crt"))
	if err := v.stop(); err != nil {
		t.Fatalf("graceful shutdown: %v", err)
	}

	// Second start: same CA, same users, no new admin, no password printed.
	v2 := startVault(t, dir, "--admin-password", "another-password-ignored")
	caAfter, _ := os.ReadFile(filepath.Join(dir, "tls", "ca.crt"))
	if !bytes.Equal(caBefore, caAfter) {
		t.Fatal("the vault CA changed across a restart; registered agents would stop trusting the vault")
	}
	if strings.Contains(v2.stdout.String(), "Created the first Owner") {
		t.Fatal("the second start created the first Owner again")
	}
	resp, err = v2.Client.Post(v2.URL+"/api/v1/auth/token", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the first password must still work after a restart: %d", resp.StatusCode)
	}
	for _, f := range []string{"vault.key", "tls/ca.key", "tls/server.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, err %v; secrets must be 0600", f, fi.Mode().Perm(), err)
		}
	}
}

func TestFirstStartWithoutAPasswordPrintsARandomOneOnce(t *testing.T) {
	dir := t.TempDir()
	v := startVault(t, dir)
	m := regexp.MustCompile(`user "admin" with password (\S+)`).FindStringSubmatch(v.stdout.String())
	if m == nil || len(m[1]) < 16 {
		t.Fatalf("no generated password printed:\n%s", v.stdout.String())
	}
	body, _ := json.Marshal(map[string]string{"username": "admin", "password": m[1]})
	resp, err := v.Client.Post(v.URL+"/api/v1/auth/token", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the printed password does not log in: %d", resp.StatusCode)
	}
}
