package models

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// Dashboard holds the counts on the portal's first page.
type Dashboard struct {
	VMsTotal          int64
	VMsUnprotected    int64
	VMsByHealth       map[string]int64 // Normal, Warning, Critical
	JobsInProgress    int64
	JobsFailed24h     int64
	JobsWaitingInput  int64
	HostsConnected    int64
	HostsDisconnected int64
	ActiveAlerts      int64
	Sites, Policies   int64
	Targets           int64
	// VMsWithoutDrill are the protected VMs without a successful test
	// failover (cleaned up) in DrillInterval.
	VMsWithoutDrill int64
	// RPO is the fleet's RPO against its policies.
	RPO FleetRPO
}

// FleetRPO counts the replicating VMs within their RPO threshold (twice
// their policy's copy frequency, the health rule) and over it, and names
// the worst, by RPO over threshold.
type FleetRPO struct {
	Within, Over int64
	NoPoint      int64 // replicating, but the initial copy has made no point yet
	Worst        []RPOStanding
}

// RPOStanding is one VM's RPO against its threshold.
type RPOStanding struct {
	VMID, Name                   string
	RPOSeconds, ThresholdSeconds float64
}

// Over says whether the VM is over its threshold.
func (r RPOStanding) Over() bool { return r.RPOSeconds > r.ThresholdSeconds }

// WorstShown is how many VMs the dashboard names as the worst.
const WorstShown = 5

// DrillInterval is how often a VM's recovery should be proven by a test
// failover: the dashboard counts the VMs that went longer.
const DrillInterval = 183 * 24 * time.Hour

// Dashboard counts what the dashboard shows, at the store's clock.
func (s *Store) Dashboard(ctx context.Context) (*Dashboard, error) {
	db := s.db.WithContext(ctx)
	d := &Dashboard{VMsByHealth: map[string]int64{}}
	count := func(model any, dst *int64, where string, args ...any) error {
		q := db.Model(model)
		if where != "" {
			q = q.Where(where, args...)
		}
		return q.Count(dst).Error
	}
	since := s.Now().Add(-24 * time.Hour)
	steps := []error{
		count(&VM{}, &d.VMsTotal, ""),
		count(&Job{}, &d.JobsInProgress, "state = ?", JobInProgress),
		count(&Job{}, &d.JobsFailed24h, "state = ? AND created_at >= ?", JobFailed, since),
		count(&Job{}, &d.JobsWaitingInput, "state = ?", JobWaitingForInput),
		count(&Host{}, &d.HostsConnected, "state = ? AND revoked_at IS NULL", HostConnected),
		count(&Host{}, &d.HostsDisconnected, "state = ? AND revoked_at IS NULL", HostDisconnected),
		count(&Alert{}, &d.ActiveAlerts, "state = ?", AlertActive),
		count(&Site{}, &d.Sites, ""),
		count(&Policy{}, &d.Policies, ""),
		count(&Target{}, &d.Targets, ""),
		count(&Protection{}, &d.VMsWithoutDrill, "last_drill_at IS NULL OR last_drill_at < ?", s.Now().Add(-DrillInterval)),
	}
	for _, err := range steps {
		if err != nil {
			return nil, translateError(err)
		}
	}
	var rows []struct {
		Health string
		N      int64
	}
	if err := db.Model(&Protection{}).Select("health, COUNT(*) AS n").Group("health").Scan(&rows).Error; err != nil {
		return nil, translateError(err)
	}
	var protected int64
	for _, r := range rows {
		d.VMsByHealth[r.Health] = r.N
		protected += r.N
	}
	d.VMsUnprotected = d.VMsTotal - protected
	var err error
	if d.RPO, err = s.fleetRPO(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// fleetRPO reads every replicating VM's RPO in one query.
func (s *Store) fleetRPO(ctx context.Context) (FleetRPO, error) {
	now := s.Now()
	var rows []struct {
		VMID, Name           string
		CopyFrequencySeconds int
		LastRecoveryPointAt  *time.Time
	}
	var f FleetRPO
	if err := s.db.WithContext(ctx).Table("protections AS p").
		Select("p.vm_id, v.name, pol.copy_frequency_seconds, p.last_recovery_point_at").
		Joins("JOIN vms AS v ON v.id = p.vm_id").Joins("JOIN policies AS pol ON pol.id = p.policy_id").
		Where("p.state IN ?", replicatingStates).Scan(&rows).Error; err != nil {
		return f, translateError(err)
	}
	var all []RPOStanding
	for _, r := range rows {
		if r.LastRecoveryPointAt == nil {
			f.NoPoint++
			continue
		}
		st := RPOStanding{VMID: r.VMID, Name: r.Name, RPOSeconds: max(now.Sub(*r.LastRecoveryPointAt).Seconds(), 0), ThresholdSeconds: float64(2 * r.CopyFrequencySeconds)}
		if st.Over() {
			f.Over++
		} else {
			f.Within++
		}
		all = append(all, st)
	}
	slices.SortFunc(all, func(a, b RPOStanding) int {
		if c := cmp.Compare(b.RPOSeconds/max(b.ThresholdSeconds, 1), a.RPOSeconds/max(a.ThresholdSeconds, 1)); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	f.Worst = all[:min(len(all), WorstShown)]
	return f, nil
}
