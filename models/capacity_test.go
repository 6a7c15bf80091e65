package models_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// The capacity planner measures a VM's churn from its delta cycles (not
// its initial copy) and says whether its policy's limit lets it keep its
// RPO.
func TestTheCapacityPlannerMeasuresChurnAgainstThePolicysLimit(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := protectedVM(t, h) // copy every 5 minutes
		if err := h.rawDB(t).Exec("UPDATE policies SET work_hours_mbps = 10, off_hours_mbps = 20").Error; err != nil {
			t.Fatal(err)
		}
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		sent := func(task models.Task, bytes int64) models.TaskOutcome {
			var p agentproto.ReplicationPayload
			json.Unmarshal([]byte(task.Payload), &p)
			b, _ := json.Marshal(agentproto.ReplicateResult{PointID: p.PointID, Time: h.clock.T, Consistency: "app", SizeBytes: 1 << 30, BytesSent: bytes})
			return models.TaskOutcome{Result: string(b)}
		}
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, sent(initial, 50<<30)) // the whole VM: not churn
		cycle := func(bytes int64) {
			h.advance(5 * time.Minute)
			if _, err := h.s.ScheduleReplications(t.Context()); err != nil {
				t.Fatal(err)
			}
			task := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
			complete(t, h, host.ID, task, sent(task, bytes))
		}
		plan := func() models.VMCapacity {
			p, err := h.s.Capacity(t.Context())
			if err != nil || len(p.VMs) != 1 || len(p.Hosts) != 1 {
				t.Fatalf("capacity: %+v %v", p, err)
			}
			if p.VMs[0].VMID != vm.ID {
				t.Fatalf("capacity of %s", p.VMs[0].VMID)
			}
			return p.VMs[0]
		}
		cycle(75e6)
		cycle(75e6)
		if c := plan(); c.Measured || c.Cycles != 2 {
			t.Fatalf("measured after 2 delta cycles: %+v", c)
		}
		cycle(75e6)
		c := plan()
		// 75 MB in 5 min: 2 Mbit/s, within the 10 Mbit/s of work hours.
		if !c.Measured || !c.Fits || math.Abs(c.NeededMbps-2) > 0.01 || math.Abs(c.AverageMbps-2) > 0.01 || c.LimitMbps != 10 || c.LimitWhen != "work hours" || c.ChurnBytes != 225e6 {
			t.Fatalf("after 3 cycles of 75 MB: %+v (%s)", c, c.Advice())
		}
		// The VM writes more: 750 MB per cycle need 20 Mbit/s.
		for range 20 {
			cycle(750e6)
		}
		c = plan()
		if c.Fits || math.Abs(c.NeededMbps-20) > 0.01 {
			t.Fatalf("after cycles of 750 MB: %+v", c)
		}
		if want := "cannot keep its RPO"; !strings.Contains(c.Advice(), want) {
			t.Fatalf("advice %q", c.Advice())
		}
		p, _ := h.s.Capacity(t.Context())
		if p.Hosts[0].Fits || math.Abs(p.Hosts[0].NeededMbps-20) > 0.01 || p.Hosts[0].LimitMbps != 10 {
			t.Fatalf("host: %+v", p.Hosts[0])
		}
	})
}
