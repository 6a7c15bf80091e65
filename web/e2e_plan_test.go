package main

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// A recovery plan of 3 VMs in 2 groups, with a script before the first
// group and a manual action after the second, run with real agents: the
// groups fail over in order, the script gets the plan's context and its
// output is in the job, the manual action is completed through the API;
// then the plan fails back, and its script runs again, told the direction.
func TestARecoveryPlanFailsOverInGroupOrderWithItsScriptAndManualActionAndFailsBack(t *testing.T) {
	t.Parallel()
	disks := map[string][]byte{}
	for _, n := range []string{"db1", "db2", "web"} {
		d := make([]byte, 2<<20)
		rand.Read(d[:512<<10])
		disks[n] = d
	}
	s := newRecoverySite(t, disks)
	ids := map[string]string{}
	for _, n := range []string{"db1", "db2", "web"} {
		ids[n] = s.protect(t, n).ID
	}
	// The script keeps each context it is given and prints a line.
	contexts := t.TempDir()
	script := filepath.Join(t.TempDir(), "pre-db.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nset -e\ncat > "+contexts+"/stdin-$$.json\ncp \"$LIFEBOAT_CONTEXT\" "+contexts+"/file-$$.json\necho \"databases fenced\"\n"), 0o755)
	plan := map[string]any{"name": "Tier 1", "groups": []map[string]any{
		{"name": "databases", "vm_ids": []string{ids["db1"], ids["db2"]},
			"actions": []map[string]string{{"phase": "pre", "kind": "script", "name": "fence", "script": script}}},
		{"name": "web", "vm_ids": []string{ids["web"]},
			"actions": []map[string]string{{"phase": "post", "kind": "manual", "name": "DNS", "instructions": "point www at the recovery site"}}},
	}}
	b, _ := json.Marshal(plan)
	var created struct{ ID string }
	if status := s.v.do(http.MethodPost, "/api/v1/recovery-plans", b, &created); status != http.StatusCreated {
		t.Fatalf("create plan: %d", status)
	}

	runPlan := func(body map[string]any) string {
		t.Helper()
		b, _ := json.Marshal(body)
		var accepted struct {
			JobID string `json:"job_id"`
			Error struct{ Code, Message string }
		}
		if status := s.v.do(http.MethodPost, "/api/v1/recovery-plans/"+created.ID+"/run", b, &accepted); status != http.StatusAccepted {
			t.Fatalf("run plan %v: %d %+v", body, status, accepted.Error)
		}
		return accepted.JobID
	}
	waitState := func(jobID, want string) e2eJob {
		t.Helper()
		return s.waitJobState(t, jobID, want)
	}
	resume := func(jobID string) {
		t.Helper()
		if status := s.v.do(http.MethodPost, "/api/v1/jobs/"+jobID+"/resume", []byte(`{"notes":"www points at the recovery site"}`), nil); status != http.StatusAccepted {
			t.Fatalf("resume: %d", status)
		}
	}
	readContexts := func() []agentproto.PlanContext {
		t.Helper()
		entries, _ := os.ReadDir(contexts)
		var out []agentproto.PlanContext
		for _, e := range entries {
			var c agentproto.PlanContext
			if err := json.Unmarshal(fileBytes(t, filepath.Join(contexts, e.Name())), &c); err != nil {
				t.Fatalf("%s: %v", e.Name(), err)
			}
			out = append(out, c)
		}
		return out
	}

	jobID := runPlan(map[string]any{"operation": "planned_failover", "recovery_host_id": s.drHostID})
	job := waitState(jobID, "WaitingForInput")
	if !strings.Contains(job.Steps[1].Message, "databases fenced") {
		t.Fatalf("the script's output is not in the job: %+v", job.Steps[1])
	}
	resume(jobID)
	job = waitState(jobID, "Succeeded")
	if !strings.Contains(job.Steps[len(job.Steps)-1].Message, "www points at the recovery site") {
		t.Fatalf("the manual action's notes are not in the job: %+v", job.Steps)
	}
	// Group order: both databases were failed over before the web VM's
	// failover started.
	var jobs struct {
		Items []struct {
			State     string
			Target    struct{ Name string }
			StartedAt time.Time `json:"started_at"`
			EndedAt   time.Time `json:"ended_at"`
		}
	}
	s.v.do(http.MethodGet, "/api/v1/jobs?type=Planned%20failover", nil, &jobs)
	at := map[string][2]time.Time{}
	for _, j := range jobs.Items {
		if j.State != "Succeeded" {
			t.Fatalf("VM job %+v", j)
		}
		at[j.Target.Name] = [2]time.Time{j.StartedAt, j.EndedAt}
	}
	if len(at) != 3 || at["web"][0].Before(at["db1"][1]) || at["web"][0].Before(at["db2"][1]) {
		t.Fatalf("group order not kept: %+v", at)
	}
	for _, n := range []string{"db1", "db2", "web"} {
		if got := fileBytes(t, filepath.Join(s.drRoot, n, "disk0.img")); string(got) != string(disks[n]) {
			t.Fatalf("VM %s recovered wrong", n)
		}
	}
	cs := readContexts()
	if len(cs) != 2 { // on stdin and in the file
		t.Fatalf("%d contexts", len(cs))
	}
	for _, c := range cs {
		names := []string{}
		for _, m := range c.VMs {
			names = append(names, m.SourceName+"→"+m.RecoveryName)
		}
		sort.Strings(names)
		if c.FailoverType != "planned_failover" || c.Direction != "primary_to_recovery" || c.Group.Name != "databases" || c.Phase != "pre" ||
			strings.Join(names, ",") != "db1→db1,db2→db2,web→web" || c.Plan.Name != "Tier 1" {
			t.Fatalf("context %+v", c)
		}
	}

	// Commit the plan, re-protect its VMs from the recovery host, and fail
	// the plan back: the script runs again, told it is a failback.
	commit := runPlan(map[string]any{"operation": "commit"})
	waitState(commit, "WaitingForInput") // a plan's actions run for each of its operations
	resume(commit)
	waitState(commit, "Succeeded")
	for _, n := range []string{"db1", "db2", "web"} {
		s.vmOn(t, s.drHostID, n)
		var accepted struct {
			JobID string `json:"job_id"`
		}
		eventually(t, "re-protect of "+n+" is accepted", func() bool {
			return s.v.do(http.MethodPost, "/api/v1/vms/"+ids[n]+"/reprotect", nil, &accepted) == http.StatusAccepted
		}, s.v.proc)
		if job := s.waitJob(t, accepted.JobID); job.State != "Succeeded" {
			t.Fatalf("re-protect %s: %+v", n, job)
		}
	}
	os.RemoveAll(contexts)
	os.MkdirAll(contexts, 0o755)
	back := runPlan(map[string]any{"operation": "planned_failover"})
	waitState(back, "WaitingForInput")
	resume(back)
	waitState(back, "Succeeded")
	for _, c := range readContexts() {
		if c.Direction != "recovery_to_primary" || len(c.VMs) != 3 {
			t.Fatalf("failback context %+v", c)
		}
		for _, m := range c.VMs {
			if m.RecoveryHostID != s.srcHostID || m.RecoveryName != m.SourceName {
				t.Fatalf("failback context maps %+v", m)
			}
		}
	}
	if len(readContexts()) != 2 {
		t.Fatal("the script did not run on failback")
	}
}
