package handlers

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// APITokenJSON is one of the caller's API tokens; its secret is never shown
// again after creation.
type APITokenJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// APITokenInputJSON is the body of POST /api/v1/tokens.
type APITokenInputJSON struct {
	Name          string `json:"name"`
	ExpiresInDays int    `json:"expires_in_days"`
}

// APITokenCreatedJSON answers POST /api/v1/tokens: the only time the
// secret is shown.
type APITokenCreatedJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Token     string    `json:"token"`
}

// maxTokenDays is the longest lifetime a token may be given.
const maxTokenDays = int(models.MaxTokenLifetime / (24 * time.Hour))

func apiTokenJSON(t models.APIToken) APITokenJSON {
	return APITokenJSON{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, LastUsedAt: t.LastUsedAt}
}

// APIListTokens answers GET /api/v1/tokens: the caller's own tokens.
func (h *Handlers) APIListTokens(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := h.store.ListTokens(c.Request().Context(), CurrentUser(c).ID, page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, apiTokenJSON))
}

// APICreateToken answers POST /api/v1/tokens with a token for the caller.
func (h *Handlers) APICreateToken(c echo.Context) error {
	var in APITokenInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	// Out of range becomes 0 so the store names the field, and a huge
	// number never overflows the duration.
	var lifetime time.Duration
	if in.ExpiresInDays >= 1 && in.ExpiresInDays <= maxTokenDays {
		lifetime = time.Duration(in.ExpiresInDays) * 24 * time.Hour
	}
	t, secret, err := h.store.CreateToken(c.Request().Context(), actor(c), CurrentUser(c), in.Name, lifetime)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, APITokenCreatedJSON{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, Token: secret})
}

// APIDeleteToken answers DELETE /api/v1/tokens/{id}; another user's token
// is not found, so ids cannot be probed.
func (h *Handlers) APIDeleteToken(c echo.Context) error {
	if err := h.store.DeleteToken(c.Request().Context(), actor(c), CurrentUser(c).ID, c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
