package agent

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/probe"
	"github.com/mcnet-io/mcnet/internal/testenv"
)

// TestNetworkTestsAreBounded runs the NetworkTest agent against a real API server with
// the rendered CRDs and fleet table: the API server refuses durations and echo runs over
// the limits, naming the field; the agent refuses targets outside the fleet and runs at
// most MaxConcurrentNetworkTests at once.
func TestNetworkTestsAreBounded(t *testing.T) {
	ctx := t.Context()
	f := testenv.InstallFleet(ctx, t, "../../examples/fleet.yaml")
	cfg := f.Configs["east"]
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	o := &Common{Config: f.AgentConfig(t, "east"), NodeName: "node-1"}
	o.Namespace = mcnetv1.SystemNamespace

	nt := func(name string, role mcnetv1.NetworkTestRole, mutate func(*mcnetv1.NetworkTestSpec)) *mcnetv1.NetworkTest {
		n := &mcnetv1.NetworkTest{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: map[string]string{
				mcnetv1.NodeLabel: o.NodeName, mcnetv1.AgentLabel: string(mcnetv1.AgentRouteAgent)}},
			Spec: mcnetv1.NetworkTestSpec{NodeName: o.NodeName, Agent: mcnetv1.AgentRouteAgent, Role: role,
				Type: mcnetv1.TestLatency, Session: "0123456789abcdef0123", Target: "10.20.0.5:4000"},
		}
		if mutate != nil {
			mutate(&n.Spec)
		}
		return n
	}
	for name, tc := range map[string]struct {
		mutate func(*mcnetv1.NetworkTestSpec)
		want   string
	}{
		"28 hours": {func(s *mcnetv1.NetworkTestSpec) { s.Duration = &metav1.Duration{Duration: 28 * time.Hour} }, "spec.duration may be at most 10m"},
		"long throughput": {func(s *mcnetv1.NetworkTestSpec) {
			s.Type = mcnetv1.TestThroughput
			s.Duration = &metav1.Duration{Duration: 5 * time.Minute}
		}, "at most 2m"},
		"100000 x 1s": {func(s *mcnetv1.NetworkTestSpec) {
			s.Count = 100000
			s.Interval = &metav1.Duration{Duration: time.Second}
		}, "spec.count x spec.interval"},
		"slow echoes":      {func(s *mcnetv1.NetworkTestSpec) { s.Interval = &metav1.Duration{Duration: time.Minute} }, "spec.interval may be at most 1s"},
		"client no target": {func(s *mcnetv1.NetworkTestSpec) { s.Target = "" }, "spec.target is required"},
	} {
		err := c.Create(ctx, nt(strings.ReplaceAll(name, " ", "-"), mcnetv1.NetworkTestClient, tc.mutate))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: create: %v, want a refusal saying %q", name, err, tc.want)
		}
	}

	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"10.20.0.5", true},        // west's pod CIDR
		{"10.110.3.4", true},       // east's service CIDR
		{"169.254.169.254", false}, // cloud metadata
		{"127.0.0.1", false},
		{"198.51.100.7", false}, // nobody's
	} {
		err := o.fleetAddress(ctx, c, netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("fleetAddress(%s) = %v, want allowed %v", tc.addr, err, tc.ok)
		}
	}

	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = probe.RunAgent(actx, c, probe.AgentOptions{Namespace: o.Namespace, NodeName: o.NodeName, Agent: mcnetv1.AgentRouteAgent,
			ListenHost:  "127.0.0.1",
			AllowTarget: func(ctx context.Context, a netip.Addr) error { return o.fleetAddress(ctx, c, a) }})
	}()
	t.Cleanup(func() { cancel(); <-done })

	phase := func(name string, want mcnetv1.NetworkTestPhase, msg string) {
		t.Helper()
		testenv.Eventually(ctx, t, 20*time.Second, name+" "+string(want), func(ctx context.Context) error {
			var got mcnetv1.NetworkTest
			if err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: name}, &got); err != nil {
				return err
			}
			if got.Status.Phase != want || !strings.Contains(got.Status.Message, msg) {
				return fmt.Errorf("phase %s, message %q", got.Status.Phase, got.Status.Message)
			}
			return nil
		})
	}
	if err := c.Create(ctx, nt("metadata", mcnetv1.NetworkTestClient, func(s *mcnetv1.NetworkTestSpec) { s.Target = "169.254.169.254:80" })); err != nil {
		t.Fatal(err)
	}
	phase("metadata", mcnetv1.TestFailed, "spec.target 169.254.169.254 is not a fleet address")

	for i := range mcnetv1.MaxConcurrentNetworkTests {
		name := fmt.Sprintf("server-%d", i)
		if err := c.Create(ctx, nt(name, mcnetv1.NetworkTestServer, func(s *mcnetv1.NetworkTestSpec) { s.Target = "" })); err != nil {
			t.Fatal(err)
		}
		phase(name, mcnetv1.TestReady, "listening")
	}
	if err := c.Create(ctx, nt("one-too-many", mcnetv1.NetworkTestServer, func(s *mcnetv1.NetworkTestSpec) { s.Target = "" })); err != nil {
		t.Fatal(err)
	}
	phase("one-too-many", mcnetv1.TestFailed, "the most it runs at once")
}
