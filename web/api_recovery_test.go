package main

import (
	"context"
	"net/http"
	"testing"

	"github.com/lifeboat-dr/lifeboat/models"
)

// An Operator runs recovery and may stop it, but may not cancel the jobs
// that change configuration (here a host check); a Contributor may.
func TestAnOperatorMayCancelRecoveryJobsOnly(t *testing.T) {
	tv := newTestVault(t, "")
	ctx := context.Background()
	site := &models.Site{Name: "s"}
	if err := tv.Store.CreateSite(ctx, models.SystemActor, site); err != nil {
		t.Fatal(err)
	}
	host := &models.Host{SiteID: site.ID, Name: "hv", State: models.HostConnected}
	if err := tv.Store.CreateHost(ctx, models.SystemActor, host); err != nil {
		t.Fatal(err)
	}
	job, err := tv.Store.StartHostCheck(ctx, models.SystemActor, host.ID, "{}")
	if err != nil {
		t.Fatal(err)
	}
	status, raw := tv.apiRaw(http.MethodPost, "/api/v1/jobs/"+job.ID+"/cancel", tv.apiToken(models.RoleOperator), nil)
	wantAPIError(t, "an Operator cancels a host check", status, raw, http.StatusForbidden, "forbidden")
	if got, _ := tv.Store.GetJob(ctx, job.ID); got.State != models.JobInProgress {
		t.Fatalf("the refused cancel changed the job: %s", got.State)
	}
	if status := tv.api(http.MethodPost, "/api/v1/jobs/"+job.ID+"/cancel", tv.apiToken(models.RoleContributor), nil, nil); status != http.StatusAccepted {
		t.Fatalf("a Contributor's cancel: %d", status)
	}
	// A recovery job: the Operator may stop it, and its page offers to.
	drill := &models.Job{Type: models.JobTestFailover, State: models.JobInProgress, TargetKind: "vm", TargetID: "vm_x", TargetName: "web",
		Steps: []models.JobStep{{Name: "Create web-test", State: models.JobInProgress}}}
	if err := tv.Store.CreateJob(ctx, models.SystemActor, drill); err != nil {
		t.Fatal(err)
	}
	if _, doc := tv.login(models.RoleOperator).get("/jobs/" + drill.ID); testid(doc, "job-cancel").Length() != 1 {
		t.Fatal("an Operator is not offered to cancel a test failover")
	}
	if status := tv.api(http.MethodPost, "/api/v1/jobs/"+drill.ID+"/cancel", tv.apiToken(models.RoleOperator), nil, nil); status != http.StatusAccepted {
		t.Fatalf("an Operator's cancel of a test failover: %d", status)
	}
}

// Resynchronize on a VM that is not protected is a 409 naming why, not a
// 404 (the VM exists).
func TestResyncOfAnUnprotectedVMIsAConflictNotANotFound(t *testing.T) {
	tv := newTestVault(t, "")
	s := seedInventory(t, tv, nil)
	status, raw := tv.apiRaw(http.MethodPost, "/api/v1/vms/"+s.unprotectedVM+"/resync", tv.apiToken(models.RoleContributor), nil)
	wantAPIError(t, "resync of an unprotected VM", status, raw, http.StatusConflict, "not_protected")
}
