package models

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"
)

// The capacity planner: from each VM's observed churn (the bytes its
// delta cycles sent, over the time they covered), the bandwidth it needs
// to keep its policy's RPO, against the policy's bandwidth limit. The
// reference ships this as a separate profiling tool run before
// protecting; ours measures the VMs as they replicate.
const (
	// CapacityWindow is how far back the planner looks: the raw history.
	CapacityWindow = RawHistoryKept
	// CapacityMinCycles is how many delta cycles make a measure.
	CapacityMinCycles = 3
)

// VMCapacity is one VM's figures.
type VMCapacity struct {
	VMID, VMName, HostID, HostName, PolicyID, PolicyName string
	CopyFrequencySeconds                                 int
	// Cycles is how many delta cycles were measured (initial copies and
	// resyncs are not churn).
	Cycles     int
	ChurnBytes int64 // sent by those cycles
	// AverageMbps is the churn averaged over the time the cycles covered;
	// NeededMbps the rate the busiest cycles (the 95th percentile) needed
	// to send their churn within one copy interval, which keeps the RPO
	// within twice the copy frequency.
	AverageMbps, NeededMbps float64
	// LimitMbps is the policy's tightest bandwidth limit (work or off
	// hours; 0: none), LimitWhen which.
	LimitMbps int
	LimitWhen string
	Measured  bool // at least CapacityMinCycles delta cycles
	Fits      bool // measured, and the need is within the limit
}

// HostCapacity sums a host's VMs: their cycles share the host's throttle.
type HostCapacity struct {
	HostID, HostName string
	VMs              int
	NeededMbps       float64
	LimitMbps        int // the tightest limit of its VMs' policies
	Fits             bool
}

// CapacityPlan is the planner's answer.
type CapacityPlan struct {
	Since time.Time
	VMs   []VMCapacity // the ones that do not fit first
	Hosts []HostCapacity
}

// Capacity measures every replicating VM. Two queries, whatever the
// number of VMs.
func (s *Store) Capacity(ctx context.Context) (*CapacityPlan, error) {
	now := s.Now()
	since := now.Add(-CapacityWindow)
	db := s.db.WithContext(ctx)
	var vms []struct {
		VMID, VMName, HostID, HostName, PolicyID, PolicyName string
		CopyFrequencySeconds, WorkHoursMbps, OffHoursMbps    int
	}
	err := db.Table("protections AS p").
		Select("p.vm_id, vms.name AS vm_name, hosts.id AS host_id, hosts.name AS host_name, policies.id AS policy_id, policies.name AS policy_name, "+
			"policies.copy_frequency_seconds, policies.work_hours_mbps, policies.off_hours_mbps").
		Joins("JOIN vms ON vms.id = p.vm_id").Joins("JOIN hosts ON hosts.id = vms.host_id").Joins("JOIN policies ON policies.id = p.policy_id").
		Where("p.state IN ?", []string{StateProtected, StateResyncRequired, StateResynchronizing}).Order("vms.name").Scan(&vms).Error
	if err != nil {
		return nil, translateError(err)
	}
	var rows []RPOHistory
	if err := db.Where("hourly = ? AND cycles > 0 AND time >= ?", false, since).Order("vm_id, time").Find(&rows).Error; err != nil {
		return nil, translateError(err)
	}
	byVM := map[string][]RPOHistory{}
	for _, r := range rows {
		byVM[r.VMID] = append(byVM[r.VMID], r)
	}
	plan := &CapacityPlan{Since: since}
	hosts := map[string]*HostCapacity{}
	for _, v := range vms {
		c := VMCapacity{VMID: v.VMID, VMName: v.VMName, HostID: v.HostID, HostName: v.HostName, PolicyID: v.PolicyID, PolicyName: v.PolicyName,
			CopyFrequencySeconds: v.CopyFrequencySeconds}
		c.LimitMbps, c.LimitWhen = tightestLimit(v.WorkHoursMbps, v.OffHoursMbps)
		measure(&c, byVM[v.VMID])
		plan.VMs = append(plan.VMs, c)
		h := hosts[v.HostID]
		if h == nil {
			h = &HostCapacity{HostID: v.HostID, HostName: v.HostName}
			hosts[v.HostID] = h
		}
		h.VMs++
		h.NeededMbps += c.NeededMbps
		if c.LimitMbps > 0 && (h.LimitMbps == 0 || c.LimitMbps < h.LimitMbps) {
			h.LimitMbps = c.LimitMbps
		}
	}
	for _, h := range hosts {
		h.Fits = h.LimitMbps == 0 || h.NeededMbps <= float64(h.LimitMbps)
		plan.Hosts = append(plan.Hosts, *h)
	}
	sort.Slice(plan.Hosts, func(i, j int) bool { return plan.Hosts[i].HostName < plan.Hosts[j].HostName })
	sort.SliceStable(plan.VMs, func(i, j int) bool {
		a, b := plan.VMs[i], plan.VMs[j]
		if a.Measured && b.Measured && a.Fits != b.Fits {
			return !a.Fits
		}
		return false
	})
	return plan, nil
}

// tightestLimit is the smaller of a policy's limits that are set.
func tightestLimit(work, off int) (int, string) {
	switch {
	case work > 0 && (off == 0 || work <= off):
		return work, "work hours"
	case off > 0:
		return off, "off hours"
	}
	return 0, ""
}

// measure fills a VM's figures from its history rows (in time order). A
// delta cycle's churn accrued since the cycle before it ended.
func measure(c *VMCapacity, rows []RPOHistory) {
	var rates []float64 // bytes per second of each delta cycle
	var span float64
	for i := 1; i < len(rows); i++ {
		r := rows[i]
		if r.Baseline {
			continue
		}
		dt := r.Time.Sub(rows[i-1].Time).Seconds()
		if dt <= 0 {
			continue
		}
		c.Cycles++
		c.ChurnBytes += r.BytesSent
		span += dt
		// Sent within one copy interval, however long the cycles were apart.
		interval := float64(max(c.CopyFrequencySeconds, 1))
		rates = append(rates, float64(r.BytesSent)/min(dt, interval))
	}
	if span > 0 {
		c.AverageMbps = mbps(float64(c.ChurnBytes) / span)
	}
	if len(rates) > 0 {
		sort.Float64s(rates)
		c.NeededMbps = mbps(rates[int(math.Ceil(0.95*float64(len(rates))))-1])
	}
	c.Measured = c.Cycles >= CapacityMinCycles
	c.Fits = c.Measured && (c.LimitMbps == 0 || c.NeededMbps <= float64(c.LimitMbps))
}

func mbps(bytesPerSecond float64) float64 { return bytesPerSecond * 8 / 1e6 }

// Advice says what a VM's figures mean.
func (c VMCapacity) Advice() string {
	switch {
	case !c.Measured:
		return fmt.Sprintf("measuring: %d of %d delta cycles so far", c.Cycles, CapacityMinCycles)
	case c.LimitMbps == 0:
		return "no bandwidth limit: the need is what the network must carry"
	case c.Fits:
		return fmt.Sprintf("fits the %s limit of %d Mbit/s", c.LimitWhen, c.LimitMbps)
	}
	return fmt.Sprintf("cannot keep its RPO: it needs %.1f Mbit/s, the policy's %s limit is %d Mbit/s; raise the limit, or lengthen the copy frequency",
		c.NeededMbps, c.LimitWhen, c.LimitMbps)
}
