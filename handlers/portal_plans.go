package handlers

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// In the portal a group is addressed by its 1-based position in the plan,
// a VM by its id and an action by its id. Every edit loads the plan, changes
// its PlanInput and saves the whole plan with one UpdatePlan: one
// transaction, one audit event.

// planInventoryLimit bounds how many VMs the plan page lists to pick from.
const planInventoryLimit = 5000

// PlansPage shows GET /recovery-plans.
func (h *Handlers) PlansPage(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := h.store.ListPlans(c.Request().Context(), page)
	if err != nil {
		return err
	}
	rows := make([]views.PlanRow, 0, len(items))
	for _, p := range items {
		r := views.PlanRow{ID: p.ID, Name: p.Name, Description: p.Description, Groups: len(p.Groups)}
		for _, g := range p.Groups {
			r.VMs += len(g.VMs)
		}
		rows = append(rows, r)
	}
	return render(c, http.StatusOK, views.PlansPage(h.page(c, "Recovery plans", "plans"), rows, nextHref(c, next)))
}

// NewPlanPage shows GET /recovery-plans/new.
func (h *Handlers) NewPlanPage(c echo.Context) error {
	return render(c, http.StatusOK, views.NewPlanPage(h.page(c, "New recovery plan", "plans"), views.PlanForm{Errors: views.FormErrors{}}))
}

// CreatePlan handles POST /recovery-plans: an empty plan, then its page.
func (h *Handlers) CreatePlan(c echo.Context) error {
	f := views.PlanForm{Name: c.FormValue("name"), Description: c.FormValue("description"), Errors: views.FormErrors{}}
	p, err := h.store.CreatePlan(c.Request().Context(), actor(c), models.PlanInput{Name: f.Name, Description: f.Description})
	if err == nil {
		return h.redirectWithFlash(c, "/recovery-plans/"+p.ID, fmt.Sprintf("Recovery plan %q created. Add its first group.", p.Name))
	}
	if err := formErrors(err, f.Errors); err != nil {
		return err
	}
	return render(c, http.StatusBadRequest, views.NewPlanPage(h.page(c, "New recovery plan", "plans"), f))
}

// PlanPage shows GET /recovery-plans/{id}.
func (h *Handlers) PlanPage(c echo.Context) error {
	ctx := c.Request().Context()
	p, err := h.store.GetPlan(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	v, err := h.planView(c, p)
	if err != nil {
		return err
	}
	return render(c, http.StatusOK, views.PlanPage(h.page(c, "Recovery plan "+p.Name, "plans"), v))
}

// DeletePlan handles POST /recovery-plans/{id}/delete.
func (h *Handlers) DeletePlan(c echo.Context) error {
	ctx := c.Request().Context()
	p, err := h.store.GetPlan(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	if err := h.store.DeletePlan(ctx, actor(c), p.ID); err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/recovery-plans", fmt.Sprintf("Recovery plan %q deleted.", p.Name))
}

// UpdatePlan handles POST /recovery-plans/{id}: name and description.
func (h *Handlers) UpdatePlan(c echo.Context) error {
	name, description := c.FormValue("name"), c.FormValue("description")
	return h.editPlan(c, func(_ *models.RecoveryPlan, in *models.PlanInput) (planDone, error) {
		in.Name, in.Description = name, description
		return planDone{Flash: "Name and description saved."}, nil
	}, func(v *views.PlanView) {
		v.Edit.Name, v.Edit.Description = name, description
	})
}

// AddPlanGroup handles POST /recovery-plans/{id}/groups.
func (h *Handlers) AddPlanGroup(c echo.Context) error {
	name := c.FormValue("name")
	return h.editPlan(c, func(_ *models.RecoveryPlan, in *models.PlanInput) (planDone, error) {
		in.Groups = append(in.Groups, models.GroupInput{Name: name})
		seq := len(in.Groups)
		shown := strings.TrimSpace(name)
		if shown == "" {
			shown = fmt.Sprintf("Group %d", seq) // the store's default name
		}
		return planDone{Flash: fmt.Sprintf("Group %q added.", shown), Group: seq}, nil
	}, func(v *views.PlanView) {
		v.NewGroup.Name = name
	})
}

// DeletePlanGroup handles POST /recovery-plans/{id}/groups/{group}/delete.
func (h *Handlers) DeletePlanGroup(c echo.Context) error {
	return h.editPlan(c, func(_ *models.RecoveryPlan, in *models.PlanInput) (planDone, error) {
		i, err := planGroupIndex(c, in)
		if err != nil {
			return planDone{}, err
		}
		name := in.Groups[i].Name
		in.Groups = slices.Delete(in.Groups, i, i+1)
		return planDone{Flash: fmt.Sprintf("Group %q deleted with its VMs and actions.", name)}, nil
	}, nil)
}

// MovePlanGroup handles POST /recovery-plans/{id}/groups/{group}/move with
// direction=up or direction=down: the group swaps places with its neighbour.
func (h *Handlers) MovePlanGroup(c echo.Context) error {
	direction := c.FormValue("direction")
	return h.editPlan(c, func(_ *models.RecoveryPlan, in *models.PlanInput) (planDone, error) {
		i, err := planGroupIndex(c, in)
		if err != nil {
			return planDone{}, err
		}
		j := i
		switch direction {
		case "up":
			j = i - 1
		case "down":
			j = i + 1
		default:
			return planDone{}, models.Invalid("direction", "must be up or down")
		}
		if j < 0 || j >= len(in.Groups) {
			return planDone{}, models.Invalid("direction", "group %q is already the %s one; it cannot move %s", in.Groups[i].Name, map[string]string{"up": "first", "down": "last"}[direction], direction)
		}
		in.Groups[i], in.Groups[j] = in.Groups[j], in.Groups[i]
		return planDone{Flash: fmt.Sprintf("Group %q moved %s; it is now group %d.", in.Groups[j].Name, direction, j+1), Group: j + 1}, nil
	}, nil)
}

// AddPlanVM handles POST /recovery-plans/{id}/groups/{group}/vms with vm_id.
func (h *Handlers) AddPlanVM(c echo.Context) error {
	vmID := strings.TrimSpace(c.FormValue("vm_id"))
	return h.editPlan(c, func(_ *models.RecoveryPlan, in *models.PlanInput) (planDone, error) {
		i, err := planGroupIndex(c, in)
		if err != nil {
			return planDone{}, err
		}
		if vmID == "" {
			return planDone{}, models.Invalid(fmt.Sprintf("groups[%d].vm_ids", i), "pick a VM to add")
		}
		in.Groups[i].VMIDs = append(in.Groups[i].VMIDs, vmID)
		name := vmID
		if vm, err := h.store.GetVM(c.Request().Context(), vmID); err == nil {
			name = vm.Name
		}
		return planDone{Flash: fmt.Sprintf("VM %q added to group %q.", name, in.Groups[i].Name), Group: i + 1}, nil
	}, func(v *views.PlanView) {
		if i, err := strconv.Atoi(c.Param("group")); err == nil && i >= 1 && i <= len(v.Groups) {
			v.Groups[i-1].NewVMID = vmID
		}
	})
}

// RemovePlanVM handles POST /recovery-plans/{id}/groups/{group}/vms/{vm}/delete.
func (h *Handlers) RemovePlanVM(c echo.Context) error {
	vmID := c.Param("vm")
	return h.editPlan(c, func(_ *models.RecoveryPlan, in *models.PlanInput) (planDone, error) {
		i, err := planGroupIndex(c, in)
		if err != nil {
			return planDone{}, err
		}
		k := slices.Index(in.Groups[i].VMIDs, vmID)
		if k < 0 {
			return planDone{}, &Problem{Status: http.StatusNotFound, Code: "not_found",
				Message: fmt.Sprintf("VM %s is not in group %q (any more); reload the plan", vmID, in.Groups[i].Name)}
		}
		in.Groups[i].VMIDs = slices.Delete(in.Groups[i].VMIDs, k, k+1)
		return planDone{Flash: fmt.Sprintf("VM removed from group %q.", in.Groups[i].Name), Group: i + 1}, nil
	}, nil)
}

// AddPlanAction handles POST /recovery-plans/{id}/groups/{group}/actions.
func (h *Handlers) AddPlanAction(c echo.Context) error {
	a := models.ActionInput{Phase: c.FormValue("phase"), Kind: c.FormValue("kind"), Name: c.FormValue("name"),
		Script: c.FormValue("script"), Instructions: c.FormValue("instructions")}
	return h.editPlan(c, func(_ *models.RecoveryPlan, in *models.PlanInput) (planDone, error) {
		i, err := planGroupIndex(c, in)
		if err != nil {
			return planDone{}, err
		}
		in.Groups[i].Actions = append(in.Groups[i].Actions, a)
		return planDone{Flash: fmt.Sprintf("Action %q added to group %q.", strings.TrimSpace(a.Name), in.Groups[i].Name), Group: i + 1}, nil
	}, func(v *views.PlanView) {
		if i, err := strconv.Atoi(c.Param("group")); err == nil && i >= 1 && i <= len(v.Groups) {
			f := &v.Groups[i-1].NewAction
			f.Phase, f.Kind, f.Name, f.Script, f.Instructions = a.Phase, a.Kind, a.Name, a.Script, a.Instructions
		}
	})
}

// RemovePlanAction handles POST /recovery-plans/{id}/groups/{group}/actions/{action}/delete;
// {action} is the action's id.
func (h *Handlers) RemovePlanAction(c echo.Context) error {
	actionID := c.Param("action")
	return h.editPlan(c, func(p *models.RecoveryPlan, in *models.PlanInput) (planDone, error) {
		i, err := planGroupIndex(c, in)
		if err != nil {
			return planDone{}, err
		}
		// PlanToInput keeps the stored order of the actions, so the stored
		// action's index is its index in the input.
		k := slices.IndexFunc(p.Groups[i].Actions, func(a models.PlanAction) bool { return a.ID == actionID })
		if k < 0 {
			return planDone{}, &Problem{Status: http.StatusNotFound, Code: "not_found",
				Message: fmt.Sprintf("group %q has no such action (any more); reload the plan", in.Groups[i].Name)}
		}
		name := in.Groups[i].Actions[k].Name
		in.Groups[i].Actions = slices.Delete(in.Groups[i].Actions, k, k+1)
		return planDone{Flash: fmt.Sprintf("Action %q removed from group %q.", name, in.Groups[i].Name), Group: i + 1}, nil
	}, nil)
}

// planDone is what a successful edit tells the user, and which group to
// scroll to (0 for none).
type planDone struct {
	Flash string
	Group int
}

// planChange edits a plan's input; p is the stored plan it came from.
type planChange func(p *models.RecoveryPlan, in *models.PlanInput) (planDone, error)

// editPlan loads the plan named in the URL, applies change and saves the
// whole plan. A refused change re-renders the plan page with 400, the
// reasons next to the fields, and what was typed put back by typed.
func (h *Handlers) editPlan(c echo.Context, change planChange, typed func(v *views.PlanView)) error {
	ctx := c.Request().Context()
	p, err := h.store.GetPlan(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	in := models.PlanToInput(p)
	done, err := change(p, &in)
	if err == nil {
		if _, err = h.store.UpdatePlan(ctx, actor(c), p.ID, in); err == nil {
			to := "/recovery-plans/" + p.ID
			if done.Group > 0 {
				to += "#group-" + strconv.Itoa(done.Group)
			}
			return h.redirectWithFlash(c, to, done.Flash)
		}
	}
	errs := views.FormErrors{}
	if err := formErrors(err, errs); err != nil {
		return err
	}
	v, err := h.planView(c, p)
	if err != nil {
		return err
	}
	v.Errors, v.Edit.Errors = errs, errs
	if typed != nil {
		typed(&v)
	}
	v.Unplaced = unplacedErrors(v)
	return render(c, http.StatusBadRequest, views.PlanPage(h.page(c, "Recovery plan "+p.Name, "plans"), v))
}

// planGroupIndex reads {group}, the 1-based position of a group, as an
// index into in.Groups.
func planGroupIndex(c echo.Context, in *models.PlanInput) (int, error) {
	n, err := strconv.Atoi(c.Param("group"))
	if err != nil || n < 1 || n > len(in.Groups) {
		return 0, &Problem{Status: http.StatusNotFound, Code: "not_found",
			Message: fmt.Sprintf("this plan has no group %q; it may have been moved or deleted, so reload the plan", c.Param("group"))}
	}
	return n - 1, nil
}

// planView builds the plan page's view model: the groups with their VMs'
// names and hosts, and the VMs that may still be added.
func (h *Handlers) planView(c echo.Context, p *models.RecoveryPlan) (views.PlanView, error) {
	ctx := c.Request().Context()
	inventory, err := h.planInventory(c)
	if err != nil {
		return views.PlanView{}, err
	}
	byID := make(map[string]models.VMSummary, len(inventory))
	for _, vm := range inventory {
		byID[vm.ID] = vm
	}
	v := views.PlanView{
		ID: p.ID, Name: p.Name, Description: p.Description,
		Edit:     views.PlanForm{ID: p.ID, Name: p.Name, Description: p.Description, Errors: views.FormErrors{}},
		NewGroup: views.PlanNewGroup{Field: fmt.Sprintf("groups[%d]", len(p.Groups))},
		MaxVMs:   models.MaxPlanVMs, InventoryEmpty: len(inventory) == 0, Errors: views.FormErrors{},
	}
	hosts, _, err := h.store.ListHosts(ctx, models.HostFilter{State: models.HostConnected}, models.Page{Limit: optionLimit})
	if err != nil {
		return views.PlanView{}, err
	}
	for _, host := range hosts {
		v.Hosts = append(v.Hosts, views.Option{Value: host.ID, Label: host.Name})
	}
	inPlan := map[string]bool{}
	for gi, g := range p.Groups {
		gv := views.PlanGroupView{
			Seq: gi + 1, Name: g.Name, Field: fmt.Sprintf("groups[%d]", gi), First: gi == 0, Last: gi == len(p.Groups)-1,
			NewAction: views.PlanActionForm{Field: fmt.Sprintf("groups[%d].actions[%d]", gi, len(g.Actions)), Phase: models.PhasePre, Kind: models.ActionScript},
		}
		for _, m := range g.VMs {
			inPlan[m.VMID] = true
			vm, ok := byID[m.VMID]
			if !ok { // beyond the listed inventory, or gone from it
				found, err := h.store.GetVM(ctx, m.VMID)
				switch {
				case errors.Is(err, models.ErrNotFound):
					gv.VMs = append(gv.VMs, views.PlanVMView{ID: m.VMID, Name: m.VMID, HostName: "—", Note: "no longer in the inventory; remove it"})
					continue
				case err != nil:
					return views.PlanView{}, err
				}
				vm = *found
			}
			pv := views.PlanVMView{ID: vm.ID, Name: vm.Name, HostName: vm.HostName}
			if vm.MissingSince != nil {
				pv.Note = "not reported by its host since " + views.FormatTime(vm.MissingSince)
			}
			gv.VMs = append(gv.VMs, pv)
		}
		for _, a := range g.Actions {
			av := views.PlanActionView{ID: a.ID, Phase: a.Phase, Kind: a.Kind, Name: a.Name, Script: a.Script, Instructions: a.Instructions}
			if a.Phase == models.PhasePre {
				gv.Pre = append(gv.Pre, av)
			} else {
				gv.Post = append(gv.Post, av)
			}
		}
		v.VMCount += len(g.VMs)
		v.Groups = append(v.Groups, gv)
	}
	slices.SortFunc(inventory, func(a, b models.VMSummary) int {
		return cmp.Or(cmp.Compare(a.HostName, b.HostName), cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	for _, vm := range inventory {
		if !inPlan[vm.ID] {
			v.AvailableVMs = append(v.AvailableVMs, views.Option{Value: vm.ID, Label: vm.Name + " (host " + vm.HostName + ")"})
		}
	}
	return v, nil
}

// planInventory lists the vault's VMs, up to planInventoryLimit.
func (h *Handlers) planInventory(c echo.Context) ([]models.VMSummary, error) {
	var out []models.VMSummary
	page := models.Page{Limit: models.MaxPageSize}
	for len(out) < planInventoryLimit {
		items, next, err := h.store.ListVMs(c.Request().Context(), models.VMFilter{}, page)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" {
			break
		}
		page.Cursor = next
	}
	return out, nil
}

// unplacedErrors are the refusals whose field the plan page shows nowhere,
// so that none is hidden from the user.
func unplacedErrors(v views.PlanView) []string {
	placed := map[string]bool{"name": true, "description": true, "groups": true, v.NewGroup.Field + ".name": true}
	for _, g := range v.Groups {
		placed[g.Field+".vm_ids"], placed[g.Field+".actions"] = true, true
		for _, f := range []string{"phase", "kind", "name", "script", "instructions"} {
			placed[g.NewAction.Field+"."+f] = true
		}
	}
	var out []string
	for field, reason := range v.Errors {
		if !placed[field] {
			out = append(out, field+": "+reason)
		}
	}
	slices.Sort(out)
	return out
}
