package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/models/storetest"
)

// newAgentSite makes a site and returns it with a Contributor token.
func newAgentSite(t *testing.T, tv *testVault) (siteID, token string) {
	token = tv.apiToken("Contributor")
	var site struct{ ID string }
	if status := tv.api(http.MethodPost, "/api/v1/sites", token, map[string]string{"name": storetest.Name("site")}, &site); status != http.StatusCreated {
		t.Fatalf("create site: %d", status)
	}
	return site.ID, token
}

func TestRegistrationKeyRegistersOneHostAndSaysWhyItRefusesOthers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		siteID, token := newAgentSite(t, tv)
		key := tv.registrationKey(token, siteID)
		if key.SiteID != siteID || key.VaultURL != "https://vault.test" || !key.ExpiresAt.Equal(tv.Clock.T.Add(5*24*time.Hour)) {
			t.Fatalf("key: %+v", key)
		}
		a, status, problem := tv.register(key.Secret, "hv1", testAgentInfo)
		if a == nil {
			t.Fatalf("first registration: %d %+v", status, problem)
		}
		var host struct {
			State  string
			SiteID string `json:"site_id"`
		}
		tv.api(http.MethodGet, "/api/v1/hosts/"+a.HostID, token, nil, &host)
		if host.State != models.HostConnected || host.SiteID != siteID {
			t.Fatalf("registered host: %+v", host)
		}
		_, status, problem = tv.register(key.Secret, "hv2", testAgentInfo)
		if status != http.StatusForbidden || problem.Error.Code != agentproto.CodeRegistrationKey || !strings.Contains(problem.Error.Message, "already used") {
			t.Fatalf("reused key: %d %+v", status, problem)
		}
		expiring := tv.registrationKey(token, siteID)
		tv.Clock.T = tv.Clock.T.Add(5*24*time.Hour + time.Minute)
		_, status, problem = tv.register(expiring.Secret, "hv3", testAgentInfo)
		if status != http.StatusForbidden || !strings.Contains(problem.Error.Message, "expired") {
			t.Fatalf("expired key: %d %+v", status, problem)
		}
		_, status, problem = tv.register("lbr_forgedforgedforgedforged", "hv4", testAgentInfo)
		if status != http.StatusForbidden || !strings.Contains(problem.Error.Message, "not one this vault issued") {
			t.Fatalf("forged key: %d %+v", status, problem)
		}
	})
}

func TestAgentWithAnotherProtocolVersionIsRefusedWithTheVersionsAccepted(t *testing.T) {
	tv := newTestVault(t, "")
	siteID, token := newAgentSite(t, tv)
	old := testAgentInfo
	old.ProtocolVersion = agentproto.ProtocolVersion + 1
	_, status, problem := tv.register(tv.registrationKey(token, siteID).Secret, "hv1", old)
	if status != http.StatusBadRequest || problem.Error.Code != agentproto.CodeIncompatibleProtocol || !strings.Contains(problem.Error.Message, fmt.Sprintf("accepts protocols %d to %d", agentproto.MinProtocolVersion, agentproto.ProtocolVersion)) {
		t.Fatalf("%d %+v", status, problem)
	}
	a := tv.mustRegister(token, siteID, "hv2")
	if status, problem := a.call(agentproto.PathHeartbeat, agentproto.HeartbeatRequest{Agent: old}, nil); status != http.StatusBadRequest || problem.Error.Code != agentproto.CodeIncompatibleProtocol {
		t.Fatalf("heartbeat with another protocol: %d %+v", status, problem)
	}
}

func TestPrerequisitesJobRunsThroughPollProgressAndResult(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		siteID, token := newAgentSite(t, tv)
		a := tv.mustRegister(token, siteID, "hv1")
		var accepted struct {
			JobID string `json:"job_id"`
		}
		if status := tv.api(http.MethodPost, "/api/v1/hosts/"+a.HostID+"/check", token, nil, &accepted); status != http.StatusAccepted {
			t.Fatalf("start check: %d", status)
		}
		poll := a.poll(4)
		if len(poll.Tasks) != 1 || poll.Tasks[0].Kind != agentproto.TaskCheckPrerequisites || poll.Tasks[0].Attempt != 1 {
			t.Fatalf("poll: %+v", poll)
		}
		task := poll.Tasks[0]
		var payload agentproto.PrerequisitesPayload
		if err := json.Unmarshal(task.Payload, &payload); err != nil || payload.MinFreeBytes <= 0 {
			t.Fatalf("payload %s: %v", task.Payload, err)
		}
		var pr agentproto.ProgressResponse
		a.call(agentproto.TaskProgressPath(task.ID), agentproto.Progress{Step: "free space", Percent: 50, Message: "state dir ok"}, &pr)
		if pr.Cancel || !pr.LeaseExpiresAt.After(tv.Clock.T) {
			t.Fatalf("progress answer: %+v", pr)
		}
		var job struct {
			State string
			Steps []struct {
				State    string
				Progress int
				Message  string
			}
		}
		tv.api(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, token, nil, &job)
		if job.State != models.JobInProgress || job.Steps[0].Progress != 50 || !strings.Contains(job.Steps[0].Message, "state dir ok") {
			t.Fatalf("job while running: %+v", job)
		}
		result, _ := json.Marshal(agentproto.PrerequisitesResult{Checks: []agentproto.Check{{Name: "free space", OK: true}}})
		for range 2 { // delivered twice, as after an agent retry: recorded once
			if status, problem := a.call(agentproto.TaskResultPath(task.ID), agentproto.Result{Result: result}, nil); status != http.StatusOK {
				t.Fatalf("result: %d %+v", status, problem)
			}
		}
		tv.api(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, token, nil, &job)
		if job.State != models.JobSucceeded || job.Steps[0].Progress != 100 {
			t.Fatalf("job after the result: %+v", job)
		}
		if status, problem := a.call(agentproto.TaskProgressPath(task.ID), agentproto.Progress{Percent: 60}, nil); status != http.StatusConflict || problem.Error.Code != agentproto.CodeLeaseLost {
			t.Fatalf("progress on a finished task: %d %+v", status, problem)
		}
	})
}

func TestHostCannotSeeOrReportOnAnotherHostsTask(t *testing.T) {
	tv := newTestVault(t, "")
	siteID, token := newAgentSite(t, tv)
	hostA, hostB := tv.mustRegister(token, siteID, "hv-a"), tv.mustRegister(token, siteID, "hv-b")
	tv.api(http.MethodPost, "/api/v1/hosts/"+hostA.HostID+"/check", token, nil, nil)
	if got := hostB.poll(4); len(got.Tasks) != 0 {
		t.Fatalf("host B was given host A's task: %+v", got.Tasks)
	}
	task := hostA.poll(4).Tasks[0]
	if status, _ := hostB.call(agentproto.TaskProgressPath(task.ID), agentproto.Progress{Percent: 99}, nil); status != http.StatusNotFound {
		t.Fatalf("B's progress on A's task: %d, want 404", status)
	}
	if status, _ := hostB.call(agentproto.TaskResultPath(task.ID), agentproto.Result{Error: &agentproto.TaskError{Code: "x", Message: "sabotage"}}, nil); status != http.StatusNotFound {
		t.Fatalf("B's result on A's task: %d, want 404", status)
	}
	stored, _ := tv.Store.GetTask(context.Background(), task.ID)
	if stored.State != models.TaskLeased || stored.HostID != hostA.HostID {
		t.Fatalf("A's task after B's attempts: %+v", stored)
	}
}

func TestRemovedHostIsRefusedAndItsTasksCancelled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		siteID, token := newAgentSite(t, tv)
		a := tv.mustRegister(token, siteID, "hv1")
		var accepted struct {
			JobID string `json:"job_id"`
		}
		tv.api(http.MethodPost, "/api/v1/hosts/"+a.HostID+"/check", token, nil, &accepted)
		if status := tv.api(http.MethodDelete, "/api/v1/hosts/"+a.HostID, token, nil, nil); status != http.StatusNoContent {
			t.Fatalf("delete host: %d", status)
		}
		status, problem := a.call(agentproto.PathHeartbeat, agentproto.HeartbeatRequest{Agent: testAgentInfo}, nil)
		if status != http.StatusUnauthorized || problem.Error.Code != agentproto.CodeUnauthenticated {
			t.Fatalf("revoked host's heartbeat: %d %+v", status, problem)
		}
		var job struct{ State string }
		tv.api(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, token, nil, &job)
		if job.State != models.JobCancelled {
			t.Fatalf("the removed host's job: %s, want Cancelled", job.State)
		}
	})
}

func TestExpiredLeaseReturnsTheTaskToTheQueueWithItsAttemptCount(t *testing.T) {
	tv := newTestVault(t, "")
	siteID, token := newAgentSite(t, tv)
	a := tv.mustRegister(token, siteID, "hv1")
	tv.api(http.MethodPost, "/api/v1/hosts/"+a.HostID+"/check", token, nil, nil)
	first := a.poll(1).Tasks[0]
	tv.Clock.T = tv.Clock.T.Add(11 * time.Second) // past the 10 s test lease, no progress
	if n, err := tv.Store.ReapExpiredLeases(context.Background()); err != nil || n != 1 {
		t.Fatalf("reap: %d %v", n, err)
	}
	again := a.poll(1).Tasks
	if len(again) != 1 || again[0].ID != first.ID || again[0].Attempt != 2 {
		t.Fatalf("after the lease expired: %+v", again)
	}
}

func TestCancellingAJobReachesTheAgentThroughPollAndProgress(t *testing.T) {
	tv := newTestVault(t, "")
	siteID, token := newAgentSite(t, tv)
	a := tv.mustRegister(token, siteID, "hv1")
	var accepted struct {
		JobID string `json:"job_id"`
	}
	tv.api(http.MethodPost, "/api/v1/hosts/"+a.HostID+"/check", token, nil, &accepted)
	task := a.poll(1).Tasks[0]
	if status := tv.api(http.MethodPost, "/api/v1/jobs/"+accepted.JobID+"/cancel", token, nil, nil); status != http.StatusAccepted {
		t.Fatalf("cancel: %d", status)
	}
	if got := a.poll(1); len(got.Cancel) != 1 || got.Cancel[0] != task.ID {
		t.Fatalf("poll after cancel: %+v", got)
	}
	var pr agentproto.ProgressResponse
	a.call(agentproto.TaskProgressPath(task.ID), agentproto.Progress{Percent: 10}, &pr)
	if !pr.Cancel {
		t.Fatal("the progress answer does not carry the cancellation")
	}
	a.call(agentproto.TaskResultPath(task.ID), agentproto.Result{Error: &agentproto.TaskError{Code: "cancelled", Message: "stopped"}}, nil)
	var job struct{ State string }
	tv.api(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, token, nil, &job)
	if job.State != models.JobCancelled {
		t.Fatalf("job: %s, want Cancelled", job.State)
	}
}

func TestInventoryFromTheAgentShowsInTheAPI(t *testing.T) {
	tv := newTestVault(t, "")
	siteID, token := newAgentSite(t, tv)
	a := tv.mustRegister(token, siteID, "hv1")
	inv := agentproto.Inventory{VMs: []agentproto.VM{{ID: "web", Name: "web", PowerState: "Running", Disks: []agentproto.Disk{{Path: "/vms/web/disk0.img", SizeBytes: 1 << 20, Format: "raw"}}}}}
	if status, problem := a.call(agentproto.PathInventory, inv, nil); status != http.StatusOK {
		t.Fatalf("inventory: %d %+v", status, problem)
	}
	var vms struct {
		Items []struct {
			Name   string
			HostID string `json:"host_id"`
			Disks  []struct{ Path string }
		}
	}
	tv.api(http.MethodGet, "/api/v1/vms?host_id="+a.HostID, token, nil, &vms)
	if len(vms.Items) != 1 || len(vms.Items[0].Disks) != 1 {
		t.Fatalf("VMs: %+v", vms)
	}
	dup := agentproto.Inventory{VMs: []agentproto.VM{{ID: "a"}, {ID: "a"}}}
	if status, _ := a.call(agentproto.PathInventory, dup, nil); status != http.StatusBadRequest {
		t.Fatalf("a repeated VM id: %d, want 400", status)
	}
}

func TestSilentHostBecomesDisconnectedWithAnAlertAndComesBack(t *testing.T) {
	tv := newTestVault(t, "")
	siteID, token := newAgentSite(t, tv)
	a := tv.mustRegister(token, siteID, "hv1")
	tv.Clock.T = tv.Clock.T.Add(time.Minute)
	hosts, err := tv.Store.MarkSilentHostsDisconnected(context.Background(), 45*time.Second)
	if err != nil || len(hosts) != 1 {
		t.Fatalf("mark: %v %v", hosts, err)
	}
	var alerts struct {
		Items []struct{ Kind, State string }
	}
	tv.api(http.MethodGet, "/api/v1/alerts?state=Active", token, nil, &alerts)
	if len(alerts.Items) != 1 || alerts.Items[0].Kind != models.AlertHostDisconnected {
		t.Fatalf("alerts: %+v", alerts)
	}
	a.call(agentproto.PathHeartbeat, agentproto.HeartbeatRequest{Agent: testAgentInfo}, nil)
	var host struct{ State string }
	tv.api(http.MethodGet, "/api/v1/hosts/"+a.HostID, token, nil, &host)
	tv.api(http.MethodGet, "/api/v1/alerts?state=Active", token, nil, &alerts)
	if host.State != models.HostConnected || len(alerts.Items) != 0 {
		t.Fatalf("after a heartbeat: %s, %d active alerts", host.State, len(alerts.Items))
	}
}

func TestPortalRunsAHostCheckAndShowsItsResultOnTheJobPage(t *testing.T) {
	tv := newTestVault(t, "")
	siteID, token := newAgentSite(t, tv)
	a := tv.mustRegister(token, siteID, "hv1")
	p := tv.login("Contributor")
	resp, doc := p.get("/sites/" + siteID)
	if testid(doc, "registration-key").Length() != 1 || texts(testid(doc, "host-name"))[0] != "hv1" {
		t.Fatal("the site page offers no registration key or misses its host")
	}
	if testid(doc, "registration-key-warning").Length() != 0 {
		t.Fatal("the site page warns about a vault address hosts can reach")
	}
	// The command it shows runs an agent that finds VMs: it names them.
	if text := doc.Find("main").Text(); !strings.Contains(text, "--driver filedisk --vm-root") || !strings.Contains(text, "--driver qemu --qmp-dir") {
		t.Fatalf("the site page's agent command names no VMs:\n%s", text)
	}
	resp, _ = p.post("/sites/"+siteID+"/registration-key", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("registration key download: %d %q", resp.StatusCode, resp.Header.Get("Content-Disposition"))
	}
	resp, doc = p.post("/hosts/"+a.HostID+"/check", nil)
	if !strings.HasPrefix(resp.Request.URL.Path, "/jobs/") || !strings.Contains(testid(doc, "job-state").Text(), "In progress") {
		t.Fatalf("after starting the check: %s %q", resp.Request.URL.Path, testid(doc, "job-state").Text())
	}
	// Without JavaScript (its live updates): a meta refresh in noscript,
	// which the parser reads, as a browser running scripts does, as text.
	refreshes := func(doc *goquery.Document) bool {
		return strings.Contains(doc.Find("head noscript").Text(), `<meta http-equiv="refresh"`)
	}
	if !refreshes(doc) || doc.Find(`head > meta[http-equiv="refresh"]`).Length() != 0 {
		t.Fatal("a running job's page must refresh itself without JavaScript, and only without")
	}
	jobPath := resp.Request.URL.Path
	task := a.poll(1).Tasks[0]
	result, _ := json.Marshal(agentproto.PrerequisitesResult{Checks: []agentproto.Check{
		{Name: "Free space in the state directory", OK: true, Message: "40 GiB free"},
		{Name: "Clock skew", OK: false, Message: "the host's clock is 95 s ahead of the vault"},
	}})
	a.call(agentproto.TaskResultPath(task.ID), agentproto.Result{Result: result}, nil)
	_, doc = p.get(jobPath)
	if got := texts(testid(doc, "check-name")); len(got) != 2 || !strings.Contains(texts(testid(doc, "check-ok"))[1], "Failed") {
		t.Fatalf("checks on the job page: %v %v", got, texts(testid(doc, "check-ok")))
	}
	if refreshes(doc) || testid(doc, "job-cancel").Length() != 0 {
		t.Fatal("an ended job's page still refreshes or offers to cancel")
	}
}

// The registration key's body is read like any other: garbage is refused,
// and the key may be made to expire sooner than 5 days, not later.
func TestARegistrationKeyBodyIsValidatedAndMayShortenItsLife(t *testing.T) {
	tv := newTestVault(t, "")
	siteID, token := newAgentSite(t, tv)
	path := "/api/v1/sites/" + siteID + "/registration-key"
	status, raw := tv.apiRaw(http.MethodPost, path, token, "garbage{")
	wantAPIError(t, "a body that is not JSON", status, raw, http.StatusBadRequest, "invalid_json")
	for _, hours := range []int{-1, 121} {
		status, raw := tv.apiRaw(http.MethodPost, path, token, map[string]int{"expires_in_hours": hours})
		wantAPIError(t, fmt.Sprintf("expires_in_hours %d", hours), status, raw, http.StatusBadRequest, "validation_failed", "expires_in_hours")
	}
	var key agentproto.RegistrationKey
	if status := tv.api(http.MethodPost, path, token, map[string]int{"expires_in_hours": 2}, &key); status != http.StatusCreated || !key.ExpiresAt.Equal(tv.Clock.T.Add(2*time.Hour)) {
		t.Fatalf("a 2-hour key: %d, expires %v", status, key.ExpiresAt)
	}
}

// An agent that drops its long poll (it stops, its connection breaks) is
// not an error of the vault: nothing is logged at ERROR, and no 500.
func TestAnAgentThatDropsItsLongPollIsNotLoggedAsAnError(t *testing.T) {
	tv := newTestVault(t, "")
	siteID, token := newAgentSite(t, tv)
	a := tv.mustRegister(token, siteID, "hv1")
	b, _ := json.Marshal(agentproto.PollRequest{Agent: testAgentInfo, Free: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tv.URL+agentproto.PathPoll, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	if resp, err := a.client.Do(req); err == nil {
		resp.Body.Close()
		// A machine so loaded that the client's 100 ms deadline fired late
		// may still read the answer of a poll that was held: only an answer
		// before the vault's wait could have ended is wrong.
		if took := time.Since(start); took < 200*time.Millisecond {
			t.Fatalf("the poll answered (%d) after %s; it should have been held", resp.StatusCode, took)
		}
	}
	time.Sleep(500 * time.Millisecond) // the vault's poll wait (300 ms) ends
	if logs := tv.logs.String(); strings.Contains(logs, "level=ERROR") || strings.Contains(logs, "status=500") {
		t.Fatalf("a dropped poll was logged as an error:\n%s", logs)
	}
}
