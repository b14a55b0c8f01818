package controller_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/controller"
	"github.com/mcnet-io/mcnet/internal/testenv"
)

// closedAddr returns a loopback address nothing listens on: a broker that is down.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

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
	down.Host = "https://" + closedAddr(t)
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

	// /readyz answers at once, and ready: the broker is not part of readiness.
	hc := &http.Client{Timeout: 3 * time.Second}
	testenv.Eventually(ctx, t, 10*time.Second, "/readyz ready", func(ctx context.Context) error {
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
	if _, _, err := m.resolve("nope.app.svc.clusterset.local", dns.TypeA); err != nil {
		t.Errorf("DNS after the wait: %v", err)
	}
}
