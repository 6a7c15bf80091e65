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

// TestVMPageProtectsAVMAndShowsItsPoints drives the protection flow through
// the portal, with the host's part played through the store.
func TestVMPageProtectsAVMAndShowsItsPoints(t *testing.T) {
	tv := newTestVault(t, "")
	s := seedInventory(t, tv, nil)
	ctx := context.Background()
	p := tv.login("Contributor")
	_, doc := p.get("/vms/" + s.unprotectedVM)
	if testid(doc, "vm-not-protected").Length() != 1 || testid(doc, "protect-form").Length() != 0 {
		t.Fatal("without a policy and a target the page must say what to create first")
	}
	policy := models.DefaultPolicy()
	policy.Name = "Gold"
	tv.Store.CreatePolicy(ctx, models.SystemActor, &policy)
	tv.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/replicas"})
	_, doc = p.get("/vms/" + s.unprotectedVM)
	policyID, _ := doc.Find(`select[name="policy_id"] option`).Attr("value")
	targetID, _ := doc.Find(`select[name="target_id"] option`).Attr("value")
	resp, doc := p.post("/vms/"+s.unprotectedVM+"/protection", url.Values{"policy_id": {policyID}, "target_id": {targetID}})
	if !strings.HasPrefix(resp.Request.URL.Path, "/jobs/") || testid(doc, "job-title").Text() != models.JobEnableProtection {
		t.Fatalf("after Enable protection: %s %q", resp.Request.URL.Path, testid(doc, "job-title").Text())
	}
	if got := texts(testid(doc, "step-name")); strings.Join(got, ",") != "Prerequisites check,Create replication,Start initial replication,Finalize protection" {
		t.Fatalf("steps: %v", got)
	}
	// The host runs the three steps.
	for _, kind := range []string{agentproto.TaskProtectionCheck, agentproto.TaskCreateReplica, agentproto.TaskReplicate} {
		tasks, err := tv.Store.LeaseTasks(ctx, s.host, 1, time.Minute)
		if err != nil || len(tasks) != 1 || tasks[0].Kind != kind {
			t.Fatalf("lease %s: %+v %v", kind, tasks, err)
		}
		result := "{}"
		if kind == agentproto.TaskReplicate {
			var pl agentproto.ReplicationPayload
			json.Unmarshal([]byte(tasks[0].Payload), &pl)
			started := tv.Clock.T.Add(-3 * time.Second)
			b, _ := json.Marshal(agentproto.ReplicateResult{PointID: pl.PointID, Time: tv.Clock.T, ReadStartedAt: &started, Consistency: "inconsistent",
				Capture: "live", CaptureNote: "the disks were read while the VM wrote to them", SizeBytes: 6 << 30, BytesSent: 3 << 20, TransferSeconds: 2})
			result = string(b)
		}
		if err := tv.Store.CompleteTask(ctx, s.host, tasks[0].ID, models.TaskOutcome{Result: result}); err != nil {
			t.Fatal(err)
		}
	}
	_, doc = p.get("/vms/" + s.unprotectedVM)
	if !strings.Contains(testid(doc, "vm-protection").Text(), "Protected") || testid(doc, "point-row").Length() != 1 ||
		testid(doc, "point-verify").Length() != 1 || testid(doc, "bytes-sent").Text() != "3.0 MiB" ||
		testid(doc, "last-cycle").Text() != "3.0 MiB in 2.0 s (1.5 MiB/s)" {
		html, _ := doc.Find("main").Html()
		t.Fatalf("protected VM page:\n%s", html)
	}
	// The point says how it was captured, and the disk that it is replicated.
	if testid(doc, "point-consistency").Text() != "inconsistent" || testid(doc, "point-capture").Text() != "(live)" ||
		!strings.Contains(testid(doc, "point-note").Text(), "while the VM wrote") || testid(doc, "point-read-started").Length() != 1 ||
		!strings.HasPrefix(testid(doc, "disk-replication").First().Text(), "replicated since") {
		html, _ := doc.Find("main").Html()
		t.Fatalf("the point's capture or the disk's replication is not shown:\n%s", html)
	}
	resp, _ = p.post("/vms/"+s.unprotectedVM+"/protection/delete", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("disable: %d", resp.StatusCode)
	}
	_, doc = p.get("/vms/" + s.unprotectedVM)
	if testid(doc, "protect-form").Length() != 1 {
		t.Fatal("after disabling, the VM can be protected again")
	}
}

// After a re-protect the original VM has no protection of its own: its
// page says which VM replicates into its replicas, and where to fail back
// from, instead of offering to protect it again.
func TestTheOriginalVMsPageSaysWhichVMItWasFailedOverTo(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		s := seedInventory(t, av.testVault, av.raw)
		// "web" is protected; pretend it is the recovered VM of "db".
		if err := av.raw.Model(&models.Protection{}).Where("vm_id = ?", s.protectedVM).Update("home_vm_id", s.unprotectedVM).Error; err != nil {
			t.Fatal(err)
		}
		_, doc := av.login("Operator").get("/vms/" + s.unprotectedVM)
		if testid(doc, "vm-failed-over").Length() != 1 || testid(doc, "vm-not-protected").Length() != 0 {
			t.Fatal("the original VM's page offers to protect it again")
		}
		if href, _ := testid(doc, "vm-failed-over-to").Attr("href"); href != "/vms/"+s.protectedVM {
			t.Fatalf("the page links to %q", href)
		}
	})
}

// Deleting a policy that protects VMs is refused on the policy's page,
// naming them, not with a bare error page.
func TestDeletingAPolicyInUseSaysWhichVMsUseIt(t *testing.T) {
	tv := newTestVault(t, "")
	s := seedInventory(t, tv, nil)
	ctx := context.Background()
	policy := models.DefaultPolicy()
	policy.Name = "Gold"
	tv.Store.CreatePolicy(ctx, models.SystemActor, &policy)
	target, err := tv.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/replicas"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tv.Store.EnableProtection(ctx, models.SystemActor, s.unprotectedVM, policy.ID, target.ID); err != nil {
		t.Fatal(err)
	}
	p := tv.login("Contributor")
	resp, doc := p.post("/policies/"+policy.ID+"/delete", nil)
	msg := testid(doc, "form-error").Text()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(msg, "db") || !strings.Contains(msg, "not deleted") || testid(doc, "policy-form").Length() != 1 {
		t.Fatalf("delete a policy in use: %d %q", resp.StatusCode, msg)
	}
	if _, err := tv.Store.GetPolicy(ctx, policy.ID); err != nil {
		t.Fatalf("the policy is gone: %v", err)
	}
}

// A failed Enable protection used to leave the VM stuck: EnablingProtection,
// Critical, "enable protection again", and no form to do it. The page now
// says why it failed and offers the form, with the choices preselected.
func TestAFailedEnableProtectionOffersRetryOnTheVMPage(t *testing.T) {
	tv := newTestVault(t, "")
	s := seedInventory(t, tv, nil)
	ctx := context.Background()
	policy := models.DefaultPolicy()
	policy.Name = "Gold"
	tv.Store.CreatePolicy(ctx, models.SystemActor, &policy)
	first, _ := tv.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "typo", Kind: models.TargetDirectory, Path: "/srv/replicsa"})
	second, _ := tv.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/replicas"})
	p := tv.login("Contributor")
	resp, _ := p.post("/vms/"+s.unprotectedVM+"/protection", url.Values{"policy_id": {policy.ID}, "target_id": {first.ID}})
	if !strings.HasPrefix(resp.Request.URL.Path, "/jobs/") {
		t.Fatalf("enable: %s", resp.Request.URL.Path)
	}
	_, doc := p.get("/vms/" + s.unprotectedVM)
	if testid(doc, "enable-retry-section").Length() != 0 {
		t.Fatal("retry offered while the job runs")
	}
	tasks, err := tv.Store.LeaseTasks(ctx, s.host, 1, time.Minute)
	if err != nil || len(tasks) != 1 {
		t.Fatalf("lease: %v %v", tasks, err)
	}
	if err := tv.Store.CompleteTask(ctx, s.host, tasks[0].ID, models.TaskOutcome{ErrorCode: agentproto.CodeTargetUnavailable,
		Message: "the target directory /srv/replicsa does not exist"}); err != nil {
		t.Fatal(err)
	}
	_, doc = p.get("/vms/" + s.unprotectedVM)
	if !strings.Contains(testid(doc, "enable-retry-error").Text(), "/srv/replicsa does not exist") || testid(doc, "enable-retry-section").Length() != 1 {
		html, _ := doc.Find("main").Html()
		t.Fatalf("the failed enable is not explained with a way on:\n%s", html)
	}
	if sel, _ := doc.Find(`[data-testid="enable-retry-form"] select[name="target_id"] option[selected]`).Attr("value"); sel != first.ID {
		t.Fatalf("preselected target %q, want the failed attempt's %q", sel, first.ID)
	}
	resp, doc = p.post("/vms/"+s.unprotectedVM+"/protection", url.Values{"policy_id": {policy.ID}, "target_id": {second.ID}})
	if !strings.HasPrefix(resp.Request.URL.Path, "/jobs/") || testid(doc, "job-title").Text() != models.JobEnableProtection {
		t.Fatalf("retry: %s %d", resp.Request.URL.Path, resp.StatusCode)
	}
	prot, _ := tv.Store.GetProtection(ctx, s.unprotectedVM)
	if prot.TargetID != second.ID || prot.Health != models.HealthNormal {
		t.Fatalf("after the retry: target %s health %s", prot.TargetID, prot.Health)
	}
	// A Reader sees why, but no form.
	_, doc = tv.login("Reader").get("/vms/" + s.unprotectedVM)
	if testid(doc, "enable-retry-form").Length() != 0 {
		t.Fatal("a Reader was offered the retry form")
	}
}
