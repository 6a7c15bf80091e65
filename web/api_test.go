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

	"github.com/lifeboat-dr/lifeboat/models"
)

func TestAPISitesAreCreatedReadReplacedAndDeleted(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		token := av.apiToken(models.RoleContributor)
		var site map[string]any
		status := av.api(http.MethodPost, "/api/v1/sites", token, map[string]string{"name": " Paris ", "description": "main datacenter"}, &site)
		if status != http.StatusCreated || site["name"] != "Paris" || site["description"] != "main datacenter" {
			t.Fatalf("create: %d %v", status, site)
		}
		wantKeys(t, "site", site, "id", "name", "description", "created_at", "updated_at")
		id := site["id"].(string)
		var got map[string]any
		if status := av.api(http.MethodGet, "/api/v1/sites/"+id, token, nil, &got); status != http.StatusOK || got["name"] != "Paris" {
			t.Fatalf("get: %d %v", status, got)
		}
		// PUT replaces: a left-out description becomes empty.
		if status := av.api(http.MethodPut, "/api/v1/sites/"+id, token, map[string]string{"name": "Paris-1"}, &got); status != http.StatusOK || got["name"] != "Paris-1" || got["description"] != "" {
			t.Fatalf("replace: %d %v", status, got)
		}
		status, raw := av.apiRaw(http.MethodPost, "/api/v1/sites", token, map[string]string{"name": "Paris-1"})
		wantAPIError(t, "duplicate name", status, raw, http.StatusBadRequest, "validation_failed", "name")
		if err := av.Store.CreateHost(context.Background(), models.SystemActor, &models.Host{SiteID: id, Name: "hv1"}); err != nil {
			t.Fatal(err)
		}
		status, raw = av.apiRaw(http.MethodDelete, "/api/v1/sites/"+id, token, nil)
		wantAPIError(t, "delete a site with hosts", status, raw, http.StatusConflict, "site_has_hosts")

		var empty map[string]any
		av.api(http.MethodPost, "/api/v1/sites", token, map[string]string{"name": "Lyon"}, &empty)
		if status := av.api(http.MethodDelete, "/api/v1/sites/"+empty["id"].(string), token, nil, nil); status != http.StatusNoContent {
			t.Fatalf("delete: %d", status)
		}
		status, raw = av.apiRaw(http.MethodGet, "/api/v1/sites/"+empty["id"].(string), token, nil)
		wantAPIError(t, "get a deleted site", status, raw, http.StatusNotFound, "not_found")
		if l := getList(t, av.testVault, "/api/v1/sites", token); len(l.Items) != 1 || l.Items[0]["id"] != id {
			t.Fatalf("list after delete: %v", ids(l))
		}
	})
}

func TestAPIHostsAnswerTheirFieldsAndFilterBySiteAndState(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		seed := seedInventory(t, av.testVault, av.raw)
		token := av.apiToken(models.RoleReader)
		l := getList(t, av.testVault, "/api/v1/hosts", token)
		if len(l.Items) != 1 {
			t.Fatalf("hosts: %v", l.Items)
		}
		h := l.Items[0]
		wantKeys(t, "host", h, "id", "name", "site_id", "state", "agent_version", "driver", "last_heartbeat")
		if h["id"] != seed.host || h["site_id"] != seed.site || h["state"] != "Connected" || h["agent_version"] != "1.2.3" || h["driver"] != "qemu" ||
			h["last_heartbeat"] != "2026-03-09T09:59:50Z" {
			t.Errorf("host = %v", h)
		}
		for query, want := range map[string]int{"site_id=" + seed.site: 1, "site_id=" + seed.otherSite: 0, "state=Connected": 1, "state=Disconnected": 0} {
			if got := len(getList(t, av.testVault, "/api/v1/hosts?"+query, token).Items); got != want {
				t.Errorf("hosts?%s: %d, want %d", query, got, want)
			}
		}
		status, raw := av.apiRaw(http.MethodGet, "/api/v1/hosts?state=Sleeping", token, nil)
		wantAPIError(t, "bad state", status, raw, http.StatusBadRequest, "validation_failed", "state")
		var one map[string]any
		if status := av.api(http.MethodGet, "/api/v1/hosts/"+seed.host, token, nil, &one); status != http.StatusOK || one["name"] != "hv1" {
			t.Fatalf("get host: %d %v", status, one)
		}
	})
}

func TestAPIVMsShowProtectionHealthAndRPOAndFilter(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		seed := seedInventory(t, av.testVault, av.raw)
		token := av.apiToken(models.RoleReader)
		var vm map[string]any
		if status := av.api(http.MethodGet, "/api/v1/vms/"+seed.protectedVM, token, nil, &vm); status != http.StatusOK {
			t.Fatalf("get VM: %d", status)
		}
		wantKeys(t, "vm", vm, "id", "name", "host_id", "power_state", "disks", "protection_state", "health", "health_reasons", "rpo_seconds", "last_recovery_point")
		if vm["host_id"] != seed.host || vm["power_state"] != "Running" || vm["protection_state"] != "Protected" || vm["health"] != "Warning" ||
			vm["rpo_seconds"] != float64(90) || vm["last_recovery_point"] != "2026-03-09T09:58:30Z" ||
			fmt.Sprint(vm["health_reasons"]) != "[RPO above the copy frequency]" {
			t.Errorf("protected VM = %v", vm)
		}
		disks := vm["disks"].([]any)
		if d := disks[0].(map[string]any); len(disks) != 1 || d["path"] != "/vms/web.img" || d["size_bytes"] != float64(1<<30) || d["id"] == "" {
			t.Errorf("disks = %v", disks)
		}
		// The RPO follows the clock.
		av.Clock.T = av.Clock.T.Add(time.Minute)
		av.api(http.MethodGet, "/api/v1/vms/"+seed.protectedVM, token, nil, &vm)
		if vm["rpo_seconds"] != float64(150) {
			t.Errorf("rpo_seconds a minute later = %v, want 150", vm["rpo_seconds"])
		}

		var bare map[string]any
		av.api(http.MethodGet, "/api/v1/vms/"+seed.unprotectedVM, token, nil, &bare)
		if bare["protection_state"] != "Unprotected" || bare["health"] != nil || bare["rpo_seconds"] != nil || bare["last_recovery_point"] != nil ||
			len(bare["disks"].([]any)) != 2 || len(bare["health_reasons"].([]any)) != 0 {
			t.Errorf("unprotected VM = %v", bare)
		}
		for query, want := range map[string][]string{
			"":                          {seed.protectedVM, seed.unprotectedVM},
			"health=Warning":            {seed.protectedVM},
			"health=Unprotected":        {seed.unprotectedVM},
			"health=Critical":           {},
			"host_id=" + seed.host:      {seed.protectedVM, seed.unprotectedVM},
			"site_id=" + seed.otherSite: {},
		} {
			got := ids(getList(t, av.testVault, "/api/v1/vms?"+query, token))
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("vms?%s = %v, want %v", query, got, want)
			}
		}
		status, raw := av.apiRaw(http.MethodGet, "/api/v1/vms?health=Bad", token, nil)
		wantAPIError(t, "bad health", status, raw, http.StatusBadRequest, "validation_failed", "health")
	})
}

func TestAPIJobsShowStepsAndErrorsAndFilterByStateTypeAndTime(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		seed := seedInventory(t, av.testVault, nil)
		token := av.apiToken(models.RoleReader)
		var job map[string]any
		if status := av.api(http.MethodGet, "/api/v1/jobs/"+seed.failedJob, token, nil, &job); status != http.StatusOK {
			t.Fatalf("get job: %d", status)
		}
		wantKeys(t, "job", job, "id", "type", "state", "target", "started_at", "ended_at", "steps", "error", "created_at")
		target, _ := job["target"].(map[string]any)
		jobErr, _ := job["error"].(map[string]any)
		steps, _ := job["steps"].([]any)
		if job["type"] != "Failover" || job["state"] != "Failed" || target["kind"] != "vm" || target["id"] != seed.protectedVM || target["name"] != "web" ||
			jobErr["code"] != "replica_missing" || jobErr["message"] != "the replica is gone" || jobErr["action"] != "re-enable protection" || len(steps) != 2 {
			t.Fatalf("failed job = %v", job)
		}
		step := steps[1].(map[string]any)
		wantKeys(t, "step", step, "name", "state", "progress", "message")
		if step["name"] != "Fail over" || step["progress"] != float64(40) || step["message"] != "stopped" {
			t.Errorf("step = %v", step)
		}
		av.api(http.MethodGet, "/api/v1/jobs/"+seed.runningJob, token, nil, &job)
		if job["error"] != nil || job["ended_at"] != nil {
			t.Errorf("a running job has no error and no end: %v", job)
		}

		now := av.Clock.T
		for query, want := range map[string][]string{
			"":             {seed.runningJob, seed.failedJob}, // newest first
			"state=Failed": {seed.failedJob},
			"type=Resync":  {seed.runningJob},
			"type=Nothing": {},
			"since=" + now.Add(-time.Minute).Format(time.RFC3339): {seed.runningJob, seed.failedJob},
			"since=" + now.Add(time.Minute).Format(time.RFC3339):  {},
			"until=" + now.Add(-time.Minute).Format(time.RFC3339): {},
			"until=" + now.Add(time.Minute).Format(time.RFC3339):  {seed.runningJob, seed.failedJob},
		} {
			if got := ids(getList(t, av.testVault, "/api/v1/jobs?"+query, token)); !slices.Equal(got, want) {
				t.Errorf("jobs?%s = %v, want %v", query, got, want)
			}
		}
		for _, param := range []string{"since", "until", "state"} {
			status, raw := av.apiRaw(http.MethodGet, "/api/v1/jobs?"+param+"=yesterday", token, nil)
			wantAPIError(t, "bad "+param, status, raw, http.StatusBadRequest, "validation_failed", param)
		}
	})
}

func TestAPIAlertsFilterByStateAndAuditByObjectAndAction(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		seed := seedInventory(t, av.testVault, av.raw)
		token := av.apiToken(models.RoleContributor)
		all := getList(t, av.testVault, "/api/v1/alerts", token)
		active := getList(t, av.testVault, "/api/v1/alerts?state=Active", token)
		if len(all.Items) != 2 || len(active.Items) != 1 || active.Items[0]["id"] != seed.activeAlert {
			t.Fatalf("alerts: all %v, active %v", ids(all), ids(active))
		}
		wantKeys(t, "alert", active.Items[0], "id", "kind", "severity", "object_kind", "object_id", "message", "state", "created_at")
		status, raw := av.apiRaw(http.MethodGet, "/api/v1/alerts?state=Open", token, nil)
		wantAPIError(t, "bad alert state", status, raw, http.StatusBadRequest, "validation_failed", "state")

		events := getList(t, av.testVault, "/api/v1/audit?object_id="+seed.site, token)
		if len(events.Items) != 1 || events.Items[0]["action"] != "site.create" || events.Items[0]["object_name"] != "Paris" {
			t.Fatalf("audit of the site: %v", events.Items)
		}
		wantKeys(t, "audit event", events.Items[0], "id", "time", "actor", "action", "object_kind", "object_id", "object_name", "details")
		for _, ev := range getList(t, av.testVault, "/api/v1/audit?action=job.create", token).Items {
			if ev["action"] != "job.create" {
				t.Errorf("audit?action=job.create returned %v", ev["action"])
			}
		}
		status, raw = av.apiRaw(http.MethodGet, "/api/v1/audit", av.apiToken(models.RoleReader), nil)
		wantAPIError(t, "audit as a Reader", status, raw, http.StatusForbidden, "forbidden")
	})
}

func TestAPITargetsNeverReturnTheirCredential(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		token := av.apiToken(models.RoleContributor)
		const key = "c2VjcmV0LWFjY291bnQta2V5LTAxMjM0NTY3ODk="
		const sas = "sv=2024-01-01&sp=rw&sig=c2FzLXNpZ25hdHVyZS1zZWNyZXQ"
		var answers [][]byte
		call := func(method, path string, body any) (int, map[string]any) {
			t.Helper()
			status, raw := av.apiRaw(method, path, token, body)
			answers = append(answers, raw)
			var out map[string]any
			_ = json.Unmarshal(raw, &out)
			return status, out
		}
		body := map[string]string{"name": "azure", "kind": "azure_blob", "account_url": "https://acct.blob.core.windows.net", "container": "replicas", "account_key": key}
		status, tgt := call(http.MethodPost, "/api/v1/targets", body)
		if status != http.StatusCreated || tgt["credential_kind"] != "account_key" || tgt["has_credential"] != true || tgt["container"] != "replicas" {
			t.Fatalf("create: %d %v", status, tgt)
		}
		wantKeys(t, "target", tgt, "id", "name", "kind", "account_url", "container", "credential_kind", "has_credential")
		id := tgt["id"].(string)
		call(http.MethodGet, "/api/v1/targets/"+id, nil)
		call(http.MethodGet, "/api/v1/targets", nil)

		// PUT without a credential keeps the stored one.
		delete(body, "account_key")
		body["container"] = "replicas2"
		status, tgt = call(http.MethodPut, "/api/v1/targets/"+id, body)
		if status != http.StatusOK || tgt["container"] != "replicas2" || tgt["has_credential"] != true || tgt["credential_kind"] != "account_key" {
			t.Fatalf("replace without a credential: %d %v", status, tgt)
		}
		stored, err := av.Store.GetTarget(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cred, err := av.Store.TargetCredential(stored); err != nil || cred != key {
			t.Fatalf("the stored credential changed: %q %v", cred, err)
		}
		body["sas"] = sas
		if status, tgt = call(http.MethodPut, "/api/v1/targets/"+id, body); status != http.StatusOK || tgt["credential_kind"] != "sas" {
			t.Fatalf("switch to a SAS: %d %v", status, tgt)
		}
		body["account_key"] = key
		status, _ = call(http.MethodPut, "/api/v1/targets/"+id, body)
		wantAPIError(t, "key and SAS together", status, answers[len(answers)-1], http.StatusBadRequest, "validation_failed", "sas")
		call(http.MethodGet, "/api/v1/audit?object_id="+id, nil)

		status, dir := call(http.MethodPost, "/api/v1/targets", map[string]string{"name": "nas", "kind": "directory", "path": "/srv/replicas"})
		if status != http.StatusCreated || dir["path"] != "/srv/replicas" || dir["has_credential"] != false {
			t.Fatalf("directory target: %d %v", status, dir)
		}
		status, _ = call(http.MethodPost, "/api/v1/targets", map[string]string{"name": "x", "kind": "ftp"})
		wantAPIError(t, "bad kind", status, answers[len(answers)-1], http.StatusBadRequest, "validation_failed", "kind")
		status, _ = call(http.MethodPost, "/api/v1/targets", map[string]string{"name": "y", "kind": "azure_blob", "account_url": "https://a.blob.core.windows.net", "container": "c1c", "account_key": "not base64!" + key})
		wantAPIError(t, "bad key", status, answers[len(answers)-1], http.StatusBadRequest, "validation_failed", "account_key")

		for _, raw := range answers {
			for _, secret := range []string{key, sas, "c2FzLXNpZ25hdHVyZS1zZWNyZXQ"} {
				if strings.Contains(string(raw), secret) {
					t.Errorf("an answer shows the credential: %s", raw)
				}
			}
		}
		if strings.Contains(av.logs.String(), key) {
			t.Error("the credential reached the log")
		}
	})
}

func TestAPIUsersAreManagedByOwnersAndTheLastOwnerStays(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		owner := av.apiToken(models.RoleOwner)
		status, raw := av.apiRaw(http.MethodGet, "/api/v1/users", av.apiToken(models.RoleContributor), nil)
		wantAPIError(t, "users as a Contributor", status, raw, http.StatusForbidden, "forbidden")

		const password = "a long enough password"
		status, raw = av.apiRaw(http.MethodPost, "/api/v1/users", owner, map[string]string{"username": "carol", "password": password, "role": "Operator"})
		var u map[string]any
		_ = json.Unmarshal(raw, &u)
		if status != http.StatusCreated || u["username"] != "carol" || u["role"] != "Operator" || strings.Contains(string(raw), password) || strings.Contains(string(raw), "hash") {
			t.Fatalf("create: %d %s", status, raw)
		}
		wantKeys(t, "user", u, "id", "username", "role")
		id := u["id"].(string)
		// PUT without a password keeps it.
		if status := av.api(http.MethodPut, "/api/v1/users/"+id, owner, map[string]string{"username": "carol", "role": "Contributor"}, &u); status != http.StatusOK || u["role"] != "Contributor" {
			t.Fatalf("replace: %d %v", status, u)
		}
		if status := av.api(http.MethodPost, "/api/v1/auth/token", "", map[string]string{"username": "carol", "password": password}, nil); status != http.StatusOK {
			t.Fatalf("the password did not survive an update without one: %d", status)
		}
		status, raw = av.apiRaw(http.MethodPost, "/api/v1/users", owner, map[string]string{"username": "dave", "password": "short", "role": "Boss"})
		wantAPIError(t, "bad user", status, raw, http.StatusBadRequest, "validation_failed", "password", "role")

		var me listJSON
		av.api(http.MethodGet, "/api/v1/users", owner, nil, &me)
		var ownerID string
		for _, it := range me.Items {
			if it["role"] == "Owner" {
				ownerID = it["id"].(string)
			}
		}
		var self map[string]any
		av.api(http.MethodGet, "/api/v1/users/"+ownerID, owner, nil, &self)
		status, raw = av.apiRaw(http.MethodPut, "/api/v1/users/"+ownerID, owner, map[string]string{"username": self["username"].(string), "role": "Reader"})
		wantAPIError(t, "demote the last Owner", status, raw, http.StatusConflict, "last_owner")
		status, raw = av.apiRaw(http.MethodDelete, "/api/v1/users/"+ownerID, owner, nil)
		wantAPIError(t, "delete the last Owner", status, raw, http.StatusConflict, "last_owner")
		if status := av.api(http.MethodDelete, "/api/v1/users/"+id, owner, nil, nil); status != http.StatusNoContent {
			t.Fatalf("delete: %d", status)
		}
	})
}

func TestAPITokensBelongToTheirUserAndShowTheSecretOnce(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		alice, bob := av.apiToken(models.RoleReader), av.apiToken(models.RoleReader)
		var created map[string]any
		status := av.api(http.MethodPost, "/api/v1/tokens", alice, map[string]any{"name": "ci", "expires_in_days": 30}, &created)
		secret, _ := created["token"].(string)
		if status != http.StatusCreated || secret == "" || created["name"] != "ci" || created["expires_at"] != "2026-04-08T10:00:00Z" {
			t.Fatalf("create: %d %v", status, created)
		}
		id := created["id"].(string)
		// The new token works, and lists its owner's tokens without secrets.
		status, raw := av.apiRaw(http.MethodGet, "/api/v1/tokens", secret, nil)
		if status != http.StatusOK || strings.Contains(string(raw), secret) || strings.Contains(string(raw), `"token"`) {
			t.Fatalf("list: %d %s", status, raw)
		}
		var l listJSON
		_ = json.Unmarshal(raw, &l)
		if !slices.Contains(ids(l), id) {
			t.Fatalf("the new token is not listed: %v", ids(l))
		}
		wantKeys(t, "token", l.Items[0], "id", "name", "created_at", "expires_at", "last_used_at")
		if slices.Contains(ids(getList(t, av.testVault, "/api/v1/tokens", bob)), id) {
			t.Fatal("another user sees the token")
		}
		status, raw = av.apiRaw(http.MethodDelete, "/api/v1/tokens/"+id, bob, nil)
		wantAPIError(t, "delete another user's token", status, raw, http.StatusNotFound, "not_found")
		if status := av.api(http.MethodDelete, "/api/v1/tokens/"+id, alice, nil, nil); status != http.StatusNoContent {
			t.Fatalf("delete: %d", status)
		}
		status, raw = av.apiRaw(http.MethodGet, "/api/v1/tokens", secret, nil)
		wantAPIError(t, "a deleted token", status, raw, http.StatusUnauthorized, "token_invalid")
		for _, days := range []any{0, 366, 1 << 62} {
			status, raw = av.apiRaw(http.MethodPost, "/api/v1/tokens", alice, map[string]any{"name": "x", "expires_in_days": days})
			wantAPIError(t, fmt.Sprint("expires_in_days ", days), status, raw, http.StatusBadRequest, "validation_failed", "expires_in_days")
		}
	})
}

func TestEveryAPIRouteRefusesMissingAndBadTokens(t *testing.T) {
	tv := newTestVault(t, "")
	for route := range apiRoutes(t, tv) {
		method, path, _ := strings.Cut(route, " ")
		if role, _ := expectedRole(method, "/api/v1"+path); role == "" {
			continue
		}
		path = "/api/v1" + strings.ReplaceAll(path, "{id}", "x")
		for _, token := range []string{"", "lbt_not-a-real-token"} {
			status, raw := send(t, tv, method, path, token, "application/json", strings.NewReader(bodyFor(path)))
			code := "unauthenticated"
			if token != "" {
				code = "token_invalid"
			}
			wantAPIError(t, route+" with token "+fmt.Sprintf("%q", token), status, raw, http.StatusUnauthorized, code)
		}
	}
}

func TestEveryAPIRouteWithAnIDAnswersNotFoundForAnUnknownOne(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		owner := av.apiToken(models.RoleOwner)
		checked := 0
		for route := range apiRoutes(t, av.testVault) {
			method, path, _ := strings.Cut(route, " ")
			if !strings.Contains(path, "{id}") {
				continue
			}
			path = "/api/v1" + strings.ReplaceAll(path, "{id}", "nope_01")
			status, raw := send(t, av.testVault, method, path, owner, "application/json", strings.NewReader(bodyFor(path)))
			wantAPIError(t, route, status, raw, http.StatusNotFound, "not_found")
			checked++
		}
		if checked < 18 {
			t.Fatalf("only %d routes with an id checked", checked)
		}
	})
}

func TestAPIRefusesBadBodiesNamingTheField(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		owner := av.apiToken(models.RoleOwner)
		cases := []struct {
			name, method, path, contentType, body string
			status                                int
			code                                  string
			field                                 string
		}{
			{"policy with a 60 s copy frequency", "POST", "/policies", "", `{"name":"p","copy_frequency_seconds":60}`, 400, "validation_failed", "copy_frequency_seconds"},
			{"site without a name", "POST", "/sites", "", `{"name":""}`, 400, "validation_failed", "name"},
			{"site name of the wrong type", "POST", "/sites", "", `{"name":5}`, 400, "validation_failed", "name"},
			{"unknown field", "POST", "/sites", "", `{"name":"s","colour":"red"}`, 400, "unknown_field", "colour"},
			{"unknown field on a target", "POST", "/targets", "", `{"name":"t","kind":"directory","path":"/x","password":"p"}`, 400, "unknown_field", "password"},
			{"target path not absolute", "POST", "/targets", "", `{"name":"t","kind":"directory","path":"relative"}`, 400, "validation_failed", "path"},
			{"token without a name", "POST", "/tokens", "", `{"name":"","expires_in_days":3}`, 400, "validation_failed", "name"},
			{"broken JSON", "POST", "/sites", "", `{"name":`, 400, "invalid_json", ""},
			{"a cursor the vault did not give", "GET", "/vms?cursor=abc", "", "", 400, "validation_failed", "cursor"},
			{"a cursor of another form", "GET", "/jobs?cursor=job_1'--", "", "", 400, "validation_failed", "cursor"},
			{"a misspelt VM filter", "GET", "/vms?helth=Critical", "", "", 400, "validation_failed", "helth"},
			{"a VM filter on an unknown site", "GET", "/vms?site_id=site_nope", "", "", 400, "validation_failed", "site_id"},
			{"a VM filter on an unknown host", "GET", "/vms?host_id=host_nope", "", "", 400, "validation_failed", "host_id"},
			{"two JSON values", "POST", "/sites", "", `{"name":"a"}{"name":"b"}`, 400, "invalid_json", ""},
			{"empty body", "POST", "/sites", "", ``, 400, "invalid_json", ""},
			{"form instead of JSON", "POST", "/sites", "application/x-www-form-urlencoded", `name=s`, 415, "unsupported_media_type", ""},
			{"text instead of JSON", "POST", "/targets", "text/plain", `{}`, 415, "unsupported_media_type", ""},
			{"no content type", "POST", "/users", "-", `{}`, 415, "unsupported_media_type", ""},
			{"bad page size", "GET", "/sites?limit=0", "", ``, 400, "validation_failed", "limit"},
			{"huge page size", "GET", "/vms?limit=100000", "", ``, 400, "validation_failed", "limit"},
		}
		for _, c := range cases {
			ct := c.contentType
			switch ct {
			case "":
				ct = "application/json"
			case "-":
				ct = ""
			}
			status, raw := send(t, av.testVault, c.method, "/api/v1"+c.path, owner, ct, strings.NewReader(c.body))
			if c.field == "" {
				wantAPIError(t, c.name, status, raw, c.status, c.code)
			} else {
				wantAPIError(t, c.name, status, raw, c.status, c.code, c.field)
			}
		}
		// A body declared over 1 MiB is refused before it is read.
		big := `{"name":"` + strings.Repeat("x", 1<<20) + `"}`
		status, raw := send(t, av.testVault, http.MethodPost, "/api/v1/sites", owner, "application/json", strings.NewReader(big))
		wantAPIError(t, "oversized body", status, raw, http.StatusRequestEntityTooLarge, "body_too_large")
		if l := getList(t, av.testVault, "/api/v1/sites", owner); len(l.Items) != 0 {
			t.Fatalf("refused bodies created sites: %v", ids(l))
		}
	})
}

func TestAPIRefusesAStreamedBodyOver1MiBWith413(t *testing.T) {
	// Without a Content-Length, echo's BodyLimit stops the read with its own
	// 413 error, which handlers/bind.go's decodeJSON does not recognise yet
	// and answers 400 invalid_json. Remove this skip with that fix.
	tv := newTestVault(t, "")
	owner := tv.apiToken(models.RoleOwner)
	big := `{"name":"` + strings.Repeat("x", 3<<20) + `"}`
	// MultiReader hides the length, so the body is sent chunked.
	status, raw := send(t, tv, http.MethodPost, "/api/v1/sites", owner, "application/json", io.MultiReader(strings.NewReader(big)))
	wantAPIError(t, "oversized streamed body", status, raw, http.StatusRequestEntityTooLarge, "body_too_large")
}

func TestAPIUnknownRoutesMethodsAndRolesAnswerJSONErrors(t *testing.T) {
	tv := newTestVault(t, "")
	reader := tv.apiToken(models.RoleReader)
	status, raw := tv.apiRaw(http.MethodGet, "/api/v1/volcanoes", reader, nil)
	wantAPIError(t, "unknown route", status, raw, http.StatusNotFound, "route_not_found")
	status, raw = tv.apiRaw(http.MethodGet, "/api/v2/sites", reader, nil)
	wantAPIError(t, "unknown version", status, raw, http.StatusNotFound, "route_not_found")
	status, raw = tv.apiRaw(http.MethodPatch, "/api/v1/sites", reader, nil)
	wantAPIError(t, "wrong method", status, raw, http.StatusMethodNotAllowed, "method_not_allowed")
	status, raw = tv.apiRaw(http.MethodPost, "/api/v1/hosts", reader, map[string]string{})
	wantAPIError(t, "POST on a read-only list", status, raw, http.StatusMethodNotAllowed, "method_not_allowed")
	status, raw = tv.apiRaw(http.MethodPost, "/api/v1/policies", reader, map[string]string{"name": "p"})
	wantAPIError(t, "Reader creates a policy", status, raw, http.StatusForbidden, "forbidden")
	if l := getList(t, tv, "/api/v1/policies", reader); len(l.Items) != 0 {
		t.Fatal("a refused Reader created a policy")
	}
}

func TestAPIListsPaginateAcrossPages(t *testing.T) {
	forEachAPIBackend(t, func(t *testing.T, av *apiVault) {
		seedInventory(t, av.testVault, av.raw)
		owner := av.apiToken(models.RoleOwner)
		ctx := context.Background()
		for i := range 4 {
			if err := av.Store.CreateSite(ctx, models.SystemActor, &models.Site{Name: fmt.Sprint("extra-", i)}); err != nil {
				t.Fatal(err)
			}
			if _, err := av.Store.CreateTarget(ctx, models.SystemActor, models.TargetInput{Name: fmt.Sprint("t", i), Kind: models.TargetDirectory, Path: "/srv/t"}); err != nil {
				t.Fatal(err)
			}
			if err := av.Store.CreateJob(ctx, models.SystemActor, &models.Job{Type: "Resync"}); err != nil {
				t.Fatal(err)
			}
			if err := av.Store.CreateHost(ctx, models.SystemActor, &models.Host{Name: fmt.Sprint("hv-extra-", i), SiteID: mustFirstSite(t, av)}); err != nil {
				t.Fatal(err)
			}
			av.createUser(models.RoleReader)
			av.api(http.MethodPost, "/api/v1/tokens", owner, map[string]any{"name": fmt.Sprint("k", i), "expires_in_days": 1}, nil)
		}
		for _, path := range []string{"/sites", "/hosts", "/vms", "/jobs", "/alerts", "/audit", "/targets", "/users", "/tokens", "/policies", "/jobs?type=Resync"} {
			full := getList(t, av.testVault, "/api/v1"+path, owner)
			if full.NextCursor != "" {
				t.Fatalf("%s: one default page should hold everything", path)
			}
			sep := "?"
			if strings.Contains(path, "?") {
				sep = "&"
			}
			var paged []string
			pages, cursor := 0, ""
			for {
				l := getList(t, av.testVault, "/api/v1"+path+sep+"limit=2&cursor="+cursor, owner)
				if len(l.Items) > 2 {
					t.Fatalf("%s: page of %d items with limit=2", path, len(l.Items))
				}
				paged = append(paged, ids(l)...)
				pages++
				if cursor = l.NextCursor; cursor == "" || pages > 50 {
					break
				}
			}
			if !slices.Equal(paged, ids(full)) {
				t.Errorf("%s: pages gave %v, one list gave %v", path, paged, ids(full))
			}
			if len(full.Items) >= 3 && pages < 2 {
				t.Errorf("%s: %d items fit in one page of 2", path, len(full.Items))
			}
		}
	})
}

func mustFirstSite(t *testing.T, av *apiVault) string {
	t.Helper()
	sites, _, err := av.Store.ListSites(context.Background(), models.Page{Limit: 1})
	if err != nil || len(sites) == 0 {
		t.Fatalf("no site: %v", err)
	}
	return sites[0].ID
}

// A time that cannot be read names its field, as any other bad value does.
func TestABadTimeValueNamesItsField(t *testing.T) {
	tv := newTestVault(t, "")
	status, raw := tv.apiRaw(http.MethodPost, "/api/v1/policies", tv.apiToken(models.RoleContributor),
		`{"name":"p","copy_frequency_seconds":300,"retention_hours":24,"app_consistent_frequency_hours":4,"initial_replication_start":"tomorrow"}`)
	wantAPIError(t, "a policy with a bad time", status, raw, http.StatusBadRequest, "validation_failed", "initial_replication_start")
}

// A new policy whose retention leaves no room for the default
// app-consistent frequency gets none, rather than an error about a field
// the client did not send.
func TestANewPolicyWithAShortRetentionGetsTheDefaultThatFits(t *testing.T) {
	tv := newTestVault(t, "")
	var got struct {
		AppConsistentFrequencyHours int `json:"app_consistent_frequency_hours"`
		RetentionHours              int `json:"retention_hours"`
	}
	if status := tv.api(http.MethodPost, "/api/v1/policies", tv.apiToken(models.RoleContributor), map[string]any{"name": "short", "retention_hours": 2}, &got); status != http.StatusCreated ||
		got.RetentionHours != 2 || got.AppConsistentFrequencyHours != 0 {
		t.Fatalf("a 2-hour policy without app_consistent_frequency_hours: %d %+v", status, got)
	}
	// Asked for, it is still checked.
	status, raw := tv.apiRaw(http.MethodPost, "/api/v1/policies", tv.apiToken(models.RoleContributor), map[string]any{"name": "short2", "retention_hours": 2, "app_consistent_frequency_hours": 4})
	wantAPIError(t, "app-consistent every 4 h with a 2-hour retention", status, raw, http.StatusBadRequest, "validation_failed", "app_consistent_frequency_hours")
}
