package models_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models"
)

// TestListsPageInCreationOrder creates seven objects of each kind and reads
// them three at a time: pages of 3, 3 and 1, each cursor the last id of its
// page, every object once, oldest first (audit events, jobs and alerts newest
// first).
func TestListsPageInCreationOrder(t *testing.T) {
	type lister func(ctx context.Context, p models.Page) ([]string, string, error)
	kinds := []struct {
		name        string
		newestFirst bool
		// create makes the i-th object and returns its id; list pages them.
		setup func(t *testing.T, h *harness) (create func(i int) string, list lister)
	}{
		{"sites", false, func(t *testing.T, h *harness) (func(int) string, lister) {
			return func(i int) string { return mustSite(t, h, fmt.Sprintf("site %d", i)).ID },
				func(ctx context.Context, p models.Page) ([]string, string, error) {
					items, next, err := h.s.ListSites(ctx, p)
					return idsOf(items, func(x models.Site) string { return x.ID }), next, err
				}
		}},
		{"policies", false, func(t *testing.T, h *harness) (func(int) string, lister) {
			return func(i int) string { return mustPolicy(t, h, fmt.Sprintf("policy %d", i)).ID },
				func(ctx context.Context, p models.Page) ([]string, string, error) {
					items, next, err := h.s.ListPolicies(ctx, p)
					return idsOf(items, func(x models.Policy) string { return x.ID }), next, err
				}
		}},
		{"targets", false, func(t *testing.T, h *harness) (func(int) string, lister) {
			return func(i int) string { return mustDirectoryTarget(t, h, fmt.Sprintf("target%d", i)).ID },
				func(ctx context.Context, p models.Page) ([]string, string, error) {
					items, next, err := h.s.ListTargets(ctx, p)
					return idsOf(items, func(x models.Target) string { return x.ID }), next, err
				}
		}},
		{"users", false, func(t *testing.T, h *harness) (func(int) string, lister) {
			return func(i int) string { return mustUser(t, h, fmt.Sprintf("user%d", i), models.RoleReader).ID },
				func(ctx context.Context, p models.Page) ([]string, string, error) {
					items, next, err := h.s.ListUsers(ctx, p)
					return idsOf(items, func(x models.User) string { return x.ID }), next, err
				}
		}},
		{"hosts", false, func(t *testing.T, h *harness) (func(int) string, lister) {
			site := mustSite(t, h, "Primary")
			return func(i int) string { return mustHost(t, h, site.ID, fmt.Sprintf("hv%d", i), "").ID },
				func(ctx context.Context, p models.Page) ([]string, string, error) {
					items, next, err := h.s.ListHosts(ctx, models.HostFilter{SiteID: site.ID}, p)
					return idsOf(items, func(x models.Host) string { return x.ID }), next, err
				}
		}},
		{"recovery plans", false, func(t *testing.T, h *harness) (func(int) string, lister) {
			return func(i int) string {
					p, err := h.s.CreatePlan(t.Context(), alice, models.PlanInput{Name: fmt.Sprintf("plan %d", i), Groups: []models.GroupInput{{}}})
					if err != nil {
						t.Fatal(err)
					}
					return p.ID
				},
				func(ctx context.Context, p models.Page) ([]string, string, error) {
					items, next, err := h.s.ListPlans(ctx, p)
					for _, it := range items {
						if len(it.Groups) != 1 {
							t.Errorf("listed plan %s has %d groups, want 1", it.Name, len(it.Groups))
						}
					}
					return idsOf(items, func(x models.RecoveryPlan) string { return x.ID }), next, err
				}
		}},
		{"tokens", false, func(t *testing.T, h *harness) (func(int) string, lister) {
			u := mustUser(t, h, "bob", models.RoleOwner)
			other := mustUser(t, h, "carol", models.RoleOwner)
			if _, _, err := h.s.CreateToken(t.Context(), alice, other, "not bob's", time.Hour); err != nil {
				t.Fatal(err)
			}
			return func(i int) string {
					tok, _, err := h.s.CreateToken(t.Context(), alice, u, fmt.Sprintf("token %d", i), time.Hour)
					if err != nil {
						t.Fatal(err)
					}
					return tok.ID
				},
				func(ctx context.Context, p models.Page) ([]string, string, error) {
					items, next, err := h.s.ListTokens(ctx, u.ID, p)
					return idsOf(items, func(x models.APIToken) string { return x.ID }), next, err
				}
		}},
		{"jobs", true, func(t *testing.T, h *harness) (func(int) string, lister) {
			return func(i int) string { return mustJob(t, h, "Resync", models.JobSucceeded, "vm_1", "only step").ID },
				func(ctx context.Context, p models.Page) ([]string, string, error) {
					items, next, err := h.s.ListJobs(ctx, models.JobFilter{}, p)
					return idsOf(items, func(x models.Job) string { return x.ID }), next, err
				}
		}},
		{"audit events", true, func(t *testing.T, h *harness) (func(int) string, lister) {
			mustPolicy(t, h, "not a site") // another action, filtered out
			return func(i int) string {
					st := mustSite(t, h, fmt.Sprintf("site %d", i))
					return wantAudit(t, h, "site.create", st.ID).ID
				},
				func(ctx context.Context, p models.Page) ([]string, string, error) {
					items, next, err := h.s.ListAudit(ctx, models.AuditFilter{Action: "site.create"}, p)
					return idsOf(items, func(x models.AuditEvent) string { return x.ID }), next, err
				}
		}},
		{"alerts", true, func(t *testing.T, h *harness) (func(int) string, lister) {
			return func(i int) string {
					a := models.Alert{ID: models.NewID("alert"), Kind: "HostHeartbeatLost", Severity: "Critical", Message: "lost", State: models.AlertActive}
					if err := h.rawDB(t).Create(&a).Error; err != nil {
						t.Fatal(err)
					}
					return a.ID
				},
				func(ctx context.Context, p models.Page) ([]string, string, error) {
					items, next, err := h.s.ListAlerts(ctx, models.AlertFilter{State: models.AlertActive}, p)
					return idsOf(items, func(x models.Alert) string { return x.ID }), next, err
				}
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, h *harness) {
				create, list := k.setup(t, h)
				var want []string
				for i := range 7 {
					want = append(want, create(i))
				}
				if k.newestFirst {
					slices.Reverse(want)
				}
				sizes, ids := pageThrough(t, 3, func(p models.Page) ([]string, string, error) { return list(t.Context(), p) })
				if !slices.Equal(sizes, []int{3, 3, 1}) {
					t.Errorf("page sizes = %v, want [3 3 1]", sizes)
				}
				if !slices.Equal(ids, want) {
					t.Errorf("paged ids = %v\nwant %v", ids, want)
				}
				// No limit means the default page size, which holds them all.
				all, next, err := list(t.Context(), models.Page{})
				if err != nil || next != "" || !slices.Equal(all, want) {
					t.Errorf("default page = %v, next %q, %v; want all 7 and no cursor", all, next, err)
				}
				// An exact fit ends without a cursor to an empty page.
				_, next, err = list(t.Context(), models.Page{Limit: 7})
				if err != nil || next != "" {
					t.Errorf("a page of exactly 7 gave next cursor %q, %v; want none", next, err)
				}
			})
		})
	}
}
