package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/gateway/election"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
)

// slowDataplane takes delay for every Apply, as a loaded node forking iptables does.
type slowDataplane struct {
	fakeDataplane
	delay time.Duration
}

func (s *slowDataplane) Apply(ctx context.Context, st dataplane.State) error {
	time.Sleep(s.delay)
	return s.fakeDataplane.Apply(ctx, st)
}

// TestRTTIsWhatTheWireSaw runs the active gateway's Reconcile with a dataplane whose Apply
// takes 300 ms, forced to apply on every Reconcile, against a remote gateway answering on
// the loopback within a millisecond or so. The probes go from the prober's own
// goroutine, stamped as they leave, so the RTT the connection reports stays far below
// the Apply time; measured from before the Apply it would be at least 300 ms.
func TestRTTIsWhatTheWireSaw(t *testing.T) {
	ctx := t.Context()
	const applyDelay = 300 * time.Millisecond
	port := freeUDPPort(t)
	remote := newProber(time.Second)
	defer remote.close()
	if err := remote.listen(ctx, netip.MustParseAddrPort(fmt.Sprintf("127.0.0.3:%d", port))); err != nil {
		t.Fatal(err)
	}
	sys := mcnetv1.SystemNamespace
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "east-gw-0", UID: "uid-1", Annotations: map[string]string{agent.HealthCheckIPAnnotation: "127.0.0.2"}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.1.10"}}},
	}
	hub := endpoint("hub", mcnetv1.CableVXLAN, "10.0.0.0/16")
	hub.Namespace, hub.Spec.HealthCheckIPs = sys, []string{"127.0.0.3"}
	fleet := &mcnetv1.Fleet{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: mcnetv1.FleetSpec{Clusters: []mcnetv1.FleetMember{
		{Name: "east", Cable: mcnetv1.CableVXLAN, CablePort: 4789, PodCIDRs: []string{"10.10.0.0/16"}, ServiceCIDRs: []string{"10.110.0.0/16"}},
		{Name: "hub", Cable: mcnetv1.CableVXLAN, CablePort: 4789, PodCIDRs: []string{"10.0.0.0/16"}, ServiceCIDRs: []string{"10.100.0.0/16"}},
	}}}
	cl := fake.NewClientBuilder().WithScheme(agent.Scheme()).WithObjects(node, &hub, fleet).WithStatusSubresource(&mcnetv1.Gateway{}).Build()
	o := Options{
		Common:        agent.Common{Process: agentconfig.Process{Namespace: sys}, Config: &mcnetv1.AgentConfig{ClusterID: "east"}, NodeName: node.Name},
		ProbeInterval: 200 * time.Millisecond, StatusInterval: time.Second,
	}
	o.Config.Gateway.HealthCheckPort = int32(port)
	local := agent.Local{ClusterID: "east", Fleet: "prod", Cable: mcnetv1.CableVXLAN, CablePort: 4789, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16")}}
	g := &Gateway{
		opts: o, local: local, log: logr.Discard(), client: cl, direct: cl, dp: &slowDataplane{delay: applyDelay},
		metrics: newMetrics(), recorder: record.NewFakeRecorder(100), prober: newProber(o.ProbeInterval),
		elector: election.New(logr.Discard(), election.Config{}, nil, nil, nil), role: func() (bool, string) { return true, node.Name },
		kick: make(chan struct{}, 1), now: time.Now, conns: map[string]mcnetv1.Connection{},
	}
	defer g.prober.close()
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	go g.prober.run(pctx)

	deadline := time.Now().Add(30 * time.Second)
	replies := 0
	for replies < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("no 5 probe replies in 30 s: %+v", g.conns["hub"])
		}
		g.applied = nil // as on a change or the periodic repair: every sync applies
		if _, err := g.Reconcile(ctx, reconcile.Request{}); err != nil {
			t.Fatal(err)
		}
		c := g.conns["hub"]
		if c.RTT == nil {
			continue
		}
		replies = int(g.prober.stats(time.Now())["hub"].Sent - g.prober.stats(time.Now())["hub"].Lost)
		if c.RTT.Max.Duration >= applyDelay/3 {
			t.Fatalf("RTT max %s with a %s Apply: the Apply time is in the RTT", c.RTT.Max.Duration, applyDelay)
		}
	}
	if c := g.conns["hub"]; c.Status != mcnetv1.Connected {
		t.Errorf("connection %s %q, want connected", c.Status, c.Message)
	}
}
