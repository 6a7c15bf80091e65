package models_test

import (
	"errors"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// replicatedVM is a protected VM past its initial copy (made at the
// clock's time), with its host.
func replicatedVM(t *testing.T, h *harness) (models.VMSummary, *models.Host) {
	t.Helper()
	vm, host, _ := protectedVM(t, h)
	complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
	complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
	initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
	complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))
	return vm, host
}

// runCycle schedules, leases and completes one cycle whose point is made
// a second before it ends.
func runCycle(t *testing.T, h *harness, hostID string) {
	t.Helper()
	if q, err := h.s.ScheduleReplications(t.Context()); err != nil || len(q) != 1 {
		t.Fatalf("schedule a cycle: %d %v", len(q), err)
	}
	cycle := leaseOne(t, h, hostID, agentproto.TaskReplicate)
	complete(t, h, hostID, cycle, cycleResult(cycle, h.clock.T.Add(-time.Second)))
}

func history(t *testing.T, h *harness, vmID, rng string) *models.VMHistory {
	t.Helper()
	hist, err := h.s.RPOHistoryOf(t.Context(), vmID, rng)
	if err != nil {
		t.Fatal(err)
	}
	return hist
}

func TestEachCycleRecordsItsRPOBeforeAndAfterAndItsBytes(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host := replicatedVM(t, h) // policy: copy every 5 minutes
		h.advance(5 * time.Minute)
		runCycle(t, h, host.ID)
		hist := history(t, h, vm.ID, models.HistoryDay)
		if len(hist.Points) != 2 {
			t.Fatalf("want the initial copy's row and the cycle's, got %+v", hist.Points)
		}
		c := hist.Points[1]
		// The point before was 5 minutes old when this one landed; this one
		// is a second old.
		if c.MaxRPOSeconds != 300 || c.RPOSeconds != 1 || c.BytesSent != 4096 || c.Cycles != 1 || !c.Time.Equal(h.clock.T) {
			t.Fatalf("the cycle's row: %+v", c)
		}
		if hist.ThresholdSeconds != 600 {
			t.Fatalf("threshold %v, want twice the copy frequency", hist.ThresholdSeconds)
		}
		if _, err := h.s.RPOHistoryOf(t.Context(), vm.ID, "30d"); !errors.Is(err, models.ErrUnknownRange) {
			t.Fatalf("an unknown range: %v", err)
		}
		if _, err := h.s.RPOHistoryOf(t.Context(), "vm_nope", models.HistoryDay); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("an unknown VM: %v", err)
		}
	})
}

func TestTheRPOIsSampledWhileNoCycleEnds(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, _ := replicatedVM(t, h)
		sample := func() int {
			n, err := h.s.SampleRPO(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := sample(); n != 0 {
			t.Fatalf("sampled %d right after a cycle's row", n)
		}
		h.advance(models.RPOSampleEvery + time.Second)
		if n := sample(); n != 1 {
			t.Fatalf("not sampled after %v without a row: %d", models.RPOSampleEvery, n)
		}
		if n := sample(); n != 0 {
			t.Fatalf("sampled twice in a row: %d", n)
		}
		hist := history(t, h, vm.ID, models.HistoryDay)
		last := hist.Points[len(hist.Points)-1]
		if want := (models.RPOSampleEvery + time.Second).Seconds(); last.RPOSeconds != want || last.Cycles != 0 || last.BytesSent != 0 {
			t.Fatalf("the sample: %+v, want RPO %v and no cycle", last, want)
		}
	})
}

func TestHistoryOlderThanADayIsFoldedByTheHourAndOlderThanAWeekDeleted(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host := replicatedVM(t, h) // at 10:00
		// Three more cycles in the hour 10:00–11:00 (the worst RPO, 301 s,
		// at 10:10), one at 11:05.
		for range 3 {
			h.advance(5 * time.Minute)
			runCycle(t, h, host.ID)
		}
		h.advance(50 * time.Minute) // 11:05; the point before was made at 10:14:59
		runCycle(t, h, host.ID)
		compact := func() (int64, int64) {
			folded, deleted, err := h.s.CompactRPOHistory(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return folded, deleted
		}
		if f, d := compact(); f != 0 || d != 0 {
			t.Fatalf("compacted rows less than a day old: %d folded, %d deleted", f, d)
		}
		// A day after 11:00 the hour 10:00 is over a day old, and only it.
		h.clock.T = time.Date(2026, 3, 10, 11, 0, 0, 0, time.UTC)
		if f, _ := compact(); f != 4 {
			t.Fatalf("folded %d rows of the hour 10:00, want its 4", f)
		}
		if f, _ := compact(); f != 0 {
			t.Fatalf("folded again: %d", f)
		}
		week := history(t, h, vm.ID, models.HistoryWeek)
		if len(week.Points) != 2 {
			t.Fatalf("a week: %+v, want the hours 10:00 and 11:00", week.Points)
		}
		ten, eleven := week.Points[0], week.Points[1]
		if !ten.Hourly || !ten.Time.Equal(time.Date(2026, 3, 9, 10, 0, 0, 0, time.UTC)) || ten.Cycles != 4 || ten.BytesSent != 4*4096 || ten.MaxRPOSeconds != 301 {
			t.Fatalf("the hour 10:00: %+v", ten)
		}
		// 11:00 is not folded yet in the table, but a week is shown by the hour.
		if !eleven.Time.Equal(time.Date(2026, 3, 9, 11, 0, 0, 0, time.UTC)) || eleven.Cycles != 1 || eleven.MaxRPOSeconds != 50*60+1 {
			t.Fatalf("the hour 11:00: %+v", eleven)
		}
		if day := history(t, h, vm.ID, models.HistoryDay); len(day.Points) != 1 || day.Points[0].Hourly {
			t.Fatalf("a day holds the raw rows of the last 24 hours only: %+v", day.Points)
		}
		// A week after, the hourly row goes too.
		h.clock.T = time.Date(2026, 3, 16, 10, 30, 0, 0, time.UTC)
		if f, d := compact(); f != 1 || d != 1 {
			t.Fatalf("a week on: %d folded (want the 11:05 row), %d deleted (want the hour 10:00)", f, d)
		}
		if week := history(t, h, vm.ID, models.HistoryWeek); len(week.Points) != 1 || week.Points[0].Cycles != 1 {
			t.Fatalf("after the prune: %+v", week.Points)
		}
	})
}
