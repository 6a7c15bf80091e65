package handlers

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// PlanJSON is a recovery plan in the API. Groups are in failover order; the
// VMs of a group fail over in parallel, between its pre and post actions.
type PlanJSON struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Groups      []PlanGroupJSON `json:"groups"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
}

// PlanGroupJSON is one group of a plan, in the answers and in the bodies.
type PlanGroupJSON struct {
	Name    string           `json:"name"`
	VMIDs   []string         `json:"vm_ids"`
	Actions []PlanActionJSON `json:"actions"`
}

// PlanActionJSON is a pre or post action of a group: a script (absolute path
// on the recovery host) or a manual action (instructions for the operator).
type PlanActionJSON struct {
	Phase        string `json:"phase"`
	Kind         string `json:"kind"`
	Name         string `json:"name"`
	Script       string `json:"script"`
	Instructions string `json:"instructions"`
}

// PlanInputJSON is the body of create and update. Update replaces the whole
// plan, so it must say which groups the plan has ([] for none): a body that
// only renames the plan must not silently empty it.
type PlanInputJSON struct {
	Name        string           `json:"name"`
	Description string           `json:"description"`
	Groups      *[]PlanGroupJSON `json:"groups"`
}

func planJSON(p models.RecoveryPlan) PlanJSON {
	out := PlanJSON{ID: p.ID, Name: p.Name, Description: p.Description, Groups: make([]PlanGroupJSON, 0, len(p.Groups)),
		CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
	for _, g := range p.Groups {
		gj := PlanGroupJSON{Name: g.Name, VMIDs: make([]string, 0, len(g.VMs)), Actions: make([]PlanActionJSON, 0, len(g.Actions))}
		for _, m := range g.VMs {
			gj.VMIDs = append(gj.VMIDs, m.VMID)
		}
		for _, a := range g.Actions {
			gj.Actions = append(gj.Actions, PlanActionJSON{Phase: a.Phase, Kind: a.Kind, Name: a.Name, Script: a.Script, Instructions: a.Instructions})
		}
		out.Groups = append(out.Groups, gj)
	}
	return out
}

func (in PlanInputJSON) toInput() models.PlanInput {
	out := models.PlanInput{Name: in.Name, Description: in.Description}
	if in.Groups == nil {
		return out
	}
	for _, g := range *in.Groups {
		gi := models.GroupInput{Name: g.Name, VMIDs: g.VMIDs}
		for _, a := range g.Actions {
			gi.Actions = append(gi.Actions, models.ActionInput{Phase: a.Phase, Kind: a.Kind, Name: a.Name, Script: a.Script, Instructions: a.Instructions})
		}
		out.Groups = append(out.Groups, gi)
	}
	return out
}

// APIListPlans answers GET /api/v1/recovery-plans.
func (h *Handlers) APIListPlans(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := h.store.ListPlans(c.Request().Context(), page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, planJSON))
}

// APIGetPlan answers GET /api/v1/recovery-plans/{id}.
func (h *Handlers) APIGetPlan(c echo.Context) error {
	p, err := h.store.GetPlan(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, planJSON(*p))
}

// APICreatePlan answers POST /api/v1/recovery-plans; groups may be left out.
func (h *Handlers) APICreatePlan(c echo.Context) error {
	var in PlanInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	p, err := h.store.CreatePlan(c.Request().Context(), actor(c), in.toInput())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, planJSON(*p))
}

// APIUpdatePlan answers PUT /api/v1/recovery-plans/{id}: the body replaces
// the plan's name, description and groups in one transaction.
func (h *Handlers) APIUpdatePlan(c echo.Context) error {
	var in PlanInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if in.Groups == nil {
		return models.Invalid("groups", "is required: PUT replaces the whole plan; send [] for a plan without groups")
	}
	p, err := h.store.UpdatePlan(c.Request().Context(), actor(c), c.Param("id"), in.toInput())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, planJSON(*p))
}

// APIDeletePlan answers DELETE /api/v1/recovery-plans/{id}.
func (h *Handlers) APIDeletePlan(c echo.Context) error {
	if err := h.store.DeletePlan(c.Request().Context(), actor(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
