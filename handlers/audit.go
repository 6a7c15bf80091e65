package handlers

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// auditFilter reads the audit log's filters from the query.
func auditFilter(c echo.Context) models.AuditFilter {
	return models.AuditFilter{ObjectID: strings.TrimSpace(c.QueryParam("object_id")), ObjectKind: c.QueryParam("object_kind"),
		Action: c.QueryParam("action"), Actor: c.QueryParam("actor")}
}

// auditObjectHref is the page of an audited object, or "" when it has none
// (a token, a deleted object still links: its page says it is gone).
func auditObjectHref(kind, id string, canUsers bool) string {
	if id == "" {
		return ""
	}
	switch kind {
	case "vm":
		return "/vms/" + id
	case "host":
		return "/hosts/" + id
	case "site":
		return "/sites/" + id
	case "policy":
		return "/policies/" + id
	case "target":
		return "/targets/" + id
	case "recovery_plan":
		return "/recovery-plans/" + id
	case "job":
		return "/jobs/" + id
	case "user":
		if canUsers {
			return "/users/" + id
		}
	}
	return ""
}

// auditDetails shows an event's details as "key: value" pairs.
func auditDetails(raw string) string {
	if raw == "" {
		return ""
	}
	var m map[string]any
	if json.Unmarshal([]byte(raw), &m) != nil {
		return raw
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		b, _ := json.Marshal(m[k])
		v := strings.Trim(string(b), `"`)
		parts = append(parts, k+": "+v)
	}
	return strings.Join(parts, "; ")
}

// AuditPage shows GET /audit: who changed what, filtered by user, action
// and object, each object linked.
func (h *Handlers) AuditPage(c echo.Context) error {
	ctx := c.Request().Context()
	if err := onlyQuery(c, "object_id", "object_kind", "action", "actor", "cursor", "limit"); err != nil {
		return err
	}
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	f := auditFilter(c)
	items, next, err := h.store.ListAudit(ctx, f, page)
	if err != nil {
		return err
	}
	choices, err := h.store.ListAuditChoices(ctx)
	if err != nil {
		return err
	}
	canUsers := CurrentUser(c) != nil && models.RoleRank(CurrentUser(c).Role) >= models.RoleRank(models.RoleOwner)
	rows := make([]views.AuditRow, 0, len(items))
	for _, e := range items {
		name := e.ObjectName
		if name == "" {
			name = e.ObjectID
		}
		rows = append(rows, views.AuditRow{Time: views.FormatTime(&e.Time), Actor: e.Actor, Action: e.Action, Kind: e.ObjectKind,
			Object: name, ObjectID: e.ObjectID, ObjectHref: auditObjectHref(e.ObjectKind, e.ObjectID, canUsers),
			Details: auditDetails(e.Details), From: e.RemoteAddr})
	}
	v := views.AuditView{Filter: views.AuditFilterView{Actor: f.Actor, Action: f.Action, Kind: f.ObjectKind, ObjectID: f.ObjectID},
		Actors: choices.Actors, Actions: choices.Actions, Kinds: choices.Kinds, Rows: rows, Next: nextHref(c, next)}
	return render(c, http.StatusOK, views.AuditPage(h.page(c, "Audit log", "audit"), v))
}
