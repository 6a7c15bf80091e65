package models_test

import (
	"errors"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

func openAlerts(t *testing.T, h *harness, kind string) []models.Alert {
	t.Helper()
	all, _, err := h.s.ListAlerts(t.Context(), models.AlertFilter{}, models.Page{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []models.Alert
	for _, a := range all {
		if a.Kind == kind && a.State != models.AlertResolved {
			out = append(out, a)
		}
	}
	return out
}

func TestCriticalHealthAndAStaleRPORaiseAlertsThatResolveThemselves(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		vm, host, _ := protectedVM(t, h) // copy every 5 minutes
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskProtectionCheck), models.TaskOutcome{Result: "{}"})
		complete(t, h, host.ID, leaseOne(t, h, host.ID, agentproto.TaskCreateReplica), models.TaskOutcome{Result: "{}"})
		initial := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, initial, cycleResult(initial, h.clock.T))

		// No cycle for 11 minutes: the RPO passes twice the copy frequency.
		h.advance(11 * time.Minute)
		h.s.ScheduleReplications(t.Context())
		rpo := openAlerts(t, h, models.AlertRPOExceeded)
		if len(rpo) != 1 || rpo[0].ObjectID != vm.ID || rpo[0].Severity != models.HealthWarning {
			t.Fatalf("RPO alerts: %+v", rpo)
		}
		h.s.ScheduleReplications(t.Context())
		if n := len(openAlerts(t, h, models.AlertRPOExceeded)); n != 1 {
			t.Fatalf("%d RPO alerts after a second pass, want the same one", n)
		}
		// The queued cycle fails for good: Critical, and an alert.
		cycle := leaseOne(t, h, host.ID, agentproto.TaskReplicate)
		complete(t, h, host.ID, cycle, models.TaskOutcome{ErrorCode: "storage_access_denied", Message: "the key was rotated"})
		crit := openAlerts(t, h, models.AlertProtectionCritical)
		if len(crit) != 1 || crit[0].Severity != models.HealthCritical || crit[0].ObjectKind != "vm" {
			t.Fatalf("critical alerts: %+v", crit)
		}
		// An operator acknowledges it; acknowledging twice is refused.
		ack, err := h.s.AcknowledgeAlert(t.Context(), alice, crit[0].ID)
		if err != nil || ack.State != models.AlertAcknowledged || ack.AcknowledgedBy != "alice" || ack.AcknowledgedAt == nil {
			t.Fatalf("acknowledge: %+v %v", ack, err)
		}
		_, err = h.s.AcknowledgeAlert(t.Context(), alice, crit[0].ID)
		wantConflict(t, err, "alert_not_active")
		wantAudit(t, h, "alert.acknowledge", crit[0].ID)
		// Disabling the protection ends the VM's alerts.
		if _, err := h.s.DisableProtection(t.Context(), alice, vm.ID, false); err != nil {
			t.Fatal(err)
		}
		if n := len(openAlerts(t, h, models.AlertProtectionCritical)) + len(openAlerts(t, h, models.AlertRPOExceeded)); n != 0 {
			t.Fatalf("%d alerts left open for an unprotected VM", n)
		}
		// The vault resolved it, not alice, who only acknowledged it.
		if got := alertByID(t, h, crit[0].ID); got.ResolvedBy != models.ResolvedBySystem || got.AcknowledgedBy != "alice" {
			t.Fatalf("an alert whose condition ended: resolved by %q, acknowledged by %q", got.ResolvedBy, got.AcknowledgedBy)
		}
		_, err = h.s.ResolveAlert(t.Context(), alice, crit[0].ID)
		wantConflict(t, err, "alert_resolved")
		if _, err := h.s.ResolveAlert(t.Context(), alice, "alert_missing"); !errors.Is(err, models.ErrNotFound) {
			t.Fatalf("resolve an unknown alert: %v", err)
		}
	})
}

func alertByID(t *testing.T, h *harness, id string) models.Alert {
	t.Helper()
	all, _, err := h.s.ListAlerts(t.Context(), models.AlertFilter{}, models.Page{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range all {
		if a.ID == id {
			return a
		}
	}
	t.Fatalf("no alert %s", id)
	return models.Alert{}
}

// An alert resolved by hand says by whom.
func TestAnAlertResolvedByHandSaysByWhom(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		site := mustSite(t, h, "s")
		host := mustHost(t, h, site.ID, "hv", models.HostConnected)
		h.advance(time.Hour)
		if _, err := h.s.MarkSilentHostsDisconnected(t.Context(), time.Minute); err != nil {
			t.Fatal(err)
		}
		var open []models.Alert
		all, _, _ := h.s.ListAlerts(t.Context(), models.AlertFilter{}, models.Page{Limit: 100})
		for _, a := range all {
			if a.ObjectID == host.ID && a.State != models.AlertResolved {
				open = append(open, a)
			}
		}
		if len(open) == 0 {
			t.Fatal("no alert about the silent host")
		}
		if _, err := h.s.ResolveAlert(t.Context(), alice, open[0].ID); err != nil {
			t.Fatal(err)
		}
		if got := alertByID(t, h, open[0].ID); got.ResolvedBy != "alice" || got.ResolvedAt == nil {
			t.Fatalf("resolved by hand: by %q at %v", got.ResolvedBy, got.ResolvedAt)
		}
	})
}

func TestAlertDeliveryIsRetriedWithBackOffUntilItSucceeds(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		site := mustSite(t, h, "s")
		mustHost(t, h, site.ID, "hv", models.HostConnected)
		h.advance(time.Hour)
		if _, err := h.s.MarkSilentHostsDisconnected(t.Context(), time.Minute); err != nil {
			t.Fatal(err)
		}
		due, err := h.s.AlertsToDeliver(t.Context(), 10)
		if err != nil || len(due) != 1 {
			t.Fatalf("due: %+v %v", due, err)
		}
		id := due[0].ID
		for i, wait := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
			if err := h.s.RecordAlertDelivery(t.Context(), id, errors.New("webhook answered 500")); err != nil {
				t.Fatal(err)
			}
			h.advance(wait - time.Second)
			if due, _ := h.s.AlertsToDeliver(t.Context(), 10); len(due) != 0 {
				t.Fatalf("attempt %d: due again before %s", i+2, wait)
			}
			h.advance(time.Second)
			if due, _ := h.s.AlertsToDeliver(t.Context(), 10); len(due) != 1 || due[0].DeliveryAttempts != i+1 || due[0].DeliveryError == "" {
				t.Fatalf("attempt %d: %+v", i+2, due)
			}
		}
		if err := h.s.RecordAlertDelivery(t.Context(), id, nil); err != nil {
			t.Fatal(err)
		}
		h.advance(time.Hour)
		if due, _ := h.s.AlertsToDeliver(t.Context(), 10); len(due) != 0 {
			t.Fatalf("a delivered alert is due again: %+v", due)
		}
	})
}
