package handlers

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// AlertsPage shows GET /alerts?state=.
func (h *Handlers) AlertsPage(c echo.Context) error {
	items, next, f, err := h.listAlerts(c)
	if err != nil {
		return err
	}
	rows := make([]views.AlertRow, 0, len(items))
	for _, a := range items {
		// The message names the object; the link opens its page.
		r := views.AlertRow{ID: a.ID, Kind: a.Kind, Severity: a.Severity, Object: a.ObjectKind + " " + a.ObjectID, Message: a.Message,
			State: a.State, Raised: views.FormatTime(&a.CreatedAt)}
		switch a.ObjectKind {
		case "vm":
			r.Object, r.ObjectHref = "the VM's page", "/vms/"+a.ObjectID
		case "host":
			r.Object, r.ObjectHref = "the host's page", "/hosts/"+a.ObjectID
		}
		if a.AcknowledgedBy != "" {
			r.Acknowledged = "acknowledged by " + a.AcknowledgedBy + " at " + views.FormatTime(a.AcknowledgedAt)
		}
		switch {
		case a.State != models.AlertResolved:
		case a.ResolvedBy == models.ResolvedBySystem:
			r.Resolved = "resolved by the vault at " + views.FormatTime(a.ResolvedAt) + ": its condition ended"
		case a.ResolvedBy != "":
			r.Resolved = "resolved by " + a.ResolvedBy + " at " + views.FormatTime(a.ResolvedAt)
		}
		rows = append(rows, r)
	}
	return render(c, http.StatusOK, views.AlertsPage(h.page(c, "Alerts", "alerts"), rows, f.State, nextHref(c, next)))
}

// AcknowledgeAlert handles POST /alerts/{id}/acknowledge.
func (h *Handlers) AcknowledgeAlert(c echo.Context) error {
	if _, err := h.store.AcknowledgeAlert(c.Request().Context(), actor(c), c.Param("id")); err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/alerts", "Alert acknowledged: it stays open until it is resolved.")
}

// ResolveAlert handles POST /alerts/{id}/resolve.
func (h *Handlers) ResolveAlert(c echo.Context) error {
	if _, err := h.store.ResolveAlert(c.Request().Context(), actor(c), c.Param("id")); err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/alerts", "Alert resolved.")
}

// APIAcknowledgeAlert answers POST /api/v1/alerts/{id}/acknowledge.
func (h *Handlers) APIAcknowledgeAlert(c echo.Context) error {
	a, err := h.store.AcknowledgeAlert(c.Request().Context(), actor(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, alertJSON(*a))
}

// APIResolveAlert answers POST /api/v1/alerts/{id}/resolve.
func (h *Handlers) APIResolveAlert(c echo.Context) error {
	a, err := h.store.ResolveAlert(c.Request().Context(), actor(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, alertJSON(*a))
}
