package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// idempotent kinds may simply run again after an agent restart.
// A replication cycle is too: blocks already written hash equal and are
// not sent again, and the point is made only at its end.
func idempotent(kind string) bool {
	switch kind {
	case agentproto.TaskCheckPrerequisites, agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica, agentproto.TaskReplicate, agentproto.TaskVerify, agentproto.TaskResync, agentproto.TaskDeleteReplica:
		return true
	}
	return false
}

// execute runs a task and returns how it ended.
func (a *agent) execute(ctx context.Context, t agentproto.Task, rep *reporter) agentproto.Result {
	run, ok := a.kinds[t.Kind]
	if !ok {
		return agentproto.Result{Error: &agentproto.TaskError{Code: "unknown_task_kind",
			Message: fmt.Sprintf("this agent (version %s) cannot run %q tasks; upgrade it", Version, t.Kind)}}
	}
	out, err := run(ctx, t, rep)
	if err != nil {
		if ctx.Err() != nil {
			return agentproto.Result{Error: &agentproto.TaskError{Code: "cancelled", Message: "cancelled by an operator"}}
		}
		var te *agentproto.TaskError
		if errors.As(err, &te) {
			return agentproto.Result{Error: te}
		}
		return agentproto.Result{Error: &agentproto.TaskError{Code: "task_failed", Message: err.Error(), Recoverable: true}}
	}
	b, _ := json.Marshal(out)
	return agentproto.Result{Result: b}
}

// checkPrerequisites checks what protection will need on this host. A check
// that fails is a result, not an error: the job shows every check.
func (a *agent) checkPrerequisites(ctx context.Context, t agentproto.Task, rep *reporter) (*agentproto.PrerequisitesResult, error) {
	var payload agentproto.PrerequisitesPayload
	if len(t.Payload) > 0 {
		if err := json.Unmarshal(t.Payload, &payload); err != nil {
			return nil, &agentproto.TaskError{Code: "invalid_payload", Message: "the task's payload cannot be read: " + err.Error()}
		}
	}
	if payload.MinFreeBytes <= 0 {
		payload.MinFreeBytes = defaultMinFreeBytes
	}
	steps := []struct {
		name string
		run  func() agentproto.Check
	}{
		{"Agent and protocol versions", func() agentproto.Check {
			return agentproto.Check{OK: true, Message: fmt.Sprintf("agent %s, protocol %d", Version, agentproto.ProtocolVersion)}
		}},
		{"Free space in the state directory", func() agentproto.Check { return freeSpace(a.dir.Path, payload.MinFreeBytes) }},
		{"Free space in the VM root", func() agentproto.Check { return freeSpace(a.driver.Root, payload.MinFreeBytes) }},
		{"Driver " + a.info.Driver, a.checkDriver},
		{"Clock against the vault", func() agentproto.Check { return a.checkClock(ctx) }},
	}
	result := &agentproto.PrerequisitesResult{}
	for i, s := range steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rep.set(agentproto.Progress{Step: s.name, Percent: i * 100 / len(steps), Message: "checking"})
		c := s.run()
		c.Name = s.name
		result.Checks = append(result.Checks, c)
	}
	rep.set(agentproto.Progress{Step: "done", Percent: 100, Message: "all checks ran"})
	return result, nil
}

// defaultMinFreeBytes is the free space a host needs when the task does not say.
const defaultMinFreeBytes = 1 << 30

func freeSpace(path string, want int64) agentproto.Check {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return agentproto.Check{Message: fmt.Sprintf("cannot read the free space of %s: %v", path, err)}
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	msg := fmt.Sprintf("%.1f GiB free in %s (needs %.1f GiB)", float64(free)/(1<<30), path, float64(want)/(1<<30))
	return agentproto.Check{OK: free >= want, Message: msg}
}

func (a *agent) checkDriver() agentproto.Check {
	if err := a.driver.Check(); err != nil {
		return agentproto.Check{Message: err.Error()}
	}
	vms, err := a.driver.Inventory()
	if err != nil {
		return agentproto.Check{Message: err.Error()}
	}
	disks := 0
	for _, vm := range vms {
		for _, d := range vm.Disks {
			f, err := os.Open(d.Path)
			if err != nil {
				return agentproto.Check{Message: fmt.Sprintf("disk %s of VM %s cannot be opened: %v", d.Path, vm.Name, err)}
			}
			_, err = f.Read(make([]byte, 4096))
			f.Close()
			if err != nil && !errors.Is(err, io.EOF) {
				return agentproto.Check{Message: fmt.Sprintf("disk %s of VM %s cannot be read: %v", d.Path, vm.Name, err)}
			}
			disks++
		}
	}
	return agentproto.Check{OK: true, Message: fmt.Sprintf("%d VM(s), %d disk(s), all readable", len(vms), disks)}
}

// maxClockSkew is the largest difference with the vault's clock that
// recovery point times can live with.
const maxClockSkew = 60 * time.Second

func (a *agent) checkClock(ctx context.Context) agentproto.Check {
	a.mu.Lock()
	skew, known := a.skew, a.skewKnown
	a.mu.Unlock()
	if !known {
		// A task can arrive before the first heartbeat is answered: measure now.
		if err := a.heartbeat(ctx); err != nil {
			return agentproto.Check{Message: fmt.Sprintf("the vault's clock could not be read (no heartbeat answered yet): %v", err)}
		}
		a.mu.Lock()
		skew = a.skew
		a.mu.Unlock()
	}
	abs := max(skew, -skew).Round(time.Millisecond)
	return agentproto.Check{OK: abs <= maxClockSkew, Message: fmt.Sprintf("%v from the vault's clock (at most %v allowed); keep the host on NTP", abs, maxClockSkew)}
}

// reporter sends a task's progress: at once when the step changes, and every
// progress interval otherwise, which also keeps the task's lease alive. An
// answer asking to cancel cancels the task.
type reporter struct {
	a       *agent
	id      string
	log     *slog.Logger
	mu      sync.Mutex
	cur     agentproto.Progress
	kick    chan struct{}
	done    chan struct{} // closed by stop
	exited  chan struct{} // closed when loop returns
	lost    bool
	stopped sync.Once
}

func newReporter(a *agent, id string, log *slog.Logger) *reporter {
	return &reporter{a: a, id: id, log: log, kick: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
}

func (r *reporter) set(p agentproto.Progress) {
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
	var resp agentproto.ProgressResponse
	err := r.a.vault.Post(ctx, agentproto.TaskProgressPath(r.id), p, &resp)
	var ve *client.VaultError
	switch {
	case err == nil && resp.Cancel:
		r.a.cancelTask(r.id)
	case errors.As(err, &ve) && (ve.Code == agentproto.CodeLeaseLost || ve.Status == 404):
		r.mu.Lock()
		r.lost = true
		r.mu.Unlock()
		r.a.cancelTask(r.id)
		return false
	case err != nil && ctx.Err() == nil:
		r.a.handleVaultError("progress report", err)
	}
	return true
}
