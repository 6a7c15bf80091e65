package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

func TestRegistrationKeyCommandWritesAKeyForTheSite(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "key.json")
	getenv := func(string) string { return "" }
	err := run(t.Context(), []string{"registration-key", "--data-dir", dir, "--site", "Lab", "--out", out}, getenv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--create-site") {
		t.Fatalf("unknown site without --create-site: %v", err)
	}
	err = run(t.Context(), []string{"registration-key", "--data-dir", dir, "--listen=127.0.0.1:9443", "--site", "Lab", "--create-site", "--out", out}, getenv, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	var key agentproto.RegistrationKey
	if err := json.Unmarshal(b, &key); err != nil || key.SiteName != "Lab" || key.VaultURL != "https://127.0.0.1:9443" || len(key.CAFingerprint) != 64 || !strings.HasPrefix(key.Secret, "lbr_") {
		t.Fatalf("key %+v: %v", key, err)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v; it holds a secret", fi.Mode().Perm())
	}
	// A second key for the now existing site.
	if err := run(t.Context(), []string{"registration-key", "--data-dir", dir, "--site", "Lab", "--out", out + "2"}, getenv, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
}
