package handlers

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// TokenRequestJSON is the body of POST /api/v1/auth/token.
type TokenRequestJSON struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// TokenResponseJSON answers it.
type TokenResponseJSON struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// APIIssueToken answers POST /api/v1/auth/token: a username and password
// buy a token valid for 24 hours.
func (h *Handlers) APIIssueToken(c echo.Context) error {
	var in TokenRequestJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	v := &models.ValidationError{}
	if in.Username == "" {
		v.Add("username", "is required")
	}
	if in.Password == "" {
		v.Add("password", "is required")
	}
	if err := v.Err(); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if p := h.logins.check(c.RealIP(), in.Username); p != nil {
		retryAfter(c.Response().Header(), p)
		return p
	}
	u, err := h.store.Authenticate(ctx, in.Username, in.Password)
	if errors.Is(err, models.ErrBadCredentials) {
		h.logins.fail(c.RealIP(), in.Username)
		h.log.WarnContext(ctx, "API login failed", "username", in.Username, "remote_addr", c.RealIP())
		return apiError(http.StatusUnauthorized, "bad_credentials", "wrong username or password")
	}
	if err != nil {
		return err
	}
	a := actor(c)
	a.UserID, a.Username = u.ID, u.Username
	tok, secret, err := h.store.CreateToken(ctx, a, u, "login "+h.now().UTC().Format(time.RFC3339), models.LoginTokenLifetime)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, TokenResponseJSON{Token: secret, ExpiresAt: tok.ExpiresAt})
}

// Healthz answers GET /healthz: 200 when the database answers with a
// schema this vault runs on, else 503 (a newer vault migrated the database:
// this one must be upgraded, and a load balancer should stop using it).
func (h *Handlers) Healthz(c echo.Context) error {
	ctx := c.Request().Context()
	if err := h.store.Ping(ctx); err != nil {
		h.log.ErrorContext(ctx, "health check failed", "error", err)
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": "the database cannot be reached"})
	}
	if err := h.store.CheckSchema(ctx); err != nil {
		h.log.ErrorContext(ctx, "health check failed", "error", err)
		var se *models.SchemaError
		if errors.As(err, &se) {
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "code": se.Code, "reason": se.Message})
		}
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": "the database's schema version cannot be read"})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}
