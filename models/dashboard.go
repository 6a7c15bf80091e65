package models

import (
	"context"
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
}

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
	return d, nil
}
