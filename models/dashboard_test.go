package models_test

import (
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models"
)

func TestDashboardCounts(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		empty, err := h.s.Dashboard(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if empty.VMsTotal != 0 || empty.Sites != 0 || len(empty.VMsByHealth) != 0 {
			t.Errorf("dashboard of an empty vault = %+v", empty)
		}

		paris, lyon := mustSite(t, h, "Paris"), mustSite(t, h, "Lyon")
		hv1 := mustHost(t, h, paris.ID, "hv1", models.HostConnected)
		hv2 := mustHost(t, h, lyon.ID, "hv2", models.HostConnected)
		mustHost(t, h, lyon.ID, "hv3", models.HostDisconnected)
		revoked := mustHost(t, h, lyon.ID, "hv4", models.HostConnected)
		if err := h.rawDB(t).Model(&models.Host{}).Where("id = ?", revoked.ID).Update("revoked_at", h.clock.T).Error; err != nil {
			t.Fatal(err)
		}
		on1 := mustVMs(t, h, hv1.ID, "a", "b", "c")
		on2 := mustVMs(t, h, hv2.ID, "d", "e")
		gold := mustPolicy(t, h, "Gold")
		mustPolicy(t, h, "Silver")
		nas := mustDirectoryTarget(t, h, "nas")
		insertProtection(t, h, on1["a"].ID, gold.ID, nas.ID, models.HealthNormal)
		insertProtection(t, h, on1["b"].ID, gold.ID, nas.ID, models.HealthNormal)
		insertProtection(t, h, on2["d"].ID, gold.ID, nas.ID, models.HealthCritical)

		// A job failed more than a day ago is not in "failed in 24 h".
		mustJob(t, h, "Failover", models.JobFailed, "vm_1")
		h.advance(25 * time.Hour)
		mustJob(t, h, "Failover", models.JobFailed, "vm_1")
		mustJob(t, h, "Resync", models.JobInProgress, "vm_1")
		mustJob(t, h, "Resync", models.JobInProgress, "vm_2")
		mustJob(t, h, "RecoveryPlanFailover", models.JobWaitingForInput, "plan_1")
		mustJob(t, h, "Resync", models.JobSucceeded, "vm_3")

		for _, state := range []string{models.AlertActive, models.AlertActive, models.AlertResolved, models.AlertAcknowledged} {
			a := models.Alert{ID: models.NewID("alert"), Kind: "HealthCritical", Severity: "Critical", Message: "m", State: state}
			if err := h.rawDB(t).Create(&a).Error; err != nil {
				t.Fatal(err)
			}
		}

		// a is a minute behind, d twenty (over twice Gold's 5 minutes), b
		// has no point yet.
		for vm, age := range map[string]time.Duration{on1["a"].ID: time.Minute, on2["d"].ID: 20 * time.Minute} {
			if err := h.rawDB(t).Model(&models.Protection{}).Where("vm_id = ?", vm).Update("last_recovery_point_at", h.clock.T.Add(-age)).Error; err != nil {
				t.Fatal(err)
			}
		}

		d, err := h.s.Dashboard(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := models.Dashboard{
			RPO: models.FleetRPO{Within: 1, Over: 1, NoPoint: 1, Worst: []models.RPOStanding{
				{VMID: on2["d"].ID, Name: on2["d"].Name, RPOSeconds: 1200, ThresholdSeconds: 600},
				{VMID: on1["a"].ID, Name: on1["a"].Name, RPOSeconds: 60, ThresholdSeconds: 600}}},
			VMsTotal: 5, VMsUnprotected: 2,
			JobsInProgress: 2, JobsFailed24h: 1, JobsWaitingInput: 1,
			HostsConnected: 2, HostsDisconnected: 1, ActiveAlerts: 2,
			Sites: 2, Policies: 2, Targets: 1,
			VMsWithoutDrill: 3, // the three protected VMs: none had a test failover
		}
		wantHealth := map[string]int64{models.HealthNormal: 2, models.HealthCritical: 1}
		if !maps.Equal(d.VMsByHealth, wantHealth) {
			t.Errorf("VMs by health = %v, want %v", d.VMsByHealth, wantHealth)
		}
		d.VMsByHealth = nil
		if !reflect.DeepEqual(*d, want) {
			t.Errorf("dashboard = %+v\nwant        %+v", *d, want)
		}
	})
}
