package models_test

import (
	"slices"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models"
)

// refuseAudit makes every audit insert fail from now on, as a full disk or a
// lost connection would at the worst moment.
func refuseAudit(t *testing.T, h *harness) {
	t.Helper()
	stmts := []string{`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit refused'); END`}
	if models.IsPostgres(h.dsn) {
		stmts = []string{
			`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$`,
			`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_audit()`,
		}
	}
	for _, s := range stmts {
		if err := h.rawDB(t).Exec(s).Error; err != nil {
			t.Fatalf("install the trigger: %v", err)
		}
	}
}

// TestFailedAuditRollsBackTheChange proves that a change and its audit event
// commit together: when the event cannot be written, nothing of the change
// stays, even the parts written before it.
func TestFailedAuditRollsBackTheChange(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		mustUser(t, h, "root", models.RoleOwner)
		bob := mustUser(t, h, "bob", models.RoleOwner)
		session, err := h.s.CreateSession(ctx, alice, bob)
		if err != nil {
			t.Fatal(err)
		}
		tok, token, err := h.s.CreateToken(ctx, alice, bob, "ci", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		site := mustSite(t, h, "Primary")
		emptySite := mustSite(t, h, "Empty")
		host := mustHost(t, h, site.ID, "hv1", models.HostConnected)
		vms := mustVMs(t, h, host.ID, "a", "b")
		plan, err := h.s.CreatePlan(ctx, alice, models.PlanInput{Name: "Tier 1", Groups: []models.GroupInput{{VMIDs: []string{vms["a"].ID}}}})
		if err != nil {
			t.Fatal(err)
		}
		pol := mustPolicy(t, h, "Gold")
		tg := mustDirectoryTarget(t, h, "nas")

		refuseAudit(t, h)
		auditBefore := h.countRows(t, &models.AuditEvent{}, "")

		renamedPolicy := *pol
		renamedPolicy.Name = "Platinum"
		changes := []struct {
			name string
			do   func() error
		}{
			{"create site", func() error { return h.s.CreateSite(ctx, alice, &models.Site{Name: "New"}) }},
			{"update site", func() error { return h.s.UpdateSite(ctx, alice, &models.Site{ID: site.ID, Name: "Renamed"}) }},
			{"delete site", func() error { return h.s.DeleteSite(ctx, alice, emptySite.ID) }},
			{"create host", func() error { return h.s.CreateHost(ctx, alice, &models.Host{SiteID: site.ID, Name: "hv2"}) }},
			{"create policy", func() error { p := models.DefaultPolicy(); p.Name = "Silver"; return h.s.CreatePolicy(ctx, alice, &p) }},
			{"update policy", func() error { return h.s.UpdatePolicy(ctx, alice, &renamedPolicy) }},
			{"delete policy", func() error { return h.s.DeletePolicy(ctx, alice, pol.ID) }},
			{"create target", func() error { _, err := h.s.CreateTarget(ctx, alice, azureInput("Azure")); return err }},
			{"update target", func() error {
				_, err := h.s.UpdateTarget(ctx, alice, tg.ID, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/elsewhere"})
				return err
			}},
			{"delete target", func() error { return h.s.DeleteTarget(ctx, alice, tg.ID) }},
			{"create user", func() error {
				_, err := h.s.CreateUser(ctx, alice, models.UserInput{Username: "carol", Password: password, Role: models.RoleReader})
				return err
			}},
			{"change password", func() error {
				_, err := h.s.UpdateUser(ctx, alice, bob.ID, models.UserInput{Username: "bob", Password: "another long password", Role: models.RoleOwner})
				return err
			}},
			{"delete user", func() error { return h.s.DeleteUser(ctx, alice, bob.ID) }},
			{"log in", func() error { _, err := h.s.CreateSession(ctx, alice, bob); return err }},
			{"log out", func() error { return h.s.DeleteSession(ctx, alice, session) }},
			{"create token", func() error { _, _, err := h.s.CreateToken(ctx, alice, bob, "ci2", time.Hour); return err }},
			{"revoke token", func() error { return h.s.DeleteToken(ctx, alice, bob.ID, tok.ID) }},
			{"create plan", func() error {
				_, err := h.s.CreatePlan(ctx, alice, models.PlanInput{Name: "Tier 2", Groups: []models.GroupInput{{VMIDs: []string{vms["b"].ID}}}})
				return err
			}},
			{"update plan", func() error {
				_, err := h.s.UpdatePlan(ctx, alice, plan.ID, models.PlanInput{Name: "Tier 1", Groups: []models.GroupInput{{VMIDs: []string{vms["b"].ID}}, {}}})
				return err
			}},
			{"delete plan", func() error { return h.s.DeletePlan(ctx, alice, plan.ID) }},
			{"create job", func() error {
				return h.s.CreateJob(ctx, alice, &models.Job{Type: "Resync", Steps: []models.JobStep{{Name: "one"}, {Name: "two"}}})
			}},
		}
		for _, c := range changes {
			if err := c.do(); err == nil {
				t.Errorf("%s succeeded although its audit event could not be written", c.name)
			}
		}

		if n := h.countRows(t, &models.AuditEvent{}, ""); n != auditBefore {
			t.Errorf("audit events = %d, want %d", n, auditBefore)
		}
		counts := []struct {
			model any
			want  int64
		}{
			{&models.Site{}, 2}, {&models.Host{}, 1}, {&models.Policy{}, 1}, {&models.Target{}, 1},
			{&models.User{}, 2}, {&models.Session{}, 1}, {&models.APIToken{}, 1},
			{&models.RecoveryPlan{}, 1}, {&models.PlanGroup{}, 1}, {&models.PlanGroupVM{}, 1},
			{&models.Job{}, 0}, {&models.JobStep{}, 0},
		}
		for _, c := range counts {
			if n := h.countRows(t, c.model, ""); n != c.want {
				t.Errorf("%T rows = %d, want %d", c.model, n, c.want)
			}
		}
		if got, _ := h.s.GetSite(ctx, site.ID); got == nil || got.Name != "Primary" {
			t.Errorf("site = %+v, want it unrenamed", got)
		}
		if got, _ := h.s.GetPolicy(ctx, pol.ID); got == nil || got.Name != "Gold" {
			t.Errorf("policy = %+v, want it unrenamed", got)
		}
		if got, _ := h.s.GetTarget(ctx, tg.ID); got == nil || got.Path != tg.Path {
			t.Errorf("target = %+v, want path %s", got, tg.Path)
		}
		if _, err := h.s.Authenticate(ctx, "bob", password); err != nil {
			t.Errorf("bob's old password: %v", err)
		}
		if _, err := h.s.UserForSession(ctx, session); err != nil {
			t.Errorf("bob's session: %v", err)
		}
		if _, _, err := h.s.UserForToken(ctx, token); err != nil {
			t.Errorf("bob's token: %v", err)
		}
		if got, err := h.s.GetPlan(ctx, plan.ID); err != nil || len(got.Groups) != 1 || !slices.Equal(groupVMs(got.Groups[0]), []string{vms["a"].ID}) {
			t.Errorf("plan = %+v, %v; want its one group with VM a", got, err)
		}
	})
}
