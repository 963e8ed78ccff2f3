// Package metrics holds agentd's Prometheus metrics. Every method is safe on
// a nil *Metrics, so code that records metrics needs no checks.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// Metrics is the registry and every series agentd exports.
type Metrics struct {
	Registry       *prometheus.Registry
	provisionStep  *prometheus.HistogramVec
	transitions    *prometheus.CounterVec
	pveDuration    *prometheus.HistogramVec
	pveErrors      *prometheus.CounterVec
	loopDuration   *prometheus.HistogramVec
	loopErrors     *prometheus.CounterVec
	idleStops      prometheus.Counter
	reconcileDrift *prometheus.CounterVec
	artifactBytes  prometheus.Counter
}

// New registers every series. sandboxes returns the current count per state
// (read at scrape time, so the gauge is never stale).
func New(sandboxes func() map[string]int) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{Registry: r,
		provisionStep: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "agentd_provision_step_duration_seconds",
			Help: "Duration of each provisioning step.", Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}}, []string{"step"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentd_sandbox_transitions_total",
			Help: "Sandbox state transitions."}, []string{"from", "to"}),
		pveDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "agentd_proxmox_request_duration_seconds",
			Help: "Proxmox API request latency by endpoint (path with ids replaced).", Buckets: prometheus.ExponentialBuckets(.001, 4, 9)}, []string{"method", "endpoint"}),
		pveErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentd_proxmox_errors_total",
			Help: "Proxmox API requests that failed (transport error or HTTP status >= 400) by endpoint."}, []string{"method", "endpoint"}),
		loopDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "agentd_loop_duration_seconds",
			Help: "Runtime loop run duration; the count is the number of runs.", Buckets: prometheus.ExponentialBuckets(.001, 4, 9)}, []string{"loop"}),
		loopErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentd_loop_errors_total",
			Help: "Runtime loop runs that returned an error."}, []string{"loop"}),
		idleStops: prometheus.NewCounter(prometheus.CounterOpts{Name: "agentd_idle_stops_total", Help: "Sandboxes stopped by idle auto-stop."}),
		reconcileDrift: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentd_reconcile_drift_total",
			Help: "Drift found and repaired by reconcile, by action."}, []string{"action"}),
		artifactBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "agentd_artifact_bytes_received_total", Help: "Artifact bytes received from guests."}),
	}
	r.MustRegister(m.provisionStep, m.transitions, m.pveDuration, m.pveErrors, m.loopDuration, m.loopErrors, m.idleStops,
		m.reconcileDrift, m.artifactBytes, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if sandboxes != nil {
		r.MustRegister(&stateCollector{fn: sandboxes, desc: prometheus.NewDesc("agentd_sandboxes", "Sandboxes by state.", []string{"state"}, nil)})
	}
	return m
}

type stateCollector struct {
	fn   func() map[string]int
	desc *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for state, n := range c.fn() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), state)
	}
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// Step records one provisioning step's duration.
func (m *Metrics) Step(step string, d time.Duration) {
	if m != nil {
		m.provisionStep.WithLabelValues(step).Observe(d.Seconds())
	}
}

// Transition counts a state change.
func (m *Metrics) Transition(from, to string) {
	if m != nil && from != to {
		m.transitions.WithLabelValues(from, to).Inc()
	}
}

// Proxmox records one API request.
func (m *Metrics) Proxmox(method, endpoint string, d time.Duration, failed bool) {
	if m == nil {
		return
	}
	m.pveDuration.WithLabelValues(method, endpoint).Observe(d.Seconds())
	if failed {
		m.pveErrors.WithLabelValues(method, endpoint).Inc()
	}
}

// Loop records one loop run.
func (m *Metrics) Loop(name string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.loopDuration.WithLabelValues(name).Observe(d.Seconds())
	if err != nil {
		m.loopErrors.WithLabelValues(name).Inc()
	}
}

// IdleStop counts an idle stop.
func (m *Metrics) IdleStop() {
	if m != nil {
		m.idleStops.Inc()
	}
}

// Drift counts a reconcile repair.
func (m *Metrics) Drift(action string) {
	if m != nil {
		m.reconcileDrift.WithLabelValues(action).Inc()
	}
}

// ArtifactBytes counts received artifact bytes.
func (m *Metrics) ArtifactBytes(n int64) {
	if m != nil {
		m.artifactBytes.Add(float64(n))
	}
}

// WatchTeams exports each team's usage and quota (read at scrape time):
// agentd_team_usage{team,resource} and agentd_team_quota{team,resource},
// the latter only for the limits that are set.
func (m *Metrics) WatchTeams(fn func() []api.Team) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(&teamCollector{fn: fn,
		usage: prometheus.NewDesc("agentd_team_usage", "What each team holds now, by resource (quota units).", []string{"team", "resource"}, nil),
		quota: prometheus.NewDesc("agentd_team_quota", "Each team's quota by resource, where one is set.", []string{"team", "resource"}, nil)})
}

type teamCollector struct {
	fn           func() []api.Team
	usage, quota *prometheus.Desc
}

func (c *teamCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.usage; ch <- c.quota }
func (c *teamCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.fn() {
		q := t.Quota
		limits := map[string]int64{"sandboxes": q.Sandboxes, "cores": q.Cores, "memory_mb": q.MemoryMB,
			"workspace_gb": q.WorkspaceGB, "ttl_seconds": q.TTLSeconds, "artifact_bytes": q.ArtifactBytes}
		for r, v := range limits {
			if v > 0 {
				ch <- prometheus.MustNewConstMetric(c.quota, prometheus.GaugeValue, float64(v), t.Name, r)
			}
		}
		if u := t.Usage; u != nil {
			for r, v := range map[string]int64{"sandboxes": u.Sandboxes, "cores": u.Cores, "memory_mb": u.MemoryMB,
				"workspace_gb": u.WorkspaceGB, "artifact_bytes": u.ArtifactBytes} {
				ch <- prometheus.MustNewConstMetric(c.usage, prometheus.GaugeValue, float64(v), t.Name, r)
			}
		}
	}
}
