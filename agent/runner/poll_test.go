package runner

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/tasks"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// lockedBuffer is a log that tests read while the agent writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestASlotThatFreesWhileABusyPollIsHeldIsFilledAtOnce(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	// As the vault: a poll that offers no slot gets no task, and a poll
	// without a task is held longer than the test runs.
	c.leaseByFree = true
	c.pollHold = 30 * time.Second
	opts := testOptions
	opts.MaxTasks = 1
	a := testAgentWith(t, dir, "", nil, opts)
	var logs lockedBuffer
	a.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))

	var mu sync.Mutex
	started, ended := map[string]time.Time{}, map[string]time.Time{}
	a.kinds["short"] = func(ctx context.Context, task agentproto.Task, rep tasks.Reporter) (any, error) {
		mu.Lock()
		started[task.ID] = time.Now()
		mu.Unlock()
		rep.Set(agentproto.Progress{Step: "working"})
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		mu.Lock()
		ended[task.ID] = time.Now()
		mu.Unlock()
		return map[string]string{"done": task.ID}, nil
	}
	c.lease(agentproto.Task{ID: "task_1", Kind: "short", Attempt: 1}, agentproto.Task{ID: "task_2", Kind: "short", Attempt: 1})
	runAgent(t, a)

	if res := c.result(t, "task_2"); res.Error != nil {
		t.Fatalf("task_2: %+v", res.Error)
	}
	mu.Lock()
	gap := started["task_2"].Sub(ended["task_1"])
	mu.Unlock()
	// Loose: the point is not waiting out the vault's 30 s hold.
	if gap > time.Second {
		t.Errorf("task_2 started %v after task_1 ended; a freed slot must be offered within a second", gap)
	}
	c.mu.Lock()
	cut := c.cutPolls
	c.mu.Unlock()
	if cut < 1 {
		t.Errorf("no held poll was cancelled when the slot freed (%d polls)", c.pollCount())
	}
	if strings.Contains(logs.String(), "poll failed") {
		t.Errorf("cancelling the held poll was logged as a failure:\n%s", logs.String())
	}
}
