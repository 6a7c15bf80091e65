package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// replicate runs the VM's next replication task as its host would: a
// point made at the clock's time, with bytes sent.
func replicate(t *testing.T, tv *testVault, hostID string, bytes int64) {
	t.Helper()
	ctx := context.Background()
	tasks, err := tv.Store.LeaseTasks(ctx, hostID, 1, time.Minute)
	if err != nil || len(tasks) != 1 || tasks[0].Kind != agentproto.TaskReplicate {
		t.Fatalf("lease a replication: %+v %v", tasks, err)
	}
	var pl agentproto.ReplicationPayload
	json.Unmarshal([]byte(tasks[0].Payload), &pl)
	b, _ := json.Marshal(agentproto.ReplicateResult{PointID: pl.PointID, Time: tv.Clock.T, Consistency: "crash", SizeBytes: 1 << 30, BytesSent: bytes, TransferSeconds: 1})
	if err := tv.Store.CompleteTask(ctx, hostID, tasks[0].ID, models.TaskOutcome{Result: string(b)}); err != nil {
		t.Fatal(err)
	}
}

// protectWithHistory protects the seeded unprotected VM (a copy every 5
// minutes) and returns it before its initial copy ends.
func protectWithHistory(t *testing.T, tv *testVault) (vmID, hostID string) {
	t.Helper()
	s := seedInventory(t, tv, nil)
	ctx := context.Background()
	policy := models.DefaultPolicy()
	policy.Name, policy.CopyFrequencySeconds = "Gold", 300
	if err := tv.Store.CreatePolicy(ctx, models.SystemActor, &policy); err != nil {
		t.Fatal(err)
	}
	target, err := tv.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/replicas"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tv.Store.EnableProtection(ctx, models.SystemActor, s.unprotectedVM, policy.ID, target.ID); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica} {
		tasks, err := tv.Store.LeaseTasks(ctx, s.host, 1, time.Minute)
		if err != nil || len(tasks) != 1 || tasks[0].Kind != kind {
			t.Fatalf("lease %s: %+v %v", kind, tasks, err)
		}
		if err := tv.Store.CompleteTask(ctx, s.host, tasks[0].ID, models.TaskOutcome{Result: "{}"}); err != nil {
			t.Fatal(err)
		}
	}
	return s.unprotectedVM, s.host
}

// runCycles ends the initial copy, then n scheduled cycles 5 minutes apart.
func runCycles(t *testing.T, tv *testVault, hostID string, n int) {
	t.Helper()
	replicate(t, tv, hostID, 8<<20)
	for range n {
		tv.Clock.T = tv.Clock.T.Add(5 * time.Minute)
		if q, err := tv.Store.ScheduleReplications(context.Background()); err != nil || len(q) != 1 {
			t.Fatalf("schedule: %d %v", len(q), err)
		}
		replicate(t, tv, hostID, 1<<20)
	}
}

func TestTheVMPageDrawsTheRPOHistoryAfterCyclesWithARangeSwitch(t *testing.T) {
	tv := newTestVault(t, "")
	vmID, hostID := protectWithHistory(t, tv)
	p := tv.login(models.RoleReader)
	_, doc := p.get("/vms/" + vmID)
	if !strings.Contains(testid(doc, "rpo-history-empty").Text(), "No cycles yet") || testid(doc, "rpo-chart").Length() != 0 {
		t.Fatalf("before the initial copy ends the chart must say there is nothing yet: %q", testid(doc, "rpo-history").Text())
	}
	runCycles(t, tv, hostID, 3)
	_, doc = p.get("/vms/" + vmID)
	chart := testid(doc, "rpo-chart")
	if chart.Length() != 1 || chart.AttrOr("role", "") != "img" || chart.Find("title").Text() != "RPO over the last 24 hours" {
		html, _ := testid(doc, "rpo-history").Html()
		t.Fatalf("no accessible RPO chart after cycles:\n%s", html)
	}
	// Four rows (the initial copy and 3 cycles): a bar each, the saw
	// rising to 5 minutes before each cycle and back to 0 after it.
	if n := testid(doc, "rpo-bar").Length(); n != 4 {
		t.Fatalf("%d bars, want one per cycle with bytes (4)", n)
	}
	if pts := strings.Fields(testid(doc, "rpo-line").AttrOr("points", "")); len(pts) != 7 {
		t.Fatalf("the RPO line %v, want 7 points (the initial copy, then up and down per cycle)", pts)
	}
	if testid(doc, "rpo-threshold").Length() != 1 {
		t.Fatal("no line at the policy's RPO threshold")
	}
	if desc := testid(doc, "rpo-chart-desc").Text(); desc != "Worst RPO 5 min, latest 0 s, against a threshold of 10 min; 4 cycles sent 11.0 MiB." {
		t.Fatalf("the chart's description: %q", desc)
	}
	if testid(doc, "rpo-history-range").Text() != "24 hours" || testid(doc, "rpo-history-7d").AttrOr("href", "") != "/vms/"+vmID+"?history=7d" {
		t.Fatal("the range switch is not a plain link")
	}
	_, doc = p.get("/vms/" + vmID + "?history=7d")
	if testid(doc, "rpo-history-range").Text() != "7 days" || testid(doc, "rpo-chart").Find("title").Text() != "RPO over the last 7 days" ||
		testid(doc, "rpo-bar").Length() != 1 {
		html, _ := testid(doc, "rpo-history").Html()
		t.Fatalf("the week, by the hour (one bar: all 4 rows fall in the hour 10:00):\n%s", html)
	}
}

func TestTheAPIGivesTheRPOHistoryAndRefusesAnUnknownRange(t *testing.T) {
	tv := newTestVault(t, "")
	vmID, hostID := protectWithHistory(t, tv)
	runCycles(t, tv, hostID, 2)
	token := tv.apiToken(models.RoleReader)
	var h struct {
		Range     string
		Threshold *float64 `json:"rpo_threshold_seconds"`
		Items     []struct {
			MaxRPOSeconds float64 `json:"max_rpo_seconds"`
			BytesSent     int64   `json:"bytes_sent"`
			Cycles        int
		}
	}
	if status := tv.api(http.MethodGet, "/api/v1/vms/"+vmID+"/rpo-history", token, nil, &h); status != http.StatusOK {
		t.Fatalf("rpo-history: %d", status)
	}
	if h.Range != "24h" || h.Threshold == nil || *h.Threshold != 600 || len(h.Items) != 3 || h.Items[2].MaxRPOSeconds != 300 || h.Items[2].BytesSent != 1<<20 {
		t.Fatalf("rpo-history: %+v", h)
	}
	if status := tv.api(http.MethodGet, "/api/v1/vms/"+vmID+"/rpo-history?range=7d", token, nil, &h); status != http.StatusOK ||
		len(h.Items) != 1 || h.Items[0].Cycles != 3 || h.Items[0].BytesSent != 8<<20+2<<20 {
		t.Fatalf("rpo-history for a week: %d %+v", status, h)
	}
	status, raw := tv.apiRaw(http.MethodGet, "/api/v1/vms/"+vmID+"/rpo-history?range=30d", token, nil)
	wantAPIError(t, "an unknown range", status, raw, http.StatusBadRequest, "validation_failed", "range")
	status, raw = tv.apiRaw(http.MethodGet, "/api/v1/vms/vm_nope/rpo-history", token, nil)
	wantAPIError(t, "an unknown VM", status, raw, http.StatusNotFound, "not_found")

	doc, err := openapi3.NewLoader().LoadFromData(servedOpenAPI(t, tv))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	tv.api(http.MethodGet, "/api/v1/vms/"+vmID+"/rpo-history", token, nil, &v)
	if err := doc.Components.Schemas["RPOHistory"].Value.VisitJSON(v); err != nil {
		t.Fatalf("the answer does not match its schema: %v", err)
	}
}

func TestTheDashboardShowsTheFleetsRPOAgainstPolicyAndLinksTheWorst(t *testing.T) {
	tv := newTestVault(t, "")
	vmID, hostID := protectWithHistory(t, tv)
	p := tv.login(models.RoleReader)
	_, doc := p.get("/")
	if testid(doc, "rpo-no-point").Text() != "1" || testid(doc, "rpo-within").Text() != "0" || testid(doc, "rpo-worst").Length() != 0 {
		t.Fatalf("before the first point: %q", testid(doc, "card-rpo").Text())
	}
	runCycles(t, tv, hostID, 1)
	_, doc = p.get("/")
	if testid(doc, "rpo-within").Text() != "1" || testid(doc, "rpo-over").Text() != "0" || testid(doc, "rpo-worst-over").Length() != 0 {
		t.Fatalf("right after a cycle: %q", testid(doc, "card-rpo").Text())
	}
	tv.Clock.T = tv.Clock.T.Add(11 * time.Minute) // no cycle: above twice the 5-minute copy frequency
	_, doc = p.get("/")
	row := testid(doc, "rpo-worst-row")
	if testid(doc, "rpo-within").Text() != "0" || testid(doc, "rpo-over").Text() != "1" || row.Length() != 1 ||
		row.Find("a").AttrOr("href", "") != "/vms/"+vmID || row.Find(`[data-testid="rpo-worst-over"]`).Length() != 1 || !strings.Contains(row.Text(), "11 min") {
		html, _ := testid(doc, "card-rpo").Html()
		t.Fatalf("11 minutes without a cycle:\n%s", html)
	}
}
