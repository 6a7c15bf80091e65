package handlers

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Failed logins are limited per client address and per username, so that
// passwords cannot be guessed at network speed. Successful logins are never
// slowed down.
const (
	loginFailureLimit  = 10
	loginFailureWindow = 15 * time.Minute
	throttleMaxKeys    = 100000
)

// loginThrottle counts recent failed logins by key.
type loginThrottle struct {
	mu       sync.Mutex
	failures map[string][]time.Time
	now      func() time.Time
}

func newLoginThrottle(now func() time.Time) *loginThrottle {
	return &loginThrottle{failures: map[string][]time.Time{}, now: now}
}

// check refuses when any key has too many recent failures.
func (t *loginThrottle) check(keys ...string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for _, k := range keys {
		recent := t.recent(k, now)
		if len(recent) >= loginFailureLimit {
			wait := recent[0].Add(loginFailureWindow).Sub(now).Round(time.Minute)
			return &Problem{Status: http.StatusTooManyRequests, Code: "too_many_login_attempts",
				Message: fmt.Sprintf("too many failed logins from this address or for this user; try again in %v, or ask an Owner to reset the password", max(wait, time.Minute))}
		}
	}
	return nil
}

// fail records a failed login under each key.
func (t *loginThrottle) fail(keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.failures) > throttleMaxKeys {
		for k := range t.failures {
			if len(t.recent(k, now)) == 0 {
				delete(t.failures, k)
			}
		}
	}
	for _, k := range keys {
		t.failures[k] = append(t.recent(k, now), now)
	}
}

// recent drops failures older than the window and returns the rest.
func (t *loginThrottle) recent(key string, now time.Time) []time.Time {
	list := t.failures[key]
	i := 0
	for i < len(list) && now.Sub(list[i]) > loginFailureWindow {
		i++
	}
	list = list[i:]
	if len(list) == 0 {
		delete(t.failures, key)
		return nil
	}
	t.failures[key] = list
	return list
}
