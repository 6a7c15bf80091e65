package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// optionLimit bounds the choices of a filter select; larger installations
// filter through the API.
const optionLimit = models.MaxPageSize

func hostRow(h models.Host) views.HostRow {
	r := views.HostRow{ID: h.ID, Name: h.Name, SiteID: h.SiteID, State: h.State, AgentVersion: h.AgentVersion, Driver: h.Driver, LastHeartbeat: views.FormatTime(h.LastHeartbeat)}
	if h.RebuiltAt != nil {
		// Known from replica storage only: say what it waits for.
		r.LastHeartbeat = "never: rebuilt from replica storage, awaits its agent's registration under this name"
	}
	return r
}

func vmRow(v models.VMSummary) views.VMRow {
	r := views.VMRow{
		ID: v.ID, Name: v.Name, HostID: v.HostID, HostName: v.HostName, PowerState: v.PowerState,
		ProtectionState: v.ProtectionState, Health: v.Health, DiskCount: len(v.Disks),
		LastRecoveryPoint: views.FormatTime(v.LastRecoveryPointAt), Missing: v.MissingSince != nil,
	}
	for _, d := range v.Disks {
		r.DiskBytes += d.SizeBytes
	}
	return r
}

// SitesPage shows GET /sites.
func (h *Handlers) SitesPage(c echo.Context) error {
	ctx := c.Request().Context()
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	sites, next, err := h.store.ListSites(ctx, page)
	if err != nil {
		return err
	}
	counts, err := h.store.SiteHostCounts(ctx)
	if err != nil {
		return err
	}
	rows := make([]views.SiteRow, 0, len(sites))
	for _, s := range sites {
		rows = append(rows, views.SiteRow{ID: s.ID, Name: s.Name, Description: s.Description, Connected: counts[s.ID].Connected, Disconnected: counts[s.ID].Disconnected})
	}
	return render(c, http.StatusOK, views.SitesPage(h.page(c, "Sites and hosts", "sites"), rows, nextHref(c, next)))
}

// NewSitePage shows GET /sites/new.
func (h *Handlers) NewSitePage(c echo.Context) error {
	return render(c, http.StatusOK, views.NewSitePage(h.page(c, "New site", "sites"), views.SiteForm{Errors: views.FormErrors{}}))
}

// CreateSite handles POST /sites.
func (h *Handlers) CreateSite(c echo.Context) error {
	site := models.Site{Name: c.FormValue("name"), Description: c.FormValue("description")}
	f := views.SiteForm{Name: site.Name, Description: site.Description, Errors: views.FormErrors{}}
	err := h.store.CreateSite(c.Request().Context(), actor(c), &site)
	if err == nil {
		return h.redirectWithFlash(c, "/sites/"+site.ID, fmt.Sprintf("Site %q created.", site.Name))
	}
	if err := formErrors(err, f.Errors); err != nil {
		return err
	}
	return render(c, http.StatusBadRequest, views.NewSitePage(h.page(c, "New site", "sites"), f))
}

// sitePage renders a site's page with status, its form and its hosts.
func (h *Handlers) sitePage(c echo.Context, status int, site *models.Site, f views.SiteForm, formError string) error {
	hosts, _, err := h.store.ListHosts(c.Request().Context(), models.HostFilter{SiteID: site.ID}, models.Page{Limit: models.MaxPageSize})
	if err != nil {
		return err
	}
	rows := make([]views.HostRow, 0, len(hosts))
	for _, host := range hosts {
		rows = append(rows, hostRow(host))
	}
	return render(c, status, views.SitePage(h.page(c, "Site "+site.Name, "sites"), f, rows, formError, loopbackWarning(h.vaultURL)))
}

// loopbackWarning warns when the vault's address in registration keys is
// a loopback one: only an agent on the vault's own machine reaches it.
func loopbackWarning(vaultURL string) string {
	u, err := url.Parse(vaultURL)
	if err != nil || u.Hostname() == "" {
		return ""
	}
	ip := net.ParseIP(u.Hostname())
	if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return ""
	}
	return fmt.Sprintf("Keys give agents the vault's address %s, which only an agent on this machine can reach. For hosts elsewhere, start the vault with --public-url https://NAME:PORT (an address they reach) and download the key again.", vaultURL)
}

// SitePage shows GET /sites/{id}.
func (h *Handlers) SitePage(c echo.Context) error {
	site, err := h.store.GetSite(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	f := views.SiteForm{ID: site.ID, Name: site.Name, Description: site.Description, Errors: views.FormErrors{}}
	return h.sitePage(c, http.StatusOK, site, f, "")
}

// UpdateSite handles POST /sites/{id}.
func (h *Handlers) UpdateSite(c echo.Context) error {
	ctx := c.Request().Context()
	site, err := h.store.GetSite(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	stored := *site
	site.Name, site.Description = c.FormValue("name"), c.FormValue("description")
	f := views.SiteForm{ID: site.ID, Name: site.Name, Description: site.Description, Errors: views.FormErrors{}}
	err = h.store.UpdateSite(ctx, actor(c), site)
	if err == nil {
		return h.redirectWithFlash(c, "/sites/"+site.ID, fmt.Sprintf("Site %q saved.", site.Name))
	}
	if err := formErrors(err, f.Errors); err != nil {
		return err
	}
	return h.sitePage(c, http.StatusBadRequest, &stored, f, "The site was not saved: correct the fields marked below.")
}

// DeleteSite handles POST /sites/{id}/delete. A site that still has hosts
// stays, and its page says why.
func (h *Handlers) DeleteSite(c echo.Context) error {
	ctx := c.Request().Context()
	site, err := h.store.GetSite(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	err = h.store.DeleteSite(ctx, actor(c), site.ID)
	var conflict *models.ConflictError
	if errors.As(err, &conflict) {
		f := views.SiteForm{ID: site.ID, Name: site.Name, Description: site.Description, Errors: views.FormErrors{}}
		return h.sitePage(c, http.StatusConflict, site, f, "The site was not deleted: "+conflict.Message+".")
	}
	if err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/sites", fmt.Sprintf("Site %q deleted.", site.Name))
}

// HostPage shows GET /hosts/{id}.
func (h *Handlers) HostPage(c echo.Context) error {
	ctx := c.Request().Context()
	host, err := h.store.GetHost(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	site, err := h.store.GetSite(ctx, host.SiteID)
	if err != nil {
		return err
	}
	vms, _, err := h.store.ListVMs(ctx, models.VMFilter{HostID: host.ID}, models.Page{Limit: models.MaxPageSize})
	if err != nil {
		return err
	}
	v := views.HostView{Host: hostRow(*host), SiteName: site.Name, ProtocolVersion: host.ProtocolVersion,
		CertNotAfter: views.FormatTime(host.CertNotAfter), Registered: views.FormatTime(&host.CreatedAt)}
	for _, vm := range vms {
		v.VMs = append(v.VMs, vmRow(vm))
	}
	return render(c, http.StatusOK, views.HostPage(h.page(c, "Host "+host.Name, "sites"), v))
}

// VMsPage shows GET /vms with its filters.
func (h *Handlers) VMsPage(c echo.Context) error {
	ctx := c.Request().Context()
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	f := views.VMFilterView{SiteID: c.QueryParam("site_id"), HostID: c.QueryParam("host_id"), Health: c.QueryParam("health")}
	if err := oneOf("health", f.Health, []string{models.HealthNormal, models.HealthWarning, models.HealthCritical, models.StateUnprotected}); err != nil {
		return err
	}
	vms, next, err := h.store.ListVMs(ctx, models.VMFilter{SiteID: f.SiteID, HostID: f.HostID, Health: f.Health}, page)
	if err != nil {
		return err
	}
	sites, _, err := h.store.ListSites(ctx, models.Page{Limit: optionLimit})
	if err != nil {
		return err
	}
	for _, s := range sites {
		f.Sites = append(f.Sites, views.Option{Value: s.ID, Label: s.Name})
	}
	hosts, _, err := h.store.ListHosts(ctx, models.HostFilter{SiteID: f.SiteID}, models.Page{Limit: optionLimit})
	if err != nil {
		return err
	}
	for _, host := range hosts {
		f.Hosts = append(f.Hosts, views.Option{Value: host.ID, Label: host.Name})
	}
	rows := make([]views.VMRow, 0, len(vms))
	for _, vm := range vms {
		rows = append(rows, vmRow(vm))
	}
	return render(c, http.StatusOK, views.VMsPage(h.page(c, "Virtual machines", "vms"), f, rows, nextHref(c, next)))
}

// VMPage shows GET /vms/{id}.
func (h *Handlers) VMPage(c echo.Context) error {
	ctx := c.Request().Context()
	vm, err := h.store.GetVM(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	site, err := h.store.GetSite(ctx, vm.SiteID)
	if err != nil {
		return err
	}
	v := views.VMView{VM: vmRow(*vm), ExternalID: vm.ExternalID, SiteID: site.ID, SiteName: site.Name,
		HealthReasons: vm.HealthReasons, RPO: "—", MissingSince: views.FormatTime(vm.MissingSince), Discovered: views.FormatTime(&vm.CreatedAt)}
	if vm.LastRecoveryPointAt != nil {
		v.RPO = views.FormatDuration(h.now().Sub(*vm.LastRecoveryPointAt))
	}
	for _, d := range vm.Disks {
		v.Disks = append(v.Disks, views.DiskRow{ID: d.ID, Path: d.Path, Size: d.SizeBytes, Format: d.Format})
	}
	if err := h.fillProtection(c, &v); err != nil {
		return err
	}
	if v.History, err = h.vmHistoryView(ctx, c, vm.ID); err != nil {
		return err
	}
	if err := h.fillRunningCopy(c, &v); err != nil {
		return err
	}
	if err := h.fillPlacement(c, &v, vm.Placement); err != nil {
		return err
	}
	return render(c, http.StatusOK, views.VMPage(h.page(c, "VM "+vm.Name, "vms"), v))
}

// protectionChoices lists the policies and targets to enable protection
// with.
func (h *Handlers) protectionChoices(c echo.Context, v *views.VMView) error {
	ctx := c.Request().Context()
	policies, _, err := h.store.ListPolicies(ctx, models.Page{Limit: optionLimit})
	if err != nil {
		return err
	}
	for _, pol := range policies {
		v.Policies = append(v.Policies, views.Option{Value: pol.ID, Label: pol.Name})
	}
	targets, _, err := h.store.ListTargets(ctx, models.Page{Limit: optionLimit})
	if err != nil {
		return err
	}
	for _, t := range targets {
		v.Targets = append(v.Targets, views.Option{Value: t.ID, Label: t.Name + " (" + t.Location() + ")"})
	}
	return nil
}

// fillProtection adds the VM's replication and points, or the choices to
// enable protection (also to enable it again after a failed Enable
// protection job).
func (h *Handlers) fillProtection(c echo.Context, v *views.VMView) error {
	ctx := c.Request().Context()
	p, err := h.store.GetProtection(ctx, v.VM.ID)
	if errors.Is(err, models.ErrNotFound) {
		if moved, err := h.store.ReplicatedFrom(ctx, v.VM.ID); err == nil {
			if vm, err := h.store.GetVM(ctx, moved.VMID); err == nil {
				v.FailedOverTo = &views.Option{Value: vm.ID, Label: vm.Name + " on host " + vm.HostName}
				return nil
			}
		}
		return h.protectionChoices(c, v)
	}
	if err != nil {
		return err
	}
	if stalled, err := h.store.EnableStalled(ctx, v.VM.ID); err != nil {
		return err
	} else if stalled {
		v.EnableRetry = &views.EnableRetryView{PolicyID: p.PolicyID, TargetID: p.TargetID}
		if err := h.protectionChoices(c, v); err != nil {
			return err
		}
	}
	v.BytesSent = p.BytesSent
	switch {
	case p.LastCycleSeconds > 0 && p.LastCycleBytes == 0:
		v.LastCycle = fmt.Sprintf("nothing changed, nothing sent (%.1f s)", p.LastCycleSeconds)
	case p.LastCycleSeconds > 0:
		v.LastCycle = fmt.Sprintf("%s in %.1f s (%s/s)", views.FormatBytes(p.LastCycleBytes), p.LastCycleSeconds,
			views.FormatBytes(int64(float64(p.LastCycleBytes)/p.LastCycleSeconds)))
	}
	if p.LastErrorCode != "" {
		v.LastError, v.NextRetry = p.LastErrorCode+": "+p.LastErrorMessage, views.FormatTime(p.NextRetryAt)
		if e, ok := agentproto.LookupError(p.LastErrorCode, "task"); ok {
			v.LastErrorAction = e.Action
		}
	}
	points, _, err := h.store.ListRecoveryPoints(ctx, v.VM.ID, models.Page{Limit: models.MaxPageSize})
	if err != nil {
		return err
	}
	for _, pt := range points {
		row := views.PointRow{ID: pt.ID, Time: views.FormatTime(&pt.Time), Consistency: pt.Consistency, Capture: pt.Capture, Note: pt.CaptureNote, Size: pt.SizeBytes}
		if pt.ReadStartedAt != nil {
			row.ReadStarted = views.FormatTime(pt.ReadStartedAt)
		}
		v.Points = append(v.Points, row)
	}
	if err := h.fillRecovery(c, v, p); err != nil {
		return err
	}
	return h.fillDiskReplication(c, v)
}

// fillRecovery adds the VM's drills and failover, and the hosts it can be
// recovered on.
func (h *Handlers) fillRecovery(c echo.Context, v *views.VMView, p *models.Protection) error {
	ctx := c.Request().Context()
	hosts, _, err := h.store.ListHosts(ctx, models.HostFilter{State: models.HostConnected}, models.Page{Limit: optionLimit})
	if err != nil {
		return err
	}
	names := map[string]string{}
	for _, host := range hosts {
		names[host.ID] = host.Name
		label := host.Name
		if host.ID == v.VM.HostID {
			label += " (the VM's own host)"
		}
		v.Recovery.Hosts = append(v.Recovery.Hosts, views.Option{Value: host.ID, Label: label})
	}
	hostName := func(id string) string {
		if n, ok := names[id]; ok {
			return n
		}
		if host, err := h.store.GetHost(ctx, id); err == nil {
			return host.Name + " (not connected)"
		}
		return id
	}
	r := &v.Recovery
	r.Recoverable = models.CanRecoverFrom(p.State)
	r.LastDrill, r.LastDrillNotes = views.FormatTime(p.LastDrillAt), p.LastDrillNotes
	if p.LastDrillAt == nil {
		r.LastDrill = ""
	}
	r.DrillOverdue = p.LastDrillAt != nil && h.now().Sub(*p.LastDrillAt) > models.DrillInterval
	if p.TestFailover {
		r.TestFailover = &views.TestFailoverView{VMName: models.TestFailoverVMName(v.VM.Name), Host: hostName(p.TestFailoverHostID),
			PointID: p.TestFailoverPointID, Started: views.FormatTime(p.TestFailoverAt)}
	}
	if p.FailoverHostID != "" {
		r.Failover = &views.FailoverView{Kind: p.FailoverKind, Host: hostName(p.FailoverHostID), VMName: v.VM.Name, PointID: p.FailoverPointID,
			At: views.FormatTime(p.FailedOverAt)}
		if p.CommittedAt != nil {
			r.Failover.Committed = views.FormatTime(p.CommittedAt)
		}
	}
	if p.HomeVMID != "" {
		if home, err := h.store.GetVM(ctx, p.HomeVMID); err == nil {
			r.Home, r.HomeHostID = home.Name+" on host "+home.HostName, home.HostID
		}
	}
	jobs, _, err := h.store.ListJobs(ctx, models.JobFilter{State: models.JobInProgress, TargetID: v.VM.ID}, models.Page{Limit: 20})
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if models.IsRecoveryJob(j.Type) {
			r.RunningJobID, r.RunningJob = j.ID, j.Type
			break
		}
	}
	return nil
}

// fillDiskReplication says, for each disk of a protected VM, whether it
// is replicated, and lists the disks it no longer has whose replicas
// earlier points still hold.
func (h *Handlers) fillDiskReplication(c echo.Context, v *views.VMView) error {
	replicas, err := h.store.ListReplicaDisks(c.Request().Context(), v.VM.ID)
	if err != nil {
		return err
	}
	byPath := map[string]models.ReplicaDisk{}
	for _, rd := range replicas {
		if rd.RemovedAt == nil {
			byPath[rd.SourcePath] = rd
		}
	}
	for i := range v.Disks {
		rd, ok := byPath[v.Disks[i].Path]
		switch {
		case !ok || rd.CopiedAt == nil:
			v.Disks[i].Replication = "new: the next cycle copies it"
		default:
			v.Disks[i].Replication = "replicated since " + views.FormatTime(rd.CopiedAt)
		}
	}
	for _, rd := range replicas {
		if rd.RemovedAt != nil {
			v.Disks = append(v.Disks, views.DiskRow{ID: rd.DiskID, Path: rd.SourcePath, Size: rd.SizeBytes, Removed: true,
				Replication: "removed from the VM " + views.FormatTime(rd.RemovedAt) + "; no longer replicated, earlier points hold it"})
		}
	}
	return nil
}

// jobSince maps the job list's time filter to a duration.
var jobSince = map[string]time.Duration{"1h": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour}

func jobRow(j models.Job) views.JobRow {
	r := views.JobRow{ID: j.ID, Type: j.Type, State: j.State, TargetKind: j.TargetKind, TargetID: j.TargetID, TargetName: j.TargetName,
		Started: views.FormatTime(j.StartedAt), Ended: views.FormatTime(j.EndedAt), Duration: "—"}
	if j.StartedAt != nil && j.EndedAt != nil {
		r.Duration = views.FormatDuration(j.EndedAt.Sub(*j.StartedAt))
	}
	// A job's progress is its steps' average: done steps count in full.
	if n := len(j.Steps); n > 0 {
		total := 0
		for _, s := range j.Steps {
			if s.State == models.JobSucceeded {
				total += 100
			} else {
				total += s.Progress
			}
		}
		r.Progress = total / n
	} else if j.State == models.JobSucceeded {
		r.Progress = 100
	}
	return r
}

// JobsPage shows GET /jobs, newest first, with its filters.
func (h *Handlers) JobsPage(c echo.Context) error {
	ctx := c.Request().Context()
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	f := views.JobFilterView{State: c.QueryParam("state"), Type: c.QueryParam("type"), Since: c.QueryParam("since")}
	if err := oneOf("state", f.State, models.JobStates); err != nil {
		return err
	}
	sinceKeys := make([]string, 0, len(views.SinceOptions))
	for _, o := range views.SinceOptions {
		sinceKeys = append(sinceKeys, o.Value)
	}
	if err := oneOf("since", f.Since, sinceKeys); err != nil {
		return err
	}
	if len(f.Type) > 60 || strings.ContainsAny(f.Type, "\x00\r\n") {
		return invalidQuery("type", "is not a job type")
	}
	filter := models.JobFilter{State: f.State, Type: f.Type}
	if d, ok := jobSince[f.Since]; ok {
		since := h.now().Add(-d)
		filter.Since = &since
	}
	jobs, next, err := h.store.ListJobs(ctx, filter, page)
	if err != nil {
		return err
	}
	if f.Types, err = h.store.JobTypes(ctx); err != nil {
		return err
	}
	rows := make([]views.JobRow, 0, len(jobs))
	for _, j := range jobs {
		rows = append(rows, jobRow(j))
	}
	return render(c, http.StatusOK, views.JobsPage(h.page(c, "Jobs", "jobs"), f, rows, nextHref(c, next)))
}

// JobPage shows GET /jobs/{id} with its steps.
func (h *Handlers) JobPage(c echo.Context) error {
	j, err := h.store.GetJob(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	v := views.JobView{Job: jobRow(*j), CreatedBy: j.CreatedBy, Created: views.FormatTime(&j.CreatedAt),
		ErrorCode: j.ErrorCode, ErrorMessage: j.ErrorMessage, ErrorAction: j.ErrorAction}
	for _, s := range j.Steps {
		v.Steps = append(v.Steps, views.StepRow{Name: s.Name, State: s.State, Message: s.Message, Progress: s.Progress,
			Started: views.FormatTime(s.StartedAt), Ended: views.FormatTime(s.EndedAt)})
	}
	v.Running = j.State == models.JobNotStarted || j.State == models.JobInProgress
	v.Restartable = models.Restartable(j)
	v.Waiting = j.State == models.JobWaitingForInput
	v.OperatorMayCancel = models.OperatorMayCancel(j)
	v.Notes = j.Notes
	tasks, err := h.store.JobTasks(c.Request().Context(), j.ID)
	if err != nil {
		return err
	}
	v.Copy = copyProgress(tasks)
	for _, t := range tasks {
		if t.Kind != agentproto.TaskCheckPrerequisites || t.Result == "" {
			continue
		}
		var r agentproto.PrerequisitesResult
		if json.Unmarshal([]byte(t.Result), &r) != nil {
			continue // shown as nothing rather than as a broken page
		}
		for _, ch := range r.Checks {
			v.Checks = append(v.Checks, views.CheckRow{Name: ch.Name, OK: ch.OK, Message: ch.Message})
		}
	}
	page := h.page(c, j.Type, "jobs")
	if v.Running {
		page.RefreshSeconds = 3
	}
	return render(c, http.StatusOK, views.JobPage(page, v))
}
