package handlers

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

const (
	// SessionCookie holds the portal session secret.
	SessionCookie = "lifeboat_session"
	userKey       = "lifeboat.user"
)

// IsAPI reports whether a request is for the JSON API.
func IsAPI(c echo.Context) bool {
	p := c.Request().URL.Path
	return p == "/api" || strings.HasPrefix(p, "/api/")
}

// LoadUser finds who is calling: a bearer token on /api, the session cookie
// elsewhere. The API never accepts the cookie, so it needs no CSRF token, and
// the portal never accepts a token. Anonymous calls go on; Require decides.
func (h *Handlers) LoadUser(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx := c.Request().Context()
		if IsAPI(c) {
			auth := c.Request().Header.Get(echo.HeaderAuthorization)
			if auth == "" {
				return next(c)
			}
			token, ok := strings.CutPrefix(auth, "Bearer ")
			if !ok || token == "" {
				return apiError(http.StatusUnauthorized, "unauthenticated", "the Authorization header must be \"Bearer TOKEN\"; get a token from POST /api/v1/auth/token")
			}
			u, _, err := h.store.UserForToken(ctx, strings.TrimSpace(token))
			if errors.Is(err, models.ErrUnauthenticated) {
				return apiError(http.StatusUnauthorized, "token_invalid", "the API token is unknown or expired; get a new one from POST /api/v1/auth/token")
			}
			if err != nil {
				return err
			}
			c.Set(userKey, u)
			return next(c)
		}
		cookie, err := c.Cookie(SessionCookie)
		if err == nil && cookie.Value != "" {
			u, err := h.store.UserForSession(ctx, cookie.Value)
			switch {
			case err == nil:
				c.Set(userKey, u)
			case errors.Is(err, models.ErrUnauthenticated):
				h.clearSessionCookie(c)
			default:
				return err
			}
		}
		return next(c)
	}
}

// CurrentUser is the caller, or nil when anonymous.
func CurrentUser(c echo.Context) *models.User {
	u, _ := c.Get(userKey).(*models.User)
	return u
}

// Require lets a route through only for a caller with at least role.
func Require(role string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			u := CurrentUser(c)
			if u == nil {
				if IsAPI(c) {
					return apiError(http.StatusUnauthorized, "unauthenticated", "this call needs an API token: send \"Authorization: Bearer TOKEN\" with a token from POST /api/v1/auth/token")
				}
				if c.Request().Method == http.MethodGet {
					return c.Redirect(http.StatusSeeOther, "/login?next="+url.QueryEscape(c.Request().URL.RequestURI()))
				}
				return &Problem{Status: http.StatusUnauthorized, Code: "unauthenticated", Message: "your session has ended; log in again"}
			}
			if models.RoleRank(u.Role) < models.RoleRank(role) {
				return &Problem{Status: http.StatusForbidden, Code: "forbidden",
					Message: "your role " + u.Role + " may not do this; it needs " + role + " or above. Ask an Owner to change your role."}
			}
			return next(c)
		}
	}
}

// actor is who makes the change, for the audit log.
func actor(c echo.Context) models.Actor {
	a := models.Actor{RequestID: c.Response().Header().Get(echo.HeaderXRequestID), RemoteAddr: c.RealIP()}
	if u := CurrentUser(c); u != nil {
		a.UserID, a.Username = u.ID, u.Username
	}
	return a
}

func (h *Handlers) setSessionCookie(c echo.Context, secret string) {
	c.SetCookie(&http.Cookie{
		Name: SessionCookie, Value: secret, Path: "/", HttpOnly: true, Secure: h.secureCookies,
		SameSite: http.SameSiteLaxMode, MaxAge: int(models.SessionLifetime.Seconds()),
	})
}

func (h *Handlers) clearSessionCookie(c echo.Context) {
	c.SetCookie(&http.Cookie{Name: SessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: h.secureCookies, SameSite: http.SameSiteLaxMode, MaxAge: -1})
}
