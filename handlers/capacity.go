package handlers

import (
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// VMCapacityJSON is one VM in GET /api/v1/capacity.
type VMCapacityJSON struct {
	VMID                 string  `json:"vm_id"`
	VMName               string  `json:"vm_name"`
	HostID               string  `json:"host_id"`
	PolicyID             string  `json:"policy_id"`
	CopyFrequencySeconds int     `json:"copy_frequency_seconds"`
	Cycles               int     `json:"cycles"`      // delta cycles measured
	ChurnBytes           int64   `json:"churn_bytes"` // sent by them
	AverageMbps          float64 `json:"average_mbps"`
	NeededMbps           float64 `json:"needed_mbps"` // to keep the RPO (95th percentile of the cycles)
	LimitMbps            int     `json:"limit_mbps"`  // the policy's tightest limit; 0: none
	LimitWhen            string  `json:"limit_when,omitempty"`
	Measured             bool    `json:"measured"`
	Fits                 bool    `json:"fits"`
	Advice               string  `json:"advice"`
}

// HostCapacityJSON is one host in GET /api/v1/capacity.
type HostCapacityJSON struct {
	HostID     string  `json:"host_id"`
	HostName   string  `json:"host_name"`
	VMs        int     `json:"vms"`
	NeededMbps float64 `json:"needed_mbps"`
	LimitMbps  int     `json:"limit_mbps"`
	Fits       bool    `json:"fits"`
}

// CapacityJSON is the answer of GET /api/v1/capacity.
type CapacityJSON struct {
	Since time.Time          `json:"since"`
	VMs   []VMCapacityJSON   `json:"vms"`
	Hosts []HostCapacityJSON `json:"hosts"`
}

func capacityJSON(p *models.CapacityPlan) CapacityJSON {
	out := CapacityJSON{Since: p.Since, VMs: []VMCapacityJSON{}, Hosts: []HostCapacityJSON{}}
	for _, v := range p.VMs {
		out.VMs = append(out.VMs, VMCapacityJSON{VMID: v.VMID, VMName: v.VMName, HostID: v.HostID, PolicyID: v.PolicyID,
			CopyFrequencySeconds: v.CopyFrequencySeconds, Cycles: v.Cycles, ChurnBytes: v.ChurnBytes, AverageMbps: round1(v.AverageMbps),
			NeededMbps: round1(v.NeededMbps), LimitMbps: v.LimitMbps, LimitWhen: v.LimitWhen, Measured: v.Measured, Fits: v.Fits, Advice: v.Advice()})
	}
	for _, h := range p.Hosts {
		out.Hosts = append(out.Hosts, HostCapacityJSON{HostID: h.HostID, HostName: h.HostName, VMs: h.VMs, NeededMbps: round1(h.NeededMbps),
			LimitMbps: h.LimitMbps, Fits: h.Fits})
	}
	return out
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// APICapacity answers GET /api/v1/capacity.
func (h *Handlers) APICapacity(c echo.Context) error {
	if err := onlyQuery(c); err != nil {
		return err
	}
	p, err := h.store.Capacity(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, capacityJSON(p))
}

// CapacityPage shows GET /capacity.
func (h *Handlers) CapacityPage(c echo.Context) error {
	p, err := h.store.Capacity(c.Request().Context())
	if err != nil {
		return err
	}
	v := views.CapacityView{Since: views.FormatTime(&p.Since)}
	for _, c := range p.VMs {
		limit := "none"
		if c.LimitMbps > 0 {
			limit = fmt.Sprintf("%d Mbit/s (%s)", c.LimitMbps, c.LimitWhen)
		}
		v.VMs = append(v.VMs, views.CapacityRow{VMID: c.VMID, VM: c.VMName, Host: c.HostName, PolicyID: c.PolicyID, Policy: c.PolicyName,
			Cycles: c.Cycles, Churn: views.FormatBytes(c.ChurnBytes), Average: fmt.Sprintf("%.1f Mbit/s", c.AverageMbps),
			Needed: fmt.Sprintf("%.1f Mbit/s", c.NeededMbps), Limit: limit, Measured: c.Measured, Fits: c.Fits, Advice: c.Advice()})
		if c.Measured && !c.Fits {
			v.Short++
		}
	}
	for _, hc := range p.Hosts {
		limit := "none"
		if hc.LimitMbps > 0 {
			limit = fmt.Sprintf("%d Mbit/s", hc.LimitMbps)
		}
		v.Hosts = append(v.Hosts, views.HostCapacityRow{HostID: hc.HostID, Host: hc.HostName, VMs: hc.VMs,
			Needed: fmt.Sprintf("%.1f Mbit/s", hc.NeededMbps), Limit: limit, Fits: hc.Fits})
	}
	return render(c, http.StatusOK, views.CapacityPage(h.page(c, "Capacity planner", "capacity"), v))
}
