package handlers

import (
	"github.com/labstack/echo/v4"
)

// Handlers not written yet. Each answers 501 so the route table compiles;
// implement a handler in its own file and delete it from here.

func (h *Handlers) PlansPage(c echo.Context) error        { return notBuilt(c) }
func (h *Handlers) NewPlanPage(c echo.Context) error      { return notBuilt(c) }
func (h *Handlers) CreatePlan(c echo.Context) error       { return notBuilt(c) }
func (h *Handlers) PlanPage(c echo.Context) error         { return notBuilt(c) }
func (h *Handlers) UpdatePlan(c echo.Context) error       { return notBuilt(c) }
func (h *Handlers) DeletePlan(c echo.Context) error       { return notBuilt(c) }
func (h *Handlers) AddPlanGroup(c echo.Context) error     { return notBuilt(c) }
func (h *Handlers) DeletePlanGroup(c echo.Context) error  { return notBuilt(c) }
func (h *Handlers) MovePlanGroup(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) AddPlanVM(c echo.Context) error        { return notBuilt(c) }
func (h *Handlers) RemovePlanVM(c echo.Context) error     { return notBuilt(c) }
func (h *Handlers) AddPlanAction(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) RemovePlanAction(c echo.Context) error { return notBuilt(c) }
func (h *Handlers) APIListPlans(c echo.Context) error     { return notBuilt(c) }
func (h *Handlers) APICreatePlan(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) APIGetPlan(c echo.Context) error       { return notBuilt(c) }
func (h *Handlers) APIUpdatePlan(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) APIDeletePlan(c echo.Context) error    { return notBuilt(c) }
