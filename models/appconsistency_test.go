package models_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// A policy that asks for app-consistent points on a host that cannot
// quiesce the VM used to be said only in the agent's log: the VM page
// showed Normal. The VM is Warning now, saying why, until an app point is
// made (or the policy stops asking).
func TestAnAppConsistentPointTheHostCannotMakeWarnsOnTheVM(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := protectedVM(t, h) // policy: copy every 5 min, app every 4 h
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))

		crashWith := func(task models.Task, note string) models.TaskOutcome {
			var p agentproto.ReplicationPayload
			json.Unmarshal([]byte(task.Payload), &p)
			b, _ := json.Marshal(agentproto.ReplicateResult{PointID: p.PointID, Time: h.clock.T, Consistency: "crash", CaptureNote: note, SizeBytes: 1 << 30})
			return models.TaskOutcome{Result: string(b)}
		}
		nextCycle := func() (models.Task, bool) {
			h.advance(5 * time.Minute)
			if _, err := h.s.ScheduleReplications(t.Context()); err != nil {
				t.Fatal(err)
			}
			task := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
			var p agentproto.ReplicationPayload
			json.Unmarshal([]byte(task.Payload), &p)
			return task, p.AppConsistent
		}
		// Cycles until one asks for an app-consistent point; the host
		// answers crash, saying why.
		for {
			task, app := nextCycle()
			if !app {
				complete(t, h, host.ID, task, crashWith(task, ""))
				if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.Health != models.HealthNormal {
					t.Fatalf("a crash point no one asked to be app made the VM %s: %s", p.Health, p.HealthReasons)
				}
				continue
			}
			complete(t, h, host.ID, task, crashWith(task, "an app-consistent point was asked for, but the agent has no --freeze-command"))
			break
		}
		p, _ := h.s.GetProtection(t.Context(), vm.ID)
		if p.Health != models.HealthWarning || !strings.Contains(p.HealthReasons, agentproto.CodeAppConsistencyMissed) ||
			!strings.Contains(p.HealthReasons, "no --freeze-command") {
			t.Fatalf("after the host could not quiesce: %s %s", p.Health, p.HealthReasons)
		}
		// Without an app point every cycle asks again; while the host
		// cannot, the warning stays.
		task, app := nextCycle()
		if !app {
			t.Fatal("the next cycle does not ask for an app-consistent point, though none was made")
		}
		complete(t, h, host.ID, task, crashWith(task, "an app-consistent point was asked for, but the agent has no --freeze-command"))
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.Health != models.HealthWarning {
			t.Fatalf("the warning went away without an app point: %s", p.Health)
		}
		// The host quiesces the next time it is asked: Normal again.
		for {
			task, app := nextCycle()
			complete(t, h, host.ID, task, cycleResult(task, h.clock.T))
			if app {
				break
			}
		}
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.Health != models.HealthNormal {
			t.Fatalf("after an app point: %s %s", p.Health, p.HealthReasons)
		}
	})
}

// A VM whose host stopped answering used to show Normal (its RPO not yet
// late): it is Warning now, saying that its host is disconnected.
func TestAVMOfADisconnectedHostIsWarning(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := protectedVM(t, h)
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))
		if err := h.s.Heartbeat(t.Context(), host.ID, "test", agentproto.ProtocolVersion, "filedisk", nil); err != nil {
			t.Fatal(err)
		}
		h.advance(time.Minute)
		if _, err := h.s.MarkSilentHostsDisconnected(t.Context(), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.ScheduleReplications(t.Context()); err != nil {
			t.Fatal(err)
		}
		p, _ := h.s.GetProtection(t.Context(), vm.ID)
		if p.Health != models.HealthWarning || !strings.Contains(p.HealthReasons, agentproto.CodeHostDisconnected) || !strings.Contains(p.HealthReasons, "hv") {
			t.Fatalf("VM of a silent host: %s %s", p.Health, p.HealthReasons)
		}
		// Back: Normal again at the next pass.
		if err := h.s.Heartbeat(t.Context(), host.ID, "test", agentproto.ProtocolVersion, "filedisk", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.ScheduleReplications(t.Context()); err != nil {
			t.Fatal(err)
		}
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.Health != models.HealthNormal {
			t.Fatalf("after the host came back: %s %s", p.Health, p.HealthReasons)
		}
	})
}

// A verify that finds a changed block names the disk by its file, as
// Resynchronize and the VM page do, not by the replica's id.
func TestAVerifyMismatchNamesTheDiskByItsFile(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, initial := replicating(t, h)
		verify, err := h.s.StartVerify(t.Context(), alice, vm.ID, initial)
		if err != nil {
			t.Fatal(err)
		}
		task := leaseOne(t, h, host.ID, agentproto.TaskVerify)
		pl := payloadOf(t, task)
		b, _ := json.Marshal(agentproto.VerifyResult{PointID: initial, BlocksChecked: 10, Mismatches: []agentproto.Mismatch{{Disk: pl.Disks[0].ReplicaID, Offset: 8192}}})
		complete(t, h, host.ID, task, models.TaskOutcome{Result: string(b)})
		job := wantJob(t, h, verify.ID, models.JobFailed)
		file := filepath.Base(pl.Disks[0].Path)
		if !strings.Contains(job.ErrorMessage, "disk "+file+" at offset 8192") || strings.Contains(job.ErrorMessage, pl.Disks[0].ReplicaID) {
			t.Fatalf("mismatch message %q, want the disk named %s", job.ErrorMessage, file)
		}
	})
}

// A powered-off VM has nothing in memory to quiesce: its point, asked to
// be app-consistent and made without a freeze, does not warn.
func TestAPoweredOffVMsPointDoesNotWarnOfAppConsistency(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		for range 3 {
			h.advance(5 * time.Minute)
			schedule(t, h)
			task := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
			pl := payloadOf(t, task)
			if !pl.AppConsistent {
				t.Fatal("the cycle was not asked for an app-consistent point")
			}
			b, _ := json.Marshal(agentproto.ReplicateResult{PointID: pl.PointID, Time: h.clock.T, Consistency: "crash", Capture: "powered_off",
				CaptureNote: "an app-consistent point was asked for, but the agent has no --freeze-command", SizeBytes: 1 << 30})
			complete(t, h, host.ID, task, models.TaskOutcome{Result: string(b)})
		}
		if p, _ := h.s.GetProtection(t.Context(), vm.ID); p.Health != models.HealthNormal {
			t.Fatalf("a powered-off VM's points: %s %s", p.Health, p.HealthReasons)
		}
	})
}
