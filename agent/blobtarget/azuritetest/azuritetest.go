// Package azuritetest runs a real Azurite (the Azure Storage emulator,
// installed from npm by scripts/install-test-deps.sh) for tests and the
// benchmark: one process on a free loopback port, its data in a directory
// of the caller's, so it can be stopped and started again with its blobs
// intact.
package azuritetest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Azurite's well-known development account (public, in Azure's docs).
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Process is a running (or stopped) Azurite.
type Process struct {
	bin  string
	dir  string
	port int

	mu      sync.Mutex
	cmd     *exec.Cmd
	out     bytes.Buffer
	stopped bool
}

// Launch starts Azurite with its data in dir.
func Launch(dir string) (*Process, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	p := &Process{bin: bin, dir: dir, port: port}
	return p, p.Start()
}

// AccountURL is the account's blob endpoint, as a target's account URL.
func (p *Process) AccountURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", p.port, Account)
}

// Start starts Azurite (again) on the same port and data directory, and
// waits until it listens.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out.Reset()
	p.cmd = exec.Command(p.bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(p.port),
		"--location", p.dir, "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry")
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start Azurite: %w", err)
	}
	p.stopped = false
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			p.stopLocked()
			return fmt.Errorf("Azurite did not listen on port %d within 30 s: %s", p.port, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops Azurite; its blobs stay in its directory.
func (p *Process) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
}

func (p *Process) stopLocked() {
	if p.cmd == nil || p.stopped {
		return
	}
	p.stopped = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// Binary finds scripts/azurite/node_modules/.bin/azurite-blob above the
// working directory.
func Binary() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			bin := filepath.Join(dir, "scripts", "azurite", "node_modules", ".bin", "azurite-blob")
			if _, err := os.Stat(bin); err != nil {
				return "", errors.New(bin + " is missing")
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

// Server is an Azurite for one test.
type Server struct {
	*Process
	t testing.TB
}

// Start starts Azurite for the test, or skips the test when it is not
// installed (fails it instead when LIFEBOAT_REQUIRE_AZURITE is set, as in
// CI). It stops when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := Binary(); err != nil {
		if os.Getenv("LIFEBOAT_REQUIRE_AZURITE") != "" {
			t.Fatalf("Azurite is needed and LIFEBOAT_REQUIRE_AZURITE is set: %v; run make test-deps", err)
		}
		t.Skipf("Azurite is not installed (%v); make test-deps installs it", err)
	}
	p, err := Launch(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &Server{Process: p, t: t}
}

// Restart starts the stopped Azurite again, failing the test if it cannot.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.Start(); err != nil {
		s.t.Fatal(err)
	}
}
