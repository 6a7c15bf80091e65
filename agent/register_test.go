package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/internal/testvault"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

func writeKey(t *testing.T, key agentproto.RegistrationKey) string {
	path := filepath.Join(t.TempDir(), "key.json")
	b, _ := json.Marshal(key)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRegisterRefusesAVaultWhoseCertificateIsNotThePinnedOne(t *testing.T) {
	called := false
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true }))
	defer srv.Close()
	key := agentproto.RegistrationKey{VaultURL: srv.URL, CAFingerprint: strings.Repeat("ab", 32), Secret: "lbr_x", ExpiresAt: time.Now().Add(time.Hour)}
	var stderr bytes.Buffer
	err := run(t.Context(), []string{"register", "--key-file", writeKey(t, key), "--state-dir", t.TempDir()}, func(string) string { return "" }, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "is not the vault of this registration key") {
		t.Fatalf("error %v", err)
	}
	if called {
		t.Fatal("the secret was sent to a server that failed the pin")
	}
}

func TestRegisterTrustsThePinnedCertificateAndStoresTheIdentity(t *testing.T) {
	var got agentproto.RegisterRequest
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&got)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"error":{"code":"registration_key_invalid","message":"the registration key was already used at 2026-11-28T10:00:00Z by host host_1"}}`))
	}))
	defer srv.Close()
	sum := sha256.Sum256(srv.Certificate().Raw)
	key := agentproto.RegistrationKey{VaultURL: srv.URL, CAFingerprint: hex.EncodeToString(sum[:]), Secret: "lbr_secret", ExpiresAt: time.Now().Add(time.Hour)}
	stateDir := t.TempDir()
	err := run(t.Context(), []string{"register", "--key-file", writeKey(t, key), "--state-dir", stateDir, "--name", "hv9"}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("the vault's refusal must reach the operator: %v", err)
	}
	if got.Secret != "lbr_secret" || got.Name != "hv9" || !strings.Contains(got.CSR, "CERTIFICATE REQUEST") || got.Agent.ProtocolVersion != agentproto.ProtocolVersion {
		t.Fatalf("request: %+v", got)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "identity.json")); err == nil {
		t.Fatal("a refused registration left an identity behind")
	}
}

func TestExpiredKeyIsRefusedBeforeContactingTheVault(t *testing.T) {
	key := agentproto.RegistrationKey{VaultURL: "https://127.0.0.1:1", CAFingerprint: strings.Repeat("ab", 32), Secret: "lbr_x", ExpiresAt: time.Now().Add(-time.Minute)}
	err := run(t.Context(), []string{"register", "--key-file", writeKey(t, key), "--state-dir", t.TempDir()}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("error %v", err)
	}
}

func TestRunWithoutRegistrationSaysToRegisterFirst(t *testing.T) {
	err := run(t.Context(), []string{"run", "--state-dir", t.TempDir(), "--vm-root", t.TempDir()}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "lifeboat-agent register") {
		t.Fatalf("error %v", err)
	}
}

// vaultForRegistration is a fake vault that signs the CSR of a valid
// secret with its CA, over TLS with a certificate of that CA for 127.0.0.1
// (the CA itself in the chain, as the real vault sends it).
func vaultForRegistration(t *testing.T, ca *testvault.CA) (*httptest.Server, *agentproto.RegisterRequest) {
	t.Helper()
	var got agentproto.RegisterRequest
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != agentproto.PathRegister {
			http.NotFound(w, r)
			return
		}
		got = testvault.Decode[agentproto.RegisterRequest](r)
		block, _ := pem.Decode([]byte(got.CSR))
		if got.Secret != "lbr_secret" || block == nil {
			w.WriteHeader(http.StatusForbidden)
			testvault.Reply(w, agentproto.ErrorBody{Error: agentproto.ErrorDetail{Code: agentproto.CodeRegistrationKey, Message: "unknown registration key"}})
			return
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil || csr.CheckSignature() != nil {
			w.WriteHeader(http.StatusBadRequest)
			testvault.Reply(w, agentproto.ErrorBody{Error: agentproto.ErrorDetail{Code: "invalid_csr", Message: "bad CSR"}})
			return
		}
		cert := ca.Sign(t, csr.PublicKey, time.Now().Add(-time.Minute), time.Now().Add(90*24*time.Hour))
		testvault.Reply(w, agentproto.RegisterResponse{HostID: "host_1", SiteID: "site_1", Certificate: string(cert), CA: string(ca.PEM()), Intervals: agentproto.Intervals{HeartbeatSeconds: 1, PollWaitSeconds: 1, ProgressSeconds: 1}})
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.ServerCert(t, nil, []net.IP{net.IPv4(127, 0, 0, 1)})}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &got
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func TestRegisterWithThePinnedCAStoresKeyCertificateCAAndIdentity(t *testing.T) {
	ca := testvault.NewCA(t)
	srv, got := vaultForRegistration(t, ca)
	key := agentproto.RegistrationKey{VaultURL: srv.URL, CAFingerprint: strings.ToUpper(fingerprint(ca.Cert)), Secret: "lbr_secret",
		SiteID: "site_1", SiteName: "Main", ExpiresAt: time.Now().Add(time.Hour)}
	stateDir := t.TempDir()
	var stdout bytes.Buffer
	err := run(t.Context(), []string{"register", "--key-file", writeKey(t, key), "--state-dir", stateDir, "--name", "hv1"}, func(string) string { return "" }, &stdout, io.Discard)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if got.Name != "hv1" || got.Agent.Driver != "filedisk" || got.Agent.Version == "" || got.Agent.Hostname == "" || got.Agent.ProtocolVersion != agentproto.ProtocolVersion {
		t.Fatalf("request: %+v", got)
	}
	if !strings.Contains(stdout.String(), "host_1") {
		t.Fatalf("output: %s", stdout.String())
	}
	for name, mode := range map[string]os.FileMode{"host.key": 0o600, "host.crt": 0o644, "vault-ca.pem": 0o644, "identity.json": 0o600} {
		fi, err := os.Stat(filepath.Join(stateDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	dir, _ := state.Open(stateDir)
	id, err := dir.Identity()
	if err != nil || id != (state.Identity{VaultURL: srv.URL, HostID: "host_1", SiteID: "site_1", Name: "hv1"}) {
		t.Fatalf("identity %+v, %v", id, err)
	}
	pair, err := dir.Certificate()
	if err != nil {
		t.Fatalf("the stored certificate does not match the stored key: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("the stored certificate is not the one the vault signed: %v", err)
	}
	if caPEM, _ := dir.VaultCA(); !bytes.Equal(caPEM, ca.PEM()) {
		t.Fatalf("the stored vault CA is not the pinned one:\n%s", caPEM)
	}
	// Registering twice into the same directory is refused.
	err = run(t.Context(), []string{"register", "--key-file", writeKey(t, key), "--state-dir", stateDir}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "already holds the registration") {
		t.Fatalf("second registration: %v", err)
	}
}

func TestRegisterRefusesAnotherCAAndSaysTheFingerprintsDiffer(t *testing.T) {
	ca := testvault.NewCA(t)
	srv, got := vaultForRegistration(t, ca)
	other := testvault.NewCA(t)
	key := agentproto.RegistrationKey{VaultURL: srv.URL, CAFingerprint: fingerprint(other.Cert), Secret: "lbr_secret", ExpiresAt: time.Now().Add(time.Hour)}
	stateDir := t.TempDir()
	err := run(t.Context(), []string{"register", "--key-file", writeKey(t, key), "--state-dir", stateDir}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "fingerprints differ") || !strings.Contains(err.Error(), fingerprint(other.Cert)) {
		t.Fatalf("error %v", err)
	}
	if got.Secret != "" {
		t.Fatal("the secret was sent to a vault that failed the pin")
	}
	if entries, _ := os.ReadDir(stateDir); len(entries) > 1 { // only tasks/
		t.Fatalf("a refused registration left files: %v", entries)
	}
}

func TestRegisterRefusesThePinnedCAForAnotherHostName(t *testing.T) {
	ca := testvault.NewCA(t)
	srv, got := vaultForRegistration(t, ca)
	// The certificate is for 127.0.0.1; "localhost" reaches the same server
	// under a name the certificate does not carry.
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	key := agentproto.RegistrationKey{VaultURL: url, CAFingerprint: fingerprint(ca.Cert), Secret: "lbr_secret", ExpiresAt: time.Now().Add(time.Hour)}
	err := run(t.Context(), []string{"register", "--key-file", writeKey(t, key), "--state-dir", t.TempDir()}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "does not verify against the pinned CA") {
		t.Fatalf("error %v", err)
	}
	if got.Secret != "" {
		t.Fatal("the secret was sent to a server whose certificate is not for its name")
	}
}

func TestRegisterShowsTheVaultsRefusal(t *testing.T) {
	ca := testvault.NewCA(t)
	srv, _ := vaultForRegistration(t, ca)
	key := agentproto.RegistrationKey{VaultURL: srv.URL, CAFingerprint: fingerprint(ca.Cert), Secret: "lbr_wrong", ExpiresAt: time.Now().Add(time.Hour)}
	err := run(t.Context(), []string{"register", "--key-file", writeKey(t, key), "--state-dir", t.TempDir()}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "unknown registration key") {
		t.Fatalf("error %v", err)
	}
}
