package handlers

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// Recovery from the API and the VM page: test failover and its cleanup,
// planned and unplanned failover, change of point, commit, and restart of
// a failed recovery job. Each starts a job (202 with its id, or a redirect
// to its page).

// TestFailoverInputJSON is the body of POST /api/v1/vms/{id}/test-failover.
type TestFailoverInputJSON struct {
	// RecoveryPoint is latest_processed (the default), latest_app_consistent
	// or a point's id.
	RecoveryPoint string `json:"recovery_point"`
	// RecoveryHostID is the host that runs the test VM; the VM's own host
	// when empty.
	RecoveryHostID string `json:"recovery_host_id"`
	// Instant starts the test VM at once on the point's disks, served by
	// the recovery host's agent, while they are copied to it (a qemu
	// recovery host only).
	Instant bool `json:"instant"`
}

// FailoverInputJSON is the body of POST /api/v1/vms/{id}/failover.
type FailoverInputJSON struct {
	// Type is planned (shut the source down, final cycle, no data lost) or
	// unplanned (recover from what the replica has).
	Type string `json:"type"`
	// RecoveryPoint, for an unplanned failover: latest (process what the
	// source has first, if its host answers), latest_processed (the
	// default), latest_app_consistent or a point's id. A planned failover
	// always recovers from its final cycle's point.
	RecoveryPoint  string `json:"recovery_point"`
	RecoveryHostID string `json:"recovery_host_id"`
	// ShutDownSource, for an unplanned failover: shut the source VM down
	// first if its host answers.
	ShutDownSource bool `json:"shut_down_source"`
	// Instant starts the recovered VM at once on the point's disks while
	// they are copied to the recovery host (a qemu recovery host only;
	// not a failback into the original VM).
	Instant bool `json:"instant"`
}

// CleanupInputJSON is the body of POST /api/v1/vms/{id}/test-failover/cleanup.
type CleanupInputJSON struct {
	// Notes record what the drill showed; they stay on the VM's page.
	Notes string `json:"notes"`
}

// ChangePointInputJSON is the body of POST /api/v1/vms/{id}/failover/change-point.
type ChangePointInputJSON struct {
	RecoveryPoint string `json:"recovery_point"`
}

// RecoveryJSON is what the vault knows of a VM's recovery, in GET
// /api/v1/vms/{id}.
type RecoveryJSON struct {
	TestFailover *TestFailoverJSON `json:"test_failover"` // null when there is none to clean up
	LastDrill    *DrillJSON        `json:"last_drill"`    // null before the first
	Failover     *FailoverJSON     `json:"failover"`      // null unless failing or failed over
}

// TestFailoverJSON is a test failover not cleaned up yet.
type TestFailoverJSON struct {
	HostID    string     `json:"host_id"`
	VMID      string     `json:"vm_id"` // the test VM's id on that host
	PointID   string     `json:"point_id"`
	StartedAt *time.Time `json:"started_at"`
}

// DrillJSON is the last test failover that succeeded and was cleaned up.
type DrillJSON struct {
	At      *time.Time `json:"at"`
	PointID string     `json:"point_id"`
	Notes   string     `json:"notes"`
}

// FailoverJSON is a VM's failover.
type FailoverJSON struct {
	Kind         string     `json:"kind"` // planned or unplanned
	HostID       string     `json:"host_id"`
	VMID         string     `json:"vm_id"`    // the recovered VM's id on that host
	PointID      string     `json:"point_id"` // the point it runs from ("" while failing over)
	FailedOverAt *time.Time `json:"failed_over_at"`
	CommittedAt  *time.Time `json:"committed_at"`
}

func recoveryJSON(p *models.Protection) *RecoveryJSON {
	if p == nil {
		return nil
	}
	out := &RecoveryJSON{}
	if p.TestFailover {
		out.TestFailover = &TestFailoverJSON{HostID: p.TestFailoverHostID, VMID: p.TestFailoverVMID, PointID: p.TestFailoverPointID, StartedAt: p.TestFailoverAt}
	}
	if p.LastDrillAt != nil {
		out.LastDrill = &DrillJSON{At: p.LastDrillAt, PointID: p.LastDrillPointID, Notes: p.LastDrillNotes}
	}
	if p.FailoverHostID != "" {
		out.Failover = &FailoverJSON{Kind: p.FailoverKind, HostID: p.FailoverHostID, VMID: p.FailoverVMID, PointID: p.FailoverPointID,
			FailedOverAt: p.FailedOverAt, CommittedAt: p.CommittedAt}
	}
	return out
}

// decodeOptionalJSON reads a JSON body when there is one.
func decodeOptionalJSON(c echo.Context, dst any) error {
	if c.Request().ContentLength == 0 {
		return nil
	}
	return decodeJSON(c, dst)
}

// wakeJobHosts lets every host with a queued task of the job pick it up at once.
// A recovery plan's job: the hosts of its VM jobs' tasks too.
func (h *Handlers) wakeJobHosts(c echo.Context, job *models.Job) {
	for _, id := range h.store.QueuedTaskHosts(c.Request().Context(), job.ID) {
		h.wakeups.wake(id)
	}
}

func (h *Handlers) accepted(c echo.Context, job *models.Job, err error) error {
	if err != nil {
		return err
	}
	h.wakeJobHosts(c, job)
	return c.JSON(http.StatusAccepted, JobAcceptedJSON{JobID: job.ID})
}

func (h *Handlers) redirectToJob(c echo.Context, job *models.Job, err error, flash string) error {
	if err != nil {
		return err
	}
	h.wakeJobHosts(c, job)
	return h.redirectWithFlash(c, "/jobs/"+job.ID, flash)
}

// failoverType reads planned or unplanned.
func failoverType(v string) (bool, error) {
	switch v {
	case "planned":
		return true, nil
	case "unplanned":
		return false, nil
	}
	return false, &models.ValidationError{Fields: []models.FieldError{{Field: "type", Reason: fmt.Sprintf("must be planned or unplanned, not %q", v)}}}
}

// APITestFailover answers POST /api/v1/vms/{id}/test-failover.
func (h *Handlers) APITestFailover(c echo.Context) error {
	var in TestFailoverInputJSON
	if err := decodeOptionalJSON(c, &in); err != nil {
		return err
	}
	job, err := h.store.StartTestFailover(c.Request().Context(), actor(c), c.Param("id"),
		models.RecoveryRequest{RecoveryPoint: in.RecoveryPoint, RecoveryHostID: in.RecoveryHostID, Instant: in.Instant})
	return h.accepted(c, job, err)
}

// APICleanupTestFailover answers POST /api/v1/vms/{id}/test-failover/cleanup.
func (h *Handlers) APICleanupTestFailover(c echo.Context) error {
	var in CleanupInputJSON
	if err := decodeOptionalJSON(c, &in); err != nil {
		return err
	}
	job, err := h.store.CleanupTestFailover(c.Request().Context(), actor(c), c.Param("id"), strings.TrimSpace(in.Notes))
	return h.accepted(c, job, err)
}

// APIFailover answers POST /api/v1/vms/{id}/failover.
func (h *Handlers) APIFailover(c echo.Context) error {
	var in FailoverInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	planned, err := failoverType(in.Type)
	if err != nil {
		return err
	}
	job, err := h.store.StartFailover(c.Request().Context(), actor(c), c.Param("id"), planned,
		models.RecoveryRequest{RecoveryPoint: in.RecoveryPoint, RecoveryHostID: in.RecoveryHostID, ShutDownSource: in.ShutDownSource, Instant: in.Instant})
	return h.accepted(c, job, err)
}

// APIChangeRecoveryPoint answers POST /api/v1/vms/{id}/failover/change-point.
func (h *Handlers) APIChangeRecoveryPoint(c echo.Context) error {
	var in ChangePointInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	job, err := h.store.ChangeRecoveryPoint(c.Request().Context(), actor(c), c.Param("id"), in.RecoveryPoint)
	return h.accepted(c, job, err)
}

// APICommitFailover answers POST /api/v1/vms/{id}/failover/commit.
func (h *Handlers) APICommitFailover(c echo.Context) error {
	job, err := h.store.CommitFailover(c.Request().Context(), actor(c), c.Param("id"))
	return h.accepted(c, job, err)
}

// APIReprotect answers POST /api/v1/vms/{id}/reprotect.
func (h *Handlers) APIReprotect(c echo.Context) error {
	job, err := h.store.StartReprotect(c.Request().Context(), actor(c), c.Param("id"))
	return h.accepted(c, job, err)
}

// APIRestartJob answers POST /api/v1/jobs/{id}/restart.
func (h *Handlers) APIRestartJob(c echo.Context) error {
	job, err := h.store.RestartJob(c.Request().Context(), actor(c), c.Param("id"))
	return h.accepted(c, job, err)
}

// TestFailover handles the VM page's Test failover form.
func (h *Handlers) TestFailover(c echo.Context) error {
	job, err := h.store.StartTestFailover(c.Request().Context(), actor(c), c.Param("id"),
		models.RecoveryRequest{RecoveryPoint: c.FormValue("recovery_point"), RecoveryHostID: c.FormValue("recovery_host_id"), Instant: formBool(c, "instant")})
	return h.redirectToJob(c, job, err, "Test failover: the recovery host's agent makes the test VM from the recovery point and starts it isolated. Replication goes on.")
}

// CleanupTestFailover handles the VM page's Cleanup test failover form.
func (h *Handlers) CleanupTestFailover(c echo.Context) error {
	job, err := h.store.CleanupTestFailover(c.Request().Context(), actor(c), c.Param("id"), strings.TrimSpace(c.FormValue("notes")))
	return h.redirectToJob(c, job, err, "Cleaning up the test failover: the test VM is stopped and deleted.")
}

// Failover handles the VM page's Failover form.
func (h *Handlers) Failover(c echo.Context) error {
	planned, err := failoverType(c.FormValue("type"))
	if err != nil {
		return err
	}
	job, err := h.store.StartFailover(c.Request().Context(), actor(c), c.Param("id"), planned,
		models.RecoveryRequest{RecoveryPoint: c.FormValue("recovery_point"), RecoveryHostID: c.FormValue("recovery_host_id"),
			ShutDownSource: formBool(c, "shut_down_source"), Instant: formBool(c, "instant")})
	return h.redirectToJob(c, job, err, "Failing over: follow the steps below.")
}

// ChangeRecoveryPoint handles the VM page's Change recovery point form.
func (h *Handlers) ChangeRecoveryPoint(c echo.Context) error {
	job, err := h.store.ChangeRecoveryPoint(c.Request().Context(), actor(c), c.Param("id"), c.FormValue("recovery_point"))
	return h.redirectToJob(c, job, err, "Changing the recovery point: the recovered VM is stopped and made again from the chosen point.")
}

// CommitFailover handles the VM page's Commit button.
func (h *Handlers) CommitFailover(c echo.Context) error {
	job, err := h.store.CommitFailover(c.Request().Context(), actor(c), c.Param("id"))
	return h.redirectToJob(c, job, err, "Committing the failover: the recovery points older than the one the VM runs from are deleted.")
}

// Reprotect handles the VM page's Re-protect button.
func (h *Handlers) Reprotect(c echo.Context) error {
	job, err := h.store.StartReprotect(c.Request().Context(), actor(c), c.Param("id"))
	return h.redirectToJob(c, job, err, "Re-protecting: the recovered VM is replicated into the same replicas; only the blocks that differ travel.")
}

// RestartJob handles the job page's Restart button.
func (h *Handlers) RestartJob(c echo.Context) error {
	job, err := h.store.RestartJob(c.Request().Context(), actor(c), c.Param("id"))
	return h.redirectToJob(c, job, err, "Restarted from the failed step.")
}

// PlanRunInputJSON is the body of POST /api/v1/recovery-plans/{id}/run.
type PlanRunInputJSON struct {
	// Operation is test_failover, cleanup_test_failover, planned_failover,
	// unplanned_failover or commit.
	Operation      string `json:"operation"`
	RecoveryPoint  string `json:"recovery_point"`
	RecoveryHostID string `json:"recovery_host_id"`
	ShutDownSource bool   `json:"shut_down_source"`
	Notes          string `json:"notes"`
	// SkipIneligible runs the plan without the VMs that cannot take part,
	// saying which and why; without it such a plan is refused (409
	// plan_vms_not_ready, naming them).
	SkipIneligible bool `json:"skip_ineligible"`
}

// ResumeInputJSON is the body of POST /api/v1/jobs/{id}/resume.
type ResumeInputJSON struct {
	// Notes say what was done for the manual action.
	Notes string `json:"notes"`
}

func planRunRequest(in PlanRunInputJSON) models.PlanRunRequest {
	return models.PlanRunRequest{Operation: in.Operation, RecoveryPoint: in.RecoveryPoint, RecoveryHostID: in.RecoveryHostID,
		ShutDownSource: in.ShutDownSource, Notes: strings.TrimSpace(in.Notes), SkipIneligible: in.SkipIneligible}
}

// APIRunPlan answers POST /api/v1/recovery-plans/{id}/run.
func (h *Handlers) APIRunPlan(c echo.Context) error {
	var in PlanRunInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	job, err := h.store.RunPlan(c.Request().Context(), actor(c), c.Param("id"), planRunRequest(in))
	if err != nil {
		return err
	}
	h.wakeJobHosts(c, job)
	return c.JSON(http.StatusAccepted, JobAcceptedJSON{JobID: job.ID})
}

// APIResumeJob answers POST /api/v1/jobs/{id}/resume.
func (h *Handlers) APIResumeJob(c echo.Context) error {
	var in ResumeInputJSON
	if err := decodeOptionalJSON(c, &in); err != nil {
		return err
	}
	job, err := h.store.ResumeJob(c.Request().Context(), actor(c), c.Param("id"), strings.TrimSpace(in.Notes))
	if err != nil {
		return err
	}
	h.wakeJobHosts(c, job)
	return c.JSON(http.StatusAccepted, JobAcceptedJSON{JobID: job.ID})
}

// RunPlan handles the plan page's Run form.
func (h *Handlers) RunPlan(c echo.Context) error {
	in := PlanRunInputJSON{Operation: c.FormValue("operation"), RecoveryPoint: c.FormValue("recovery_point"), RecoveryHostID: c.FormValue("recovery_host_id"),
		ShutDownSource: formBool(c, "shut_down_source"), Notes: c.FormValue("notes"), SkipIneligible: formBool(c, "skip_ineligible")}
	job, err := h.store.RunPlan(c.Request().Context(), actor(c), c.Param("id"), planRunRequest(in))
	if err != nil {
		return err
	}
	h.wakeJobHosts(c, job)
	return h.redirectWithFlash(c, "/jobs/"+job.ID, "Running the recovery plan: its groups run in order, the VMs of a group together.")
}

// ResumeJob handles the job page's Resume form (a manual action done).
func (h *Handlers) ResumeJob(c echo.Context) error {
	job, err := h.store.ResumeJob(c.Request().Context(), actor(c), c.Param("id"), strings.TrimSpace(c.FormValue("notes")))
	if err != nil {
		return err
	}
	h.wakeJobHosts(c, job)
	return h.redirectWithFlash(c, "/jobs/"+job.ID, "Resumed: the plan goes on.")
}
