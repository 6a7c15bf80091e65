package handlers

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/metrics"
	"github.com/lifeboat-dr/lifeboat/models"
)

// AgentCA is what the agent endpoint needs of the vault's certificate
// authority: sign a host's certificate request, and show the CA.
type AgentCA interface {
	SignHost(csrPEM []byte, hostID string) (certPEM []byte, cert *models.HostCertificate, err error)
	CACertPEM() []byte
}

// AgentSettings tune the agent protocol. Tests shorten them.
type AgentSettings struct {
	Heartbeat time.Duration // how often agents send a heartbeat
	PollWait  time.Duration // longest a poll is held when there is no work
	Progress  time.Duration // how often running tasks report
	Lease     time.Duration // a task's lease; progress reports extend it
}

// DefaultAgentSettings are the production intervals.
var DefaultAgentSettings = AgentSettings{Heartbeat: 15 * time.Second, PollWait: 25 * time.Second, Progress: 3 * time.Second, Lease: 60 * time.Second}

const hostKey = "lifeboat.host"

func (h *Handlers) intervals() agentproto.Intervals {
	return agentproto.Intervals{
		HeartbeatSeconds: int(h.agent.Heartbeat.Seconds()), PollWaitSeconds: int(h.agent.PollWait.Seconds()),
		ProgressSeconds: max(1, int(h.agent.Progress.Seconds())),
	}
}

// IsAgent reports whether a request is for the agent endpoint.
func IsAgent(c echo.Context) bool { return strings.HasPrefix(c.Request().URL.Path, "/agent/") }

func agentError(status int, code, message string) *Problem {
	return &Problem{Status: status, Code: code, Message: message}
}

// AgentHost identifies the calling host by its client certificate, which
// the TLS layer has already verified against the vault CA. An unknown,
// replaced or revoked certificate gets 401.
func (h *Handlers) AgentHost(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		state := c.Request().TLS
		if state == nil || len(state.VerifiedChains) == 0 || len(state.PeerCertificates) == 0 {
			return agentError(http.StatusUnauthorized, agentproto.CodeUnauthenticated, "this endpoint needs the host's client certificate; register the agent first")
		}
		host, err := h.store.HostByCertificate(c.Request().Context(), certSerial(state.PeerCertificates[0]))
		if errors.Is(err, models.ErrNotFound) {
			return agentError(http.StatusUnauthorized, agentproto.CodeUnauthenticated, "this host's certificate is not accepted: the host was removed from the vault, or the certificate was replaced; register the agent again")
		}
		if err != nil {
			return err
		}
		c.Set(hostKey, host)
		return next(c)
	}
}

func certSerial(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

func currentHost(c echo.Context) *models.Host {
	host, _ := c.Get(hostKey).(*models.Host)
	return host
}

// checkProtocol refuses an agent whose protocol the vault does not speak.
func checkProtocol(info agentproto.AgentInfo) error {
	v := info.ProtocolVersion
	if v < agentproto.MinProtocolVersion || v > agentproto.ProtocolVersion {
		return agentError(http.StatusBadRequest, agentproto.CodeIncompatibleProtocol, fmt.Sprintf(
			"the agent (version %q) speaks protocol %d; this vault (version %s) accepts protocols %d to %d; install an agent of the vault's version",
			info.Version, v, Version, agentproto.MinProtocolVersion, agentproto.ProtocolVersion))
	}
	return nil
}

// AgentRegister handles POST /agent/v1/register: a registration key secret
// and a certificate request buy a host identity.
func (h *Handlers) AgentRegister(c echo.Context) error {
	var in agentproto.RegisterRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if err := checkProtocol(in.Agent); err != nil {
		return err
	}
	if in.Secret == "" || in.CSR == "" {
		return agentError(http.StatusBadRequest, "invalid_request", "secret and csr are required")
	}
	var certPEM []byte
	host, err := h.store.RegisterHost(c.Request().Context(), models.Registration{
		Secret: in.Secret, Name: in.Name, AgentVersion: in.Agent.Version, ProtocolVersion: in.Agent.ProtocolVersion, Driver: in.Agent.Driver,
	}, func(hostID string) (*models.HostCertificate, error) {
		pemBytes, cert, err := h.ca.SignHost([]byte(in.CSR), hostID)
		if err != nil {
			return nil, agentError(http.StatusBadRequest, "invalid_csr", err.Error())
		}
		certPEM = pemBytes
		return cert, nil
	})
	var reg *models.RegistrationError
	if errors.As(err, &reg) {
		h.log.WarnContext(c.Request().Context(), "registration refused", "reason", reg.Reason, "name", in.Name, "remote_addr", c.RealIP())
		return agentError(http.StatusForbidden, agentproto.CodeRegistrationKey, reg.Detail)
	}
	if err != nil {
		return err
	}
	h.log.InfoContext(c.Request().Context(), "host registered", "host_id", host.ID, "name", host.Name, "site_id", host.SiteID)
	return c.JSON(http.StatusCreated, agentproto.RegisterResponse{HostID: host.ID, SiteID: host.SiteID, Certificate: string(certPEM),
		CA: string(h.ca.CACertPEM()), Intervals: h.intervals()})
}

// AgentRenew handles POST /agent/v1/renew: a new certificate for a new key.
func (h *Handlers) AgentRenew(c echo.Context) error {
	host := currentHost(c)
	var in agentproto.RenewRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	certPEM, cert, err := h.ca.SignHost([]byte(in.CSR), host.ID)
	if err != nil {
		return agentError(http.StatusBadRequest, "invalid_csr", err.Error())
	}
	if err := h.store.RenewHostCertificate(c.Request().Context(), host.ID, cert); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, agentproto.RenewResponse{Certificate: string(certPEM)})
}

// AgentHeartbeat handles POST /agent/v1/heartbeat.
func (h *Handlers) AgentHeartbeat(c echo.Context) error {
	host := currentHost(c)
	var in agentproto.HeartbeatRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if err := checkProtocol(in.Agent); err != nil {
		return err
	}
	if err := h.store.HostHeartbeat(c.Request().Context(), host, in.Agent.Version, in.Agent.ProtocolVersion, in.Agent.Driver, in.Agent.Features); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, agentproto.HeartbeatResponse{ServerTime: h.now().UTC(), Intervals: h.intervals()})
}

// AgentPoll handles POST /agent/v1/poll: it answers at once with work or
// cancellations, else holds the request until work appears or the wait
// (with jitter, so agents do not march in step) runs out.
func (h *Handlers) AgentPoll(c echo.Context) error {
	host := currentHost(c)
	var in agentproto.PollRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if err := checkProtocol(in.Agent); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := h.store.HostHeartbeat(ctx, host, in.Agent.Version, in.Agent.ProtocolVersion, in.Agent.Driver, in.Agent.Features); err != nil {
		return err
	}
	wait := h.agent.PollWait - time.Duration(rand.Int64N(int64(h.agent.PollWait)/5+1))
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		woken := h.wakeups.wait(host.ID)
		var tasks []models.Task
		if waiting, err := h.store.HasQueuedTasks(ctx, host.ID); err != nil {
			return err
		} else if waiting {
			if tasks, err = h.store.LeaseTasks(ctx, host.ID, in.Free, h.agent.Lease); err != nil {
				return err
			}
		}
		cancels, err := h.store.CancelRequests(ctx, host.ID)
		if err != nil {
			return err
		}
		if len(tasks) > 0 || len(cancels) > 0 {
			return c.JSON(http.StatusOK, h.pollResponse(tasks, cancels))
		}
		waited := time.Now()
		select {
		case <-woken:
			metrics.Held(c, time.Since(waited))
		case <-deadline.C:
			metrics.Held(c, time.Since(waited))
			return c.JSON(http.StatusOK, h.pollResponse(nil, nil))
		case <-ctx.Done():
			// The agent gave up the poll (a slot freed and it asks again
			// with it): nothing to answer and nothing went wrong.
			metrics.Held(c, time.Since(waited))
			return nil
		}
	}
}

func (h *Handlers) pollResponse(tasks []models.Task, cancels []string) agentproto.PollResponse {
	out := agentproto.PollResponse{Tasks: []agentproto.Task{}, Cancel: cancels, Intervals: h.intervals()}
	if out.Cancel == nil {
		out.Cancel = []string{}
	}
	for _, t := range tasks {
		at := agentproto.Task{ID: t.ID, Kind: t.Kind, Attempt: t.Attempts}
		if t.Payload != "" {
			at.Payload = json.RawMessage(t.Payload)
		}
		if t.LeaseExpiresAt != nil {
			at.LeaseExpiresAt = *t.LeaseExpiresAt
		}
		out.Tasks = append(out.Tasks, at)
	}
	return out
}

// AgentInventory handles POST /agent/v1/inventory: the host's complete VM list.
func (h *Handlers) AgentInventory(c echo.Context) error {
	host := currentHost(c)
	var in agentproto.Inventory
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	reports := make([]models.VMReport, 0, len(in.VMs))
	seen := map[string]bool{}
	for i, vm := range in.VMs {
		if vm.ID == "" || len(vm.ID) > 200 || seen[vm.ID] {
			return agentError(http.StatusBadRequest, "invalid_inventory", fmt.Sprintf("vms[%d]: the id is empty, too long or repeated", i))
		}
		seen[vm.ID] = true
		r := models.VMReport{ExternalID: vm.ID, Name: vm.Name, PowerState: vm.PowerState}
		switch r.PowerState {
		case models.PowerRunning, models.PowerOff:
		default:
			r.PowerState = models.PowerUnknown
		}
		for _, d := range vm.Disks {
			if d.Path == "" || d.SizeBytes < 0 {
				return agentError(http.StatusBadRequest, "invalid_inventory", fmt.Sprintf("vms[%d]: a disk has no path or a negative size", i))
			}
			r.Disks = append(r.Disks, models.DiskReport{Path: d.Path, SizeBytes: d.SizeBytes, Format: d.Format})
		}
		reports = append(reports, r)
	}
	if err := h.store.ReportInventory(c.Request().Context(), host.ID, reports); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]int{"vms": len(reports)})
}

// AgentTaskProgress handles POST /agent/v1/tasks/{id}/progress.
func (h *Handlers) AgentTaskProgress(c echo.Context) error {
	host := currentHost(c)
	var in agentproto.Progress
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	cancel, until, err := h.store.ReportProgress(c.Request().Context(), host.ID, c.Param("id"), models.TaskProgress{
		Step: in.Step, Percent: in.Percent, BytesDone: in.BytesDone, BytesTotal: in.BytesTotal, Message: in.Message, Attempt: in.Attempt,
	}, h.agent.Lease)
	if err != nil {
		return taskProblem(err)
	}
	return c.JSON(http.StatusOK, agentproto.ProgressResponse{Cancel: cancel, LeaseExpiresAt: until})
}

// AgentTaskResult handles POST /agent/v1/tasks/{id}/result. Delivering the
// same result twice is harmless.
func (h *Handlers) AgentTaskResult(c echo.Context) error {
	host := currentHost(c)
	var in agentproto.Result
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	o := models.TaskOutcome{Result: string(in.Result), Attempt: in.Attempt}
	if in.Error != nil {
		if in.Error.Code == "" {
			return agentError(http.StatusBadRequest, "invalid_result", "an error needs a code")
		}
		o.ErrorCode, o.Message, o.Recoverable = in.Error.Code, in.Error.Message, in.Error.Recoverable
	}
	if len(in.Result) > 0 && !json.Valid(in.Result) {
		return agentError(http.StatusBadRequest, "invalid_result", "result must be JSON")
	}
	if err := h.store.CompleteTask(c.Request().Context(), host.ID, c.Param("id"), o); err != nil {
		return taskProblem(err)
	}
	// The end of a step may have queued the next one for this host: let its
	// waiting poll take it now rather than at the end of its wait.
	h.wakeups.wake(host.ID)
	h.wakeNextSteps(c, c.Param("id"))
	return c.JSON(http.StatusOK, map[string]string{"status": "recorded"})
}

// AgentStorageCredentials handles POST /agent/v1/tasks/{id}/storage-credentials:
// a short-lived SAS for the VM container of a task on an Azure Blob target,
// or for one snapshot in it.
func (h *Handlers) AgentStorageCredentials(c echo.Context) error {
	host := currentHost(c)
	var in agentproto.StorageCredentialsRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	out, err := h.store.StorageCredentials(c.Request().Context(), host.ID, c.Param("id"), in)
	var se *models.StorageError
	if errors.As(err, &se) {
		// Recoverable: 502, which agents retry; refused credentials: 409,
		// which fails the task with the code.
		status := http.StatusConflict
		if se.Recoverable {
			status = http.StatusBadGateway
		}
		return agentError(status, se.Code, se.Message)
	}
	if err != nil {
		return taskProblem(err)
	}
	h.log.DebugContext(c.Request().Context(), "storage SAS issued", "host", host.ID, "task", c.Param("id"),
		"container", out.ContainerURL, "snapshot", in.Snapshot, "expires", out.ExpiresAt)
	return c.JSON(http.StatusOK, out)
}

func taskProblem(err error) error {
	switch {
	case errors.Is(err, models.ErrNotFound):
		return agentError(http.StatusNotFound, "task_not_found", "this host has no such task")
	case errors.Is(err, models.ErrLeaseLost):
		return agentError(http.StatusConflict, agentproto.CodeLeaseLost, "the task is no longer leased to this host (cancelled, finished or expired); drop it")
	}
	return err
}

// wakeNextSteps wakes the hosts whose tasks the end of a task queued: a
// job's next step, or a recovery plan's next group, often runs on another
// host (the final cycle on the source, then the VM made on the recovery
// host), which would otherwise wait out its long poll.
func (h *Handlers) wakeNextSteps(c echo.Context, taskID string) {
	ctx := c.Request().Context()
	t, err := h.store.GetTask(ctx, taskID)
	if err != nil || t.JobID == "" {
		return
	}
	h.wakeJobHosts(c, &models.Job{ID: t.JobID})
}
