package models

import (
	"context"
	"sync"
	"time"

	"gorm.io/gorm"
)

// Heartbeats in batches. Every agent call that says "still here" (a
// heartbeat, each poll) used to be a write of its host's row; with
// thousands of hosts those writes queue behind SQLite's one writer. A
// heartbeat that changes nothing but the time (the host is Connected and
// its agent's version, protocol, driver and features are as stored) is
// noted in memory instead, and the notes are written in one statement at
// most every heartbeatFlushEvery. Anything else (a host coming back, an
// upgraded agent) is written at once, as before.
//
// A note is written at the next call to this vault after the flush
// interval, or by the vault's flusher (FlushHeartbeatsEvery), within
// heartbeatFlushEvery; MarkSilentHostsDisconnected writes this vault's
// notes before it judges, and gives other vaults' notes that long to be
// written: a host is never marked Disconnected for a heartbeat that was
// only noted.

// heartbeatFlushEvery is the longest a noted heartbeat waits while calls
// keep coming.
const heartbeatFlushEvery = 2 * time.Second

type heartbeatBatch struct {
	mu      sync.Mutex
	pending map[string]time.Time // host id → when it called
	flushed time.Time
	flushMu sync.Mutex // held by the flush that runs
}

// HostHeartbeat records that host h's agent called, with the agent's
// description; h is the host as read for this request.
func (s *Store) HostHeartbeat(ctx context.Context, h *Host, agentVersion string, protocolVersion int, driver string, features []string) error {
	if h.State != HostConnected || h.AgentVersion != agentVersion || h.ProtocolVersion != protocolVersion || h.Driver != driver ||
		h.Features != featureList(features) {
		return s.Heartbeat(ctx, h.ID, agentVersion, protocolVersion, driver, features)
	}
	now := s.Now()
	b := &s.beats
	b.mu.Lock()
	if b.pending == nil {
		b.pending = map[string]time.Time{}
	}
	b.pending[h.ID] = now
	due := now.Sub(b.flushed) >= heartbeatFlushEvery
	b.mu.Unlock()
	if !due {
		return nil
	}
	// One call in each interval writes the notes, in its request: one
	// short statement, and the agent's call then stands for all of them.
	return s.flushHeartbeats(ctx)
}

// flushHeartbeats writes the noted heartbeats, each host's with the time
// it called (floored to the second: a host is never shown alive later
// than it called). One flush runs at a time, and a caller waits for the
// one in flight: MarkSilentHostsDisconnected judges only after every
// note taken so far is written. A host marked Disconnected meanwhile is
// left to its next heartbeat, which reconnects it with its alert
// resolved.
func (s *Store) flushHeartbeats(ctx context.Context) error {
	b := &s.beats
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	pending := b.pending
	b.pending = nil
	b.flushed = s.Now()
	b.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	byTime := map[time.Time][]string{}
	for id, at := range pending {
		sec := at.Truncate(time.Second)
		byTime[sec] = append(byTime[sec], id)
	}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		for at, ids := range byTime {
			if err := tx.Model(&Host{}).Where("id IN ? AND state = ? AND (last_heartbeat IS NULL OR last_heartbeat < ?)", ids, HostConnected, at).
				Update("last_heartbeat", at).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Keep the notes for the next flush: a failed write must not make
		// hosts look silent.
		b.mu.Lock()
		if b.pending == nil {
			b.pending = map[string]time.Time{}
		}
		for id, at := range pending {
			if cur, ok := b.pending[id]; !ok || at.Before(cur) {
				b.pending[id] = at
			}
		}
		b.mu.Unlock()
	}
	return err
}

// FlushHeartbeats writes the heartbeats noted so far.
func (s *Store) FlushHeartbeats(ctx context.Context) error { return s.flushHeartbeats(ctx) }

// FlushHeartbeatsEvery writes the noted heartbeats at least every
// heartbeatFlushEvery until ctx ends, whether or not calls come: on
// several vaults, the leader judges silence from what the others wrote.
func (s *Store) FlushHeartbeatsEvery(ctx context.Context) {
	t := time.NewTicker(heartbeatFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.flushHeartbeats(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("write the hosts' heartbeats; kept for the next try", "error", err)
		}
	}
}
