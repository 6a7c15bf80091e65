package handlers

import "sync"

// wakeups lets a long poll return as soon as work for its host appears,
// instead of waiting out its timer. It only shortens waits; the store stays
// the truth, so a missed wake-up costs latency, never a task.
type wakeups struct {
	mu sync.Mutex
	ch map[string]chan struct{}
	// relay, when set, passes each wake-up on to the other vaults of the
	// database (models.WakeRelay), whose polls of the host it releases.
	relay func(hostID string)
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

// wake releases every poll waiting for hostID, here and on the other
// vaults of the database.
func (w *wakeups) wake(hostID string) {
	w.wakeHere(hostID)
	if w.relay != nil {
		w.relay(hostID)
	}
}

// wakeHere releases the polls for hostID that this vault holds.
func (w *wakeups) wakeHere(hostID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.ch[hostID]; ok {
		close(c)
		delete(w.ch, hostID)
	}
}
