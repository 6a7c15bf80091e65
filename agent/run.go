package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agent/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

func runCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", envOr(getenv, "LIFEBOAT_AGENT_STATE_DIR", ""), "the agent's state directory (LIFEBOAT_AGENT_STATE_DIR)")
	driver := fs.String("driver", envOr(getenv, "LIFEBOAT_AGENT_DRIVER", filedisk.Name), "the hypervisor driver: filedisk (LIFEBOAT_AGENT_DRIVER)")
	vmRoot := fs.String("vm-root", envOr(getenv, "LIFEBOAT_AGENT_VM_ROOT", ""), "filedisk: the directory whose subdirectories are VMs (LIFEBOAT_AGENT_VM_ROOT)")
	maxTasks := fs.Int("max-tasks", 4, "how many tasks run at once")
	freeze := fs.String("freeze-command", envOr(getenv, "LIFEBOAT_AGENT_FREEZE_COMMAND", ""), "filedisk: command that quiesces a VM before an app-consistent point (run with LIFEBOAT_VM_ID and LIFEBOAT_VM_DIR set; exit 0 = frozen)")
	thaw := fs.String("thaw-command", envOr(getenv, "LIFEBOAT_AGENT_THAW_COMMAND", ""), "filedisk: command that resumes the VM after it (always run after a freeze)")
	logFormat := fs.String("log-format", envOr(getenv, "LIFEBOAT_LOG_FORMAT", "text"), "text or json")
	logLevel := fs.String("log-level", envOr(getenv, "LIFEBOAT_LOG_LEVEL", "info"), "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	switch {
	case *stateDir == "":
		return errors.New("run needs --state-dir")
	case *driver != filedisk.Name:
		return fmt.Errorf("--driver %q is not known; this agent has: filedisk", *driver)
	case *vmRoot == "":
		return errors.New("--driver filedisk needs --vm-root")
	case *maxTasks < 1 || *maxTasks > 64:
		return errors.New("--max-tasks must be from 1 to 64")
	case (*freeze == "") != (*thaw == ""):
		return errors.New("give both --freeze-command and --thaw-command, or neither")
	}
	// Paths go to the vault (disks) and into checks' messages: absolute.
	root, err := filepath.Abs(*vmRoot)
	if err != nil {
		return err
	}
	stateAbs, err := filepath.Abs(*stateDir)
	if err != nil {
		return err
	}
	dir, err := state.Open(stateAbs)
	if err != nil {
		return err
	}
	vmRoot = &root
	a, err := newAgent(dir, &filedisk.Driver{Root: *vmRoot, Log: log, FreezeCommand: *freeze, ThawCommand: *thaw}, *maxTasks, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "lifeboat-agent %s: host %s, vault %s\n", Version, a.id.HostID, a.id.VaultURL)
	return a.Run(ctx)
}

// agent is the running agent.
type agent struct {
	id       state.Identity
	dir      *state.Dir
	driver   *filedisk.Driver
	info     agentproto.AgentInfo
	log      *slog.Logger
	maxTasks int

	vault     *client.Client // heartbeats, progress, results
	pollVault *client.Client // long polls, with a longer timeout

	mu        sync.Mutex
	cert      *tls.Certificate
	intervals agentproto.Intervals
	skew      time.Duration // vault clock minus ours, at the last heartbeat
	running   map[string]context.CancelFunc
	fatal     chan error
	wg        sync.WaitGroup

	// kinds are the tasks this agent can run, by kind.
	kinds map[string]taskFunc
}

// taskFunc runs one kind of task; it reports progress through rep and
// returns the result to send (marshalled to JSON).
type taskFunc func(ctx context.Context, t agentproto.Task, rep *reporter) (any, error)

func newAgent(dir *state.Dir, driver *filedisk.Driver, maxTasks int, log *slog.Logger) (*agent, error) {
	id, err := dir.Identity()
	if err != nil {
		return nil, err
	}
	caPEM, err := dir.VaultCA()
	if err != nil {
		return nil, fmt.Errorf("read the pinned vault certificate: %w", err)
	}
	a := &agent{id: id, dir: dir, driver: driver, info: agentInfo(filedisk.Name), log: log.With("host_id", id.HostID), maxTasks: maxTasks,
		intervals: agentproto.Intervals{HeartbeatSeconds: 15, PollWaitSeconds: 25, ProgressSeconds: 3},
		running:   map[string]context.CancelFunc{}, fatal: make(chan error, 1)}
	a.kinds = map[string]taskFunc{
		agentproto.TaskCheckPrerequisites: func(ctx context.Context, t agentproto.Task, rep *reporter) (any, error) {
			return a.checkPrerequisites(ctx, t, rep)
		},
		agentproto.TaskProtectionCheck: a.protectionCheck,
		agentproto.TaskCreateReplica:   a.createReplica,
		agentproto.TaskReplicate:       a.replicate,
		agentproto.TaskVerify:          a.verifyTask,
	}
	if a.cert, err = dir.Certificate(); err != nil {
		return nil, err
	}
	tlsConfig, err := client.MutualTLS(caPEM, a.certificate)
	if err != nil {
		return nil, err
	}
	a.vault = client.New(id.VaultURL, tlsConfig, 30*time.Second)
	a.pollVault = client.New(id.VaultURL, tlsConfig, 75*time.Second)
	return a, nil
}

func (a *agent) certificate() (*tls.Certificate, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cert, nil
}

func (a *agent) setIntervals(iv agentproto.Intervals) {
	if iv.HeartbeatSeconds <= 0 || iv.PollWaitSeconds <= 0 || iv.ProgressSeconds <= 0 {
		return
	}
	a.mu.Lock()
	a.intervals = iv
	a.mu.Unlock()
}

func (a *agent) getIntervals() agentproto.Intervals {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.intervals
}

// Run works until ctx ends or the vault refuses this agent for good.
func (a *agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer a.vault.Close()
	defer a.pollVault.Close()
	if err := a.driver.Check(); err != nil {
		a.log.Warn("driver not healthy; inventory will be empty until it is", slog.Any("error", err))
	}
	if err := a.recoverTasks(ctx); err != nil {
		return err
	}
	loops := []func(context.Context){a.heartbeatLoop, a.inventoryLoop, a.renewLoop, a.pollLoop}
	for _, loop := range loops {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); loop(ctx) }()
	}
	var err error
	select {
	case <-ctx.Done():
		a.log.Info("stopping: tasks in progress stay in the state directory and resume at the next start")
	case err = <-a.fatal:
		a.log.Error("stopping", slog.Any("error", err))
	}
	cancel()
	a.wg.Wait()
	return err
}

// stop reports an error that ends the agent (the vault refused it for good).
func (a *agent) stop(err error) {
	select {
	case a.fatal <- err:
	default:
	}
}

// handleVaultError sorts a failed call: permanent refusals stop the agent
// with the vault's reason; anything else is logged and retried.
func (a *agent) handleVaultError(what string, err error) {
	var ve *client.VaultError
	if errors.As(err, &ve) {
		switch ve.Code {
		case agentproto.CodeUnauthenticated:
			a.stop(fmt.Errorf("the vault no longer accepts this host (%s); it was removed or its certificate replaced: register again with a new key", ve.Message))
			return
		case agentproto.CodeIncompatibleProtocol:
			a.stop(fmt.Errorf("the vault refuses this agent's protocol: %s", ve.Message))
			return
		}
	}
	a.log.Warn(what+" failed; will retry", slog.Any("error", err))
}

// backoff waits before the attempt-th retry: 1 s doubling to 60 s, with
// jitter so that many agents do not return together.
func backoff(ctx context.Context, attempt int) bool {
	d := time.Second << min(attempt, 6)
	d = min(d, 60*time.Second)
	return sleep(ctx, jitter(d))
}

func jitter(d time.Duration) time.Duration {
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (a *agent) heartbeatLoop(ctx context.Context) {
	for failures := 0; ; {
		sent := time.Now()
		var resp agentproto.HeartbeatResponse
		err := a.vault.Post(ctx, agentproto.PathHeartbeat, agentproto.HeartbeatRequest{Agent: a.info, Time: sent.UTC()}, &resp)
		if ctx.Err() != nil {
			return
		}
		wait := time.Duration(a.getIntervals().HeartbeatSeconds) * time.Second
		if err != nil {
			a.handleVaultError("heartbeat", err)
			failures++
			wait = min(wait, time.Second<<min(failures, 5))
		} else {
			failures = 0
			a.setIntervals(resp.Intervals)
			// The vault's clock at the middle of the round trip.
			mid := sent.Add(time.Since(sent) / 2)
			a.mu.Lock()
			a.skew = resp.ServerTime.Sub(mid)
			a.mu.Unlock()
			wait = time.Duration(resp.Intervals.HeartbeatSeconds) * time.Second
		}
		if !sleep(ctx, jitter(wait)) {
			return
		}
	}
}

// inventoryLoop sends the VM list at start and whenever it changes.
func (a *agent) inventoryLoop(ctx context.Context) {
	var last []agentproto.VM
	sent := false
	for {
		vms, err := a.driver.Inventory()
		if err != nil {
			a.log.Warn("read inventory", slog.Any("error", err))
		} else if !sent || !slices.EqualFunc(vms, last, sameVM) {
			if err := a.vault.Post(ctx, agentproto.PathInventory, agentproto.Inventory{VMs: vms}, nil); err != nil {
				if ctx.Err() != nil {
					return
				}
				a.handleVaultError("inventory", err)
			} else {
				last, sent = vms, true
				a.log.Info("inventory sent", "vms", len(vms))
			}
		}
		if !sleep(ctx, jitter(inventoryEvery)) {
			return
		}
	}
}

// inventoryEvery is how often the VM root is looked at again.
var inventoryEvery = 30 * time.Second

func sameVM(x, y agentproto.VM) bool {
	return x.ID == y.ID && x.Name == y.Name && x.PowerState == y.PowerState && slices.Equal(x.Disks, y.Disks)
}

// renewLoop renews the host certificate when a third of its life remains.
func (a *agent) renewLoop(ctx context.Context) {
	for {
		if err := a.renewIfDue(ctx); err != nil && ctx.Err() == nil {
			a.handleVaultError("certificate renewal", err)
		}
		if !sleep(ctx, jitter(time.Hour)) {
			return
		}
	}
}

func (a *agent) renewIfDue(ctx context.Context) error {
	cert, _ := a.certificate()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if time.Until(leaf.NotAfter) > life/3 {
		return nil
	}
	keyPEM, csrPEM, err := newKeyAndCSR(a.id.Name)
	if err != nil {
		return err
	}
	var resp agentproto.RenewResponse
	if err := a.vault.Post(ctx, agentproto.PathRenew, agentproto.RenewRequest{CSR: string(csrPEM)}, &resp); err != nil {
		return err
	}
	if err := a.dir.ReplaceCertificate(keyPEM, []byte(resp.Certificate)); err != nil {
		return err
	}
	fresh, err := a.dir.Certificate()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.cert = fresh
	a.mu.Unlock()
	a.log.Info("host certificate renewed")
	return nil
}

func (a *agent) runningIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]string, 0, len(a.running))
	for id := range a.running {
		ids = append(ids, id)
	}
	return ids
}

// pollLoop long-polls for tasks and cancellations.
func (a *agent) pollLoop(ctx context.Context) {
	for failures := 0; ctx.Err() == nil; {
		running := a.runningIDs()
		var resp agentproto.PollResponse
		err := a.pollVault.Post(ctx, agentproto.PathPoll, agentproto.PollRequest{Agent: a.info, Running: running, Free: a.maxTasks - len(running)}, &resp)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.handleVaultError("poll", err)
			failures++
			if !backoff(ctx, failures) {
				return
			}
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

func (a *agent) cancelTask(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cancel, ok := a.running[id]; ok {
		a.log.Info("task cancelled by the vault", "task_id", id)
		cancel()
	}
}

var errCancelledByVault = errors.New("cancelled by the vault")

// accept persists a task, then runs it.
func (a *agent) accept(ctx context.Context, t agentproto.Task) {
	a.mu.Lock()
	_, dup := a.running[t.ID]
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

func (a *agent) start(ctx context.Context, t agentproto.Task) {
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
func (a *agent) runTask(agentCtx, taskCtx context.Context, t agentproto.Task) {
	log := a.log.With("task_id", t.ID, "kind", t.Kind)
	log.Info("task started", "attempt", t.Attempt)
	rep := newReporter(a, t.ID, log)
	go rep.loop(taskCtx)
	result := a.execute(taskCtx, t, rep)
	rep.stop()
	if agentCtx.Err() != nil {
		// The agent is stopping: the task stays "running" on disk and runs
		// again at the next start; nothing is reported.
		return
	}
	if rep.leaseLost() {
		log.Warn("task dropped: the vault gave it up")
		_ = a.dir.ForgetTask(t.ID)
		return
	}
	if context.Cause(taskCtx) == errCancelledByVault && result.Error == nil {
		result = agentproto.Result{Error: &agentproto.TaskError{Code: "cancelled", Message: "cancelled by an operator"}}
	}
	if err := a.dir.SaveTask(state.TaskRecord{Task: t, State: state.TaskDone, Result: result}); err != nil {
		log.Error("cannot persist the task's result", slog.Any("error", err))
	}
	a.deliver(agentCtx, t.ID, result, log)
}

// deliver sends a result until the vault has it (or no longer wants it).
func (a *agent) deliver(ctx context.Context, id string, result agentproto.Result, log *slog.Logger) {
	for attempt := 0; ; attempt++ {
		err := a.vault.Post(ctx, agentproto.TaskResultPath(id), result, nil)
		var ve *client.VaultError
		switch {
		case err == nil:
			log.Info("task result delivered", "failed", result.Error != nil)
			_ = a.dir.ForgetTask(id)
			return
		case errors.As(err, &ve) && (ve.Status == http.StatusNotFound || ve.Code == agentproto.CodeLeaseLost):
			log.Warn("the vault no longer wants this result", "reason", ve.Message)
			_ = a.dir.ForgetTask(id)
			return
		case ctx.Err() != nil:
			return // kept on disk; delivered at the next start
		}
		a.handleVaultError("deliver a task result", err)
		if !backoff(ctx, attempt) {
			return
		}
	}
}

// recoverTasks looks at what the last run left: results not yet delivered
// are delivered; tasks that were running run again when that is safe.
func (a *agent) recoverTasks(ctx context.Context) error {
	records, err := a.dir.Tasks()
	if err != nil {
		return fmt.Errorf("read the tasks in the state directory: %w", err)
	}
	for _, r := range records {
		log := a.log.With("task_id", r.Task.ID, "kind", r.Task.Kind)
		switch {
		case r.State == state.TaskDone:
			log.Info("delivering a result kept from the last run")
		case idempotent(r.Task.Kind):
			log.Info("running again a task interrupted by the last stop")
			a.start(ctx, r.Task)
			continue
		default:
			r.State = state.TaskDone
			r.Result = agentproto.Result{Error: &agentproto.TaskError{Code: "agent_restarted", Recoverable: true,
				Message: "the agent stopped while the task ran, and this kind of task cannot simply run again"}}
			if err := a.dir.SaveTask(r); err != nil {
				return err
			}
		}
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.deliver(ctx, r.Task.ID, r.Result, log) }()
	}
	return nil
}
