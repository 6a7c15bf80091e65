package handlers

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

const formTimeLayout = "2006-01-02T15:04"

func policyRow(p models.Policy) views.PolicyRow {
	bw := func(n int) string {
		if n == 0 {
			return "unlimited"
		}
		return fmt.Sprintf("%d Mbit/s", n)
	}
	return views.PolicyRow{
		ID: p.ID, Name: p.Name, CopyFrequency: copyFrequencyLabel(p.CopyFrequencySeconds),
		RetentionHours: p.RetentionHours, AppConsistentFrequencyHours: p.AppConsistentFrequencyHours,
		ResyncWindow: p.ResyncWindowStart + "–" + p.ResyncWindowEnd,
		Bandwidth:    fmt.Sprintf("%s in %s–%s, %s otherwise", bw(p.WorkHoursMbps), p.WorkHoursStart, p.WorkHoursEnd, bw(p.OffHoursMbps)),
	}
}

func copyFrequencyLabel(seconds int) string {
	for _, o := range views.CopyFrequencyOptions {
		if o.Value == strconv.Itoa(seconds) {
			return o.Label
		}
	}
	return fmt.Sprintf("%d s", seconds)
}

func policyForm(p models.Policy) views.PolicyForm {
	f := views.PolicyForm{
		ID: p.ID, Name: p.Name, CopyFrequencySeconds: strconv.Itoa(p.CopyFrequencySeconds),
		RetentionHours: strconv.Itoa(p.RetentionHours), AppConsistentFrequencyHours: strconv.Itoa(p.AppConsistentFrequencyHours),
		ResyncWindowStart: p.ResyncWindowStart, ResyncWindowEnd: p.ResyncWindowEnd,
		WorkHoursStart: p.WorkHoursStart, WorkHoursEnd: p.WorkHoursEnd,
		WorkHoursMbps: strconv.Itoa(p.WorkHoursMbps), OffHoursMbps: strconv.Itoa(p.OffHoursMbps),
		Errors: views.FormErrors{},
	}
	if p.InitialReplicationStart != nil {
		f.InitialReplicationStart = p.InitialReplicationStart.UTC().Format(formTimeLayout)
	}
	return f
}

// readPolicyForm fills p from the posted form and returns the form's values
// with any field that could not even be parsed.
func readPolicyForm(c echo.Context, p *models.Policy) views.PolicyForm {
	errs := views.FormErrors{}
	p.Name = c.FormValue("name")
	p.CopyFrequencySeconds = formInt(c, "copy_frequency_seconds", errs)
	p.RetentionHours = formInt(c, "retention_hours", errs)
	p.AppConsistentFrequencyHours = formInt(c, "app_consistent_frequency_hours", errs)
	p.InitialReplicationStart = nil
	if s := strings.TrimSpace(c.FormValue("initial_replication_start")); s != "" {
		t, err := time.ParseInLocation(formTimeLayout, s, time.UTC)
		if err != nil {
			errs["initial_replication_start"] = "must be a date and time such as 2026-03-09T22:00, or empty to start now"
		} else {
			p.InitialReplicationStart = &t
		}
	}
	p.ResyncWindowStart, p.ResyncWindowEnd = c.FormValue("resync_window.start"), c.FormValue("resync_window.end")
	p.WorkHoursStart, p.WorkHoursEnd = c.FormValue("bandwidth.work_hours.start"), c.FormValue("bandwidth.work_hours.end")
	p.WorkHoursMbps = formInt(c, "bandwidth.work_hours_mbps", errs)
	p.OffHoursMbps = formInt(c, "bandwidth.off_hours_mbps", errs)
	f := views.PolicyForm{
		ID: p.ID, Name: p.Name, CopyFrequencySeconds: c.FormValue("copy_frequency_seconds"),
		RetentionHours: c.FormValue("retention_hours"), AppConsistentFrequencyHours: c.FormValue("app_consistent_frequency_hours"),
		InitialReplicationStart: c.FormValue("initial_replication_start"),
		ResyncWindowStart:       p.ResyncWindowStart, ResyncWindowEnd: p.ResyncWindowEnd,
		WorkHoursStart: p.WorkHoursStart, WorkHoursEnd: p.WorkHoursEnd,
		WorkHoursMbps: c.FormValue("bandwidth.work_hours_mbps"), OffHoursMbps: c.FormValue("bandwidth.off_hours_mbps"),
		Errors: errs,
	}
	return f
}

// PoliciesPage shows GET /policies.
func (h *Handlers) PoliciesPage(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := h.store.ListPolicies(c.Request().Context(), page)
	if err != nil {
		return err
	}
	rows := make([]views.PolicyRow, 0, len(items))
	for _, p := range items {
		rows = append(rows, policyRow(p))
	}
	return render(c, http.StatusOK, views.PoliciesPage(h.page(c, "Replication policies", "policies"), rows, nextHref(c, next)))
}

// NewPolicyPage shows GET /policies/new.
func (h *Handlers) NewPolicyPage(c echo.Context) error {
	return render(c, http.StatusOK, views.PolicyFormPage(h.page(c, "New policy", "policies"), policyForm(models.DefaultPolicy()), ""))
}

// PolicyPage shows GET /policies/{id}: the policy in its edit form.
func (h *Handlers) PolicyPage(c echo.Context) error {
	p, err := h.store.GetPolicy(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	f := policyForm(*p)
	if f.UsedBy, err = h.policyUsedBy(c, p.ID); err != nil {
		return err
	}
	return render(c, http.StatusOK, views.PolicyFormPage(h.page(c, "Policy "+p.Name, "policies"), f, ""))
}

// CreatePolicy handles POST /policies.
func (h *Handlers) CreatePolicy(c echo.Context) error {
	var p models.Policy
	f := readPolicyForm(c, &p)
	if len(f.Errors) == 0 {
		err := h.store.CreatePolicy(c.Request().Context(), actor(c), &p)
		if err == nil {
			return h.redirectWithFlash(c, "/policies", fmt.Sprintf("Policy %q created.", p.Name))
		}
		if err := formErrors(err, f.Errors); err != nil {
			return err
		}
	}
	return render(c, http.StatusBadRequest, views.PolicyFormPage(h.page(c, "New policy", "policies"), f, ""))
}

// UpdatePolicy handles POST /policies/{id}.
func (h *Handlers) UpdatePolicy(c echo.Context) error {
	ctx := c.Request().Context()
	p, err := h.store.GetPolicy(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	f := readPolicyForm(c, p)
	if len(f.Errors) == 0 {
		err := h.store.UpdatePolicy(ctx, actor(c), p)
		if err == nil {
			return h.redirectWithFlash(c, "/policies", fmt.Sprintf("Policy %q saved.", p.Name))
		}
		if err := formErrors(err, f.Errors); err != nil {
			return err
		}
	}
	return render(c, http.StatusBadRequest, views.PolicyFormPage(h.page(c, "Policy "+p.Name, "policies"), f, ""))
}

// DeletePolicy handles POST /policies/{id}/delete.
func (h *Handlers) DeletePolicy(c echo.Context) error {
	ctx := c.Request().Context()
	p, err := h.store.GetPolicy(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	err = h.store.DeletePolicy(ctx, actor(c), p.ID)
	var conflict *models.ConflictError
	if errors.As(err, &conflict) {
		return render(c, http.StatusConflict, views.PolicyFormPage(h.page(c, "Policy "+p.Name, "policies"), policyForm(*p), "The policy was not deleted: "+conflict.Message+"."))
	}
	if err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/policies", fmt.Sprintf("Policy %q deleted.", p.Name))
}

// nextHref is the URL of a list's next page: the current URL with the cursor.
func nextHref(c echo.Context, next string) string {
	if next == "" {
		return ""
	}
	q := c.Request().URL.Query()
	q.Set("cursor", next)
	return c.Request().URL.Path + "?" + q.Encode()
}
