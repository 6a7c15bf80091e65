package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// BENCH_ONLY=vault: the control plane under a simulated fleet (fleet.go).
// For each backend (SQLite; PostgreSQL when LIFEBOAT_TEST_POSTGRES or
// BENCH_POSTGRES names a server) and each fleet size, a fresh vault, every
// host registered through the real flow, every VM protected at a 30 s
// copy frequency; then, in steady state, the latency of the agents' calls,
// the vault's CPU and memory, its scheduler's pass, and whether every due
// cycle started on time.
//
// BENCH_VAULT_HOSTS   comma-separated fleet sizes (default 200,1000,2000)
// BENCH_VAULT_VMS     VMs per host (default 10)
// BENCH_VAULT_SECONDS the measured window (default 60)
// BENCH_VAULT_BACKENDS sqlite, postgres or both (default: both when a
//                      server is named)

const (
	vaultBenchFrequency = 30 * time.Second
	vaultGoalP99        = 100 * time.Millisecond
	vaultGoalLate       = 5 * time.Second
)

func benchVault(dir string) error {
	sizes := []int{200, 1000, 2000}
	if v := os.Getenv("BENCH_VAULT_HOSTS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("BENCH_VAULT_HOSTS %q: give comma-separated host counts", v)
			}
			sizes = append(sizes, n)
		}
	}
	perHost64, err := envInt("BENCH_VAULT_VMS", 10, 1)
	if err != nil {
		return err
	}
	seconds, err := envInt("BENCH_VAULT_SECONDS", 60, 10)
	if err != nil {
		return err
	}
	perHost := int(perHost64)
	vaultBin, _, err := buildBinaries(dir)
	if err != nil {
		return err
	}
	backends := []string{"sqlite"}
	pg := os.Getenv("BENCH_POSTGRES")
	if pg == "" {
		pg = os.Getenv("LIFEBOAT_TEST_POSTGRES")
	}
	if pg != "" {
		backends = append(backends, "postgres")
	} else {
		fmt.Println("PostgreSQL: not measured (set BENCH_POSTGRES or LIFEBOAT_TEST_POSTGRES to a postgres:// URL)")
	}
	if only := os.Getenv("BENCH_VAULT_BACKENDS"); only != "" {
		backends = slices.DeleteFunc(backends, func(b string) bool { return !slices.Contains(strings.Split(only, ","), b) })
	}
	fmt.Printf("Control plane: simulated hosts (real registration, mutual TLS, %d VMs each, heartbeat 15 s, a long poll held), every VM protected, copy frequency %s; %d s measured after a warm-up.\n",
		perHost, vaultBenchFrequency, seconds)
	fmt.Printf("Latency: heartbeat, progress and result as the agents saw them; poll as the vault timed it, less the time it held the poll for want of work.\n")
	fmt.Printf("Goal: p99 < %s for every call, and every due cycle started within %s of its time.\n\n", vaultGoalP99, vaultGoalLate)
	fmt.Printf("%-8s %5s %6s | %-11s %-11s %-11s %-11s | %5s %6s | %-11s | %-13s %-13s | %s\n", "backend", "hosts", "VMs",
		"heartbeat", "poll", "progress", "result", "CPU", "RSS", "sched pass", "cycles/s", "late p99/max", "goal")
	fmt.Printf("%-8s %5s %6s | %-11s %-11s %-11s %-11s | %5s %6s | %-11s | %-13s %-13s |\n", "", "", "",
		"p50/p99 ms", "p50/p99 ms", "p50/p99 ms", "p50/p99 ms", "cores", "MiB", "p50/max ms", "started/due", "s")
	for _, backend := range backends {
		for _, n := range sizes {
			dsn := ""
			if backend == "postgres" {
				if dsn, err = freshPostgresSchema(pg, fmt.Sprintf("bench_vault_%d", n)); err != nil {
					return err
				}
			}
			row, err := runFleet(filepath.Join(dir, fmt.Sprintf("%s-%d", backend, n)), vaultBin, dsn, n, perHost, time.Duration(seconds)*time.Second)
			if err != nil {
				return fmt.Errorf("%s, %d hosts: %w", backend, n, err)
			}
			fmt.Printf("%-8s %5d %6d | %s\n", backend, n, n*perHost, row)
		}
	}
	return nil
}

// freshPostgresSchema makes an empty schema on the server and returns a
// URL whose connections use it.
func freshPostgresSchema(base, schema string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", fmt.Errorf("PostgreSQL %s: %w", base, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return "", err
	}
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema, nil
}

// runFleet measures one vault under n simulated hosts and returns its
// table row.
func runFleet(dir, vaultBin, dsn string, n, perHost int, window time.Duration) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var extra []string
	if dsn != "" {
		extra = append(extra, "--db", dsn)
	}
	v, err := startVault(vaultBin, filepath.Join(dir, "vault"), filepath.Join(dir, "vault.log"), extra...)
	if err != nil {
		return "", err
	}
	defer v.stop()
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("%w\nthe vault's errors:\n%s", err, strings.Join(v.logLines(10, "ERROR"), "\n"))
	}

	var site, policy, target struct{ ID string }
	if err := v.call(http.MethodPost, "/api/v1/sites", map[string]string{"name": "Fleet"}, &site); err != nil {
		return fail(err)
	}
	if err := v.call(http.MethodPost, "/api/v1/policies", map[string]any{"name": "fleet", "copy_frequency_seconds": int(vaultBenchFrequency.Seconds()),
		"retention_hours": 1, "app_consistent_frequency_hours": 0}, &policy); err != nil {
		return fail(err)
	}
	if err := v.call(http.MethodPost, "/api/v1/targets", map[string]any{"name": "fleet", "kind": "directory", "path": filepath.Join(dir, "replicas"),
		"create_path": true}, &target); err != nil {
		return fail(err)
	}

	f := &fleet{frequency: vaultBenchFrequency}
	var hostsMu sync.Mutex
	start := time.Now()
	if err := parallel(n, 16, func(i int) error {
		raw, err := v.callRaw(http.MethodPost, "/api/v1/sites/"+site.ID+"/registration-key", nil)
		if err != nil {
			return err
		}
		var key agentproto.RegistrationKey
		if err := json.Unmarshal(raw, &key); err != nil {
			return err
		}
		h, err := registerSimHost(context.Background(), f, key, fmt.Sprintf("host%04d", i), perHost)
		if err != nil {
			return err
		}
		hostsMu.Lock()
		f.hosts = append(f.hosts, h)
		hostsMu.Unlock()
		return nil
	}); err != nil {
		return fail(err)
	}
	registered := time.Since(start)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var running sync.WaitGroup
	for _, h := range f.hosts {
		running.Add(1)
		go func() { defer running.Done(); h.run(ctx) }()
	}
	defer running.Wait()
	defer cancel()

	vms, err := waitFleetVMs(v, n*perHost, 5*time.Minute)
	if err != nil {
		return fail(fmt.Errorf("%w (%d agent call errors, the last: %v)", err, f.errs.Load(), f.lastErr.Load()))
	}
	start = time.Now()
	if err := parallel(len(vms), 16, func(i int) error {
		return v.call(http.MethodPost, "/api/v1/vms/"+vms[i].ID+"/protection", map[string]string{"policy_id": policy.ID, "target_id": target.ID}, nil)
	}); err != nil {
		return fail(err)
	}
	if err := waitProtected(v, n*perHost, 15*time.Minute); err != nil {
		return fail(err)
	}
	protected := time.Since(start)
	fmt.Fprintf(os.Stderr, "  %d hosts registered in %s; %d VMs protected (initial copies done) in %s\n", n, registered.Round(time.Second), len(vms), protected.Round(time.Second))
	if e := f.errs.Load(); e > 0 {
		fmt.Fprintf(os.Stderr, "  %d agent call errors during set-up (last: %v)\n", e, f.lastErr.Load())
	}

	// Warm up: every VM through a scheduled cycle at least once.
	time.Sleep(vaultBenchFrequency + 5*time.Second)
	if os.Getenv("BENCH_DEBUG") != "" {
		raw, _ := v.callRaw(http.MethodGet, "/api/v1/vms/"+vms[0].ID, nil)
		fmt.Fprintf(os.Stderr, "DEBUG %s\n", raw)
	}
	before, err := v.scrape()
	if err != nil {
		return fail(err)
	}
	cpu0, err := procCPU(v.cmd.Process.Pid)
	if err != nil {
		return fail(err)
	}
	errs0 := f.errs.Load()
	f.calls.start()
	f.cyclesMu.Lock()
	f.cycles, f.lateness = 0, nil
	f.cyclesMu.Unlock()
	f.measuring.Store(true)
	t0 := time.Now()
	time.Sleep(window)
	f.measuring.Store(false)
	elapsed := time.Since(t0)
	calls := f.calls.stop()
	cpu1, err := procCPU(v.cmd.Process.Pid)
	if err != nil {
		return fail(err)
	}
	rss, err := procRSS(v.cmd.Process.Pid)
	if err != nil {
		return fail(err)
	}
	after, err := v.scrape()
	if err != nil {
		return fail(err)
	}
	f.cyclesMu.Lock()
	cycles, late := f.cycles, slices.Clone(f.lateness)
	f.cyclesMu.Unlock()
	if e := f.errs.Load() - errs0; e > 0 {
		fmt.Fprintf(os.Stderr, "  %d agent call errors while measuring (last: %v)\n", e, f.lastErr.Load())
	}

	ok := true
	col := func(d []time.Duration) string {
		slices.Sort(d)
		p99 := percentile(d, 0.99)
		if p99 >= vaultGoalP99 || len(d) == 0 {
			ok = false
		}
		return fmt.Sprintf("%4.1f/%-6.1f", ms(percentile(d, 0.5)), ms(p99))
	}
	pollP50, pollP99 := histQuantile(before, after, "lifeboat_http_request_duration_seconds", "route", agentproto.PathPoll, 0.5),
		histQuantile(before, after, "lifeboat_http_request_duration_seconds", "route", agentproto.PathPoll, 0.99)
	if math.IsNaN(pollP99) || pollP99 >= vaultGoalP99.Seconds() {
		ok = false
	}
	passP50 := histQuantile(before, after, "lifeboat_scheduler_pass_seconds", "", "", 0.5)
	passMax := histQuantile(before, after, "lifeboat_scheduler_pass_seconds", "", "", 1)
	due := float64(n*perHost) / vaultBenchFrequency.Seconds()
	rate := float64(cycles) / elapsed.Seconds()
	slices.Sort(late)
	lateP99, lateMax := percentile(late, 0.99), percentile(late, 1)
	// Only started cycles have a lateness: a VM never served would not
	// show there. If each cycle starts at most vaultGoalLate after its
	// time (30 s after the last one ended), the fleet starts at least
	// this many a second.
	if least := float64(n*perHost) / (vaultBenchFrequency + vaultGoalLate).Seconds(); lateMax > vaultGoalLate || rate < least {
		ok = false
	}
	goal := "met"
	if !ok {
		goal = "NOT met"
	}
	warnings(v)
	return fmt.Sprintf("%s %s %s %s | %5.2f %6.0f | %4.0f/%-6.0f | %5.0f/%-7.0f %5.1f/%-7.1f | %s",
		col(calls["heartbeat"]), fmt.Sprintf("%4.1f/%-6.1f", pollP50*1000, pollP99*1000), col(calls["progress"]), col(calls["result"]),
		(cpu1-cpu0)/elapsed.Seconds(), float64(rss)/(1<<20), passP50*1000, passMax*1000, rate, due,
		lateP99.Seconds(), lateMax.Seconds(), goal), nil
}

// logLines are the last n lines the vault logged at one of levels.
func (v *vaultProc) logLines(n int, levels ...string) []string {
	b, _ := os.ReadFile(v.logPath)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if slices.ContainsFunc(levels, func(level string) bool { return strings.Contains(l, "level="+level) }) {
			lines = append(lines, l)
		}
	}
	return lines[max(0, len(lines)-n):]
}

// warnings shows the last warnings and errors the vault logged, which may
// explain a goal not met.
func warnings(v *vaultProc) {
	if lines := v.logLines(5, "WARN", "ERROR"); len(lines) > 0 {
		fmt.Fprintln(os.Stderr, "  the vault logged warnings or errors; the last:")
		for _, l := range lines {
			fmt.Fprintln(os.Stderr, "   ", l)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// parallel runs fn(0..n-1) on workers goroutines; the first error stops
// it. fn runs concurrently: what it shares, it locks.
func parallel(n, workers int, fn func(i int) error) error {
	var mu sync.Mutex
	var first error
	next := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if first != nil || next >= n {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				err := fn(i)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// waitFleetVMs waits until the vault lists want VMs.
func waitFleetVMs(v *vaultProc, want int, within time.Duration) ([]benchVM, error) {
	deadline := time.Now().Add(within)
	for {
		vms, err := v.listVMs()
		if err != nil {
			return nil, err
		}
		if len(vms) >= want {
			return vms, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d VMs reported after %s", len(vms), want, within)
		}
		time.Sleep(2 * time.Second)
	}
}

// waitProtected waits until want VMs are Protected (their initial copy done).
func waitProtected(v *vaultProc, want int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		vms, err := v.listVMs()
		if err != nil {
			return err
		}
		got := 0
		for _, vm := range vms {
			if vm.ProtectionState == "Protected" {
				got++
			}
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d VMs protected after %s", got, want, within)
		}
		time.Sleep(3 * time.Second)
	}
}

// scrape reads the vault's /metrics (loopback: no token).
func (v *vaultProc) scrape() (map[string]*dto.MetricFamily, error) {
	resp, err := v.client.Get(v.url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(&buf)
}

// histQuantile estimates quantile q of what a histogram counted between two
// scrapes (linear inside a bucket, as Prometheus's histogram_quantile), for
// the series whose label has value (any series when label is empty); q = 1
// gives the upper bound of the highest bucket reached. NaN: nothing counted.
func histQuantile(before, after map[string]*dto.MetricFamily, name, label, value string, q float64) float64 {
	type bucket struct {
		le    float64
		count float64
	}
	sum := func(fams map[string]*dto.MetricFamily) map[float64]float64 {
		out := map[float64]float64{}
		fam := fams[name]
		if fam == nil {
			return out
		}
		for _, m := range fam.Metric {
			if label != "" && !hasLabel(m, label, value) {
				continue
			}
			inf := false
			for _, b := range m.GetHistogram().GetBucket() {
				out[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				inf = inf || math.IsInf(b.GetUpperBound(), 1)
			}
			if !inf { // the text format lists the +Inf bucket; a parser may not
				out[math.Inf(1)] += float64(m.GetHistogram().GetSampleCount())
			}
		}
		return out
	}
	b0, b1 := sum(before), sum(after)
	var bs []bucket
	for le, c := range b1 {
		bs = append(bs, bucket{le, c - b0[le]})
	}
	slices.SortFunc(bs, func(a, b bucket) int {
		switch {
		case a.le < b.le:
			return -1
		case a.le > b.le:
			return 1
		}
		return 0
	})
	if len(bs) == 0 || bs[len(bs)-1].count == 0 {
		return math.NaN()
	}
	total := bs[len(bs)-1].count
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range bs {
		if b.count >= rank && b.count > below {
			if q == 1 || math.IsInf(b.le, 1) {
				if math.IsInf(b.le, 1) {
					return lower
				}
				return b.le
			}
			return lower + (b.le-lower)*(rank-below)/(b.count-below)
		}
		lower, below = b.le, b.count
	}
	return lower
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

// procCPU is the CPU time, in seconds, process pid has used.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command's closing parenthesis; utime and stime are
	// the 14th and 15th fields of the line, in clock ticks (100 a second).
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	u, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (u + st) / 100, nil
}

// procRSS is the resident memory of process pid, in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}
