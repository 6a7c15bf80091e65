package models_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models"
)

func TestValidatePolicy(t *testing.T) {
	now := time.Date(2026, 3, 9, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	cases := []struct {
		name   string
		edit   func(p *models.Policy)
		fields []string // none: valid
	}{
		{"default policy is valid", func(p *models.Policy) {}, nil},

		{"name is required", func(p *models.Policy) { p.Name = "" }, []string{"name"}},
		{"name of spaces is empty", func(p *models.Policy) { p.Name = "   " }, []string{"name"}},
		{"name of 100 characters", func(p *models.Policy) { p.Name = strings.Repeat("é", 100) }, nil},
		{"name of 101 characters refused", func(p *models.Policy) { p.Name = strings.Repeat("a", 101) }, []string{"name"}},
		{"name with a newline refused", func(p *models.Policy) { p.Name = "gold\nsilver" }, []string{"name"}},

		{"copy frequency 30 s", func(p *models.Policy) { p.CopyFrequencySeconds = 30 }, nil},
		{"copy frequency 5 min", func(p *models.Policy) { p.CopyFrequencySeconds = 300 }, nil},
		{"copy frequency 15 min", func(p *models.Policy) { p.CopyFrequencySeconds = 900 }, nil},
		{"copy frequency 0 refused", func(p *models.Policy) { p.CopyFrequencySeconds = 0 }, []string{"copy_frequency_seconds"}},
		{"copy frequency 60 refused", func(p *models.Policy) { p.CopyFrequencySeconds = 60 }, []string{"copy_frequency_seconds"}},
		{"copy frequency -30 refused", func(p *models.Policy) { p.CopyFrequencySeconds = -30 }, []string{"copy_frequency_seconds"}},
		{"copy frequency 1 h refused", func(p *models.Policy) { p.CopyFrequencySeconds = 3600 }, []string{"copy_frequency_seconds"}},

		{"retention 0 with app-consistent off", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = 0, 0 }, nil},
		{"retention 24 with app-consistent off", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = 24, 0 }, nil},
		{"retention 25 refused", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = 25, 0 }, []string{"retention_hours"}},
		{"retention -1 refused", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = -1, 0 }, []string{"retention_hours"}},

		{"app-consistent 1 below retention 2", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = 2, 1 }, nil},
		{"app-consistent 12 below retention 24", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = 24, 12 }, nil},
		{"app-consistent 13 refused", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = 24, 13 }, []string{"app_consistent_frequency_hours"}},
		{"app-consistent -1 refused", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = 24, -1 }, []string{"app_consistent_frequency_hours"}},
		{"app-consistent equal to retention refused", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = 4, 4 }, []string{"app_consistent_frequency_hours"}},
		{"app-consistent above retention refused", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = 2, 3 }, []string{"app_consistent_frequency_hours"}},
		{"app-consistent without retention refused", func(p *models.Policy) { p.RetentionHours, p.AppConsistentFrequencyHours = 0, 1 }, []string{"app_consistent_frequency_hours"}},

		{"initial replication now (nil)", func(p *models.Policy) { p.InitialReplicationStart = nil }, nil},
		{"initial replication at now", func(p *models.Policy) { p.InitialReplicationStart = at(0) }, nil},
		{"initial replication in 1 h", func(p *models.Policy) { p.InitialReplicationStart = at(time.Hour) }, nil},
		{"initial replication in 24 h", func(p *models.Policy) { p.InitialReplicationStart = at(24 * time.Hour) }, nil},
		{"initial replication 1 h ago refused", func(p *models.Policy) { p.InitialReplicationStart = at(-time.Hour) }, []string{"initial_replication_start"}},
		{"initial replication yesterday refused", func(p *models.Policy) { p.InitialReplicationStart = at(-24 * time.Hour) }, []string{"initial_replication_start"}},
		{"initial replication in 24 h 1 min refused", func(p *models.Policy) { p.InitialReplicationStart = at(24*time.Hour + time.Minute) }, []string{"initial_replication_start"}},
		{"initial replication in 2 days refused", func(p *models.Policy) { p.InitialReplicationStart = at(48 * time.Hour) }, []string{"initial_replication_start"}},

		{"resync window over midnight", func(p *models.Policy) { p.ResyncWindowStart, p.ResyncWindowEnd = "18:30", "06:00" }, nil},
		{"resync window whole day", func(p *models.Policy) { p.ResyncWindowStart, p.ResyncWindowEnd = "00:00", "23:59" }, nil},
		{"resync window of zero length refused", func(p *models.Policy) { p.ResyncWindowStart, p.ResyncWindowEnd = "22:00", "22:00" }, []string{"resync_window.end"}},
		{"resync start 24:00 refused", func(p *models.Policy) { p.ResyncWindowStart = "24:00" }, []string{"resync_window.start"}},
		{"resync start 18:60 refused", func(p *models.Policy) { p.ResyncWindowStart = "18:60" }, []string{"resync_window.start"}},
		{"resync start with one-digit hour refused", func(p *models.Policy) { p.ResyncWindowStart = "7:30" }, []string{"resync_window.start"}},
		{"resync start with a sign refused", func(p *models.Policy) { p.ResyncWindowStart = "+7:30" }, []string{"resync_window.start"}},
		{"resync start empty refused", func(p *models.Policy) { p.ResyncWindowStart = "" }, []string{"resync_window.start"}},
		{"resync end with seconds refused", func(p *models.Policy) { p.ResyncWindowEnd = "06:00:00" }, []string{"resync_window.end"}},
		{"resync end with a dot refused", func(p *models.Policy) { p.ResyncWindowEnd = "06.00" }, []string{"resync_window.end"}},
		{"resync end of letters refused", func(p *models.Policy) { p.ResyncWindowEnd = "ab:cd" }, []string{"resync_window.end"}},

		{"work hours 07:00–19:00", func(p *models.Policy) { p.WorkHoursStart, p.WorkHoursEnd = "07:00", "19:00" }, nil},
		{"work hours of zero length refused", func(p *models.Policy) { p.WorkHoursStart, p.WorkHoursEnd = "08:00", "08:00" }, []string{"bandwidth.work_hours.end"}},
		{"work hours start 25:00 refused", func(p *models.Policy) { p.WorkHoursStart = "25:00" }, []string{"bandwidth.work_hours.start"}},
		{"work hours start with a sign refused", func(p *models.Policy) { p.WorkHoursStart = "-0:00" }, []string{"bandwidth.work_hours.start"}},
		{"work hours end 8pm refused", func(p *models.Policy) { p.WorkHoursEnd = "8pm" }, []string{"bandwidth.work_hours.end"}},

		{"work-hours bandwidth 0 is unlimited", func(p *models.Policy) { p.WorkHoursMbps = 0 }, nil},
		{"work-hours bandwidth 100000", func(p *models.Policy) { p.WorkHoursMbps = 100000 }, nil},
		{"work-hours bandwidth 100001 refused", func(p *models.Policy) { p.WorkHoursMbps = 100001 }, []string{"bandwidth.work_hours_mbps"}},
		{"work-hours bandwidth -1 refused", func(p *models.Policy) { p.WorkHoursMbps = -1 }, []string{"bandwidth.work_hours_mbps"}},
		{"off-hours bandwidth 0 is unlimited", func(p *models.Policy) { p.OffHoursMbps = 0 }, nil},
		{"off-hours bandwidth 100000", func(p *models.Policy) { p.OffHoursMbps = 100000 }, nil},
		{"off-hours bandwidth 100001 refused", func(p *models.Policy) { p.OffHoursMbps = 100001 }, []string{"bandwidth.off_hours_mbps"}},
		{"off-hours bandwidth -1 refused", func(p *models.Policy) { p.OffHoursMbps = -1 }, []string{"bandwidth.off_hours_mbps"}},

		{"every problem is reported at once", func(p *models.Policy) {
			p.Name, p.CopyFrequencySeconds, p.RetentionHours, p.AppConsistentFrequencyHours = "", 60, 30, 13
			p.ResyncWindowStart, p.WorkHoursEnd, p.WorkHoursMbps, p.OffHoursMbps = "x", "y", -1, -1
		}, []string{"name", "copy_frequency_seconds", "retention_hours", "app_consistent_frequency_hours", "resync_window.start",
			"bandwidth.work_hours.end", "bandwidth.work_hours_mbps", "bandwidth.off_hours_mbps"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := models.DefaultPolicy()
			p.Name = "Gold"
			p.WorkHoursMbps, p.OffHoursMbps = 500, 2000
			c.edit(&p)
			err := models.ValidatePolicy(&p, now)
			if c.fields == nil {
				if err != nil {
					t.Fatalf("ValidatePolicy refused a valid policy: %v", err)
				}
				return
			}
			wantFields(t, err, c.fields...)
		})
	}
}

func TestValidatePolicyNormalises(t *testing.T) {
	now := time.Date(2026, 3, 9, 10, 0, 0, 0, time.UTC)
	paris := time.FixedZone("CET", 3600)
	start := now.Add(2 * time.Hour).In(paris)
	p := models.DefaultPolicy()
	p.Name = "  Gold \t"
	p.InitialReplicationStart = &start
	if err := models.ValidatePolicy(&p, now); err != nil {
		t.Fatal(err)
	}
	if p.Name != "Gold" {
		t.Errorf("name = %q, want it trimmed to %q", p.Name, "Gold")
	}
	if p.InitialReplicationStart.Location() != time.UTC || !p.InitialReplicationStart.Equal(start) {
		t.Errorf("initial replication start = %v, want the same instant in UTC", p.InitialReplicationStart)
	}
}

func TestParseClock(t *testing.T) {
	for in, want := range map[string]int{"00:00": 0, "06:00": 360, "18:30": 1110, "23:59": 1439} {
		got, err := models.ParseClock(in)
		if err != nil || got != want {
			t.Errorf("ParseClock(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "6:00", "06:0", "24:00", "12:60", "-1:00", "+1:00", "1:-1", " 6:00", "06:00 ", "0x:10", "06h00", "06:00:00"} {
		if got, err := models.ParseClock(in); err == nil {
			t.Errorf("ParseClock(%q) = %d, want an error", in, got)
		}
	}
}

func TestPolicyCreateGetUpdateDelete(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		created := h.clock.T
		start := created.Add(2 * time.Hour)
		p := models.DefaultPolicy()
		p.Name, p.InitialReplicationStart, p.WorkHoursMbps, p.OffHoursMbps = "  Gold ", &start, 100, 1000
		if err := h.s.CreatePolicy(ctx, alice, &p); err != nil {
			t.Fatalf("create: %v", err)
		}
		if !strings.HasPrefix(p.ID, "pol_") || p.Name != "Gold" {
			t.Fatalf("created policy id %q name %q, want a pol_ id and the trimmed name", p.ID, p.Name)
		}
		got, err := h.s.GetPolicy(ctx, p.ID)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if got.Name != "Gold" || got.CopyFrequencySeconds != 300 || got.RetentionHours != 24 || got.AppConsistentFrequencyHours != 4 ||
			got.ResyncWindowStart != "18:30" || got.ResyncWindowEnd != "06:00" || got.WorkHoursStart != "08:00" || got.WorkHoursEnd != "18:00" ||
			got.WorkHoursMbps != 100 || got.OffHoursMbps != 1000 {
			t.Errorf("stored policy = %+v, differs from what was created", got)
		}
		if got.InitialReplicationStart == nil || !got.InitialReplicationStart.Equal(start) {
			t.Errorf("initial replication start = %v, want %v", got.InitialReplicationStart, start)
		}
		if !got.CreatedAt.Equal(created) {
			t.Errorf("created at %v, want the store clock %v", got.CreatedAt, created)
		}
		wantAudit(t, h, "policy.create", p.ID)

		// An update comes from a form: a fresh struct that knows only the id.
		h.advance(time.Minute)
		edit := models.DefaultPolicy()
		edit.ID, edit.Name, edit.RetentionHours, edit.CopyFrequencySeconds = p.ID, "Platinum", 12, 30
		if err := h.s.UpdatePolicy(ctx, alice, &edit); err != nil {
			t.Fatalf("update: %v", err)
		}
		again, err := h.s.GetPolicy(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if again.Name != "Platinum" || again.RetentionHours != 12 || again.CopyFrequencySeconds != 30 || again.InitialReplicationStart != nil {
			t.Errorf("updated policy = %+v", again)
		}
		if !again.CreatedAt.Equal(created) || !again.UpdatedAt.Equal(h.clock.T) {
			t.Errorf("created %v updated %v, want %v and %v", again.CreatedAt, again.UpdatedAt, created, h.clock.T)
		}
		wantAudit(t, h, "policy.update", p.ID)

		if err := h.s.DeletePolicy(ctx, alice, p.ID); err != nil {
			t.Fatalf("delete: %v", err)
		}
		_, err = h.s.GetPolicy(ctx, p.ID)
		wantNotFound(t, "get deleted policy", err)
		wantAudit(t, h, "policy.delete", p.ID)
	})
}

func TestPolicyUnknownIDIsNotFound(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		_, err := h.s.GetPolicy(ctx, "pol_nope")
		wantNotFound(t, "get", err)
		p := models.DefaultPolicy()
		p.ID, p.Name = "pol_nope", "Ghost"
		wantNotFound(t, "update", h.s.UpdatePolicy(ctx, alice, &p))
		wantNotFound(t, "delete", h.s.DeletePolicy(ctx, alice, "pol_nope"))
		wantNoAudit(t, h, "policy.update")
		wantNoAudit(t, h, "policy.delete")
	})
}

func TestPolicyDuplicateNameRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		gold := mustPolicy(t, h, "Gold")
		silver := mustPolicy(t, h, "Silver")

		dup := models.DefaultPolicy()
		dup.Name = " Gold "
		wantFields(t, h.s.CreatePolicy(ctx, alice, &dup), "name")

		silver.Name = "Gold"
		wantFields(t, h.s.UpdatePolicy(ctx, alice, silver), "name")
		if got, _ := h.s.GetPolicy(ctx, silver.ID); got.Name != "Silver" {
			t.Errorf("refused rename stored %q", got.Name)
		}

		// Saving a policy under its own name is no clash.
		gold.RetentionHours = 8
		if err := h.s.UpdatePolicy(ctx, alice, gold); err != nil {
			t.Errorf("update keeping the name: %v", err)
		}

		list, _, err := h.s.ListPolicies(ctx, models.Page{})
		if err != nil || len(list) != 2 {
			t.Fatalf("policies = %d (%v), want 2", len(list), err)
		}
		if n := len(auditEvents(t, h, "policy.create")); n != 2 {
			t.Errorf("policy.create events = %d, want 2", n)
		}
	})
}

func TestInvalidPolicyWritesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		bad := models.DefaultPolicy()
		bad.Name, bad.CopyFrequencySeconds = "Bad", 60
		wantFields(t, h.s.CreatePolicy(ctx, alice, &bad), "copy_frequency_seconds")
		list, _, err := h.s.ListPolicies(ctx, models.Page{})
		if err != nil || len(list) != 0 {
			t.Fatalf("policies after a refused create = %d (%v), want 0", len(list), err)
		}
		wantNoAudit(t, h, "policy.create")

		good := mustPolicy(t, h, "Good")
		good.RetentionHours = 99
		wantFields(t, h.s.UpdatePolicy(ctx, alice, good), "retention_hours")
		if got, _ := h.s.GetPolicy(ctx, good.ID); got.RetentionHours != 24 {
			t.Errorf("retention after a refused update = %d, want 24", got.RetentionHours)
		}
		wantNoAudit(t, h, "policy.update")
	})
}

func TestDeletePolicyInUseRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		site := mustSite(t, h, "Primary")
		host := mustHost(t, h, site.ID, "hv1", models.HostConnected)
		vms := mustVMs(t, h, host.ID, "a")
		p := mustPolicy(t, h, "Gold")
		tg := mustDirectoryTarget(t, h, "nas")
		insertProtection(t, h, vms["a"].ID, p.ID, tg.ID, models.HealthNormal)

		wantConflict(t, h.s.DeletePolicy(ctx, alice, p.ID), "policy_in_use")
		if _, err := h.s.GetPolicy(ctx, p.ID); err != nil {
			t.Errorf("policy after a refused delete: %v", err)
		}
		wantNoAudit(t, h, "policy.delete")

		// A policy nobody uses still goes.
		spare := mustPolicy(t, h, "Spare")
		if err := h.s.DeletePolicy(ctx, alice, spare.ID); err != nil {
			t.Errorf("delete unused policy: %v", err)
		}
	})
}

func TestValidatePolicyErrorIsAValidationError(t *testing.T) {
	p := models.DefaultPolicy()
	err := models.ValidatePolicy(&p, time.Now())
	var ve *models.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error = %T, want *models.ValidationError", err)
	}
	if ve.Map()["name"] == "" || !strings.Contains(ve.Error(), "name") {
		t.Errorf("Map() = %v, Error() = %q; both should name the field", ve.Map(), ve.Error())
	}
}

func TestPolicyWithAScheduledStartThatHasPassedCanStillBeEdited(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		p := models.DefaultPolicy()
		p.Name = "Scheduled"
		start := h.clock.T.Add(time.Hour)
		p.InitialReplicationStart = &start
		if err := h.s.CreatePolicy(context.Background(), models.SystemActor, &p); err != nil {
			t.Fatal(err)
		}
		h.advance(3 * time.Hour)
		p.RetentionHours = 12
		if err := h.s.UpdatePolicy(context.Background(), models.SystemActor, &p); err != nil {
			t.Fatalf("editing a policy whose unchanged start has passed: %v", err)
		}
		later := h.clock.T.Add(-time.Hour)
		p.InitialReplicationStart = &later
		wantFields(t, h.s.UpdatePolicy(context.Background(), models.SystemActor, &p), "initial_replication_start")
	})
}
