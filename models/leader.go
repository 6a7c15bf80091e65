package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// Several vault processes may serve one PostgreSQL database (behind a load
// balancer). Each of them answers the portal, the API and the agents; only
// one, the leader, runs the scheduler and the watch loop (cycles due,
// expired leases, silent hosts, plans, alerts), so that no pass races
// another. Leadership is a PostgreSQL session advisory lock held on a
// connection of its own: when the leader dies (even by kill -9), its
// connection closes, the database releases the lock, and the next vault
// that tries takes it. On SQLite there is one vault, always leader.

// The advisory lock's two keys: "life" in ASCII, and the vault's schema
// (two vaults of separate schemas in one database lead each their own).
const (
	leaderTryLock = "SELECT pg_try_advisory_lock(1818846821, hashtext(current_schema()))"
	leaderUnlock  = "SELECT pg_advisory_unlock(1818846821, hashtext(current_schema()))"
)

// Leadership is one vault process's claim to lead.
type Leadership struct {
	s    *Store
	mu   sync.Mutex
	conn *sql.Conn // holds the lock while it is open (PostgreSQL)
}

// Leadership returns this process's claim; Lead tries it.
func (s *Store) Leadership() *Leadership { return &Leadership{s: s} }

// Lead says whether this process leads now: it keeps the lock it holds
// (checking that its connection still lives) or tries to take it.
//
// A vault whose database a newer vault has migrated does not lead (and
// lets go of the lead): its scheduler must not write by an older schema.
func (l *Leadership) Lead(ctx context.Context) (bool, error) {
	// (A failure to read the version is left to the lock's own checks.)
	if se := (*SchemaError)(nil); errors.As(l.s.CheckSchema(ctx), &se) {
		l.Release()
		return false, se
	}
	if l.s.kind != "postgres" {
		return true, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		if err := l.conn.PingContext(ctx); err == nil {
			return true, nil
		}
		// The connection is gone, and the lock with it: another vault may
		// lead already.
		l.conn.Close()
		l.conn = nil
	}
	db, err := l.s.db.DB()
	if err != nil {
		return false, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("leadership: a connection of its own: %w", err)
	}
	var got bool
	if err := conn.QueryRowContext(ctx, leaderTryLock).Scan(&got); err != nil {
		conn.Close()
		return false, fmt.Errorf("leadership: try the lock: %w", err)
	}
	if !got {
		conn.Close()
		return false, nil
	}
	l.conn = conn
	return true, nil
}

// Release gives leadership up (at shutdown), so another vault takes over
// at once rather than when this connection times out.
func (l *Leadership) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		l.conn.ExecContext(context.Background(), leaderUnlock)
		l.conn.Close()
		l.conn = nil
	}
}
