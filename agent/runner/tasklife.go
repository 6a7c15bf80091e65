package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agent/tasks"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// The life of a task on the agent, Nomad style: it is written to the state
// directory before it runs, its result is written there before it is sent,
// and the file goes only once the vault has the result. A restart finds
// there what it must resume or deliver.

func (a *Runner) runningIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]string, 0, len(a.running))
	for id := range a.running {
		ids = append(ids, id)
	}
	return ids
}

// pollLoop long-polls for tasks and cancellations.
func (a *Runner) pollLoop(ctx context.Context) {
	for failures := 0; ctx.Err() == nil; {
		running := a.runningIDs()
		req := agentproto.PollRequest{Agent: a.info, Running: running, Free: max(0, a.opts.MaxTasks-len(running))}
		wait := time.Duration(a.getIntervals().PollWaitSeconds)*time.Second + pollMargin
		pollCtx, cancel := context.WithTimeout(ctx, wait)
		var resp agentproto.PollResponse
		err := a.pollVault.Post(pollCtx, agentproto.PathPoll, req, &resp)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.handleVaultError("poll", err)
			if !a.backoff(ctx, failures) {
				return
			}
			failures++
			continue
		}
		failures = 0
		a.setIntervals(resp.Intervals)
		for _, id := range resp.Cancel {
			a.cancelTask(id)
		}
		for _, t := range resp.Tasks {
			a.accept(ctx, t)
		}
		if len(resp.Tasks) == 0 && len(resp.Cancel) == 0 {
			// Space out polls a little; the vault already held this one.
			if !sleep(ctx, time.Duration(rand.Int64N(int64(500*time.Millisecond)))) {
				return
			}
		}
	}
}

func (a *Runner) cancelTask(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cancel, ok := a.running[id]; ok {
		a.log.Info("task cancelled by the vault", "task_id", id)
		cancel()
	}
}

var errCancelledByVault = errors.New("cancelled by the vault")

// accept persists a task, then runs it. A task the agent already runs, or
// whose result it is still delivering, is not taken twice.
func (a *Runner) accept(ctx context.Context, t agentproto.Task) {
	a.mu.Lock()
	_, dup := a.running[t.ID]
	dup = dup || a.delivering[t.ID]
	a.mu.Unlock()
	if dup {
		return
	}
	if err := a.dir.SaveTask(state.TaskRecord{Task: t, State: state.TaskRunning}); err != nil {
		a.log.Error("cannot persist a task; not running it", "task_id", t.ID, slog.Any("error", err))
		return
	}
	a.start(ctx, t)
}

// start runs a persisted task in its own goroutine once a slot is free.
func (a *Runner) start(ctx context.Context, t agentproto.Task) {
	taskCtx, cancel := context.WithCancelCause(ctx)
	a.mu.Lock()
	a.running[t.ID] = func() { cancel(errCancelledByVault) }
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer func() {
			a.mu.Lock()
			delete(a.running, t.ID)
			a.mu.Unlock()
			cancel(nil)
		}()
		a.runTask(ctx, taskCtx, t)
	}()
}

// runTask runs one task with progress reports, then keeps its result in the
// state directory until the vault has it.
func (a *Runner) runTask(agentCtx, taskCtx context.Context, t agentproto.Task) {
	log := a.log.With("task_id", t.ID, "kind", t.Kind)
	rep := newReporter(a, t, log)
	go rep.loop(taskCtx)
	result, ran := a.runInSlot(taskCtx, t, rep, log)
	// The agent is stopping and cut the task short: it stays "running" on
	// disk and is resumed (or reported) at the next start.
	interrupted := agentCtx.Err() != nil && (!ran || result.Error != nil)
	if context.Cause(taskCtx) == errCancelledByVault && result.Error == nil {
		result = agentproto.Result{Error: &agentproto.TaskError{Code: agentproto.CodeCancelled, Message: "cancelled by an operator"}}
	}
	result.Attempt = t.Attempt
	record := state.TaskRecord{Task: t, State: state.TaskDone, Result: result}
	if !interrupted {
		// Written before anything else can fail or hang: from here on a
		// restart delivers this result instead of running the task again.
		if err := a.dir.SaveTask(record); err != nil {
			log.Error("cannot persist the task's result; sending it all the same", slog.Any("error", err))
		}
	}
	rep.stop()
	if rep.leaseLost() {
		log.Warn("task dropped: the vault gave it up")
		_ = a.dir.ForgetTask(t.ID, t.Attempt)
		return
	}
	if interrupted {
		return
	}
	a.deliverKept(agentCtx, record, log)
}

// runInSlot waits for a free slot (reporting that it waits, which keeps the
// lease), then runs the task. ran is false if the task never started.
func (a *Runner) runInSlot(ctx context.Context, t agentproto.Task, rep *reporter, log *slog.Logger) (result agentproto.Result, ran bool) {
	select {
	case a.slots <- struct{}{}:
	default:
		rep.Set(agentproto.Progress{Step: "queued", Message: fmt.Sprintf("waiting for one of the %d task slots of this agent", a.opts.MaxTasks)})
		select {
		case a.slots <- struct{}{}:
		case <-ctx.Done():
			return agentproto.Result{Error: &agentproto.TaskError{Code: agentproto.CodeCancelled, Message: "cancelled before it started"}}, false
		}
	}
	defer func() { <-a.slots }()
	log.Info("task started", "attempt", t.Attempt)
	return a.execute(ctx, t, rep), true
}

// deliverKept delivers a result already written to the state directory;
// meanwhile the vault cannot hand the same task to this agent again.
func (a *Runner) deliverKept(ctx context.Context, r state.TaskRecord, log *slog.Logger) {
	a.mu.Lock()
	a.delivering[r.Task.ID] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.delivering, r.Task.ID)
		a.mu.Unlock()
	}()
	// Results kept by an agent from before attempts were reported have none.
	r.Result.Attempt = r.Task.Attempt
	a.deliver(ctx, r.Task, r.Result, log)
}

// deliver sends a result until the vault has it (or no longer wants it).
// Only an acknowledgement, or a refusal no retry can change, removes it
// from the state directory.
func (a *Runner) deliver(ctx context.Context, t agentproto.Task, result agentproto.Result, log *slog.Logger) {
	for attempt := 0; ; attempt++ {
		err := a.vault.Post(ctx, agentproto.TaskResultPath(t.ID), result, nil)
		var ve *client.VaultError
		switch {
		case err == nil:
			log.Info("task result delivered", "failed", result.Error != nil)
			_ = a.dir.ForgetTask(t.ID, t.Attempt)
			return
		case ctx.Err() != nil:
			return // kept on disk; delivered at the next start
		case errors.As(err, &ve) && (ve.Status == http.StatusNotFound || ve.Code == agentproto.CodeLeaseLost):
			log.Warn("the vault no longer wants this result; dropping it", "reason", ve.Message)
			_ = a.dir.ForgetTask(t.ID, t.Attempt)
			return
		case errors.As(err, &ve) && client.Permanent(err) && ve.Code != agentproto.CodeUnauthenticated && ve.Code != agentproto.CodeIncompatibleProtocol:
			log.Error("the vault refuses this result for good; dropping it (its lease will expire and the task run again)", slog.Any("error", err))
			_ = a.dir.ForgetTask(t.ID, t.Attempt)
			return
		}
		a.handleVaultError("deliver a task result", err)
		if !a.backoff(ctx, attempt) {
			return
		}
	}
}

// recoverTasks looks at what the last run left: results not yet delivered
// are delivered; tasks that were running run again when that is safe, and
// are reported as failed (recoverable) when it is not.
func (a *Runner) recoverTasks(ctx context.Context) error {
	records, err := a.dir.Tasks()
	if err != nil {
		return fmt.Errorf("read the tasks in the state directory: %w", err)
	}
	for _, r := range records {
		log := a.log.With("task_id", r.Task.ID, "kind", r.Task.Kind)
		switch {
		case r.State == state.TaskDone:
			log.Info("delivering a result kept from the last run")
		case tasks.Idempotent(r.Task.Kind):
			log.Info("running again a task interrupted by the last stop")
			a.start(ctx, r.Task)
			continue
		default:
			log.Warn("a task was interrupted by the last stop and cannot simply run again; reporting it as failed")
			r.State = state.TaskDone
			r.Result = agentproto.Result{Error: &agentproto.TaskError{Code: agentproto.CodeAgentRestarted, Recoverable: true,
				Message: "the agent stopped while the task ran, and this kind of task cannot simply run again; retry it"}}
			if err := a.dir.SaveTask(r); err != nil {
				return fmt.Errorf("record the interrupted task %s: %w", r.Task.ID, err)
			}
		}
		a.mu.Lock()
		a.delivering[r.Task.ID] = true // before any poll can offer it again
		a.mu.Unlock()
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.deliverKept(ctx, r, log) }()
	}
	return nil
}
