package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// The real programs, as the end-to-end tests in web/ run them: built
// here, started as processes on loopback, driven through the vault's API.

// buildBinaries builds lifeboat-vault and lifeboat-agent into dir, from
// the module the bench runs in (make bench runs it from the repository).
func buildBinaries(dir string) (vault, agent string, err error) {
	vault, agent = filepath.Join(dir, "lifeboat-vault"), filepath.Join(dir, "lifeboat-agent")
	for _, b := range [][2]string{{vault, "./web"}, {agent, "./agent"}} {
		if out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	return vault, agent, nil
}

// proc is a running program whose output goes to a log file, shown when
// the bench fails.
type proc struct {
	cmd     *exec.Cmd
	logPath string
}

func startProc(logPath, name string, args ...string) (*proc, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the child has its own descriptor
	p := &proc{cmd: exec.Command(name, args...), logPath: logPath}
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

// stop kills the program and waits for it; its rusage is then in
// p.cmd.ProcessState.
func (p *proc) stop() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

// tail is the end of the program's log, for an error message.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// vaultProc is a vault on its embedded defaults, a fresh data directory
// and a free loopback port, with an admin's API token.
type vaultProc struct {
	*proc
	url    string
	client *http.Client
	token  string
}

const benchAdminPassword = "bench-admin-password"

func startVault(bin, dataDir, logPath string, extra ...string) (*vaultProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	p, err := startProc(logPath, bin, append([]string{"--data-dir", dataDir, "--listen", addr, "--admin-password", benchAdminPassword}, extra...)...)
	if err != nil {
		return nil, err
	}
	v := &vaultProc{proc: p, url: "https://" + addr}
	// The vault makes its own CA in the data directory on first start:
	// trust that, as an agent does after registering.
	deadline := time.Now().Add(60 * time.Second)
	for v.client == nil {
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("the vault did not start within 60 s:\n%s", p.tail())
		}
		time.Sleep(200 * time.Millisecond)
		caPEM, err := os.ReadFile(filepath.Join(dataDir, "tls", "ca.crt"))
		if err != nil {
			continue
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		if resp, err := c.Get(v.url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				v.client = c
			}
		}
	}
	var tok struct{ Token string }
	if err := v.call(http.MethodPost, "/api/v1/auth/token", map[string]string{"username": "admin", "password": benchAdminPassword}, &tok); err != nil {
		p.stop()
		return nil, err
	}
	v.token = tok.Token
	return v, nil
}

// call sends body as JSON and decodes the answer into out (nil: not
// read); a status of 300 or more is an error.
func (v *vaultProc) call(method, path string, body, out any) error {
	raw, err := v.callRaw(method, path, body)
	if err != nil || out == nil {
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

func (v *vaultProc) callRaw(method, path string, body any) ([]byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, v.url+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if v.token != "" {
		req.Header.Set("Authorization", "Bearer "+v.token)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(raw))
	}
	return raw, nil
}

// registerAgent makes a site and a registration key, and registers an
// agent state directory with it, as an administrator would.
func registerAgent(v *vaultProc, agentBin, stateDir, keyFile string) error {
	var site struct{ ID string }
	if err := v.call(http.MethodPost, "/api/v1/sites", map[string]string{"name": "Bench"}, &site); err != nil {
		return err
	}
	key, err := v.callRaw(http.MethodPost, "/api/v1/sites/"+site.ID+"/registration-key", nil)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return err
	}
	out, err := exec.Command(agentBin, "register", "--key-file", keyFile, "--state-dir", stateDir, "--name", "bench-host").CombinedOutput()
	if err != nil {
		return fmt.Errorf("lifeboat-agent register: %v\n%s", err, out)
	}
	return nil
}

// benchVM is the part of the API's VM that the bench reads.
type benchVM struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	ProtectionState string `json:"protection_state"`
	RPOSeconds      *int64 `json:"rpo_seconds"`
	LastCycle       *struct {
		Seconds float64 `json:"seconds"`
	} `json:"last_cycle"`
}

// listVMs reads every VM, page by page.
func (v *vaultProc) listVMs() ([]benchVM, error) {
	var all []benchVM
	cursor := ""
	for {
		var page struct {
			Items      []benchVM `json:"items"`
			NextCursor string    `json:"next_cursor"`
		}
		path := "/api/v1/vms?limit=500"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		if err := v.call(http.MethodGet, path, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.NextCursor == "" {
			return all, nil
		}
		cursor = page.NextCursor
	}
}
