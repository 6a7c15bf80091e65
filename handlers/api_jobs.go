package handlers

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// JobJSON is a job in the API: one operation made of steps.
type JobJSON struct {
	ID        string         `json:"id"`
	Type      string         `json:"type"`
	State     string         `json:"state"`
	Target    *JobTargetJSON `json:"target"`
	CreatedBy string         `json:"created_by"`
	StartedAt *time.Time     `json:"started_at"`
	EndedAt   *time.Time     `json:"ended_at"`
	Steps     []JobStepJSON  `json:"steps"`
	Error     *JobErrorJSON  `json:"error"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// JobTargetJSON is what a job acts on.
type JobTargetJSON struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Name string `json:"name"`
}

// JobStepJSON is one step of a job; progress is a percentage.
type JobStepJSON struct {
	Name      string     `json:"name"`
	State     string     `json:"state"`
	Progress  int        `json:"progress"`
	Message   string     `json:"message"`
	StartedAt *time.Time `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
}

// JobErrorJSON says why a job failed and what to do about it.
type JobErrorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Action  string `json:"action"`
}

func jobJSON(j models.Job) JobJSON {
	out := JobJSON{ID: j.ID, Type: j.Type, State: j.State, CreatedBy: j.CreatedBy, StartedAt: j.StartedAt, EndedAt: j.EndedAt,
		Steps: make([]JobStepJSON, 0, len(j.Steps)), CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt}
	if j.TargetKind != "" || j.TargetID != "" {
		out.Target = &JobTargetJSON{Kind: j.TargetKind, ID: j.TargetID, Name: j.TargetName}
	}
	for _, s := range j.Steps {
		out.Steps = append(out.Steps, JobStepJSON{Name: s.Name, State: s.State, Progress: s.Progress, Message: s.Message,
			StartedAt: s.StartedAt, EndedAt: s.EndedAt})
	}
	if j.ErrorCode != "" || j.ErrorMessage != "" {
		out.Error = &JobErrorJSON{Code: j.ErrorCode, Message: j.ErrorMessage, Action: j.ErrorAction}
	}
	return out
}

// timeQuery reads an optional RFC 3339 query parameter.
func timeQuery(c echo.Context, name string) (*time.Time, error) {
	raw := c.QueryParam(name)
	if raw == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, raw)
	if err != nil {
		return nil, invalidQuery(name, "must be a time in RFC 3339 form, such as 2026-03-09T10:00:00Z")
	}
	return &t, nil
}

// APIListJobs answers GET /api/v1/jobs?state=&type=&since=&until=, newest
// first; since and until bound the creation time (since inclusive).
func (h *Handlers) APIListJobs(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	f := models.JobFilter{State: c.QueryParam("state"), Type: c.QueryParam("type")}
	if err := oneOf("state", f.State, models.JobStates); err != nil {
		return err
	}
	if f.Since, err = timeQuery(c, "since"); err != nil {
		return err
	}
	if f.Until, err = timeQuery(c, "until"); err != nil {
		return err
	}
	items, next, err := h.store.ListJobs(c.Request().Context(), f, page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, jobJSON))
}

// APIGetJob answers GET /api/v1/jobs/{id}.
func (h *Handlers) APIGetJob(c echo.Context) error {
	j, err := h.store.GetJob(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, jobJSON(*j))
}
