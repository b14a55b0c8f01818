package controller_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/controller"
	"github.com/mcnet-io/mcnet/internal/testenv"
)

type member struct {
	name   string
	cfg    *rest.Config
	client client.Client
	opts   controller.Options
	// dns, when set, is the member's DNS server, run beside the controller.
	dns     *controller.DNSOptions
	stop    context.CancelFunc
	done    chan error
	dnsDone chan error
}

func (m *member) start(ctx context.Context, t *testing.T) {
	t.Helper()
	ctx, m.stop = context.WithCancel(ctx)
	m.done = make(chan error, 1)
	logger := zap.New(zap.UseDevMode(true), zap.WriteTo(testWriter{t, m.name}))
	go func() { m.done <- controller.Run(log.IntoContext(ctx, logger), m.opts) }()
}

func (m *member) halt(t *testing.T) {
	t.Helper()
	m.stop()
	select {
	case err := <-m.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s controller: %v", m.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s controller did not stop", m.name)
	}
}

type testWriter struct {
	t    *testing.T
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("[%s] %s", w.name, p)
	return len(p), nil
}

// TestBrokerSync runs the real controller of three clusters against three real API
// servers (the broker on "hub"), with the broker credentials the rendered RBAC grants.
func TestBrokerSync(t *testing.T) {
	ctx := t.Context()
	f := testenv.InstallFleet(ctx, t, "../../kustomize/testdata/fleet.yaml")
	cs, brokerCfg := f.Set, f.Broker
	dir := t.TempDir()
	ns := cs.Spec.Broker.Namespace
	members := map[string]*member{}
	for _, c := range cs.Spec.Clusters {
		// Each controller runs as its rendered ServiceAccount locally and as its own
		// broker identity on the broker, exactly as in a cluster.
		local, broker := f.ControllerKubeconfigs(ctx, t, dir, c.Name)
		cfg := f.Configs[c.Name]
		m := &member{name: c.Name, cfg: cfg, client: testenv.Client(t, cfg), opts: controller.Options{
			Process: agentconfig.Process{Kubeconfig: local, Namespace: mcnetv1.SystemNamespace},
			Config:  f.AgentConfig(t, c.Name), BrokerKubeconfig: broker,
			MetricsAddress: "0", ProbeAddress: "0", LeaderElect: true,
		}}
		members[c.Name] = m
		m.start(ctx, t)
	}
	t.Cleanup(func() {
		for _, m := range members {
			m.halt(t)
		}
	})
	brokerClient := testenv.Client(t, brokerCfg)
	sys := mcnetv1.SystemNamespace

	t.Run("every cluster is announced and mirrored everywhere", func(t *testing.T) {
		for _, m := range members {
			for _, other := range cs.Spec.Clusters {
				testenv.Eventually(ctx, t, 30*time.Second, fmt.Sprintf("%s sees Cluster %s", m.name, other.Name), func(ctx context.Context) error {
					var c mcnetv1.Cluster
					if err := m.client.Get(ctx, client.ObjectKey{Namespace: sys, Name: other.Name}, &c); err != nil {
						return err
					}
					if c.Spec.PodCIDRs[0] != other.PodCIDRs[0] || c.Labels[mcnetv1.ClusterLabel] != other.Name {
						return fmt.Errorf("got %+v %v", c.Spec, c.Labels)
					}
					return nil
				})
			}
		}
		for _, m := range members {
			testenv.Eventually(ctx, t, 30*time.Second, m.name+" reports the broker connected", func(ctx context.Context) error {
				var c mcnetv1.Cluster
				if err := m.client.Get(ctx, client.ObjectKey{Namespace: sys, Name: m.name}, &c); err != nil {
					return err
				}
				if !meta.IsStatusConditionTrue(c.Status.Conditions, controller.ConditionBrokerConnected) ||
					!meta.IsStatusConditionTrue(c.Status.Conditions, controller.ConditionReady) {
					return fmt.Errorf("conditions %+v", c.Status.Conditions)
				}
				return nil
			})
		}
		var owned mcnetv1.Cluster
		if err := brokerClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "east"}, &owned); err != nil {
			t.Fatal(err)
		}
		if refs := owned.OwnerReferences; len(refs) != 1 || refs[0].Name != "cluster-east" {
			t.Errorf("broker copy of east is not owned by its broker identity: %+v", refs)
		}
	})

	east, west := members["east"], members["west"]
	ep := &mcnetv1.Endpoint{
		ObjectMeta: metav1.ObjectMeta{Name: "east", Namespace: sys, Labels: map[string]string{
			mcnetv1.ClusterLabel:               "east",
			"kustomize.toolkit.fluxcd.io/name": "mcnet",
			"argocd.argoproj.io/instance":      "mcnet-east",
		}},
		Spec: mcnetv1.EndpointSpec{ClusterID: "east", Hostname: "east-gw-0", Cable: mcnetv1.CableVXLAN, Port: 4789,
			PrivateIPs: []string{"198.18.1.10"}, Subnets: []string{"10.10.0.0/16", "10.110.0.0/16"}},
	}
	endpointIn := func(c client.Client, namespace string, want []string) func(context.Context) error {
		return func(ctx context.Context) error {
			var got mcnetv1.Endpoint
			err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "east"}, &got)
			if want == nil {
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("still there (%v)", err)
			}
			if err != nil {
				return err
			}
			if fmt.Sprint(got.Spec.PrivateIPs) != fmt.Sprint(want) {
				return fmt.Errorf("privateIPs %v, want %v", got.Spec.PrivateIPs, want)
			}
			for k := range got.Labels {
				if k != mcnetv1.ClusterLabel && k != "app.kubernetes.io/managed-by" {
					return fmt.Errorf("copy carries label %s", k)
				}
			}
			return nil
		}
	}

	t.Run("an Endpoint propagates to the broker and every other cluster", func(t *testing.T) {
		if err := east.client.Create(ctx, ep); err != nil {
			t.Fatal(err)
		}
		want := []string{"198.18.1.10"}
		testenv.Eventually(ctx, t, 10*time.Second, "broker copy", endpointIn(brokerClient, ns, want))
		testenv.Eventually(ctx, t, 10*time.Second, "west's mirror", endpointIn(west.client, sys, want))

		// A change (failover to another gateway) follows.
		if err := east.client.Get(ctx, client.ObjectKeyFromObject(ep), ep); err != nil {
			t.Fatal(err)
		}
		ep.Spec.PrivateIPs = []string{"198.18.1.11"}
		if err := east.client.Update(ctx, ep); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(ctx, t, 10*time.Second, "west's mirror after failover", endpointIn(west.client, sys, []string{"198.18.1.11"}))
	})

	t.Run("a mirror edited by hand is put back", func(t *testing.T) {
		var mirror mcnetv1.Endpoint
		if err := west.client.Get(ctx, client.ObjectKey{Namespace: sys, Name: "east"}, &mirror); err != nil {
			t.Fatal(err)
		}
		mirror.Spec.PrivateIPs = []string{"198.18.9.9"}
		if err := west.client.Update(ctx, &mirror); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(ctx, t, 10*time.Second, "west's mirror restored", endpointIn(west.client, sys, []string{"198.18.1.11"}))
	})

	t.Run("a withdrawal while a controller is down converges on restart", func(t *testing.T) {
		west.halt(t)
		if err := east.client.Delete(ctx, ep); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(ctx, t, 10*time.Second, "broker copy withdrawn", endpointIn(brokerClient, ns, nil))
		var stale mcnetv1.Endpoint
		if err := west.client.Get(ctx, client.ObjectKey{Namespace: sys, Name: "east"}, &stale); err != nil {
			t.Fatalf("west's mirror should still be there while its controller is down: %v", err)
		}
		west.start(ctx, t)
		testenv.Eventually(ctx, t, 30*time.Second, "west's stale mirror removed after restart", endpointIn(west.client, sys, nil))
	})
}
