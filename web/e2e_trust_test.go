package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// registerHost registers an agent named name in a new site.
func registerHost(t *testing.T, v *e2eVault, site, name string) (stateDir, keyFile string) {
	t.Helper()
	var s struct{ ID string }
	body, _ := json.Marshal(map[string]string{"name": site})
	if status := v.do(http.MethodPost, "/api/v1/sites", body, &s); status != http.StatusCreated {
		t.Fatalf("site %s: %d", site, status)
	}
	var key agentproto.RegistrationKey
	if status := v.do(http.MethodPost, "/api/v1/sites/"+s.ID+"/registration-key", nil, &key); status != http.StatusCreated {
		t.Fatalf("registration key: %d", status)
	}
	return registerWithKey(t, key, name)
}

// registerWithKey runs `lifeboat-agent register` with a registration key
// in a fresh state directory.
func registerWithKey(t *testing.T, key agentproto.RegistrationKey, name string) (stateDir, keyFile string) {
	t.Helper()
	_, agentBin := binaries(t)
	keyFile = filepath.Join(t.TempDir(), "key.json")
	b, _ := json.Marshal(key)
	os.WriteFile(keyFile, b, 0o600)
	stateDir = t.TempDir()
	if out, err := exec.Command(agentBin, "register", "--key-file", keyFile, "--state-dir", stateDir, "--name", name).CombinedOutput(); err != nil {
		t.Fatalf("register %s: %v\n%s", name, err, out)
	}
	return stateDir, keyFile
}

// replaceFile writes a new version of a disk image and renames it into
// place, so a cycle reading the old one is never given a mix of the two.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitForPoint waits up to 80 s (two and a half 30-second cycles) for a
// VM to have more than had points.
func waitForPoint(t *testing.T, what string, had int, count func() int, agent *proc) {
	t.Helper()
	deadline := time.Now().Add(80 * time.Second)
	for count() <= had && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	if count() <= had {
		t.Fatalf("no new point of %s within 80 s:\n%s", what, agent.out.String())
	}
}

type e2ePoints struct {
	Items []struct {
		ID          string
		Consistency string
	}
}

// Two hosts each have a VM called "app" (the same host-local id), both
// protected to one directory target: each VM's points hold its own disks
// only, and deleting one VM's replica data leaves the other's untouched.
func TestTwoHostsWithAVMOfOneNameKeepTheirReplicasApartOnOneDirectoryTarget(t *testing.T) {
	t.Parallel() // mostly waits for 30-second cycles
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	type host struct {
		name, vmID, diskID, disk string
		versions                 [][]byte
		agent                    *proc
	}
	hosts := []*host{{name: "hv-a"}, {name: "hv-b"}}
	for _, h := range hosts {
		stateDir, _ := registerHost(t, v, "Site "+h.name, h.name)
		vmRoot := t.TempDir()
		h.disk = filepath.Join(vmRoot, "app", "disk0.img")
		os.MkdirAll(filepath.Dir(h.disk), 0o755)
		src := make([]byte, 4<<20)
		rand.Read(src[:1<<20])
		replaceFile(t, h.disk, src)
		h.versions = [][]byte{src}
		h.agent = startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	}
	var vms struct {
		Items []struct {
			ID       string
			HostName string `json:"host_name"`
			Disks    []struct{ ID string }
		}
	}
	eventually(t, "both VMs are listed", func() bool {
		v.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 2 && len(vms.Items[0].Disks) == 1 && len(vms.Items[1].Disks) == 1
	}, v.proc, hosts[0].agent, hosts[1].agent)
	for _, item := range vms.Items {
		for _, h := range hosts {
			if h.name == item.HostName {
				h.vmID, h.diskID = item.ID, item.Disks[0].ID
			}
		}
	}
	if hosts[0].vmID == "" || hosts[1].vmID == "" || hosts[0].vmID == hosts[1].vmID {
		t.Fatalf("VMs not told apart by host: %+v", vms.Items)
	}
	var policy, target struct{ ID string }
	v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0}`), &policy)
	targetDir := t.TempDir()
	body, _ := json.Marshal(map[string]string{"name": "nas", "kind": "directory", "path": targetDir})
	v.do(http.MethodPost, "/api/v1/targets", body, &target)
	for _, h := range hosts {
		body, _ = json.Marshal(map[string]string{"policy_id": policy.ID, "target_id": target.ID})
		if status := v.do(http.MethodPost, "/api/v1/vms/"+h.vmID+"/protection", body, nil); status != http.StatusAccepted {
			t.Fatalf("enable protection of %s: %d", h.name, status)
		}
	}
	points := func(h *host) e2ePoints {
		var p e2ePoints
		v.do(http.MethodGet, "/api/v1/vms/"+h.vmID+"/recovery-points", nil, &p)
		return p
	}
	for _, h := range hosts {
		eventually(t, h.name+" is protected", func() bool { return len(points(h).Items) >= 1 }, v.proc, h.agent)
	}
	// Three rounds of writes, each caught by the next cycle of both VMs.
	for round := range 3 {
		seen := map[*host]int{}
		for _, h := range hosts {
			seen[h] = len(points(h).Items)
			src := bytes.Clone(h.versions[len(h.versions)-1])
			rand.Read(src[(round+1)<<20 : (round+1)<<20+65536])
			replaceFile(t, h.disk, src)
			h.versions = append(h.versions, src)
		}
		for _, h := range hosts {
			waitForPoint(t, h.name, seen[h], func() int { return len(points(h).Items) }, h.agent)
		}
	}
	// Every point of each VM reads back as one version of its own source;
	// its newest, as the newest version.
	for _, h := range hosts {
		ps := points(h)
		for i, p := range ps.Items {
			got := readReplicaPoint(t, targetDir, h.vmID, p.ID, h.diskID)
			own := false
			for _, ver := range h.versions {
				own = own || bytes.Equal(got, ver)
			}
			if !own {
				t.Fatalf("point %s of %s on %s is no version of its own source", p.ID, h.vmID, h.name)
			}
			if i == 0 && !bytes.Equal(got, h.versions[len(h.versions)-1]) {
				t.Fatalf("the newest point of %s is not the newest source", h.name)
			}
		}
	}

	// Deleting one VM's replica data leaves the other's untouched.
	a, b := hosts[0], hosts[1]
	var accepted struct {
		JobID string `json:"job_id"`
	}
	if status := v.do(http.MethodDelete, "/api/v1/vms/"+a.vmID+"/protection?replica_data=delete", nil, &accepted); status != http.StatusAccepted {
		t.Fatalf("disable %s with its data: %d", a.name, status)
	}
	var job e2eJob
	eventually(t, "the replica data of "+a.name+" is deleted", func() bool {
		v.do(http.MethodGet, "/api/v1/jobs/"+accepted.JobID, nil, &job)
		return job.State == "Succeeded" || job.State == "Failed"
	}, v.proc, a.agent)
	if job.State != "Succeeded" {
		t.Fatalf("delete job: %+v", job)
	}
	if _, err := os.Stat(filepath.Join(targetDir, a.vmID)); !os.IsNotExist(err) {
		t.Fatalf("the deleted VM's replica is still there: %v", err)
	}
	before := len(points(b).Items)
	for _, p := range points(b).Items {
		got := readReplicaPoint(t, targetDir, b.vmID, p.ID, b.diskID)
		own := false
		for _, ver := range b.versions {
			own = own || bytes.Equal(got, ver)
		}
		if !own {
			t.Fatalf("after the other VM's data was deleted, point %s of %s reads wrong", p.ID, b.name)
		}
	}
	src := bytes.Clone(b.versions[len(b.versions)-1])
	rand.Read(src[:4096])
	replaceFile(t, b.disk, src)
	waitForPoint(t, b.name, before, func() int { return len(points(b).Items) }, b.agent)
	if got := readReplicaPoint(t, targetDir, b.vmID, points(b).Items[0].ID, b.diskID); !bytes.Equal(got, src) {
		t.Fatal("the newest point after the deletion is not the source")
	}
}

// A disk added to a protected VM is replicated and is in every point made
// after it; a removed disk turns the VM Warning, by its name, and the
// points made before still hold it.
func TestADiskAddedToAProtectedVMIsReplicatedAndARemovedOneIsNamed(t *testing.T) {
	t.Parallel() // waits for inventories and 30-second cycles
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registerHost(t, v, "Datacenter", "hv-disks")
	vmRoot := t.TempDir()
	os.MkdirAll(filepath.Join(vmRoot, "db"), 0o755)
	first := make([]byte, 2<<20)
	rand.Read(first[:1<<20])
	replaceFile(t, filepath.Join(vmRoot, "db", "disk0.img"), first)
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)

	type vmJSON struct {
		ID            string
		Disks         []struct{ ID, Path string }
		Health        *string  `json:"health"`
		HealthReasons []string `json:"health_reasons"`
	}
	var vms struct{ Items []vmJSON }
	eventually(t, "the VM is listed", func() bool {
		v.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 1
	}, v.proc, agent)
	vmID, disk0 := vms.Items[0].ID, vms.Items[0].Disks[0].ID
	var policy, target struct{ ID string }
	v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0}`), &policy)
	targetDir := t.TempDir()
	body, _ := json.Marshal(map[string]string{"name": "nas", "kind": "directory", "path": targetDir})
	v.do(http.MethodPost, "/api/v1/targets", body, &target)
	body, _ = json.Marshal(map[string]string{"policy_id": policy.ID, "target_id": target.ID})
	v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/protection", body, nil)
	points := func() e2ePoints {
		var p e2ePoints
		v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &p)
		return p
	}
	eventually(t, "the initial point", func() bool { return len(points().Items) == 1 }, v.proc, agent)
	beforeAdd := points().Items[0].ID

	// A second disk appears; the next inventory reports it (every 30 s).
	second := make([]byte, 3<<20)
	rand.Read(second[1<<20:])
	replaceFile(t, filepath.Join(vmRoot, "db", "disk1.img"), second)
	var vm vmJSON
	deadline := time.Now().Add(80 * time.Second)
	for time.Now().Before(deadline) {
		v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
		if len(vm.Disks) == 2 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(vm.Disks) != 2 {
		t.Fatalf("the added disk was not reported: %+v\n%s", vm, agent.out.String())
	}
	disk1 := vm.Disks[0].ID
	if disk1 == disk0 {
		disk1 = vm.Disks[1].ID
	}
	// Every point made from now on holds both disks.
	had := len(points().Items)
	waitForPoint(t, "the VM with its added disk", had, func() int { return len(points().Items) }, agent)
	// The next may have been scheduled before the inventory: wait for one
	// more, then check every point after the first that holds disk1.
	had = len(points().Items)
	waitForPoint(t, "the VM with its added disk", had, func() int { return len(points().Items) }, agent)
	newest := points().Items[0].ID
	if got := readReplicaPoint(t, targetDir, vmID, newest, disk1); !bytes.Equal(got, second) {
		t.Fatal("the newest point's copy of the added disk differs from it")
	}
	if got := readReplicaPoint(t, targetDir, vmID, newest, disk0); !bytes.Equal(got, first) {
		t.Fatal("the newest point's first disk differs from it")
	}
	sawDisk1 := false
	for i := len(points().Items) - 1; i >= 0; i-- {
		p := points().Items[i]
		r, err := dirtargetPointHas(targetDir, vmID, p.ID, disk1)
		if err != nil {
			t.Fatal(err)
		}
		if sawDisk1 && !r {
			t.Fatalf("point %s, made after one that held the added disk, does not", p.ID)
		}
		sawDisk1 = sawDisk1 || r
	}
	if ok, _ := dirtargetPointHas(targetDir, vmID, beforeAdd, disk1); ok {
		t.Fatal("a point made before the disk was added holds it")
	}

	// The disk is removed: Warning, naming it; earlier points keep it.
	os.Remove(filepath.Join(vmRoot, "db", "disk1.img"))
	deadline = time.Now().Add(100 * time.Second)
	named := false
	for time.Now().Before(deadline) && !named {
		v.do(http.MethodGet, "/api/v1/vms/"+vmID, nil, &vm)
		for _, r := range vm.HealthReasons {
			named = named || (vm.Health != nil && *vm.Health == "Warning" && bytes.Contains([]byte(r), []byte("disk1.img")))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !named {
		t.Fatalf("no Warning naming the removed disk: %+v", vm)
	}
	if got := readReplicaPoint(t, targetDir, vmID, newest, disk1); !bytes.Equal(got, second) {
		t.Fatal("a point made before the disk was removed lost it")
	}
	had = len(points().Items)
	waitForPoint(t, "the VM without its removed disk", had, func() int { return len(points().Items) }, agent)
	if ok, _ := dirtargetPointHas(targetDir, vmID, points().Items[0].ID, disk1); ok {
		t.Fatal("a point made after the disk was removed holds it")
	}
}

// dirtargetPointHas says whether a point on a directory target holds a disk.
func dirtargetPointHas(targetDir, vmID, pointID, diskID string) (bool, error) {
	r, err := dirtarget.OpenExisting(targetDir, vmID)
	if err != nil {
		return false, err
	}
	defer r.Close()
	ps, err := r.Points()
	if err != nil {
		return false, err
	}
	for _, p := range ps {
		if p.ID == pointID {
			return p.Holds(diskID), nil
		}
	}
	return false, os.ErrNotExist
}
