package handlers

import (
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// ProtectionInputJSON is the body of POST /api/v1/vms/{id}/protection.
type ProtectionInputJSON struct {
	PolicyID string `json:"policy_id"`
	TargetID string `json:"target_id"`
}

// RecoveryPointJSON is a recovery point in the API.
type RecoveryPointJSON struct {
	ID string `json:"id"`
	// Time is the capture instant; for an inconsistent point, when the
	// read ended (ReadStartedAt is when it began).
	Time          time.Time  `json:"time"`
	ReadStartedAt *time.Time `json:"read_started_at"`
	Consistency   string     `json:"consistency"`
	// Capture is how the disks were captured: freeze, reflink,
	// powered_off, unchanged or live; CaptureNote why the point is less
	// consistent than its policy asked.
	Capture     string `json:"capture"`
	CaptureNote string `json:"capture_note"`
	SizeBytes   int64  `json:"size_bytes"`
}

func recoveryPointJSON(p models.RecoveryPoint) RecoveryPointJSON {
	return RecoveryPointJSON{ID: p.ID, Time: p.Time, ReadStartedAt: p.ReadStartedAt, Consistency: p.Consistency,
		Capture: p.Capture, CaptureNote: p.CaptureNote, SizeBytes: p.SizeBytes}
}

func (h *Handlers) enableProtection(c echo.Context, policyID, targetID string) (*models.Job, error) {
	v := &models.ValidationError{}
	if policyID == "" {
		v.Add("policy_id", "is required: choose a replication policy")
	}
	if targetID == "" {
		v.Add("target_id", "is required: choose a storage target")
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	job, err := h.store.EnableProtection(c.Request().Context(), actor(c), c.Param("id"), policyID, targetID)
	if err != nil {
		return nil, err
	}
	h.wakeVMHost(c)
	return job, nil
}

// APIEnableProtection answers POST /api/v1/vms/{id}/protection.
func (h *Handlers) APIEnableProtection(c echo.Context) error {
	var in ProtectionInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	job, err := h.enableProtection(c, in.PolicyID, in.TargetID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, JobAcceptedJSON{JobID: job.ID})
}

// replicaDataChoice reads ?replica_data= (or the form field): "keep" (the
// default) or "delete".
func replicaDataChoice(c echo.Context) (bool, error) {
	switch v := c.FormValue("replica_data"); v {
	case "", "keep":
		return false, nil
	case "delete":
		return true, nil
	default:
		return false, &models.ValidationError{Fields: []models.FieldError{{Field: "replica_data", Reason: fmt.Sprintf("must be keep or delete, not %q", v)}}}
	}
}

// APIDisableProtection answers DELETE /api/v1/vms/{id}/protection. With
// replica_data=keep (the default) the replicas stay on the target: 204.
// With replica_data=delete a job deletes them: 202 with the job.
func (h *Handlers) APIDisableProtection(c echo.Context) error {
	deleteData, err := replicaDataChoice(c)
	if err != nil {
		return err
	}
	job, err := h.store.DisableProtection(c.Request().Context(), actor(c), c.Param("id"), deleteData)
	if err != nil {
		return err
	}
	if job == nil {
		return c.NoContent(http.StatusNoContent)
	}
	h.wakeVMHost(c)
	return c.JSON(http.StatusAccepted, JobAcceptedJSON{JobID: job.ID})
}

// APIListRecoveryPoints answers GET /api/v1/vms/{id}/recovery-points.
func (h *Handlers) APIListRecoveryPoints(c echo.Context) error {
	ctx := c.Request().Context()
	if _, err := h.store.GetVM(ctx, c.Param("id")); err != nil {
		return err
	}
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	points, next, err := h.store.ListRecoveryPoints(ctx, c.Param("id"), page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(points, next, recoveryPointJSON))
}

// EnableProtection handles POST /vms/{id}/protection from the VM page.
func (h *Handlers) EnableProtection(c echo.Context) error {
	job, err := h.enableProtection(c, c.FormValue("policy_id"), c.FormValue("target_id"))
	if err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/jobs/"+job.ID, "Enabling protection: the host's agent checks the VM, creates its replicas and copies it.")
}

// DisableProtection handles POST /vms/{id}/protection/delete.
func (h *Handlers) DisableProtection(c echo.Context) error {
	deleteData, err := replicaDataChoice(c)
	if err != nil {
		return err
	}
	job, err := h.store.DisableProtection(c.Request().Context(), actor(c), c.Param("id"), deleteData)
	if err != nil {
		return err
	}
	if job == nil {
		return h.redirectWithFlash(c, "/vms/"+c.Param("id"), "Protection disabled. The replicas stay on the target.")
	}
	h.wakeVMHost(c)
	return h.redirectWithFlash(c, "/jobs/"+job.ID, "Disabling protection: the host's agent deletes the replicas and their recovery points.")
}

func (h *Handlers) startVerify(c echo.Context) (*models.Job, error) {
	job, err := h.store.StartVerify(c.Request().Context(), actor(c), c.Param("id"), c.Param("point"))
	if err != nil {
		return nil, err
	}
	h.wakeVMHost(c)
	return job, nil
}

// APIVerifyRecoveryPoint answers POST /api/v1/vms/{id}/recovery-points/{point}/verify.
func (h *Handlers) APIVerifyRecoveryPoint(c echo.Context) error {
	job, err := h.startVerify(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, JobAcceptedJSON{JobID: job.ID})
}

// VerifyRecoveryPoint handles POST /vms/{id}/recovery-points/{point}/verify.
func (h *Handlers) VerifyRecoveryPoint(c echo.Context) error {
	job, err := h.startVerify(c)
	if err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/jobs/"+job.ID, "Verifying the recovery point: the host's agent reads it back and checks every block.")
}

func (h *Handlers) startResync(c echo.Context) (*models.Job, error) {
	job, err := h.store.StartResync(c.Request().Context(), actor(c), c.Param("id"))
	if err != nil {
		return nil, err
	}
	h.wakeVMHost(c)
	return job, nil
}

// APIResync answers POST /api/v1/vms/{id}/resync.
func (h *Handlers) APIResync(c echo.Context) error {
	job, err := h.startResync(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, JobAcceptedJSON{JobID: job.ID})
}

// Resync handles the VM page's Resynchronize button.
func (h *Handlers) Resync(c echo.Context) error {
	job, err := h.startResync(c)
	if err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/jobs/"+job.ID, "Resynchronizing: the agent checks the replica and sends only the blocks that differ.")
}

// wakeVMHost lets the VM's host pick up the task just queued for it at once.
func (h *Handlers) wakeVMHost(c echo.Context) {
	if vm, err := h.store.GetVM(c.Request().Context(), c.Param("id")); err == nil {
		h.wakeups.wake(vm.HostID)
	}
}
