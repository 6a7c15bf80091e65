package handlers

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed logins are limited so that passwords cannot be guessed at network
// speed, in ways that cannot be turned against the account's owner:
//
//   - per user name AND client address together: 10 failures in 15 min
//     lock that pair only. A stranger's failures never lock the user out
//     from their own address, and one address's failures never lock out
//     the other users behind it (a NAT, a proxy).
//   - a vault-wide budget of failures (a burst of 60, then one a second):
//     guessing from many addresses at once is slowed for everyone, for
//     seconds, instead of running unchecked.
//
// Successful logins are never counted. Refusals carry Retry-After.
const (
	loginFailureLimit  = 10
	loginFailureWindow = 15 * time.Minute
	globalFailureBurst = 60
	globalFailureRate  = 1 // per second, sustained
	throttleMaxKeys    = 100000
)

// loginThrottle counts recent failed logins.
type loginThrottle struct {
	mu       sync.Mutex
	failures map[string][]time.Time // by user and address
	global   *rate.Limiter
	now      func() time.Time
}

func newLoginThrottle(now func() time.Time) *loginThrottle {
	return &loginThrottle{failures: map[string][]time.Time{}, global: rate.NewLimiter(globalFailureRate, globalFailureBurst), now: now}
}

// throttleKey is what a login's failures are counted under: the user name
// (as it is looked up) and the client address, together.
func throttleKey(ip, username string) string {
	return strings.ToLower(strings.TrimSpace(username)) + "\x00" + ip
}

// throttled is the refusal of a login attempt, with when to try again.
func throttled(wait time.Duration, message string) *Problem {
	secs := int(math.Ceil(wait.Seconds()))
	return &Problem{Status: http.StatusTooManyRequests, Code: "too_many_login_attempts", Message: message,
		Details: map[string]any{"retry_after_seconds": max(secs, 1)}}
}

// check refuses an attempt for the pair that failed too often, or while
// the vault-wide budget is spent.
func (t *loginThrottle) check(ip, username string) *Problem {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if recent := t.recent(throttleKey(ip, username), now); len(recent) >= loginFailureLimit {
		wait := recent[len(recent)-loginFailureLimit].Add(loginFailureWindow).Sub(now)
		return throttled(wait, fmt.Sprintf("too many failed logins for this user from this address; try again in %v, or ask an Owner to reset the password",
			max(wait.Round(time.Minute), time.Minute)))
	}
	if r := t.global.TokensAt(now); r < 1 {
		wait := time.Duration((1 - r) / globalFailureRate * float64(time.Second))
		return throttled(wait, fmt.Sprintf("the vault is receiving many failed logins (password guessing?) and slows every login down; try again in %v",
			max(wait.Round(time.Second), time.Second)))
	}
	return nil
}

// fail records a failed login of the pair, and spends from the vault-wide
// budget.
func (t *loginThrottle) fail(ip, username string) {
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
	k := throttleKey(ip, username)
	t.failures[k] = append(t.recent(k, now), now)
	t.global.AllowN(now, 1)
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

// retryAfter sets the Retry-After header of a throttled answer.
func retryAfter(h http.Header, p *Problem) {
	if s, ok := p.Details["retry_after_seconds"].(int); ok {
		h.Set("Retry-After", strconv.Itoa(s))
	}
}
