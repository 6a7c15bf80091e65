package handlers

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// HostJSON is a hypervisor host in the API.
type HostJSON struct {
	ID              string     `json:"id"`
	Name            string     `json:"name"`
	SiteID          string     `json:"site_id"`
	State           string     `json:"state"`
	AgentVersion    string     `json:"agent_version"`
	ProtocolVersion int        `json:"protocol_version"`
	Driver          string     `json:"driver"`
	LastHeartbeat   *time.Time `json:"last_heartbeat"`
	// RebuiltAt: the host is known only from replica storage (the vault
	// was rebuilt from it); no agent registered as it. Its VMs move to the
	// host that registers under its name and reports them. Null otherwise.
	RebuiltAt *time.Time `json:"rebuilt_at"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

func hostJSON(h models.Host) HostJSON {
	return HostJSON{ID: h.ID, Name: h.Name, SiteID: h.SiteID, State: h.State, AgentVersion: h.AgentVersion,
		ProtocolVersion: h.ProtocolVersion, Driver: h.Driver, LastHeartbeat: h.LastHeartbeat, RebuiltAt: h.RebuiltAt,
		CreatedAt: h.CreatedAt, UpdatedAt: h.UpdatedAt}
}

// VMJSON is a virtual machine in the API with its protection. Health is null
// for an unprotected VM; rpo_seconds is null until there is a recovery point.
type VMJSON struct {
	ID                string     `json:"id"`
	Name              string     `json:"name"`
	HostID            string     `json:"host_id"`
	HostName          string     `json:"host_name"`
	SiteID            string     `json:"site_id"`
	PowerState        string     `json:"power_state"`
	Disks             []DiskJSON `json:"disks"`
	ProtectionState   string     `json:"protection_state"`
	Health            *string    `json:"health"`
	HealthReasons     []string   `json:"health_reasons"`
	RPOSeconds        *int64     `json:"rpo_seconds"`
	LastRecoveryPoint *time.Time `json:"last_recovery_point"`
	MissingSince      *time.Time `json:"missing_since"`
	BytesSent         *int64     `json:"bytes_sent"` // replicated so far; null when unprotected
	LastCycle         *CycleJSON `json:"last_cycle"` // null before the first cycle
	// Recovery is the VM's test failover, last drill and failover; only
	// GET /vms/{id} fills it in (null in lists and when unprotected).
	Recovery *RecoveryJSON `json:"recovery"`
	// The protection's policy and target, and the real place of its
	// replicas (a directory, or the VM's Azure container URL); null when
	// unprotected. PausedAt and PausedBy: replication is paused; null when
	// it is not.
	PolicyID        *string    `json:"policy_id"`
	TargetID        *string    `json:"target_id"`
	ReplicaLocation *string    `json:"replica_location"`
	PausedAt        *time.Time `json:"paused_at"`
	PausedBy        *string    `json:"paused_by"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
}

// CycleJSON is what the last successful replication cycle sent, and how fast.
type CycleJSON struct {
	BytesSent             int64   `json:"bytes_sent"`
	Seconds               float64 `json:"seconds"`
	ThroughputBytesPerSec float64 `json:"throughput_bytes_per_second"`
}

// lastCycle is the last cycle of a VM, or nil before the first.
func lastCycle(v models.VMSummary) *CycleJSON {
	if v.LastCycleSeconds == nil || *v.LastCycleSeconds <= 0 || v.LastCycleBytes == nil {
		return nil
	}
	return &CycleJSON{BytesSent: *v.LastCycleBytes, Seconds: *v.LastCycleSeconds, ThroughputBytesPerSec: float64(*v.LastCycleBytes) / *v.LastCycleSeconds}
}

// DiskJSON is one virtual disk of a VM.
type DiskJSON struct {
	ID        string `json:"id"`
	Path      string `json:"path"`
	SizeBytes int64  `json:"size_bytes"`
}

// vmJSON converts a VM; now is the handler's clock, for the RPO.
func vmJSON(now time.Time) func(models.VMSummary) VMJSON {
	return func(v models.VMSummary) VMJSON {
		out := VMJSON{ID: v.ID, Name: v.Name, HostID: v.HostID, HostName: v.HostName, SiteID: v.SiteID,
			PowerState: v.PowerState, Disks: make([]DiskJSON, 0, len(v.Disks)), ProtectionState: v.ProtectionState,
			HealthReasons: make([]string, 0, len(v.HealthReasons)), LastRecoveryPoint: v.LastRecoveryPointAt,
			MissingSince: v.MissingSince, BytesSent: v.BytesSent, LastCycle: lastCycle(v), CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt}
		for _, d := range v.Disks {
			out.Disks = append(out.Disks, DiskJSON{ID: d.ID, Path: d.Path, SizeBytes: d.SizeBytes})
		}
		if v.Health != "" {
			health := v.Health
			out.Health = &health
			out.HealthReasons = append(out.HealthReasons, v.HealthReasons...)
		}
		if v.LastRecoveryPointAt != nil {
			rpo := max(int64(now.Sub(*v.LastRecoveryPointAt)/time.Second), 0)
			out.RPOSeconds = &rpo
		}
		out.addPlacement(v.Placement)
		return out
	}
}

// HostStates are the values of ?state= on /hosts.
var HostStates = []string{models.HostConnected, models.HostDisconnected}

// VMHealthFilters are the values of ?health= on /vms.
var VMHealthFilters = []string{models.HealthNormal, models.HealthWarning, models.HealthCritical, models.StateUnprotected}

// APIListHosts answers GET /api/v1/hosts?site_id=&state=.
func (h *Handlers) APIListHosts(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	f := models.HostFilter{SiteID: c.QueryParam("site_id"), State: c.QueryParam("state")}
	if err := oneOf("state", f.State, HostStates); err != nil {
		return err
	}
	items, next, err := h.store.ListHosts(c.Request().Context(), f, page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, hostJSON))
}

// APIGetHost answers GET /api/v1/hosts/{id}.
func (h *Handlers) APIGetHost(c echo.Context) error {
	host, err := h.store.GetHost(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, hostJSON(*host))
}

// APIListVMs answers GET /api/v1/vms?site_id=&host_id=&health=.
func (h *Handlers) APIListVMs(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	if err := onlyQuery(c, "site_id", "host_id", "health", "cursor", "limit"); err != nil {
		return err
	}
	f := models.VMFilter{SiteID: c.QueryParam("site_id"), HostID: c.QueryParam("host_id"), Health: c.QueryParam("health")}
	if err := oneOf("health", f.Health, VMHealthFilters); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if f.SiteID != "" {
		if _, err := h.store.GetSite(ctx, f.SiteID); errors.Is(err, models.ErrNotFound) {
			return invalidQuery("site_id", fmt.Sprintf("no site %q: take the id from GET /api/v1/sites", f.SiteID))
		} else if err != nil {
			return err
		}
	}
	if f.HostID != "" {
		if _, err := h.store.GetHost(ctx, f.HostID); errors.Is(err, models.ErrNotFound) {
			return invalidQuery("host_id", fmt.Sprintf("no host %q: take the id from GET /api/v1/hosts", f.HostID))
		} else if err != nil {
			return err
		}
	}
	items, next, err := h.store.ListVMs(c.Request().Context(), f, page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, vmJSON(h.now())))
}

// APIGetVM answers GET /api/v1/vms/{id}.
func (h *Handlers) APIGetVM(c echo.Context) error {
	vm, err := h.store.GetVM(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	out := vmJSON(h.now())(*vm)
	p, err := h.store.GetProtection(c.Request().Context(), vm.ID)
	if err != nil && !errors.Is(err, models.ErrNotFound) {
		return err
	}
	out.Recovery = recoveryJSON(p)
	return c.JSON(http.StatusOK, out)
}
