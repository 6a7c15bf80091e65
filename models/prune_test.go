package models_test

import (
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// The task rows of scheduled cycles that ended a day ago are deleted; a
// job's tasks, a cycle still queued, and a cycle that ended lately stay.
func TestFinishedCycleTasksArePrunedAfterADay(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		_, host := replicatingVM(t, h) // the enable job's three tasks
		jobTasks := h.countRows(t, &models.Task{}, "job_id <> ''")
		h.advance(6 * time.Minute)
		if q := scheduled(t, h); len(q) != 1 {
			t.Fatalf("queued %d cycles, want 1", len(q))
		}
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, cycle, cycleResult(cycle, h.clock.T))
		h.advance(23 * time.Hour)
		if n, err := h.s.PruneFinishedCycles(ctx); err != nil || n != 0 {
			t.Fatalf("a cycle that ended 23 h ago: pruned %d, %v; want 0", n, err)
		}
		if q := scheduled(t, h); len(q) != 1 { // stays queued: no agent takes it
			t.Fatalf("queued %d cycles, want 1", len(q))
		}
		h.advance(2 * time.Hour)
		n, err := h.s.PruneFinishedCycles(ctx)
		if err != nil || n != 1 {
			t.Fatalf("a cycle that ended 25 h ago: pruned %d, %v; want 1", n, err)
		}
		if got := h.countRows(t, &models.Task{}, "id = ?", cycle.ID); got != 0 {
			t.Fatalf("the pruned cycle's row is still there")
		}
		if got := h.countRows(t, &models.Task{}, "job_id <> ''"); got != jobTasks {
			t.Fatalf("job tasks: %d, want %d (they stay with their job)", got, jobTasks)
		}
		if got := h.countRows(t, &models.Task{}, "state = ?", models.TaskQueued); got != 1 {
			t.Fatalf("queued cycles after pruning: %d, want 1", got)
		}
	})
}
