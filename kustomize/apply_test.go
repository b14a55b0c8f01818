package kustomize_test

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/testenv"
	"github.com/mcnet-io/mcnet/kustomize"
)

// TestRenderedTreeAppliesToRealAPIServers renders a three-cluster fleet and applies, per
// cluster, the CRDs and then the cluster's overlay (and the broker on its cluster) to real
// API servers, as Flux would; then checks the broker's RBAC and admission policy with the
// clusters' own identities.
func TestRenderedTreeAppliesToRealAPIServers(t *testing.T) {
	ctx := t.Context()
	f := testenv.InstallFleet(ctx, t, "testdata/fleet.yaml")
	cs := f.Set
	clients := map[string]client.Client{}
	configs := f.Configs
	for name, cfg := range configs {
		// A client made after the CRDs exist discovers the new kinds.
		clients[name] = testenv.Client(t, cfg)
	}

	t.Run("workloads are configured for their cluster", func(t *testing.T) {
		for _, c := range cs.Spec.Clusters {
			var ds appsv1.DaemonSet
			if err := clients[c.Name].Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: "mcnet-gateway"}, &ds); err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			var cmName string
			for _, v := range ds.Spec.Template.Spec.Volumes {
				if v.ConfigMap != nil && strings.HasPrefix(v.ConfigMap.Name, mcnetv1.AgentConfigMap+"-") {
					cmName = v.ConfigMap.Name
				}
			}
			var cm corev1.ConfigMap
			if err := clients[c.Name].Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: cmName}, &cm); err != nil {
				t.Fatalf("%s: the gateway's config %q: %v", c.Name, cmName, err)
			}
			ac, err := agentconfig.Parse([]byte(cm.Data[mcnetv1.AgentConfigKey]))
			if err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			if ac.ClusterID != c.Name || ac.Cable != c.Cable || ac.Fleet != cs.Name {
				t.Errorf("%s: the gateway's config says cluster %s, cable %s, fleet %s", c.Name, ac.ClusterID, ac.Cable, ac.Fleet)
			}
			var f mcnetv1.Fleet
			if err := clients[c.Name].Get(ctx, client.ObjectKey{Name: cs.Name}, &f); err != nil || len(f.Spec.Clusters) != len(cs.Spec.Clusters) {
				t.Errorf("%s: the fleet table: %d members, %v", c.Name, len(f.Spec.Clusters), err)
			}
		}
	})

	t.Run("each cluster holds its MCS identity as About API ClusterProperties", func(t *testing.T) {
		for _, c := range cs.Spec.Clusters {
			for name, want := range map[string]string{kustomize.ClusterIDProperty: c.Name, kustomize.ClusterSetIDProperty: cs.Name} {
				var p unstructured.Unstructured
				p.SetAPIVersion("about.k8s.io/v1alpha1")
				p.SetKind("ClusterProperty")
				if err := clients[c.Name].Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
					t.Fatalf("%s: ClusterProperty %s: %v", c.Name, name, err)
				}
				if got, _, _ := unstructured.NestedString(p.Object, "spec", "value"); got != want {
					t.Errorf("%s: ClusterProperty %s = %q, want %q", c.Name, name, got, want)
				}
			}
		}
	})

	t.Run("broker identities write only their own objects", func(t *testing.T) {
		testBrokerScoping(ctx, t, cs, configs[cs.Spec.Broker.Cluster], clients[cs.Spec.Broker.Cluster])
	})

	t.Run("a hostile member's content is refused", func(t *testing.T) {
		testAllocationPolicy(ctx, t, cs, configs[cs.Spec.Broker.Cluster], clients[cs.Spec.Broker.Cluster])
	})

	t.Run("agents can do their jobs and no more", func(t *testing.T) {
		for _, c := range cs.Spec.Clusters {
			testAgentRBAC(ctx, t, configs[c.Name], c.Name)
		}
	})
}

// impersonate returns a client that authenticates with a token minted for a
// ServiceAccount, as the component using it would.
func impersonate(ctx context.Context, t *testing.T, admin *rest.Config, ns, sa string) client.Client {
	t.Helper()
	return testenv.Client(t, testenv.As(ctx, t, admin, ns, sa))
}

func endpoint(ns, cluster string) *mcnetv1.Endpoint {
	return &mcnetv1.Endpoint{
		ObjectMeta: metav1.ObjectMeta{
			Name:      cluster,
			Namespace: ns,
			Labels:    map[string]string{mcnetv1.ClusterLabel: cluster},
		},
		Spec: mcnetv1.EndpointSpec{
			ClusterID: cluster, Hostname: cluster + "-gw", Cable: mcnetv1.CableWireGuard, Port: 51820,
			PrivateIPs: []string{"198.18.0.10"}, Subnets: []string{testSubnets[cluster]},
		},
	}
}

// testSubnets are the pod CIDRs testdata/fleet.yaml allocates.
var testSubnets = map[string]string{"hub": "10.0.0.0/16", "east": "10.10.0.0/16", "west": "10.20.0.0/16"}

func wantForbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s: want 403 Forbidden, got %v", what, err)
	}
}

func testBrokerScoping(ctx context.Context, t *testing.T, cs *mcnetv1.ClusterSet, admin *rest.Config, adminClient client.Client) {
	ns := cs.Spec.Broker.Namespace
	east := impersonate(ctx, t, admin, ns, kustomize.BrokerServiceAccount("east"))
	west := impersonate(ctx, t, admin, ns, kustomize.BrokerServiceAccount("west"))

	if err := east.Create(ctx, endpoint(ns, "east")); err != nil {
		t.Fatalf("east publishes its own Endpoint: %v", err)
	}
	if err := west.Create(ctx, endpoint(ns, "west")); err != nil {
		t.Fatalf("west publishes its own Endpoint: %v", err)
	}
	var list mcnetv1.EndpointList
	if err := east.List(ctx, &list, client.InNamespace(ns)); err != nil || len(list.Items) != 2 {
		t.Errorf("east lists every Endpoint: %d items, %v", len(list.Items), err)
	}

	forged := endpoint(ns, "west")
	forged.Name = "west-forged"
	wantForbidden(t, "east creates an Endpoint labelled west", east.Create(ctx, forged))

	var westEP mcnetv1.Endpoint
	if err := east.Get(ctx, client.ObjectKey{Namespace: ns, Name: "west"}, &westEP); err != nil {
		t.Fatal(err)
	}
	westEP.Spec.PrivateIPs = []string{"198.18.0.66"}
	wantForbidden(t, "east updates west's Endpoint", east.Update(ctx, &westEP))
	relabel := westEP.DeepCopy()
	relabel.Labels[mcnetv1.ClusterLabel] = "east"
	wantForbidden(t, "east relabels west's Endpoint as its own", east.Update(ctx, relabel))
	wantForbidden(t, "east deletes west's Endpoint", east.Delete(ctx, &westEP))

	var secrets corev1.SecretList
	wantForbidden(t, "east lists Secrets on the broker", east.List(ctx, &secrets, client.InNamespace(ns)))
	wantForbidden(t, "east reads a Secret on the broker", east.Get(ctx, client.ObjectKey{Namespace: ns, Name: "anything"}, &corev1.Secret{}))
	wantForbidden(t, "east writes outside the broker namespace", east.Create(ctx, endpoint("default", "east")))

	var own mcnetv1.Endpoint
	if err := east.Get(ctx, client.ObjectKey{Namespace: ns, Name: "east"}, &own); err != nil {
		t.Fatal(err)
	}
	own.Spec.PublicIPs = []string{"198.19.0.10"}
	if err := east.Update(ctx, &own); err != nil {
		t.Errorf("east updates its own Endpoint: %v", err)
	}
	if err := east.Delete(ctx, &own); err != nil {
		t.Errorf("east withdraws its own Endpoint: %v", err)
	}
	// The policy binds cluster identities only: an administrator may still clean up.
	if err := adminClient.Delete(ctx, &westEP); err != nil {
		t.Errorf("admin deletes west's Endpoint: %v", err)
	}
}

func testAgentRBAC(ctx context.Context, t *testing.T, cfg *rest.Config, cluster string) {
	ns := mcnetv1.SystemNamespace
	controller := impersonate(ctx, t, cfg, ns, "mcnet-controller")
	gateway := impersonate(ctx, t, cfg, ns, "mcnet-gateway")
	agent := impersonate(ctx, t, cfg, ns, "mcnet-route-agent")
	dnsServer := impersonate(ctx, t, cfg, ns, "mcnet-dns")

	mirror := &mcnetv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Name: "remote", Namespace: ns},
		Spec:       mcnetv1.ClusterObjSpec{ClusterID: "remote", PodCIDRs: []string{"10.99.0.0/16"}, ServiceCIDRs: []string{"10.199.0.0/16"}, Cable: mcnetv1.CableVXLAN},
	}
	if err := controller.Create(ctx, mirror); err != nil {
		t.Errorf("%s: controller mirrors a remote Cluster: %v", cluster, err)
	}
	gw := &mcnetv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "gw-node", Namespace: ns}}
	if err := gateway.Create(ctx, gw); err != nil {
		t.Fatalf("%s: gateway creates its Gateway: %v", cluster, err)
	}
	gw.Status.HAStatus = mcnetv1.HAActive
	if err := gateway.Status().Update(ctx, gw); err != nil {
		t.Errorf("%s: gateway writes Gateway status: %v", cluster, err)
	}
	for name, c := range map[string]client.Client{"controller": controller, "gateway": gateway, "route agent": agent, "dns": dnsServer} {
		var fleets mcnetv1.FleetList
		if err := c.List(ctx, &fleets); err != nil || len(fleets.Items) != 1 {
			t.Errorf("%s: %s reads the fleet table: %d, %v", cluster, name, len(fleets.Items), err)
		}
		if len(fleets.Items) == 1 {
			wantForbidden(t, cluster+": "+name+" edits the fleet table", c.Update(ctx, &fleets.Items[0]))
		}
	}
	var clusters mcnetv1.ClusterList
	if err := agent.List(ctx, &clusters, client.InNamespace(ns)); err != nil {
		t.Errorf("%s: route agent lists Clusters: %v", cluster, err)
	}
	wantForbidden(t, cluster+": route agent deletes a Cluster", agent.Delete(ctx, mirror))
	// The DNS server only reads what it answers from.
	var gws mcnetv1.GatewayList
	if err := dnsServer.List(ctx, &gws, client.InNamespace(ns)); err != nil || len(gws.Items) == 0 {
		t.Errorf("%s: dns lists Gateways: %d, %v", cluster, len(gws.Items), err)
	}
	wantForbidden(t, cluster+": dns writes Gateway status", dnsServer.Status().Update(ctx, gw))
	wantForbidden(t, cluster+": dns deletes a Cluster", dnsServer.Delete(ctx, mirror))
	for name, c := range map[string]client.Client{"controller": controller, "gateway": gateway, "route agent": agent, "dns": dnsServer} {
		var secrets corev1.SecretList
		wantForbidden(t, cluster+": "+name+" lists Secrets", c.List(ctx, &secrets))
	}
}
