package runner

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

func TestAgentHeartbeatsPollsRunsAPrerequisitesCheckAndReportsIt(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	vmRoot := t.TempDir()
	if err := os.MkdirAll(filepath.Join(vmRoot, "web"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vmRoot, "web", "disk0.img"), make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	c.tasks = []agentproto.Task{{ID: "task_pre", Kind: agentproto.TaskCheckPrerequisites, Payload: json.RawMessage(`{"min_free_bytes": 1}`), Attempt: 1}}
	stop := runAgent(t, testAgent(t, dir, vmRoot, nil))

	res := c.result(t, "task_pre")
	if res.Error != nil {
		t.Fatalf("task error: %+v", res.Error)
	}
	if res.Attempt != 1 {
		t.Errorf("the result says attempt %d, want the lease's 1", res.Attempt)
	}
	var pre agentproto.PrerequisitesResult
	if err := json.Unmarshal(res.Result, &pre); err != nil {
		t.Fatalf("result %s: %v", res.Result, err)
	}
	var names []string
	for _, check := range pre.Checks {
		names = append(names, check.Name)
		if !check.OK {
			t.Errorf("check %q failed: %s", check.Name, check.Message)
		}
	}
	for _, want := range []string{"Agent and protocol versions", "Free space in the state directory", "Free space in the VM root", "Driver filedisk", "Clock against the vault"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %q check in %v", want, names)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.heartbeats) == 0 || c.heartbeats[0].Agent.ProtocolVersion != agentproto.ProtocolVersion || c.heartbeats[0].Time.IsZero() {
		t.Fatalf("heartbeats: %+v", c.heartbeats)
	}
	if len(c.polls) == 0 || c.polls[0].Free != testOptions.MaxTasks || !slices.Contains(c.polls[0].Agent.Features, agentproto.TaskCheckPrerequisites) {
		t.Fatalf("polls: %+v", c.polls)
	}
	if len(c.progress["task_pre"]) == 0 {
		t.Fatal("no progress reported")
	}
	for _, p := range c.progress["task_pre"] {
		if p.Attempt != 1 {
			t.Errorf("progress %+v does not say attempt 1", p)
		}
	}
	if len(c.inventory) == 0 || len(c.inventory[0].VMs) != 1 || c.inventory[0].VMs[0].Disks[0].SizeBytes != 8192 {
		t.Fatalf("inventory: %+v", c.inventory)
	}
}

func TestFailedPrerequisitesAreAResultWithFailedChecksNotATaskError(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	c.clockSkew = 5 * time.Minute
	c.tasks = []agentproto.Task{{ID: "task_pre", Kind: agentproto.TaskCheckPrerequisites, Payload: json.RawMessage(`{"min_free_bytes": 9000000000000000000}`)}}
	runAgent(t, testAgent(t, dir, "", nil))

	res := c.result(t, "task_pre")
	if res.Error != nil {
		t.Fatalf("failed checks must not be a task error: %+v", res.Error)
	}
	var pre agentproto.PrerequisitesResult
	if err := json.Unmarshal(res.Result, &pre); err != nil {
		t.Fatal(err)
	}
	failed := map[string]string{}
	for _, check := range pre.Checks {
		if !check.OK {
			failed[check.Name] = check.Message
		}
	}
	for _, name := range []string{"Free space in the state directory", "Free space in the VM root", "Clock against the vault"} {
		if _, ok := failed[name]; !ok {
			t.Errorf("check %q passed; it must fail (failed: %v)", name, failed)
		}
	}
	if msg := failed["Clock against the vault"]; !strings.Contains(msg, "NTP") {
		t.Errorf("the clock check does not say what to do: %q", msg)
	}
}

func TestAgentReportsProgressAndStopsATaskTheVaultCancels(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	c.tasks = []agentproto.Task{{ID: "task_slow", Kind: "slow", Attempt: 1}}
	c.cancelAt = 3
	stop := runAgent(t, testAgent(t, dir, "", nil))

	res := c.result(t, "task_slow")
	if res.Error == nil || res.Error.Code != "cancelled" {
		t.Fatalf("result %+v", res)
	}
	c.mu.Lock()
	progress := len(c.progress["task_slow"])
	c.mu.Unlock()
	if progress < 3 {
		t.Fatalf("cancelled after %d progress reports", progress)
	}
	// Once the vault acknowledged it, the result leaves the state directory.
	waitFor(t, "the delivered result to leave the state directory", func() bool {
		recs, _ := dir.Tasks()
		return len(recs) == 0
	})
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestAgentStopsWithAClearErrorWhenTheVaultNoLongerKnowsTheHost(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	c.refuse = func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unauthenticated","message":"the host was removed"}}`))
	}
	err := waitRun(t, testAgent(t, dir, "", nil))
	if err == nil || !strings.Contains(err.Error(), "revoked or removed") || !strings.Contains(err.Error(), "register again") {
		t.Fatalf("run: %v", err)
	}
}

func TestAgentStopsWithTheVaultsMessageWhenItsProtocolIsRefused(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	c.refuse = func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":{"code":"incompatible_protocol","message":"this vault speaks agent protocol 3 to 5; upgrade the agent"}}`))
	}
	err := waitRun(t, testAgent(t, dir, "", nil))
	if err == nil || !strings.Contains(err.Error(), "upgrade the agent") {
		t.Fatalf("run: %v", err)
	}
}

// waitRun runs a until it stops by itself, within 10 s.
func waitRun(t *testing.T, a *Runner) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- a.Run(t.Context()) }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop within 10 s")
		return nil
	}
}

func TestResultKeptWhileTheVaultIsUnreachableIsDeliveredAfterARestart(t *testing.T) {
	c := newCoordinator(t)
	srv := c.serve(t, "")
	addr := srv.Listener.Addr().String()
	dir := c.registeredDir(t, srv.URL, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	c.tasks = []agentproto.Task{{ID: "task_gate", Kind: "gate", Attempt: 1}}
	release := make(chan struct{})
	stop := runAgent(t, testAgent(t, dir, "", release))
	waitFor(t, "the task to report progress", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.progress["task_gate"]) > 0
	})
	recs, _ := dir.Tasks()
	if len(recs) != 1 || recs[0].State != state.TaskRunning {
		t.Fatalf("the task was not persisted before it ran: %+v", recs)
	}

	// The vault goes away; then the task ends.
	srv.Close()
	close(release)
	waitFor(t, "the result to be written to the state directory", func() bool {
		recs, _ := dir.Tasks()
		return len(recs) == 1 && recs[0].State == state.TaskDone && recs[0].Result.Result != nil
	})
	time.Sleep(300 * time.Millisecond) // a few delivery attempts fail
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	recs, _ = dir.Tasks()
	if len(recs) != 1 || string(recs[0].Result.Result) != `{"gate":"passed"}` {
		t.Fatalf("an undelivered result must stay in the state directory: %+v", recs)
	}

	// The vault comes back at the same address; a new agent process (same
	// state directory) delivers the kept result before anything else.
	c.serve(t, addr)
	runAgent(t, testAgent(t, dir, "", nil))
	res := c.result(t, "task_gate")
	if string(res.Result) != `{"gate":"passed"}` || res.Error != nil {
		t.Fatalf("delivered %+v", res)
	}
	waitFor(t, "the delivered result to leave the state directory", func() bool {
		recs, _ := dir.Tasks()
		return len(recs) == 0
	})
}

func TestRestartRunsIdempotentTasksAgainAndReportsOthersAsInterrupted(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	// What an agent killed in the middle of two tasks leaves behind.
	for _, task := range []agentproto.Task{
		{ID: "task_pre", Kind: agentproto.TaskCheckPrerequisites, Payload: json.RawMessage(`{"min_free_bytes": 1}`)},
		{ID: "task_gate", Kind: "gate"},
	} {
		if err := dir.SaveTask(state.TaskRecord{Task: task, State: state.TaskRunning}); err != nil {
			t.Fatal(err)
		}
	}
	runAgent(t, testAgent(t, dir, "", nil))

	if res := c.result(t, "task_pre"); res.Error != nil || !strings.Contains(string(res.Result), `"checks"`) {
		t.Fatalf("the prerequisites check was not run again: %+v", res)
	}
	res := c.result(t, "task_gate")
	if res.Error == nil || res.Error.Code != "agent_restarted" || !res.Error.Recoverable {
		t.Fatalf("an interrupted task that cannot run again: %+v", res)
	}
}

func TestInventoryIsSentAtStartAndAgainWhenItChanges(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	vmRoot := t.TempDir()
	if err := os.MkdirAll(filepath.Join(vmRoot, "web"), 0o755); err != nil {
		t.Fatal(err)
	}
	runAgent(t, testAgent(t, dir, vmRoot, nil))
	count := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.inventory)
	}
	waitFor(t, "the first inventory", func() bool { return count() == 1 })
	time.Sleep(500 * time.Millisecond) // two more looks, nothing changed
	if n := count(); n != 1 {
		t.Fatalf("an unchanged inventory was sent %d times", n)
	}
	if err := os.WriteFile(filepath.Join(vmRoot, "web", "running"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the changed inventory", func() bool { return count() == 2 })
	c.mu.Lock()
	defer c.mu.Unlock()
	if vm := c.inventory[1].VMs[0]; vm.PowerState != "Running" {
		t.Fatalf("inventory after the change: %+v", vm)
	}
}

func TestAgentRunsNoMoreThanMaxTasksAtOnce(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	c.tasks = []agentproto.Task{{ID: "task_1", Kind: "gate"}, {ID: "task_2", Kind: "gate"}, {ID: "task_3", Kind: "gate"}}
	release := make(chan struct{})
	a := testAgent(t, dir, "", release)
	runAgent(t, a)
	waitFor(t, "the third task to say it is queued", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, id := range []string{"task_1", "task_2", "task_3"} {
			for _, p := range c.progress[id] {
				if p.Step == "queued" {
					return true
				}
			}
		}
		return false
	})
	if n := len(a.slots); n != testOptions.MaxTasks {
		t.Fatalf("%d tasks hold a slot, want %d", n, testOptions.MaxTasks)
	}
	waitFor(t, "a poll that offers no free slot", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		last := c.polls[len(c.polls)-1]
		return last.Free == 0 && len(last.Running) == 3
	})
	close(release)
	for _, id := range []string{"task_1", "task_2", "task_3"} {
		if res := c.result(t, id); res.Error != nil {
			t.Fatalf("%s: %+v", id, res.Error)
		}
	}
}

func TestAgentRenewsItsCertificateWhenAThirdOfItsLifeRemains(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-80*24*time.Hour), time.Now().Add(10*24*time.Hour))
	before, _ := os.ReadFile(filepath.Join(dir.Path, "host.crt"))
	runAgent(t, testAgent(t, dir, "", nil))
	waitFor(t, "the renewed certificate in the state directory", func() bool {
		c.mu.Lock()
		renewed := c.renewed
		c.mu.Unlock()
		after, _ := os.ReadFile(filepath.Join(dir.Path, "host.crt"))
		return renewed != nil && string(after) == string(renewed) && string(after) != string(before)
	})
	if _, err := dir.Certificate(); err != nil {
		t.Fatalf("the renewed certificate does not match the stored key: %v", err)
	}
	// The agent goes on over mutual TLS with the new certificate.
	c.mu.Lock()
	beats := len(c.heartbeats)
	c.mu.Unlock()
	waitFor(t, "a heartbeat after the renewal", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.heartbeats) > beats
	})
}
