package handlers

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// PolicyJSON is a replication policy in the API.
type PolicyJSON struct {
	ID                          string        `json:"id"`
	Name                        string        `json:"name"`
	CopyFrequencySeconds        int           `json:"copy_frequency_seconds"`
	RetentionHours              int           `json:"retention_hours"`
	AppConsistentFrequencyHours int           `json:"app_consistent_frequency_hours"`
	InitialReplicationStart     *time.Time    `json:"initial_replication_start"`
	ResyncWindow                WindowJSON    `json:"resync_window"`
	Bandwidth                   BandwidthJSON `json:"bandwidth"`
	CreatedAt                   time.Time     `json:"created_at"`
	UpdatedAt                   time.Time     `json:"updated_at"`
}

// WindowJSON is a daily time window, "HH:MM" to "HH:MM"; it may cross midnight.
type WindowJSON struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// BandwidthJSON limits replication traffic; 0 means unlimited.
type BandwidthJSON struct {
	WorkHours     WindowJSON `json:"work_hours"`
	WorkHoursMbps int        `json:"work_hours_mbps"`
	OffHoursMbps  int        `json:"off_hours_mbps"`
}

// PolicyInputJSON is the body of create and update. Fields left out take
// the defaults of a new policy (on update: keep their values). A new
// policy's app_consistent_frequency_hours defaults to 4, or to 0 (off)
// when its retention is 4 hours or less, where 4 could not be.
type PolicyInputJSON struct {
	Name                        string         `json:"name"`
	CopyFrequencySeconds        *int           `json:"copy_frequency_seconds"`
	RetentionHours              *int           `json:"retention_hours"`
	AppConsistentFrequencyHours *int           `json:"app_consistent_frequency_hours"`
	InitialReplicationStart     *time.Time     `json:"initial_replication_start"`
	ResyncWindow                *WindowJSON    `json:"resync_window"`
	Bandwidth                   *BandwidthJSON `json:"bandwidth"`
}

func policyJSON(p models.Policy) PolicyJSON {
	return PolicyJSON{
		ID: p.ID, Name: p.Name, CopyFrequencySeconds: p.CopyFrequencySeconds, RetentionHours: p.RetentionHours,
		AppConsistentFrequencyHours: p.AppConsistentFrequencyHours, InitialReplicationStart: p.InitialReplicationStart,
		ResyncWindow: WindowJSON{Start: p.ResyncWindowStart, End: p.ResyncWindowEnd},
		Bandwidth: BandwidthJSON{WorkHours: WindowJSON{Start: p.WorkHoursStart, End: p.WorkHoursEnd},
			WorkHoursMbps: p.WorkHoursMbps, OffHoursMbps: p.OffHoursMbps},
		CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
	}
}

func (in PolicyInputJSON) apply(p *models.Policy) {
	p.Name = in.Name
	if in.CopyFrequencySeconds != nil {
		p.CopyFrequencySeconds = *in.CopyFrequencySeconds
	}
	if in.RetentionHours != nil {
		p.RetentionHours = *in.RetentionHours
	}
	if in.AppConsistentFrequencyHours != nil {
		p.AppConsistentFrequencyHours = *in.AppConsistentFrequencyHours
	}
	p.InitialReplicationStart = in.InitialReplicationStart
	if in.ResyncWindow != nil {
		p.ResyncWindowStart, p.ResyncWindowEnd = in.ResyncWindow.Start, in.ResyncWindow.End
	}
	if in.Bandwidth != nil {
		p.WorkHoursStart, p.WorkHoursEnd = in.Bandwidth.WorkHours.Start, in.Bandwidth.WorkHours.End
		p.WorkHoursMbps, p.OffHoursMbps = in.Bandwidth.WorkHoursMbps, in.Bandwidth.OffHoursMbps
	}
}

// APIListPolicies answers GET /api/v1/policies.
func (h *Handlers) APIListPolicies(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := h.store.ListPolicies(c.Request().Context(), page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, policyJSON))
}

// APIGetPolicy answers GET /api/v1/policies/{id}.
func (h *Handlers) APIGetPolicy(c echo.Context) error {
	p, err := h.store.GetPolicy(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, policyJSON(*p))
}

// APICreatePolicy answers POST /api/v1/policies.
func (h *Handlers) APICreatePolicy(c echo.Context) error {
	var in PolicyInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	p := models.DefaultPolicy()
	in.apply(&p)
	if in.AppConsistentFrequencyHours == nil && p.AppConsistentFrequencyHours >= p.RetentionHours {
		// The default cannot be (it must be below the retention): off,
		// rather than an error about a field the client did not send.
		p.AppConsistentFrequencyHours = 0
	}
	if err := h.store.CreatePolicy(c.Request().Context(), actor(c), &p); err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, policyJSON(p))
}

// APIUpdatePolicy answers PUT /api/v1/policies/{id}: the body replaces the
// policy; fields left out keep their current values.
func (h *Handlers) APIUpdatePolicy(c echo.Context) error {
	ctx := c.Request().Context()
	p, err := h.store.GetPolicy(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	var in PolicyInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	keepStart := p.InitialReplicationStart
	in.apply(p)
	if in.InitialReplicationStart == nil {
		p.InitialReplicationStart = keepStart
	}
	if err := h.store.UpdatePolicy(ctx, actor(c), p); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, policyJSON(*p))
}

// APIDeletePolicy answers DELETE /api/v1/policies/{id}.
func (h *Handlers) APIDeletePolicy(c echo.Context) error {
	if err := h.store.DeletePolicy(c.Request().Context(), actor(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
