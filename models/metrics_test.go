package models_test

import (
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

func TestAScrapeShowsTheRunningCopysBacklogAndCountsLeaseExpiries(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host := replicatedVM(t, h)
		h.advance(5 * time.Minute)
		if _, err := h.s.ScheduleReplications(t.Context()); err != nil {
			t.Fatal(err)
		}
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		if _, _, err := h.s.ReportProgress(t.Context(), host.ID, cycle.ID, models.TaskProgress{Percent: 10, BytesDone: 100, BytesTotal: 1000}, time.Minute); err != nil {
			t.Fatal(err)
		}
		m, err := h.s.Metrics(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(m.VMs) != 1 || m.VMs[0].VMID != vm.ID || m.VMs[0].BacklogBytes != 900 || !m.VMs[0].HasPoint || m.VMs[0].RPOSeconds != 300 ||
			m.VMs[0].CopyFrequencySeconds != 300 || m.VMs[0].LastCycleBytes != 4096 {
			t.Fatalf("the VM in a scrape: %+v", m.VMs)
		}
		if m.TasksByState[models.TaskLeased] != 1 || len(m.Hosts) != 1 || m.Hosts[0].State != models.HostConnected || m.JobsByState[models.JobSucceeded] != 1 {
			t.Fatalf("queue %v, hosts %+v, jobs %v", m.TasksByState, m.Hosts, m.JobsByState)
		}
		before := h.s.LeaseExpiries()
		h.advance(2 * time.Minute) // the agent stopped reporting
		if n, err := h.s.ReapExpiredLeases(t.Context()); err != nil || n != 1 {
			t.Fatalf("reap: %d %v", n, err)
		}
		if got := h.s.LeaseExpiries() - before; got != 1 {
			t.Fatalf("lease expiries counted: %d", got)
		}
		if m, _ = h.s.Metrics(t.Context()); m.VMs[0].BacklogBytes != 0 || m.TasksByState[models.TaskQueued] != 1 {
			t.Fatalf("after the lease ran out: backlog %d (no copy runs), queue %v", m.VMs[0].BacklogBytes, m.TasksByState)
		}
		leaseOne(t, h, host.ID, agentproto.TaskReplicate) // the run again, before it reports
		if m, _ = h.s.Metrics(t.Context()); m.VMs[0].BacklogBytes != 0 {
			t.Fatalf("a new run shows the last run's backlog: %d", m.VMs[0].BacklogBytes)
		}
	})
}
