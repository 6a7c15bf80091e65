package models_test

import (
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// Two VMs' descriptors name the same policy with different settings (one
// descriptor is stale: its VM was paused / its host away when the policy's
// retention was raised). The rebuilt policy keeps the longest retention
// recorded, whichever replica is read first, so no first cycle prunes what
// the old vault kept.
func TestReplicasThatDisagreeOnTheirPolicyKeepItsLongestRetention(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		at := h.clock.T.Add(-time.Minute)
		mk := func(key string, retention int, pt time.Time) models.RebuildReplica {
			return models.RebuildReplica{Key: key,
				Descriptor: &agentproto.ReplicaDescriptor{Format: 1, VaultVMID: key, ReplicaKey: key, ProtectionID: "prot_" + key,
					ExternalID: key, Name: key, HostName: "hv", SiteName: "DC", TargetName: "nas",
					Disks:  []agentproto.DescribedDisk{{ReplicaID: "disk_" + key, DiskID: "disk_" + key, Path: "/vms/" + key, SizeBytes: 1 << 20}},
					Policy: &agentproto.DescribedPolicy{Name: "gold", CopyFrequencySeconds: 300, RetentionHours: retention, ResyncWindowStart: "18:30", ResyncWindowEnd: "06:00", WorkHoursStart: "08:00", WorkHoursEnd: "18:00"}},
				Disks:  map[string]int64{"disk_" + key: 1 << 20},
				Points: []models.RebuildPoint{{ID: "rp_" + key, Time: pt, Consistency: "crash", Disks: map[string]int64{"disk_" + key: 1 << 20}}}}
		}
		in := models.RebuildInput{Target: models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/nas"},
			Replicas: []models.RebuildReplica{mk("vm_a", 6, at.Add(-20*time.Hour)), mk("vm_b", 24, at)}}
		if _, err := h.s.Rebuild(t.Context(), in); err != nil {
			t.Fatal(err)
		}
		var got []struct {
			VMID           string
			RetentionHours int
		}
		h.rawDB(t).Table("protections").Select("protections.vm_id, policies.retention_hours").Joins("JOIN policies ON policies.id = protections.policy_id").Scan(&got)
		if len(got) != 2 {
			t.Fatalf("rebuilt protections: %+v", got)
		}
		for _, g := range got {
			if g.RetentionHours != 24 {
				t.Errorf("%s is rebuilt with %d h of points, not the 24 h recorded: its first cycle prunes what its vault kept", g.VMID, g.RetentionHours)
			}
		}
	})
}
