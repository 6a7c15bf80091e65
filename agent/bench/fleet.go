package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// A simulated fleet for the control-plane bench: each simulated host
// registers through the real flow (a one-time key, its own key pair and a
// certificate the vault signs), then speaks the agent protocol over mutual
// TLS like lifeboat-agent: heartbeats, a long poll held at all times, its
// inventory, and tasks that end at once with results an agent could send.
// No disk is read: the bench measures the vault, not the copy.

// callKinds are the agent calls whose latency the bench reports.
var callKinds = []string{"heartbeat", "poll", "progress", "result", "inventory"}

// latencies collects call durations by kind.
type latencies struct {
	mu  sync.Mutex
	on  bool
	got map[string][]time.Duration
}

func (l *latencies) add(kind string, d time.Duration) {
	l.mu.Lock()
	if l.on {
		l.got[kind] = append(l.got[kind], d)
	}
	l.mu.Unlock()
}

// start clears what was collected and collects from now on.
func (l *latencies) start() {
	l.mu.Lock()
	l.on, l.got = true, map[string][]time.Duration{}
	l.mu.Unlock()
}

// stop ends collection and returns what was collected.
func (l *latencies) stop() map[string][]time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = false
	return l.got
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// fleet is every simulated host and what they measured.
type fleet struct {
	hosts []*simHost
	calls latencies
	// cycles: replicate tasks received while measuring, and how late each
	// started against when its VM's previous cycle said the next was due.
	measuring atomic.Bool
	cyclesMu  sync.Mutex
	cycles    int
	lateness  []time.Duration
	errs      atomic.Int64
	lastErr   atomic.Value
	frequency time.Duration
}

func (f *fleet) fail(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	f.errs.Add(1)
	f.lastErr.Store(err.Error())
}

// simHost is one simulated host.
type simHost struct {
	f      *fleet
	name   string
	vault  *client.Client
	info   agentproto.AgentInfo
	vms    []agentproto.VM
	points sync.Map // protection id → *simReplica
}

// simReplica is what a host remembers of one VM's replica: its points,
// for retention and the Points list of a result, and when its last cycle
// ended (the vault counts the copy frequency from then).
type simReplica struct {
	mu      sync.Mutex
	points  []simPoint
	ended   time.Time
	started bool
}

type simPoint struct {
	id string
	at time.Time
}

// simFeatures are what a lifeboat-agent on filedisk says it can do.
var simFeatures = []string{agentproto.FeatureInventory, agentproto.FeatureReplicaKeys, agentproto.FeatureMoveSeed,
	agentproto.TaskCheckPrerequisites, agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica, agentproto.TaskReplicate,
	agentproto.TaskVerify, agentproto.TaskResync, agentproto.TaskDeleteReplica}

// registerSimHost registers one host with a registration key, as
// `lifeboat-agent register` does, and returns it connected over mutual TLS.
func registerSimHost(ctx context.Context, f *fleet, key agentproto.RegistrationKey, name string, vmsPerHost int) (*simHost, error) {
	pinnedTLS, err := client.PinnedTLS(key.VaultURL, key.CAFingerprint, nil)
	if err != nil {
		return nil, err
	}
	reg := client.New(key.VaultURL, pinnedTLS, 60*time.Second)
	defer reg.Close()
	keyPEM, csrPEM, err := client.NewKeyAndCSR(name)
	if err != nil {
		return nil, err
	}
	info := agentproto.AgentInfo{Version: "bench", ProtocolVersion: agentproto.ProtocolVersion, Features: simFeatures, Driver: "filedisk", Hostname: name}
	var resp agentproto.RegisterResponse
	if err := reg.Post(ctx, agentproto.PathRegister, agentproto.RegisterRequest{Secret: key.Secret, Name: name, CSR: string(csrPEM), Agent: info}, &resp); err != nil {
		return nil, fmt.Errorf("register %s: %w", name, err)
	}
	cert, err := tls.X509KeyPair([]byte(resp.Certificate), keyPEM)
	if err != nil {
		return nil, err
	}
	mtls, err := client.MutualTLS([]byte(resp.CA), func() (*tls.Certificate, error) { return &cert, nil })
	if err != nil {
		return nil, err
	}
	h := &simHost{f: f, name: name, vault: client.New(key.VaultURL, mtls, 60*time.Second), info: info}
	for i := range vmsPerHost {
		id := fmt.Sprintf("%s-vm%02d", name, i)
		h.vms = append(h.vms, agentproto.VM{ID: id, Name: id, PowerState: agentproto.PowerRunning,
			Disks: []agentproto.Disk{{Path: "/var/lib/sim/" + id + "/disk0.img", SizeBytes: 16 << 30, Format: "raw"}}})
	}
	return h, nil
}

// post sends one call and times it under kind.
func (h *simHost) post(ctx context.Context, kind, path string, body, out any) error {
	start := time.Now()
	err := h.vault.Post(ctx, path, body, out)
	if err == nil && kind != "" {
		h.f.calls.add(kind, time.Since(start))
	}
	return err
}

// run is the host's agent: its inventory, then heartbeats and polls until
// ctx ends.
func (h *simHost) run(ctx context.Context) {
	// Agents do not start in step: spread the first heartbeat over its
	// interval, as real agents started at different times are.
	heartbeat := 15 * time.Second
	// The inventory until the vault takes it, as the agent sends it again
	// after a failure.
	for ctx.Err() == nil {
		err := h.post(ctx, "inventory", agentproto.PathInventory, agentproto.Inventory{VMs: h.vms}, nil)
		if err == nil {
			break
		}
		h.f.fail(fmt.Errorf("inventory: %w", err))
		select {
		case <-ctx.Done():
		case <-time.After(time.Second + rand.N(time.Second)):
		}
	}
	go func() {
		t := time.NewTimer(rand.N(heartbeat))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			var resp agentproto.HeartbeatResponse
			if err := h.post(ctx, "heartbeat", agentproto.PathHeartbeat, agentproto.HeartbeatRequest{Agent: h.info, Time: time.Now().UTC()}, &resp); err != nil {
				h.f.fail(err)
			}
			t.Reset(heartbeat)
		}
	}()
	for ctx.Err() == nil {
		var resp agentproto.PollResponse
		// A poll is held while there is no work: its time is not a latency
		// (the vault's own histogram times polls without the hold).
		if err := h.post(ctx, "", agentproto.PathPoll, agentproto.PollRequest{Agent: h.info, Running: []string{}, Free: 4}, &resp); err != nil {
			h.f.fail(err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for _, t := range resp.Tasks {
			h.runTask(ctx, t)
		}
	}
}

// runTask ends a task at once: one progress report, then a result such as
// the real agent sends for its kind.
func (h *simHost) runTask(ctx context.Context, t agentproto.Task) {
	received := time.Now()
	var p agentproto.ReplicationPayload
	_ = json.Unmarshal(t.Payload, &p)
	var total int64
	for _, d := range p.Disks {
		total += d.SizeBytes
	}
	var progress agentproto.ProgressResponse
	if err := h.post(ctx, "progress", agentproto.TaskProgressPath(t.ID), agentproto.Progress{Attempt: t.Attempt, Step: "copy", Percent: 50,
		BytesDone: total / 2, BytesTotal: total}, &progress); err != nil {
		h.f.fail(fmt.Errorf("progress of %s task: %w", t.Kind, err))
		return
	}
	var result any
	switch t.Kind {
	case agentproto.TaskProtectionCheck:
		result = agentproto.PrerequisitesResult{Checks: []agentproto.Check{{Name: "target", OK: true}}}
	case agentproto.TaskCreateReplica:
		result = map[string]int{"disks": len(p.Disks)}
	case agentproto.TaskReplicate:
		result = h.replicated(p, received)
	default:
		result = map[string]string{}
	}
	raw, _ := json.Marshal(result)
	if err := h.post(ctx, "result", agentproto.TaskResultPath(t.ID), agentproto.Result{Attempt: t.Attempt, Result: raw}, nil); err != nil {
		h.f.fail(fmt.Errorf("result of %s task: %w", t.Kind, err))
		return
	}
}

// replicated makes a cycle's result: a crash-consistent point taken now,
// a plausible churn, retention applied to the host's list of points.
func (h *simHost) replicated(p agentproto.ReplicationPayload, received time.Time) agentproto.ReplicateResult {
	r, _ := h.points.LoadOrStore(p.ProtectionID, &simReplica{})
	rep := r.(*simReplica)
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if rep.started && h.f.measuring.Load() {
		late := received.Sub(rep.ended.Add(h.f.frequency))
		h.f.cyclesMu.Lock()
		h.f.cycles++
		h.f.lateness = append(h.f.lateness, late)
		h.f.cyclesMu.Unlock()
	}
	rep.started = true
	now := time.Now().UTC()
	// The vault counts the next cycle's time from when it records this
	// one's result, a little after now: lateness measured from now errs
	// on the late side.
	rep.ended = now
	res := agentproto.ReplicateResult{PointID: p.PointID, Time: now, Consistency: "crash", Capture: "reflink",
		DiskSizes: map[string]int64{}, BytesSent: 8 << 20, TransferSeconds: 0.2, Pruned: []string{}}
	for _, d := range p.Disks {
		res.SizeBytes += d.SizeBytes
		res.DiskSizes[d.ReplicaID] = d.SizeBytes
	}
	rep.points = append(rep.points, simPoint{id: p.PointID, at: now})
	keep := now.Add(-time.Duration(p.RetentionHours) * time.Hour)
	for len(rep.points) > 1 && rep.points[0].at.Before(keep) && !slices.Contains(p.KeepPoints, rep.points[0].id) {
		res.Pruned = append(res.Pruned, rep.points[0].id)
		rep.points = rep.points[1:]
	}
	for _, pt := range rep.points {
		res.Points = append(res.Points, pt.id)
	}
	return res
}
