package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// The recovery part: how fast a recovery plan brings VMs up on a recovery
// host, beside a plain copy of the same bytes in the same run, and what a
// failback writes after churn on the recovery side, beside what changed.
// A real vault and two real agents (a source host and a recovery host,
// filedisk VMs, no start or stop hooks), driven through the API.
//
//	BENCH_RECOVERY_MIB   each VM's disk, MiB (default 1024)
//	BENCH_RECOVERY_LOGS  a directory to copy the vault's and agents' logs
//	                     to (their task timings), to see where time went
//
// The disks are 75 % random data: of each 16 MiB, the first 12 MiB are
// random and the last 4 MiB a hole, so a copy is neither all holes nor
// all data.
//
// A plan of 4 VMs in one group is failed over (unplanned) to the
// recovery host, timed from the run call to its job seen Succeeded. From
// a directory target the baseline is dd of the 4 source images at once
// with conv=sparse,fsync: the same reads, the same data written (the
// materialize leaves holes for zero blocks too) and synced; dd
// conv=fsync, which writes the zeros too, is printed beside. From Azure
// (Azurite) it is the SDK's DownloadFile of the 4 replica page blobs at
// once to local files, synced.
//
// The failback: one VM failed over (planned), committed and re-protected,
// 1 % of its disk rewritten on the recovery host in 64 KiB writes at
// distinct random offsets, then failed back; the bytes its write-back
// wrote (from its job's last step) beside the bytes changed.

const (
	recoveryVMs      = 4
	recoveryExtent   = 16 << 20
	recoveryData     = 12 << 20 // random data at the start of each extent
	recoveryChurn    = 0.01     // of the failback VM's disk
	recoveryWrite    = 64 << 10 // the churn's writes
	recoveryPoll     = 100 * time.Millisecond
	recoveryFreqSecs = 300 // copy frequency: few cycles run beside the measurements
)

func benchRecovery(dir string) error {
	diskMiB, err := envInt("BENCH_RECOVERY_MIB", 1024, 64)
	if err != nil {
		return err
	}
	size := diskMiB * mib
	root := filepath.Join(dir, "recovery")
	defer os.RemoveAll(root)
	for _, sub := range []string{"bin", "vault", "src-state", "dr-state", "src-vms", "dr-vms", "target"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o755); err != nil {
			return err
		}
	}
	_, azErr := azuritetest.Binary()
	names := []string{"fb"}
	for i := range recoveryVMs {
		names = append(names, fmt.Sprintf("rec%d", i))
		if azErr == nil {
			names = append(names, fmt.Sprintf("az%d", i))
		}
	}
	fmt.Printf("\nRecovery: making %d VMs of %d MiB (75 %% random data: 12 MiB of every 16 MiB, the rest holes) ...\n", len(names), diskMiB)
	vaultBin, agentBin, err := buildBinaries(filepath.Join(root, "bin"))
	if err != nil {
		return err
	}
	var data int64
	for i, name := range names {
		if err := os.MkdirAll(filepath.Join(root, "src-vms", name), 0o755); err != nil {
			return err
		}
		if data, err = makeRecoveryDisk(filepath.Join(root, "src-vms", name, "disk0.img"), size, uint64(100+i)); err != nil {
			return err
		}
	}
	time.Sleep(replica.QuietFor + 500*time.Millisecond) // the first cycles find the files settled

	s, err := startRecoverySite(root, vaultBin, agentBin)
	if err != nil {
		return err
	}
	defer s.stop()
	if err := s.planFromDirectory(root, size, data); err != nil {
		return s.fail(err)
	}
	if azErr != nil {
		fmt.Printf("\nRecovery plan from Azure Blob (Azurite): not measured: %v; run make test-deps\n", azErr)
	} else if err := s.planFromAzure(root, size, data); err != nil {
		return s.fail(err)
	}
	if err := s.failback(size); err != nil {
		return s.fail(err)
	}
	return nil
}

// makeRecoveryDisk writes a sparse disk whose every 16 MiB starts with
// 12 MiB of random data, and returns the bytes of data.
func makeRecoveryDisk(path string, size int64, seed uint64) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return 0, err
	}
	var seedBytes [32]byte
	seedBytes[0], seedBytes[1] = byte(seed), byte(seed>>8)
	rng := rand.NewChaCha8(seedBytes)
	buf := make([]byte, 4*mib)
	var data int64
	for off := int64(0); off < size; off += recoveryExtent {
		for o := off; o < min(off+recoveryData, size); o += int64(len(buf)) {
			b := buf[:min(int64(len(buf)), off+recoveryData-o, size-o)]
			rng.Read(b)
			if _, err := f.WriteAt(b, o); err != nil {
				return 0, err
			}
			data += int64(len(b))
		}
	}
	return data, f.Sync()
}

// recoverySite is a vault, a source host and a recovery host, each with
// its agent, and a policy and a directory target.
type recoverySite struct {
	v                 *vaultProc
	src, dr           *proc
	srcHost, drHost   string
	srcRoot, drRoot   string
	policy, dirTarget string
	az                *azuritetest.Process
	azTarget          string
}

func startRecoverySite(root, vaultBin, agentBin string) (*recoverySite, error) {
	s := &recoverySite{srcRoot: filepath.Join(root, "src-vms"), drRoot: filepath.Join(root, "dr-vms")}
	v, err := startVault(vaultBin, filepath.Join(root, "vault"), filepath.Join(root, "vault.log"))
	if err != nil {
		return nil, err
	}
	s.v = v
	for _, h := range []struct{ site, name, state string }{{"Primary", "hv-src", "src-state"}, {"Recovery", "hv-dr", "dr-state"}} {
		if err := registerHost(v, agentBin, h.site, h.name, filepath.Join(root, h.state), filepath.Join(root, h.state+"-key.json")); err != nil {
			s.stop()
			return nil, err
		}
	}
	// Info logs: each task's timings are in them (kept only on failure).
	if s.src, err = startProc(filepath.Join(root, "src-agent.log"), agentBin, "run", "--state-dir", filepath.Join(root, "src-state"),
		"--vm-root", s.srcRoot); err != nil {
		s.stop()
		return nil, err
	}
	if s.dr, err = startProc(filepath.Join(root, "dr-agent.log"), agentBin, "run", "--state-dir", filepath.Join(root, "dr-state"),
		"--vm-root", s.drRoot); err != nil {
		s.stop()
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for s.srcHost == "" || s.drHost == "" {
		if time.Now().After(deadline) {
			return nil, s.fail(errors.New("the two hosts did not connect within 60 s"))
		}
		time.Sleep(300 * time.Millisecond)
		var hosts struct {
			Items []struct{ ID, Name, State string }
		}
		if err := v.call(http.MethodGet, "/api/v1/hosts", nil, &hosts); err != nil {
			return nil, s.fail(err)
		}
		for _, h := range hosts.Items {
			if h.State == "Connected" && h.Name == "hv-src" {
				s.srcHost = h.ID
			}
			if h.State == "Connected" && h.Name == "hv-dr" {
				s.drHost = h.ID
			}
		}
	}
	var policy, target struct{ ID string }
	if err := v.call(http.MethodPost, "/api/v1/policies", map[string]any{"name": "recovery", "copy_frequency_seconds": recoveryFreqSecs,
		"retention_hours": 24, "app_consistent_frequency_hours": 0}, &policy); err != nil {
		return nil, s.fail(err)
	}
	if err := v.call(http.MethodPost, "/api/v1/targets", map[string]string{"name": "nas", "kind": "directory", "path": filepath.Join(root, "target")}, &target); err != nil {
		return nil, s.fail(err)
	}
	s.policy, s.dirTarget = policy.ID, target.ID
	return s, nil
}

// registerHost makes a site of that name and registers an agent state
// directory with it as host name.
func registerHost(v *vaultProc, agentBin, site, name, stateDir, keyFile string) error {
	var st struct{ ID string }
	if err := v.call(http.MethodPost, "/api/v1/sites", map[string]string{"name": site}, &st); err != nil {
		return err
	}
	key, err := v.callRaw(http.MethodPost, "/api/v1/sites/"+st.ID+"/registration-key", nil)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return err
	}
	if out, err := exec.Command(agentBin, "register", "--key-file", keyFile, "--state-dir", stateDir, "--name", name).CombinedOutput(); err != nil {
		return fmt.Errorf("lifeboat-agent register %s: %v\n%s", name, err, out)
	}
	return nil
}

// keepLogs copies the programs' logs to BENCH_RECOVERY_LOGS, when set,
// to see where a recovery's time went.
func (s *recoverySite) keepLogs() {
	dst := os.Getenv("BENCH_RECOVERY_LOGS")
	if dst == "" {
		return
	}
	_ = os.MkdirAll(dst, 0o755)
	for _, p := range []*proc{s.src, s.dr, s.v.proc} {
		if p != nil && p.logPath != "" {
			if b, err := os.ReadFile(p.logPath); err == nil {
				_ = os.WriteFile(filepath.Join(dst, filepath.Base(p.logPath)), b, 0o644)
			}
		}
	}
}

func (s *recoverySite) stop() {
	s.keepLogs()
	for _, p := range []*proc{s.src, s.dr} {
		if p != nil {
			p.stop()
		}
	}
	if s.v != nil {
		s.v.stop()
	}
	if s.az != nil {
		s.az.Stop()
	}
}

func (s *recoverySite) fail(err error) error {
	out := fmt.Sprintf("%v", err)
	for _, p := range []struct {
		name string
		p    *proc
	}{{"source agent", s.src}, {"recovery agent", s.dr}, {"vault", s.v.proc}} {
		if p.p != nil {
			out += "\n" + p.name + " log:\n" + p.p.tail()
		}
	}
	return errors.New(out)
}

// recJob is the part of the API's job that the bench reads.
type recJob struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	State  string `json:"state"`
	Target *struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"target"`
	StartedAt *time.Time `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
	Steps     []struct {
		Name      string     `json:"name"`
		State     string     `json:"state"`
		Message   string     `json:"message"`
		StartedAt *time.Time `json:"started_at"`
		EndedAt   *time.Time `json:"ended_at"`
	} `json:"steps"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// post sends a recovery call and returns the job it started.
func (s *recoverySite) post(path string, body any) (string, error) {
	var accepted struct {
		JobID string `json:"job_id"`
	}
	if err := s.v.call(http.MethodPost, path, body, &accepted); err != nil {
		return "", err
	}
	return accepted.JobID, nil
}

// wait polls a job until it ends, and returns it with when it was first
// seen ended; a job that did not succeed is an error.
func (s *recoverySite) wait(id string, within time.Duration) (recJob, time.Time, error) {
	deadline := time.Now().Add(within)
	for {
		var j recJob
		if err := s.v.call(http.MethodGet, "/api/v1/jobs/"+id, nil, &j); err != nil {
			return j, time.Time{}, err
		}
		switch j.State {
		case "Succeeded":
			return j, time.Now(), nil
		case "Failed", "Cancelled":
			return j, time.Time{}, fmt.Errorf("job %s (%s) %s: %+v", id, j.Type, j.State, j)
		}
		if time.Now().After(deadline) {
			return j, time.Time{}, fmt.Errorf("job %s (%s) still %s after %s: %+v", id, j.Type, j.State, within, j)
		}
		time.Sleep(recoveryPoll)
	}
}

// runJob posts a call and waits for its job to succeed.
func (s *recoverySite) runJob(path string, body any, within time.Duration) (recJob, error) {
	id, err := s.post(path, body)
	if err != nil {
		return recJob{}, err
	}
	j, _, err := s.wait(id, within)
	return j, err
}

type recVM struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	ProtectionState string `json:"protection_state"`
	BytesSent       *int64 `json:"bytes_sent"`
}

// vmsOn waits until a host lists every VM named, and returns their ids.
func (s *recoverySite) vmsOn(host string, names []string, within time.Duration) ([]string, error) {
	deadline := time.Now().Add(within)
	for {
		var page struct{ Items []recVM }
		if err := s.v.call(http.MethodGet, "/api/v1/vms?limit=500&host_id="+url.QueryEscape(host), nil, &page); err != nil {
			return nil, err
		}
		byName := map[string]string{}
		for _, vm := range page.Items {
			byName[vm.Name] = vm.ID
		}
		ids := make([]string, 0, len(names))
		for _, n := range names {
			if byName[n] != "" {
				ids = append(ids, byName[n])
			}
		}
		if len(ids) == len(names) {
			return ids, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("host lists %d of the VMs %v after %s", len(ids), names, within)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// protect enables protection of the source host's VMs to a target and
// waits for each first point; it returns their ids.
func (s *recoverySite) protect(names []string, target string) ([]string, time.Duration, error) {
	ids, err := s.vmsOn(s.srcHost, names, 60*time.Second)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	var jobs []string
	for i, id := range ids {
		job, err := s.post("/api/v1/vms/"+id+"/protection", map[string]string{"policy_id": s.policy, "target_id": target})
		if err != nil {
			return nil, 0, fmt.Errorf("protect %s: %w", names[i], err)
		}
		jobs = append(jobs, job)
	}
	for _, job := range jobs {
		if _, _, err := s.wait(job, 30*time.Minute); err != nil {
			return nil, 0, err
		}
	}
	return ids, time.Since(start), nil
}

// materializeRE reads a failover's last step: "... 68 KiB (N bytes) written in S s".
var materializeRE = regexp.MustCompile(`\((\d+) bytes\) written in ([0-9.]+) s`)

// planResult is what a plan's run measured.
type planResult struct {
	took       time.Duration // the run call to the plan job seen Succeeded
	vmSpan     time.Duration // first VM job's start to the last one's end
	slowest    float64       // the agent's own seconds of the slowest materialize
	written    int64         // bytes the materializes wrote
	checkedOut int           // VM jobs found
	settle     time.Duration // the last VM job's end to the plan's
}

// runPlan makes a plan of one group of the VMs, drops the page cache and
// runs its unplanned failover to the recovery host.
func (s *recoverySite) runPlan(name string, ids []string) (planResult, error) {
	var plan struct{ ID string }
	if err := s.v.call(http.MethodPost, "/api/v1/recovery-plans", map[string]any{"name": name,
		"groups": []map[string]any{{"name": "all", "vm_ids": ids, "actions": []any{}}}}, &plan); err != nil {
		return planResult{}, err
	}
	dropCaches()
	start := time.Now()
	job, err := s.post("/api/v1/recovery-plans/"+plan.ID+"/run", map[string]string{"operation": "unplanned_failover", "recovery_host_id": s.drHost})
	if err != nil {
		return planResult{}, err
	}
	pj, done, err := s.wait(job, 30*time.Minute)
	if err != nil {
		return planResult{}, err
	}
	res := planResult{took: done.Sub(start)}
	// The VM jobs: the plan's children are the unplanned failovers of these VMs.
	var list struct{ Items []recJob }
	if err := s.v.call(http.MethodGet, "/api/v1/jobs?limit=500&type="+url.QueryEscape("Unplanned failover"), nil, &list); err != nil {
		return res, err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var first, last time.Time
	for _, j := range list.Items {
		if j.Target == nil || !want[j.Target.ID] {
			continue
		}
		var full recJob
		if err := s.v.call(http.MethodGet, "/api/v1/jobs/"+j.ID, nil, &full); err != nil {
			return res, err
		}
		res.checkedOut++
		if full.StartedAt != nil && (first.IsZero() || full.StartedAt.Before(first)) {
			first = *full.StartedAt
		}
		if full.EndedAt != nil && full.EndedAt.After(last) {
			last = *full.EndedAt
		}
		if len(full.Steps) > 0 {
			if m := materializeRE.FindStringSubmatch(full.Steps[len(full.Steps)-1].Message); m != nil {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				sec, _ := strconv.ParseFloat(m[2], 64)
				res.written += n
				res.slowest = max(res.slowest, sec)
			}
		}
	}
	if !first.IsZero() && !last.IsZero() {
		res.vmSpan = last.Sub(first)
		if pj.EndedAt != nil {
			res.settle = pj.EndedAt.Sub(last)
		}
	}
	return res, nil
}

func recoveryHeader(title string) {
	fmt.Println()
	fmt.Println(title)
	fmt.Printf("%-60s %10s %10s %12s  %s\n", "measurement", "seconds", "MiB/s", "ratio", "goal")
}

func recoveryRow(name string, d time.Duration, size int64, ratio float64, goal string) {
	r, rate := "", ""
	if ratio > 0 {
		r = fmt.Sprintf("%.2f ×", ratio)
	}
	if size > 0 && d > 0 {
		rate = fmt.Sprintf("%.0f", float64(size)/mib/d.Seconds())
	}
	fmt.Printf("%-60s %10.2f %10s %12s  %s\n", name, d.Seconds(), rate, r, goal)
}

func (s *recoverySite) printPlan(res planResult, total, data int64, base time.Duration, baseName string) {
	recoveryRow("unplanned_failover plan run, call → Succeeded", res.took, total, base.Seconds()/res.took.Seconds(), "≥ 0.8 × "+baseName)
	recoveryRow(fmt.Sprintf("  its %d VM jobs, first start → last end", res.checkedOut), res.vmSpan, total, base.Seconds()/max(res.vmSpan.Seconds(), 1e-9), "")
	recoveryRow("  the plan's end after its last VM job's", res.settle, 0, 0, "")
	recoveryRow("  slowest materialize, the agent's own time", time.Duration(res.slowest*float64(time.Second)), total/recoveryVMs, 0, "")
	fmt.Printf("%-60s %10s %10s %12s  %s\n", "  bytes the materializes wrote / data in the disks", "",
		fmt.Sprintf("%d MiB", res.written/mib), fmt.Sprintf("%d MiB", data*recoveryVMs/mib), "")
}

// copyAll runs one command per source at once, each given its source and
// a fresh file in dst, and returns when the last ends.
func copyAll(srcs []string, dst string, args func(src, dst string) []string) (time.Duration, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dst)
	dropCaches()
	errs := make([]error, len(srcs))
	var wg sync.WaitGroup
	start := time.Now()
	for i, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := args(src, filepath.Join(dst, fmt.Sprintf("copy%d.img", i)))
			if out, err := exec.Command(a[0], a[1:]...).CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("%s: %v: %s", strings.Join(a, " "), err, out)
			}
		}()
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// planFromDirectory: the plan's recovery from a directory target beside
// dd copies of the same images.
func (s *recoverySite) planFromDirectory(root string, size, data int64) error {
	names := make([]string, recoveryVMs)
	srcs := make([]string, recoveryVMs)
	for i := range names {
		names[i] = fmt.Sprintf("rec%d", i)
		srcs[i] = filepath.Join(s.srcRoot, names[i], "disk0.img")
	}
	ids, protected, err := s.protect(names, s.dirTarget)
	if err != nil {
		return err
	}
	total := size * recoveryVMs
	// dd writes every block with conv=fsync; with conv=sparse it skips the
	// 4 MiB blocks that are all zeros as the materialize skips its zero
	// blocks: the same reads, writes and syncs, the fair baseline.
	sparse, err := copyAll(srcs, filepath.Join(root, "copies"), func(src, dst string) []string {
		return []string{"dd", "if=" + src, "of=" + dst, "bs=4M", "conv=sparse,fsync", "status=none"}
	})
	if err != nil {
		return err
	}
	full, err := copyAll(srcs, filepath.Join(root, "copies"), func(src, dst string) []string {
		return []string{"dd", "if=" + src, "of=" + dst, "bs=4M", "conv=fsync", "status=none"}
	})
	if err != nil {
		return err
	}
	res, err := s.runPlan("directory plan", ids)
	if err != nil {
		return err
	}
	recoveryHeader(fmt.Sprintf("Recovery plan of %d VMs × %d MiB (75 %% data) from a directory target to a recovery host; page cache dropped before each; initial protection took %.1f s",
		recoveryVMs, size/mib, protected.Seconds()))
	recoveryRow("dd of the 4 images at once, conv=sparse,fsync (baseline)", sparse, total, 0, "")
	recoveryRow("dd of the 4 images at once, conv=fsync (baseline)", full, total, 0, "")
	s.printPlan(res, total, data, sparse, "dd sparse")
	recoveryRow("  the plan run against dd conv=fsync", res.took, total, full.Seconds()/res.took.Seconds(), "")
	return nil
}

// planFromAzure: the plan's recovery from an Azure Blob target on
// Azurite beside plain azblob downloads of the same page blobs.
func (s *recoverySite) planFromAzure(root string, size, data int64) error {
	az, err := azuritetest.Launch(filepath.Join(root, "azurite"))
	if err != nil {
		return err
	}
	s.az = az
	var target struct{ ID string }
	if err := s.v.call(http.MethodPost, "/api/v1/targets", map[string]string{"name": "azure", "kind": "azure_blob", "account_url": az.AccountURL(),
		"container": "lifeboat", "account_key": azuritetest.Key}, &target); err != nil {
		return err
	}
	s.azTarget = target.ID
	names := make([]string, recoveryVMs)
	for i := range names {
		names[i] = fmt.Sprintf("az%d", i)
	}
	ids, protected, err := s.protect(names, s.azTarget)
	if err != nil {
		return err
	}
	total := size * recoveryVMs
	download, err := downloadReplicas(az.AccountURL(), ids, filepath.Join(root, "downloads"))
	if err != nil {
		return err
	}
	res, err := s.runPlan("azure plan", ids)
	if err != nil {
		return err
	}
	recoveryHeader(fmt.Sprintf("Recovery plan of %d VMs × %d MiB (75 %% data) from Azure Blob (Azurite, loopback); initial protection took %.1f s",
		recoveryVMs, size/mib, protected.Seconds()))
	recoveryRow("azblob DownloadFile of the 4 page blobs, fsync'd (baseline)", download, total, 0, "")
	s.printPlan(res, total, data, download, "download")
	return nil
}

// downloadReplicas downloads the disk page blob of each VM's container
// with the SDK's DownloadFile (4 MiB blocks, concurrency requests in
// flight each), all at once, to local files it syncs: the plain way to
// get the same bytes out of Azure.
func downloadReplicas(accountURL string, vmIDs []string, dst string) (time.Duration, error) {
	ctx := context.Background()
	cred, err := container.NewSharedKeyCredential(azuritetest.Account, azuritetest.Key)
	if err != nil {
		return 0, err
	}
	var blobs []*blob.Client
	for _, id := range vmIDs {
		c, err := container.NewClientWithSharedKeyCredential(accountURL+"/lifeboat-"+strings.TrimPrefix(id, "vm_"), cred, nil)
		if err != nil {
			return 0, err
		}
		pager := c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr("disks/")})
		found := 0
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return 0, fmt.Errorf("list the replica of %s: %w", id, err)
			}
			for _, it := range page.Segment.BlobItems {
				if strings.HasSuffix(*it.Name, ".vhd") {
					blobs = append(blobs, c.NewBlobClient(*it.Name))
					found++
				}
			}
		}
		if found != 1 {
			return 0, fmt.Errorf("the replica of %s has %d disk blobs, want 1", id, found)
		}
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dst)
	dropCaches()
	errs := make([]error, len(blobs))
	var wg sync.WaitGroup
	start := time.Now()
	for i, b := range blobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Create(filepath.Join(dst, fmt.Sprintf("disk%d.img", i)))
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Close()
			if _, err := b.DownloadFile(ctx, f, &blob.DownloadFileOptions{BlockSize: 4 << 20, Concurrency: concurrency}); err != nil {
				errs[i] = fmt.Errorf("download %s: %w", b.URL(), err)
				return
			}
			errs[i] = f.Sync()
		}()
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// failback: one VM failed over (planned), committed and re-protected;
// 1 % of its disk written on the recovery side; then failed back to the
// original VM, whose disk gets only the blocks that differ.
func (s *recoverySite) failback(size int64) error {
	ids, _, err := s.protect([]string{"fb"}, s.dirTarget)
	if err != nil {
		return err
	}
	id := ids[0]
	over := time.Now()
	overJob, err := s.runJob("/api/v1/vms/"+id+"/failover", map[string]string{"type": "planned", "recovery_host_id": s.drHost}, 30*time.Minute)
	if err != nil {
		return err
	}
	overTook := time.Since(over)
	if _, err := s.runJob("/api/v1/vms/"+id+"/failover/commit", nil, 10*time.Minute); err != nil {
		return err
	}
	rec, err := s.vmsOn(s.drHost, []string{"fb"}, 60*time.Second)
	if err != nil {
		return err
	}
	recovered := rec[0]
	// Re-protect is refused until the recovery host lists the VM as
	// running; retry while it says so.
	var reprotect string
	for deadline := time.Now().Add(60 * time.Second); ; {
		if reprotect, err = s.post("/api/v1/vms/"+id+"/reprotect", nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Second)
	}
	if _, _, err := s.wait(reprotect, 30*time.Minute); err != nil {
		return err
	}
	writes, err := churn64K(filepath.Join(s.drRoot, "fb", "disk0.img"), size, recoveryChurn, 7)
	if err != nil {
		return err
	}
	changed := int64(writes) * recoveryWrite
	dropCaches()
	back := time.Now()
	job, err := s.runJob("/api/v1/vms/"+recovered+"/failover", map[string]string{"type": "planned"}, 30*time.Minute)
	if err != nil {
		return err
	}
	backTook := time.Since(back)
	var wrote int64 = -1
	var wroteSecs float64
	if len(job.Steps) > 0 {
		if m := materializeRE.FindStringSubmatch(job.Steps[len(job.Steps)-1].Message); m != nil {
			wrote, _ = strconv.ParseInt(m[1], 10, 64)
			wroteSecs, _ = strconv.ParseFloat(m[2], 64)
		}
	}
	if wrote < 0 {
		return fmt.Errorf("the failback's last step does not say what it wrote: %+v", job)
	}
	fmt.Println()
	fmt.Printf("Failback of 1 VM × %d MiB after %.0f %% churn on the recovery side: %d random 64 KiB writes at distinct 64 KiB-aligned offsets, directory target\n",
		size/mib, recoveryChurn*100, writes)
	fmt.Printf("%-60s %10s %12s %12s  %s\n", "measurement", "seconds", "MiB", "× changed", "goal")
	fmt.Printf("%-60s %10s %12.2f %12s  %s\n", "changed on the recovery side (baseline)", "", float64(changed)/mib, "1.00", "")
	fmt.Printf("%-60s %10.2f %12.2f %12.3f  %s\n", "failback write-back wrote into the original disk", wroteSecs, float64(wrote)/mib,
		float64(wrote)/float64(changed), "= changed (only the blocks that differ)")
	fmt.Printf("%-60s %10.2f %12s %12s  %s\n", "failback job (planned, call → Succeeded)", backTook.Seconds(), "", "", "")
	stepRows(job)
	fmt.Printf("%-60s %10.2f %12s %12s  %s\n", "the planned failover to the recovery host before it", overTook.Seconds(), "", "", "")
	stepRows(overJob)
	return nil
}

// stepRows prints how long each step of a job took, and the rest of the
// job's time: between its steps.
func stepRows(j recJob) {
	var steps time.Duration
	for _, st := range j.Steps {
		if st.StartedAt == nil || st.EndedAt == nil {
			continue
		}
		steps += st.EndedAt.Sub(*st.StartedAt)
		name := st.Name
		if r := []rune(name); len(r) > 48 {
			name = string(r[:47]) + "…"
		}
		fmt.Printf("%-60s %10.2f\n", "  "+name, st.EndedAt.Sub(*st.StartedAt).Seconds())
	}
	if j.StartedAt != nil && j.EndedAt != nil {
		fmt.Printf("%-60s %10.2f\n", "  (between the steps: the next one's task waiting)", (j.EndedAt.Sub(*j.StartedAt) - steps).Seconds())
	}
}

// churn64K writes random 64 KiB blocks at distinct random 64 KiB-aligned
// offsets over a fraction of the disk (rounded to whole writes), syncs,
// and returns how many it wrote.
func churn64K(path string, size int64, fraction float64, seed uint64) (int, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	slots := size / recoveryWrite
	n := int(float64(slots)*fraction + 0.5)
	rng := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, recoveryWrite)
	for _, slot := range rng.Perm(int(slots))[:n] {
		fillNonZero(rng, buf)
		if _, err := f.WriteAt(buf, int64(slot)*recoveryWrite); err != nil {
			return 0, err
		}
	}
	return n, f.Sync()
}
