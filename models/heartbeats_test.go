package models_test

import (
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// A heartbeat that changes nothing but the time is noted and written with
// others at most every two seconds; one that changes the host is written
// at once; and a noted heartbeat is written before silence is judged, so
// a host that called is never marked Disconnected.
func TestHeartbeatsAreBatchedButNeverLost(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		site := mustSite(t, h, "s")
		host := mustHost(t, h, site.ID, "hv", models.HostDisconnected)
		features := []string{agentproto.FeatureInventory}
		beat := func() {
			t.Helper()
			cur, err := h.s.GetHost(t.Context(), host.ID)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.s.HostHeartbeat(t.Context(), cur, "1.0", agentproto.ProtocolVersion, "filedisk", features); err != nil {
				t.Fatal(err)
			}
		}
		lastBeat := func() time.Time {
			t.Helper()
			cur, err := h.s.GetHost(t.Context(), host.ID)
			if err != nil || cur.LastHeartbeat == nil {
				t.Fatalf("host %+v: %v", cur, err)
			}
			return cur.LastHeartbeat.UTC()
		}
		// Disconnected → Connected: written at once.
		beat()
		first := h.clock.T
		if got := lastBeat(); !got.Equal(first) {
			t.Fatalf("first heartbeat: last_heartbeat %v, want %v", got, first)
		}
		h.advance(time.Second)
		beat() // the first flush of the batch: written
		h.advance(500 * time.Millisecond)
		noted := h.clock.T
		beat() // within 2 s of that flush: only noted
		if got := lastBeat(); !got.Before(noted) {
			t.Fatalf("a heartbeat 0.5 s after a flush was written at once (%v): it should wait for the batch", got)
		}
		// An agent that changed (upgraded) is written at once.
		h.advance(100 * time.Millisecond)
		cur, _ := h.s.GetHost(t.Context(), host.ID)
		if err := h.s.HostHeartbeat(t.Context(), cur, "1.1", agentproto.ProtocolVersion, "filedisk", features); err != nil {
			t.Fatal(err)
		}
		if cur, _ := h.s.GetHost(t.Context(), host.ID); cur.AgentVersion != "1.1" || !cur.LastHeartbeat.UTC().Equal(h.clock.T) {
			t.Fatalf("upgraded agent: %+v", cur)
		}
		// Noted, then silence judged: the note is written first, so the
		// host is not marked Disconnected.
		h.advance(100 * time.Millisecond)
		beatVersion := func() {
			cur, _ := h.s.GetHost(t.Context(), host.ID)
			if err := h.s.HostHeartbeat(t.Context(), cur, "1.1", agentproto.ProtocolVersion, "filedisk", features); err != nil {
				t.Fatal(err)
			}
		}
		beatVersion()
		notedAt := h.clock.T
		h.advance(29 * time.Second)
		silent, err := h.s.MarkSilentHostsDisconnected(t.Context(), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(silent) != 0 {
			t.Fatalf("a host that called %v ago was marked Disconnected", h.clock.T.Sub(notedAt))
		}
		// Written with its second (never later than the call): here the
		// upgrade's own write, 0.1 s before, is as recent.
		if got := lastBeat(); got.Before(notedAt.Truncate(time.Second)) || got.After(notedAt) {
			t.Fatalf("after the silence check: last_heartbeat %v, want the noted %v's second", got, notedAt)
		}
		// And a host that really went silent still is marked (given the
		// flush interval more, for other vaults' notes).
		h.advance(34 * time.Second)
		if silent, err := h.s.MarkSilentHostsDisconnected(t.Context(), 30*time.Second); err != nil || len(silent) != 1 {
			t.Fatalf("silent host: %v, %v", silent, err)
		}
	})
}
