package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// scriptOutputMax is how much of a script's output is kept: its tail.
const scriptOutputMax = 64 << 10

// runScript runs a recovery plan's script: the context on its standard
// input and in the file LIFEBOAT_CONTEXT names, its output kept, killed at
// its timeout (with what it started, by process group).
func (ts *Tasks) runScript(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	var p agentproto.ScriptPayload
	if err := json.Unmarshal(t.Payload, &p); err != nil || !filepath.IsAbs(p.Path) {
		return nil, &agentproto.TaskError{Code: agentproto.CodeInvalidPayload, Message: fmt.Sprintf("the task must name a script by its absolute path (got %q)", p.Path)}
	}
	if fi, err := os.Stat(p.Path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return nil, &agentproto.TaskError{Code: agentproto.CodeScriptFailed, Message: fmt.Sprintf(
			"the script %s is not an executable file on this host (%v); install it there and make it executable", p.Path, err)}
	}
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	dir := filepath.Join(ts.d.State.Path, "scripts")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ctxFile := filepath.Join(dir, t.ID+".json")
	if err := os.WriteFile(ctxFile, p.Context, 0o600); err != nil {
		return nil, err
	}
	defer os.Remove(ctxFile)

	rep.Set(agentproto.Progress{Step: "run " + p.Path})
	run, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(run, p.Path)
	cmd.Stdin = bytes.NewReader(p.Context)
	cmd.Env = append(os.Environ(), "LIFEBOAT_CONTEXT="+ctxFile)
	out := &tailBuffer{max: scriptOutputMax}
	cmd.Stdout, cmd.Stderr = out, out
	setProcessGroup(cmd)
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	res := agentproto.ScriptResult{ExitCode: cmd.ProcessState.ExitCode(), Output: out.String()}
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(run.Err(), context.DeadlineExceeded):
		return nil, &agentproto.TaskError{Code: agentproto.CodeScriptFailed, Message: fmt.Sprintf(
			"the script %s ran past its timeout of %v and was killed; its output ended: %s", p.Path, timeout, lastLines(res.Output, 1500))}
	case err != nil:
		return nil, &agentproto.TaskError{Code: agentproto.CodeScriptFailed, Message: fmt.Sprintf(
			"the script %s failed (%v); its output ended: %s", p.Path, err, lastLines(res.Output, 1500))}
	}
	return res, nil
}

// lastLines is the end of s, at most n bytes, starting at a line.
func lastLines(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "…" + s
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
