// Package metrics exposes the vault to Prometheus: collectors that read
// the database at scrape time (RPO, backlog, jobs, the task queue, hosts,
// alerts) and a histogram of HTTP request durations. Its registry is its
// own, so nothing registers itself globally.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lifeboat-dr/lifeboat/models"
)

// Source is what the collectors read: the store.
type Source interface {
	Metrics(ctx context.Context) (*models.MetricsSnapshot, error)
	LeaseExpiries() int64
}

// Metrics is the vault's registry and what feeds it.
type Metrics struct {
	registry  *prometheus.Registry
	requests  *prometheus.HistogramVec
	scheduler prometheus.Histogram
	handler   http.Handler
}

// heldKey is where a handler that holds a request open (the agents' long
// poll) adds up the time it only waited, which the request histogram
// leaves out: a poll held 25 s for want of work is not a slow answer.
const heldKey = "lifeboat.metrics.held"

// Held adds d to the time request c only waited.
func Held(c echo.Context, d time.Duration) {
	prev, _ := c.Get(heldKey).(time.Duration)
	c.Set(heldKey, prev+d)
}

// New makes the registry: the vault's collectors, the request histogram,
// and the Go runtime's and the process's own.
func New(src Source, log *slog.Logger) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		registry: reg,
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lifeboat_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route pattern, method and status class.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method", "code"}),
		scheduler: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lifeboat_scheduler_pass_seconds",
			Help:    "Time of one pass of the scheduler (due cycles queued, resyncs in their window started), on the leading vault.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
	}
	reg.MustRegister(m.requests, m.scheduler, &vaultCollector{src: src, log: log},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: slogPrinter{log}})
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler { return m.handler }

// SchedulerPass records the duration of one scheduler pass.
func (m *Metrics) SchedulerPass(d time.Duration) { m.scheduler.Observe(d.Seconds()) }

// Middleware times every request, less the time a long poll only waited
// (Held). It labels by the route's pattern
// (c.Path()), never the raw URL, so the label set stays bounded. The
// error is handled here, so the status is the one the client got.
func (m *Metrics) Middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		held, _ := c.Get(heldKey).(time.Duration)
		m.requests.WithLabelValues(route, c.Request().Method, statusClass(c.Response().Status)).Observe((time.Since(start) - held).Seconds())
		return nil
	}
}

func statusClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return strconv.Itoa(status/100) + "xx"
}

var (
	vmLabels      = []string{"vm_id", "vm"}
	rpoDesc       = prometheus.NewDesc("lifeboat_vm_rpo_seconds", "Age of the newest recovery point of a replicating VM.", vmLabels, nil)
	frequencyDesc = prometheus.NewDesc("lifeboat_vm_copy_frequency_seconds", "The copy frequency of the VM's policy; its health turns Warning at twice this RPO.", vmLabels, nil)
	backlogDesc   = prometheus.NewDesc("lifeboat_vm_replication_backlog_bytes", "What the running copy (cycle, initial copy, resync) says it still has to send; 0 when none runs.", vmLabels, nil)
	cycleBytes    = prometheus.NewDesc("lifeboat_vm_last_cycle_bytes", "Bytes sent by the VM's last successful cycle.", vmLabels, nil)
	cycleSeconds  = prometheus.NewDesc("lifeboat_vm_last_cycle_duration_seconds", "Transfer time of the VM's last successful cycle.", vmLabels, nil)
	cycleRate     = prometheus.NewDesc("lifeboat_vm_last_cycle_throughput_bytes_per_second", "Bytes per second of the VM's last successful cycle.", vmLabels, nil)
	jobsDesc      = prometheus.NewDesc("lifeboat_jobs", "Jobs by state.", []string{"state"}, nil)
	queueDesc     = prometheus.NewDesc("lifeboat_task_queue_depth", "Tasks waiting for an earlier step, queued for an agent, or leased by one.", []string{"state"}, nil)
	expiriesDesc  = prometheus.NewDesc("lifeboat_task_lease_expiries_total", "Task leases that ran out (the agent stopped reporting) since the vault started.", nil, nil)
	hostsDesc     = prometheus.NewDesc("lifeboat_hosts", "Registered hosts by connection state.", []string{"state"}, nil)
	hostUpDesc    = prometheus.NewDesc("lifeboat_host_connected", "1 while the host's agent sends heartbeats, 0 once three were missed.", []string{"host_id", "host"}, nil)
	heartbeatDesc = prometheus.NewDesc("lifeboat_host_last_heartbeat_timestamp_seconds", "When the host's agent last sent a heartbeat (Unix time).", []string{"host_id", "host"}, nil)
	alertsDesc    = prometheus.NewDesc("lifeboat_alerts", "Alerts not resolved, by state and severity.", []string{"state", "severity"}, nil)
	dbUpDesc      = prometheus.NewDesc("lifeboat_database_up", "1 when the scrape could read the database; 0 when it could not (the other vault metrics are missing then).", nil, nil)
)

// vaultCollector reads one snapshot from the database per scrape.
type vaultCollector struct {
	src Source
	log *slog.Logger
}

func (v *vaultCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{rpoDesc, frequencyDesc, backlogDesc, cycleBytes, cycleSeconds, cycleRate,
		jobsDesc, queueDesc, expiriesDesc, hostsDesc, hostUpDesc, heartbeatDesc, alertsDesc, dbUpDesc} {
		ch <- d
	}
}

func (v *vaultCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, value float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, value, labels...)
	}
	ch <- prometheus.MustNewConstMetric(expiriesDesc, prometheus.CounterValue, float64(v.src.LeaseExpiries()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, err := v.src.Metrics(ctx)
	if err != nil {
		v.log.Warn("metrics scrape: read the database", slog.Any("error", err))
		gauge(dbUpDesc, 0)
		return
	}
	gauge(dbUpDesc, 1)
	for _, vm := range snap.VMs {
		if vm.HasPoint {
			gauge(rpoDesc, vm.RPOSeconds, vm.VMID, vm.Name)
		}
		gauge(frequencyDesc, float64(vm.CopyFrequencySeconds), vm.VMID, vm.Name)
		gauge(backlogDesc, float64(vm.BacklogBytes), vm.VMID, vm.Name)
		gauge(cycleBytes, float64(vm.LastCycleBytes), vm.VMID, vm.Name)
		gauge(cycleSeconds, vm.LastCycleSeconds, vm.VMID, vm.Name)
		rate := 0.0
		if vm.LastCycleSeconds > 0 {
			rate = float64(vm.LastCycleBytes) / vm.LastCycleSeconds
		}
		gauge(cycleRate, rate, vm.VMID, vm.Name)
	}
	for _, state := range models.JobStates {
		gauge(jobsDesc, float64(snap.JobsByState[state]), state)
	}
	for _, state := range []string{models.TaskWaiting, models.TaskQueued, models.TaskLeased} {
		gauge(queueDesc, float64(snap.TasksByState[state]), state)
	}
	byState := map[string]int{}
	for _, h := range snap.Hosts {
		byState[h.State]++
		up := 0.0
		if h.State == models.HostConnected {
			up = 1
		}
		gauge(hostUpDesc, up, h.ID, h.Name)
		if h.LastHeartbeat != nil {
			gauge(heartbeatDesc, float64(h.LastHeartbeat.UnixMilli())/1000, h.ID, h.Name)
		}
	}
	for _, state := range []string{models.HostConnected, models.HostDisconnected} {
		gauge(hostsDesc, float64(byState[state]), state)
	}
	// Every state and severity is a series, 0 when none: an alert rule on
	// it then sees zero rather than no data.
	alerts := map[[2]string]float64{}
	for _, st := range []string{models.AlertActive, models.AlertAcknowledged} {
		for _, sev := range []string{models.HealthWarning, models.HealthCritical} {
			alerts[[2]string{st, sev}] = 0
		}
	}
	for _, a := range snap.Alerts {
		alerts[[2]string{a.State, a.Severity}] += float64(a.N)
	}
	for k, n := range alerts {
		gauge(alertsDesc, n, k[0], k[1])
	}
}

// slogPrinter hands promhttp's errors to the vault's log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics", "message", v) }
