package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// The capacity planner page and API show a VM's need against its limit,
// and warn when it cannot keep its RPO.
func TestTheCapacityPlannerPageAndAPIWarnOfAVMOverItsLimit(t *testing.T) {
	tv := newTestVault(t, "")
	s := seedInventory(t, tv, nil)
	ctx := context.Background()
	p := tv.login("Reader")
	if _, doc := p.get("/capacity"); testid(doc, "capacity-empty").Length() != 1 {
		t.Fatal("no empty state before any VM replicates")
	}
	policy := models.DefaultPolicy()
	policy.Name, policy.WorkHoursMbps, policy.OffHoursMbps = "Thin", 5, 5
	if err := tv.Store.CreatePolicy(ctx, models.SystemActor, &policy); err != nil {
		t.Fatal(err)
	}
	target, _ := tv.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/replicas"})
	if _, err := tv.Store.EnableProtection(ctx, models.SystemActor, s.unprotectedVM, policy.ID, target.ID); err != nil {
		t.Fatal(err)
	}
	run := func(bytes int64) {
		tasks, err := tv.Store.LeaseTasks(ctx, s.host, 1, time.Minute)
		if err != nil || len(tasks) != 1 {
			t.Fatalf("lease: %v %v", tasks, err)
		}
		result := "{}"
		if tasks[0].Kind == agentproto.TaskReplicate {
			var pl agentproto.ReplicationPayload
			json.Unmarshal([]byte(tasks[0].Payload), &pl)
			b, _ := json.Marshal(agentproto.ReplicateResult{PointID: pl.PointID, Time: tv.Clock.T, Consistency: "app", SizeBytes: 6 << 30, BytesSent: bytes})
			result = string(b)
		}
		if err := tv.Store.CompleteTask(ctx, s.host, tasks[0].ID, models.TaskOutcome{Result: result}); err != nil {
			t.Fatal(err)
		}
	}
	run(0)       // prerequisites
	run(0)       // create replicas
	run(6 << 30) // initial copy
	for range 4 {
		tv.Clock.T = tv.Clock.T.Add(5 * time.Minute)
		if _, err := tv.Store.ScheduleReplications(ctx); err != nil {
			t.Fatal(err)
		}
		run(300e6) // 300 MB in 5 min: 8 Mbit/s
	}
	_, doc := p.get("/capacity")
	if !strings.Contains(testid(doc, "capacity-warning").Text(), "1 VM(s) cannot keep their RPO") ||
		testid(doc, "capacity-needed").Text() != "8.0 Mbit/s" || !strings.Contains(testid(doc, "capacity-advice").Text(), "cannot keep its RPO") {
		html, _ := doc.Find("main").Html()
		t.Fatalf("capacity page:\n%s", html)
	}
	var got struct {
		VMs []struct {
			VMID       string  `json:"vm_id"`
			NeededMbps float64 `json:"needed_mbps"`
			LimitMbps  int     `json:"limit_mbps"`
			Fits       bool    `json:"fits"`
			Measured   bool    `json:"measured"`
		} `json:"vms"`
	}
	if status := tv.api(http.MethodGet, "/api/v1/capacity", tv.apiToken("Reader"), nil, &got); status != http.StatusOK || len(got.VMs) != 1 ||
		got.VMs[0].VMID != s.unprotectedVM || got.VMs[0].NeededMbps != 8 || got.VMs[0].LimitMbps != 5 || got.VMs[0].Fits || !got.VMs[0].Measured {
		t.Fatalf("API capacity: %d %+v", status, got)
	}
	if status, _ := tv.apiRaw(http.MethodGet, "/api/v1/capacity?"+url.Values{"vm": {"x"}}.Encode(), tv.apiToken("Reader"), nil); status != http.StatusBadRequest {
		t.Fatalf("unknown parameter: %d", status)
	}
}
