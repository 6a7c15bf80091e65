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

// A copy's speed shows from its second progress report, follows the
// reports, and starts again with a new run; the running copy is found by
// its VM, and an old report says nothing about now.
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
		report := func(done int64) models.Task {
			t.Helper()
			if _, _, err := h.s.ReportProgress(ctx, host.ID, initial.ID, models.TaskProgress{Step: "disk disk0.img", Percent: int(done * 100 / total),
				BytesDone: done, BytesTotal: total}, time.Minute); err != nil {
				t.Fatal(err)
			}
			run, err := h.s.RunningCopy(ctx, vm.ID)
			if err != nil || run.ID != initial.ID {
				t.Fatalf("running copy: %+v %v", run, err)
			}
			return *run
		}
		first := report(100 << 20)
		if _, _, ok := first.Estimate(h.clock.T); ok {
			t.Fatal("a speed from one report")
		}
		if first.ProgressPercent != 10 || first.ProgressMessage != "disk disk0.img: " || first.BytesDone != 100<<20 {
			t.Errorf("the first report: %+v", first)
		}
		h.advance(3 * time.Second)
		second := report(130 << 20) // 10 MiB/s
		speed, left, ok := second.Estimate(h.clock.T)
		if !ok || speed != 10<<20 || left != 87*time.Second {
			t.Fatalf("after two reports: %v B/s, %v left, %v", speed, left, ok)
		}
		h.advance(3 * time.Second)
		third := report(190 << 20) // 20 MiB/s for 3 s: the average moves towards it, not to it
		speed, _, _ = third.Estimate(h.clock.T)
		if speed <= 10<<20 || speed >= 20<<20 {
			t.Errorf("after a faster report the speed is %.0f B/s, want between 10 and 20 MiB/s", speed)
		}
		if _, _, ok := third.Estimate(h.clock.T.Add(time.Minute)); ok {
			t.Error("a minute-old report still gives a speed")
		}
		h.advance(3 * time.Second)
		again := report(5 << 20) // a new run begins at the start
		if _, _, ok := again.Estimate(h.clock.T); ok || again.ProgressReports != 1 {
			t.Errorf("a new run kept the old speed: %+v", again)
		}
	})
}
