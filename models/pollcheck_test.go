package models_test

import (
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// A poll looks for queued work before it takes the writer to lease it:
// the look sees a task queued for the host, and none once it is leased,
// or for another host.
func TestHasQueuedTasksSeesWhatLeaseTasksWouldTake(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		_, host := replicatingVM(t, h)
		other := mustHost(t, h, host.SiteID, "other", "Connected")
		if got, err := h.s.HasQueuedTasks(ctx, host.ID); err != nil || got {
			t.Fatalf("nothing queued: %v, %v", got, err)
		}
		h.advance(6 * time.Minute)
		if q := scheduled(t, h); len(q) != 1 {
			t.Fatalf("queued %d cycles, want 1", len(q))
		}
		if got, err := h.s.HasQueuedTasks(ctx, host.ID); err != nil || !got {
			t.Fatalf("a cycle queued: %v, %v", got, err)
		}
		if got, _ := h.s.HasQueuedTasks(ctx, other.ID); got {
			t.Fatal("another host's poll sees this host's cycle")
		}
		leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		if got, _ := h.s.HasQueuedTasks(ctx, host.ID); got {
			t.Fatal("the leased cycle is still seen as queued")
		}
	})
}
