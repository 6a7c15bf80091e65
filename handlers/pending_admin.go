package handlers

import (
	"github.com/labstack/echo/v4"
)

// Handlers not written yet. Each answers 501 so the route table compiles;
// implement a handler in its own file and delete it from here.

func (h *Handlers) TargetsPage(c echo.Context) error       { return notBuilt(c) }
func (h *Handlers) NewTargetPage(c echo.Context) error     { return notBuilt(c) }
func (h *Handlers) CreateTarget(c echo.Context) error      { return notBuilt(c) }
func (h *Handlers) TargetPage(c echo.Context) error        { return notBuilt(c) }
func (h *Handlers) UpdateTarget(c echo.Context) error      { return notBuilt(c) }
func (h *Handlers) DeleteTarget(c echo.Context) error      { return notBuilt(c) }
func (h *Handlers) UsersPage(c echo.Context) error         { return notBuilt(c) }
func (h *Handlers) NewUserPage(c echo.Context) error       { return notBuilt(c) }
func (h *Handlers) CreateUser(c echo.Context) error        { return notBuilt(c) }
func (h *Handlers) UserPage(c echo.Context) error          { return notBuilt(c) }
func (h *Handlers) UpdateUser(c echo.Context) error        { return notBuilt(c) }
func (h *Handlers) DeleteUser(c echo.Context) error        { return notBuilt(c) }
func (h *Handlers) AccountPage(c echo.Context) error       { return notBuilt(c) }
func (h *Handlers) ChangeOwnPassword(c echo.Context) error { return notBuilt(c) }
func (h *Handlers) CreateOwnToken(c echo.Context) error    { return notBuilt(c) }
func (h *Handlers) DeleteOwnToken(c echo.Context) error    { return notBuilt(c) }
