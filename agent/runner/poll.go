package runner

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// errSlotFreed ends a held poll that offered no free slot when one frees.
var errSlotFreed = errors.New("a task slot freed while the poll was held")

// pollLoop long-polls for tasks and cancellations.
func (a *Runner) pollLoop(ctx context.Context) {
	for failures := 0; ctx.Err() == nil; {
		// Taken before the request is built, which then counts the slot: a
		// slot that frees from here on leaves a new token, which ends the
		// poll below. So no wake-up is lost between building and sending.
		select {
		case <-a.freed:
		default:
		}
		running := a.runningIDs()
		req := agentproto.PollRequest{Agent: a.info, Running: running, Free: max(0, a.opts.MaxTasks-len(running))}
		resp, err := a.poll(ctx, req)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errSlotFreed) {
			continue // not a failure: poll again at once, offering the slot
		}
		if err != nil {
			a.handleVaultError("poll", err)
			if !a.backoff(ctx, failures) {
				return
			}
			failures++
			continue
		}
		failures = 0
		a.setIntervals(resp.Intervals)
		for _, id := range resp.Cancel {
			a.cancelTask(id)
		}
		for _, t := range resp.Tasks {
			a.accept(ctx, t)
		}
		if len(resp.Tasks) == 0 && len(resp.Cancel) == 0 {
			// Space out polls a little; the vault already held this one.
			if !sleep(ctx, time.Duration(rand.Int64N(int64(500*time.Millisecond)))) {
				return
			}
		}
	}
}

// poll sends one long poll. A poll that offers no free slot is held by the
// vault until its wait runs out, however soon a task ends; so a slot that
// frees meanwhile ends it with errSlotFreed. Only such a poll: the vault
// leases nothing to it, so cutting it loses no task, whereas a poll that
// offers slots returns as soon as there is work anyway.
func (a *Runner) poll(ctx context.Context, req agentproto.PollRequest) (agentproto.PollResponse, error) {
	wait := time.Duration(a.getIntervals().PollWaitSeconds)*time.Second + pollMargin
	pollCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timeoutCtx, cancelTimeout := context.WithTimeout(pollCtx, wait)
	defer cancelTimeout()
	if req.Free == 0 {
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-a.freed:
				cancel(errSlotFreed)
			case <-done:
			}
		}()
	}
	var resp agentproto.PollResponse
	err := a.pollVault.Post(timeoutCtx, agentproto.PathPoll, req, &resp)
	if err != nil && context.Cause(pollCtx) == errSlotFreed {
		return resp, errSlotFreed
	}
	return resp, err
}

// slotFreed wakes the poll loop: a task left its slot.
func (a *Runner) slotFreed() {
	select {
	case a.freed <- struct{}{}:
	default: // a wake-up is already pending
	}
}
