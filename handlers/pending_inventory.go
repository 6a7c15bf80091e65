package handlers

import (
	"github.com/labstack/echo/v4"
)

// Handlers not written yet. Each answers 501 so the route table compiles;
// implement a handler in its own file and delete it from here.

func (h *Handlers) SitesPage(c echo.Context) error   { return notBuilt(c) }
func (h *Handlers) NewSitePage(c echo.Context) error { return notBuilt(c) }
func (h *Handlers) CreateSite(c echo.Context) error  { return notBuilt(c) }
func (h *Handlers) SitePage(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) UpdateSite(c echo.Context) error  { return notBuilt(c) }
func (h *Handlers) DeleteSite(c echo.Context) error  { return notBuilt(c) }
func (h *Handlers) HostPage(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) VMsPage(c echo.Context) error     { return notBuilt(c) }
func (h *Handlers) VMPage(c echo.Context) error      { return notBuilt(c) }
func (h *Handlers) JobsPage(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) JobPage(c echo.Context) error     { return notBuilt(c) }
