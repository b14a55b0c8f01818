package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/internal/testenv"
	"github.com/mcnet-io/mcnet/kustomize"
)

// fakeDataplane records what the engine asks of the kernel.
type fakeDataplane struct {
	mu      sync.Mutex
	applied []dataplane.State
	cleaned bool
}

func (f *fakeDataplane) Apply(_ context.Context, s dataplane.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, s)
	return nil
}

func (f *fakeDataplane) Cleanup(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleaned = true
	return nil
}

func (f *fakeDataplane) PublicKey() (dataplane.Key, error) { return dataplane.ParseKey(keyB64) }

// Stats reports a VXLAN cable to every remote of the last State applied.
func (f *fakeDataplane) Stats(context.Context) ([]dataplane.CableStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.applied) == 0 {
		return nil, nil
	}
	var out []dataplane.CableStatus
	for _, r := range f.applied[len(f.applied)-1].Remotes {
		out = append(out, dataplane.CableStatus{ClusterID: r.ClusterID, Driver: r.Cable.Driver, Device: "mcnet-vx",
			Endpoint: netip.AddrPortFrom(r.Cable.Endpoints[0], r.Cable.Port)})
	}
	return out, nil
}

func (f *fakeDataplane) last() (dataplane.State, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.applied) == 0 {
		return dataplane.State{}, false
	}
	return f.applied[len(f.applied)-1], true
}

// freeUDPPort returns a UDP port free on the loopback.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// engine is one gateway process of the test.
type engine struct {
	cancel context.CancelFunc
	done   chan error
}

func startEngine(ctx context.Context, t *testing.T, o Options, cfg *rest.Config, dp dataplaneAPI) *engine {
	t.Helper()
	local, err := o.Local()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	log := zap.New(zap.UseDevMode(true), zap.WriteTo(testWriter{t}))
	g, err := newGateway(ctx, log, o, local, cfg, dp)
	if err != nil {
		t.Fatal(err)
	}
	e := &engine{cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- g.run(ctx) }()
	return e
}

// stop sends the engine what SIGTERM sends it and waits for it to end.
func (e *engine) stop(t *testing.T) {
	t.Helper()
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			t.Errorf("gateway: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gateway did not stop")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestEngine runs the gateway engine against a real API server, as the ServiceAccount
// and RBAC the render gives it, with a fake dataplane and health probes over the
// loopback: it publishes the cluster's Endpoint, drives the dataplane towards the
// remote cluster, reports the connection in its Gateway status (connected while the
// remote answers, an error saying so when it stops), keeps the Lease across a restart
// and releases it and cleans up on an uninstall.
func TestEngine(t *testing.T) {
	ctx := t.Context()
	cs, err := fleet.Load("../../kustomize/testdata/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.StartClusterAPIServers(t, cs.Spec.Clusters[1:2])[0] // east
	tree, err := kustomize.Render(cs, kustomize.Options{Version: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	repo := testenv.NewRepo(t, tree)
	testenv.Apply(ctx, t, cfg, repo.Build(t, kustomize.DirCRDs))
	testenv.Apply(ctx, t, cfg, repo.Build(t, path.Join(kustomize.DirClusters, "east")))
	admin := testenv.Client(t, cfg)
	sys := mcnetv1.SystemNamespace

	// The gateway node, its health-check address on the loopback.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "east-gw-0",
		Labels:      map[string]string{mcnetv1.GatewayLabel: "true"},
		Annotations: map[string]string{HealthCheckIPAnnotation: "127.0.0.2"},
	}}
	if err := admin.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.1.10"}}
	if err := admin.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	// The remote cluster "hub", as broker sync mirrors it; its gateway answers probes
	// on another loopback address.
	port := freeUDPPort(t)
	remote := newProber(time.Second)
	defer remote.close()
	if err := remote.listen(ctx, netip.MustParseAddrPort(fmt.Sprintf("127.0.0.3:%d", port))); err != nil {
		t.Fatal(err)
	}
	hub := endpoint("hub", mcnetv1.CableVXLAN, "10.0.0.0/16", "10.100.0.0/16")
	hub.Namespace, hub.Spec.HealthCheckIPs, hub.Spec.PublicIPs = sys, []string{"127.0.0.3"}, nil
	if err := admin.Create(ctx, &hub); err != nil {
		t.Fatal(err)
	}

	east := cs.Spec.Clusters[1]
	o := Options{
		Common: Common{ClusterID: east.Name, ClusterSet: cs.Name, PodCIDRs: east.PodCIDRs, ServiceCIDRs: east.ServiceCIDRs,
			Cable: string(mcnetv1.CableVXLAN), CablePort: 4789, NodeName: node.Name, Namespace: sys},
		MetricsBindAddress: "0", HealthCheckPort: port,
		LeaseDuration: time.Second, RenewDeadline: 800 * time.Millisecond, RetryPeriod: 200 * time.Millisecond,
		ProbeInterval: 200 * time.Millisecond, StatusInterval: 5 * time.Second,
		// Long enough that taking the Lease back within the test's deadlines proves
		// the next process did not wait it out.
		RestartGrace: time.Minute,
	}
	gwCfg := testenv.As(ctx, t, cfg, sys, "mcnet-gateway")
	dp := &fakeDataplane{}
	gw := startEngine(ctx, t, o, gwCfg, dp)

	t.Run("publishes the Endpoint", func(t *testing.T) {
		want := mcnetv1.EndpointSpec{ClusterID: "east", Hostname: node.Name, Cable: mcnetv1.CableVXLAN, Port: 4789, PublicKey: keyB64,
			PrivateIPs: []string{"198.18.1.10"}, HealthCheckIPs: []string{"127.0.0.2"}, Subnets: []string{"10.10.0.0/16", "10.110.0.0/16"}}
		testenv.Eventually(ctx, t, 30*time.Second, "Endpoint east", func(ctx context.Context) error {
			var ep mcnetv1.Endpoint
			if err := admin.Get(ctx, client.ObjectKey{Namespace: sys, Name: "east"}, &ep); err != nil {
				return err
			}
			if d := cmp.Diff(want, ep.Spec); d != "" || ep.Labels[mcnetv1.ClusterLabel] != "east" {
				return fmt.Errorf("labels %v, spec (-want +got):\n%s", ep.Labels, d)
			}
			return nil
		})
	})

	t.Run("drives the dataplane to the remote gateway", func(t *testing.T) {
		testenv.Eventually(ctx, t, 10*time.Second, "gateway State", func(context.Context) error {
			s, ok := dp.last()
			if !ok || s.Gateway == nil || len(s.Remotes) != 1 {
				return fmt.Errorf("last State %+v", s)
			}
			r := s.Remotes[0]
			if r.ClusterID != "hub" || r.Cable.Driver != dataplane.DriverVXLAN || r.Cable.Endpoints[0] != netip.MustParseAddr("198.18.100.10") {
				return fmt.Errorf("remote %+v", r)
			}
			return nil
		})
	})

	status := func(want mcnetv1.ConnectionStatus, msg string) func(context.Context) error {
		return func(ctx context.Context) error {
			var g mcnetv1.Gateway
			if err := admin.Get(ctx, client.ObjectKey{Namespace: sys, Name: node.Name}, &g); err != nil {
				return err
			}
			st := g.Status
			if st.HAStatus != mcnetv1.HAActive || st.LocalEndpoint == nil || len(st.Connections) != 1 {
				return fmt.Errorf("status %+v", st)
			}
			c := st.Connections[0]
			if c.Cluster != "hub" || c.Status != want || !strings.Contains(c.Message, msg) {
				return fmt.Errorf("connection %s: %s %q, want %s %q", c.Cluster, c.Status, c.Message, want, msg)
			}
			if want == mcnetv1.Connected && (c.RTT == nil || c.RTT.Last.Duration <= 0 || c.UsingIP != "198.18.100.10") {
				return fmt.Errorf("connected without RTT or cable endpoint: %+v", c)
			}
			return nil
		}
	}
	t.Run("reports the connection connected while probes are answered", func(t *testing.T) {
		testenv.Eventually(ctx, t, 30*time.Second, "connected", status(mcnetv1.Connected, ""))
	})

	t.Run("reports an error and an Event when the remote stops answering", func(t *testing.T) {
		remote.close()
		testenv.Eventually(ctx, t, 30*time.Second, "error", status(mcnetv1.ConnectionError, "no probe replies from 127.0.0.3"))
		testenv.Eventually(ctx, t, 10*time.Second, "Event", func(ctx context.Context) error {
			var evs corev1.EventList
			if err := admin.List(ctx, &evs, client.InNamespace(sys)); err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Reason == ReasonConnectionFailed && e.InvolvedObject.Name == node.Name && e.Type == corev1.EventTypeWarning {
					return nil
				}
			}
			return errors.New("no ConnectionFailed Event on the Gateway")
		})
		if err := remote.listen(ctx, netip.MustParseAddrPort(fmt.Sprintf("127.0.0.3:%d", port))); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(ctx, t, 30*time.Second, "connected again", status(mcnetv1.Connected, ""))
	})

	lease := func(ctx context.Context) (*coordinationv1.Lease, error) {
		var l coordinationv1.Lease
		err := admin.Get(ctx, client.ObjectKey{Namespace: sys, Name: LeaseName}, &l)
		return &l, err
	}
	t.Run("a restart keeps the Lease and the status", func(t *testing.T) {
		gw.stop(t)
		l, err := lease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h, d := ptrStr(l.Spec.HolderIdentity), ptrInt(l.Spec.LeaseDurationSeconds); h != node.Name || d != 60 {
			t.Errorf("Lease after SIGTERM: holder %q for %d s, want %s for 60 s", h, d, node.Name)
		}
		if err := status(mcnetv1.Connected, "")(ctx); err != nil {
			t.Errorf("status after SIGTERM: %v", err)
		}
		gw = startEngine(ctx, t, o, gwCfg, dp)
		testenv.Eventually(ctx, t, 20*time.Second, "Lease taken back", func(ctx context.Context) error {
			l, err := lease(ctx)
			if err != nil {
				return err
			}
			if h, d := ptrStr(l.Spec.HolderIdentity), ptrInt(l.Spec.LeaseDurationSeconds); h != node.Name || d != 1 {
				return fmt.Errorf("holder %q for %d s", h, d)
			}
			return nil
		})
		testenv.Eventually(ctx, t, 10*time.Second, "connected after the restart", status(mcnetv1.Connected, ""))
	})

	t.Run("an uninstall releases the Lease and cleans up", func(t *testing.T) {
		ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: sys, Name: DaemonSetName}}
		if err := admin.Delete(ctx, ds); err != nil {
			t.Fatal(err)
		}
		gw.stop(t)
		l, err := lease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h := ptrStr(l.Spec.HolderIdentity); h != "" {
			t.Errorf("Lease still held by %q after an uninstall", h)
		}
		dp.mu.Lock()
		defer dp.mu.Unlock()
		if !dp.cleaned {
			t.Error("kernel state not cleaned up after an uninstall")
		}
	})
}

func ptrStr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func ptrInt(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}
