package handlers

import "sync"

// wakeups lets a long poll return as soon as work for its host appears,
// instead of waiting out its timer. It only shortens waits; the store stays
// the truth, so a missed wake-up costs latency, never a task.
type wakeups struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

func newWakeups() *wakeups { return &wakeups{ch: map[string]chan struct{}{}} }

// wait returns a channel closed at the next wake(hostID).
func (w *wakeups) wait(hostID string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.ch[hostID]
	if !ok {
		c = make(chan struct{})
		w.ch[hostID] = c
	}
	return c
}

// wake releases every poll waiting for hostID.
func (w *wakeups) wake(hostID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.ch[hostID]; ok {
		close(c)
		delete(w.ch, hostID)
	}
}
