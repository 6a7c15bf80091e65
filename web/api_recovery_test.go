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
}
