package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
