package handlers

import (
	"bytes"
	"encoding/base64"
	"net/http"

	"github.com/a-h/templ"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/lifeboat-dr/lifeboat/views"
)

// render writes a component into a buffer first, so a rendering error becomes
// a clean error page instead of half a page.
func render(c echo.Context, status int, comp templ.Component) error {
	var buf bytes.Buffer
	if err := comp.Render(c.Request().Context(), &buf); err != nil {
		return err
	}
	return c.HTMLBlob(status, buf.Bytes())
}

// page fills the layout's view model: who is logged in, the CSRF token for
// forms, which navigation entry is active, and a flash message.
func (h *Handlers) page(c echo.Context, title, nav string) views.Page {
	p := views.Page{Title: title, Nav: nav, Version: Version}
	if token, ok := c.Get(middleware.DefaultCSRFConfig.ContextKey).(string); ok {
		p.CSRF = token
	}
	if u := CurrentUser(c); u != nil {
		p.User = &views.PageUser{Username: u.Username, Role: u.Role}
	}
	if f, err := c.Cookie(flashCookie); err == nil && f.Value != "" {
		p.Flash = flashDecode(f.Value)
		c.SetCookie(&http.Cookie{Name: flashCookie, Path: "/", MaxAge: -1, HttpOnly: true, Secure: h.secureCookies, SameSite: http.SameSiteLaxMode})
	}
	return p
}

const flashCookie = "lifeboat_flash"

// Cookie values allow only some ASCII, so the message travels base64-encoded.
func flashEncode(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func flashDecode(s string) string {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) > 500 {
		return ""
	}
	return string(b)
}

// redirectWithFlash answers a successful form with 303 See Other and a message
// for the next page (post/redirect/get, so reloading does not resubmit).
func (h *Handlers) redirectWithFlash(c echo.Context, to, message string) error {
	c.SetCookie(&http.Cookie{Name: flashCookie, Value: flashEncode(message), Path: "/", MaxAge: 60, HttpOnly: true, Secure: h.secureCookies, SameSite: http.SameSiteLaxMode})
	return c.Redirect(http.StatusSeeOther, to)
}
