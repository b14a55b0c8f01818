package show

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/inspect"
)

// TestConnectionViewShowsTheCableThatRuns: hub prefers VXLAN, east WireGuard, so the
// pair runs WireGuard; east's view of hub must say wireguard, not hub's preference.
func TestConnectionViewShowsTheCableThatRuns(t *testing.T) {
	c := mcnetv1.Connection{Cluster: "hub", Status: mcnetv1.Connected, Cable: mcnetv1.CableWireGuard, Port: 51820,
		Endpoint: &mcnetv1.EndpointSpec{ClusterID: "hub", Hostname: "hub-gw-0", Cable: mcnetv1.CableVXLAN, Port: 4789}}
	got := connectionView("east-gw-0", c)
	if got.Cable != "wireguard" || got.Port != 51820 || got.RemoteNode != "hub-gw-0" {
		t.Errorf("cable %q port %d remote %q, want wireguard 51820 hub-gw-0", got.Cable, got.Port, got.RemoteNode)
	}
	c.Cable, c.Port = "", 0
	if got := connectionView("east-gw-0", c); got.Cable != "" {
		t.Errorf("no cable reported: view says %q, want none (never the remote's preference)", got.Cable)
	}
}

// TestExpiredGatewayShowsExpired: a Gateway whose heartbeat expired before it was read
// shows as expired, with what its stale status still says, and carries no connections;
// a live one shows as active.
func TestExpiredGatewayShowsExpired(t *testing.T) {
	read := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	gw := mcnetv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "east-gw-0"}, Status: mcnetv1.GatewayStatus{
		HAStatus: mcnetv1.HAActive, ExpireTime: &metav1.MicroTime{Time: read.Add(-5 * time.Second)},
		Connections: []mcnetv1.Connection{{Cluster: "hub", Status: mcnetv1.Connected}},
	}}
	s := &inspect.Snapshot{ClusterID: "east", GatewaysReadAt: read, Gateways: []mcnetv1.Gateway{gw}}
	v := Build(s, []string{"gateways", "connections"})
	if len(v.Gateways) != 1 {
		t.Fatalf("gateways %+v", v.Gateways)
	}
	g := v.Gateways[0]
	if g.HA != "expired" || !g.Expired || g.ReportedHA != "active" || g.ExpireTime != "2026-12-01T11:59:55Z" {
		t.Errorf("expired gateway shows %+v, want haStatus expired, reported active, expireTime 2026-12-01T11:59:55Z", g)
	}
	if len(v.Connections) != 0 {
		t.Errorf("an expired gateway's connections shown as running: %+v", v.Connections)
	}

	s.Gateways[0].Status.ExpireTime = &metav1.MicroTime{Time: read.Add(time.Second)}
	v = Build(s, []string{"gateways", "connections"})
	if g := v.Gateways[0]; g.HA != "active" || g.Expired {
		t.Errorf("live gateway shows %+v, want active", g)
	}
	if len(v.Connections) != 1 {
		t.Errorf("live gateway's connections: %+v", v.Connections)
	}
}
