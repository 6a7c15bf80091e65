// Package azuritetest runs a real Azurite (the Azure Storage emulator,
// installed from npm by scripts/install-test-deps.sh) for tests: one
// process per test on a free loopback port, its data in the test's
// temporary directory, so it can be stopped and started again with its
// blobs intact.
package azuritetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Azurite's well-known development account (public, in Azure's docs).
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Server is a running Azurite.
type Server struct {
	t       testing.TB
	bin     string
	dir     string
	port    int
	cmd     *exec.Cmd
	stderr  bytes.Buffer
	stopped bool
}

// AccountURL is the account's blob endpoint, as a target's account URL.
func (s *Server) AccountURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", s.port, Account)
}

// Start starts Azurite, or skips the test when it is not installed
// (fails it instead when LIFEBOAT_REQUIRE_AZURITE is set, as in CI).
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binary()
	if err != nil {
		if os.Getenv("LIFEBOAT_REQUIRE_AZURITE") != "" {
			t.Fatalf("Azurite is needed and LIFEBOAT_REQUIRE_AZURITE is set: %v; run make test-deps", err)
		}
		t.Skipf("Azurite is not installed (%v); make test-deps installs it", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: port}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Stop stops Azurite; its blobs stay on disk for Restart.
func (s *Server) Stop() {
	if s.cmd == nil || s.stopped {
		return
	}
	s.stopped = true
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// Restart starts Azurite (again) on the same port and data directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.stderr.Reset()
	s.cmd = exec.Command(s.bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(s.port),
		"--location", s.dir, "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry")
	s.cmd.Stdout = &s.stderr
	s.cmd.Stderr = &s.stderr
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start Azurite: %v", err)
	}
	s.stopped = false
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("Azurite did not listen on port %d within 30 s: %s", s.port, s.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// binary finds scripts/azurite/node_modules/.bin/azurite-blob above the
// test's directory.
func binary() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			bin := filepath.Join(dir, "scripts", "azurite", "node_modules", ".bin", "azurite-blob")
			if _, err := os.Stat(bin); err != nil {
				return "", err
			}
			return bin, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		dir = parent
	}
}
