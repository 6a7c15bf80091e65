package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/plugin/dbresolver"
)

// Store is the vault's database. GORM stays inside this package: callers get
// plain structs and the package's errors.
type Store struct {
	db     *gorm.DB
	sealer *Sealer
	now    func() time.Time
	log    *slog.Logger
	kind   string // "sqlite" or "postgres"
	// migrations are the schema versions this binary knows (migrate.go).
	migrations []migration
	zone       *time.Location

	changes *Changes // live pages' signal (notify.go)

	beats heartbeatBatch // heartbeats noted, not yet written (heartbeats.go)

	// readPool: SQLite's read-only connections beside its one writer
	// (useReadPool); nil on PostgreSQL, whose pool serves both.
	readPool *sql.DB

	bcryptCost int
	dummyOnce  sync.Once
	dummy      []byte

	// leaseExpiries counts the task leases ReapExpiredLeases found run out,
	// for monitoring.
	leaseExpiries atomic.Int64
}

// Options configure Open.
type Options struct {
	// DSN is a SQLite file path (or "file:…" URI), or a postgres:// URL.
	DSN string
	// Sealer encrypts secrets at rest (storage credentials).
	Sealer *Sealer
	// Logger receives slow queries and database errors.
	Logger *slog.Logger
	// Now is the clock; tests fix it. Defaults to time.Now.
	Now func() time.Time
	// BcryptCost hashes passwords; 0 means bcrypt.DefaultCost. Only tests
	// lower it, to stay fast.
	BcryptCost int
	// Location is the vault's time zone, in which policies' work hours and
	// resync windows are read. Defaults to time.Local (the TZ variable).
	Location *time.Location
}

// IsPostgres reports whether dsn selects PostgreSQL.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open connects to the database named by opts.DSN and brings its schema up to
// date.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sealer == nil {
		return nil, errors.New("open store: a sealer for secrets is required")
	}
	cfg := &gorm.Config{
		Logger:                 newGormLogger(opts.Logger),
		TranslateError:         true,
		NowFunc:                func() time.Time { return opts.Now().UTC() },
		SkipDefaultTransaction: true, // writes that need one open it explicitly
	}
	if opts.BcryptCost == 0 {
		opts.BcryptCost = bcrypt.DefaultCost
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	s := &Store{sealer: opts.Sealer, now: opts.Now, log: opts.Logger, bcryptCost: opts.BcryptCost, zone: opts.Location,
		changes: newChanges()}
	var err error
	if IsPostgres(opts.DSN) {
		s.kind = "postgres"
		s.db, err = gorm.Open(postgres.Open(opts.DSN), cfg)
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL: %w", err)
		}
		// Bounded: hundreds of agents' calls at once would otherwise open
		// as many connections, past the server's max_connections (100 by
		// default, shared by every vault of the database), and fail with
		// "too many clients". Calls beyond the pool wait for a connection.
		sqlDB, _ := s.db.DB()
		sqlDB.SetMaxOpenConns(postgresMaxConns)
		sqlDB.SetMaxIdleConns(postgresMaxConns)
	} else {
		s.kind = "sqlite"
		dsn, derr := sqliteDSN(opts.DSN)
		if derr != nil {
			return nil, derr
		}
		// Vaults (or a vault and a backup) opening a new file at once race
		// to switch it to WAL; the loser finds it locked for a moment.
		for attempt := 0; ; attempt++ {
			s.db, err = gorm.Open(sqlite.Open(dsn), cfg)
			if err == nil || attempt == 20 || !strings.Contains(err.Error(), "database is locked") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return nil, fmt.Errorf("open SQLite %s: %w", opts.DSN, err)
		}
		sqlDB, _ := s.db.DB()
		// SQLite allows one writer at a time. One connection serialises the
		// vault's writes inside the process instead of failing them with
		// "database is locked"; WAL keeps readers going beside it.
		sqlDB.SetMaxOpenConns(1)
		// A database file the vault names (not a "file:" URI of the
		// caller's, nor one in memory, which readers of their own would
		// not see) gets readers beside its writer.
		if !strings.HasPrefix(opts.DSN, "file:") && !strings.Contains(opts.DSN, ":memory:") {
			if err := s.useReadPool(sqliteFileDSN(opts.DSN, true)); err != nil {
				s.Close()
				return nil, err
			}
		}
	}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := registerTransitionGuard(s.db); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := s.registerChangeSignal(s.db); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// ownerOnly creates the SQLite database file readable by its owner only
// (it holds password and token hashes and sealed storage credentials), or
// makes an existing one so: earlier vaults created it 0644. SQLite gives
// the -wal and -shm files it creates the database file's mode; ones left
// by an earlier vault are tightened too.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open SQLite %s: %w", path, err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, fi.Mode().Perm()&^0o077); err != nil {
				return fmt.Errorf("make %s readable by its owner only: %w", p, err)
			}
		}
	}
	return nil
}

// sqliteDSN turns a path into a mattn/go-sqlite3 DSN with WAL, a busy timeout,
// foreign keys on, and immediate transactions (so a transaction that will
// write takes the lock at BEGIN rather than failing half-way).
func sqliteDSN(path string) (string, error) {
	if path == "" {
		return "", errors.New("open SQLite: empty database path")
	}
	if strings.HasPrefix(path, "file:") {
		return path, nil
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("create database directory %s: %w", dir, err)
		}
	}
	if err := ownerOnly(path); err != nil {
		return "", err
	}
	return sqliteFileDSN(path, false), nil
}

// sqliteFileDSN is the DSN of the database file at path: for the writer,
// or (readOnly) for a reader beside it, whose transactions take no lock
// at BEGIN and which may not write.
func sqliteFileDSN(path string, readOnly bool) string {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_busy_timeout", "10000")
	q.Set("_foreign_keys", "on")
	q.Set("_txlock", "immediate")
	q.Set("_synchronous", "NORMAL")
	if readOnly {
		q.Set("_txlock", "deferred")
		q.Set("_query_only", "true")
	}
	return "file:" + path + "?" + q.Encode()
}

// Kind is "sqlite" or "postgres".
func (s *Store) Kind() string { return s.kind }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("database unreachable: %w", err)
	}
	return nil
}

// Close releases the database connections.
func (s *Store) Close() error {
	if s.readPool != nil {
		s.readPool.Close()
	}
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// postgresMaxConns bounds one vault's connections to PostgreSQL, the
// leader's lock and the wake-up relay's LISTEN included: three vaults
// stay under the server's default max_connections of 100.
const postgresMaxConns = 25

// readPoolSize is how many connections read SQLite beside its writer.
const readPoolSize = 4

// useReadPool sends the reads made outside a transaction (the agents'
// identification on every call, the portal's and the API's pages, the
// scheduler's search for due cycles) to a pool of read-only connections,
// so that they never wait behind the one writer. In WAL mode a reader
// sees every transaction committed before it began. Transactions, and so
// every read that decides a write, stay on the writer's connection.
func (s *Store) useReadPool(readDSN string) error {
	pool, err := sql.Open("sqlite3", readDSN)
	if err != nil {
		return fmt.Errorf("open SQLite readers: %w", err)
	}
	pool.SetMaxOpenConns(readPoolSize)
	pool.SetMaxIdleConns(readPoolSize)
	s.readPool = pool
	err = s.db.Use(dbresolver.Register(dbresolver.Config{
		Replicas: []gorm.Dialector{&sqlite.Dialector{Conn: pool}},
		// Reads after writes see them: SQLite commits before it returns.
		TraceResolverMode: false,
	}))
	if err != nil {
		return fmt.Errorf("open SQLite readers: %w", err)
	}
	return nil
}

// loc is the vault's time zone for wall-clock rules.
func (s *Store) loc() *time.Location { return s.zone }

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.now().UTC() }

// tx runs fn in a transaction; a returned error rolls everything back, so a
// failed write leaves nothing half-written.
func (s *Store) tx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return translateError(s.inTx(ctx, fn))
}
