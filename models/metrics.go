package models

import (
	"context"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// VMMetrics is what a monitoring scrape shows of one replicating VM.
type VMMetrics struct {
	VMID, Name, State    string
	CopyFrequencySeconds int
	// RPOSeconds is the age of the newest recovery point; HasPoint is false
	// before the initial copy made one.
	RPOSeconds       float64
	HasPoint         bool
	LastCycleBytes   int64
	LastCycleSeconds float64
	// BacklogBytes is what the running copy (a cycle, the initial copy, a
	// resync) has said it still has to send; 0 when none runs.
	BacklogBytes int64
}

// MetricsSnapshot is the vault's state as a monitoring scrape shows it.
type MetricsSnapshot struct {
	VMs          []VMMetrics
	JobsByState  map[string]int64
	TasksByState map[string]int64 // the queue: Waiting, Queued, Leased
	Hosts        []HostMetrics    // not revoked
	// Alerts not resolved, by state and severity.
	Alerts []AlertCount
}

// HostMetrics is a host's connection as a scrape shows it.
type HostMetrics struct {
	ID, Name, State string
	LastHeartbeat   *time.Time
}

// AlertCount is how many alerts are in a state with a severity.
type AlertCount struct {
	State, Severity string
	N               int64
}

// replicatingStates are the states in which a VM has an RPO to keep.
var replicatingStates = []string{StateInitialReplication, StateProtected, StateResyncRequired, StateResynchronizing}

// Metrics reads the snapshot in six queries, whatever the number of VMs:
// a scrape stays cheap.
func (s *Store) Metrics(ctx context.Context) (*MetricsSnapshot, error) {
	now := s.Now()
	db := s.db.WithContext(ctx)
	m := &MetricsSnapshot{JobsByState: map[string]int64{}, TasksByState: map[string]int64{}}
	var vms []struct {
		VMID, Name, State    string
		CopyFrequencySeconds int
		LastRecoveryPointAt  *time.Time
		LastCycleBytes       int64
		LastCycleSeconds     float64
	}
	if err := db.Table("protections AS p").
		Select("p.vm_id, v.name, p.state, pol.copy_frequency_seconds, p.last_recovery_point_at, p.last_cycle_bytes, p.last_cycle_seconds").
		Joins("JOIN vms AS v ON v.id = p.vm_id").Joins("JOIN policies AS pol ON pol.id = p.policy_id").
		Where("p.state IN ?", replicatingStates).Order("v.name, p.vm_id").Scan(&vms).Error; err != nil {
		return nil, translateError(err)
	}
	var backlogs []struct {
		VMID    string
		Backlog int64
	}
	if err := db.Table("tasks AS t").Select("p.vm_id, SUM(t.bytes_total - t.bytes_done) AS backlog").
		Joins("JOIN protections AS p ON p.id = t.protection_id").
		Where("t.state = ? AND t.kind IN ? AND t.bytes_total > t.bytes_done", TaskLeased,
			[]string{agentproto.TaskReplicate, agentproto.TaskResync}).
		Group("p.vm_id").Scan(&backlogs).Error; err != nil {
		return nil, translateError(err)
	}
	backlog := make(map[string]int64, len(backlogs))
	for _, b := range backlogs {
		backlog[b.VMID] = b.Backlog
	}
	for _, v := range vms {
		vm := VMMetrics{VMID: v.VMID, Name: v.Name, State: v.State, CopyFrequencySeconds: v.CopyFrequencySeconds,
			LastCycleBytes: v.LastCycleBytes, LastCycleSeconds: v.LastCycleSeconds, BacklogBytes: backlog[v.VMID]}
		if v.LastRecoveryPointAt != nil {
			vm.HasPoint, vm.RPOSeconds = true, max(now.Sub(*v.LastRecoveryPointAt).Seconds(), 0)
		}
		m.VMs = append(m.VMs, vm)
	}
	type count struct {
		State string
		N     int64
	}
	group := func(model any, where string, args []any, into map[string]int64) error {
		var rows []count
		q := db.Model(model).Select("state, COUNT(*) AS n")
		if where != "" {
			q = q.Where(where, args...)
		}
		if err := q.Group("state").Scan(&rows).Error; err != nil {
			return translateError(err)
		}
		for _, r := range rows {
			into[r.State] = r.N
		}
		return nil
	}
	if err := group(&Job{}, "", nil, m.JobsByState); err != nil {
		return nil, err
	}
	if err := group(&Task{}, "state IN ?", []any{[]string{TaskWaiting, TaskQueued, TaskLeased}}, m.TasksByState); err != nil {
		return nil, err
	}
	if err := db.Model(&Host{}).Select("id, name, state, last_heartbeat").Where("revoked_at IS NULL").Order("name, id").Scan(&m.Hosts).Error; err != nil {
		return nil, translateError(err)
	}
	if err := db.Model(&Alert{}).Select("state, severity, COUNT(*) AS n").Where("state <> ?", AlertResolved).
		Group("state, severity").Order("state, severity").Scan(&m.Alerts).Error; err != nil {
		return nil, translateError(err)
	}
	return m, nil
}

// LeaseExpiries is how many task leases ran out (their agent stopped
// reporting) since this process opened the store.
func (s *Store) LeaseExpiries() int64 { return s.leaseExpiries.Load() }
