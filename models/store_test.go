package models_test

import (
	"crypto/rand"
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/models/storetest"
)

// alice is the actor of the tests' changes.
var alice = models.Actor{UserID: "user_alice", Username: "alice", RequestID: "req-42", RemoteAddr: "192.0.2.7"}

// harness is one fresh database with its store and clock.
type harness struct {
	s     *models.Store
	clock *storetest.Clock
	dsn   string
	raw   *gorm.DB
}

// eachBackend runs test once per database backend, each on a fresh database.
func eachBackend(t *testing.T, test func(t *testing.T, h *harness)) {
	t.Helper()
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			clock := storetest.NewClock()
			h := &harness{s: storetest.Open(t, dsn, clock), clock: clock, dsn: dsn}
			test(t, h)
		})
	}
}

// rawDB is a second connection to the test database, for rows no Store
// method writes yet (protections, alerts) and for counting rows the Store
// does not show.
func (h *harness) rawDB(t *testing.T) *gorm.DB {
	t.Helper()
	if h.raw != nil {
		return h.raw
	}
	var dialector gorm.Dialector
	if models.IsPostgres(h.dsn) {
		dialector = postgres.Open(h.dsn)
	} else {
		dialector = sqlite.Open("file:" + h.dsn + "?_busy_timeout=10000&_foreign_keys=on")
	}
	db, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("open a second connection: %v", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqlDB.Close() })
	h.raw = db
	return db
}

// countRows counts the rows of a table through the second connection.
func (h *harness) countRows(t *testing.T, model any, where string, args ...any) int64 {
	t.Helper()
	var n int64
	q := h.rawDB(t).Model(model)
	if where != "" {
		q = q.Where(where, args...)
	}
	if err := q.Count(&n).Error; err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return n
}

func (h *harness) advance(d time.Duration) { h.clock.T = h.clock.T.Add(d) }

func mustSite(t *testing.T, h *harness, name string) *models.Site {
	t.Helper()
	st := &models.Site{Name: name}
	if err := h.s.CreateSite(t.Context(), alice, st); err != nil {
		t.Fatalf("create site %q: %v", name, err)
	}
	return st
}

func mustHost(t *testing.T, h *harness, siteID, name, state string) *models.Host {
	t.Helper()
	host := &models.Host{SiteID: siteID, Name: name, State: state}
	if err := h.s.CreateHost(t.Context(), alice, host); err != nil {
		t.Fatalf("create host %q: %v", name, err)
	}
	return host
}

func mustPolicy(t *testing.T, h *harness, name string) *models.Policy {
	t.Helper()
	p := models.DefaultPolicy()
	p.Name = name
	if err := h.s.CreatePolicy(t.Context(), alice, &p); err != nil {
		t.Fatalf("create policy %q: %v", name, err)
	}
	return &p
}

func mustDirectoryTarget(t *testing.T, h *harness, name string) *models.Target {
	t.Helper()
	tg, err := h.s.CreateTarget(t.Context(), alice, models.TargetInput{Name: name, Kind: models.TargetDirectory, Path: "/srv/lifeboat/" + name})
	if err != nil {
		t.Fatalf("create target %q: %v", name, err)
	}
	return tg
}

func mustUser(t *testing.T, h *harness, username, role string) *models.User {
	t.Helper()
	u, err := h.s.CreateUser(t.Context(), alice, models.UserInput{Username: username, Password: "correct horse battery", Role: role})
	if err != nil {
		t.Fatalf("create user %q: %v", username, err)
	}
	return u
}

// mustVMs reports VMs named after externalIDs (one 1 GiB disk each) on a
// host and returns them keyed by external id.
func mustVMs(t *testing.T, h *harness, hostID string, externalIDs ...string) map[string]models.VMSummary {
	t.Helper()
	reports := make([]models.VMReport, 0, len(externalIDs))
	for _, id := range externalIDs {
		reports = append(reports, models.VMReport{ExternalID: id, Name: "vm " + id, PowerState: models.PowerRunning,
			Disks: []models.DiskReport{{Path: "/var/lib/vms/" + id + ".qcow2", SizeBytes: 1 << 30, Format: "qcow2"}}})
	}
	if err := h.s.ReportInventory(t.Context(), hostID, reports); err != nil {
		t.Fatalf("report inventory: %v", err)
	}
	return vmsOfHost(t, h, hostID)
}

func vmsOfHost(t *testing.T, h *harness, hostID string) map[string]models.VMSummary {
	t.Helper()
	vms, _, err := h.s.ListVMs(t.Context(), models.VMFilter{HostID: hostID}, models.Page{Limit: models.MaxPageSize})
	if err != nil {
		t.Fatalf("list VMs: %v", err)
	}
	out := map[string]models.VMSummary{}
	for _, vm := range vms {
		out[vm.ExternalID] = vm
	}
	return out
}

// insertProtection writes a protection row directly: the Store has no method
// that creates one yet.
func insertProtection(t *testing.T, h *harness, vmID, policyID, targetID, health string) {
	t.Helper()
	p := models.Protection{ID: models.NewID("prot"), VMID: vmID, PolicyID: policyID, TargetID: targetID,
		State: models.StateProtected, Health: health, HealthReasons: `["test reason"]`}
	if err := h.rawDB(t).Create(&p).Error; err != nil {
		t.Fatalf("insert protection: %v", err)
	}
}

// wantFields asserts err is a *ValidationError naming exactly fields.
func wantFields(t *testing.T, err error, fields ...string) {
	t.Helper()
	var ve *models.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error = %v (%T), want a *models.ValidationError on %v", err, err, fields)
	}
	var got []string
	for _, f := range ve.Fields {
		if f.Reason == "" {
			t.Errorf("field %q has no reason", f.Field)
		}
		if !slices.Contains(got, f.Field) {
			got = append(got, f.Field)
		}
	}
	sort.Strings(got)
	want := slices.Clone(fields)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("invalid fields = %v, want %v (error: %v)", got, want, err)
	}
}

// wantConflict asserts err is a *ConflictError with code.
func wantConflict(t *testing.T, err error, code string) {
	t.Helper()
	var ce *models.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("error = %v (%T), want a *models.ConflictError %q", err, err, code)
	}
	if ce.Code != code {
		t.Fatalf("conflict code = %q, want %q (%v)", ce.Code, code, ce)
	}
	if ce.Message == "" {
		t.Errorf("conflict %q has no message", code)
	}
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, models.ErrNotFound) {
		t.Errorf("%s: error = %v, want models.ErrNotFound", what, err)
	}
}

// auditEvents lists every audit event with action (all objects), newest first.
func auditEvents(t *testing.T, h *harness, action string) []models.AuditEvent {
	t.Helper()
	evs, _, err := h.s.ListAudit(t.Context(), models.AuditFilter{Action: action}, models.Page{Limit: models.MaxPageSize})
	if err != nil {
		t.Fatalf("list audit: %v", err)
	}
	return evs
}

// wantAudit asserts exactly one audit event with action names objectID.
func wantAudit(t *testing.T, h *harness, action, objectID string) models.AuditEvent {
	t.Helper()
	evs, _, err := h.s.ListAudit(t.Context(), models.AuditFilter{Action: action, ObjectID: objectID}, models.Page{})
	if err != nil {
		t.Fatalf("list audit: %v", err)
	}
	if len(evs) != 1 {
		t.Fatalf("audit events %q on %s = %d, want 1", action, objectID, len(evs))
	}
	ev := evs[0]
	if ev.Action != action || ev.ObjectID != objectID {
		t.Fatalf("audit event = %s on %s, want %s on %s", ev.Action, ev.ObjectID, action, objectID)
	}
	return ev
}

func wantNoAudit(t *testing.T, h *harness, action string) {
	t.Helper()
	if evs := auditEvents(t, h, action); len(evs) != 0 {
		t.Fatalf("audit events %q = %d, want none after a refused change", action, len(evs))
	}
}

func TestOpenRefusesMissingSealerAndEmptyPath(t *testing.T) {
	if _, err := models.Open(t.Context(), models.Options{DSN: storetest.SQLiteDSN(t)}); err == nil {
		t.Error("Open without a sealer succeeded; secrets would have no key")
	}
	key := make([]byte, 32)
	sealer, err := models.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := models.Open(t.Context(), models.Options{DSN: "", Sealer: sealer}); err == nil {
		t.Error("Open with an empty DSN succeeded")
	}
}

func TestOpenReportsItsBackend(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		want := "sqlite"
		if models.IsPostgres(h.dsn) {
			want = "postgres"
		}
		if h.s.Kind() != want {
			t.Errorf("Kind() = %q, want %q", h.s.Kind(), want)
		}
		if err := h.s.Ping(t.Context()); err != nil {
			t.Errorf("Ping: %v", err)
		}
		if !h.s.Now().Equal(h.clock.T) {
			t.Errorf("Now() = %v, want the test clock %v", h.s.Now(), h.clock.T)
		}
	})
}

func TestOpenTwiceKeepsData(t *testing.T) {
	// Migrating an existing database must neither fail nor lose rows.
	dsn := storetest.SQLiteDSN(t)
	clock := storetest.NewClock()
	s := storetest.Open(t, dsn, clock)
	st := &models.Site{Name: "Primary"}
	if err := s.CreateSite(t.Context(), alice, st); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := storetest.Open(t, dsn, clock)
	if _, err := s2.GetSite(t.Context(), st.ID); err != nil {
		t.Fatalf("site after reopening: %v", err)
	}
}

func TestIsPostgres(t *testing.T) {
	for dsn, want := range map[string]bool{
		"postgres://u@h/db":   true,
		"postgresql://u@h/db": true,
		"/var/lib/vault.db":   false,
		"file:vault.db?x=1":   false,
	} {
		if got := models.IsPostgres(dsn); got != want {
			t.Errorf("IsPostgres(%q) = %v, want %v", dsn, got, want)
		}
	}
}

func TestNewIDIsPrefixedAndIncreasing(t *testing.T) {
	// Lists page by id and promise creation order, so ids minted in the same
	// millisecond must still increase.
	prev := models.NewID("x")
	if !strings.HasPrefix(prev, "x_") {
		t.Fatalf("NewID(x) = %q, want the prefix x_", prev)
	}
	for range 2000 {
		id := models.NewID("x")
		if id <= prev {
			t.Fatalf("NewID went backwards: %q after %q", id, prev)
		}
		prev = id
	}
}

func TestSealerRoundTripAndWrongKey(t *testing.T) {
	if _, err := models.NewSealer(make([]byte, 16)); err == nil {
		t.Error("NewSealer accepted a 16-byte key; it must be 32 bytes")
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s, err := models.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal([]byte("account-key"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "account-key") {
		t.Fatal("sealed secret contains the plaintext")
	}
	again, _ := s.Seal([]byte("account-key"))
	if string(again) == string(sealed) {
		t.Error("sealing twice gave the same bytes; the nonce must be random")
	}
	got, err := s.Open(sealed)
	if err != nil || string(got) != "account-key" {
		t.Fatalf("Open = %q, %v; want the plaintext", got, err)
	}
	other := make([]byte, 32)
	_, _ = rand.Read(other)
	s2, _ := models.NewSealer(other)
	if _, err := s2.Open(sealed); err == nil {
		t.Error("a sealer with another key opened the secret")
	}
	if _, err := s.Open(sealed[:5]); err == nil {
		t.Error("Open accepted a truncated secret")
	}
}

// pageThrough reads a list page by page and returns the size of each page
// and all ids in the order given.
func pageThrough(t *testing.T, limit int, list func(p models.Page) ([]string, string, error)) (sizes []int, ids []string) {
	t.Helper()
	cursor := ""
	for range 20 {
		page, next, err := list(models.Page{Cursor: cursor, Limit: limit})
		if err != nil {
			t.Fatalf("list page after %q: %v", cursor, err)
		}
		sizes = append(sizes, len(page))
		ids = append(ids, page...)
		if next == "" {
			return sizes, ids
		}
		if len(page) == 0 || next != page[len(page)-1] {
			t.Fatalf("next cursor %q is not the last id of its page %v", next, page)
		}
		cursor = next
	}
	t.Fatal("pagination did not end")
	return nil, nil
}

func idsOf[T any](items []T, id func(T) string) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = id(it)
	}
	return out
}
