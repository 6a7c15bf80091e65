package models

import (
	"context"
	"strings"
	"sync"
	"time"
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
// A note waits for the next call to this vault after the flush interval,
// or for MarkSilentHostsDisconnected, which writes the notes before it
// judges silence: a host is never marked Disconnected for a heartbeat
// that was only noted.

// heartbeatFlushEvery is the longest a noted heartbeat waits while calls
// keep coming.
const heartbeatFlushEvery = 2 * time.Second

type heartbeatBatch struct {
	mu      sync.Mutex
	pending map[string]time.Time // host id → when it called
	flushed time.Time
}

// HostHeartbeat records that host h's agent called, with the agent's
// description; h is the host as read for this request.
func (s *Store) HostHeartbeat(ctx context.Context, h *Host, agentVersion string, protocolVersion int, driver string, features []string) error {
	if h.State != HostConnected || h.AgentVersion != agentVersion || h.ProtocolVersion != protocolVersion || h.Driver != driver ||
		h.Features != truncate(strings.Join(features, " "), 2000) {
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
	return s.flushHeartbeats(ctx)
}

// flushHeartbeats writes the noted heartbeats. Each group of notes is
// written with the oldest time in it: a host is never shown alive later
// than it called. A host marked Disconnected meanwhile is left to its
// next heartbeat, which reconnects it with its alert resolved.
func (s *Store) flushHeartbeats(ctx context.Context) error {
	b := &s.beats
	b.mu.Lock()
	pending := b.pending
	b.pending = nil
	b.flushed = s.Now()
	b.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	ids := make([]string, 0, len(pending))
	oldest := time.Time{}
	for id, at := range pending {
		ids = append(ids, id)
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	err := s.db.WithContext(ctx).Model(&Host{}).Where("id IN ? AND state = ? AND (last_heartbeat IS NULL OR last_heartbeat < ?)", ids, HostConnected, oldest).
		Update("last_heartbeat", oldest).Error
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
	return translateError(err)
}
