package models_test

import (
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/models/storetest"
)

// Two vaults on one database: host X's agent calls vault B (not the
// leader) every second; vault A leads and judges silence (3 heartbeats).
// B used to write X's noted heartbeats only at its own later calls, with the
// oldest time of the batch (another host Y noted just after a flush): now
// each host has its own time, and silence is judged with a flush interval
// of slack.
func TestAHostCallingAnotherVaultIsNeverMarkedSilent(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		b := storetest.Open(t, h.dsn, h.clock) // vault B, same clock
		site := mustSite(t, h, "s")
		x := mustHost(t, h, site.ID, "x", models.HostDisconnected)
		y := mustHost(t, h, site.ID, "y", models.HostDisconnected)
		f := []string{agentproto.FeatureInventory}
		beat := func(id string) {
			t.Helper()
			cur, err := b.GetHost(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.HostHeartbeat(t.Context(), cur, "1.0", agentproto.ProtocolVersion, "filedisk", f); err != nil {
				t.Fatal(err)
			}
		}
		beat(x.ID)
		beat(y.ID) // both Connected, written at once
		// B's flusher writes its notes every 2 s (FlushHeartbeatsEvery; the
		// clock here is the test's, so the test runs it).
		flusher := func() {
			t.Helper()
			if err := b.FlushHeartbeats(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		h.advance(2 * time.Second)
		beat(x.ID)
		flusher() // flush at F
		h.advance(100 * time.Millisecond)
		beat(y.ID) // noted at F+0.1
		h.advance(900 * time.Millisecond)
		beat(x.ID) // noted at F+1.0
		h.advance(1000 * time.Millisecond)
		beat(x.ID) // F+2.0
		flusher()  // X and Y written, each with its own second
		h.advance(1000 * time.Millisecond)
		beat(x.ID) // F+3.0: noted
		h.advance(500 * time.Millisecond)
		// Vault A judges at F+3.5: X called B 0.5 s ago.
		silent, err := h.s.MarkSilentHostsDisconnected(t.Context(), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range silent {
			if s.ID == x.ID {
				t.Errorf("host x, which called vault B 0.5 s ago (every second), was marked Disconnected by vault A (last_heartbeat %v, now %v)", s.LastHeartbeat, h.clock.T)
			}
		}
	})
}
