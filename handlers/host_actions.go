package handlers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// JobAcceptedJSON answers an action that started a job (DESIGN.md §7).
type JobAcceptedJSON struct {
	JobID string `json:"job_id"`
}

// minFreeBytes is the free space a host check wants in the agent's state
// directory and VM root.
const minFreeBytes = 1 << 30

// RegistrationKeyInputJSON is the body of POST
// /api/v1/sites/{id}/registration-key, which may be empty.
type RegistrationKeyInputJSON struct {
	// ExpiresInHours is how long the key is valid: 1 to 120 hours, 120
	// when left out.
	ExpiresInHours int `json:"expires_in_hours"`
}

// newRegistrationKey makes a registration key file for a site.
func (h *Handlers) newRegistrationKey(c echo.Context, siteID string, lifetime time.Duration) (*agentproto.RegistrationKey, error) {
	ctx := c.Request().Context()
	site, err := h.store.GetSite(ctx, siteID)
	if err != nil {
		return nil, err
	}
	if h.vaultURL == "" || h.caFingerprint == "" {
		return nil, &Problem{Status: http.StatusServiceUnavailable, Code: "agents_disabled", Message: "this vault was started without an agent endpoint"}
	}
	k, secret, err := h.store.CreateRegistrationKey(ctx, actor(c), site.ID, lifetime)
	if err != nil {
		return nil, err
	}
	return &agentproto.RegistrationKey{VaultURL: h.vaultURL, CAFingerprint: h.caFingerprint, Secret: secret,
		SiteID: site.ID, SiteName: site.Name, ExpiresAt: k.ExpiresAt.UTC()}, nil
}

// APICreateRegistrationKey answers POST /api/v1/sites/{id}/registration-key.
func (h *Handlers) APICreateRegistrationKey(c echo.Context) error {
	var in RegistrationKeyInputJSON
	if err := decodeOptionalJSON(c, &in); err != nil {
		return err
	}
	key, err := h.newRegistrationKey(c, c.Param("id"), time.Duration(in.ExpiresInHours)*time.Hour)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, key)
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// CreateRegistrationKey handles POST /sites/{id}/registration-key: the key
// file downloads at once; the vault keeps only a hash of its secret.
func (h *Handlers) CreateRegistrationKey(c echo.Context) error {
	key, err := h.newRegistrationKey(c, c.Param("id"), 0)
	if err != nil {
		return err
	}
	body, err := json.MarshalIndent(key, "", "  ")
	if err != nil {
		return err
	}
	name := "lifeboat-" + unsafeFileChars.ReplaceAllString(key.SiteName, "-") + ".key.json"
	c.Response().Header().Set("Cache-Control", "no-store")
	c.Response().Header().Set(echo.HeaderContentDisposition, fmt.Sprintf("attachment; filename=%q", name))
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, append(body, '\n'))
}

// startHostCheck queues the prerequisites check on a host and wakes its poll.
func (h *Handlers) startHostCheck(c echo.Context, hostID string) (*models.Job, error) {
	payload, _ := json.Marshal(agentproto.PrerequisitesPayload{MinFreeBytes: minFreeBytes})
	job, err := h.store.StartHostCheck(c.Request().Context(), actor(c), hostID, string(payload))
	if err != nil {
		return nil, err
	}
	h.wakeups.wake(hostID)
	return job, nil
}

// APICheckHost answers POST /api/v1/hosts/{id}/check.
func (h *Handlers) APICheckHost(c echo.Context) error {
	job, err := h.startHostCheck(c, c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, JobAcceptedJSON{JobID: job.ID})
}

// CheckHost handles POST /hosts/{id}/check and shows the job.
func (h *Handlers) CheckHost(c echo.Context) error {
	job, err := h.startHostCheck(c, c.Param("id"))
	if err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/jobs/"+job.ID, "Prerequisites check started; the host's agent picks it up at its next poll.")
}

// APIDeleteHost answers DELETE /api/v1/hosts/{id}: the host is revoked.
func (h *Handlers) APIDeleteHost(c echo.Context) error {
	if err := h.store.RevokeHost(c.Request().Context(), actor(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// DeleteHost handles POST /hosts/{id}/delete.
func (h *Handlers) DeleteHost(c echo.Context) error {
	ctx := c.Request().Context()
	host, err := h.store.GetHost(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	if err := h.store.RevokeHost(ctx, actor(c), host.ID); err != nil {
		return err
	}
	h.wakeups.wake(host.ID)
	return h.redirectWithFlash(c, "/sites/"+host.SiteID, fmt.Sprintf("Host %q removed; its agent's certificate is no longer accepted.", host.Name))
}

// APICancelJob answers POST /api/v1/jobs/{id}/cancel.
func (h *Handlers) APICancelJob(c echo.Context) error {
	if err := h.cancelJob(c); err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, JobAcceptedJSON{JobID: c.Param("id")})
}

// CancelJob handles POST /jobs/{id}/cancel.
func (h *Handlers) CancelJob(c echo.Context) error {
	if err := h.cancelJob(c); err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/jobs/"+c.Param("id"), "Cancellation requested.")
}

func (h *Handlers) cancelJob(c echo.Context) error {
	ctx := c.Request().Context()
	j, err := h.store.GetJob(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	// Operators run recovery, so they may stop it; the other jobs change
	// configuration (protection, hosts) and stay the Contributor's.
	if u := CurrentUser(c); u != nil && models.RoleRank(u.Role) < models.RoleRank(models.RoleContributor) && !models.OperatorMayCancel(j) {
		return &Problem{Status: http.StatusForbidden, Code: "forbidden",
			Message: "your role " + u.Role + " may cancel recovery jobs only; a " + j.Type + " job needs Contributor or above"}
	}
	if err := h.store.CancelJob(ctx, actor(c), c.Param("id")); err != nil {
		return err
	}
	tasks, err := h.store.JobTasks(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		h.wakeups.wake(t.HostID) // running tasks learn of it at the next poll or progress report
	}
	return nil
}
