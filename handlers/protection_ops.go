package handlers

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// Changing a protection without starting over (issue 12): pause and
// resume, Replicate now, another policy, and a move to another target.

// ProtectionUpdateJSON is the body of PUT /api/v1/vms/{id}/protection, the
// shape of the POST that enabled it: the policy to protect the VM under
// from its next cycle. target_id may be left out; given, it must be the
// VM's target (moving replicas to another target is not built).
type ProtectionUpdateJSON struct {
	PolicyID string `json:"policy_id"`
	TargetID string `json:"target_id"`
}

// MoveInputJSON is the body of POST /api/v1/vms/{id}/protection/move.
type MoveInputJSON struct {
	TargetID string `json:"target_id"`
	// OldReplica is what becomes of the replicas and points on the old
	// target once the new one is seeded: "delete" or "keep" (they stay
	// there, no longer listed by the vault).
	OldReplica string `json:"old_replica"`
}

// ReplicateNowJSON answers POST /api/v1/vms/{id}/replicate-now.
type ReplicateNowJSON struct {
	// PointID is the recovery point the cycle makes: it is listed under
	// /vms/{id}/recovery-points once the cycle succeeds.
	PointID string `json:"point_id"`
	// AlreadyQueued: a cycle (or resync) was queued before this call and
	// had not started; it is the one returned, and its point is captured
	// after the call all the same.
	AlreadyQueued bool `json:"already_queued"`
}

// placementJSON adds a protected VM's policy, target, replica location and
// pause to its API object.
func (out *VMJSON) addPlacement(pl *models.Placement) {
	if pl == nil {
		return
	}
	out.PolicyID, out.TargetID, out.ReplicaLocation = &pl.PolicyID, &pl.TargetID, &pl.ReplicaLocation
	if pl.PausedAt != nil {
		out.PausedAt, out.PausedBy = pl.PausedAt, &pl.PausedBy
	}
}

// answerVM answers with the VM as GET /vms/{id} does.
func (h *Handlers) answerVM(c echo.Context, status int) error {
	vm, err := h.store.GetVM(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(status, vmJSON(h.now())(*vm))
}

// APIPauseReplication answers POST /api/v1/vms/{id}/pause with the VM.
func (h *Handlers) APIPauseReplication(c echo.Context) error {
	if err := h.store.PauseReplication(c.Request().Context(), actor(c), c.Param("id")); err != nil {
		return err
	}
	return h.answerVM(c, http.StatusOK)
}

func (h *Handlers) resumeReplication(c echo.Context) (bool, error) {
	t, err := h.store.ResumeReplication(c.Request().Context(), actor(c), c.Param("id"))
	if err != nil {
		return false, err
	}
	if t != nil {
		h.wakeups.wake(t.HostID)
	}
	return t != nil, nil
}

// APIResumeReplication answers POST /api/v1/vms/{id}/resume with the VM; a
// cycle that came due while it was paused is queued at once.
func (h *Handlers) APIResumeReplication(c echo.Context) error {
	if _, err := h.resumeReplication(c); err != nil {
		return err
	}
	return h.answerVM(c, http.StatusOK)
}

func (h *Handlers) replicateNow(c echo.Context) (*models.CycleRequest, error) {
	r, err := h.store.ReplicateNow(c.Request().Context(), actor(c), c.Param("id"))
	if err != nil {
		return nil, err
	}
	h.wakeups.wake(r.Task.HostID)
	return r, nil
}

// APIReplicateNow answers POST /api/v1/vms/{id}/replicate-now: 202 with the
// point the cycle makes.
func (h *Handlers) APIReplicateNow(c echo.Context) error {
	r, err := h.replicateNow(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, ReplicateNowJSON{PointID: r.PointID, AlreadyQueued: r.Queued})
}

func (h *Handlers) changePolicy(c echo.Context, policyID, targetID string) (bool, error) {
	if policyID == "" {
		return false, &models.ValidationError{Fields: []models.FieldError{{Field: "policy_id", Reason: "is required: choose a replication policy"}}}
	}
	return h.store.ChangePolicy(c.Request().Context(), actor(c), c.Param("id"), policyID, targetID)
}

// APIUpdateProtection answers PUT /api/v1/vms/{id}/protection: the VM is
// protected under another policy from its next cycle, with nothing copied
// again; the answer is the VM.
func (h *Handlers) APIUpdateProtection(c echo.Context) error {
	var in ProtectionUpdateJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if _, err := h.changePolicy(c, in.PolicyID, in.TargetID); err != nil {
		return err
	}
	return h.answerVM(c, http.StatusOK)
}

// PauseReplication handles the VM page's Pause replication button.
func (h *Handlers) PauseReplication(c echo.Context) error {
	if err := h.store.PauseReplication(c.Request().Context(), actor(c), c.Param("id")); err != nil {
		return h.refusedOnVMPage(c, "Replication was not paused", err)
	}
	return h.redirectWithFlash(c, "/vms/"+c.Param("id"), "Replication paused: no cycle starts until you resume it. A cycle already running finishes.")
}

// ResumeReplication handles the VM page's Resume replication button.
func (h *Handlers) ResumeReplication(c echo.Context) error {
	queued, err := h.resumeReplication(c)
	if err != nil {
		return h.refusedOnVMPage(c, "Replication was not resumed", err)
	}
	msg := "Replication resumed: the next cycle runs at the policy's copy frequency."
	if queued {
		msg = "Replication resumed: a cycle was due and is queued now."
	}
	return h.redirectWithFlash(c, "/vms/"+c.Param("id"), msg)
}

// ReplicateNow handles the VM page's Replicate now button.
func (h *Handlers) ReplicateNow(c echo.Context) error {
	r, err := h.replicateNow(c)
	if err != nil {
		return h.refusedOnVMPage(c, "No cycle was queued", err)
	}
	msg := "A replication cycle is queued; its recovery point " + r.PointID + " appears below when it ends."
	if r.Queued {
		msg = "A replication cycle was already queued and not started; its recovery point " + r.PointID + " appears below when it ends."
	}
	return h.redirectWithFlash(c, "/vms/"+c.Param("id"), msg)
}

// ChangeVMPolicy handles the VM page's Change policy form.
func (h *Handlers) ChangeVMPolicy(c echo.Context) error {
	changed, err := h.changePolicy(c, c.FormValue("policy_id"), "")
	if err != nil {
		return h.refusedOnVMPage(c, "The policy was not changed", err)
	}
	msg := "The VM already uses that policy; nothing changed."
	if changed {
		msg = "Policy changed: it applies from the next cycle; the replicas and recovery points stay, nothing is copied again."
	}
	return h.redirectWithFlash(c, "/vms/"+c.Param("id"), msg)
}

// fillPlacement adds a protected VM's policy, target, replica location and
// pause to its page, and the policies it may change to.
func (h *Handlers) fillPlacement(c echo.Context, v *views.VMView, pl *models.Placement) error {
	if pl == nil {
		return nil
	}
	v.Protection = views.VMProtectionView{PolicyID: pl.PolicyID, PolicyName: pl.PolicyName, TargetID: pl.TargetID, TargetName: pl.TargetName,
		ReplicaLocation: pl.ReplicaLocation, Paused: pl.PausedAt != nil, PausedBy: pl.PausedBy, PausedAt: views.FormatTime(pl.PausedAt)}
	policies, _, err := h.store.ListPolicies(c.Request().Context(), models.Page{Limit: optionLimit})
	if err != nil {
		return err
	}
	for _, pol := range policies {
		v.Protection.Policies = append(v.Protection.Policies, views.Option{Value: pol.ID, Label: pol.Name})
	}
	if pl.TargetKind != models.TargetDirectory {
		return nil // only directory targets move (models.StartMove)
	}
	targets, _, err := h.store.ListTargets(c.Request().Context(), models.Page{Limit: optionLimit})
	if err != nil {
		return err
	}
	for _, t := range targets {
		if t.ID != pl.TargetID && t.Kind == models.TargetDirectory {
			v.Protection.MoveTargets = append(v.Protection.MoveTargets, views.Option{Value: t.ID, Label: t.Name + " (" + t.Path + ")"})
		}
	}
	return nil
}

// usedBy lists the VMs of a policy or a target for its page.
func usedBy(refs []models.ProtectedVMRef, total int64) *views.UsedBy {
	u := &views.UsedBy{Total: total}
	for _, r := range refs {
		u.VMs = append(u.VMs, views.UsedByVM{ID: r.ID, Name: r.Name, HostName: r.HostName, State: r.ProtectionState})
	}
	return u
}

func (h *Handlers) policyUsedBy(c echo.Context, policyID string) (*views.UsedBy, error) {
	refs, total, err := h.store.VMsOfPolicy(c.Request().Context(), policyID)
	if err != nil {
		return nil, err
	}
	return usedBy(refs, total), nil
}

func (h *Handlers) targetUsedBy(c echo.Context, targetID string) (*views.UsedBy, error) {
	refs, total, err := h.store.VMsOfTarget(c.Request().Context(), targetID)
	if err != nil {
		return nil, err
	}
	return usedBy(refs, total), nil
}

// refusedOnVMPage shows a refusal the user can act on (a conflict with the
// VM's state, an invalid field) on the VM's page rather than an error page;
// other errors go to the error handler.
func (h *Handlers) refusedOnVMPage(c echo.Context, what string, err error) error {
	var conflict *models.ConflictError
	var invalid *models.ValidationError
	switch {
	case errors.As(err, &conflict):
		return h.redirectWithFlash(c, "/vms/"+c.Param("id"), what+": "+conflict.Message+".")
	case errors.As(err, &invalid):
		return h.redirectWithFlash(c, "/vms/"+c.Param("id"), what+": "+invalid.Error()+".")
	}
	return err
}

func (h *Handlers) startMove(c echo.Context, in MoveInputJSON) (*models.Job, error) {
	job, err := h.store.StartMove(c.Request().Context(), actor(c), c.Param("id"), in.TargetID, in.OldReplica)
	if err != nil {
		return nil, err
	}
	h.wakeVMHost(c)
	return job, nil
}

// APIMoveProtection answers POST /api/v1/vms/{id}/protection/move: 202 with
// the Move replica job.
func (h *Handlers) APIMoveProtection(c echo.Context) error {
	var in MoveInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	job, err := h.startMove(c, in)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, JobAcceptedJSON{JobID: job.ID})
}

// MoveProtection handles the VM page's Move to another target form.
func (h *Handlers) MoveProtection(c echo.Context) error {
	job, err := h.startMove(c, MoveInputJSON{TargetID: c.FormValue("target_id"), OldReplica: c.FormValue("old_replica")})
	if err != nil {
		return h.refusedOnVMPage(c, "The VM was not moved", err)
	}
	return h.redirectWithFlash(c, "/jobs/"+job.ID, "Moving the replicas: the new target is seeded while the VM keeps its old target and points.")
}
