package handlers

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// safeNext keeps a post-login redirect inside the portal: a path, never an
// absolute URL or a scheme-relative one that would lead off-site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.HasPrefix(next, "/api") {
		return "/"
	}
	return next
}

// LoginPage shows GET /login.
func (h *Handlers) LoginPage(c echo.Context) error {
	if CurrentUser(c) != nil {
		return c.Redirect(http.StatusSeeOther, safeNext(c.QueryParam("next")))
	}
	return render(c, http.StatusOK, views.LoginPage(h.page(c, "Log in", ""), views.LoginView{Next: c.QueryParam("next")}))
}

// Login handles POST /login.
func (h *Handlers) Login(c echo.Context) error {
	ctx := c.Request().Context()
	username, password := c.FormValue("username"), c.FormValue("password")
	if p := h.logins.check(c.RealIP(), username); p != nil {
		retryAfter(c.Response().Header(), p)
		v := views.LoginView{Username: username, Next: c.FormValue("next"), Error: p.Message}
		return render(c, http.StatusTooManyRequests, views.LoginPage(h.page(c, "Log in", ""), v))
	}
	u, err := h.store.Authenticate(ctx, username, password)
	if errors.Is(err, models.ErrBadCredentials) {
		h.logins.fail(c.RealIP(), username)
		h.log.WarnContext(ctx, "login failed", "username", username, "remote_addr", c.RealIP())
		v := views.LoginView{Username: username, Next: c.FormValue("next"), Error: "Wrong username or password."}
		return render(c, http.StatusUnauthorized, views.LoginPage(h.page(c, "Log in", ""), v))
	}
	if err != nil {
		return err
	}
	a := actor(c)
	a.UserID, a.Username = u.ID, u.Username
	secret, err := h.store.CreateSession(ctx, a, u)
	if err != nil {
		return err
	}
	h.setSessionCookie(c, secret)
	return c.Redirect(http.StatusSeeOther, safeNext(c.FormValue("next")))
}

// Logout handles POST /logout.
func (h *Handlers) Logout(c echo.Context) error {
	if cookie, err := c.Cookie(SessionCookie); err == nil && cookie.Value != "" {
		if err := h.store.DeleteSession(c.Request().Context(), actor(c), cookie.Value); err != nil {
			return err
		}
	}
	h.clearSessionCookie(c)
	return c.Redirect(http.StatusSeeOther, "/login")
}

// DashboardPage shows GET /.
func (h *Handlers) DashboardPage(c echo.Context) error {
	d, err := h.store.Dashboard(c.Request().Context())
	if err != nil {
		return err
	}
	v := views.DashboardView{
		VMsTotal: d.VMsTotal, VMsUnprotected: d.VMsUnprotected,
		VMsNormal: d.VMsByHealth[models.HealthNormal], VMsWarning: d.VMsByHealth[models.HealthWarning], VMsCritical: d.VMsByHealth[models.HealthCritical],
		JobsInProgress: d.JobsInProgress, JobsFailed24h: d.JobsFailed24h, JobsWaiting: d.JobsWaitingInput,
		HostsConnected: d.HostsConnected, HostsDisconnected: d.HostsDisconnected, ActiveAlerts: d.ActiveAlerts,
		Sites: d.Sites, Policies: d.Policies, Targets: d.Targets, VMsWithoutDrill: d.VMsWithoutDrill,
		RPOWithin: d.RPO.Within, RPOOver: d.RPO.Over, RPONoPoint: d.RPO.NoPoint,
	}
	for _, r := range d.RPO.Worst {
		v.WorstRPO = append(v.WorstRPO, views.RPORow{VMID: r.VMID, Name: r.Name, Over: r.Over(),
			RPO: views.FormatSeconds(int64(r.RPOSeconds)), Threshold: views.FormatSeconds(int64(r.ThresholdSeconds))})
	}
	return render(c, http.StatusOK, views.DashboardPage(h.page(c, "Dashboard", "dashboard"), v))
}
