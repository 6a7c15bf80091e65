package models

import (
	"fmt"
	"time"
)

// Domain rules as plain functions: no database, no clock of their own.
// The scheduler and the replication engine call them with the time.

// protectionTransitions is the protection state machine of DESIGN.md §3:
// for each state, the states it may move to.
var protectionTransitions = map[string][]string{
	StateUnprotected:         {StateEnablingProtection},
	StateEnablingProtection:  {StateInitialReplication, StateUnprotected, StateDisablingProtection},
	StateInitialReplication:  {StateProtected, StateResyncRequired, StateDisablingProtection, StateEnablingProtection}, // the last: a retry after a failed initial copy
	StateProtected:           {StateResyncRequired, StateFailingOver, StateDisablingProtection},
	StateResyncRequired:      {StateResynchronizing, StateProtected, StateDisablingProtection},
	StateResynchronizing:     {StateProtected, StateResyncRequired, StateDisablingProtection},
	StateFailingOver:         {StateFailedOver, StateProtected},
	StateFailedOver:          {StateCommitted, StateFailingOver, StateProtected},
	StateCommitted:           {StateReprotecting, StateDisablingProtection},
	StateReprotecting:        {StateProtected, StateCommitted},
	StateDisablingProtection: {StateUnprotected},
}

// CheckTransition says whether protection may go from one state to another,
// and if not, why, in words an operator understands.
func CheckTransition(from, to string) error {
	next, known := protectionTransitions[from]
	if !known {
		return fmt.Errorf("unknown protection state %q", from)
	}
	for _, s := range next {
		if s == to {
			return nil
		}
	}
	return &ConflictError{Code: "invalid_protection_state",
		Message: fmt.Sprintf("a VM in state %s cannot go to %s; it can go to %v", from, to, next)}
}

// retryDelays is the reference back-off for recoverable replication errors,
// counted from the first failed attempt: 1, 2, 4, 8 and 10 minutes, then
// every 30 minutes while the error persists.
var retryDelays = []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute}

// RetryEvery is the interval after the schedule's first steps.
const RetryEvery = 30 * time.Minute

// NextRetry is when to try again after failures consecutive failed attempts
// (1 after the first failure), the first of which happened at first.
// The delays add up from the first failure, as in the reference: 1 min
// after it, then 2 min after that, and so on.
func NextRetry(first time.Time, failures int) time.Time {
	if failures < 1 {
		return first
	}
	at := first
	for i := 0; i < failures; i++ {
		if i < len(retryDelays) {
			at = at.Add(retryDelays[i])
		} else {
			at = at.Add(RetryEvery)
		}
	}
	return at
}

// InWindow reports whether t falls inside the daily window start–end
// ("HH:MM"), read on the wall clock of loc. A window whose end is not after
// its start crosses midnight (18:30–06:00 is the evening and the night).
// Wall-clock reading makes daylight-saving changes behave as people expect:
// a window from 18:30 opens at 18:30 local time on both sides of a change.
func InWindow(t time.Time, start, end string, loc *time.Location) (bool, error) {
	s, err := ParseClock(start)
	if err != nil {
		return false, err
	}
	e, err := ParseClock(end)
	if err != nil {
		return false, err
	}
	local := t.In(loc)
	m := local.Hour()*60 + local.Minute()
	if s < e {
		return m >= s && m < e, nil
	}
	return m >= s || m < e, nil
}

// NextWindowOpening is the first instant at or after t when the window
// opens, on loc's wall clock. On a day when daylight saving skips the start
// time, time.Date moves it forward by the skipped hour (02:30 becomes 03:30),
// so the window still opens that day.
func NextWindowOpening(t time.Time, start, end string, loc *time.Location) (time.Time, error) {
	in, err := InWindow(t, start, end, loc)
	if err != nil || in {
		return t, err
	}
	s, _ := ParseClock(start)
	local := t.In(loc)
	for day := 0; day < 3; day++ {
		y, mo, d := local.AddDate(0, 0, day).Date()
		open := time.Date(y, mo, d, s/60, s%60, 0, 0, loc)
		if !open.Before(t) {
			return open, nil
		}
	}
	return time.Time{}, fmt.Errorf("no opening of the window %s–%s found after %s", start, end, t)
}

// HealthStatus is a protected VM's health with the reasons for it.
type HealthStatus struct {
	Health  string
	Reasons []string
}

// AssessHealth derives health from the time since the last recovery point
// (the RPO) and the errors at hand: Critical for a non-recoverable error,
// Warning when the RPO exceeds twice the copy frequency or a recoverable
// error persists, else Normal.
func AssessHealth(rpo time.Duration, hasPoint bool, copyFrequency time.Duration, nonRecoverable, recoverable string) HealthStatus {
	h := HealthStatus{Health: HealthNormal}
	if nonRecoverable != "" {
		h.Health = HealthCritical
		h.Reasons = append(h.Reasons, nonRecoverable)
	}
	if recoverable != "" {
		if h.Health == HealthNormal {
			h.Health = HealthWarning
		}
		h.Reasons = append(h.Reasons, recoverable)
	}
	if hasPoint && rpo > 2*copyFrequency {
		if h.Health == HealthNormal {
			h.Health = HealthWarning
		}
		h.Reasons = append(h.Reasons, fmt.Sprintf("the RPO (%v) is above twice the copy frequency (%v)", rpo.Truncate(time.Second), copyFrequency))
	}
	return h
}
