package gateway

import (
	"testing"

	dto "github.com/prometheus/client_model/go"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// The cable's byte totals only grow (until the peer is re-created), so Prometheus must
// see them as counters: rate() on a gauge gives wrong answers across resets.
func TestByteTotalsAreCounters(t *testing.T) {
	m := newMetrics()
	m.set(true, []mcnetv1.Connection{{Cluster: "west", Status: mcnetv1.Connected, RxBytes: 1500, TxBytes: 9000}})
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"mcnet_gateway_connection_rx_bytes_total": 1500, "mcnet_gateway_connection_tx_bytes_total": 9000}
	for _, f := range families {
		v, ok := want[f.GetName()]
		if !ok {
			continue
		}
		delete(want, f.GetName())
		if f.GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s is a %s, want a counter", f.GetName(), f.GetType())
		}
		if len(f.Metric) != 1 || f.Metric[0].GetCounter().GetValue() != v || f.Metric[0].Label[0].GetValue() != "west" {
			t.Errorf("%s = %v, want one series remote_cluster=west of %v", f.GetName(), f.Metric, v)
		}
	}
	for name := range want {
		t.Errorf("no series %s", name)
	}
}
