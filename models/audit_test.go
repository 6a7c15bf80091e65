package models_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models"
)

func TestAuditEventRecordsWhoWhatWhen(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		h.advance(90 * time.Minute)
		st := &models.Site{Name: "Primary", Description: "Paris"}
		if err := h.s.CreateSite(ctx, alice, st); err != nil {
			t.Fatal(err)
		}
		ev := wantAudit(t, h, "site.create", st.ID)
		if ev.Actor != "alice" || ev.ActorID != "user_alice" || ev.RequestID != "req-42" || ev.RemoteAddr != "192.0.2.7" {
			t.Errorf("actor fields = %q %q %q %q", ev.Actor, ev.ActorID, ev.RequestID, ev.RemoteAddr)
		}
		if ev.ObjectKind != "site" || ev.ObjectName != "Primary" || !ev.Time.Equal(h.clock.T) {
			t.Errorf("event = %+v, want site Primary at %v", ev, h.clock.T)
		}
		var details map[string]any
		if err := json.Unmarshal([]byte(ev.Details), &details); err != nil || details["Description"] != "Paris" {
			t.Errorf("details = %s (%v), want the site as JSON", ev.Details, err)
		}

		// The vault acting on its own, or an actor without a name, is "system".
		for _, a := range []models.Actor{models.SystemActor, {}} {
			p := mustPolicyAs(t, h, a)
			if ev := wantAudit(t, h, "policy.create", p.ID); ev.Actor != "system" {
				t.Errorf("actor of %+v = %q, want system", a, ev.Actor)
			}
		}
	})
}

func mustPolicyAs(t *testing.T, h *harness, a models.Actor) *models.Policy {
	t.Helper()
	p := models.DefaultPolicy()
	p.Name = models.NewID("p")
	if err := h.s.CreatePolicy(t.Context(), a, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func TestEveryChangeIsAudited(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		site := mustSite(t, h, "Primary")
		site.Description = "x"
		if err := h.s.UpdateSite(ctx, alice, site); err != nil {
			t.Fatal(err)
		}
		host := mustHost(t, h, site.ID, "hv1", "")
		pol := mustPolicy(t, h, "Gold")
		if err := h.s.UpdatePolicy(ctx, alice, pol); err != nil {
			t.Fatal(err)
		}
		tg := mustDirectoryTarget(t, h, "nas")
		if _, err := h.s.UpdateTarget(ctx, alice, tg.ID, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/y"}); err != nil {
			t.Fatal(err)
		}
		mustUser(t, h, "root", models.RoleOwner) // so that bob is not the last Owner
		u := mustUser(t, h, "bob", models.RoleOwner)
		if _, err := h.s.UpdateUser(ctx, alice, u.ID, models.UserInput{Username: "bob", Role: models.RoleOwner}); err != nil {
			t.Fatal(err)
		}
		tok, _, err := h.s.CreateToken(ctx, alice, u, "ci", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		secret, err := h.s.CreateSession(ctx, alice, u)
		if err != nil {
			t.Fatal(err)
		}
		vms := mustVMs(t, h, host.ID, "a")
		plan, err := h.s.CreatePlan(ctx, alice, models.PlanInput{Name: "Tier 1", Groups: []models.GroupInput{{VMIDs: []string{vms["a"].ID}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.UpdatePlan(ctx, alice, plan.ID, models.PlanInput{Name: "Tier 1"}); err != nil {
			t.Fatal(err)
		}
		job := mustJob(t, h, "Resync", "", vms["a"].ID)
		steps := []struct {
			action, id string
			do         func() error
		}{
			{"site.create", site.ID, nil},
			{"site.update", site.ID, nil},
			{"host.create", host.ID, nil},
			{"policy.create", pol.ID, nil},
			{"policy.update", pol.ID, nil},
			{"target.create", tg.ID, nil},
			{"target.update", tg.ID, nil},
			{"user.create", u.ID, nil},
			{"user.update", u.ID, nil},
			{"token.create", tok.ID, nil},
			{"session.login", u.ID, nil},
			{"recovery_plan.create", plan.ID, nil},
			{"recovery_plan.update", plan.ID, nil},
			{"job.create", job.ID, nil},
			{"session.logout", u.ID, func() error { return h.s.DeleteSession(ctx, models.Actor{UserID: u.ID, Username: "bob"}, secret) }},
			{"token.delete", tok.ID, func() error { return h.s.DeleteToken(ctx, alice, u.ID, tok.ID) }},
			{"recovery_plan.delete", plan.ID, func() error { return h.s.DeletePlan(ctx, alice, plan.ID) }},
			{"target.delete", tg.ID, func() error { return h.s.DeleteTarget(ctx, alice, tg.ID) }},
			{"policy.delete", pol.ID, func() error { return h.s.DeletePolicy(ctx, alice, pol.ID) }},
			{"user.delete", u.ID, func() error { return h.s.DeleteUser(ctx, alice, u.ID) }},
		}
		for _, s := range steps {
			if s.do != nil {
				if err := s.do(); err != nil {
					t.Fatalf("%s: %v", s.action, err)
				}
			}
			wantAudit(t, h, s.action, s.id)
		}
		// One event per change and no more: the inventory report is the
		// agent's, and root's creation is the one change not in steps.
		all, _, err := h.s.ListAudit(ctx, models.AuditFilter{}, models.Page{Limit: models.MaxPageSize})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != len(steps)+1 {
			var actions []string
			for _, ev := range all {
				actions = append(actions, ev.Action)
			}
			t.Errorf("audit log holds %d events, want %d: %v", len(all), len(steps)+1, actions)
		}
	})
}
