package models_test

import (
	"errors"
	"testing"
	"time"
	_ "time/tzdata" // the zones below, whatever the machine has installed

	"github.com/lifeboat-dr/lifeboat/models"
)

func TestProtectionStateMachineAllowsOnlyItsTransitions(t *testing.T) {
	cases := []struct {
		from, to string
		ok       bool
	}{
		{models.StateUnprotected, models.StateEnablingProtection, true},
		{models.StateEnablingProtection, models.StateInitialReplication, true},
		{models.StateInitialReplication, models.StateProtected, true},
		{models.StateProtected, models.StateResyncRequired, true},
		{models.StateResyncRequired, models.StateResynchronizing, true},
		{models.StateResynchronizing, models.StateProtected, true},
		{models.StateProtected, models.StateFailingOver, true},
		{models.StateFailedOver, models.StateCommitted, true},
		{models.StateCommitted, models.StateReprotecting, true},
		{models.StateReprotecting, models.StateProtected, true},
		{models.StateProtected, models.StateDisablingProtection, true},
		{models.StateDisablingProtection, models.StateUnprotected, true},
		{models.StateUnprotected, models.StateProtected, false},
		{models.StateInitialReplication, models.StateFailingOver, false},
		{models.StateCommitted, models.StateProtected, false},
		{models.StateResynchronizing, models.StateFailedOver, false},
	}
	for _, tc := range cases {
		err := models.CheckTransition(tc.from, tc.to)
		var conflict *models.ConflictError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s → %s refused: %v", tc.from, tc.to, err)
		case !tc.ok && !errors.As(err, &conflict):
			t.Errorf("%s → %s: %v, want a ConflictError", tc.from, tc.to, err)
		}
	}
	if err := models.CheckTransition("Floating", models.StateProtected); err == nil {
		t.Error("an unknown state is accepted")
	}
}

func TestRetryScheduleIsOneTwoFourEightTenThenEveryThirtyMinutes(t *testing.T) {
	first := time.Date(2026, 3, 9, 10, 0, 0, 0, time.UTC)
	want := []time.Duration{0, 1, 3, 7, 15, 25, 55, 85, 115} // minutes after the first failure
	for failures, minutes := range want {
		if got := models.NextRetry(first, failures).Sub(first); got != minutes*time.Minute {
			t.Errorf("after %d failures: next try %v after the first, want %v", failures, got, minutes*time.Minute)
		}
	}
}

func TestResyncWindowOnTheWallClockAcrossMidnightAndDaylightSaving(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	at := func(y int, mo time.Month, d, h, m int) time.Time { return time.Date(y, mo, d, h, m, 0, 0, paris) }
	cases := []struct {
		name       string
		t          time.Time
		start, end string
		want       bool
	}{
		{"just before the evening start", at(2026, 3, 9, 18, 29), "18:30", "06:00", false},
		{"at the start", at(2026, 3, 9, 18, 30), "18:30", "06:00", true},
		{"midnight inside a window crossing it", at(2026, 3, 10, 0, 0), "18:30", "06:00", true},
		{"the minute before the end", at(2026, 3, 10, 5, 59), "18:30", "06:00", true},
		{"at the end", at(2026, 3, 10, 6, 0), "18:30", "06:00", false},
		{"office hours", at(2026, 3, 10, 12, 0), "18:30", "06:00", false},
		{"daytime window", at(2026, 3, 10, 12, 0), "09:00", "17:00", true},
		{"after a daytime window", at(2026, 3, 10, 17, 0), "09:00", "17:00", false},
		// 2026-03-29 in Paris: 02:00 CET jumps to 03:00 CEST.
		{"spring forward: 01:59, inside 22:00–02:30", at(2026, 3, 29, 1, 59), "22:00", "02:30", true},
		{"spring forward: 03:00 is past 02:30", at(2026, 3, 29, 3, 0), "22:00", "02:30", false},
		// 2026-10-25 in Paris: 03:00 CEST falls back to 02:00 CET; 02:15 happens twice.
		{"fall back: first 02:15", time.Date(2026, 10, 25, 0, 15, 0, 0, time.UTC), "02:00", "02:30", true},
		{"fall back: second 02:15", time.Date(2026, 10, 25, 1, 15, 0, 0, time.UTC), "02:00", "02:30", true},
		{"fall back: 02:45 CET", time.Date(2026, 10, 25, 1, 45, 0, 0, time.UTC), "02:00", "02:30", false},
	}
	for _, tc := range cases {
		got, err := models.InWindow(tc.t, tc.start, tc.end, paris)
		if err != nil || got != tc.want {
			t.Errorf("%s (%s, %s–%s): %v %v, want %v", tc.name, tc.t.In(paris).Format("2006-01-02 15:04 MST"), tc.start, tc.end, got, err, tc.want)
		}
	}
	if _, err := models.InWindow(at(2026, 3, 9, 1, 0), "25:00", "06:00", paris); err == nil {
		t.Error("a malformed window is accepted")
	}
}

func TestNextWindowOpening(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	noon := time.Date(2026, 3, 9, 12, 0, 0, 0, paris)
	if got, _ := models.NextWindowOpening(noon, "18:30", "06:00", paris); !got.Equal(time.Date(2026, 3, 9, 18, 30, 0, 0, paris)) {
		t.Errorf("from noon: %v", got)
	}
	inside := time.Date(2026, 3, 9, 23, 0, 0, 0, paris)
	if got, _ := models.NextWindowOpening(inside, "18:30", "06:00", paris); !got.Equal(inside) {
		t.Errorf("inside the window it is open now: %v", got)
	}
	// 02:30 does not exist in Paris on 2026-03-29: the window opens at 03:30 CEST.
	got, _ := models.NextWindowOpening(time.Date(2026, 3, 29, 1, 0, 0, 0, paris), "02:30", "05:00", paris)
	if got.In(paris).Format("15:04 MST") != "03:30 CEST" || got.Day() != 29 {
		t.Errorf("over the spring-forward gap: %v", got.In(paris))
	}
}

func TestHealthFromRPOAndErrors(t *testing.T) {
	five := 5 * time.Minute
	cases := []struct {
		name            string
		rpo             time.Duration
		hasPoint        bool
		nonRecov, recov string
		want            string
		reasons         int
	}{
		{"fresh point", 4 * time.Minute, true, "", "", models.HealthNormal, 0},
		{"RPO at twice the frequency", 10 * time.Minute, true, "", "", models.HealthNormal, 0},
		{"RPO above twice the frequency", 11 * time.Minute, true, "", "", models.HealthWarning, 1},
		{"recoverable error", time.Minute, true, "", "network unreachable", models.HealthWarning, 1},
		{"non-recoverable error", time.Minute, true, "replica missing", "", models.HealthCritical, 1},
		{"both, with a stale RPO", time.Hour, true, "auth refused", "timeout", models.HealthCritical, 3},
		{"no point yet", 0, false, "", "", models.HealthNormal, 0},
	}
	for _, tc := range cases {
		h := models.AssessHealth(tc.rpo, tc.hasPoint, five, tc.nonRecov, tc.recov)
		if h.Health != tc.want || len(h.Reasons) != tc.reasons {
			t.Errorf("%s: %+v, want %s with %d reasons", tc.name, h, tc.want, tc.reasons)
		}
	}
}
