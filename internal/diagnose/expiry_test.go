package diagnose

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/inspect"
)

func gatewayWith(name string, ha mcnetv1.HAStatus, expire time.Time) mcnetv1.Gateway {
	return mcnetv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: mcnetv1.SystemNamespace},
		Status: mcnetv1.GatewayStatus{HAStatus: ha, ExpireTime: &metav1.MicroTime{Time: expire}}}
}

func codes(checks []Check) map[string]Check {
	out := map[string]Check{}
	for _, c := range checks {
		if c.Code != "" {
			out[c.Code] = c
		}
	}
	return out
}

// TestExpiredGatewayIsNotActive: a Gateway that still says active but whose heartbeat
// expired before it was read is a failure of its own (MCN1307), and does not count as
// the active gateway (MCN1302), as DNS does not count it; one renewed in time is active.
func TestExpiredGatewayIsNotActive(t *testing.T) {
	read := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s := &inspect.Snapshot{ClusterID: "east", GatewaysReadAt: read,
		Gateways: []mcnetv1.Gateway{gatewayWith("east-gw-0", mcnetv1.HAActive, read.Add(-10*time.Second))}}
	got := codes(Gateways(s))
	c, ok := got["MCN1307"]
	if !ok || c.Result != Fail || c.Hint == "" {
		t.Fatalf("expired active gateway: want a failed MCN1307 with a hint, got %+v", got)
	}
	if want := "Gateway east-gw-0 says active but its status expired at 2026-12-01T11:59:50Z, 10s before it was read (by this machine's clock)"; c.Message != want {
		t.Errorf("MCN1307 message %q, want %q", c.Message, want)
	}
	if _, ok := got["MCN1302"]; !ok {
		t.Errorf("the expired gateway counted as active: no MCN1302 in %+v", got)
	}
	if n := len(s.ActiveGateways()); n != 0 {
		t.Errorf("%d active gateways, want 0", n)
	}

	s.Gateways[0] = gatewayWith("east-gw-0", mcnetv1.HAActive, read.Add(2*time.Second))
	got = codes(Gateways(s))
	for _, code := range []string{"MCN1307", "MCN1302"} {
		if _, ok := got[code]; ok {
			t.Errorf("live active gateway: unexpected %s: %+v", code, got[code])
		}
	}

	// An expired standby is no active gateway that stopped: no MCN1307.
	s.Gateways = append(s.Gateways, gatewayWith("east-gw-1", mcnetv1.HAPassive, read.Add(-time.Minute)))
	if _, ok := codes(Gateways(s))["MCN1307"]; ok {
		t.Error("expired standby reported as MCN1307")
	}
}
