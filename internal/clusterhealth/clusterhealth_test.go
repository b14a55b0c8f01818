package clusterhealth

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

func gw(name string, ha mcnetv1.HAStatus, renewed, expires time.Time, reachable metav1.ConditionStatus, connected ...string) mcnetv1.Gateway {
	g := mcnetv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: mcnetv1.GatewayStatus{HAStatus: ha,
		RenewTime: &metav1.MicroTime{Time: renewed}, ExpireTime: &metav1.MicroTime{Time: expires}}}
	if reachable != "" {
		g.Status.Conditions = []metav1.Condition{{Type: mcnetv1.GatewayConditionActiveReachable, Status: reachable}}
	}
	for _, c := range connected {
		g.Status.Connections = append(g.Status.Connections, mcnetv1.Connection{Cluster: c, Status: mcnetv1.Connected})
	}
	return g
}

// TestActive: a dead gateway's Gateway object, which still says active and connected,
// stops counting once it expires, unless a live standby still reaches it.
func TestActive(t *testing.T) {
	now := time.Unix(1000, 0)
	fresh, stale := now.Add(-time.Second), now.Add(-10*time.Second)
	live, expired := now.Add(2*time.Second), now.Add(-7*time.Second)
	for _, tc := range []struct {
		name string
		gws  []mcnetv1.Gateway
		want map[string]Health
	}{
		{"live active", []mcnetv1.Gateway{gw("a", mcnetv1.HAActive, fresh, live, "", "east")}, map[string]Health{"east": {Connected: true}}},
		{"dead active, no standby", []mcnetv1.Gateway{gw("a", mcnetv1.HAActive, stale, expired, "", "east")}, map[string]Health{}},
		{"dead active, the standby took over", []mcnetv1.Gateway{
			gw("a", mcnetv1.HAActive, stale, expired, "", "east", "west"),
			gw("b", mcnetv1.HAActive, fresh, live, "", "west"),
		}, map[string]Health{"west": {Connected: true}}},
		{"silent active a live standby still reaches", []mcnetv1.Gateway{
			gw("a", mcnetv1.HAActive, stale, expired, "", "east"),
			gw("b", mcnetv1.HAPassive, fresh, live, metav1.ConditionTrue),
		}, map[string]Health{"east": {Connected: true}}},
		{"silent active the standby does not reach", []mcnetv1.Gateway{
			gw("a", mcnetv1.HAActive, stale, expired, "", "east"),
			gw("b", mcnetv1.HAPassive, fresh, live, metav1.ConditionFalse),
		}, map[string]Health{}},
		{"restarting active within its grace", []mcnetv1.Gateway{gw("a", mcnetv1.HAActive, stale, now.Add(5*time.Second), "", "east")}, map[string]Health{"east": {Connected: true}}},
		{"no heartbeat (older gateway)", []mcnetv1.Gateway{{Status: mcnetv1.GatewayStatus{HAStatus: mcnetv1.HAActive,
			Connections: []mcnetv1.Connection{{Cluster: "east", Status: mcnetv1.Connected}}}}}, map[string]Health{"east": {Connected: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, FromGateways(tc.gws, now)); diff != "" {
				t.Errorf("health (-want +got):\n%s", diff)
			}
		})
	}
}
