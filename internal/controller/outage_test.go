package controller_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/controller"
	"github.com/mcnet-io/mcnet/internal/testenv"
)

// TestStartWithoutBroker starts a cluster's controller and DNS server while the broker
// is down. The controller must do its local work (announce the cluster, say the broker
// is unreachable), answer /readyz within a bound and keep running past the time
// controller-runtime gives a cache to sync; the DNS server must serve.
func TestStartWithoutBroker(t *testing.T) {
	ctx := t.Context()
	f := testenv.InstallFleet(ctx, t, "../../kustomize/testdata/fleet.yaml")
	dir := t.TempDir()
	const name = "east"
	local, _ := f.ControllerKubeconfigs(ctx, t, dir, name)
	down := rest.CopyConfig(f.Broker)
	down.Host = "https://" + testenv.UnusedTCPAddr(t)
	broker := testenv.WriteKubeconfig(t, dir, "down-broker", down)
	probe := freeAddr(t)
	dnsLocal := testenv.WriteKubeconfig(t, dir, name+"-dns", testenv.As(ctx, t, f.Configs[name], mcnetv1.SystemNamespace, "mcnet-dns"))
	m := &member{name: name, cfg: f.Configs[name], client: testenv.Client(t, f.Configs[name]), opts: controller.Options{
		Process: agentconfig.Process{Kubeconfig: local, Namespace: mcnetv1.SystemNamespace},
		Config:  f.AgentConfig(t, name), BrokerKubeconfig: broker,
		MetricsAddress: "0", ProbeAddress: probe, LeaderElect: true,
	}, dns: &controller.DNSOptions{
		Process: agentconfig.Process{Kubeconfig: dnsLocal, Namespace: mcnetv1.SystemNamespace},
		Config:  f.AgentConfig(t, name), BindAddress: freeAddr(t), MetricsAddress: "0", ProbeAddress: "0",
	}}
	m.startTB(ctx, t)
	t.Cleanup(func() { m.haltTB(t) })

	testenv.Eventually(ctx, t, 30*time.Second, "the cluster announced with the broker unreachable", func(ctx context.Context) error {
		var c mcnetv1.Cluster
		if err := m.client.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: name}, &c); err != nil {
			return err
		}
		if !meta.IsStatusConditionFalse(c.Status.Conditions, controller.ConditionBrokerConnected) {
			return fmt.Errorf("conditions %+v", c.Status.Conditions)
		}
		return nil
	})
	testenv.Eventually(ctx, t, 30*time.Second, "the DNS server answers", answers(m, "nope.app.svc.clusterset.local", dns.TypeA))

	// /readyz answers at once, and ready: the broker is not part of readiness. The
	// bound is each answer's; the window around it is for a machine loaded by other
	// suites (a manager that lost its Lease to a slow API server starts over).
	hc := &http.Client{Timeout: 3 * time.Second}
	testenv.Eventually(ctx, t, 30*time.Second, "/readyz ready", func(ctx context.Context) error {
		start := time.Now()
		resp, err := hc.Get("http://" + probe + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if d := time.Since(start); d > 2*time.Second {
			return fmt.Errorf("/readyz took %s", d)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})

	// controller-runtime gives a controller's sources 2 minutes to sync by default, then
	// the manager exits. Wait past that with the broker still down.
	select {
	case err := <-m.done:
		t.Fatalf("controller exited with the broker down: %v", err)
	case <-time.After(2*time.Minute + 10*time.Second):
	}
	// One UDP question with a 1 s timeout can be lost to a loaded machine; the DNS
	// server must answer, not answer the first question.
	testenv.Eventually(ctx, t, 15*time.Second, "the DNS server answers after the wait", answers(m, "nope.app.svc.clusterset.local", dns.TypeA))
}

// cutter is a TCP proxy to an API server whose cut closes the listener and every
// connection through it, and whose restore listens again on the same address.
type cutter struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	l      net.Listener
	conns  map[net.Conn]bool
}

func newCutter(t *testing.T, target string) *cutter {
	c := &cutter{t: t, target: target, conns: map[net.Conn]bool{}}
	c.restore()
	t.Cleanup(c.cut)
	return c
}

func (c *cutter) restore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := c.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		c.t.Fatal(err)
	}
	c.l, c.addr = l, l.Addr().String()
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", c.target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			if c.l != l {
				c.mu.Unlock()
				in.Close()
				out.Close()
				return
			}
			c.conns[in], c.conns[out] = true, true
			c.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close(); in.Close() }()
			go func() { _, _ = io.Copy(in, out); out.Close(); in.Close() }()
		}
	}()
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.l != nil {
		c.l.Close()
		c.l = nil
	}
	for conn := range c.conns {
		conn.Close()
	}
	clear(c.conns)
}

// TestWaitsOutAnAPIServerCut cuts a leading controller off its own API server for
// longer than its Lease. The manager stops (leadership lost) and Run waits in-process:
// /healthz answers throughout (the kubelet must not restart the container), /readyz
// says not ready while no manager runs, and once the API server is back the controller
// is ready again and leads (it recreates its deleted Cluster object), without Run
// having returned.
func TestWaitsOutAnAPIServerCut(t *testing.T) {
	ctx := t.Context()
	f := testenv.InstallFleet(ctx, t, "../../kustomize/testdata/fleet.yaml")
	dir := t.TempDir()
	const name = "east"
	admin := f.Configs[name]
	u, err := url.Parse(admin.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutter(t, u.Host)
	via := testenv.As(ctx, t, admin, mcnetv1.SystemNamespace, "mcnet-controller")
	via.Host = "https://" + proxy.addr
	local := testenv.WriteKubeconfig(t, dir, name+"-via", via)
	_, broker := f.ControllerKubeconfigs(ctx, t, dir, name)
	probe := freeAddr(t)
	m := &member{name: name, cfg: admin, client: testenv.Client(t, admin), opts: controller.Options{
		Process: agentconfig.Process{Kubeconfig: local, Namespace: mcnetv1.SystemNamespace},
		Config:  f.AgentConfig(t, name), BrokerKubeconfig: broker,
		MetricsAddress: "0", ProbeAddress: probe, LeaderElect: true,
	}}
	m.startTB(ctx, t)
	t.Cleanup(func() { m.haltTB(t) })

	hc := &http.Client{Timeout: 2 * time.Second}
	status := func(path string) (int, error) {
		resp, err := hc.Get("http://" + probe + path)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	want := func(path string, code int) func(context.Context) error {
		return func(context.Context) error {
			got, err := status(path)
			if err == nil && got != code {
				err = fmt.Errorf("%s: %d, want %d", path, got, code)
			}
			return err
		}
	}
	cluster := client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: name}
	announced := func(ctx context.Context) error {
		return m.client.Get(ctx, cluster, &mcnetv1.Cluster{})
	}
	testenv.Eventually(ctx, t, 30*time.Second, "ready", want("/readyz", http.StatusOK))
	testenv.Eventually(ctx, t, 30*time.Second, "the cluster announced", announced)

	proxy.cut()
	t.Log("API server cut")
	// Longer than the Lease (4 s): the leader stops.
	cutEnd := time.Now().Add(12 * time.Second)
	var notReady bool
	for time.Now().Before(cutEnd) {
		if code, err := status("/healthz"); err != nil || code != http.StatusOK {
			t.Fatalf("/healthz during the cut: %d %v", code, err)
		}
		if code, err := status("/readyz"); err == nil && code == http.StatusServiceUnavailable {
			notReady = true
		}
		select {
		case err := <-m.done:
			t.Fatalf("Run returned during the cut: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !notReady {
		t.Error("/readyz said ready throughout the cut: no manager stopped")
	}
	if err := m.client.Delete(ctx, &mcnetv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: cluster.Namespace, Name: cluster.Name}}); err != nil {
		t.Fatal(err)
	}
	proxy.restore()
	t.Log("API server back")
	testenv.Eventually(ctx, t, 30*time.Second, "ready again", want("/readyz", http.StatusOK))
	testenv.Eventually(ctx, t, 30*time.Second, "the cluster announced again (leading)", announced)
	select {
	case err := <-m.done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
}
