package models

import (
	"context"
	"sync"

	"gorm.io/gorm"
)

// Changes tells the portal's live pages that what they show may have
// changed: a write to a table they read (a job's step, a task's progress, a
// protection's state) signals every subscriber once it is committed. A
// signal carries no data: the subscriber reads the database again, so a
// missed or merged signal costs latency, never correctness. Signals reach
// the subscribers of this process only; a page served by another vault
// process sees those writes at its next periodic refresh.
type Changes struct {
	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

func newChanges() *Changes { return &Changes{subs: map[chan struct{}]struct{}{}} }

// Subscribe returns a channel that receives a value after each change
// (several changes before the subscriber looks merge into one), and the
// function that ends the subscription.
func (c *Changes) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}

// Subscribers is how many subscriptions are open.
func (c *Changes) Subscribers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs)
}

// publish signals every subscriber without ever waiting: a subscriber
// whose signal is still pending has it already.
func (c *Changes) publish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Changes is the store's change signal, for live pages.
func (s *Store) Changes() *Changes { return s.changes }

// liveTables are the tables whose writes the live pages show: jobs and
// their steps, tasks (their progress), protections (state, health, RPO),
// VMs and their disks, recovery points and alerts.
var liveTables = map[string]bool{
	"jobs": true, "job_steps": true, "tasks": true, "protections": true, "vms": true, "disks": true,
	"recovery_points": true, "replica_disks": true, "alerts": true,
}

// pendingChange marks a transaction's context: its writes signal once it
// commits (a reader signalled earlier would still read the old rows).
type pendingChange struct{ changed bool }

type pendingChangeKey struct{}

// registerChangeSignal makes every create, update and delete of a live
// table signal s.changes: at once outside a transaction, at the commit
// inside one (Store.tx).
func (s *Store) registerChangeSignal(db *gorm.DB) error {
	signal := func(db *gorm.DB) {
		if db.Error != nil || db.RowsAffected == 0 || !liveTables[db.Statement.Table] {
			return
		}
		if p, ok := db.Statement.Context.Value(pendingChangeKey{}).(*pendingChange); ok {
			p.changed = true
			return
		}
		s.changes.publish()
	}
	if err := db.Callback().Create().After("gorm:create").Register("lifeboat:changes_create", signal); err != nil {
		return err
	}
	if err := db.Callback().Update().After("gorm:update").Register("lifeboat:changes_update", signal); err != nil {
		return err
	}
	return db.Callback().Delete().After("gorm:delete").Register("lifeboat:changes_delete", signal)
}

// inTx runs fn in a transaction whose live-table writes signal after the
// commit, and not at all on a rollback.
func (s *Store) inTx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	if _, nested := ctx.Value(pendingChangeKey{}).(*pendingChange); nested {
		return s.db.WithContext(ctx).Transaction(fn)
	}
	p := &pendingChange{}
	err := s.db.WithContext(context.WithValue(ctx, pendingChangeKey{}, p)).Transaction(fn)
	if err == nil && p.changed {
		s.changes.publish()
	}
	return err
}
