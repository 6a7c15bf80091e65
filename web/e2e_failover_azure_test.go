package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
)

// newAzureRecoverySite is newRecoverySite with an Azure Blob target on a
// fresh Azurite as the one its VMs are protected to (the directory target
// newRecoverySite makes stays unused). It skips the test without Azurite,
// or fails it when LIFEBOAT_REQUIRE_AZURITE is set.
func newAzureRecoverySite(t *testing.T, vms map[string][]byte, running ...string) (*recoverySite, *azuritetest.Server) {
	t.Helper()
	az := azuritetest.Start(t) // first: skip before starting anything else
	s := newRecoverySite(t, vms, running...)
	var target struct{ ID string }
	body, _ := json.Marshal(map[string]string{"name": "azure", "kind": "azure_blob", "account_url": az.AccountURL(),
		"container": "lifeboat", "account_key": azuritetest.Key})
	if status := s.v.do(http.MethodPost, "/api/v1/targets", body, &target); status != http.StatusCreated {
		t.Fatalf("create the Azure target: %d", status)
	}
	s.targetID = target.ID
	return s, az
}

// azureReplica opens the VM's container on Azurite with the account key,
// to read its points back.
func azureReplica(t *testing.T, az *azuritetest.Server, vmID string) *blobtarget.Replica {
	t.Helper()
	store, err := blobtarget.Open(t.Context(), vmID, &azuritetest.KeyCredentials{AccountURL: az.AccountURL(),
		Container: "lifeboat-" + strings.TrimPrefix(vmID, "vm_"), Key: azuritetest.Key}, blobtarget.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// The recovery circle on an Azure Blob target with real agents: a test
// failover on the recovery host makes a copy equal to the point in the
// container and to the source, and its cleanup removes it; a planned
// failover shuts the source down and the recovered VM has the last write;
// commit keeps only the point the VM runs from, still equal to the source.
func TestRecoveryOnAnAzureBlobTargetWithRealAgents(t *testing.T) {
	t.Parallel() // waits for cycles and jobs on two agents
	app := make([]byte, 8<<20)
	rand.Read(app[1<<20 : 3<<20])
	s, az := newAzureRecoverySite(t, map[string][]byte{"app": app}, "app")
	vm := s.protect(t, "app")
	store := azureReplica(t, az, vm.ID)
	first := s.points(t, vm.ID).Items[0].ID

	// Test failover to the recovery host: app-test there, equal to the
	// point read from Azurite and to the source; the source keeps running.
	job := s.run(t, "/api/v1/vms/"+vm.ID+"/test-failover", map[string]string{"recovery_point": "latest_processed", "recovery_host_id": s.drHostID})
	if job.State != "Succeeded" {
		t.Fatalf("test failover: %+v\n%s", job, s.dr.out.String())
	}
	got := fileBytes(t, filepath.Join(s.drRoot, "app-test", "disk0.img"))
	if !bytes.Equal(got, readAzurePoint(t, store, first, vm.DiskID)) {
		t.Fatal("the test VM's disk differs from the recovery point in Azure")
	}
	if !bytes.Equal(got, app) {
		t.Fatal("the test VM's disk differs from the source")
	}
	if _, err := os.Stat(filepath.Join(s.srcRoot, "app", "running")); err != nil {
		t.Fatal("a test failover stopped the source VM")
	}
	if st := s.vm(t, vm.ID); st.Recovery.TestFailover == nil || st.Recovery.TestFailover.PointID != first {
		t.Fatalf("after the test failover: %+v", st)
	}
	// Cleanup: the test VM is gone.
	if job := s.run(t, "/api/v1/vms/"+vm.ID+"/test-failover/cleanup", map[string]string{"notes": "booted from Azure"}); job.State != "Succeeded" {
		t.Fatalf("cleanup: %+v\n%s", job, s.dr.out.String())
	}
	if _, err := os.Stat(filepath.Join(s.drRoot, "app-test")); !os.IsNotExist(err) {
		t.Fatalf("the test VM is still there: %v", err)
	}

	// A write, then a planned failover: the source is shut down, the final
	// cycle sends the write to Azure, and the recovered VM has it.
	copy(app[5<<20:], bytes.Repeat([]byte{0xCD}, 4096))
	replaceFile(t, filepath.Join(s.srcRoot, "app", "disk0.img"), app)
	job = s.run(t, "/api/v1/vms/"+vm.ID+"/failover", map[string]string{"type": "planned", "recovery_host_id": s.drHostID})
	if job.State != "Succeeded" {
		t.Fatalf("planned failover: %+v\n%s%s", job, s.src.out.String(), s.dr.out.String())
	}
	if _, err := os.Stat(filepath.Join(s.srcRoot, "app", "running")); !os.IsNotExist(err) {
		t.Fatal("the source VM still runs after a planned failover")
	}
	if got := fileBytes(t, filepath.Join(s.drRoot, "app", "disk0.img")); !bytes.Equal(got, app) {
		t.Fatal("the recovered VM lacks the last write before the shutdown")
	}
	st := s.vm(t, vm.ID)
	if st.ProtectionState != "FailedOver" || st.Recovery.Failover == nil || st.Recovery.Failover.Kind != "planned" {
		t.Fatalf("after the planned failover: %+v", st)
	}

	// Commit keeps only the point the VM runs from; in Azure it is still
	// equal to the source.
	if job := s.run(t, "/api/v1/vms/"+vm.ID+"/failover/commit", nil); job.State != "Succeeded" {
		t.Fatalf("commit: %+v\n%s", job, s.dr.out.String())
	}
	if pts := s.points(t, vm.ID); len(pts.Items) != 1 || pts.Items[0].ID != st.Recovery.Failover.PointID {
		t.Fatalf("points after commit: %+v, the VM runs from %s", pts, st.Recovery.Failover.PointID)
	}
	if got := readAzurePoint(t, azureReplica(t, az, vm.ID), st.Recovery.Failover.PointID, vm.DiskID); !bytes.Equal(got, app) {
		t.Fatal("the committed point in Azure differs from the source")
	}
	// Re-protect from the recovery host into the same container, with a
	// write made there: only what changed travels; then fail back into the
	// original VM, commit, and re-protect in the original direction.
	recovered := filepath.Join(s.drRoot, "app", "disk0.img")
	onRecovery := fileBytes(t, recovered)
	copy(onRecovery[6<<20:], bytes.Repeat([]byte{0x42}, 64<<10))
	replaceFile(t, recovered, onRecovery)
	sentBefore := s.bytesSent(t, vm.ID)
	recoveredID := s.vmOn(t, s.drHostID, "app")
	if job := s.run(t, "/api/v1/vms/"+vm.ID+"/reprotect", nil); job.State != "Succeeded" {
		t.Fatalf("re-protect: %+v\n%s", job, s.dr.out.String())
	}
	if sent := s.bytesSent(t, recoveredID) - sentBefore; sent < 64<<10 || sent > 128<<10 {
		t.Fatalf("re-protect to Azure sent %d bytes for 64 KiB changed", sent)
	}
	job = s.run(t, "/api/v1/vms/"+recoveredID+"/failover", map[string]string{"type": "planned"})
	if job.State != "Succeeded" {
		t.Fatalf("failback: %+v\n%s%s", job, s.src.out.String(), s.dr.out.String())
	}
	if got := fileBytes(t, filepath.Join(s.srcRoot, "app", "disk0.img")); !bytes.Equal(got, onRecovery) {
		t.Fatal("the original VM lacks the write made on the recovery side")
	}
	if msg := job.Steps[len(job.Steps)-1].Message; !strings.Contains(msg, fmt.Sprintf("(%d bytes) written", 64<<10)) {
		t.Fatalf("failback wrote other than the 64 KiB that differ: %q", msg)
	}
	if job := s.run(t, "/api/v1/vms/"+recoveredID+"/failover/commit", nil); job.State != "Succeeded" {
		t.Fatalf("commit of the failback: %+v", job)
	}
	if job := s.run(t, "/api/v1/vms/"+recoveredID+"/reprotect", nil); job.State != "Succeeded" {
		t.Fatalf("re-protect in the original direction: %+v\n%s", job, s.src.out.String())
	}
	if st := s.vm(t, vm.ID); st.ProtectionState != "Protected" {
		t.Fatalf("the original VM is %s after re-protect", st.ProtectionState)
	}

	// Nothing went to the directory target newRecoverySite made.
	if entries, err := os.ReadDir(s.dir); err != nil || len(entries) != 0 {
		t.Fatalf("the unused directory target holds %d entries (%v)", len(entries), err)
	}
}
