package models

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strconv"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// The schema changes only through migrations: numbered SQL files, one set
// per database (migrations/sqlite, migrations/postgres), applied in order,
// each in a transaction of its own together with its row in
// schema_migrations, so a migration is applied whole or not at all. Version
// 1 is the schema the vault had before versions (GORM's AutoMigrate, up to
// commit e50ba32): a database of that vault has its tables but no
// schema_migrations; it is checked against version 1 and stamped with it.
//
// A vault never runs on a schema newer than it knows: a database migrated
// by a later vault (or by another build) is refused at start, since this
// binary's queries may misread what the later one wrote.
//
// To change the schema: add NNNN_what.sql to both folders, change the
// models in schema.go to agree, and run the models tests; the schema test
// compares the migrated database with the models and says what differs.
// Never edit a migration that a vault may have applied.

//go:embed migrations
var migrationFiles embed.FS

// migration is one step of the schema.
type migration struct {
	Version int
	Name    string
	SQL     string
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// migrationsFor lists the migrations of a database kind ("sqlite" or
// "postgres"), in order; their versions run 1, 2, 3… without a gap.
func migrationsFor(kind string) ([]migration, error) {
	dir := path.Join("migrations", kind)
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %s/%s is not named NNNN_name.sql", dir, e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		if v != len(out)+1 {
			return nil, fmt.Errorf("migration file %s/%s: version %d follows %d", dir, e.Name(), v, len(out))
		}
		b, err := fs.ReadFile(migrationFiles, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{Version: v, Name: m[2], SQL: string(b)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no migrations in %s", dir)
	}
	return out, nil
}

// versionTable records each migration applied.
var versionTable = map[string]string{
	"sqlite":   "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at datetime NOT NULL)",
	"postgres": "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name varchar(200) NOT NULL, applied_at timestamptz NOT NULL)",
}

// appliedMigration is a row of schema_migrations.
type appliedMigration struct {
	Version   int
	Name      string
	AppliedAt time.Time
}

// Several vaults may start at once on one PostgreSQL database: a session
// advisory lock lets one migrate while the others wait, then find nothing
// left to do. The keys: "schm" in ASCII (the leader's lock is "life"), and
// the vault's schema, as for leadership (leader.go).
const (
	migrateTryLock = "SELECT pg_try_advisory_lock(1935894637, hashtext(current_schema()))"
	migrateLock    = "SELECT pg_advisory_lock(1935894637, hashtext(current_schema()))"
	migrateUnlock  = "SELECT pg_advisory_unlock(1935894637, hashtext(current_schema()))"
)

// migrate brings the schema up to date, or refuses a schema this vault does
// not know.
func (s *Store) migrate(ctx context.Context) error {
	list, err := migrationsFor(s.kind)
	if err != nil {
		return fmt.Errorf("migrate database schema: %w", err)
	}
	s.migrations = list
	err = s.db.WithContext(ctx).Connection(func(conn *gorm.DB) error {
		if s.kind == "postgres" {
			unlock, err := s.lockMigrations(conn)
			if err != nil {
				return err
			}
			defer unlock()
		}
		// One step a transaction, each reading the state anew: on SQLite
		// the transaction's write lock (taken at BEGIN) is what keeps a
		// second process from applying the same step.
		for {
			done, err := s.migrateStep(conn.Session(&gorm.Session{NewDB: true}), list)
			if err != nil || done {
				return err
			}
		}
	})
	if se := (*SchemaError)(nil); errors.As(err, &se) {
		return se // says all: the vault's start prints it as it is
	}
	if err != nil {
		return fmt.Errorf("migrate database schema: %w", err)
	}
	// Not a schema change but a repair of rows an earlier vault left: it
	// finds nothing to do once done (replicakeys.go).
	if err := s.migrateReplicaKeys(ctx); err != nil {
		return fmt.Errorf("migrate replica keys: %w", err)
	}
	return nil
}

// CheckSchema says whether the database's schema is still one this vault
// runs on: a *SchemaError when another vault (a newer one, on a shared
// PostgreSQL database) migrated it since this one started. The leader
// gives up the lead on it, and the health check answers 503, so that the
// old vault stops scheduling and a load balancer stops sending it users.
func (s *Store) CheckSchema(ctx context.Context) error {
	var rows []appliedMigration
	if err := s.db.WithContext(ctx).Table("schema_migrations").Order("version").Find(&rows).Error; err != nil {
		return fmt.Errorf("read the schema version: %w", err)
	}
	return checkApplied(rows, s.migrations)
}

// lockMigrations takes the migration lock on conn, waiting (and saying so)
// while another vault holds it. The lock is the session's: unlock must
// run, whatever ctx became, or the pooled connection would keep it.
func (s *Store) lockMigrations(conn *gorm.DB) (unlock func(), err error) {
	var got bool
	if err := conn.Session(&gorm.Session{NewDB: true}).Raw(migrateTryLock).Scan(&got).Error; err != nil {
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	if !got {
		s.log.Info("another vault is migrating the database schema: waiting for it")
		if err := conn.Session(&gorm.Session{NewDB: true}).Exec(migrateLock).Error; err != nil {
			return nil, fmt.Errorf("migration lock: %w", err)
		}
	}
	return func() {
		var released bool
		err := conn.Session(&gorm.Session{NewDB: true, Context: context.Background()}).Raw(migrateUnlock).Scan(&released).Error
		if err != nil || !released {
			s.log.Warn("the migration lock was not released; it goes with its connection", "error", err)
		}
	}, nil
}

// migrateStep applies the next step in a transaction of its own, and says
// whether the schema was up to date already.
func (s *Store) migrateStep(db *gorm.DB, list []migration) (done bool, err error) {
	latest := list[len(list)-1]
	start := time.Now()
	var applied migration
	err = db.Transaction(func(tx *gorm.DB) error {
		versioned := tx.Migrator().HasTable("schema_migrations")
		var rows []appliedMigration
		if versioned {
			if err := tx.Table("schema_migrations").Order("version").Find(&rows).Error; err != nil {
				return err
			}
		}
		if err := checkApplied(rows, list); err != nil {
			return err
		}
		if len(rows) == len(list) {
			done = true
			return nil
		}
		next := list[len(rows)]
		if !versioned {
			if err := tx.Exec(versionTable[s.kind]).Error; err != nil {
				return err
			}
			if preVersioning(tx, list[0]) {
				// The previous release's database: its tables are version 1
				// if they have all of version 1's columns and indexes.
				if err := checkBaseline(tx, list[0]); err != nil {
					return err
				}
				s.log.Info("the database is of the vault before versioned migrations: its schema is stamped version 1")
				return stamp(tx, list[0], s.Now())
			}
		}
		if err := tx.Exec(next.SQL).Error; err != nil {
			return fmt.Errorf("migration %d (%s): %w", next.Version, next.Name, err)
		}
		applied = next
		return stamp(tx, next, s.Now())
	})
	if err == nil && applied.Version > 0 {
		s.log.Info("database schema migrated", "version", applied.Version, "name", applied.Name, "latest", latest.Version,
			"took", time.Since(start).Round(time.Millisecond))
	}
	return done, err
}

func stamp(tx *gorm.DB, m migration, now time.Time) error {
	return tx.Table("schema_migrations").Create(&appliedMigration{Version: m.Version, Name: m.Name, AppliedAt: now}).Error
}

// checkApplied refuses a database whose migrations are not a beginning of
// this vault's list: one migrated by a later vault, or by another build
// whose migration of the same number is another one.
func checkApplied(applied []appliedMigration, list []migration) error {
	latest := list[len(list)-1]
	for i, a := range applied {
		if a.Version > latest.Version {
			last := applied[len(applied)-1]
			return &SchemaError{Code: agentproto.CodeSchemaTooNew, Message: fmt.Sprintf(
				"database schema is version %d (%s), this vault binary knows up to version %d (%s): a newer lifeboat-vault migrated it. "+
					"Run that newer lifeboat-vault (or later), or restore a backup taken with this version; the vault does not start on a schema newer than itself",
				last.Version, last.Name, latest.Version, latest.Name)}
		}
		if a.Version != i+1 || a.Name != list[i].Name {
			return &SchemaError{Code: agentproto.CodeSchemaDiverged, Message: fmt.Sprintf(
				"database schema version %d is %q, which this vault binary does not know (its version %d is %q): another build of lifeboat-vault migrated it. "+
					"Run the build that migrated it, or restore a backup taken with this version",
				a.Version, a.Name, list[i].Version, list[i].Name)}
		}
	}
	return nil
}
