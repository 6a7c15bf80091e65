package models_test

import (
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models"
)

func TestSiteCreateGetUpdateDelete(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		created := h.clock.T
		st := &models.Site{Name: " Primary ", Description: "Paris datacenter"}
		if err := h.s.CreateSite(ctx, alice, st); err != nil {
			t.Fatalf("create: %v", err)
		}
		if !strings.HasPrefix(st.ID, "site_") || st.Name != "Primary" {
			t.Fatalf("created site id %q name %q", st.ID, st.Name)
		}
		got, err := h.s.GetSite(ctx, st.ID)
		if err != nil || got.Name != "Primary" || got.Description != "Paris datacenter" {
			t.Fatalf("get = %+v, %v", got, err)
		}
		wantAudit(t, h, "site.create", st.ID)

		h.advance(time.Hour)
		if err := h.s.UpdateSite(ctx, alice, &models.Site{ID: st.ID, Name: "Paris", Description: "renamed"}); err != nil {
			t.Fatalf("update: %v", err)
		}
		again, _ := h.s.GetSite(ctx, st.ID)
		if again.Name != "Paris" || again.Description != "renamed" {
			t.Errorf("after update = %+v", again)
		}
		if !again.CreatedAt.Equal(created) || !again.UpdatedAt.Equal(h.clock.T) {
			t.Errorf("created %v updated %v; creation time must survive an update", again.CreatedAt, again.UpdatedAt)
		}
		wantAudit(t, h, "site.update", st.ID)

		if err := h.s.DeleteSite(ctx, alice, st.ID); err != nil {
			t.Fatalf("delete: %v", err)
		}
		_, err = h.s.GetSite(ctx, st.ID)
		wantNotFound(t, "get deleted site", err)
		wantAudit(t, h, "site.delete", st.ID)
	})
}

func TestSiteValidationAndDuplicates(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		wantFields(t, h.s.CreateSite(ctx, alice, &models.Site{Name: "  "}), "name")
		wantFields(t, h.s.CreateSite(ctx, alice, &models.Site{Name: "Long", Description: strings.Repeat("d", 501)}), "description")
		wantNoAudit(t, h, "site.create")

		mustSite(t, h, "Primary")
		other := mustSite(t, h, "Secondary")
		wantFields(t, h.s.CreateSite(ctx, alice, &models.Site{Name: "Primary"}), "name")
		other.Name = "Primary"
		wantFields(t, h.s.UpdateSite(ctx, alice, other), "name")

		sites, _, err := h.s.ListSites(ctx, models.Page{})
		if err != nil || len(sites) != 2 {
			t.Fatalf("sites = %d (%v), want 2", len(sites), err)
		}
		if got, _ := h.s.GetSite(ctx, other.ID); got.Name != "Secondary" {
			t.Errorf("refused rename stored %q", got.Name)
		}
		wantNoAudit(t, h, "site.update")
	})
}

func TestSiteUnknownIDIsNotFound(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		_, err := h.s.GetSite(ctx, "site_nope")
		wantNotFound(t, "get", err)
		wantNotFound(t, "update", h.s.UpdateSite(ctx, alice, &models.Site{ID: "site_nope", Name: "Ghost"}))
		wantNotFound(t, "delete", h.s.DeleteSite(ctx, alice, "site_nope"))
	})
}

func TestDeleteSiteWithHostRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		st := mustSite(t, h, "Primary")
		host := mustHost(t, h, st.ID, "hv1", "")
		wantConflict(t, h.s.DeleteSite(ctx, alice, st.ID), "site_has_hosts")
		if _, err := h.s.GetSite(ctx, st.ID); err != nil {
			t.Errorf("site after a refused delete: %v", err)
		}
		if _, err := h.s.GetHost(ctx, host.ID); err != nil {
			t.Errorf("host after a refused site delete: %v", err)
		}
		wantNoAudit(t, h, "site.delete")
	})
}

func TestCreateHost(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		st := mustSite(t, h, "Primary")
		host := &models.Host{SiteID: st.ID, Name: " hv1 "}
		if err := h.s.CreateHost(ctx, alice, host); err != nil {
			t.Fatalf("create host: %v", err)
		}
		got, err := h.s.GetHost(ctx, host.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got.ID, "host_") || got.Name != "hv1" || got.SiteID != st.ID || got.State != models.HostDisconnected {
			t.Errorf("host = %+v, want hv1 in %s, Disconnected until its agent reports", got, st.ID)
		}
		wantAudit(t, h, "host.create", host.ID)

		wantFields(t, h.s.CreateHost(ctx, alice, &models.Host{SiteID: "site_nope", Name: "hv2"}), "site_id")
		wantFields(t, h.s.CreateHost(ctx, alice, &models.Host{Name: "hv2"}), "site_id")
		wantFields(t, h.s.CreateHost(ctx, alice, &models.Host{SiteID: st.ID}), "name")
		if n := len(auditEvents(t, h, "host.create")); n != 1 {
			t.Errorf("host.create events = %d, want 1 (refused hosts write none)", n)
		}
		_, err = h.s.GetHost(ctx, "host_nope")
		wantNotFound(t, "get host", err)
	})
}

func TestListHostsFilters(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		a, b := mustSite(t, h, "A"), mustSite(t, h, "B")
		a1 := mustHost(t, h, a.ID, "a1", models.HostConnected)
		a2 := mustHost(t, h, a.ID, "a2", models.HostDisconnected)
		b1 := mustHost(t, h, b.ID, "b1", models.HostConnected)
		revoked := mustHost(t, h, b.ID, "b2", models.HostConnected)
		if err := h.rawDB(t).Model(&models.Host{}).Where("id = ?", revoked.ID).Update("revoked_at", h.clock.T).Error; err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name   string
			filter models.HostFilter
			want   []string
		}{
			{"all but the revoked host", models.HostFilter{}, []string{a1.ID, a2.ID, b1.ID}},
			{"by site", models.HostFilter{SiteID: a.ID}, []string{a1.ID, a2.ID}},
			{"by state", models.HostFilter{State: models.HostConnected}, []string{a1.ID, b1.ID}},
			{"by site and state", models.HostFilter{SiteID: b.ID, State: models.HostConnected}, []string{b1.ID}},
		}
		for _, c := range cases {
			hosts, _, err := h.s.ListHosts(ctx, c.filter, models.Page{})
			if err != nil {
				t.Fatal(err)
			}
			got := idsOf(hosts, func(x models.Host) string { return x.ID })
			if strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Errorf("%s: hosts = %v, want %v", c.name, got, c.want)
			}
		}
	})
}
