package models_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/models/storetest"
)

// openStore opens a store as the vault does, returning its error.
func openStore(t *testing.T, dsn string, clock *storetest.Clock) (*models.Store, error) {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	sealer, err := models.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	// Within a minute: a vault waiting for a migration lock never let go
	// of fails the test rather than hanging it.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := models.Open(ctx, models.Options{DSN: dsn, Sealer: sealer, Now: clock.Now, BcryptCost: bcrypt.MinCost, Location: time.UTC})
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// rawOpen is a plain connection to dsn, without the store (nor its
// migrations).
func rawOpen(t *testing.T, dsn string) *gorm.DB {
	h := &harness{dsn: dsn}
	return h.rawDB(t)
}

func kindOf(dsn string) string {
	if models.IsPostgres(dsn) {
		return "postgres"
	}
	return "sqlite"
}

// eachPreviousRelease runs test once per backend on a database that the
// previous release (the vault of commit e50ba32, before versioned
// migrations) made and filled, opened by this vault.
func eachPreviousRelease(t *testing.T, test func(t *testing.T, h *harness)) {
	t.Helper()
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			loadPreviousRelease(t, dsn)
			clock := storetest.NewClock()
			clock.T = time.Date(2026, 3, 9, 11, 15, 0, 0, time.UTC) // the fixture's last change was at 11:12
			test(t, &harness{s: storetest.Open(t, dsn, clock), clock: clock, dsn: dsn})
		})
	}
}

func loadPreviousRelease(t *testing.T, dsn string) {
	t.Helper()
	script, err := os.ReadFile(filepath.Join("testdata", "e50ba32-"+kindOf(dsn)+".sql"))
	if err != nil {
		t.Fatal(err)
	}
	if err := rawOpen(t, dsn).Exec(string(script)).Error; err != nil {
		t.Fatalf("load the previous release's database: %v", err)
	}
}

type versionRow struct {
	Version int
	Name    string
}

func appliedVersions(t *testing.T, db *gorm.DB) []versionRow {
	t.Helper()
	var rows []versionRow
	must(t, db.Table("schema_migrations").Order("version").Find(&rows).Error)
	return rows
}

func wantAllVersions(t *testing.T, dsn string) {
	t.Helper()
	names, err := models.Migrations(kindOf(dsn))
	if err != nil {
		t.Fatal(err)
	}
	rows := appliedVersions(t, rawOpen(t, dsn))
	if len(rows) != len(names) {
		t.Fatalf("schema_migrations holds %+v, want versions 1 to %d (%v) once each", rows, len(names), names)
	}
	for i, r := range rows {
		if r.Version != i+1 || r.Name != names[i] {
			t.Fatalf("schema_migrations holds %+v, want %v", rows, names)
		}
	}
}

func TestAVaultOfThePreviousReleaseIsStampedMigratedAndItsDataStillRead(t *testing.T) {
	eachPreviousRelease(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		wantAllVersions(t, h.dsn)
		vms, _, err := h.s.ListVMs(ctx, models.VMFilter{}, models.Page{})
		if err != nil || len(vms) != 2 {
			t.Fatalf("VMs %+v %v", vms, err)
		}
		var web models.VMSummary
		for _, vm := range vms {
			if vm.ExternalID == "web" {
				web = vm
			}
		}
		p, err := h.s.GetProtection(ctx, web.ID)
		if err != nil || p.State != models.StateProtected || p.ReplicaKey != web.ID || p.BytesSent == 0 {
			t.Fatalf("protection %+v %v", p, err)
		}
		if points, _ := listPoints(t, h, web.ID); len(points) != 2 {
			t.Fatalf("%d recovery points, want the 2 the previous release made", len(points))
		}
		jobs, _, err := h.s.ListJobs(ctx, models.JobFilter{State: models.JobSucceeded}, models.Page{})
		if err != nil || len(jobs) != 1 || len(jobs[0].Steps) != 4 {
			t.Fatalf("jobs %+v %v", jobs, err)
		}
		if _, err := h.s.Authenticate(ctx, "olivia", "correct horse battery"); err != nil {
			t.Fatalf("the previous release's user logs in: %v", err)
		}
		plans, _, err := h.s.ListPlans(ctx, models.Page{})
		if err != nil || len(plans) != 1 {
			t.Fatalf("plans %+v %v", plans, err)
		}
		if plan, err := h.s.GetPlan(ctx, plans[0].ID); err != nil || len(plan.Groups) != 1 || len(plan.Groups[0].VMs) != 1 || len(plan.Groups[0].Actions) != 1 {
			t.Fatalf("plan %+v %v", plan, err)
		}
		alerts, _, err := h.s.ListAlerts(ctx, models.AlertFilter{State: models.AlertActive}, models.Page{})
		if err != nil || len(alerts) != 1 {
			t.Fatalf("alerts %+v %v", alerts, err)
		}
		if events, _, err := h.s.ListAudit(ctx, models.AuditFilter{}, models.Page{}); err != nil || len(events) < 10 {
			t.Fatalf("%d audit events, %v", len(events), err)
		}
		// And the vault goes on: the cycle the previous release queued is
		// leased and lands a third point.
		host := vms[0].HostID
		cycle := leaseOne(t, h, host, agentproto.TaskReplicate)
		complete(t, h, host, cycle, cycleResult(cycle, h.clock.T))
		if points, _ := listPoints(t, h, web.ID); len(points) != 3 {
			t.Fatalf("%d recovery points after a cycle", len(points))
		}
		// Started again, it finds nothing left to migrate.
		storetest.Open(t, h.dsn, h.clock)
		wantAllVersions(t, h.dsn)
	})
}

// A vault upgraded from the previous release and a new one have one
// schema: version 1 is exactly what the previous release made.
func TestAnUpgradedDatabaseHasTheSchemaOfANewOne(t *testing.T) {
	eachPreviousRelease(t, func(t *testing.T, h *harness) {
		var fresh string
		for _, b := range storetest.Backends() {
			if b.Name == kindOf(h.dsn) {
				fresh = b.DSN(t)
			}
		}
		storetest.Open(t, fresh, h.clock)
		upgraded, made := describeSchema(t, h.rawDB(t), models.IsPostgres(h.dsn)), describeSchema(t, rawOpen(t, fresh), models.IsPostgres(h.dsn))
		if onlyUpgraded, onlyNew := schemaDiff(upgraded, made); len(onlyUpgraded)+len(onlyNew) > 0 {
			t.Fatalf("the upgraded database differs from a new one.\nOnly upgraded:\n  %s\nOnly new:\n  %s",
				strings.Join(onlyUpgraded, "\n  "), strings.Join(onlyNew, "\n  "))
		}
	})
}

// The drift guard: after every migration the schema is the one the GORM
// models describe. A field or index added to schema.go without a migration
// (or a migration without its model) fails here, saying what to add.
func TestTheMigratedSchemaIsWhatTheModelsDescribe(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		wantAllVersions(t, h.dsn)
		var auto string
		for _, b := range storetest.Backends() {
			if b.Name == kindOf(h.dsn) {
				auto = b.DSN(t)
			}
		}
		db := rawOpen(t, auto)
		if err := db.AutoMigrate(models.AllModels()...); err != nil {
			t.Fatal(err)
		}
		migrated, models := describeSchema(t, h.rawDB(t), models.IsPostgres(h.dsn)), describeSchema(t, db, models.IsPostgres(h.dsn))
		onlyMigrated, onlyModels := schemaDiff(migrated, models)
		if len(onlyModels) > 0 {
			t.Errorf("the models (schema.go) describe what no migration makes: add a migration to models/migrations/%s (and its twin for the other database) that makes:\n  %s",
				kindOf(h.dsn), strings.Join(onlyModels, "\n  "))
		}
		if len(onlyMigrated) > 0 {
			t.Errorf("the migrations make what the models (schema.go) do not describe: change the models to match, or add a migration that removes:\n  %s",
				strings.Join(onlyMigrated, "\n  "))
		}
	})
}

func TestANewDatabaseGetsEveryMigrationOnceAndAgainNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		wantAllVersions(t, h.dsn)
		storetest.Open(t, h.dsn, h.clock)
		wantAllVersions(t, h.dsn)
	})
}

func TestBothDatabasesHaveTheSameMigrations(t *testing.T) {
	lite, err := models.Migrations("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := models.Migrations("postgres")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(lite, " ") != strings.Join(pg, " ") || len(lite) < 2 {
		t.Fatalf("SQLite's migrations %v, PostgreSQL's %v: each migration has its twin, of the same number and name", lite, pg)
	}
	// The baseline check reads version 1's tables, columns and indexes from
	// its SQL: it must find them all, the same on both.
	lt, li := models.BaselineTables("sqlite")
	pt, pi := models.BaselineTables("postgres")
	if len(lt) != len(models.AllModels()) || len(li) < 40 || len(pi) != len(li) || len(pt) != len(lt) {
		t.Fatalf("version 1: %d tables (%d models), %d and %d indexes", len(lt), len(models.AllModels()), len(li), len(pi))
	}
	for table, cols := range lt {
		if len(cols) == 0 || strings.Join(cols, ",") != strings.Join(pt[table], ",") {
			t.Errorf("table %s: SQLite's columns %v, PostgreSQL's %v", table, cols, pt[table])
		}
	}
}

func wantSchemaError(t *testing.T, err error, code string, says ...string) {
	t.Helper()
	var se *models.SchemaError
	if !errors.As(err, &se) || se.Code != code {
		t.Fatalf("open: %v (%T), want a schema error %s", err, err, code)
	}
	for _, s := range append(says, code) {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("the error does not say %q: %v", s, err)
		}
	}
}

func TestAVaultRefusesASchemaNewerThanItself(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		names, _ := models.Migrations(kindOf(h.dsn))
		n := len(names)
		must(t, h.rawDB(t).Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from_a_later_vault', ?)", n+1, h.clock.T).Error)
		_, err := openStore(t, h.dsn, h.clock)
		wantSchemaError(t, err, agentproto.CodeSchemaTooNew, "version "+strconv.Itoa(n+1), "knows up to version "+strconv.Itoa(n), "restore a backup")
		// Nothing was changed: the later vault still finds its schema.
		if rows := appliedVersions(t, h.rawDB(t)); len(rows) != n+1 {
			t.Fatalf("schema_migrations %+v", rows)
		}
	})
}

func TestAVaultRefusesASchemaOfAnotherBuild(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		must(t, h.rawDB(t).Exec("UPDATE schema_migrations SET name = 'a_fork_s_change' WHERE version = 1").Error)
		_, err := openStore(t, h.dsn, h.clock)
		wantSchemaError(t, err, agentproto.CodeSchemaDiverged, "a_fork_s_change", "another build")
	})
}

func TestADatabaseWithSomeVaultTablesButNotTheBaselineIsRefused(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			must(t, rawOpen(t, dsn).Exec("CREATE TABLE sites (id varchar(40) PRIMARY KEY, name varchar(100))").Error)
			_, err := openStore(t, dsn, storetest.NewClock())
			wantSchemaError(t, err, agentproto.CodeSchemaUnrecognized, "table alerts", "column sites.created_at", "--db")
			if rawOpen(t, dsn).Migrator().HasTable("schema_migrations") || rawOpen(t, dsn).Migrator().HasTable("hosts") {
				t.Fatal("a refused database was changed")
			}
		})
	}
}

// Several vaults starting at once on one database: one migrates, the
// others wait for it and find nothing left to do.
func TestVaultsStartingAtOnceOnOneDatabaseMigrateItOnce(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			clock := storetest.NewClock()
			var wg sync.WaitGroup
			errs := make([]error, 4)
			start := make(chan struct{})
			for i := range errs {
				wg.Go(func() {
					<-start
					_, errs[i] = openStore(t, dsn, clock)
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("vault %d: %v", i, err)
				}
			}
			wantAllVersions(t, dsn)
			if models.IsPostgres(dsn) {
				// The vaults, still open, let go of the migration lock.
				var free bool
				must(t, rawOpen(t, dsn).Raw("SELECT pg_try_advisory_lock(1935894637, hashtext(current_schema()))").Scan(&free).Error)
				if !free {
					t.Fatal("a vault kept the migration lock after its start")
				}
			}
		})
	}
}

// A vault that runs while a newer one migrates the database (a rolling
// upgrade on PostgreSQL) stops leading: its scheduler must not write by
// the older schema. The lead goes to a vault that knows the schema.
func TestARunningVaultWhoseDatabaseANewerVaultMigratedStopsLeading(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		old := h.s.Leadership()
		if ok, err := old.Lead(t.Context()); !ok || err != nil {
			t.Fatalf("lead: %v %v", ok, err)
		}
		names, _ := models.Migrations(kindOf(h.dsn))
		must(t, h.rawDB(t).Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from_a_later_vault', ?)", len(names)+1, h.clock.T).Error)
		ok, err := old.Lead(t.Context())
		wantSchemaError(t, err, agentproto.CodeSchemaTooNew)
		if ok {
			t.Fatal("a vault leads on a schema newer than itself")
		}
		wantSchemaError(t, h.s.CheckSchema(t.Context()), agentproto.CodeSchemaTooNew)
		// It let go of the lock: a vault that knows the schema (here, the
		// row gone again) takes the lead while the old one still runs.
		must(t, h.rawDB(t).Exec("DELETE FROM schema_migrations WHERE version = ?", len(names)+1).Error)
		other := storetest.Open(t, h.dsn, h.clock).Leadership()
		if ok, err := other.Lead(t.Context()); !ok || err != nil {
			t.Fatalf("another vault's lead: %v %v", ok, err)
		}
		other.Release()
	})
}
