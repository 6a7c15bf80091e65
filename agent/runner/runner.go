// Package runner is the agent's life with its vault: heartbeats, the
// inventory, certificate renewal, and the tasks: long-polled, persisted
// before they run, run in slots, reported while they run, and their
// results kept in the state directory until the vault has them. What a
// task does is package tasks'.
package runner

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agent/tasks"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Version is the agent's version.
const Version = "0.2.0-dev"

// Options are the agent's tunables. Zero fields take the defaults below;
// tests pass short ones.
type Options struct {
	MaxTasks int // tasks run at once (default DefaultMaxTasks)
	// Intervals are used until the vault says otherwise (defaults 15 s
	// heartbeat, 30 s poll wait, 3 s progress).
	Intervals       agentproto.Intervals
	InventoryEvery  time.Duration // how often the VM root is looked at again (30 s)
	RenewCheckEvery time.Duration // how often the certificate's age is checked (1 h)
	BackoffMin      time.Duration // first wait after a failed call (1 s)
	BackoffMax      time.Duration // longest wait between retries (60 s)
}

// DefaultMaxTasks is how many tasks an agent runs at once unless told:
// cycles of different VMs are independent, and mostly wait on disks and
// storage, so two per core, at least four.
func DefaultMaxTasks() int { return max(4, 2*runtime.NumCPU()) }

func (o Options) withDefaults() Options {
	if o.MaxTasks <= 0 {
		o.MaxTasks = DefaultMaxTasks()
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

// Runner is the running agent.
type Runner struct {
	id     state.Identity
	dir    *state.Dir
	driver driver.Driver
	info   agentproto.AgentInfo
	log    *slog.Logger
	opts   Options

	vault     *client.Client // heartbeats, progress, results, inventory, renewal
	pollVault *client.Client // long polls: no client timeout, each poll has its own deadline

	slots chan struct{} // one token per task allowed to run at once
	// freed holds a token when a task left its slot since the poll loop
	// last looked (capacity 1: one wake-up stands for any number).
	freed chan struct{}

	mu        sync.Mutex
	cert      *tls.Certificate
	intervals agentproto.Intervals
	skew      time.Duration // vault clock minus ours, at the last heartbeat
	skewKnown bool          // a heartbeat has been answered since the start
	// runs are the tasks this agent holds, by id: one attempt each, from
	// its lease until the vault has its result.
	runs  map[string]*taskRun
	fatal chan error
	wg    sync.WaitGroup

	// kinds are the tasks this agent can run, by kind.
	kinds map[string]tasks.Func
}

// New makes the agent of a registered state directory. Register the task
// kinds before Run.
func New(dir *state.Dir, drv driver.Driver, opts Options, log *slog.Logger) (*Runner, error) {
	opts = opts.withDefaults()
	id, err := dir.Identity()
	if err != nil {
		return nil, err
	}
	caPEM, err := dir.VaultCA()
	if err != nil {
		return nil, fmt.Errorf("read the pinned vault certificate: %w", err)
	}
	a := &Runner{id: id, dir: dir, driver: drv, log: log.With("host_id", id.HostID), opts: opts,
		intervals: opts.Intervals, slots: make(chan struct{}, opts.MaxTasks), freed: make(chan struct{}, 1),
		runs: map[string]*taskRun{}, fatal: make(chan error, 1),
		kinds: map[string]tasks.Func{}}
	a.info = Info(drv.Name())
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

// Register adds task kinds; call it before Run. The agent tells the vault
// which kinds it has (its features), and the vault sends no other.
func (a *Runner) Register(kinds map[string]tasks.Func) {
	for kind, f := range kinds {
		a.kinds[kind] = f
	}
	a.info.Features = features(a.kinds)
	if _, ok := a.driver.(driver.InstantMaterializer); ok {
		a.info.Features = append(a.info.Features, agentproto.FeatureInstantFailover)
		sort.Strings(a.info.Features)
	}
}

// Vault is the agent's client of its vault, for tasks that call it.
func (a *Runner) Vault() *client.Client { return a.vault }

// Identity is who the agent is.
func (a *Runner) Identity() state.Identity { return a.id }

// Info is what an agent says of itself to the vault, before it registers
// its task kinds.
func Info(driverName string) agentproto.AgentInfo {
	hostname, _ := os.Hostname()
	return agentproto.AgentInfo{Version: Version, ProtocolVersion: agentproto.ProtocolVersion,
		Features: []string{agentproto.FeatureInventory}, Driver: driverName, Hostname: hostname}
}

// features are what the agent tells the vault it can do: the inventory,
// replicas kept by the vault's VM id, and every task kind it runs.
func features(kinds map[string]tasks.Func) []string {
	out := []string{agentproto.FeatureInventory, agentproto.FeatureReplicaKeys, agentproto.FeatureMoveSeed}
	for kind := range kinds {
		out = append(out, kind)
	}
	sort.Strings(out)
	return out
}

func (a *Runner) certificate() (*tls.Certificate, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cert, nil
}

// setIntervals takes the vault's wishes; an answer without them (zeros)
// keeps the current ones, so a vault bug cannot make the agent spin.
func (a *Runner) setIntervals(iv agentproto.Intervals) {
	if iv.HeartbeatSeconds <= 0 || iv.PollWaitSeconds <= 0 || iv.ProgressSeconds <= 0 {
		return
	}
	a.mu.Lock()
	a.intervals = iv
	a.mu.Unlock()
}

func (a *Runner) getIntervals() agentproto.Intervals {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.intervals
}

// Run works until ctx ends or the vault refuses this agent for good.
func (a *Runner) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer a.vault.Close()
	defer a.pollVault.Close()
	if _, err := a.driver.Check(ctx); err != nil {
		a.log.Warn("driver not healthy; inventory will be empty until it is", slog.Any("error", err))
	}
	if err := a.driver.Recover(ctx); err != nil {
		a.log.Warn("could not remove what the last run left of its captures", slog.Any("error", err))
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
func (a *Runner) stop(err error) {
	select {
	case a.fatal <- err:
	default:
	}
}

// handleVaultError is the one place that sorts a failed call: refusals
// that no retry can change stop the agent with the vault's reason; anything
// else is logged and retried by the caller.
func (a *Runner) handleVaultError(what string, err error) {
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
func (a *Runner) backoffDelay(attempt int) time.Duration {
	d := a.opts.BackoffMin << min(attempt, 16)
	return jitter(min(d, a.opts.BackoffMax))
}

func (a *Runner) backoff(ctx context.Context, attempt int) bool {
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
func (a *Runner) heartbeat(ctx context.Context) error {
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

func (a *Runner) heartbeatLoop(ctx context.Context) {
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
func (a *Runner) inventoryLoop(ctx context.Context) {
	var last []agentproto.VM
	sent := false
	for failures := 0; ; {
		wait := jitter(a.opts.InventoryEvery)
		vms, err := a.driver.Inventory(ctx)
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
func (a *Runner) renewLoop(ctx context.Context) {
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

func (a *Runner) renewIfDue(ctx context.Context) error {
	cert, _ := a.certificate()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if time.Until(leaf.NotAfter) > life/3 {
		return nil
	}
	keyPEM, csrPEM, err := client.NewKeyAndCSR(a.id.Name)
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
