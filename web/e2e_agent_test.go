package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// The end-to-end tests run the real programs as processes on loopback:
// lifeboat-vault and lifeboat-agent, built once per test binary.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func binaries(t *testing.T) (vault, agent string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "lifeboat-bin-")
		if buildErr != nil {
			return
		}
		for _, b := range [][2]string{{"lifeboat-vault", "."}, {"lifeboat-agent", "../agent"}} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, b[0]), b[1]).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", b[0], err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "lifeboat-vault"), filepath.Join(binDir, "lifeboat-agent")
}

// proc is a running program with its output kept for failure messages.
type proc struct {
	cmd *exec.Cmd
	out *lockedBuffer
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), out: &lockedBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

// e2eVault is a vault process on a fixed loopback port, restartable.
type e2eVault struct {
	t       *testing.T
	bin     string
	dataDir string
	addr    string
	proc    *proc
	client  *http.Client
	token   string
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newE2EVault(t *testing.T) *e2eVault {
	vaultBin, _ := binaries(t)
	v := &e2eVault{t: t, bin: vaultBin, dataDir: t.TempDir(), addr: freeAddr(t)}
	v.start()
	body, _ := json.Marshal(map[string]string{"username": "admin", "password": "end-to-end-password"})
	var tok struct{ Token string }
	v.do(http.MethodPost, "/api/v1/auth/token", body, &tok)
	v.token = tok.Token
	return v
}

func (v *e2eVault) start() {
	v.t.Helper()
	v.proc = startProc(v.t, v.bin, "--data-dir", v.dataDir, "--listen", v.addr, "--admin-password", "end-to-end-password",
		"--agent-heartbeat", "1s", "--agent-poll-wait", "2s", "--task-lease", "3s", "--log-level", "debug")
	v.waitHealthy()
}

// waitHealthy waits until the vault process answers its health check.
func (v *e2eVault) waitHealthy() {
	v.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if caPEM, err := os.ReadFile(filepath.Join(v.dataDir, "tls", "ca.crt")); err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(caPEM)
			v.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			if resp, err := v.client.Get(v.url() + "/healthz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	v.t.Fatalf("the vault did not start:\n%s", v.proc.out.String())
}

func (v *e2eVault) url() string { return "https://" + v.addr }

func (v *e2eVault) do(method, path string, body []byte, out any) int {
	v.t.Helper()
	req, _ := http.NewRequest(method, v.url()+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if v.token != "" {
		req.Header.Set("Authorization", "Bearer "+v.token)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		v.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		_ = json.Unmarshal(raw, out)
	}
	return resp.StatusCode
}

// eventually polls cond until it holds or 30 s pass.
func eventually(t *testing.T, what string, cond func() bool, logs ...*proc) {
	t.Helper()
	eventuallyWithin(t, 30*time.Second, what, cond, logs...)
}

// eventuallyWithin polls cond until it holds or d passes, then fails with
// the logs.
func eventuallyWithin(t *testing.T, d time.Duration, what string, cond func() bool, logs ...*proc) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	var out strings.Builder
	for _, p := range logs {
		out.WriteString(p.out.String())
	}
	t.Fatalf("%s: not within %v\n%s", what, d, out.String())
}

// demoVMRoot makes two filedisk VMs.
func demoVMRoot(t *testing.T) string {
	root := t.TempDir()
	for _, vm := range []string{"web", "db"} {
		os.MkdirAll(filepath.Join(root, vm), 0o755)
		if err := os.WriteFile(filepath.Join(root, vm, "disk0.img"), bytes.Repeat([]byte{7}, 1<<16), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// registeredAgent makes a site, downloads a key and registers an agent
// state directory with it.
func registeredAgent(t *testing.T, v *e2eVault) (stateDir, keyFile string) {
	return registerHost(t, v, "Datacenter", "hv-e2e")
}

type e2eJob struct {
	State string
	Error *struct{ Code, Message string }
	Steps []struct {
		Name, State, Message string
		Progress             int
	}
}

// ended says whether a job has ended.
func (j e2eJob) ended() bool {
	return j.State == "Succeeded" || j.State == "Failed" || j.State == "Cancelled"
}

func TestAgentRegistersReportsInventoryAndRunsAHostCheckEndToEnd(t *testing.T) {
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, keyFile := registeredAgent(t, v)
	out, err := exec.Command(agentBin, "register", "--key-file", keyFile, "--state-dir", t.TempDir(), "--name", "hv-again").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already used") {
		t.Fatalf("registering twice with one key: %v\n%s", err, out)
	}
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", demoVMRoot(t))
	var hosts struct {
		Items []struct{ ID, State string }
	}
	eventually(t, "the host is Connected", func() bool {
		v.do(http.MethodGet, "/api/v1/hosts", nil, &hosts)
		return len(hosts.Items) == 1 && hosts.Items[0].State == "Connected"
	}, v.proc, agent)
	var vms struct{ Items []struct{ Name string } }
	eventually(t, "the VMs are listed", func() bool {
		v.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 2
	}, v.proc, agent)
	var accepted struct {
		JobID string `json:"job_id"`
	}
	v.do(http.MethodPost, "/api/v1/hosts/"+hosts.Items[0].ID+"/check", nil, &accepted)
	var job e2eJob
	eventually(t, "the prerequisites job succeeds", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, nil, &job)
		return job.State == "Succeeded"
	}, v.proc, agent)
	if job.Steps[0].Progress != 100 {
		t.Fatalf("job: %+v", job)
	}
	// Removing the host stops the agent with a message that says why.
	v.do(http.MethodDelete, "/api/v1/hosts/"+hosts.Items[0].ID, nil, nil)
	done := make(chan error, 1)
	go func() { done <- agent.cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(agent.out.String(), "register again") {
			t.Fatalf("a revoked agent must stop and say to register again: %v\n%s", err, agent.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the revoked agent did not stop\n%s", agent.out.String())
	}
}

// hostClient speaks to the vault with the agent's own certificate, to set
// up situations the agent would only reach by chance of timing.
func hostClient(t *testing.T, stateDir, vaultURL string) *http.Client {
	pair, err := tls.LoadX509KeyPair(filepath.Join(stateDir, "host.crt"), filepath.Join(stateDir, "host.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(stateDir, "vault-ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
}

func leaseAsHost(t *testing.T, c *http.Client, vaultURL string) agentproto.Task {
	t.Helper()
	b, _ := json.Marshal(agentproto.PollRequest{Agent: agentproto.AgentInfo{Version: "test", ProtocolVersion: agentproto.ProtocolVersion}, Free: 1})
	resp, err := c.Post(vaultURL+agentproto.PathPoll, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var poll agentproto.PollResponse
	json.NewDecoder(resp.Body).Decode(&poll)
	if len(poll.Tasks) != 1 {
		t.Fatalf("lease: %d %+v", resp.StatusCode, poll)
	}
	return poll.Tasks[0]
}

func startCheck(t *testing.T, v *e2eVault) string {
	var hosts struct{ Items []struct{ ID string } }
	v.do(http.MethodGet, "/api/v1/hosts", nil, &hosts)
	var accepted struct {
		JobID string `json:"job_id"`
	}
	if status := v.do(http.MethodPost, "/api/v1/hosts/"+hosts.Items[0].ID+"/check", nil, &accepted); status != http.StatusAccepted {
		t.Fatalf("check: %d", status)
	}
	return accepted.JobID
}

func TestResultKeptByTheAgentIsDeliveredWhenTheVaultIsBack(t *testing.T) {
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registeredAgent(t, v)
	jobID := startCheck(t, v)
	// The host leases the task, and the agent finished it just as the vault
	// went down: its result is in the state directory, undelivered.
	task := leaseAsHost(t, hostClient(t, stateDir, v.url()), v.url())
	result, _ := json.Marshal(agentproto.PrerequisitesResult{Checks: []agentproto.Check{{Name: "Free space", OK: true, Message: "plenty"}}})
	record, _ := json.Marshal(map[string]any{"task": task, "state": "done", "result": agentproto.Result{Result: result}})
	os.WriteFile(filepath.Join(stateDir, "tasks", task.ID+".json"), record, 0o600)
	v.proc.kill() // kill -9: no goodbye

	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", demoVMRoot(t))
	eventually(t, "the agent tries and keeps the result", func() bool {
		return strings.Contains(agent.out.String(), "deliver a task result failed")
	}, agent)
	if _, err := os.Stat(filepath.Join(stateDir, "tasks", task.ID+".json")); err != nil {
		t.Fatalf("the undelivered result was lost: %v", err)
	}
	v.start()
	var job e2eJob
	eventually(t, "the job succeeds once the vault is back", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+jobID, nil, &job)
		return job.State == "Succeeded"
	}, v.proc, agent)
	eventually(t, "the delivered result leaves the state directory", func() bool {
		_, err := os.Stat(filepath.Join(stateDir, "tasks", task.ID+".json"))
		return os.IsNotExist(err)
	}, agent)
	// The vault recorded the kept result, not one of a fresh run.
	if got := taskColumn(t, v, task.ID, "result"); !strings.Contains(got, "plenty") {
		t.Fatalf("recorded result %s, want the one the agent kept", got)
	}
}

// taskColumn reads a task's column from the vault's SQLite file.
func taskColumn(t *testing.T, v *e2eVault, taskID, column string) string {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(v.dataDir, "lifeboat.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out string
	if err := db.QueryRowContext(context.Background(), "SELECT CAST("+column+" AS TEXT) FROM tasks WHERE id = ?", taskID).Scan(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestTaskOfADeadAgentRunsAgainAfterItsLeaseExpires(t *testing.T) {
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registeredAgent(t, v)
	jobID := startCheck(t, v)
	// The host took the task, then died without a word (no progress).
	first := leaseAsHost(t, hostClient(t, stateDir, v.url()), v.url())
	if first.Attempt != 1 {
		t.Fatalf("first attempt: %+v", first)
	}
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", demoVMRoot(t))
	var job e2eJob
	eventually(t, "the task runs again and the job succeeds", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+jobID, nil, &job)
		return job.State == "Succeeded"
	}, v.proc, agent)
	if attempts := taskColumn(t, v, first.ID, "attempts"); attempts != "2" {
		t.Fatalf("attempts: %s, want 2 (the expired lease counted)", attempts)
	}
}

func TestAgentKilledMidTaskRunsItAgainAfterARestart(t *testing.T) {
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registeredAgent(t, v)
	jobID := startCheck(t, v)
	// The agent had accepted the task (persisted as running) when it was
	// killed; the lease is still the host's.
	task := leaseAsHost(t, hostClient(t, stateDir, v.url()), v.url())
	record, _ := json.Marshal(map[string]any{"task": task, "state": "running"})
	os.WriteFile(filepath.Join(stateDir, "tasks", task.ID+".json"), record, 0o600)
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", demoVMRoot(t))
	var job e2eJob
	eventually(t, "the restarted agent runs the task again and the job succeeds", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+jobID, nil, &job)
		return job.State == "Succeeded"
	}, v.proc, agent)
	if !strings.Contains(agent.out.String(), "running again a task interrupted") {
		t.Fatalf("the agent did not resume the task itself:\n%s", agent.out.String())
	}
}

// waitJob waits for a job to end and returns it.
func (v *e2eVault) waitJob(id string, logs ...*proc) e2eJob {
	v.t.Helper()
	var job e2eJob
	eventually(v.t, "job "+id+" ends", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+id, nil, &job)
		return job.ended()
	}, append([]*proc{v.proc}, logs...)...)
	return job
}

// protectOnDirectory creates a policy (policyJSON, the API's body) and a
// directory target at dir (made first), enables protection of the VM
// with them through the API, and waits for the Enable protection job to
// succeed.
func protectOnDirectory(t *testing.T, v *e2eVault, vmID, policyJSON, dir string, logs ...*proc) (policyID, targetID string) {
	t.Helper()
	var policy, target struct{ ID string }
	if status := v.do(http.MethodPost, "/api/v1/policies", []byte(policyJSON), &policy); status != http.StatusCreated {
		t.Fatalf("create policy %s: %d", policyJSON, status)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"name": filepath.Base(dir), "kind": "directory", "path": dir})
	if status := v.do(http.MethodPost, "/api/v1/targets", body, &target); status != http.StatusCreated {
		t.Fatalf("create target %s: %d", dir, status)
	}
	body, _ = json.Marshal(map[string]string{"policy_id": policy.ID, "target_id": target.ID})
	var accepted struct {
		JobID string `json:"job_id"`
	}
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/protection", body, &accepted); status != http.StatusAccepted {
		t.Fatalf("enable protection: %d", status)
	}
	if job := v.waitJob(accepted.JobID, logs...); job.State != "Succeeded" {
		var out strings.Builder
		for _, p := range logs {
			out.WriteString(p.out.String())
		}
		t.Fatalf("enable protection: %+v\n%s", job, out.String())
	}
	return policy.ID, target.ID
}
