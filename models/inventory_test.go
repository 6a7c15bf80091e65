package models_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/models"
)

func diskReport(path string, size int64) models.DiskReport {
	return models.DiskReport{Path: path, SizeBytes: size, Format: "qcow2"}
}

// disksOf gives a VM's disks as path → size.
func disksOf(vm models.VMSummary) map[string]int64 {
	out := map[string]int64{}
	for _, d := range vm.Disks {
		out[d.Path] = d.SizeBytes
	}
	return out
}

func TestReportInventoryTracksVMsAndDisks(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		site := mustSite(t, h, "Primary")
		host := mustHost(t, h, site.ID, "hv1", models.HostConnected)
		const gib = int64(1) << 30

		web := models.VMReport{ExternalID: "uuid-web", Name: "web", PowerState: models.PowerRunning,
			Disks: []models.DiskReport{diskReport("/vms/web-os.qcow2", 20*gib), diskReport("/vms/web-data.qcow2", 100*gib)}}
		db := models.VMReport{ExternalID: "uuid-db", Name: "db", Disks: []models.DiskReport{diskReport("/vms/db.qcow2", 50*gib)}}
		if err := h.s.ReportInventory(ctx, host.ID, []models.VMReport{web, db}); err != nil {
			t.Fatalf("first report: %v", err)
		}
		vms := vmsOfHost(t, h, host.ID)
		if len(vms) != 2 {
			t.Fatalf("VMs = %d, want 2", len(vms))
		}
		first := vms["uuid-web"]
		if first.Name != "web" || first.PowerState != models.PowerRunning || first.HostName != "hv1" || first.SiteID != site.ID ||
			first.ProtectionState != models.StateUnprotected || first.Health != "" || first.MissingSince != nil {
			t.Errorf("new VM = %+v", first)
		}
		if got := disksOf(first); len(got) != 2 || got["/vms/web-os.qcow2"] != 20*gib || got["/vms/web-data.qcow2"] != 100*gib {
			t.Errorf("disks of web = %v", got)
		}
		if first.Disks[0].Path > first.Disks[1].Path {
			t.Errorf("disks not in path order: %v", first.Disks)
		}
		if vms["uuid-db"].PowerState != models.PowerUnknown {
			t.Errorf("power state of a VM reported without one = %q, want Unknown", vms["uuid-db"].PowerState)
		}
		osDiskID := ""
		for _, d := range first.Disks {
			if d.Path == "/vms/web-os.qcow2" {
				osDiskID = d.ID
			}
		}

		// db disappears; web's OS disk grows, its data disk goes, a log disk comes.
		h.advance(time.Minute)
		vanished := h.clock.T
		web.Name, web.PowerState = "web-renamed", models.PowerOff
		web.Disks = []models.DiskReport{diskReport("/vms/web-os.qcow2", 40*gib), diskReport("/vms/web-log.qcow2", 5*gib)}
		if err := h.s.ReportInventory(ctx, host.ID, []models.VMReport{web}); err != nil {
			t.Fatalf("second report: %v", err)
		}
		vms = vmsOfHost(t, h, host.ID)
		if len(vms) != 2 {
			t.Fatalf("VMs after db vanished = %d, want 2: a missing VM is kept", len(vms))
		}
		gone := vms["uuid-db"]
		if gone.MissingSince == nil || !gone.MissingSince.Equal(vanished) {
			t.Errorf("missing since = %v, want %v", gone.MissingSince, vanished)
		}
		if _, err := h.s.GetVM(ctx, gone.ID); err != nil {
			t.Errorf("GetVM of a missing VM: %v", err)
		}
		second := vms["uuid-web"]
		if second.ID != first.ID || second.Name != "web-renamed" || second.PowerState != models.PowerOff || second.MissingSince != nil {
			t.Errorf("web after the second report = %+v, want the same id %s renamed and off", second, first.ID)
		}
		if got := disksOf(second); len(got) != 2 || got["/vms/web-os.qcow2"] != 40*gib || got["/vms/web-log.qcow2"] != 5*gib {
			t.Errorf("disks of web = %v, want the OS disk resized, data gone, log added", got)
		}
		for _, d := range second.Disks {
			if d.Path == "/vms/web-os.qcow2" && d.ID != osDiskID {
				t.Errorf("a resized disk got a new id %s (was %s); replicas refer to it", d.ID, osDiskID)
			}
		}
		if n := h.countRows(t, &models.Disk{}, "vm_id = ?", first.ID); n != 2 {
			t.Errorf("disk rows of web = %d, want 2 (the removed one deleted)", n)
		}

		// Still missing later: the time it went missing stays.
		h.advance(time.Hour)
		if err := h.s.ReportInventory(ctx, host.ID, []models.VMReport{web}); err != nil {
			t.Fatal(err)
		}
		if got := vmsOfHost(t, h, host.ID)["uuid-db"].MissingSince; got == nil || !got.Equal(vanished) {
			t.Errorf("missing since after another report = %v, want still %v", got, vanished)
		}

		// db comes back.
		if err := h.s.ReportInventory(ctx, host.ID, []models.VMReport{web, db}); err != nil {
			t.Fatal(err)
		}
		back := vmsOfHost(t, h, host.ID)["uuid-db"]
		if back.ID != gone.ID || back.MissingSince != nil || back.PowerState != models.PowerUnknown {
			t.Errorf("returned VM = %+v, want id %s, no MissingSince, power state Unknown", back, gone.ID)
		}
		if n := h.countRows(t, &models.VM{}, ""); n != 2 {
			t.Errorf("VM rows = %d, want 2", n)
		}

		// An empty report marks every VM missing, deletes none.
		if err := h.s.ReportInventory(ctx, host.ID, nil); err != nil {
			t.Fatal(err)
		}
		for _, vm := range vmsOfHost(t, h, host.ID) {
			if vm.MissingSince == nil {
				t.Errorf("VM %s not marked missing after an empty report", vm.Name)
			}
		}
	})
}

func TestReportInventoryKeepsHostsApart(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		site := mustSite(t, h, "Primary")
		hv1 := mustHost(t, h, site.ID, "hv1", models.HostConnected)
		hv2 := mustHost(t, h, site.ID, "hv2", models.HostConnected)
		// The same external id on two hosts names two VMs.
		a := mustVMs(t, h, hv1.ID, "same")
		b := mustVMs(t, h, hv2.ID, "same")
		if len(a) != 1 || len(b) != 1 || a["same"].ID == b["same"].ID || b["same"].HostID != hv2.ID {
			t.Fatalf("hv1 VMs %+v, hv2 VMs %+v: want one VM each, distinct rows", a, b)
		}
		// A report from one host never marks another host's VMs missing.
		if err := h.s.ReportInventory(t.Context(), hv1.ID, nil); err != nil {
			t.Fatal(err)
		}
		if vm, ok := vmsOfHost(t, h, hv2.ID)["same"]; !ok || vm.MissingSince != nil {
			t.Errorf("hv2's VM = %+v (found %v), want it present and not missing after hv1's report", vm, ok)
		}
		if vm := vmsOfHost(t, h, hv1.ID)["same"]; vm.MissingSince == nil {
			t.Errorf("hv1's VM not marked missing by hv1's empty report")
		}
	})
}

func TestListVMsFilters(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		paris, lyon := mustSite(t, h, "Paris"), mustSite(t, h, "Lyon")
		hv1 := mustHost(t, h, paris.ID, "hv1", models.HostConnected)
		hv2 := mustHost(t, h, paris.ID, "hv2", models.HostConnected)
		hv3 := mustHost(t, h, lyon.ID, "hv3", models.HostConnected)
		on1 := mustVMs(t, h, hv1.ID, "a", "b")
		on2 := mustVMs(t, h, hv2.ID, "c")
		on3 := mustVMs(t, h, hv3.ID, "d")
		p := mustPolicy(t, h, "Gold")
		tg := mustDirectoryTarget(t, h, "nas")
		insertProtection(t, h, on1["a"].ID, p.ID, tg.ID, models.HealthNormal)
		insertProtection(t, h, on3["d"].ID, p.ID, tg.ID, models.HealthCritical)

		all := map[string]string{on1["a"].ID: "a", on1["b"].ID: "b", on2["c"].ID: "c", on3["d"].ID: "d"}
		cases := []struct {
			name   string
			filter models.VMFilter
			want   []string
		}{
			{"all", models.VMFilter{}, []string{"a", "b", "c", "d"}},
			{"by site", models.VMFilter{SiteID: paris.ID}, []string{"a", "b", "c"}},
			{"by host", models.VMFilter{HostID: hv1.ID}, []string{"a", "b"}},
			{"unprotected", models.VMFilter{Health: models.StateUnprotected}, []string{"b", "c"}},
			{"normal", models.VMFilter{Health: models.HealthNormal}, []string{"a"}},
			{"critical", models.VMFilter{Health: models.HealthCritical}, []string{"d"}},
			{"warning", models.VMFilter{Health: models.HealthWarning}, nil},
			{"unprotected in Paris", models.VMFilter{SiteID: paris.ID, Health: models.StateUnprotected}, []string{"b", "c"}},
			{"critical in Paris", models.VMFilter{SiteID: paris.ID, Health: models.HealthCritical}, nil},
			{"host of another site", models.VMFilter{SiteID: lyon.ID, HostID: hv1.ID}, nil},
		}
		for _, c := range cases {
			vms, _, err := h.s.ListVMs(ctx, c.filter, models.Page{})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			var got []string
			for _, vm := range vms {
				got = append(got, all[vm.ID])
				if len(vm.Disks) != 1 {
					t.Errorf("%s: VM %s listed with %d disks, want 1", c.name, vm.Name, len(vm.Disks))
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Errorf("%s: VMs = %v, want %v", c.name, got, c.want)
			}
		}

		protected, err := h.s.GetVM(ctx, on3["d"].ID)
		if err != nil {
			t.Fatal(err)
		}
		if protected.ProtectionState != models.StateProtected || protected.Health != models.HealthCritical ||
			!slices.Equal(protected.HealthReasons, []string{"test reason"}) || protected.SiteID != lyon.ID || protected.HostName != "hv3" {
			t.Errorf("protected VM = %+v", protected)
		}
		_, err = h.s.GetVM(ctx, "vm_nope")
		wantNotFound(t, "GetVM", err)
	})
}

func TestListVMsPaginatesWithFilters(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		site := mustSite(t, h, "Paris")
		hv1 := mustHost(t, h, site.ID, "hv1", models.HostConnected)
		var names []string
		for i := range 7 {
			names = append(names, fmt.Sprintf("vm%d", i))
		}
		// Reported one at a time so that creation order is known.
		var want []string
		for i := range names {
			vms := mustVMs(t, h, hv1.ID, names[:i+1]...)
			want = append(want, vms[names[i]].ID)
		}
		sizes, ids := pageThrough(t, 3, func(p models.Page) ([]string, string, error) {
			vms, next, err := h.s.ListVMs(t.Context(), models.VMFilter{SiteID: site.ID, Health: models.StateUnprotected}, p)
			return idsOf(vms, func(v models.VMSummary) string { return v.ID }), next, err
		})
		if !slices.Equal(sizes, []int{3, 3, 1}) || !slices.Equal(ids, want) {
			t.Errorf("pages %v of %v, want [3 3 1] of %v", sizes, ids, want)
		}
	})
}
