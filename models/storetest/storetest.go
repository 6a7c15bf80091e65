// Package storetest opens real databases for tests: a fresh SQLite file per
// test, and — when LIFEBOAT_TEST_POSTGRES holds a URL — a fresh schema in
// that PostgreSQL database.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the PostgreSQL driver for schema set-up
	"golang.org/x/crypto/bcrypt"

	"github.com/lifeboat-dr/lifeboat/models"
)

// PostgresEnv names the variable that holds the PostgreSQL URL for tests.
const PostgresEnv = "LIFEBOAT_TEST_POSTGRES"

// Backend is one database the tests run against.
type Backend struct {
	Name string
	// DSN returns a DSN for a fresh, empty database for t.
	DSN func(t testing.TB) string
}

// Backends lists SQLite always and PostgreSQL when configured.
func Backends() []Backend {
	out := []Backend{{Name: "sqlite", DSN: SQLiteDSN}}
	if os.Getenv(PostgresEnv) != "" {
		out = append(out, Backend{Name: "postgres", DSN: PostgresDSN})
	}
	return out
}

// SQLiteDSN returns the path of a new SQLite file in t's temp dir.
func SQLiteDSN(t testing.TB) string {
	return filepath.Join(t.TempDir(), "vault.db")
}

// PostgresDSN creates a schema of its own for t (dropped at the end) and
// returns a URL whose search_path selects it.
func PostgresDSN(t testing.TB) string {
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Skip(PostgresEnv + " is not set")
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := fmt.Sprintf("t_%x", b)
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open PostgreSQL %s: %v", PostgresEnv, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema on %s: %v", PostgresEnv, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", base)
		if err == nil {
			_, _ = db.Exec("DROP SCHEMA " + schema + " CASCADE")
			db.Close()
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", PostgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Clock is a settable clock for tests.
type Clock struct{ T time.Time }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return c.T }

// Open opens a store on dsn with a fixed clock and a fast bcrypt cost.
func Open(t testing.TB, dsn string, clock *Clock) *models.Store {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	sealer, err := models.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := models.Open(context.Background(), models.Options{DSN: dsn, Sealer: sealer, Now: clock.Now, BcryptCost: bcrypt.MinCost, Location: time.UTC})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// NewClock starts a clock at a fixed instant.
func NewClock() *Clock {
	return &Clock{T: time.Date(2026, 3, 9, 10, 0, 0, 0, time.UTC)}
}

// Name makes a test-friendly unique suffix.
func Name(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return strings.ToLower(fmt.Sprintf("%s-%x", prefix, b))
}
