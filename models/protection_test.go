package models_test

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/models/storetest"
)

// leaseOne leases the host's next task and checks its kind.
func leaseOne(t *testing.T, h *harness, hostID, kind string) models.Task {
	t.Helper()
	tasks, err := h.s.LeaseTasks(t.Context(), hostID, 5, time.Minute)
	if err != nil || len(tasks) != 1 || tasks[0].Kind != kind {
		t.Fatalf("lease %s: %+v %v", kind, tasks, err)
	}
	return tasks[0]
}

func complete(t *testing.T, h *harness, hostID string, task models.Task, o models.TaskOutcome) {
	t.Helper()
	if err := h.s.CompleteTask(t.Context(), hostID, task.ID, o); err != nil {
		t.Fatalf("complete %s: %v", task.Kind, err)
	}
}

func cycleResult(task models.Task, at time.Time, pruned ...string) models.TaskOutcome {
	var p agentproto.ReplicationPayload
	json.Unmarshal([]byte(task.Payload), &p)
	consistency := "crash"
	if p.AppConsistent {
		consistency = "app" // an agent that quiesces when asked
	}
	b, _ := json.Marshal(agentproto.ReplicateResult{PointID: p.PointID, Time: at, Consistency: consistency, SizeBytes: 1 << 30, BytesSent: 4096, Pruned: pruned})
	return models.TaskOutcome{Result: string(b)}
}

func protectedVM(t *testing.T, h *harness) (models.VMSummary, *models.Host, *models.Job) {
	site := mustSite(t, h, "s")
	host := mustHost(t, h, site.ID, "hv", models.HostConnected)
	vm := mustVMs(t, h, host.ID, "web")["web"]
	policy, target := mustPolicy(t, h, "p"), mustDirectoryTarget(t, h, "nas")
	job, err := h.s.EnableProtection(t.Context(), alice, vm.ID, policy.ID, target.ID)
	if err != nil {
		t.Fatal(err)
	}
	return vm, host, job
}

func TestEnablingProtectionRunsItsStepsInOrderAndEndsProtected(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, job := protectedVM(t, h)
		prot, _ := h.s.GetProtection(t.Context(), vm.ID)
		_, err := h.s.EnableProtection(t.Context(), alice, vm.ID, prot.PolicyID, prot.TargetID)
		wantConflict(t, err, "already_protected")
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.State != models.StateInitialReplication {
			t.Fatalf("after creating the replicas: %s", p.State)
		}
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))
		got, _ := h.s.GetJob(t.Context(), job.ID)
		if got.State != models.JobSucceeded {
			t.Fatalf("job %s, steps %+v", got.State, got.Steps)
		}
		p, _ := h.s.GetProtection(t.Context(), vm.ID)
		points, _ := listPoints(t, h, vm.ID)
		if p.State != models.StateProtected || len(points) != 1 || p.BytesSent != 4096 || p.LastRecoveryPointAt == nil {
			t.Fatalf("protection %+v, %d points", p, len(points))
		}
	})
}

func TestAFailedStepFailsTheJobSkipsTheRestAndMarksTheVMCritical(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, job := protectedVM(t, h)
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck),
			models.TaskOutcome{ErrorCode: "prerequisites_failed", Message: "disk unreadable"})
		got, _ := h.s.GetJob(t.Context(), job.ID)
		if got.State != models.JobFailed || got.ErrorCode != "prerequisites_failed" || got.Steps[1].State != models.JobCancelled || got.Steps[3].State != models.JobCancelled {
			t.Fatalf("job %+v", got)
		}
		if tasks, _ := h.s.LeaseTasks(t.Context(), host.ID, 5, time.Minute); len(tasks) != 0 {
			t.Fatalf("later steps still ran: %+v", tasks)
		}
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.Health != models.HealthCritical {
			t.Fatalf("health %s", p.Health)
		}
		if _, err := h.s.DisableProtection(t.Context(), alice, vm.ID, false); err != nil {
			t.Fatalf("disable after a failed enable: %v", err)
		}
	})
}

func TestDisablingWithDeleteRunsAJobThatForgetsTheProtectionOnlyWhenTheDataIsGone(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := protectedVM(t, h)
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))

		job, err := h.s.DisableProtection(t.Context(), alice, vm.ID, true)
		if err != nil || job == nil || job.Type != models.JobDisableProtection {
			t.Fatalf("disable with delete: %+v %v", job, err)
		}
		p, _ := h.s.GetProtection(t.Context(), vm.ID)
		if p.State != models.StateDisablingProtection {
			t.Fatalf("state %s, want DisablingProtection while the data is deleted", p.State)
		}
		if q, _ := h.s.ScheduleReplications(t.Context()); len(q) != 0 {
			t.Fatal("a cycle was scheduled for a VM being disabled")
		}
		_, err = h.s.EnableProtection(t.Context(), alice, vm.ID, p.PolicyID, p.TargetID)
		wantConflict(t, err, "already_protected")
		// The agent fails once for good: the protection stays, Critical.
		del := leaseOne(t, h, host.ID, agentproto.TaskDeleteReplica)
		var pl agentproto.ReplicationPayload
		json.Unmarshal([]byte(del.Payload), &pl)
		if pl.Target.Kind != models.TargetDirectory || pl.Target.Path == "" || pl.VMID == "" {
			t.Fatalf("delete payload %+v", pl)
		}
		complete(t, h, host.ID, del, models.TaskOutcome{ErrorCode: "target_not_writable", Message: "read-only"})
		if p, _ = h.s.GetProtection(t.Context(), vm.ID); p.State != models.StateDisablingProtection || p.Health != models.HealthCritical {
			t.Fatalf("after a failed delete: %s %s", p.State, p.Health)
		}
		// Disabling again starts a new job; when it succeeds the VM is
		// unprotected and its points are forgotten.
		job, err = h.s.DisableProtection(t.Context(), alice, vm.ID, true)
		if err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskDeleteReplica), models.TaskOutcome{Result: "{}"})
		if _, err := h.s.GetProtection(t.Context(), vm.ID); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("protection after the delete job: %v", err)
		}
		if got, _ := h.s.GetJob(t.Context(), job.ID); got.State != models.JobSucceeded {
			t.Fatalf("job %s", got.State)
		}
		if points, _, _ := h.s.ListRecoveryPoints(t.Context(), vm.ID, models.Page{Limit: 10}); len(points) != 0 {
			t.Fatalf("points left: %d", len(points))
		}
	})
}

func TestCyclesAreScheduledAtTheCopyFrequencyAndFailuresBackOff(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := protectedVM(t, h) // policy: copy every 5 minutes
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))

		schedule := func() int {
			q, err := h.s.ScheduleReplications(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return len(q)
		}
		h.advance(4 * time.Minute)
		if n := schedule(); n != 0 {
			t.Fatalf("a cycle before the copy frequency: %d", n)
		}
		h.advance(time.Minute)
		if n := schedule(); n != 1 {
			t.Fatalf("no cycle at the copy frequency: %d", n)
		}
		if n := schedule(); n != 0 {
			t.Fatal("a second cycle while one is queued")
		}
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, cycle, models.TaskOutcome{ErrorCode: "target_unavailable", Message: "NAS unreachable", Recoverable: true})
		p, _ := h.s.GetProtection(t.Context(), vm.ID)
		if p.Failures != 1 || p.NextRetryAt == nil || !p.NextRetryAt.Equal(h.clock.T.Add(time.Minute)) || p.Health != models.HealthWarning {
			t.Fatalf("after a recoverable failure: %+v", p)
		}
		h.advance(59 * time.Second)
		if n := schedule(); n != 0 {
			t.Fatal("retried before the back-off")
		}
		h.advance(time.Second)
		if n := schedule(); n != 1 {
			t.Fatal("not retried after the back-off")
		}
		retry := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, retry, cycleResult(retry, h.clock.T, initial.ID))
		p, _ = h.s.GetProtection(t.Context(), vm.ID)
		if p.Failures != 0 || p.NextRetryAt != nil || p.Health != models.HealthNormal {
			t.Fatalf("a success must reset the schedule: %+v", p)
		}
		// No cycle for 11 minutes (agent gone): the RPO is above twice 5 min.
		h.advance(11 * time.Minute)
		h.s.ScheduleReplications(t.Context())
		if p, _ = h.s.GetProtection(t.Context(), vm.ID); p.Health != models.HealthWarning {
			t.Fatalf("stale RPO: health %s", p.Health)
		}
	})
}

func TestAzureTasksGetASASForTheirVMsContainerOnly(t *testing.T) {
	az := azuritetest.Start(t)
	eachBackend(t, func(t *testing.T, h *harness) {
		site := mustSite(t, h, "s")
		host := mustHost(t, h, site.ID, "hv", models.HostConnected)
		other := mustHost(t, h, site.ID, "hv2", models.HostConnected)
		vm := mustVMs(t, h, host.ID, "web")["web"]
		policy := mustPolicy(t, h, "p")
		target, err := h.s.CreateTarget(t.Context(), alice, models.TargetInput{Name: "az", Kind: models.TargetAzureBlob,
			AccountURL: az.AccountURL(), Container: "lifeboat", CredentialKind: models.CredentialAccountKey, Credential: azuritetest.Key})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.EnableProtection(t.Context(), alice, vm.ID, policy.ID, target.ID); err != nil {
			t.Fatal(err)
		}
		_, err = h.s.StorageCredentials(t.Context(), host.ID, "task_missing", agentproto.StorageCredentialsRequest{})
		if !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("unknown task: %v", err)
		}
		check := leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck)
		if _, err := h.s.StorageCredentials(t.Context(), other.ID, check.ID, agentproto.StorageCredentialsRequest{}); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("another host's task: %v", err)
		}
		creds, err := h.s.StorageCredentials(t.Context(), host.ID, check.ID, agentproto.StorageCredentialsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		wantURL := az.AccountURL() + "/lifeboat-" + strings.TrimPrefix(vm.ID, "vm_")
		if creds.ContainerURL != wantURL || strings.Contains(creds.SAS, azuritetest.Key) || time.Until(creds.ExpiresAt) > 61*time.Minute {
			t.Fatalf("credentials %+v, want container %s and an hour's SAS", creds, wantURL)
		}
		// The vault made the container; the SAS writes in it, and only there.
		c, _ := container.NewClientWithNoCredential(creds.ContainerURL+"?"+creds.SAS, nil)
		if _, err := c.NewBlockBlobClient("probe").UploadBuffer(t.Context(), []byte("x"), nil); err != nil {
			t.Fatalf("write with the SAS: %v", err)
		}
		// Another VM's container exists; this VM's SAS cannot write there.
		key, _ := container.NewSharedKeyCredential(azuritetest.Account, azuritetest.Key)
		otherVM, _ := container.NewClientWithSharedKeyCredential(az.AccountURL()+"/lifeboat-other-"+strings.ToLower(storetest.Name("v"))[:6], key, nil)
		if _, err := otherVM.Create(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		elsewhere, _ := container.NewClientWithNoCredential(otherVM.URL()+"?"+creds.SAS, nil)
		if _, err := elsewhere.NewBlockBlobClient("probe").UploadBuffer(t.Context(), []byte("x"), nil); err == nil {
			t.Fatal("the SAS of one VM wrote into another VM's container")
		}
		snap, err := c.NewBlockBlobClient("probe").CreateSnapshot(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := h.s.StorageCredentials(t.Context(), host.ID, check.ID, agentproto.StorageCredentialsRequest{Blob: "probe", Snapshot: *snap.Snapshot})
		if err != nil {
			t.Fatal(err)
		}
		sb, _ := blob.NewClientWithNoCredential(sc.ContainerURL+"/probe?snapshot="+url.QueryEscape(*snap.Snapshot)+"&"+sc.SAS, nil)
		if _, err := sb.GetProperties(t.Context(), nil); err != nil {
			t.Fatalf("read the snapshot with its SAS: %v", err)
		}
		_, err = h.s.StorageCredentials(t.Context(), host.ID, check.ID, agentproto.StorageCredentialsRequest{Blob: "probe"})
		wantFields(t, err, "snapshot")
		// A finished task gets nothing more.
		complete(t, h, host.ID, check, models.TaskOutcome{Result: "{}"})
		if _, err := h.s.StorageCredentials(t.Context(), host.ID, check.ID, agentproto.StorageCredentialsRequest{}); !errors.Is(err, models.ErrLeaseLost) {
			t.Fatalf("a finished task: %v", err)
		}
		// A key the storage refuses is said so, and not retried.
		if _, err := h.s.UpdateTarget(t.Context(), alice, target.ID, models.TargetInput{Name: "az", Kind: models.TargetAzureBlob,
			AccountURL: az.AccountURL(), Container: "lifeboat", CredentialKind: models.CredentialAccountKey, Credential: "AAAA" + azuritetest.Key[4:]}); err != nil {
			t.Fatal(err)
		}
		create := leaseOne(t, h, host.ID, agentproto.TaskCreateReplica)
		_, err = h.s.StorageCredentials(t.Context(), host.ID, create.ID, agentproto.StorageCredentialsRequest{})
		var se *models.StorageError
		if !errors.As(err, &se) || se.Code != "storage_access_denied" || se.Recoverable {
			t.Fatalf("a refused key: %v", err)
		}
	})
}

func TestDirectoryTasksGetNoSAS(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		_, host, _ := protectedVM(t, h)
		check := leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck)
		_, err := h.s.StorageCredentials(t.Context(), host.ID, check.ID, agentproto.StorageCredentialsRequest{})
		wantConflict(t, err, "target_not_azure")
	})
}

func TestTargetContainerLeavesRoomForTheVMID(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		_, err := h.s.CreateTarget(t.Context(), alice, models.TargetInput{Name: "az", Kind: models.TargetAzureBlob,
			AccountURL: "https://acct.blob.core.windows.net", Container: strings.Repeat("a", 37), CredentialKind: models.CredentialAccountKey,
			Credential: "c2VjcmV0LWFjY291bnQta2V5LW9mLWxpZmVib2F0"})
		wantFields(t, err, "container")
	})
}

func TestCyclesAskForAnAppConsistentPointAtThePolicysFrequency(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := protectedVM(t, h) // default policy: app-consistent every 4 h
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))
		appAsked := func() bool {
			h.advance(5 * time.Minute)
			if _, err := h.s.ScheduleReplications(t.Context()); err != nil {
				t.Fatal(err)
			}
			task := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
			var p agentproto.ReplicationPayload
			json.Unmarshal([]byte(task.Payload), &p)
			o := cycleResult(task, h.clock.T)
			if p.AppConsistent {
				var r agentproto.ReplicateResult
				json.Unmarshal([]byte(o.Result), &r)
				r.Consistency = "app"
				b, _ := json.Marshal(r)
				o.Result = string(b)
			}
			complete(t, h, host.ID, task, o)
			return p.AppConsistent
		}
		if !appAsked() {
			t.Fatal("no app-consistent point was asked for while there is none")
		}
		if appAsked() {
			t.Fatal("an app-consistent point was asked for 5 minutes after the last one")
		}
		h.advance(4 * time.Hour)
		if !appAsked() {
			t.Fatal("no app-consistent point after the policy's 4 hours")
		}
		points, _ := listPoints(t, h, vm.ID)
		apps := 0
		for _, p := range points {
			if p.Consistency == models.ConsistencyApp {
				apps++
			}
		}
		if apps != 2 {
			t.Fatalf("%d app-consistent points, want 2", apps)
		}
		first, next, err := h.s.ListRecoveryPoints(t.Context(), vm.ID, models.Page{Limit: 3})
		rest, last, _ := h.s.ListRecoveryPoints(t.Context(), vm.ID, models.Page{Limit: 3, Cursor: next})
		if err != nil || len(first) != 3 || next == "" || len(rest) != 1 || last != "" || !first[0].Time.After(rest[0].Time) {
			t.Fatalf("pages of points: %d then %d (cursor %q, then %q), %v", len(first), len(rest), next, last, err)
		}
	})
}

func TestCyclesCarryTheBandwidthLimitOfTheHour(t *testing.T) {
	p := models.DefaultPolicy() // work hours 08:00–18:00
	p.WorkHoursMbps, p.OffHoursMbps = 100, 0
	paris, _ := time.LoadLocation("Europe/Paris")
	cases := map[string]int{"2026-03-09T07:59:00+01:00": 0, "2026-03-09T08:00:00+01:00": 100, "2026-03-09T17:59:00+01:00": 100, "2026-03-09T18:00:00+01:00": 0}
	for at, want := range cases {
		ts, _ := time.Parse(time.RFC3339, at)
		if got := models.BandwidthAt(p, ts, paris); got != want {
			t.Errorf("at %s: %d Mbit/s, want %d", at, got, want)
		}
	}
	// And the payload of a scheduled cycle carries it (the store reads work
	// hours in its own zone, UTC in tests; the test clock is 10:00 UTC).
	eachBackend(t, func(t *testing.T, h *harness) {
		site := mustSite(t, h, "s")
		host := mustHost(t, h, site.ID, "hv", models.HostConnected)
		vm := mustVMs(t, h, host.ID, "web")["web"]
		pol := models.DefaultPolicy()
		pol.Name, pol.WorkHoursMbps, pol.OffHoursMbps = "limited", 50, 500
		if err := h.s.CreatePolicy(t.Context(), alice, &pol); err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.EnableProtection(t.Context(), alice, vm.ID, pol.ID, mustDirectoryTarget(t, h, "nas").ID); err != nil {
			t.Fatal(err)
		}
		task := leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck)
		var payload agentproto.ReplicationPayload
		json.Unmarshal([]byte(task.Payload), &payload)
		if payload.BandwidthMbps != 50 {
			t.Fatalf("at 10:00 the work-hours limit applies: %d", payload.BandwidthMbps)
		}
	})
}

func listPoints(t *testing.T, h *harness, vmID string) ([]models.RecoveryPoint, error) {
	t.Helper()
	points, _, err := h.s.ListRecoveryPoints(t.Context(), vmID, models.Page{})
	return points, err
}

func TestPendingChangesOverHalfADiskWaitForTheResyncWindowOrTheButton(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := protectedVM(t, h) // default policy: resync window 18:30–06:00, UTC; the clock says 10:00
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))

		h.advance(6 * time.Minute)
		if q, err := h.s.ScheduleReplications(t.Context()); err != nil || len(q) != 1 {
			t.Fatalf("schedule: %v %v", q, err)
		}
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		var pl agentproto.ReplicationPayload
		json.Unmarshal([]byte(cycle.Payload), &pl)
		if pl.ResyncThresholdPercent != 50 {
			t.Fatalf("a scheduled cycle carries threshold %d, want 50", pl.ResyncThresholdPercent)
		}
		complete(t, h, host.ID, cycle, models.TaskOutcome{ErrorCode: agentproto.CodeResyncRequired, Message: "60 % of disk d0 changed"})
		p, _ := h.s.GetProtection(t.Context(), vm.ID)
		if p.State != models.StateResyncRequired || p.Health != models.HealthWarning || !strings.Contains(p.HealthReasons, "18:30–06:00") ||
			!strings.Contains(p.HealthReasons, "60 % of disk d0 changed") || p.Failures != 0 {
			t.Fatalf("after the threshold: %s %s %s failures %d", p.State, p.Health, p.HealthReasons, p.Failures)
		}
		// Outside the window, nothing starts by itself, hour after hour.
		for range 8 {
			h.advance(time.Hour) // 10:06 … 18:06
			if q, _ := h.s.ScheduleReplications(t.Context()); len(q) != 0 {
				t.Fatalf("at %s something started: %+v", h.clock.T.Format("15:04"), q)
			}
		}
		// 18:36: inside the window, the resync starts, as a job.
		h.advance(30 * time.Minute)
		q, err := h.s.ScheduleReplications(t.Context())
		if err != nil || len(q) != 1 || q[0].Kind != agentproto.TaskResync || q[0].JobID == "" {
			t.Fatalf("in the window: %+v %v", q, err)
		}
		if p, _ = h.s.GetProtection(t.Context(), vm.ID); p.State != models.StateResynchronizing {
			t.Fatalf("state %s", p.State)
		}
		job, _ := h.s.GetJob(t.Context(), q[0].JobID)
		if job.Type != models.JobResync || job.CreatedBy != "system" {
			t.Fatalf("job %+v", job)
		}
		var rp agentproto.ReplicationPayload
		json.Unmarshal([]byte(q[0].Payload), &rp)
		if rp.ResyncThresholdPercent != 0 {
			t.Fatal("a resync must send whatever differs, with no threshold")
		}
		if again, _ := h.s.ScheduleReplications(t.Context()); len(again) != 0 {
			t.Fatalf("a second resync started: %+v", again)
		}
	})
}

func TestTheResynchronizeButtonStartsAtOnceOutsideTheWindow(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := protectedVM(t, h)
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))
		h.advance(6 * time.Minute)
		h.s.ScheduleReplications(t.Context())
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskReplicate), models.TaskOutcome{ErrorCode: agentproto.CodeResyncRequired, Message: "much changed"})
		job, err := h.s.StartResync(t.Context(), alice, vm.ID) // 10:06, outside 18:30–06:00
		if err != nil {
			t.Fatal(err)
		}
		resync := leaseOne(t, h, host.ID, agentproto.TaskResync)
		if resync.JobID != job.ID {
			t.Fatalf("task of job %s, want %s", resync.JobID, job.ID)
		}
		complete(t, h, host.ID, resync, cycleResult(resync, h.clock.T))
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.State != models.StateProtected || p.Health != models.HealthNormal {
			t.Fatalf("after the resync: %s %s", p.State, p.Health)
		}
		if got, _ := h.s.GetJob(t.Context(), job.ID); got.State != models.JobSucceeded || !strings.Contains(got.Steps[0].Message, "sent 4.0 KiB of blocks") ||
			!strings.Contains(got.Steps[0].Message, "new recovery point") {
			t.Fatalf("the resync job says %q", got.Steps[0].Message)
		}
	})
}

func TestAnAzureResyncReadsTheReplicaBackOnlyAfterAVerifyFoundItChanged(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		site := mustSite(t, h, "s")
		host := mustHost(t, h, site.ID, "hv", models.HostConnected)
		vm := mustVMs(t, h, host.ID, "web")["web"]
		policy := mustPolicy(t, h, "p")
		az, err := h.s.CreateTarget(t.Context(), alice, models.TargetInput{Name: "az", Kind: models.TargetAzureBlob,
			AccountURL: "https://acct.blob.core.windows.net", Container: "lifeboat", CredentialKind: models.CredentialAccountKey,
			Credential: "c2VjcmV0LWFjY291bnQta2V5LW9mLWxpZmVib2F0"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.EnableProtection(t.Context(), alice, vm.ID, policy.ID, az.ID); err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))
		checks := func() bool {
			t.Helper()
			if _, err := h.s.StartResync(t.Context(), alice, vm.ID); err != nil {
				t.Fatal(err)
			}
			task := leaseOne(t, h, host.ID, agentproto.TaskResync)
			var pl agentproto.ReplicationPayload
			json.Unmarshal([]byte(task.Payload), &pl)
			complete(t, h, host.ID, task, cycleResult(task, h.clock.T))
			return pl.CheckReplica
		}
		if checks() {
			t.Fatal("an Azure resync with no sign of a changed replica downloads it")
		}
		// A verify that finds every block right says which point it read
		// and how much of it.
		points, _, _ := h.s.ListRecoveryPoints(t.Context(), vm.ID, models.Page{Limit: 1})
		clean, err := h.s.StartVerify(t.Context(), alice, vm.ID, points[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		ok := leaseOne(t, h, host.ID, agentproto.TaskVerify)
		b, _ := json.Marshal(agentproto.VerifyResult{PointID: points[0].ID, BlocksChecked: 2560})
		complete(t, h, host.ID, ok, models.TaskOutcome{Result: string(b)})
		if got, _ := h.s.GetJob(t.Context(), clean.ID); got.State != models.JobSucceeded ||
			!strings.Contains(got.Steps[0].Message, points[0].ID) || !strings.Contains(got.Steps[0].Message, "all 2560 blocks (10.0 MiB)") {
			t.Fatalf("a clean verify: %s %q", got.State, got.Steps[0].Message)
		}
		// A verify finds blocks the storage changed: the next resync checks.
		if _, err := h.s.StartVerify(t.Context(), alice, vm.ID, points[0].ID); err != nil {
			t.Fatal(err)
		}
		verify := leaseOne(t, h, host.ID, agentproto.TaskVerify)
		b, _ = json.Marshal(agentproto.VerifyResult{PointID: points[0].ID, BlocksChecked: 10, Mismatches: []agentproto.Mismatch{{Disk: "d", Offset: 4096}}})
		complete(t, h, host.ID, verify, models.TaskOutcome{Result: string(b)})
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.State != models.StateResyncRequired || p.LastErrorCode != "replica_mismatch" {
			t.Fatalf("after a mismatch: %s %s", p.State, p.LastErrorCode)
		}
		if !checks() {
			t.Fatal("after a verify mismatch the resync does not read the replica back")
		}
		// That resync succeeded: the next one is back to comparing hashes.
		if checks() {
			t.Fatal("the check stuck after a successful resync")
		}
	})
}

func TestADiskThatGrewIsReplicatedAtItsNewSizeFromThenOn(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		_, host, _ := protectedVM(t, h)
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		var pl agentproto.ReplicationPayload
		json.Unmarshal([]byte(initial.Payload), &pl)
		grown := pl.Disks[0].SizeBytes + 3<<20
		b, _ := json.Marshal(agentproto.ReplicateResult{PointID: pl.PointID, Time: h.clock.T, Consistency: "crash", SizeBytes: grown,
			DiskSizes: map[string]int64{pl.Disks[0].ReplicaID: grown}})
		complete(t, h, host.ID, initial, models.TaskOutcome{Result: string(b)})
		h.advance(6 * time.Minute)
		h.s.ScheduleReplications(t.Context())
		next := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		var np agentproto.ReplicationPayload
		json.Unmarshal([]byte(next.Payload), &np)
		if np.Disks[0].SizeBytes != grown {
			t.Fatalf("the next cycle says %d bytes, want the grown %d", np.Disks[0].SizeBytes, grown)
		}
	})
}

func TestANonRecoverableCycleErrorStopsReplicationAndIsNotRetried(t *testing.T) {
	for _, code := range []string{"replica_missing", "storage_access_denied"} {
		t.Run(code, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, h *harness) {
				vm, host, _ := protectedVM(t, h)
				complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
				complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
				initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
				complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))
				h.advance(6 * time.Minute)
				h.s.ScheduleReplications(t.Context())
				complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskReplicate), models.TaskOutcome{ErrorCode: code, Message: "gone"})
				p, _ := h.s.GetProtection(t.Context(), vm.ID)
				if p.Health != models.HealthCritical || p.LastErrorCode != code || p.NextRetryAt != nil {
					t.Fatalf("after %s: health %s, code %s, next %v", code, p.Health, p.LastErrorCode, p.NextRetryAt)
				}
				for range 6 {
					h.advance(30 * time.Minute)
					if q, _ := h.s.ScheduleReplications(t.Context()); len(q) != 0 {
						t.Fatalf("a cycle was retried after %s", code)
					}
				}
			})
		})
	}
}

func TestTheVaultDeletesTheContainerAnAgentEmptied(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		az := azuritetest.Start(t) // one per backend: this test stops it
		site := mustSite(t, h, "s")
		host := mustHost(t, h, site.ID, "hv", models.HostConnected)
		vm := mustVMs(t, h, host.ID, "web")["web"]
		policy := mustPolicy(t, h, "p")
		target, err := h.s.CreateTarget(t.Context(), alice, models.TargetInput{Name: "az", Kind: models.TargetAzureBlob,
			AccountURL: az.AccountURL(), Container: "lb" + strings.ToLower(storetest.Name("c"))[:8], CredentialKind: models.CredentialAccountKey, Credential: azuritetest.Key})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.EnableProtection(t.Context(), alice, vm.ID, policy.ID, target.ID); err != nil {
			t.Fatal(err)
		}
		check := leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck)
		creds, err := h.s.StorageCredentials(t.Context(), host.ID, check.ID, agentproto.StorageCredentialsRequest{}) // creates the container
		if err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, check, models.TaskOutcome{Result: "{}"})
		if _, err := h.s.DisableProtection(t.Context(), alice, vm.ID, true); err != nil {
			t.Fatal(err)
		}
		// Storage away: the deletion waits and is tried again.
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskDeleteReplica), models.TaskOutcome{Result: "{}"})
		az.Stop()
		if n, err := h.s.CleanUpContainers(t.Context()); n != 0 || err == nil {
			t.Fatalf("with the storage away: %d, %v", n, err)
		}
		az.Restart()
		if n, _ := h.s.CleanUpContainers(t.Context()); n != 0 {
			t.Fatal("tried again before its back-off")
		}
		h.advance(time.Minute)
		if n, err := h.s.CleanUpContainers(t.Context()); n != 1 || err != nil {
			t.Fatalf("cleanup: %d %v", n, err)
		}
		c, _ := container.NewClientWithNoCredential(creds.ContainerURL+"?"+creds.SAS, nil)
		if _, err := c.GetProperties(t.Context(), nil); err == nil {
			t.Fatal("the container is still there")
		}
		if n, _ := h.s.CleanUpContainers(t.Context()); n != 0 {
			t.Fatal("cleaned up twice")
		}
	})
}

// Resynchronizing a VM that is not protected is a conflict that says so,
// not a missing object.
func TestResynchronizingAnUnprotectedVMSaysItIsNotProtected(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		_, host, _ := protectedVM(t, h)
		other := mustVMs(t, h, host.ID, "web", "db")["db"]
		_, err := h.s.StartResync(t.Context(), alice, other.ID)
		wantConflict(t, err, "not_protected")
	})
}
