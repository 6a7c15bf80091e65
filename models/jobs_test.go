package models_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models"
)

func mustJob(t *testing.T, h *harness, typ, state, targetID string, steps ...string) *models.Job {
	t.Helper()
	j := &models.Job{Type: typ, State: state, TargetKind: "vm", TargetID: targetID, TargetName: "web"}
	for _, s := range steps {
		j.Steps = append(j.Steps, models.JobStep{Name: s})
	}
	if err := h.s.CreateJob(t.Context(), alice, j); err != nil {
		t.Fatalf("create job: %v", err)
	}
	return j
}

func TestCreateJobWithSteps(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		steps := []string{"Prerequisites check", "Create replication relationship", "Start initial replication", "Finalize protection"}
		j := &models.Job{Type: " EnableProtection ", TargetKind: "vm", TargetID: "vm_1", TargetName: "web"}
		for _, s := range steps {
			j.Steps = append(j.Steps, models.JobStep{Name: s})
		}
		j.Steps[0].State, j.Steps[0].Progress = models.JobSucceeded, 100
		if err := h.s.CreateJob(ctx, alice, j); err != nil {
			t.Fatal(err)
		}
		got, err := h.s.GetJob(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got.ID, "job_") || got.Type != "EnableProtection" || got.State != models.JobNotStarted ||
			got.CreatedBy != "alice" || got.TargetID != "vm_1" || !got.CreatedAt.Equal(h.clock.T) {
			t.Errorf("job = %+v", got)
		}
		var names []string
		for i, st := range got.Steps {
			names = append(names, st.Name)
			if st.Seq != i+1 || st.JobID != j.ID {
				t.Errorf("step %d = %+v, want seq %d of job %s", i, st, i+1, j.ID)
			}
			wantState := models.JobNotStarted
			if i == 0 {
				wantState = models.JobSucceeded
			}
			if st.State != wantState {
				t.Errorf("step %q state = %q, want %q", st.Name, st.State, wantState)
			}
		}
		if !slices.Equal(names, steps) {
			t.Errorf("steps = %v, want %v in order", names, steps)
		}
		if got.Steps[0].Progress != 100 {
			t.Errorf("progress of step 1 = %d, want 100", got.Steps[0].Progress)
		}
		wantAudit(t, h, "job.create", j.ID)

		_, err = h.s.GetJob(ctx, "job_nope")
		wantNotFound(t, "GetJob", err)
	})
}

func TestCreateJobRefusals(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		wantFields(t, h.s.CreateJob(ctx, alice, &models.Job{Type: "  "}), "type")
		wantFields(t, h.s.CreateJob(ctx, alice, &models.Job{Type: "Resync", Steps: []models.JobStep{{Name: "ok"}, {Name: " "}}}), "steps")
		jobs, _, err := h.s.ListJobs(ctx, models.JobFilter{}, models.Page{})
		if err != nil || len(jobs) != 0 {
			t.Errorf("jobs after refused creates = %d (%v), want 0", len(jobs), err)
		}
		if n := h.countRows(t, &models.JobStep{}, ""); n != 0 {
			t.Errorf("step rows = %d, want 0", n)
		}
		wantNoAudit(t, h, "job.create")
	})
}

func TestListJobsFilters(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		t0 := h.clock.T
		enable := mustJob(t, h, "EnableProtection", models.JobSucceeded, "vm_1", "a", "b")
		h.advance(time.Hour)
		failover := mustJob(t, h, "Failover", models.JobFailed, "vm_2", "a")
		h.advance(time.Hour)
		resync := mustJob(t, h, "Resync", models.JobInProgress, "vm_1")
		h.advance(time.Hour)
		enable2 := mustJob(t, h, "EnableProtection", models.JobInProgress, "vm_3", "a")

		at := func(d time.Duration) *time.Time { x := t0.Add(d); return &x }
		cases := []struct {
			name   string
			filter models.JobFilter
			want   []*models.Job // newest first
		}{
			{"all, newest first", models.JobFilter{}, []*models.Job{enable2, resync, failover, enable}},
			{"by state", models.JobFilter{State: models.JobInProgress}, []*models.Job{enable2, resync}},
			{"by type", models.JobFilter{Type: "EnableProtection"}, []*models.Job{enable2, enable}},
			{"by state and type", models.JobFilter{State: models.JobSucceeded, Type: "EnableProtection"}, []*models.Job{enable}},
			{"by target", models.JobFilter{TargetID: "vm_1"}, []*models.Job{resync, enable}},
			{"since is inclusive", models.JobFilter{Since: at(time.Hour)}, []*models.Job{enable2, resync, failover}},
			{"until is exclusive", models.JobFilter{Until: at(time.Hour)}, []*models.Job{enable}},
			{"between", models.JobFilter{Since: at(30 * time.Minute), Until: at(150 * time.Minute)}, []*models.Job{resync, failover}},
			{"since in another zone", models.JobFilter{Since: ptr(t0.Add(2 * time.Hour).In(time.FixedZone("X", -5*3600)))}, []*models.Job{enable2, resync}},
			{"nothing matches", models.JobFilter{State: models.JobCancelled}, nil},
		}
		for _, c := range cases {
			jobs, _, err := h.s.ListJobs(ctx, c.filter, models.Page{})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			got := idsOf(jobs, func(j models.Job) string { return j.ID })
			want := idsOf(c.want, func(j *models.Job) string { return j.ID })
			if !slices.Equal(got, want) {
				t.Errorf("%s: jobs = %v, want %v", c.name, got, want)
			}
		}
		jobs, _, _ := h.s.ListJobs(ctx, models.JobFilter{Type: "EnableProtection"}, models.Page{})
		if len(jobs) != 2 || len(jobs[1].Steps) != 2 || jobs[1].Steps[0].Name != "a" {
			t.Errorf("listed jobs carry steps %+v, want them loaded", jobs)
		}
		types, err := h.s.JobTypes(ctx)
		if err != nil || !slices.Equal(types, []string{"EnableProtection", "Failover", "Resync"}) {
			t.Errorf("JobTypes = %v, %v", types, err)
		}
	})
}

func ptr[T any](v T) *T { return &v }
