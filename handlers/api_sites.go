package handlers

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// SiteJSON is a site in the API.
type SiteJSON struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// SiteInputJSON is the body of create and update; update replaces both fields.
type SiteInputJSON struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

func siteJSON(s models.Site) SiteJSON {
	return SiteJSON{ID: s.ID, Name: s.Name, Description: s.Description, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt}
}

// APIListSites answers GET /api/v1/sites.
func (h *Handlers) APIListSites(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := h.store.ListSites(c.Request().Context(), page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, siteJSON))
}

// APIGetSite answers GET /api/v1/sites/{id}.
func (h *Handlers) APIGetSite(c echo.Context) error {
	s, err := h.store.GetSite(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, siteJSON(*s))
}

// APICreateSite answers POST /api/v1/sites.
func (h *Handlers) APICreateSite(c echo.Context) error {
	var in SiteInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	s := models.Site{Name: in.Name, Description: in.Description}
	if err := h.store.CreateSite(c.Request().Context(), actor(c), &s); err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, siteJSON(s))
}

// APIUpdateSite answers PUT /api/v1/sites/{id}: the body replaces the name
// and the description.
func (h *Handlers) APIUpdateSite(c echo.Context) error {
	ctx := c.Request().Context()
	s, err := h.store.GetSite(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	var in SiteInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	s.Name, s.Description = in.Name, in.Description
	if err := h.store.UpdateSite(ctx, actor(c), s); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, siteJSON(*s))
}

// APIDeleteSite answers DELETE /api/v1/sites/{id}; a site with hosts is
// refused with 409 site_has_hosts.
func (h *Handlers) APIDeleteSite(c echo.Context) error {
	if err := h.store.DeleteSite(c.Request().Context(), actor(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
