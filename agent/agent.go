package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agent/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// options are the agent's tunables. Zero fields take the defaults below;
// tests pass short ones.
type options struct {
	MaxTasks int // tasks run at once (default 4)
	// Intervals are used until the vault says otherwise (defaults 15 s
	// heartbeat, 30 s poll wait, 3 s progress).
	Intervals       agentproto.Intervals
	InventoryEvery  time.Duration // how often the VM root is looked at again (30 s)
	RenewCheckEvery time.Duration // how often the certificate's age is checked (1 h)
	BackoffMin      time.Duration // first wait after a failed call (1 s)
	BackoffMax      time.Duration // longest wait between retries (60 s)
	// storageConcurrency is how many page writes to Azure Blob storage are
	// in flight per disk (default 8).
	storageConcurrency int
}

func (o options) withDefaults() options {
	if o.MaxTasks <= 0 {
		o.MaxTasks = 4
	}
	if o.Intervals.HeartbeatSeconds <= 0 {
		o.Intervals.HeartbeatSeconds = 15
	}
	if o.Intervals.PollWaitSeconds <= 0 {
		o.Intervals.PollWaitSeconds = 30
	}
	if o.Intervals.ProgressSeconds <= 0 {
		o.Intervals.ProgressSeconds = 3
	}
	if o.InventoryEvery <= 0 {
		o.InventoryEvery = 30 * time.Second
	}
	if o.RenewCheckEvery <= 0 {
		o.RenewCheckEvery = time.Hour
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 60 * time.Second
	}
	return o
}

// pollMargin is how much longer than the vault's longest hold a poll may
// take before the agent gives up on it.
const pollMargin = 20 * time.Second

// agent is the running agent.
type agent struct {
	id     state.Identity
	dir    *state.Dir
	driver *filedisk.Driver
	info   agentproto.AgentInfo
	log    *slog.Logger
	opts   options

	vault     *client.Client // heartbeats, progress, results, inventory, renewal
	pollVault *client.Client // long polls: no client timeout, each poll has its own deadline

	slots chan struct{} // one token per task allowed to run at once

	mu         sync.Mutex
	cert       *tls.Certificate
	intervals  agentproto.Intervals
	skew       time.Duration // vault clock minus ours, at the last heartbeat
	skewKnown  bool          // a heartbeat has been answered since the start
	running    map[string]context.CancelFunc
	delivering map[string]bool // tasks whose result waits to be delivered
	fatal      chan error
	wg         sync.WaitGroup

	warnedNoQuiesce sync.Map // VM ids already told they get crash-consistent points only

	// kinds are the tasks this agent can run, by kind.
	kinds map[string]taskFunc
}

// taskFunc runs one kind of task; it reports progress through rep and
// returns the result to send (marshalled to JSON).
type taskFunc func(ctx context.Context, t agentproto.Task, rep *reporter) (any, error)

func newAgent(dir *state.Dir, driver *filedisk.Driver, opts options, log *slog.Logger) (*agent, error) {
	opts = opts.withDefaults()
	id, err := dir.Identity()
	if err != nil {
		return nil, err
	}
	caPEM, err := dir.VaultCA()
	if err != nil {
		return nil, fmt.Errorf("read the pinned vault certificate: %w", err)
	}
	a := &agent{id: id, dir: dir, driver: driver, log: log.With("host_id", id.HostID), opts: opts,
		intervals: opts.Intervals, slots: make(chan struct{}, opts.MaxTasks),
		running: map[string]context.CancelFunc{}, delivering: map[string]bool{}, fatal: make(chan error, 1)}
	a.kinds = map[string]taskFunc{
		agentproto.TaskCheckPrerequisites: func(ctx context.Context, t agentproto.Task, rep *reporter) (any, error) {
			return a.checkPrerequisites(ctx, t, rep)
		},
		agentproto.TaskProtectionCheck: a.protectionCheck,
		agentproto.TaskCreateReplica:   a.createReplica,
		agentproto.TaskReplicate:       a.replicate,
		agentproto.TaskVerify:          a.verifyTask,
		agentproto.TaskResync:          a.resync,
		agentproto.TaskDeleteReplica:   a.deleteReplica,
	}
	a.info = agentInfo(filedisk.Name)
	a.info.Features = features(a.kinds)
	if a.cert, err = dir.Certificate(); err != nil {
		return nil, err
	}
	tlsConfig, err := client.MutualTLS(caPEM, a.certificate)
	if err != nil {
		return nil, err
	}
	a.vault = client.New(id.VaultURL, tlsConfig, 30*time.Second)
	a.pollVault = client.New(id.VaultURL, tlsConfig, 0)
	return a, nil
}

// features are what the agent tells the vault it can do: the inventory and
// every task kind it runs.
func features(kinds map[string]taskFunc) []string {
	out := []string{"inventory"}
	for kind := range kinds {
		out = append(out, kind)
	}
	sort.Strings(out[1:])
	return out
}

func (a *agent) certificate() (*tls.Certificate, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cert, nil
}

// setIntervals takes the vault's wishes; an answer without them (zeros)
// keeps the current ones, so a vault bug cannot make the agent spin.
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
	// Results kept from the last run go first, before new work.
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

// handleVaultError is the one place that sorts a failed call: refusals
// that no retry can change stop the agent with the vault's reason; anything
// else is logged and retried by the caller.
func (a *agent) handleVaultError(what string, err error) {
	var ve *client.VaultError
	if errors.As(err, &ve) {
		switch ve.Code {
		case agentproto.CodeUnauthenticated:
			a.stop(fmt.Errorf("the vault no longer accepts this host: it was revoked or removed, or its certificate was replaced (%s); register again with a new registration key", ve.Message))
			return
		case agentproto.CodeIncompatibleProtocol:
			a.stop(fmt.Errorf("the vault refuses this agent's protocol: %s", ve.Message))
			return
		}
	}
	a.log.Warn(what+" failed; will retry", slog.Any("error", err))
}

// backoffDelay is the wait before the attempt-th retry (attempt from 0):
// BackoffMin doubling up to BackoffMax, with jitter so that many agents do
// not return together.
func (a *agent) backoffDelay(attempt int) time.Duration {
	d := a.opts.BackoffMin << min(attempt, 16)
	return jitter(min(d, a.opts.BackoffMax))
}

func (a *agent) backoff(ctx context.Context, attempt int) bool {
	return sleep(ctx, a.backoffDelay(attempt))
}

// jitter spreads d by ±20 %.
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

// heartbeat says the agent is alive and measures the vault's clock.
func (a *agent) heartbeat(ctx context.Context) error {
	sent := time.Now()
	var resp agentproto.HeartbeatResponse
	if err := a.vault.Post(ctx, agentproto.PathHeartbeat, agentproto.HeartbeatRequest{Agent: a.info, Time: sent.UTC()}, &resp); err != nil {
		return err
	}
	a.setIntervals(resp.Intervals)
	// The vault read its clock about the middle of the round trip.
	mid := sent.Add(time.Since(sent) / 2)
	a.mu.Lock()
	a.skew, a.skewKnown = resp.ServerTime.Sub(mid), true
	a.mu.Unlock()
	return nil
}

func (a *agent) heartbeatLoop(ctx context.Context) {
	for failures := 0; ; {
		err := a.heartbeat(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := time.Duration(a.getIntervals().HeartbeatSeconds) * time.Second
		if err != nil {
			a.handleVaultError("heartbeat", err)
			// Back off, but never beat less often than the vault asked.
			wait = min(wait, a.backoffDelay(failures))
			failures++
		} else {
			failures = 0
			wait = jitter(wait)
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// inventoryLoop sends the VM list at start and whenever it changes.
func (a *agent) inventoryLoop(ctx context.Context) {
	var last []agentproto.VM
	sent := false
	for failures := 0; ; {
		wait := jitter(a.opts.InventoryEvery)
		vms, err := a.driver.Inventory()
		if err != nil {
			a.log.Warn("read inventory", slog.Any("error", err))
		} else if !sent || !slices.EqualFunc(vms, last, sameVM) {
			if err := a.vault.Post(ctx, agentproto.PathInventory, agentproto.Inventory{VMs: vms}, nil); err != nil {
				if ctx.Err() != nil {
					return
				}
				a.handleVaultError("inventory", err)
				wait = min(wait, a.backoffDelay(failures))
				failures++
			} else {
				last, sent, failures = vms, true, 0
				a.log.Info("inventory sent", "vms", len(vms))
			}
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

func sameVM(x, y agentproto.VM) bool {
	return x.ID == y.ID && x.Name == y.Name && x.PowerState == y.PowerState && slices.Equal(x.Disks, y.Disks)
}

// renewLoop renews the host certificate when a third of its life remains.
func (a *agent) renewLoop(ctx context.Context) {
	for failures := 0; ; {
		wait := jitter(a.opts.RenewCheckEvery)
		if err := a.renewIfDue(ctx); err != nil && ctx.Err() == nil {
			a.handleVaultError("certificate renewal", err)
			wait = min(wait, a.backoffDelay(failures))
			failures++
		} else {
			failures = 0
		}
		if !sleep(ctx, wait) {
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
