package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// execute runs a task and returns how it ended.
func (a *Runner) execute(ctx context.Context, t agentproto.Task, rep *reporter) agentproto.Result {
	run, ok := a.kinds[t.Kind]
	if !ok {
		return agentproto.Result{Error: &agentproto.TaskError{Code: agentproto.CodeUnknownTaskKind,
			Message: fmt.Sprintf("this agent (version %s) cannot run %q tasks; upgrade it", Version, t.Kind)}}
	}
	out, err := run(ctx, t, rep)
	if err != nil {
		if ctx.Err() != nil {
			return agentproto.Result{Error: &agentproto.TaskError{Code: agentproto.CodeCancelled, Message: "cancelled by an operator"}}
		}
		var te *agentproto.TaskError
		if errors.As(err, &te) {
			return agentproto.Result{Error: te}
		}
		return agentproto.Result{Error: &agentproto.TaskError{Code: agentproto.CodeTaskFailed, Message: err.Error(), Recoverable: true}}
	}
	b, _ := json.Marshal(out)
	return agentproto.Result{Result: b}
}

// ClockSkew is the vault's clock minus the host's, as the last heartbeat
// measured it; a task can arrive before the first heartbeat is answered,
// so it measures now if it must.
func (a *Runner) ClockSkew(ctx context.Context) (time.Duration, error) {
	a.mu.Lock()
	skew, known := a.skew, a.skewKnown
	a.mu.Unlock()
	if known {
		return skew, nil
	}
	if err := a.heartbeat(ctx); err != nil {
		return 0, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.skew, nil
}

// reporter sends a task's progress: at once when the step changes, and every
// progress interval otherwise, which also keeps the task's lease alive. An
// answer asking to cancel cancels the task.
type reporter struct {
	a       *Runner
	run     *taskRun // cancelled when the vault asks, or gives the task up
	id      string
	attempt int // sent with every report: the vault refuses reports of a run it gave up on
	log     *slog.Logger
	mu      sync.Mutex
	cur     agentproto.Progress
	kick    chan struct{}
	done    chan struct{} // closed by stop
	exited  chan struct{} // closed when loop returns
	lost    bool
	stopped sync.Once
}

func newReporter(a *Runner, run *taskRun, log *slog.Logger) *reporter {
	return &reporter{a: a, run: run, id: run.task.ID, attempt: run.task.Attempt, log: log, kick: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
}

// Log is the task's logger.
func (r *reporter) Log() *slog.Logger { return r.log }

// Set records the task's progress; a new step is reported at once.
func (r *reporter) Set(p agentproto.Progress) {
	r.mu.Lock()
	stepChanged := p.Step != r.cur.Step
	r.cur = p
	r.mu.Unlock()
	if stepChanged {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// lastReportTimeout bounds the report of a task's last step.
const lastReportTimeout = 5 * time.Second

// stop ends the reports and waits until the last one is answered, so that
// no progress report overtakes the task's result.
func (r *reporter) stop() {
	r.stopped.Do(func() { close(r.done) })
	<-r.exited
}

func (r *reporter) leaseLost() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lost
}

func (r *reporter) loop(ctx context.Context) {
	defer close(r.exited)
	for {
		every := time.Duration(r.a.getIntervals().ProgressSeconds) * time.Second
		select {
		case <-r.done:
			// A step the task reached but not yet reported is sent before
			// the result: a short task still shows where it went.
			// Bounded: the result, already on disk, must not wait long.
			select {
			case <-r.kick:
				if ctx.Err() == nil {
					flushCtx, cancel := context.WithTimeout(ctx, lastReportTimeout)
					r.send(flushCtx)
					cancel()
				}
			default:
			}
			return
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-time.After(every):
		}
		if !r.send(ctx) {
			return
		}
	}
}

// send reports the current progress; false means the task is no longer
// this agent's and reporting must end.
func (r *reporter) send(ctx context.Context) bool {
	r.mu.Lock()
	p := r.cur
	r.mu.Unlock()
	p.Attempt = r.attempt
	var resp agentproto.ProgressResponse
	err := r.a.vault.Post(ctx, agentproto.TaskProgressPath(r.id), p, &resp)
	var ve *client.VaultError
	switch {
	case err == nil && resp.Cancel:
		r.a.cancelRun(r.run)
	case errors.As(err, &ve) && (ve.Code == agentproto.CodeLeaseLost || ve.Status == 404):
		r.mu.Lock()
		r.lost = true
		r.mu.Unlock()
		r.a.cancelRun(r.run)
		return false
	case err != nil && ctx.Err() == nil:
		r.a.handleVaultError("progress report", err)
	}
	return true
}
