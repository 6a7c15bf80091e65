package models_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// The payload of every task of a protection describes the VM, so the
// agent can keep the description beside the replicas.
func TestAProtectionsTasksCarryTheDescriptorOfItsVM(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := replicating(t, h)
		tasks, err := h.s.ScheduleReplications(t.Context())
		if err == nil && len(tasks) == 0 {
			h.clock.T = h.clock.T.Add(10 * time.Minute)
			tasks, err = h.s.ScheduleReplications(t.Context())
		}
		if err != nil || len(tasks) != 1 {
			t.Fatalf("a cycle: %+v %v", tasks, err)
		}
		var pl agentproto.ReplicationPayload
		json.Unmarshal([]byte(tasks[0].Payload), &pl)
		d := pl.Descriptor
		if d == nil || d.Format != agentproto.ReplicaDescriptorFormat || d.VaultVMID != vm.ID || d.ReplicaKey != vm.ID || d.ExternalID != vm.ExternalID ||
			d.Name != vm.Name || d.HostName != host.Name || d.SiteName != "s" || d.TargetName != "nas" || d.Policy == nil || d.Policy.Name != "p" ||
			len(d.Disks) != 1 || d.Disks[0].Path != vm.Disks[0].Path || d.Disks[0].DiskID != vm.Disks[0].ID || d.Disks[0].ReplicaID != pl.Disks[0].ReplicaID {
			t.Fatalf("descriptor: %+v (VM %+v)", d, vm)
		}
	})
}

// rebuildInput is a directory target with one described VM (two points)
// and one replica written before descriptors existed.
func rebuildInput(at time.Time) models.RebuildInput {
	started := at.Add(-time.Second)
	return models.RebuildInput{
		Target: models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/nas"},
		Replicas: []models.RebuildReplica{{
			Key: "vm_01old",
			Descriptor: &agentproto.ReplicaDescriptor{Format: 1, VaultVMID: "vm_01old", ReplicaKey: "vm_01old", ProtectionID: "prot_01old",
				ExternalID: "web", Name: "web", HostName: "hv", SiteName: "Datacenter", TargetName: "nas",
				Disks:  []agentproto.DescribedDisk{{ReplicaID: "disk_01old", DiskID: "disk_01old", Path: "/vms/web/disk0.img", SizeBytes: 1 << 20}},
				Policy: &agentproto.DescribedPolicy{Name: "fast", CopyFrequencySeconds: 30, RetentionHours: 24, ResyncWindowStart: "18:30", ResyncWindowEnd: "06:00", WorkHoursStart: "08:00", WorkHoursEnd: "18:00"}},
			Disks: map[string]int64{"disk_01old": 1 << 20},
			Points: []models.RebuildPoint{
				{ID: "rp_01a", Time: at.Add(-time.Hour), Consistency: "crash", Capture: "powered_off", Disks: map[string]int64{"disk_01old": 1 << 20}},
				{ID: "rp_01b", Time: at, ReadStartedAt: &started, Consistency: "inconsistent", Capture: "live", Disks: map[string]int64{"disk_01old": 1 << 20}},
			},
		}, {
			Key:    "vm_01legacy",
			Disks:  map[string]int64{"disk_01legacy": 4096},
			Points: []models.RebuildPoint{{ID: "rp_01c", Time: at, Consistency: "app", Disks: map[string]int64{"disk_01legacy": 4096}}},
		}},
	}
}

// A rebuilt VM awaits its host; the host that registers under that name
// and reports a VM of the recorded id on the host takes it, with its disk
// (matched by path), protection and points, and its replication resumes
// into the existing replica. Another host reporting that id does not; a
// VM whose replicas say nothing of it is never matched.
func TestARebuiltVMIsMatchedToTheHostOfItsNameThatReportsItsID(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		at := h.clock.T.Add(-time.Minute)
		in := rebuildInput(at)
		in.Replicas = append(in.Replicas, models.RebuildReplica{Key: "vm_01damaged", Unreadable: "permission denied"})
		report, err := h.s.Rebuild(t.Context(), in)
		if err != nil || len(report.VMs) != 2 || report.Target.Path != "/srv/nas" || len(report.Skipped) != 1 || !strings.Contains(report.Skipped[0], "vm_01damaged: unreadable") {
			t.Fatalf("rebuild: %+v %v", report, err)
		}
		if _, err := h.s.Rebuild(t.Context(), rebuildInput(at)); !hasCode(err, agentproto.CodeRebuildVaultInUse) {
			t.Fatalf("a second rebuild of the target: %v", err)
		}
		vm, err := h.s.GetVM(t.Context(), "vm_01old")
		if err != nil || vm.ProtectionState != models.StateProtected || vm.MissingSince == nil || !strings.Contains(strings.Join(vm.HealthReasons, " "), agentproto.CodeAwaitingHost) {
			t.Fatalf("rebuilt VM: %+v %v", vm, err)
		}
		points, _, err := h.s.ListRecoveryPoints(t.Context(), vm.ID, models.Page{Limit: 10})
		if err != nil || len(points) != 2 || points[0].ID != "rp_01b" || points[0].Consistency != "inconsistent" || !points[0].Time.Equal(at) ||
			points[0].ReadStartedAt == nil || points[1].Consistency != "crash" || points[1].Capture != "powered_off" {
			t.Fatalf("rebuilt points: %+v %v", points, err)
		}
		legacy, err := h.s.GetVM(t.Context(), "vm_01legacy")
		if err != nil || legacy.HostName != models.UndescribedHostName || !strings.Contains(strings.Join(legacy.HealthReasons, " "), agentproto.CodeReplicaUndescribed) {
			t.Fatalf("undescribed VM: %+v %v", legacy, err)
		}
		if queued, err := h.s.ScheduleReplications(t.Context()); err != nil || len(queued) != 0 {
			t.Fatalf("a VM awaiting its host got a cycle: %+v %v", queued, err)
		}

		// Another host with a VM of that id: not this one's host.
		site := mustSite(t, h, "Elsewhere")
		other := mustHost(t, h, site.ID, "hv2", models.HostConnected)
		if err := h.s.ReportInventory(t.Context(), other.ID, []models.VMReport{{ExternalID: "web", Name: "web", Disks: []models.DiskReport{{Path: "/vms/web/disk0.img", SizeBytes: 1 << 20}}}}); err != nil {
			t.Fatal(err)
		}
		if vm, _ := h.s.GetVM(t.Context(), "vm_01old"); vm.HostName != "hv" || vm.HostID == other.ID {
			t.Fatalf("a host of another name took the rebuilt VM: %+v", vm)
		}

		host := mustHost(t, h, site.ID, "hv", models.HostConnected)
		if err := h.s.ReportInventory(t.Context(), host.ID, []models.VMReport{{ExternalID: "web", Name: "web", PowerState: models.PowerRunning,
			Disks: []models.DiskReport{{Path: "/vms/web/disk0.img", SizeBytes: 1 << 20}}}}); err != nil {
			t.Fatal(err)
		}
		vm, err = h.s.GetVM(t.Context(), "vm_01old")
		if err != nil || vm.HostID != host.ID || vm.MissingSince != nil || len(vm.Disks) != 1 || vm.Disks[0].ID != "disk_01old" {
			t.Fatalf("after its host reported it: %+v %v", vm, err)
		}
		var hosts []models.Host
		list, _, _ := h.s.ListHosts(t.Context(), models.HostFilter{}, models.Page{Limit: 10})
		for _, hh := range list {
			if hh.RebuiltAt != nil && hh.Name == "hv" {
				hosts = append(hosts, hh)
			}
		}
		if len(hosts) != 0 {
			t.Fatalf("the rebuilt host outlived its VMs: %+v", hosts)
		}
		queued, err := h.s.ScheduleReplications(t.Context())
		if err != nil || len(queued) != 1 || queued[0].HostID != host.ID {
			t.Fatalf("the cycle after the host came back: %+v %v", queued, err)
		}
		var pl agentproto.ReplicationPayload
		json.Unmarshal([]byte(queued[0].Payload), &pl)
		if pl.ReplicaKey != "vm_01old" || len(pl.Disks) != 1 || pl.Disks[0].ReplicaID != "disk_01old" || pl.Disks[0].New || pl.VMID != "web" {
			t.Fatalf("the cycle's payload: %+v", pl)
		}
		if legacy, _ := h.s.GetVM(t.Context(), "vm_01legacy"); legacy.HostName != models.UndescribedHostName {
			t.Fatalf("an undescribed VM was matched: %+v", legacy)
		}
	})
}

// Replicas without a point are nothing to recover from: the rebuild says
// so and makes nothing.
func TestARebuildFromReplicasWithoutPointsMakesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		in := rebuildInput(h.clock.T)
		for i := range in.Replicas {
			in.Replicas[i].Points = nil
		}
		if _, err := h.s.Rebuild(t.Context(), in); !hasCode(err, agentproto.CodeRebuildNoManifests) {
			t.Fatalf("rebuild: %v", err)
		}
		if targets, _, _ := h.s.ListTargets(t.Context(), models.Page{Limit: 10}); len(targets) != 0 {
			t.Fatalf("a failed rebuild left %+v", targets)
		}
	})
}

func hasCode(err error, code string) bool {
	var c *models.ConflictError
	return errors.As(err, &c) && c.Code == code
}

// A vault with a registered host is not rebuilt into: its VMs would clash
// with the rebuilt ones.
func TestARebuildIntoAVaultWithRegisteredHostsIsRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		mustHost(t, h, mustSite(t, h, "s").ID, "hv", models.HostConnected)
		if _, err := h.s.Rebuild(t.Context(), rebuildInput(h.clock.T)); !hasCode(err, agentproto.CodeRebuildVaultInUse) {
			t.Fatalf("rebuild: %v", err)
		}
		if vms, _, _ := h.s.ListVMs(t.Context(), models.VMFilter{}, models.Page{Limit: 10}); len(vms) != 0 {
			t.Fatalf("a refused rebuild made %+v", vms)
		}
	})
}
