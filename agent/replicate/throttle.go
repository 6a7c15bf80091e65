package replicate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
)

// Limiter paces writes to a rate with a token bucket that holds about one
// second's worth: a fresh or idle bucket lets one second of data through at
// once, never tens of megabytes (a 1 Mbit/s limit must hold for a cycle of
// a few MiB too).
type Limiter struct {
	bucket *rate.Limiter
	now    func() time.Time
	sleep  func(ctx context.Context, d time.Duration) error
}

// NewLimiter limits to mbps Mbit/s; 0 or less means no limit and returns
// nil (a nil *Limiter is not a Throttle: use Throttles.For).
func NewLimiter(mbps int) *Limiter {
	return newLimiter(mbps, time.Now, sleepCtx)
}

func newLimiter(mbps int, now func() time.Time, sleep func(context.Context, time.Duration) error) *Limiter {
	if mbps <= 0 {
		return nil
	}
	perSecond := float64(mbps) * 1e6 / 8
	burst := max(int(perSecond), blocks.BlockSize)
	return &Limiter{bucket: rate.NewLimiter(rate.Limit(perSecond), burst), now: now, sleep: sleep}
}

// WaitN waits until n bytes may be written, in pieces no larger than the
// bucket.
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	for n > 0 {
		k := min(n, l.bucket.Burst())
		now := l.now()
		r := l.bucket.ReserveN(now, k)
		if !r.OK() {
			return fmt.Errorf("the throttle cannot grant %d bytes", k)
		}
		if d := r.DelayFrom(now); d > 0 {
			if err := l.sleep(ctx, d); err != nil {
				r.CancelAt(l.now())
				return err
			}
		}
		n -= k
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Throttles keeps one bucket per limit for a whole host: cycles that run
// at once, or one after the other, share it, so the policy's limit holds
// for the host's traffic, as the reference's per-host throttling does.
type Throttles struct {
	mu      sync.Mutex
	buckets map[int]*Limiter
	now     func() time.Time
	sleep   func(context.Context, time.Duration) error
}

// NewThrottles makes the host's buckets, on the real clock.
func NewThrottles() *Throttles {
	return &Throttles{buckets: map[int]*Limiter{}, now: time.Now, sleep: sleepCtx}
}

// For returns the bucket of a limit in Mbit/s, or nil (no limit) for 0.
func (t *Throttles) For(mbps int) Throttle {
	if mbps <= 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.buckets[mbps]
	if !ok {
		l = newLimiter(mbps, t.now, t.sleep)
		t.buckets[mbps] = l
	}
	return l
}
