package gateway

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// metrics are the gateway's Prometheus series, per remote cluster.
type metrics struct {
	reg    *prometheus.Registry
	active prometheus.Gauge
	status *prometheus.GaugeVec
	rtt    *prometheus.GaugeVec
	loss   *prometheus.GaugeVec
	bytes  *byteCounters
	// leaseKept counts the late renewals of a live active gateway this standby let pass.
	leaseKept prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcnet_gateway_active", Help: "1 while this gateway holds the cluster's gateway Lease.",
		}),
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcnet_gateway_connection_status",
			Help: "1 for the current status (connecting, connected, error) of the connection to a remote cluster.",
		}, []string{"remote_cluster", "status"}),
		rtt: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcnet_gateway_connection_rtt_seconds",
			Help: "Round-trip time of health probes through the cable, over the last probes.",
		}, []string{"remote_cluster", "stat"}),
		loss: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcnet_gateway_connection_probe_loss_ratio", Help: "Share of the last probes that got no reply.",
		}, []string{"remote_cluster"}),
		bytes: newByteCounters(),
		leaseKept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcnet_gateway_lease_late_renewals_tolerated_total",
			Help: "Times this standby found the active gateway's Lease renewal late but the gateway answering on its liveness port, and did not take over.",
		}),
	}
	m.reg.MustRegister(m.active, m.status, m.rtt, m.loss, m.bytes, m.leaseKept,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// set replaces the per-connection series with conns.
func (m *metrics) set(active bool, conns []mcnetv1.Connection) {
	if active {
		m.active.Set(1)
	} else {
		m.active.Set(0)
	}
	for _, v := range []*prometheus.GaugeVec{m.status, m.rtt, m.loss} {
		v.Reset()
	}
	for _, c := range conns {
		for _, s := range []mcnetv1.ConnectionStatus{mcnetv1.Connecting, mcnetv1.Connected, mcnetv1.ConnectionError} {
			v := 0.0
			if c.Status == s {
				v = 1
			}
			m.status.WithLabelValues(c.Cluster, string(s)).Set(v)
		}
		if c.RTT != nil {
			for stat, d := range map[string]float64{
				"last": c.RTT.Last.Seconds(), "min": c.RTT.Min.Seconds(), "avg": c.RTT.Avg.Seconds(),
				"max": c.RTT.Max.Seconds(), "stddev": c.RTT.StdDev.Seconds(),
			} {
				m.rtt.WithLabelValues(c.Cluster, stat).Set(d)
			}
		}
		m.loss.WithLabelValues(c.Cluster).Set(float64(c.LossPercent) / 100)
	}
	m.bytes.set(conns)
}

// byteCounters exports the cable's byte totals as Prometheus counters. The kernel (or
// wireguard-go) keeps the totals, so there is nothing to Add to: each scrape reports the
// last totals read as constant counter samples. A total that drops (the peer was
// re-created) is a counter reset, which rate() already handles.
type byteCounters struct {
	rx, tx *prometheus.Desc
	mu     sync.Mutex
	last   []mcnetv1.Connection
}

func newByteCounters() *byteCounters {
	return &byteCounters{
		rx: prometheus.NewDesc("mcnet_gateway_connection_rx_bytes_total", "Bytes received through the cable (WireGuard only).", []string{"remote_cluster"}, nil),
		tx: prometheus.NewDesc("mcnet_gateway_connection_tx_bytes_total", "Bytes sent through the cable (WireGuard only).", []string{"remote_cluster"}, nil),
	}
}

func (b *byteCounters) set(conns []mcnetv1.Connection) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last = conns
}

// Describe implements prometheus.Collector.
func (b *byteCounters) Describe(ch chan<- *prometheus.Desc) { ch <- b.rx; ch <- b.tx }

// Collect implements prometheus.Collector.
func (b *byteCounters) Collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.last {
		ch <- prometheus.MustNewConstMetric(b.rx, prometheus.CounterValue, float64(c.RxBytes), c.Cluster)
		ch <- prometheus.MustNewConstMetric(b.tx, prometheus.CounterValue, float64(c.TxBytes), c.Cluster)
	}
}
