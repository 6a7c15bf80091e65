package models_test

import (
	"errors"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// signalled reports whether ch has a signal waiting, and takes it.
func signalled(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A write to a table the live pages show signals every subscriber; the
// writes of one transaction are one signal; other tables' writes signal
// nothing, and an unsubscribed channel is forgotten.
func TestChangesSignalWritesOfLiveTablesOnly(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ch, stop := h.s.Changes().Subscribe()
		other, stopOther := h.s.Changes().Subscribe()
		defer stopOther()
		mustSite(t, h, "not shown live")
		if signalled(ch) {
			t.Fatal("a new site signalled a change: sites are not a live table")
		}
		mustJob(t, h, "CheckHost", models.JobInProgress, "host_1", "one", "two")
		if !signalled(ch) || !signalled(other) {
			t.Fatal("a new job did not signal every subscriber")
		}
		if signalled(ch) {
			t.Fatal("one transaction signalled twice")
		}
		stop()
		if h.s.Changes().Subscribers() != 1 {
			t.Fatalf("%d subscribers after one stopped", h.s.Changes().Subscribers())
		}
	})
}

// A copy's speed shows once two reports have counted different bytes,
// follows the reports that move the count (agents count in batches, so
// many repeat it), and starts again when the count goes back; the running copy is
// found by its VM.
func TestProgressReportsGiveACopysSpeedAndTimeLeft(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		vm, host, _ := protectedVM(t, h)
		if _, err := h.s.RunningCopy(ctx, vm.ID); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("a running copy before any: %v", err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		const total = 1000 << 20
		report := func(attempt int, done int64) models.Task {
			t.Helper()
			if _, _, err := h.s.ReportProgress(ctx, host.ID, initial.ID, models.TaskProgress{Attempt: attempt, Step: "disk disk0.img", Percent: int(done * 100 / total),
				BytesDone: done, BytesTotal: total}, time.Minute); err != nil {
				t.Fatal(err)
			}
			run, err := h.s.RunningCopy(ctx, vm.ID)
			if err != nil || run.ID != initial.ID {
				t.Fatalf("running copy: %+v %v", run, err)
			}
			return *run
		}
		first := report(1, 100<<20)
		if _, _, ok := first.Estimate(); ok {
			t.Fatal("a speed from one report")
		}
		if first.ProgressPercent != 10 || first.ProgressMessage != "disk disk0.img: " || first.BytesDone != 100<<20 {
			t.Errorf("the first report: %+v", first)
		}
		h.advance(3 * time.Second)
		if _, _, ok := report(1, 100<<20).Estimate(); ok {
			t.Fatal("a speed from two reports of the same count")
		}
		h.advance(7 * time.Second)
		second := report(1, 200<<20) // 100 MiB in 10 s
		speed, left, ok := second.Estimate()
		if !ok || speed != 10<<20 || left != 80*time.Second {
			t.Fatalf("after the count moved: %v B/s, %v left, %v", speed, left, ok)
		}
		h.advance(5 * time.Second)
		third := report(1, 300<<20) // 20 MiB/s for 5 s: the average moves towards it, not to it
		speed, _, _ = third.Estimate()
		if speed <= 10<<20 || speed >= 20<<20 {
			t.Errorf("after a faster stretch the speed is %.0f B/s, want between 10 and 20 MiB/s", speed)
		}
		h.advance(3 * time.Second)
		again := report(1, 5<<20) // the count went back: a copy begun again
		if _, _, ok := again.Estimate(); ok || again.SpeedSamples != 0 {
			t.Errorf("a new run kept the old speed: %+v", again)
		}
	})
}
