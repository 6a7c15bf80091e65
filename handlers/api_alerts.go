package handlers

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// AlertJSON is an alert in the API: something an administrator must look at.
type AlertJSON struct {
	ID             string     `json:"id"`
	Kind           string     `json:"kind"`
	Severity       string     `json:"severity"`
	ObjectKind     string     `json:"object_kind"`
	ObjectID       string     `json:"object_id"`
	Message        string     `json:"message"`
	State          string     `json:"state"`
	AcknowledgedBy string     `json:"acknowledged_by"`
	AcknowledgedAt *time.Time `json:"acknowledged_at"`
	ResolvedAt     *time.Time `json:"resolved_at"`
	// ResolvedBy is the user who resolved it, or "system" when the vault
	// did (its condition ended); empty while it is open.
	ResolvedBy string    `json:"resolved_by"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// AlertToJSON is the alert as the API and the alert webhook show it.
func AlertToJSON(a models.Alert) AlertJSON { return alertJSON(a) }

func alertJSON(a models.Alert) AlertJSON {
	return AlertJSON{ID: a.ID, Kind: a.Kind, Severity: a.Severity, ObjectKind: a.ObjectKind, ObjectID: a.ObjectID,
		Message: a.Message, State: a.State, AcknowledgedBy: a.AcknowledgedBy, AcknowledgedAt: a.AcknowledgedAt,
		ResolvedAt: a.ResolvedAt, ResolvedBy: a.ResolvedBy, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}
}

// AuditEventJSON is one audited change. Details is the JSON object the
// store recorded with the change (never a secret), or null.
type AuditEventJSON struct {
	ID         string          `json:"id"`
	Time       time.Time       `json:"time"`
	ActorID    string          `json:"actor_id"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	ObjectKind string          `json:"object_kind"`
	ObjectID   string          `json:"object_id"`
	ObjectName string          `json:"object_name"`
	Details    json.RawMessage `json:"details"`
	RequestID  string          `json:"request_id"`
	RemoteAddr string          `json:"remote_addr"`
}

func auditEventJSON(e models.AuditEvent) AuditEventJSON {
	out := AuditEventJSON{ID: e.ID, Time: e.Time, ActorID: e.ActorID, Actor: e.Actor, Action: e.Action,
		ObjectKind: e.ObjectKind, ObjectID: e.ObjectID, ObjectName: e.ObjectName, RequestID: e.RequestID,
		RemoteAddr: e.RemoteAddr, Details: json.RawMessage("null")}
	if e.Details != "" && json.Valid([]byte(e.Details)) {
		out.Details = json.RawMessage(e.Details)
	}
	return out
}

// AlertStates are the values of ?state= on /alerts.
var AlertStates = []string{models.AlertActive, models.AlertAcknowledged, models.AlertResolved}

// APIListAlerts answers GET /api/v1/alerts?state=, newest first.
func (h *Handlers) APIListAlerts(c echo.Context) error {
	items, next, _, err := h.listAlerts(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, alertJSON))
}

// listAlerts reads ?state= and the page of /alerts, for the API and the
// portal alike.
func (h *Handlers) listAlerts(c echo.Context) ([]models.Alert, string, models.AlertFilter, error) {
	f := models.AlertFilter{State: c.QueryParam("state")}
	page, err := pageParams(c)
	if err != nil {
		return nil, "", f, err
	}
	if err := oneOf("state", f.State, AlertStates); err != nil {
		return nil, "", f, err
	}
	items, next, err := h.store.ListAlerts(c.Request().Context(), f, page)
	return items, next, f, err
}

// APIListAudit answers GET /api/v1/audit?object_id=&action=, newest first.
func (h *Handlers) APIListAudit(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	if err := onlyQuery(c, "object_id", "object_kind", "action", "actor", "cursor", "limit"); err != nil {
		return err
	}
	f := auditFilter(c)
	items, next, err := h.store.ListAudit(c.Request().Context(), f, page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, auditEventJSON))
}
