package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServerCertificateChainsToTheCAAndIsReissuedForNewHosts(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	first, err := ca.ServerCertificate(dir, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(first.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: pool}); err != nil {
		t.Fatalf("server certificate does not verify against the CA: %v", err)
	}
	again, _ := ca.ServerCertificate(dir, []string{"localhost", "127.0.0.1"})
	if string(again.Certificate[0]) != string(first.Certificate[0]) {
		t.Fatal("an unchanged certificate was reissued on restart")
	}
	wider, _ := ca.ServerCertificate(dir, []string{"localhost", "127.0.0.1", "vault.example.net"})
	leaf, _ = x509.ParseCertificate(wider.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "vault.example.net", Roots: pool}); err != nil {
		t.Fatalf("a new host name must get a new certificate: %v", err)
	}
	reloaded, err := LoadOrCreateCA(dir)
	if err != nil || reloaded.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("the CA must be reused: %v", err)
	}
}

func TestVaultKeyIsCreatedOnceAndAMangledOneIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vault.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil || len(k1) != 32 {
		t.Fatalf("create: %v", err)
	}
	k2, _ := LoadOrCreateKey(path)
	if string(k1) != string(k2) {
		t.Fatal("the key changed on the second load; sealed credentials would be lost")
	}
	if err := os.WriteFile(path, []byte("not hex"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "restore it from backup") {
		t.Fatalf("mangled key: %v", err)
	}
}
