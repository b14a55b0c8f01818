package show

import (
	"testing"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
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
