package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/handlers"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/models/storetest"
	"github.com/lifeboat-dr/lifeboat/web/pki"
)

// movableClock is a vault clock the test moves forward, read by the
// vault's handlers while the test moves it.
type movableClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *movableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *movableClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// liveVault is an in-process vault a real agent process registers with,
// on a clock the test controls: back-off of minutes passes at once. No
// scheduler runs by itself; the test calls it.
type liveVault struct {
	*testVault
	clock *movableClock
	raw   *gorm.DB // a second connection, to read tasks
}

func newLiveVault(t *testing.T) *liveVault {
	t.Helper()
	clock := &movableClock{t: time.Now().UTC()}
	key := make([]byte, 32)
	rand.Read(key)
	sealer, _ := models.NewSealer(key)
	dsn := storetest.SQLiteDSN(t)
	store, err := models.Open(context.Background(), models.Options{DSN: dsn, Sealer: sealer, Now: clock.Now, BcryptCost: bcrypt.MinCost, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(nil)
	url := "https://" + srv.Listener.Addr().String()
	h := handlers.New(handlers.Deps{Store: store, Logger: log, Now: clock.Now, SecureCookies: true, CA: agentCA{ca},
		Agent:    handlers.AgentSettings{Heartbeat: time.Second, PollWait: 300 * time.Millisecond, Progress: time.Second, Lease: time.Hour},
		VaultURL: url, CAFingerprint: ca.Fingerprint()})
	srv.Config.Handler = newEcho(h, log)
	cert, err := ca.ServerCertificate(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cert.Certificate = append(cert.Certificate, ca.Cert.Raw) // agents pin the CA in the chain
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool(), Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	raw, err := gorm.Open(sqlite.Open("file:"+dsn+"?_busy_timeout=10000&_foreign_keys=on"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := raw.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return &liveVault{testVault: &testVault{t: t, URL: srv.URL, Store: store, srv: srv, logs: logs}, clock: clock, raw: raw}
}

func (v *liveVault) advance(d time.Duration) { v.clock.Set(v.clock.Now().Add(d)) }

// smallFilesystem mounts a tmpfs of size bytes: a target that fills up.
func smallFilesystem(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("LIFEBOAT_REQUIRE_XFS") != "" {
			t.Fatal("mounting a small filesystem needs root, and LIFEBOAT_REQUIRE_XFS says these tests must run")
		}
		t.Skip("mounting a small filesystem needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill takes every free byte of the filesystem at dir; the returned
// function frees them.
func fill(t *testing.T, dir string) func() {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{1}, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	return func() { os.Remove(path) }
}

// A full target fails cycles and a resync recoverably: each retry waits
// out the back-off, runs on the host, shows its error while it waits, and
// replication goes on by itself once there is space again.
func TestAFullTargetIsRetriedOnTheBackOffVisiblyAndReplicationResumesWhenSpaceIsFreed(t *testing.T) {
	t.Parallel()
	targetDir := smallFilesystem(t, "1100m") // the protection check wants 1 GiB free
	v := newLiveVault(t)
	vm := liveProtectedVM(t, v, 8<<20, targetDir, false)
	vmID, diskID, disk, source, agent := vm.id, vm.diskID, vm.disk, vm.source, vm.agent
	ctx := context.Background()
	protection := func() models.Protection {
		p, err := v.Store.GetProtection(ctx, vmID)
		if err != nil {
			t.Fatal(err)
		}
		return *p
	}
	// attemptsRun counts the runs of a kind of task the agent started.
	attemptsRun := func(kind string) int {
		n := 0
		for _, line := range strings.Split(agent.out.String(), "\n") {
			if strings.Contains(line, `msg="task started"`) && strings.Contains(line, " kind="+kind+" ") {
				n++
			}
		}
		return n
	}
	newPoint := func(had int) {
		t.Helper()
		eventually(t, "a new point", func() bool {
			ps, _, _ := v.Store.ListRecoveryPoints(ctx, vmID, models.Page{Limit: 100})
			return len(ps) > had
		}, agent)
	}
	pointCount := func() int {
		ps, _, _ := v.Store.ListRecoveryPoints(ctx, vmID, models.Page{Limit: 100})
		return len(ps)
	}

	// A cycle on a full target.
	free := fill(t, targetDir)
	rand.Read(source[4<<20 : 6<<20])
	replaceFile(t, disk, source)
	cycles := attemptsRun(agentproto.TaskReplicate)
	v.advance(31 * time.Second)
	if q, err := v.Store.ScheduleReplications(ctx); err != nil || len(q) != 1 {
		t.Fatalf("schedule: %v %v", q, err)
	}
	eventually(t, "the cycle fails with target_full", func() bool { return protection().LastErrorCode == agentproto.CodeTargetFull }, agent)
	p := protection()
	if p.Health != models.HealthWarning || !strings.Contains(p.HealthReasons, "target_full") || p.NextRetryAt == nil {
		t.Fatalf("while the cycle waits to retry: %s %s next %v", p.Health, p.HealthReasons, p.NextRetryAt)
	}
	if n := attemptsRun(agentproto.TaskReplicate) - cycles; n != 1 {
		t.Fatalf("%d runs on the host for one cycle", n)
	}
	// Not before the back-off (1 minute); at it, once; still full: the
	// next back-off is 2 minutes.
	v.clock.Set(p.NextRetryAt.Add(-time.Second))
	if q, _ := v.Store.ScheduleReplications(ctx); len(q) != 0 {
		t.Fatal("retried before the back-off")
	}
	v.clock.Set(*p.NextRetryAt)
	if q, _ := v.Store.ScheduleReplications(ctx); len(q) != 1 {
		t.Fatal("not retried at the back-off")
	}
	eventually(t, "the retry fails too", func() bool { return protection().Failures == 2 }, agent)
	if n := attemptsRun(agentproto.TaskReplicate) - cycles; n != 2 {
		t.Fatalf("%d runs on the host for two attempts", n)
	}
	if q := protection(); !q.NextRetryAt.Equal(p.NextRetryAt.Add(2 * time.Minute)) {
		t.Fatalf("second retry at %v, want 2 minutes after the first", q.NextRetryAt)
	}
	// Space is freed: the next retry succeeds, with the new data.
	free()
	had := pointCount()
	v.clock.Set(*protection().NextRetryAt)
	v.Store.ScheduleReplications(ctx)
	newPoint(had)
	// (The RPO counts on the vault's moved clock and the point was read
	// while the disk had just been written: health may warn of those,
	// never of the fault.)
	if p := protection(); p.Failures != 0 || p.LastErrorCode != "" || strings.Contains(p.HealthReasons, "target_full") {
		t.Fatalf("after space was freed: %s %s", p.Health, p.HealthReasons)
	}
	ps, _, _ := v.Store.ListRecoveryPoints(ctx, vmID, models.Page{Limit: 1})
	if got := readReplicaPoint(t, targetDir, vmID, ps[0].ID, diskID); !bytes.Equal(got, source) {
		t.Fatal("the point after the outage differs from the source")
	}

	// A resync on a full target.
	free = fill(t, targetDir)
	rand.Read(source[:2<<20])
	replaceFile(t, disk, source)
	job, err := v.Store.StartResync(ctx, models.Actor{Username: "alice", UserID: "user_alice"}, vmID)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the resync fails with target_full", func() bool {
		task := resyncTask(t, v, job.ID)
		return task.Failures == 1
	}, agent)
	task := resyncTask(t, v, job.ID)
	got, _ := v.Store.GetJob(ctx, job.ID)
	if got.State != models.JobInProgress || !strings.Contains(got.Steps[0].Message, "target_full") {
		t.Fatalf("the resync job while it waits: %s %q", got.State, got.Steps[0].Message)
	}
	if p := protection(); p.State != models.StateResynchronizing || !strings.Contains(p.HealthReasons, "target_full") {
		t.Fatalf("the VM while its resync waits: %s %s", p.State, p.HealthReasons)
	}
	resyncs := attemptsRun(agentproto.TaskResync)
	// Before its back-off it is not run again; after it, once per attempt.
	v.clock.Set(task.NotBefore.Add(-time.Second))
	time.Sleep(2 * time.Second) // a few polls
	if n := attemptsRun(agentproto.TaskResync); n != resyncs {
		t.Fatal("the resync ran again before its back-off")
	}
	v.clock.Set(*task.NotBefore)
	eventually(t, "the second attempt fails", func() bool { return resyncTask(t, v, job.ID).Failures == 2 }, agent)
	if n := attemptsRun(agentproto.TaskResync) - resyncs; n != 1 {
		t.Fatalf("%d runs on the host for one attempt", n)
	}
	free()
	v.clock.Set(*resyncTask(t, v, job.ID).NotBefore)
	eventually(t, "the resync succeeds once there is space", func() bool {
		got, _ := v.Store.GetJob(ctx, job.ID)
		return got.State == models.JobSucceeded
	}, agent)
	if p := protection(); p.State != models.StateProtected || p.LastErrorCode != "" || strings.Contains(p.HealthReasons, "target_full") {
		t.Fatalf("after the resync: %s %s %s", p.State, p.Health, p.HealthReasons)
	}
	ps, _, _ = v.Store.ListRecoveryPoints(ctx, vmID, models.Page{Limit: 1})
	if got := readReplicaPoint(t, targetDir, vmID, ps[0].ID, diskID); !bytes.Equal(got, source) {
		t.Fatal("the resync's point differs from the source")
	}
	// And cycles go on by themselves.
	had = pointCount()
	v.advance(31 * time.Second)
	v.Store.ScheduleReplications(ctx)
	newPoint(had)
}

// resyncTask is the task of a resync job.
func resyncTask(t *testing.T, v *liveVault, jobID string) models.Task {
	t.Helper()
	var tasks []models.Task
	err := v.raw.Where("job_id = ?", jobID).Find(&tasks).Error
	if err != nil || len(tasks) != 1 {
		t.Fatalf("tasks of job %s: %+v %v", jobID, tasks, err)
	}
	return tasks[0]
}

// liveVM is a VM of a real agent registered with a liveVault, protected
// to a directory target with a 30 s policy.
type liveVM struct {
	id, diskID string
	disk       string // the source disk's path
	source     []byte // what was written to it
	token      string // an API token of a Contributor
	agent      *proc
}

// liveProtectedVM registers a real agent with v, gives it one VM (marked
// running or not) with a disk of size bytes, half of it data, and
// protects it to targetDir.
func liveProtectedVM(t *testing.T, v *liveVault, size int, targetDir string, running bool) liveVM {
	t.Helper()
	_, agentBin := binaries(t)
	siteID, token := newAgentSite(t, v.testVault)
	stateDir, _ := registerWithKey(t, v.registrationKey(token, siteID), "hv-live")
	vmRoot := t.TempDir()
	vm := liveVM{disk: filepath.Join(vmRoot, "app", "disk0.img"), source: make([]byte, size), token: token}
	os.MkdirAll(filepath.Dir(vm.disk), 0o755)
	rand.Read(vm.source[:size/2])
	replaceFile(t, vm.disk, vm.source)
	if running {
		os.WriteFile(filepath.Join(vmRoot, "app", "running"), nil, 0o644)
	}
	vm.agent = startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	var vms struct {
		Items []struct {
			ID    string
			Disks []struct{ ID string }
		}
	}
	eventually(t, "the VM is listed", func() bool {
		v.api(http.MethodGet, "/api/v1/vms", token, nil, &vms)
		return len(vms.Items) == 1
	}, vm.agent)
	vm.id, vm.diskID = vms.Items[0].ID, vms.Items[0].Disks[0].ID
	var policy, target struct{ ID string }
	v.api(http.MethodPost, "/api/v1/policies", token, `{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0}`, &policy)
	v.api(http.MethodPost, "/api/v1/targets", token, map[string]string{"name": "nas", "kind": "directory", "path": targetDir}, &target)
	if status := v.api(http.MethodPost, "/api/v1/vms/"+vm.id+"/protection", token, map[string]string{"policy_id": policy.ID, "target_id": target.ID}, nil); status != http.StatusAccepted {
		t.Fatalf("enable protection: %d", status)
	}
	eventually(t, "protected", func() bool {
		p, err := v.Store.GetProtection(context.Background(), vm.id)
		if err != nil {
			return false
		}
		if p.Health == models.HealthCritical {
			t.Fatalf("enabling protection failed: %s %s", p.LastErrorCode, p.LastErrorMessage)
		}
		return p.State == models.StateProtected
	}, vm.agent)
	return vm
}

// Verify pressed again and again while cycles run and the VM writes: it
// never reads a replica a cycle is writing, so it finds no mismatch, and
// the VM never turns Critical or needs a resync.
func TestVerifyPressedWhileCyclesRunAndTheVMWritesFindsNoFalseMismatch(t *testing.T) {
	t.Parallel()
	v := newLiveVault(t)
	ctx := context.Background()
	vm := liveProtectedVM(t, v, 16<<20, t.TempDir(), true)
	vmID, disk, agent := vm.id, vm.disk, vm.agent
	// The VM writes 4 KiB blocks at random, all along.
	stop := make(chan struct{})
	var wrote sync.WaitGroup
	wrote.Add(1)
	go func() {
		defer wrote.Done()
		f, err := os.OpenFile(disk, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		blk := make([]byte, 4096)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			rand.Read(blk)
			f.WriteAt(blk, int64(n*7919%4096)*4096)
		}
	}()
	defer func() { close(stop); wrote.Wait() }()

	alice := models.Actor{Username: "alice", UserID: "user_alice"}
	var jobs []string
	cycles := 0
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) || len(jobs) < 5 || cycles < 5 {
		if time.Now().After(deadline.Add(60 * time.Second)) {
			t.Fatalf("only %d verifies and %d cycles in 100 s", len(jobs), cycles)
		}
		v.advance(31 * time.Second) // a cycle is due every pass
		if q, err := v.Store.ScheduleReplications(ctx); err != nil {
			t.Fatal(err)
		} else {
			cycles += len(q)
		}
		points, _, _ := v.Store.ListRecoveryPoints(ctx, vmID, models.Page{Limit: 100})
		if len(points) > 0 {
			pick := points[len(jobs)%len(points)] // the newest, then older ones
			job, err := v.Store.StartVerify(ctx, alice, vmID, pick.ID)
			var conflict *models.ConflictError
			switch {
			case err == nil:
				jobs = append(jobs, job.ID)
			case errors.As(err, &conflict) && conflict.Code == "replication_busy":
				// one verify is waiting or running already
			default:
				t.Fatal(err)
			}
		}
		p, _ := v.Store.GetProtection(ctx, vmID)
		if p.Health == models.HealthCritical || p.State != models.StateProtected {
			t.Fatalf("the VM turned %s %s: %s", p.State, p.Health, p.HealthReasons)
		}
		time.Sleep(700 * time.Millisecond)
	}
	for _, id := range jobs {
		eventually(t, "verify job "+id+" ends", func() bool {
			job, _ := v.Store.GetJob(ctx, id)
			return job.State == models.JobSucceeded || job.State == models.JobFailed
		}, agent)
		if job, _ := v.Store.GetJob(ctx, id); job.State != models.JobSucceeded {
			t.Fatalf("verify %s: %s %s %s", id, job.State, job.ErrorCode, job.ErrorMessage)
		}
	}
	if p, _ := v.Store.GetProtection(ctx, vmID); p.State != models.StateProtected || p.Health == models.HealthCritical {
		t.Fatalf("after %d verifies beside %d cycles: %s %s %s", len(jobs), cycles, p.State, p.Health, p.HealthReasons)
	}
	t.Logf("%d verifies beside %d cycles, none found a mismatch", len(jobs), cycles)
}
