package handlers

import (
	"github.com/labstack/echo/v4"
)

// Handlers not written yet. Each answers 501 so the route table compiles;
// implement a handler in its own file and delete it from here.

func (h *Handlers) APIOpenAPI(c echo.Context) error      { return notBuilt(c) }
func (h *Handlers) APIListSites(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) APICreateSite(c echo.Context) error   { return notBuilt(c) }
func (h *Handlers) APIGetSite(c echo.Context) error      { return notBuilt(c) }
func (h *Handlers) APIUpdateSite(c echo.Context) error   { return notBuilt(c) }
func (h *Handlers) APIDeleteSite(c echo.Context) error   { return notBuilt(c) }
func (h *Handlers) APIListHosts(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) APIGetHost(c echo.Context) error      { return notBuilt(c) }
func (h *Handlers) APIListVMs(c echo.Context) error      { return notBuilt(c) }
func (h *Handlers) APIGetVM(c echo.Context) error        { return notBuilt(c) }
func (h *Handlers) APIListJobs(c echo.Context) error     { return notBuilt(c) }
func (h *Handlers) APIGetJob(c echo.Context) error       { return notBuilt(c) }
func (h *Handlers) APIListAlerts(c echo.Context) error   { return notBuilt(c) }
func (h *Handlers) APIListAudit(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) APIListTargets(c echo.Context) error  { return notBuilt(c) }
func (h *Handlers) APICreateTarget(c echo.Context) error { return notBuilt(c) }
func (h *Handlers) APIGetTarget(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) APIUpdateTarget(c echo.Context) error { return notBuilt(c) }
func (h *Handlers) APIDeleteTarget(c echo.Context) error { return notBuilt(c) }
func (h *Handlers) APIListUsers(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) APICreateUser(c echo.Context) error   { return notBuilt(c) }
func (h *Handlers) APIGetUser(c echo.Context) error      { return notBuilt(c) }
func (h *Handlers) APIUpdateUser(c echo.Context) error   { return notBuilt(c) }
func (h *Handlers) APIDeleteUser(c echo.Context) error   { return notBuilt(c) }
func (h *Handlers) APIListTokens(c echo.Context) error   { return notBuilt(c) }
func (h *Handlers) APICreateToken(c echo.Context) error  { return notBuilt(c) }
func (h *Handlers) APIDeleteToken(c echo.Context) error  { return notBuilt(c) }
