package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/gateway/election"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/internal/testenv"
	"github.com/mcnet-io/mcnet/kustomize"
)

// fakeDataplane records what the engine asks of the kernel.
type fakeDataplane struct {
	mu      sync.Mutex
	applied []dataplane.State
	cleaned bool
	// fail, when set, is what Apply returns instead of taking the State.
	fail error
}

func (f *fakeDataplane) Apply(_ context.Context, s dataplane.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.applied = append(f.applied, s)
	return nil
}

func (f *fakeDataplane) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
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

// readyz asks a gateway's /readyz and returns the status code and body.
func readyz(ctx context.Context, addr string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
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
	_, tree, cfg, admin := startEast(t)
	sys := mcnetv1.SystemNamespace

	// The gateway node, its health-check address on the loopback.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "east-gw-0",
		Labels:      map[string]string{mcnetv1.GatewayLabel: "true"},
		Annotations: map[string]string{agent.HealthCheckIPAnnotation: "127.0.0.2"},
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
	hub := endpoint("hub", mcnetv1.CableWireGuard, "10.0.0.0/16", "10.100.0.0/16")
	hub.Namespace, hub.Spec.HealthCheckIPs, hub.Spec.PublicIPs = sys, []string{"127.0.0.3"}, nil
	if err := admin.Create(ctx, &hub); err != nil {
		t.Fatal(err)
	}

	// east's rendered config, probing on the test's port.
	conf, err := agentconfig.Parse(tree[path.Join(kustomize.DirClusters, "east", mcnetv1.AgentConfigKey)])
	if err != nil {
		t.Fatal(err)
	}
	conf.Gateway.HealthCheckPort = int32(port)
	probes := testenv.UnusedTCPAddr(t)
	o := Options{
		Common:             agent.Common{Process: agentconfig.Process{Namespace: sys}, Config: conf, NodeName: node.Name},
		MetricsBindAddress: "0", ProbeAddress: probes,
		LeaseDuration: time.Second, RenewDeadline: 800 * time.Millisecond, RetryPeriod: 200 * time.Millisecond,
		ProbeInterval: 200 * time.Millisecond, StatusInterval: time.Second,
		// Long enough that taking the Lease back within the test's deadlines proves
		// the next process did not wait it out.
		RestartGrace: time.Minute,
	}
	gwCfg := testenv.As(ctx, t, cfg, sys, "mcnet-gateway")
	// The kernel refuses the first States: the gateway must not say it is ready.
	dp := &fakeDataplane{fail: errors.New("kernel says no")}
	gw := startEngine(ctx, t, o, gwCfg, dp)

	t.Run("is ready only once the kernel took its state", func(t *testing.T) {
		testenv.Eventually(ctx, t, 30*time.Second, "/readyz failing on the refused apply", func(ctx context.Context) error {
			code, body, err := readyz(ctx, probes)
			if err != nil {
				return err
			}
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "kernel says no") {
				return fmt.Errorf("/readyz: %d %q, want 503 naming the apply error", code, body)
			}
			return nil
		})
		dp.setFail(nil)
		testenv.Eventually(ctx, t, 10*time.Second, "/readyz ready", func(ctx context.Context) error {
			code, body, err := readyz(ctx, probes)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("/readyz: %d %q, want 200", code, body)
			}
			return nil
		})
	})

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

	t.Run("fills in the liveness key that only gateways read", func(t *testing.T) {
		testenv.Eventually(ctx, t, 10*time.Second, "liveness key", func(ctx context.Context) error {
			var s corev1.Secret
			if err := admin.Get(ctx, client.ObjectKey{Namespace: sys, Name: election.LivenessKeySecret}, &s); err != nil {
				return err
			}
			if len(s.Data[election.LivenessKeyField]) != election.LivenessKeyLen {
				return fmt.Errorf("key has %d bytes", len(s.Data[election.LivenessKeyField]))
			}
			return nil
		})
		var s corev1.Secret
		agent := testenv.Client(t, testenv.As(ctx, t, cfg, sys, "mcnet-route-agent"))
		if err := agent.Get(ctx, client.ObjectKey{Namespace: sys, Name: election.LivenessKeySecret}, &s); !apierrors.IsForbidden(err) {
			t.Errorf("the route agent reads the liveness key: %v", err)
		}
	})

	t.Run("drives the dataplane to the remote gateway", func(t *testing.T) {
		testenv.Eventually(ctx, t, 10*time.Second, "gateway State", func(context.Context) error {
			s, ok := dp.last()
			if !ok || s.Gateway == nil || len(s.Remotes) != 1 {
				return fmt.Errorf("last State %+v", s)
			}
			r := s.Remotes[0]
			// hub prefers WireGuard in the fleet table, so the pair uses it.
			if r.ClusterID != "hub" || r.Cable.Driver != dataplane.DriverWireGuard || r.Cable.Endpoints[0] != netip.MustParseAddr("198.18.100.10") {
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
			// One connection per member of the fleet table: west publishes nothing here.
			if st.HAStatus != mcnetv1.HAActive || st.LocalEndpoint == nil || len(st.Connections) != 2 ||
				st.Connections[1].Cluster != "west" || !strings.Contains(st.Connections[1].Message, "endpoint missing") {
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
		// Owned by its Node: the garbage collector removes it with the node.
		var g mcnetv1.Gateway
		if err := admin.Get(ctx, client.ObjectKey{Namespace: sys, Name: node.Name}, &g); err != nil {
			t.Fatal(err)
		}
		if refs := g.OwnerReferences; len(refs) != 1 || refs[0].Kind != "Node" || refs[0].UID != node.UID {
			t.Errorf("Gateway owners %+v, want the Node %s (uid %s)", refs, node.Name, node.UID)
		}
		if c := g.Status.Connections[0]; c.Cable == "" || c.Port == 0 {
			t.Errorf("connection to hub reports no cable: %+v", c)
		}
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
		err := admin.Get(ctx, client.ObjectKey{Namespace: sys, Name: agent.LeaseName}, &l)
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

// startEast starts the API server of the test fleet's east cluster and applies what
// the render gives it (the CRDs and the cluster's overlay), as Flux would; it returns
// the fleet, the rendered tree, the API server's config and an administrator's client.
func startEast(t *testing.T) (*mcnetv1.ClusterSet, kustomize.Tree, *rest.Config, client.Client) {
	t.Helper()
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
	return cs, tree, cfg, testenv.Client(t, cfg)
}

// TestEngineTrustsOnlyTheTable runs the gateway against a real API server with
// Endpoints that no member's broker identity could have written (an administrator, or
// a broker without its policy, let them through): a member claiming the whole IPv6
// internet and the metadata service, and a cluster outside the fleet. The gateway
// routes only what the fleet table allocates, says on its Gateway and in an Event who
// published what, and follows a change of the table without a restart.
func TestEngineTrustsOnlyTheTable(t *testing.T) {
	ctx := t.Context()
	cs, tree, cfg, admin := startEast(t)
	sys := mcnetv1.SystemNamespace
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "east-gw-0", Labels: map[string]string{mcnetv1.GatewayLabel: "true"},
		Annotations: map[string]string{agent.HealthCheckIPAnnotation: "127.0.0.2"}}}
	if err := admin.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.1.10"}}
	if err := admin.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	create := func(ep mcnetv1.Endpoint) {
		t.Helper()
		ep.Namespace, ep.Spec.HealthCheckIPs = sys, nil
		if err := admin.Create(ctx, &ep); err != nil {
			t.Fatal(err)
		}
	}
	create(endpoint("west", mcnetv1.CableWireGuard, "10.20.0.0/16", "::/0", "169.254.169.254/32", "10.10.0.0/16"))
	create(endpoint("evil", mcnetv1.CableWireGuard, "10.66.0.0/16"))

	conf, err := agentconfig.Parse(tree[path.Join(kustomize.DirClusters, "east", mcnetv1.AgentConfigKey)])
	if err != nil {
		t.Fatal(err)
	}
	conf.Gateway.HealthCheckPort = int32(freeUDPPort(t))
	o := Options{
		Common:             agent.Common{Process: agentconfig.Process{Namespace: sys}, Config: conf, NodeName: node.Name},
		MetricsBindAddress: "0",
		LeaseDuration:      time.Second, RenewDeadline: 800 * time.Millisecond, RetryPeriod: 200 * time.Millisecond,
		ProbeInterval: 200 * time.Millisecond, StatusInterval: time.Second,
	}
	dp := &fakeDataplane{}
	gw := startEngine(ctx, t, o, testenv.As(ctx, t, cfg, sys, "mcnet-gateway"), dp)
	defer gw.stop(t)

	routed := func(want map[string][]string) func(context.Context) error {
		return func(context.Context) error {
			s, ok := dp.last()
			if !ok {
				return errors.New("nothing applied")
			}
			got := map[string][]string{}
			for _, r := range s.Remotes {
				for _, p := range r.CIDRs {
					got[r.ClusterID] = append(got[r.ClusterID], p.String())
				}
			}
			if d := cmp.Diff(want, got); d != "" {
				return fmt.Errorf("routed (-want +got):\n%s", d)
			}
			return nil
		}
	}
	t.Run("routes only the allocation and says who published what", func(t *testing.T) {
		testenv.Eventually(ctx, t, 30*time.Second, "west's allocation only, nothing of evil", routed(map[string][]string{"west": {"10.20.0.0/16"}}))
		testenv.Eventually(ctx, t, 30*time.Second, "RemotesWithinAllocation False", func(ctx context.Context) error {
			var g mcnetv1.Gateway
			if err := admin.Get(ctx, client.ObjectKey{Namespace: sys, Name: node.Name}, &g); err != nil {
				return err
			}
			c := meta.FindStatusCondition(g.Status.Conditions, mcnetv1.GatewayConditionRemotesInAllocation)
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != mcnetv1.ReasonOutsideAllocation {
				return fmt.Errorf("condition %+v", c)
			}
			for _, want := range []string{`cluster "evil" is not a member of fleet prod`, "Endpoint west spec.subnets[1] ::/0: outside its allocation", "169.254.169.254/32", "10.10.0.0/16"} {
				if !strings.Contains(c.Message, want) {
					return fmt.Errorf("message lacks %q: %s", want, c.Message)
				}
			}
			for _, conn := range g.Status.Connections {
				if conn.Cluster == "evil" {
					return errors.New("a connection to a cluster outside the fleet")
				}
			}
			return nil
		})
		testenv.Eventually(ctx, t, 10*time.Second, "an OutsideAllocation Event", func(ctx context.Context) error {
			var evs corev1.EventList
			if err := admin.List(ctx, &evs, client.InNamespace(sys)); err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Reason == mcnetv1.ReasonOutsideAllocation && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "::/0") {
					return nil
				}
			}
			return errors.New("no OutsideAllocation Event")
		})
	})

	var table mcnetv1.Fleet
	if err := admin.Get(ctx, client.ObjectKey{Name: cs.Name}, &table); err != nil {
		t.Fatal(err)
	}
	t.Run("a cluster added to the table is routed without a restart", func(t *testing.T) {
		table.Spec.Clusters = append(table.Spec.Clusters, mcnetv1.FleetMember{Name: "evil", PodCIDRs: []string{"10.66.0.0/16"}, ServiceCIDRs: []string{"10.166.0.0/16"},
			Cable: mcnetv1.CableWireGuard, CablePort: 51820})
		if err := admin.Update(ctx, &table); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(ctx, t, 30*time.Second, "evil routed once a member", routed(map[string][]string{"west": {"10.20.0.0/16"}, "evil": {"10.66.0.0/16"}}))
	})
	t.Run("a cluster removed from the table is dropped without a restart", func(t *testing.T) {
		table.Spec.Clusters = slices.DeleteFunc(table.Spec.Clusters, func(m mcnetv1.FleetMember) bool { return m.Name == "west" })
		if err := admin.Update(ctx, &table); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(ctx, t, 30*time.Second, "west dropped", routed(map[string][]string{"evil": {"10.66.0.0/16"}}))
	})
}
