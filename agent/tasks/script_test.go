package tasks

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// scriptTask writes body as an executable shell script and returns the
// task that runs it with context ctx.
func scriptTask(t *testing.T, body string, ctx any, timeoutSeconds int) agentproto.Task {
	t.Helper()
	path := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	c, _ := json.Marshal(ctx)
	b, _ := json.Marshal(agentproto.ScriptPayload{Path: path, Context: c, TimeoutSeconds: timeoutSeconds})
	return agentproto.Task{ID: "task_script", Kind: agentproto.TaskRunScript, Payload: b, Attempt: 1}
}

// The script is told the context on its standard input and in the file
// LIFEBOAT_CONTEXT names, which is gone once it ends; the tail of what it
// printed, on both streams, is the result.
func TestAScriptIsGivenTheContextAndItsOutputTailIsKept(t *testing.T) {
	t.Parallel()
	ts := testTasks(t)
	seen := t.TempDir()
	ctx := agentproto.PlanContext{}
	want, _ := json.Marshal(ctx)
	task := scriptTask(t, fmt.Sprintf(`cat > %[1]s/stdin
cp "$LIFEBOAT_CONTEXT" %[1]s/file
echo "$LIFEBOAT_CONTEXT" > %[1]s/name
i=0
while [ $i -lt 3000 ]; do echo "line $i of the output, long enough to pass the tail's size"; i=$((i+1)); done
echo "the last line" >&2
`, seen), ctx, 30)
	out, err := ts.runScript(t.Context(), task, testReporter{t})
	if err != nil {
		t.Fatal(err)
	}
	res := out.(agentproto.ScriptResult)
	if res.ExitCode != 0 || len(res.Output) != scriptOutputMax || !strings.HasSuffix(res.Output, "line 2999 of the output, long enough to pass the tail's size\nthe last line\n") ||
		strings.Contains(res.Output, "line 0 of") {
		t.Fatalf("exit %d, %d bytes of output ending %q", res.ExitCode, len(res.Output), res.Output[max(0, len(res.Output)-200):])
	}
	for _, f := range []string{"stdin", "file"} {
		if b, err := os.ReadFile(filepath.Join(seen, f)); err != nil || string(b) != string(want) {
			t.Fatalf("the context on %s: %q %v; want %q", f, b, err, want)
		}
	}
	name, _ := os.ReadFile(filepath.Join(seen, "name"))
	if file := strings.TrimSpace(string(name)); !strings.HasPrefix(file, ts.d.State.Path) {
		t.Fatalf("LIFEBOAT_CONTEXT is %q, not in the state directory", file)
	} else if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("the context file is left after the script: %v", err)
	}
}

func TestAScriptThatExitsNonZeroFailsWithItsOutputsTail(t *testing.T) {
	t.Parallel()
	ts := testTasks(t)
	task := scriptTask(t, `i=0
while [ $i -lt 500 ]; do echo "step $i done"; i=$((i+1)); done
echo "cannot reach the DNS server" >&2
exit 3
`, agentproto.PlanContext{}, 30)
	_, err := ts.runScript(t.Context(), task, testReporter{t})
	te := wantCode(t, "a script that exits 3", err, agentproto.CodeScriptFailed)
	if !strings.Contains(te.Message, "exit status 3") || !strings.HasSuffix(te.Message, "step 499 done\ncannot reach the DNS server") ||
		strings.Contains(te.Message, "step 0 done") {
		t.Fatalf("the failure says %q", te.Message)
	}
}

// At its timeout the script is killed with what it started: its process
// group.
func TestAScriptPastItsTimeoutIsKilledWithItsChildren(t *testing.T) {
	t.Parallel()
	ts := testTasks(t)
	pidFile := filepath.Join(t.TempDir(), "child")
	task := scriptTask(t, `sleep 300 &
echo $! > `+pidFile+`
echo "waiting for the child"
wait
`, agentproto.PlanContext{}, 1)
	began := time.Now()
	_, err := ts.runScript(t.Context(), task, testReporter{t})
	te := wantCode(t, "a script past its timeout", err, agentproto.CodeScriptFailed)
	if !strings.Contains(te.Message, "ran past its timeout of 1s") || !strings.Contains(te.Message, "waiting for the child") {
		t.Fatalf("the failure says %q", te.Message)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("the script was killed after %v", took)
	}
	b, err := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Fatalf("the child's pid: %q %v", b, err)
	}
	// Killed, it may linger a moment as a zombie until it is reaped.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if syscall.Kill(pid, 0) == syscall.ESRCH || err != nil || strings.Contains(string(stat), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the script's child %d still runs: %s", pid, stat)
		}
	}
}
