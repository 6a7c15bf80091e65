package models

import (
	"context"
	"crypto/rand"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Several vault processes on one PostgreSQL database each hold their own
// agents' long polls. Work queued by one (an operator's Replicate now, the
// leader's scheduler) must wake a poll held by another at once, not at the
// end of its wait: the WakeRelay sends each wake-up through PostgreSQL's
// LISTEN/NOTIFY to every vault of the schema. Like a local wake-up it only
// shortens a wait: the database stays the truth, so a notification lost
// (a vault reconnecting) costs at most one poll wait, never a task.

// wakeChannel is the notification channel; a message names its schema, so
// vaults of other schemas in the database ignore it.
const wakeChannel = "lifeboat_wake"

// wakeMessage is one notification: host ids to wake, from a vault process
// (which ignores its own) of a schema.
type wakeMessage struct {
	From   string   `json:"from"`
	Schema string   `json:"schema"`
	Hosts  []string `json:"hosts"`
}

// maxWakePayload keeps a notification under PostgreSQL's 8000 bytes.
const maxWakePayload = 7000

// WakeRelay carries wake-ups between the vault processes of a database.
// On SQLite (one vault) it does nothing.
type WakeRelay struct {
	s   *Store
	id  string
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]bool // host ids to send; a set, so a burst never overflows
	ready   chan struct{}   // signalled when pending gets its first id
}

// NewWakeRelay makes the relay of this vault process.
func (s *Store) NewWakeRelay() *WakeRelay {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &WakeRelay{s: s, id: hex.EncodeToString(b), log: s.log, pending: map[string]bool{}, ready: make(chan struct{}, 1)}
}

// Publish sends a wake-up of hostID to the other vaults, without waiting.
func (r *WakeRelay) Publish(hostID string) {
	if r == nil || r.s.kind != "postgres" {
		return
	}
	r.mu.Lock()
	r.pending[hostID] = true
	r.mu.Unlock()
	select {
	case r.ready <- struct{}{}:
	default:
	}
}

// Run sends this vault's wake-ups and delivers the other vaults' to wake,
// until ctx ends; on PostgreSQL only. A lost connection is made again.
func (r *WakeRelay) Run(ctx context.Context, wake func(hostID string)) {
	if r == nil || r.s.kind != "postgres" {
		return
	}
	var schema string
	for ctx.Err() == nil {
		err := r.s.db.WithContext(ctx).Raw("SELECT current_schema()").Scan(&schema).Error
		if err == nil {
			break
		}
		r.log.Warn("wake-up relay: read the schema; trying again", slog.Any("error", err))
		sleepCtx(ctx, 5*time.Second)
	}
	go r.send(ctx, schema)
	for ctx.Err() == nil {
		err := r.listen(ctx, schema, wake)
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("wake-up relay: listening stopped; listening again (meanwhile agents of this vault may wait out their polls)", slog.Any("error", err))
		sleepCtx(ctx, time.Second)
	}
}

// send batches the pending wake-ups (gathered for 20 ms) into
// notifications.
func (r *WakeRelay) send(ctx context.Context, schema string) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.ready:
		}
		sleepCtx(ctx, 20*time.Millisecond)
		r.mu.Lock()
		hosts := make([]string, 0, len(r.pending))
		for h := range r.pending {
			hosts = append(hosts, h)
		}
		r.pending = map[string]bool{}
		r.mu.Unlock()
		for _, payload := range r.payloads(schema, hosts) {
			if err := r.s.db.WithContext(ctx).Exec("SELECT pg_notify(?, ?)", wakeChannel, payload).Error; err != nil && ctx.Err() == nil {
				r.log.Warn("wake-up relay: notify the other vaults", slog.Any("error", err))
			}
		}
	}
}

// payloads splits a batch of host ids into notifications small enough.
func (r *WakeRelay) payloads(schema string, hosts []string) []string {
	var out []string
	seen := map[string]bool{}
	msg := wakeMessage{From: r.id, Schema: schema}
	size := 0
	flush := func() {
		if len(msg.Hosts) > 0 {
			b, _ := json.Marshal(msg)
			out = append(out, string(b))
		}
		msg.Hosts, size = nil, 0
	}
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		if size+len(h)+3 > maxWakePayload-len(schema)-64 {
			flush()
		}
		msg.Hosts = append(msg.Hosts, h)
		size += len(h) + 3
	}
	flush()
	return out
}

// listen holds a connection of its own in LISTEN and wakes the hosts the
// other vaults of the schema name.
func (r *WakeRelay) listen(ctx context.Context, schema string, wake func(hostID string)) error {
	db, err := r.s.db.DB()
	if err != nil {
		return err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("the PostgreSQL driver's connection is a %T, not pgx's", dc)
		}
		pc := sc.Conn()
		if _, err := pc.Exec(ctx, "LISTEN "+wakeChannel); err != nil {
			return err
		}
		for {
			// A quiet connection is checked every 30 s: one cut without a
			// word (a database failover) would otherwise wait for TCP to
			// give up, and every relayed wake-up meanwhile be lost.
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			n, err := pc.WaitForNotification(wctx)
			cancel()
			if err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)) {
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				_, perr := pc.Exec(pctx, "SELECT 1")
				pcancel()
				if perr == nil {
					continue
				}
				err = perr
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// The connection is not usable any more: database/sql drops a
				// connection whose Raw function returns driver.ErrBadConn.
				return errors.Join(err, driver.ErrBadConn)
			}
			var m wakeMessage
			if json.Unmarshal([]byte(n.Payload), &m) != nil || m.Schema != schema || m.From == r.id {
				continue
			}
			for _, h := range m.Hosts {
				wake(h)
			}
		}
	})
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
