package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// protectThroughStore enables protection of a VM and plays the host's part
// of the job through the store: the VM ends Protected with one point.
func protectThroughStore(t *testing.T, tv *testVault, hostID, vmID, policyID, targetID string) {
	t.Helper()
	ctx := context.Background()
	if _, err := tv.Store.EnableProtection(ctx, models.SystemActor, vmID, policyID, targetID); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica, agentproto.TaskReplicate} {
		tasks, err := tv.Store.LeaseTasks(ctx, hostID, 1, time.Minute)
		if err != nil || len(tasks) != 1 || tasks[0].Kind != kind {
			t.Fatalf("lease %s: %+v %v", kind, tasks, err)
		}
		result := "{}"
		if kind == agentproto.TaskReplicate {
			var pl agentproto.ReplicationPayload
			json.Unmarshal([]byte(tasks[0].Payload), &pl)
			b, _ := json.Marshal(agentproto.ReplicateResult{PointID: pl.PointID, Time: tv.Clock.T, Consistency: "crash", SizeBytes: 6 << 30, BytesSent: 3 << 20, TransferSeconds: 2})
			result = string(b)
		}
		if err := tv.Store.CompleteTask(ctx, hostID, tasks[0].ID, models.TaskOutcome{Result: result}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVMPageLinksItsPolicyAndTargetAndPausesResumesAndChangesPolicy(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		ctx := context.Background()
		s := seedInventory(t, av.testVault, av.raw)
		prot, err := av.Store.GetProtection(ctx, s.protectedVM)
		if err != nil {
			t.Fatal(err)
		}
		p := av.login("Contributor")
		_, doc := p.get("/vms/" + s.protectedVM)
		if href, _ := testid(doc, "vm-policy").Attr("href"); href != "/policies/"+prot.PolicyID || testid(doc, "vm-policy").Text() != "Gold" {
			t.Fatalf("policy link %q %q", href, testid(doc, "vm-policy").Text())
		}
		if href, _ := testid(doc, "vm-target").Attr("href"); href != "/targets/"+prot.TargetID || testid(doc, "vm-target").Text() != "nas" {
			t.Fatalf("target link %q %q", href, testid(doc, "vm-target").Text())
		}
		if got, want := testid(doc, "vm-replica-location").Text(), filepath.Join("/srv/replicas", s.protectedVM); got != want {
			t.Fatalf("replica location %q, want %q", got, want)
		}
		if testid(doc, "pause-replication").Length() != 1 || testid(doc, "replicate-now").Length() != 1 || testid(doc, "resume-replication").Length() != 0 {
			t.Fatal("a replicating VM's page must offer Pause and Replicate now")
		}

		// Pause: the page says who and when, offers Resume, no Replicate now.
		resp, doc := p.post("/vms/"+s.protectedVM+"/pause", nil)
		if resp.Request.URL.Path != "/vms/"+s.protectedVM || !strings.Contains(testid(doc, "flash").Text(), "paused") {
			t.Fatalf("after pause: %s %q", resp.Request.URL.Path, testid(doc, "flash").Text())
		}
		reasons := testid(doc, "vm-health-reasons").Text()
		if !strings.Contains(testid(doc, "vm-paused").Text(), "Paused by contributor") || !strings.Contains(reasons, "replication paused by contributor-") ||
			!strings.Contains(testid(doc, "vm-health").Text(), "Warning") {
			t.Fatalf("paused VM page: %q / %q", testid(doc, "vm-paused").Text(), reasons)
		}
		if testid(doc, "resume-replication").Length() != 1 || testid(doc, "pause-replication").Length() != 0 || testid(doc, "replicate-now").Length() != 0 {
			t.Fatal("a paused VM's page must offer Resume, and neither Pause nor Replicate now")
		}
		// Pausing again (a stale page) says why on the VM page, not an error page.
		resp, doc = p.post("/vms/"+s.protectedVM+"/pause", nil)
		if resp.Request.URL.Path != "/vms/"+s.protectedVM || !strings.Contains(testid(doc, "flash").Text(), "Replication was not paused: replication of VM web is already paused") {
			t.Fatalf("pause twice: %s %q", resp.Request.URL.Path, testid(doc, "flash").Text())
		}
		// An Operator sees it paused but can neither pause nor resume.
		_, doc = av.login("Operator").get("/vms/" + s.protectedVM)
		if testid(doc, "vm-paused").Length() != 1 || testid(doc, "resume-replication").Length() != 0 {
			t.Fatal("an Operator's view of a paused VM")
		}
		resp, doc = p.post("/vms/"+s.protectedVM+"/resume", nil)
		if resp.StatusCode != http.StatusOK || testid(doc, "vm-paused").Length() != 0 || strings.Contains(testid(doc, "vm-health-reasons").Text(), "paused") {
			t.Fatalf("after resume: %d %q", resp.StatusCode, testid(doc, "vm-health-reasons").Text())
		}

		// Change policy: the page then links the new one, whose page lists the VM.
		silver := models.DefaultPolicy()
		silver.Name = "Silver"
		if err := av.Store.CreatePolicy(ctx, models.SystemActor, &silver); err != nil {
			t.Fatal(err)
		}
		_, doc = p.get("/vms/" + s.protectedVM)
		if testid(doc, "change-policy-form").Length() != 1 {
			t.Fatal("no Change policy form with two policies")
		}
		_, doc = p.post("/vms/"+s.protectedVM+"/protection/policy", url.Values{"policy_id": {silver.ID}})
		if testid(doc, "vm-policy").Text() != "Silver" || !strings.Contains(testid(doc, "flash").Text(), "nothing is copied again") {
			t.Fatalf("after the change: policy %q, flash %q", testid(doc, "vm-policy").Text(), testid(doc, "flash").Text())
		}
		for _, page := range []string{"/policies/" + silver.ID, "/targets/" + prot.TargetID} {
			_, doc = p.get(page)
			link := testid(doc, "used-by-vm").Find("a")
			if href, _ := link.Attr("href"); link.Length() != 1 || href != "/vms/"+s.protectedVM || link.Text() != "web" {
				t.Fatalf("%s lists %d VMs, linking %q", page, link.Length(), href)
			}
		}
		_, doc = p.get("/policies/" + prot.PolicyID) // Gold serves no VM now
		if testid(doc, "used-by-empty").Length() != 1 || testid(doc, "used-by-vm").Length() != 0 {
			t.Fatal("the old policy's page still lists the VM")
		}
		// Move: the form offers the other directory targets; this host's agent
		// has not said it can seed one, and the page says so.
		nas2, err := av.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "nas2", Kind: models.TargetDirectory, Path: "/srv/replicas2"})
		if err != nil {
			t.Fatal(err)
		}
		_, doc = p.get("/vms/" + s.protectedVM)
		if v, _ := testid(doc, "move-target").Find("option").Attr("value"); testid(doc, "move-target").Find("option").Length() != 1 || v != nas2.ID {
			t.Fatalf("move targets offered: %d (%q)", testid(doc, "move-target").Find("option").Length(), v)
		}
		resp, doc = p.post("/vms/"+s.protectedVM+"/protection/move", url.Values{"target_id": {nas2.ID}, "old_replica": {"keep"}})
		if resp.Request.URL.Path != "/vms/"+s.protectedVM || !strings.Contains(testid(doc, "flash").Text(), "The VM was not moved: the agent of host hv1") {
			t.Fatalf("move with an old agent: %s %q", resp.Request.URL.Path, testid(doc, "flash").Text())
		}
		var events []models.AuditEvent
		av.raw.Where("object_id = ? AND action IN ?", s.protectedVM, []string{"protection.pause", "protection.resume", "protection.change_policy"}).Find(&events)
		if len(events) != 3 {
			t.Fatalf("audit events: %+v", events)
		}
	})
}

func TestAPIPausesResumesReplicatesNowAndChangesPolicyWithStableErrors(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		ctx := context.Background()
		s := seedInventory(t, av.testVault, nil)
		gold, silver := models.DefaultPolicy(), models.DefaultPolicy()
		gold.Name, silver.Name = "Gold", "Silver"
		av.Store.CreatePolicy(ctx, models.SystemActor, &gold)
		av.Store.CreatePolicy(ctx, models.SystemActor, &silver)
		target, err := av.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/replicas"})
		if err != nil {
			t.Fatal(err)
		}
		contributor, operator := av.apiToken("Contributor"), av.apiToken("Operator")
		vmPath := "/api/v1/vms/" + s.unprotectedVM
		status, raw := av.apiRaw(http.MethodPost, vmPath+"/pause", contributor, nil)
		wantAPIError(t, "pause an unprotected VM", status, raw, http.StatusConflict, "not_protected")
		var vm struct {
			PolicyID        *string    `json:"policy_id"`
			TargetID        *string    `json:"target_id"`
			ReplicaLocation *string    `json:"replica_location"`
			PausedAt        *time.Time `json:"paused_at"`
			PausedBy        *string    `json:"paused_by"`
		}
		if av.api(http.MethodGet, vmPath, operator, nil, &vm); vm.PolicyID != nil || vm.TargetID != nil || vm.ReplicaLocation != nil {
			t.Fatalf("an unprotected VM has a placement: %+v", vm)
		}

		protectThroughStore(t, av.testVault, s.host, s.unprotectedVM, gold.ID, target.ID)
		if av.api(http.MethodGet, vmPath, operator, nil, &vm); vm.PolicyID == nil || *vm.PolicyID != gold.ID || *vm.TargetID != target.ID ||
			*vm.ReplicaLocation != "/srv/replicas/"+s.unprotectedVM || vm.PausedAt != nil {
			t.Fatalf("a protected VM's placement: %+v", vm)
		}
		status, raw = av.apiRaw(http.MethodPost, vmPath+"/resume", contributor, nil)
		wantAPIError(t, "resume a VM not paused", status, raw, http.StatusConflict, "not_paused")

		// Replicate now: 202 with the point; again while queued, the same
		// point; once the host runs it, 409 replication_busy.
		var first, again struct {
			PointID       string `json:"point_id"`
			AlreadyQueued bool   `json:"already_queued"`
		}
		if status := av.api(http.MethodPost, vmPath+"/replicate-now", operator, nil, &first); status != http.StatusAccepted || first.PointID == "" || first.AlreadyQueued {
			t.Fatalf("replicate now: %d %+v", status, first)
		}
		if status := av.api(http.MethodPost, vmPath+"/replicate-now", operator, nil, &again); status != http.StatusAccepted || again.PointID != first.PointID || !again.AlreadyQueued {
			t.Fatalf("replicate now again: %d %+v", status, again)
		}
		if tasks, err := av.Store.LeaseTasks(ctx, s.host, 5, time.Minute); err != nil || len(tasks) != 1 || tasks[0].Kind != agentproto.TaskReplicate {
			t.Fatalf("lease the cycle: %+v %v", tasks, err)
		}
		status, raw = av.apiRaw(http.MethodPost, vmPath+"/replicate-now", operator, nil)
		wantAPIError(t, "replicate now while a cycle runs", status, raw, http.StatusConflict, "replication_busy")

		// Pause and resume name who and when; pausing twice is refused.
		if status := av.api(http.MethodPost, vmPath+"/pause", contributor, nil, &vm); status != http.StatusOK || vm.PausedBy == nil || !strings.HasPrefix(*vm.PausedBy, "contributor") || vm.PausedAt == nil {
			t.Fatalf("pause: %d %+v", status, vm)
		}
		status, raw = av.apiRaw(http.MethodPost, vmPath+"/pause", contributor, nil)
		wantAPIError(t, "pause twice", status, raw, http.StatusConflict, "replication_paused")
		if status := av.api(http.MethodPost, vmPath+"/resume", contributor, nil, &vm); status != http.StatusOK || vm.PausedBy != nil {
			t.Fatalf("resume: %d %+v", status, vm)
		}

		// Policy: the field is named when missing or unknown; the target may
		// be left out or be the same; the answer is the VM.
		status, raw = av.apiRaw(http.MethodPut, vmPath+"/protection", contributor, map[string]string{})
		wantAPIError(t, "no policy", status, raw, http.StatusBadRequest, "validation_failed", "policy_id")
		status, raw = av.apiRaw(http.MethodPut, vmPath+"/protection", contributor, map[string]string{"policy_id": "pol_nope"})
		wantAPIError(t, "unknown policy", status, raw, http.StatusBadRequest, "validation_failed", "policy_id")
		if status := av.api(http.MethodPut, vmPath+"/protection", contributor, map[string]string{"policy_id": silver.ID, "target_id": target.ID}, &vm); status != http.StatusOK ||
			*vm.PolicyID != silver.ID || *vm.TargetID != target.ID {
			t.Fatalf("change policy: %d %+v", status, vm)
		}
		status, raw = av.apiRaw(http.MethodPut, "/api/v1/vms/"+s.protectedVM+"/protection", operator, map[string]string{"policy_id": silver.ID})
		wantAPIError(t, "an Operator changes a policy", status, raw, http.StatusForbidden, "forbidden")
	})
}
