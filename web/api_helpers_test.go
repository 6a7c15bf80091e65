package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
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

// apiVault is a test vault with a second database connection, for the rows
// no Store method writes yet (protections, alerts).
type apiVault struct {
	*testVault
	raw *gorm.DB
}

// forEachAPIBackend is forEachBackend keeping the database's address.
func forEachAPIBackend(t *testing.T, fn func(t *testing.T, av *apiVault)) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) { fn(t, newAPIVault(t, b.DSN(t))) })
	}
}

func newAPIVault(t *testing.T, dsn string) *apiVault {
	t.Helper()
	if dsn == "" {
		dsn = storetest.SQLiteDSN(t)
	}
	tv := newTestVault(t, dsn)
	dialector := sqlite.Open("file:" + dsn + "?_busy_timeout=10000&_foreign_keys=on")
	if models.IsPostgres(dsn) {
		dialector = postgres.Open(dsn)
	}
	db, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("open a second connection: %v", err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return &apiVault{testVault: tv, raw: db}
}

// seeded names what seedInventory made.
type seeded struct {
	site, otherSite, host, protectedVM, unprotectedVM, failedJob, runningJob, activeAlert string
}

// seedInventory makes a site with a connected host running two VMs, one of
// them protected (health Warning, last recovery point 90 s ago), two jobs
// and two alerts. raw may be nil: then there is no protection and no alert.
func seedInventory(t *testing.T, tv *testVault, raw *gorm.DB) seeded {
	t.Helper()
	ctx := context.Background()
	a := models.SystemActor
	var out seeded
	paris, lyon := &models.Site{Name: "Paris"}, &models.Site{Name: "Lyon"}
	for _, s := range []*models.Site{paris, lyon} {
		if err := tv.Store.CreateSite(ctx, a, s); err != nil {
			t.Fatal(err)
		}
	}
	out.site, out.otherSite = paris.ID, lyon.ID
	beat := tv.Clock.T.Add(-10 * time.Second)
	host := &models.Host{SiteID: paris.ID, Name: "hv1", State: models.HostConnected, AgentVersion: "1.2.3", Driver: "qemu", LastHeartbeat: &beat}
	if err := tv.Store.CreateHost(ctx, a, host); err != nil {
		t.Fatal(err)
	}
	out.host = host.ID
	err := tv.Store.ReportInventory(ctx, host.ID, []models.VMReport{
		{ExternalID: "web", Name: "web", PowerState: models.PowerRunning, Disks: []models.DiskReport{{Path: "/vms/web.img", SizeBytes: 1 << 30}}},
		{ExternalID: "db", Name: "db", PowerState: models.PowerOff, Disks: []models.DiskReport{{Path: "/vms/db-a.img", SizeBytes: 2 << 30}, {Path: "/vms/db-b.img", SizeBytes: 4 << 30}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	vms, _, err := tv.Store.ListVMs(ctx, models.VMFilter{HostID: host.ID}, models.Page{})
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if vm.Name == "web" {
			out.protectedVM = vm.ID
		} else {
			out.unprotectedVM = vm.ID
		}
	}
	start := tv.Clock.T.Add(-time.Hour)
	failed := &models.Job{Type: "Failover", State: models.JobFailed, TargetKind: "vm", TargetID: out.protectedVM, TargetName: "web",
		StartedAt: &start, EndedAt: &tv.Clock.T, ErrorCode: "replica_missing", ErrorMessage: "the replica is gone", ErrorAction: "re-enable protection",
		Steps: []models.JobStep{{Name: "Prerequisites check", State: models.JobSucceeded, Progress: 100}, {Name: "Fail over", State: models.JobFailed, Progress: 40, Message: "stopped"}}}
	running := &models.Job{Type: "Resync", State: models.JobInProgress, TargetKind: "vm", TargetID: out.protectedVM, TargetName: "web",
		Steps: []models.JobStep{{Name: "Compare blocks", State: models.JobInProgress, Progress: 10}}}
	for _, j := range []*models.Job{failed, running} {
		if err := tv.Store.CreateJob(ctx, a, j); err != nil {
			t.Fatal(err)
		}
	}
	out.failedJob, out.runningJob = failed.ID, running.ID
	if raw == nil {
		return out
	}
	policy := models.DefaultPolicy()
	policy.Name = "Gold"
	if err := tv.Store.CreatePolicy(ctx, a, &policy); err != nil {
		t.Fatal(err)
	}
	target, err := tv.Store.CreateTarget(ctx, a, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/replicas"})
	if err != nil {
		t.Fatal(err)
	}
	lastPoint := tv.Clock.T.Add(-90 * time.Second)
	p := models.Protection{ID: models.NewID("prot"), VMID: out.protectedVM, PolicyID: policy.ID, TargetID: target.ID,
		State: models.StateProtected, Health: models.HealthWarning, HealthReasons: `["RPO above the copy frequency"]`, LastRecoveryPointAt: &lastPoint}
	if err := raw.Create(&p).Error; err != nil {
		t.Fatal(err)
	}
	for _, state := range []string{models.AlertResolved, models.AlertActive} {
		al := models.Alert{ID: models.NewID("alert"), Kind: "HealthCritical", Severity: "Critical", ObjectKind: "vm", ObjectID: out.protectedVM,
			Message: "web is Critical", State: state, CreatedAt: tv.Clock.T, UpdatedAt: tv.Clock.T}
		if err := raw.Create(&al).Error; err != nil {
			t.Fatal(err)
		}
		out.activeAlert = al.ID
	}
	return out
}

// leakMarkers must never appear in an answer: SQL and Go stack text.
var leakMarkers = []string{"SELECT", "INSERT", "UPDATE \"", "sqlite", "pq:", "goroutine", ".go:"}

// apiError is the JSON of an error answer.
type apiErrorJSON struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details struct {
			Fields []models.FieldError `json:"fields"`
		} `json:"details"`
	} `json:"error"`
}

// wantAPIError checks an error answer: its status, its code, the fields it
// names, a message for people, and no leaked internals.
func wantAPIError(t *testing.T, what string, status int, raw []byte, wantStatus int, code string, fields ...string) {
	t.Helper()
	var e apiErrorJSON
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Errorf("%s: the error is not JSON: %q", what, raw)
		return
	}
	if status != wantStatus || e.Error.Code != code {
		t.Errorf("%s: %d %s, want %d %s (%s)", what, status, e.Error.Code, wantStatus, code, raw)
	}
	if e.Error.Message == "" {
		t.Errorf("%s: the error has no message", what)
	}
	var named []string
	for _, f := range e.Error.Details.Fields {
		named = append(named, f.Field)
	}
	for _, f := range fields {
		if !slices.Contains(named, f) {
			t.Errorf("%s: error.details.fields = %v, want it to name %q", what, named, f)
		}
	}
	wantNoLeak(t, what, raw)
}

func wantNoLeak(t *testing.T, what string, raw []byte) {
	t.Helper()
	for _, m := range leakMarkers {
		if strings.Contains(string(raw), m) {
			t.Errorf("%s: the answer shows internals (%q): %s", what, m, raw)
		}
	}
}

// send makes one API request with any content type.
func send(t *testing.T, tv *testVault, method, path, token, contentType string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, tv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := tv.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// wantKeys checks that an object has every documented field.
func wantKeys(t *testing.T, what string, obj map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := obj[k]; !ok {
			t.Errorf("%s: field %q is missing from %v", what, k, obj)
		}
	}
}

type listJSON struct {
	Items      []map[string]any `json:"items"`
	NextCursor string           `json:"next_cursor"`
}

func getList(t *testing.T, tv *testVault, path, token string) listJSON {
	t.Helper()
	var l listJSON
	if status := tv.api(http.MethodGet, path, token, nil, &l); status != http.StatusOK {
		t.Fatalf("GET %s: %d", path, status)
	}
	return l
}

func ids(l listJSON) []string {
	out := make([]string, 0, len(l.Items))
	for _, it := range l.Items {
		out = append(out, fmt.Sprint(it["id"]))
	}
	return out
}

// apiBodies are valid bodies for every create and replace, so that a
// refusal in the tests below comes from what the test changes.
func apiBodies() map[string]string {
	return map[string]string{
		"/sites":          `{"name":"s"}`,
		"/policies":       `{"name":"p"}`,
		"/targets":        `{"name":"t","kind":"directory","path":"/srv/t"}`,
		"/recovery-plans": `{"name":"r","groups":[]}`,
		"/users":          `{"username":"u","password":"a long enough password","role":"Reader"}`,
		"/tokens":         `{"name":"k","expires_in_days":1}`,
		"/auth/token":     `{"username":"nobody","password":"wrong"}`,
		"/vms":            `{"policy_id":"pol_x","target_id":"tgt_x"}`,
	}
}

// recoveryBodies are the bodies of the recovery calls, by the end of their
// path: they take other fields than the rest of /vms.
var recoveryBodies = map[string]string{
	"/test-failover":         `{"recovery_point":"latest_processed"}`,
	"/test-failover/cleanup": `{"notes":"n"}`,
	"/failover":              `{"type":"planned"}`,
	"/failover/change-point": `{"recovery_point":"latest_processed"}`,
	"/failover/commit":       ``,
	"/reprotect":             ``,
	"/protection/move":       `{"target_id":"tgt_x","old_replica":"keep"}`,
}

func bodyFor(path string) string {
	path = strings.TrimPrefix(path, "/api/v1")
	if strings.HasPrefix(path, "/recovery-plans/") && strings.HasSuffix(path, "/run") {
		return `{"operation":"test_failover"}`
	}
	if strings.HasSuffix(path, "/registration-key") {
		return `{"expires_in_hours":24}`
	}
	if strings.HasPrefix(path, "/vms/") {
		if _, rest, ok := strings.Cut(strings.TrimPrefix(path, "/vms/"), "/"); ok {
			if body, ok := recoveryBodies["/"+rest]; ok {
				return body
			}
		}
	}
	for prefix, body := range apiBodies() {
		if strings.HasPrefix(path, prefix) {
			return body
		}
	}
	return ""
}
