package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lifeboat-dr/lifeboat/handlers"
	"github.com/lifeboat-dr/lifeboat/models"
)

// parseMetrics reads a scrape with the Prometheus text parser.
func parseMetrics(t *testing.T, body io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(body)
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return families
}

// metricValue is the gauge or counter of family whose labels include
// want; ok is false when there is none.
func metricValue(families map[string]*dto.MetricFamily, family string, want map[string]string) (float64, bool) {
	f := families[family]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

func TestMetricsAreForLoopbackClientsByDefaultAndOtherwiseNeedTheScrapeToken(t *testing.T) {
	tv := newTestVault(t, "")
	const token = "scrape-token-0123456789abcdef"
	sum := sha256.Sum256([]byte(token))
	cases := []struct {
		name   string
		access handlers.MetricsAccess
		remote string
		bearer string
		want   int
	}{
		{"loopback by default: another machine is refused", handlers.MetricsAccess{}, "192.0.2.7:40000", "", http.StatusForbidden},
		{"loopback by default: even with a token", handlers.MetricsAccess{Mode: handlers.MetricsLoopback}, "192.0.2.7:40000", token, http.StatusForbidden},
		{"loopback by default: IPv4 loopback is served", handlers.MetricsAccess{}, "127.0.0.1:40000", "", http.StatusOK},
		{"loopback by default: IPv6 loopback is served", handlers.MetricsAccess{}, "[::1]:40000", "", http.StatusOK},
		{"token: none sent, even from loopback", handlers.MetricsAccess{Mode: handlers.MetricsToken, TokenSHA256: sum[:]}, "127.0.0.1:40000", "", http.StatusUnauthorized},
		{"token: a wrong one", handlers.MetricsAccess{Mode: handlers.MetricsToken, TokenSHA256: sum[:]}, "192.0.2.7:40000", token + "x", http.StatusUnauthorized},
		{"token: the right one from anywhere", handlers.MetricsAccess{Mode: handlers.MetricsToken, TokenSHA256: sum[:]}, "192.0.2.7:40000", token, http.StatusOK},
		{"off", handlers.MetricsAccess{Mode: handlers.MetricsOff}, "127.0.0.1:40000", "", http.StatusNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			logs := &lockedBuffer{}
			log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			e := newEcho(handlers.New(handlers.Deps{Store: tv.Store, Logger: log, Metrics: c.access}), log)
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.RemoteAddr = c.remote
			if c.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+c.bearer)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.want, rec.Body)
			}
			if c.want == http.StatusOK {
				families := parseMetrics(t, rec.Body)
				if up, ok := metricValue(families, "lifeboat_database_up", nil); !ok || up != 1 {
					t.Fatalf("lifeboat_database_up %v %v", up, ok)
				}
			} else if !strings.Contains(rec.Body.String(), "--metrics") {
				t.Fatalf("a refusal must say which setting decides: %q", rec.Body)
			}
			if strings.Contains(logs.String(), token) {
				t.Fatal("the scrape token is in the log")
			}
		})
	}
}

func TestTheMetricsSettingsAreCheckedAtStart(t *testing.T) {
	sum := sha256.Sum256([]byte("t"))
	hash := hex.EncodeToString(sum[:])
	for _, c := range []struct {
		name string
		args []string
		want string // in the error; "" for none
	}{
		{"default", nil, ""},
		{"token with its hash", []string{"--metrics", "token", "--metrics-token-sha256", hash}, ""},
		{"token without a hash", []string{"--metrics", "token"}, "--metrics-token-sha256"},
		{"a hash that is not one", []string{"--metrics", "token", "--metrics-token-sha256", "abc"}, "SHA-256"},
		{"a hash without token", []string{"--metrics-token-sha256", hash}, "only used with --metrics=token"},
		{"an unknown mode", []string{"--metrics", "public"}, "not loopback, token or off"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--data-dir", t.TempDir()}, c.args...)
			cfg, err := parseConfig(args, func(string) string { return "" }, io.Discard)
			switch {
			case c.want == "" && err != nil:
				t.Fatal(err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one with %q", err, c.want)
			case c.want == "" && cfg.Metrics == "":
				t.Fatal("no metrics mode")
			}
		})
	}
}

// scrape fetches /metrics from the vault process (on loopback, so the
// default rule lets it through) and parses it.
func (v *e2eVault) scrape() map[string]*dto.MetricFamily {
	v.t.Helper()
	resp, err := v.client.Get(v.url() + "/metrics")
	if err != nil {
		v.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		v.t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	return parseMetrics(v.t, resp.Body)
}

func TestTheRPOGaugeOfAProtectedVMMovesAfterACycle(t *testing.T) {
	t.Parallel() // mostly waits for a 30-second cycle
	v := newE2EVault(t)
	_, agentBin := binaries(t)
	stateDir, _ := registeredAgent(t, v)
	vmRoot := t.TempDir()
	disk := filepath.Join(vmRoot, "app", "disk0.img")
	os.MkdirAll(filepath.Dir(disk), 0o755)
	os.WriteFile(disk, make([]byte, 1<<20), 0o644)
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	var vms struct{ Items []struct{ ID, Name string } }
	eventually(t, "the VM is listed", func() bool {
		v.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 1
	}, v.proc, agent)
	vmID, vmName := vms.Items[0].ID, vms.Items[0].Name
	protectOnDirectory(t, v, vmID, `{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0,`+closedResyncWindow()+`}`,
		filepath.Join(t.TempDir(), "nas"), agent)
	vm := map[string]string{"vm_id": vmID, "vm": vmName}
	first := v.scrape()
	scrapedAt := time.Now()
	rpo1, ok := metricValue(first, "lifeboat_vm_rpo_seconds", vm)
	if !ok {
		t.Fatalf("no RPO gauge for the protected VM")
	}
	if freq, _ := metricValue(first, "lifeboat_vm_copy_frequency_seconds", vm); freq != 30 {
		t.Fatalf("copy frequency gauge %v, want the policy's 30", freq)
	}
	if up, _ := metricValue(first, "lifeboat_host_connected", map[string]string{"host": "hv-e2e"}); up != 1 {
		t.Fatalf("the agent's host is not connected in the metrics: %v", up)
	}
	if n, _ := metricValue(first, "lifeboat_jobs", map[string]string{"state": "Succeeded"}); n < 1 {
		t.Fatalf("jobs Succeeded: %v", n)
	}
	// No alert is open, and the alert gauge says 0 rather than nothing.
	if n, ok := metricValue(first, "lifeboat_alerts", map[string]string{"state": "Active", "severity": "Critical"}); !ok || n != 0 {
		t.Fatalf("active critical alerts: %v (present %v)", n, ok)
	}
	for _, m := range first["lifeboat_http_request_duration_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" && strings.Contains(l.GetValue(), vmID) {
				t.Fatalf("a raw URL as a route label: %s", l.GetValue())
			}
		}
	}
	// The newest point, as the gauge dates it.
	point1 := scrapedAt.Add(-time.Duration(rpo1 * float64(time.Second)))

	var points struct{ Items []struct{ ID string } }
	eventuallyWithin(t, 60*time.Second, "the next scheduled cycle makes a point", func() bool {
		v.do(http.MethodGet, "/api/v1/vms/"+vmID+"/recovery-points", nil, &points)
		return len(points.Items) >= 2
	}, v.proc, agent)
	second := v.scrape()
	rpo2, ok := metricValue(second, "lifeboat_vm_rpo_seconds", vm)
	point2 := time.Now().Add(-time.Duration(rpo2 * float64(time.Second)))
	// Had the gauge not moved with the cycle, it would date the same point;
	// the cycle came at least the copy frequency (less a scheduler pass)
	// after the first point.
	if !ok || point2.Sub(point1) < 20*time.Second {
		t.Fatalf("after a cycle the RPO gauge %v (was %v) dates the newest point %v after the one before, want a newer point", rpo2, rpo1, point2.Sub(point1))
	}
	if _, ok := metricValue(second, "lifeboat_vm_last_cycle_duration_seconds", vm); !ok {
		t.Fatal("no last cycle duration gauge")
	}
	if _, ok := metricValue(second, "lifeboat_task_lease_expiries_total", nil); !ok {
		t.Fatal("no lease expiry counter")
	}
}

func TestRequestDurationsAreLabelledByTheRoutePatternNeverTheURL(t *testing.T) {
	tv := newTestVault(t, "")
	token := tv.apiToken(models.RoleReader)
	for _, id := range []string{"vm_one", "vm_two", "vm_three"} {
		if status := tv.api(http.MethodGet, "/api/v1/vms/"+id, token, nil, nil); status != http.StatusNotFound {
			t.Fatalf("GET an unknown VM: %d", status)
		}
	}
	tv.api(http.MethodGet, "/no/such/page/"+strings.Repeat("x", 20), "", nil, nil)
	resp, err := tv.srv.Client().Get(tv.URL + "/metrics") // the test server is on loopback
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	families := parseMetrics(t, resp.Body)
	var routes []string
	count := map[string]uint64{}
	for _, m := range families["lifeboat_http_request_duration_seconds"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		routes = append(routes, labels["route"])
		count[labels["route"]+" "+labels["method"]+" "+labels["code"]] += m.GetHistogram().GetSampleCount()
	}
	if got := count["/api/v1/vms/:id GET 4xx"]; got != 3 {
		t.Fatalf("the three 404s on /api/v1/vms/:id: %d in %v", got, count)
	}
	for _, r := range routes {
		if strings.Contains(r, "vm_") || strings.Contains(r, "xxxx") {
			t.Fatalf("a raw URL as a route label: %q (all: %v)", r, routes)
		}
	}
}
