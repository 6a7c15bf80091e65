package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agent/tasks"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// The life of a task on the agent, Nomad style: it is written to the state
// directory before it runs, its result is written there before it is sent,
// and the file goes only once the vault has the result. A restart finds
// there what it must resume or deliver.

// taskRun is one attempt of a task on this agent. The vault leases a task
// again, with a higher attempt, after a run it gave up on; the later
// attempt supersedes the earlier one, so one attempt is one run on the host.
type taskRun struct {
	task agentproto.Task
	// ctx is the attempt's: the run and the delivery of its result. It
	// ends with the agent, or with errSuperseded.
	ctx        context.Context
	endAttempt context.CancelCauseFunc
	// runCtx is the run's; the vault's cancellation ends it but not the
	// delivery of the "cancelled" result.
	runCtx context.Context
	endRun context.CancelCauseFunc
	// delivering: the run is over (its slot is free), its result not yet
	// delivered. Guarded by Runner.mu.
	delivering bool
}

var (
	errCancelledByVault = driver.ErrCancelled
	errSuperseded       = errors.New("superseded by a later attempt")
)

func newTaskRun(agentCtx context.Context, t agentproto.Task) *taskRun {
	r := &taskRun{task: t}
	r.ctx, r.endAttempt = context.WithCancelCause(agentCtx)
	r.runCtx, r.endRun = context.WithCancelCause(r.ctx)
	return r
}

func (r *taskRun) superseded() bool { return context.Cause(r.ctx) == errSuperseded }

// track makes r the task's current attempt, superseding any earlier one:
// its run and the delivery of its result end.
func (a *Runner) track(r *taskRun) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if old := a.runs[r.task.ID]; old != nil {
		a.log.Info("a later attempt of the task supersedes the one this agent holds", "task_id", r.task.ID,
			"attempt", r.task.Attempt, "superseded_attempt", old.task.Attempt, "was_delivering", old.delivering)
		old.endAttempt(errSuperseded)
	}
	a.runs[r.task.ID] = r
}

// untrack forgets r, unless a later attempt took its place.
func (a *Runner) untrack(r *taskRun) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.runs[r.task.ID] == r {
		delete(a.runs, r.task.ID)
	}
	r.endAttempt(nil)
}

// runningIDs are the tasks that run or wait for a slot; those that only
// deliver their result hold no slot.
func (a *Runner) runningIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]string, 0, len(a.runs))
	for id, r := range a.runs {
		if !r.delivering {
			ids = append(ids, id)
		}
	}
	return ids
}

// cancelTask ends the run of the task's current attempt; its result
// ("cancelled") is still delivered.
func (a *Runner) cancelTask(id string) {
	a.mu.Lock()
	r, ok := a.runs[id]
	ok = ok && !r.delivering
	a.mu.Unlock()
	if ok {
		a.cancelRun(r)
	}
}

// cancelRun ends r's run at the vault's request.
func (a *Runner) cancelRun(r *taskRun) {
	if r.runCtx.Err() == nil {
		a.log.Info("task cancelled by the vault", "task_id", r.task.ID, "attempt", r.task.Attempt)
	}
	r.endRun(errCancelledByVault)
}

// accept persists a task, then runs it. An attempt the agent already holds
// (running, or delivering its result) is a lease sent again: not taken
// twice. An earlier attempt is one the vault gave up on. A later attempt
// supersedes the one held.
func (a *Runner) accept(ctx context.Context, t agentproto.Task) {
	a.mu.Lock()
	held, ok := a.runs[t.ID]
	a.mu.Unlock()
	if ok && t.Attempt <= held.task.Attempt {
		a.log.Debug("lease of a task attempt already held, or of an earlier one; ignored", "task_id", t.ID,
			"attempt", t.Attempt, "held_attempt", held.task.Attempt)
		return
	}
	// Saved before the earlier attempt is stopped: if the disk fails,
	// nothing changes. Once saved, the earlier attempt can neither
	// overwrite nor forget this record.
	if err := a.dir.SaveTask(state.TaskRecord{Task: t, State: state.TaskRunning}); err != nil {
		a.log.Error("cannot persist a task; not running it", "task_id", t.ID, "attempt", t.Attempt, slog.Any("error", err))
		return
	}
	a.start(ctx, t)
}

// start runs a persisted task in its own goroutine once a slot is free.
func (a *Runner) start(ctx context.Context, t agentproto.Task) {
	r := newTaskRun(ctx, t)
	a.track(r)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer a.untrack(r)
		a.runTask(ctx, r)
	}()
}

// runTask runs one attempt with progress reports, then keeps its result in
// the state directory until the vault has it.
func (a *Runner) runTask(agentCtx context.Context, r *taskRun) {
	t := r.task
	log := a.log.With("task_id", t.ID, "kind", t.Kind, "attempt", t.Attempt)
	rep := newReporter(a, r, log)
	go rep.loop(r.runCtx)
	result, ran := a.runInSlot(r, rep, log)
	a.ranOut(r)
	// A later attempt runs in this one's place and owns the task's record;
	// the vault would refuse this result.
	dropSuperseded := func() {
		rep.stop()
		log.Info("attempt superseded by a later one; its result is dropped")
	}
	if r.superseded() {
		dropSuperseded()
		return
	}
	// The agent is stopping and cut the task short: it stays "running" on
	// disk and is resumed (or reported) at the next start.
	interrupted := agentCtx.Err() != nil && (!ran || result.Error != nil)
	if context.Cause(r.runCtx) == errCancelledByVault && result.Error == nil {
		result = agentproto.Result{Error: &agentproto.TaskError{Code: agentproto.CodeCancelled, Message: "cancelled by an operator"}}
	}
	result.Attempt = t.Attempt
	record := state.TaskRecord{Task: t, State: state.TaskDone, Result: result}
	if !interrupted {
		// Written before anything else can fail or hang: from here on a
		// restart delivers this result instead of running the task again.
		err := a.dir.SaveTask(record)
		if errors.Is(err, state.ErrSuperseded) {
			dropSuperseded()
			return
		}
		if err != nil {
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
	a.deliverKept(r, record, log)
}

// runInSlot waits for a free slot (reporting that it waits, which keeps the
// lease), then runs the task. ran is false if the task never started.
func (a *Runner) runInSlot(r *taskRun, rep *reporter, log *slog.Logger) (result agentproto.Result, ran bool) {
	select {
	case a.slots <- struct{}{}:
	default:
		rep.Set(agentproto.Progress{Step: "queued", Message: fmt.Sprintf("waiting for one of the %d task slots of this agent", a.opts.MaxTasks)})
		select {
		case a.slots <- struct{}{}:
		case <-r.runCtx.Done():
			return agentproto.Result{Error: &agentproto.TaskError{Code: agentproto.CodeCancelled, Message: "cancelled before it started"}}, false
		}
	}
	defer func() { <-a.slots }()
	log.Info("task started")
	return a.execute(r.runCtx, r.task, rep), true
}

// ranOut marks the end of r's run: from now on it holds no slot and only
// its result waits. A poll held by the vault learns of the free slot.
func (a *Runner) ranOut(r *taskRun) {
	a.mu.Lock()
	freed := a.runs[r.task.ID] == r && !r.delivering // a superseded run's place is its successor's
	r.delivering = true
	a.mu.Unlock()
	if freed {
		a.slotFreed()
	}
}

// deliverKept delivers a result already written to the state directory.
// The run stays tracked meanwhile, so a lease of the same attempt is not
// taken again, and a later attempt ends the delivery.
func (a *Runner) deliverKept(r *taskRun, rec state.TaskRecord, log *slog.Logger) {
	// Results kept by an agent from before attempts were reported have none.
	rec.Result.Attempt = rec.Task.Attempt
	a.deliver(r.ctx, rec.Task, rec.Result, log)
	if r.superseded() {
		log.Info("a later attempt superseded this one while its result was being delivered; the result is dropped")
	}
}

// deliver sends a result until the vault has it (or no longer wants it).
// Only an acknowledgement, or a refusal no retry can change, removes it
// from the state directory.
func (a *Runner) deliver(ctx context.Context, t agentproto.Task, result agentproto.Result, log *slog.Logger) {
	if changesVMs(t.Kind) {
		// The vault learns of the VM made, removed, started or stopped
		// before it learns the task ended: the next step (a re-protect of
		// the recovered VM) finds it listed. The inventory loop would
		// send it too, but up to half a minute later.
		if vms, err := a.driver.Inventory(ctx); err == nil {
			if err := a.vault.Post(ctx, agentproto.PathInventory, agentproto.Inventory{VMs: vms}, nil); err != nil {
				log.Warn("inventory not sent with the task's result; the inventory loop sends it", slog.Any("error", err))
			}
		}
	}
	for attempt := 0; ; attempt++ {
		err := a.vault.Post(ctx, agentproto.TaskResultPath(t.ID), result, nil)
		var ve *client.VaultError
		switch {
		case err == nil:
			log.Info("task result delivered", "failed", result.Error != nil)
			_ = a.dir.ForgetTask(t.ID, t.Attempt)
			return
		case ctx.Err() != nil:
			// The agent stops: kept on disk, delivered at the next start.
			// Or a later attempt superseded this one and replaced its record.
			return
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
	for _, rec := range records {
		log := a.log.With("task_id", rec.Task.ID, "kind", rec.Task.Kind, "attempt", rec.Task.Attempt)
		switch {
		case rec.State == state.TaskDone:
			log.Info("delivering a result kept from the last run")
		case tasks.Idempotent(rec.Task.Kind):
			log.Info("running again a task interrupted by the last stop")
			a.start(ctx, rec.Task)
			continue
		default:
			log.Warn("a task was interrupted by the last stop and cannot simply run again; reporting it as failed")
			rec.State = state.TaskDone
			rec.Result = agentproto.Result{Error: &agentproto.TaskError{Code: agentproto.CodeAgentRestarted, Recoverable: true,
				Message: "the agent stopped while the task ran, and this kind of task cannot simply run again; retry it"}}
			if err := a.dir.SaveTask(rec); err != nil {
				return fmt.Errorf("record the interrupted task %s: %w", rec.Task.ID, err)
			}
		}
		// Tracked before any poll can offer the same attempt again.
		r := newTaskRun(ctx, rec.Task)
		r.delivering = true
		a.track(r)
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer a.untrack(r)
			a.deliverKept(r, rec, log)
		}()
	}
	return nil
}

// changesVMs says whether a task kind makes, removes, starts or stops VMs.
func changesVMs(kind string) bool {
	switch kind {
	case agentproto.TaskMaterialize, agentproto.TaskRemoveVM, agentproto.TaskShutdownVM, agentproto.TaskStartVM:
		return true
	}
	return false
}
