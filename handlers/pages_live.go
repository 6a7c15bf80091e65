package handlers

import (
	"errors"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// copyProgress says how the copy among a job's tasks goes, once its speed
// is known ("" before: an estimate from one report would be a guess).
func copyProgress(tasks []models.Task) string {
	for _, t := range tasks {
		if t.State != models.TaskLeased {
			continue
		}
		if speed, left, ok := t.Estimate(); ok {
			return views.FormatCopy(t.BytesDone, t.BytesTotal, speed, left)
		}
	}
	return ""
}

// fillRunningCopy adds the VM's running replication or resync: how far
// it is, and how fast and how long still once two reports have come.
func (h *Handlers) fillRunningCopy(c echo.Context, v *views.VMView) error {
	t, err := h.store.RunningCopy(c.Request().Context(), v.VM.ID)
	if errors.Is(err, models.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	switch speed, left, ok := t.Estimate(); {
	case ok:
		v.Copy = views.FormatCopy(t.BytesDone, t.BytesTotal, speed, left)
	case t.BytesTotal > 0:
		v.Copy = views.FormatBytes(t.BytesDone) + " of " + views.FormatBytes(t.BytesTotal)
	default:
		v.Copy = "started, no progress reported yet"
	}
	return nil
}
