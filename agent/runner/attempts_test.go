package runner

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/tasks"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// runs records which attempts a test task kind was run for.
type runs struct {
	mu       sync.Mutex
	attempts []int
}

func (r *runs) add(attempt int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, attempt)
}

func (r *runs) get() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.attempts)
}

// attemptTask is a task kind that records each run, reports a step, then
// does what body says for that attempt.
func attemptTask(seen *runs, body func(ctx context.Context, attempt int) (any, error)) tasks.Func {
	return func(ctx context.Context, t agentproto.Task, rep tasks.Reporter) (any, error) {
		seen.add(t.Attempt)
		rep.Set(agentproto.Progress{Step: "working"})
		return body(ctx, t.Attempt)
	}
}

// waitForProgress waits for a progress report of the task's attempt.
func (c *coordinator) waitForProgress(t *testing.T, id string, attempt int) {
	t.Helper()
	waitFor(t, "progress of the attempt", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return slices.ContainsFunc(c.progress[id], func(p agentproto.Progress) bool { return p.Attempt == attempt })
	})
}

// checkOnlyTheLaterAttemptWasDelivered checks that attempt 2's result was
// acknowledged and that no result of attempt 1 was posted after it, even
// once a stale delivery would have retried; and that the state directory
// holds nothing more.
func checkOnlyTheLaterAttemptWasDelivered(t *testing.T, c *coordinator, a *Runner, id string) {
	t.Helper()
	res := c.result(t, id)
	if res.Attempt != 2 || res.Error != nil {
		t.Fatalf("acknowledged result %+v, want attempt 2's success", res)
	}
	time.Sleep(3 * testOptions.BackoffMax) // time for a stale delivery to retry
	c.mu.Lock()
	log := slices.Clone(c.resultLog)
	for _, p := range c.progress[id] {
		if p.Attempt != 1 && p.Attempt != 2 {
			t.Errorf("progress %+v does not say its attempt", p)
		}
	}
	c.mu.Unlock()
	last := slices.IndexFunc(log, func(r taskResult) bool { return r.Attempt == 2 })
	for _, r := range log[last+1:] {
		t.Errorf("a result was posted after attempt 2's: %+v", r)
	}
	waitFor(t, "the state directory to hold no task", func() bool {
		recs, _ := a.dir.Tasks()
		return len(recs) == 0
	})
}

func TestALaterAttemptRunsWhileTheEarlierOnesResultIsStillBeingDelivered(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	var seen runs
	cut := make(chan struct{}) // closed when the agent gives up attempt 1's delivery
	// The vault takes attempt 1's failure, queues attempt 2 at once, and
	// is slow to answer the delivery: the agent is still delivering when
	// attempt 2 is leased.
	c.resultHook = func(r *http.Request, id string, res agentproto.Result) bool {
		if res.Attempt != 1 {
			return true
		}
		c.lease(agentproto.Task{ID: id, Kind: "attempts", Attempt: 2})
		select {
		case <-r.Context().Done():
			close(cut)
		case <-time.After(10 * time.Second):
		}
		return false
	}
	a := testAgent(t, dir, "", nil)
	a.kinds["attempts"] = attemptTask(&seen, func(_ context.Context, attempt int) (any, error) {
		if attempt == 1 {
			return nil, &agentproto.TaskError{Code: agentproto.CodeTaskFailed, Message: "flaky", Recoverable: true}
		}
		return map[string]int{"attempt": attempt}, nil
	})
	c.lease(agentproto.Task{ID: "task_a", Kind: "attempts", Attempt: 1})
	runAgent(t, a)

	checkOnlyTheLaterAttemptWasDelivered(t, c, a, "task_a")
	if got := seen.get(); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("the task ran for attempts %v, want once each for [1 2]", got)
	}
	select {
	case <-cut:
	default:
		t.Fatal("attempt 1's delivery was not given up when attempt 2 was leased")
	}
}

func TestALaterAttemptCancelsTheEarlierRunAndOnlyItsResultIsDelivered(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	var seen runs
	firstEnded := make(chan error, 1)
	a := testAgent(t, dir, "", nil)
	a.kinds["attempts"] = attemptTask(&seen, func(ctx context.Context, attempt int) (any, error) {
		if attempt == 1 {
			<-ctx.Done() // hangs until the agent gives it up
			firstEnded <- context.Cause(ctx)
			return nil, ctx.Err()
		}
		return map[string]int{"attempt": attempt}, nil
	})
	c.lease(agentproto.Task{ID: "task_a", Kind: "attempts", Attempt: 1})
	runAgent(t, a)
	c.waitForProgress(t, "task_a", 1)
	// The vault gave attempt 1 up (say its lease expired) and leases again.
	c.lease(agentproto.Task{ID: "task_a", Kind: "attempts", Attempt: 2})

	checkOnlyTheLaterAttemptWasDelivered(t, c, a, "task_a")
	if got := seen.get(); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("the task ran for attempts %v, want once each for [1 2]", got)
	}
	if err := <-firstEnded; !errors.Is(err, errSuperseded) {
		t.Fatalf("attempt 1 ended with %v, want errSuperseded", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.resultLog {
		if r.Attempt == 1 {
			t.Errorf("the superseded attempt's result was posted: %+v", r)
		}
	}
}

func TestALeaseOfTheAttemptAlreadyRunningOrAnEarlierOneDoesNotRunItAgain(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	var seen runs
	release := make(chan struct{})
	a := testAgent(t, dir, "", nil)
	a.kinds["attempts"] = attemptTask(&seen, func(ctx context.Context, attempt int) (any, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-release:
			return map[string]int{"attempt": attempt}, nil
		}
	})
	c.lease(agentproto.Task{ID: "task_d", Kind: "attempts", Attempt: 2})
	runAgent(t, a)
	c.waitForProgress(t, "task_d", 2)
	c.lease(agentproto.Task{ID: "task_d", Kind: "attempts", Attempt: 2}, agentproto.Task{ID: "task_d", Kind: "attempts", Attempt: 1})
	// Two more polls: the agent has seen both leases and acted on them.
	polls := c.pollCount()
	waitFor(t, "two more polls", func() bool { return c.pollCount() >= polls+2 })
	close(release)

	res := c.result(t, "task_d")
	if res.Attempt != 2 || res.Error != nil {
		t.Fatalf("result %+v, want attempt 2's success", res)
	}
	if got := seen.get(); !slices.Equal(got, []int{2}) {
		t.Fatalf("the task ran for attempts %v, want once for attempt 2", got)
	}
	waitFor(t, "the state directory to hold no task", func() bool {
		recs, _ := dir.Tasks()
		return len(recs) == 0
	})
}
