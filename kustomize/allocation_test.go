package kustomize_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/naming"
	"github.com/mcnet-io/mcnet/kustomize"
)

// testAllocationPolicy plays west, a compromised member holding its own broker
// credentials, against the broker's rendered admission policies: everything it writes
// outside what the fleet table allocates to it is refused, with a message naming the
// cluster and what it published; what it may write still goes through. A cluster
// identity the table does not list (an administrator's slip in RBAC) can write nothing.
func testAllocationPolicy(ctx context.Context, t *testing.T, cs *mcnetv1.ClusterSet, admin *rest.Config, adminClient client.Client) {
	ns := cs.Spec.Broker.Namespace
	west := impersonate(ctx, t, admin, ns, kustomize.BrokerServiceAccount("west"))

	ep := func(edit func(*mcnetv1.Endpoint)) client.Object {
		e := endpoint(ns, "west")
		e.Name = "west"
		e.Spec.HealthCheckIPs = []string{"10.20.0.1"}
		edit(e)
		return e
	}
	cl := func(edit func(*mcnetv1.Cluster)) client.Object {
		c := &mcnetv1.Cluster{
			ObjectMeta: metav1.ObjectMeta{Name: "west", Namespace: ns, Labels: map[string]string{mcnetv1.ClusterLabel: "west"}},
			Spec:       mcnetv1.ClusterObjSpec{ClusterID: "west", PodCIDRs: []string{"10.20.0.0/16"}, ServiceCIDRs: []string{"10.120.0.0/16"}, Cable: mcnetv1.CableWireGuard},
		}
		edit(c)
		return c
	}
	export := func(edit func(*mcsv1alpha1.ServiceImport)) client.Object {
		si := &mcsv1alpha1.ServiceImport{
			ObjectMeta: metav1.ObjectMeta{Name: naming.BrokerName("app", "db", "west"), Namespace: ns, Labels: naming.BrokerLabels("app", "db", "west")},
			Spec:       mcsv1alpha1.ServiceImportSpec{Type: mcsv1alpha1.ClusterSetIP, Ports: []mcsv1alpha1.ServicePort{{Port: 5432, Protocol: corev1.ProtocolTCP}}},
		}
		edit(si)
		return si
	}
	slice := func(edit func(*discoveryv1.EndpointSlice)) client.Object {
		port, proto := int32(5432), corev1.ProtocolTCP
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: naming.BrokerName("app", "db", "west") + ".ipv4", Namespace: ns, Labels: naming.BrokerLabels("app", "db", "west")},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.120.0.10"}}},
			Ports:       []discoveryv1.EndpointPort{{Port: &port, Protocol: &proto}},
		}
		edit(s)
		return s
	}
	for _, tc := range []struct {
		attack string
		obj    client.Object
		want   string // in the refusal's message
	}{
		{"route hijack: the whole IPv6 internet", ep(func(e *mcnetv1.Endpoint) { e.Spec.Subnets = []string{"10.20.0.0/16", "::/0"} }),
			"cluster west publishes subnets outside its allocation (10.20.0.0/16, fd00:20::/56, 10.120.0.0/16, fd00:120::/108): ::/0"},
		{"route hijack: the metadata service", ep(func(e *mcnetv1.Endpoint) { e.Spec.Subnets = []string{"169.254.169.254/32"} }), "169.254.169.254/32"},
		{"route hijack: another member's pods", ep(func(e *mcnetv1.Endpoint) { e.Spec.Subnets = []string{"10.10.0.0/16"} }), "outside its allocation"},
		{"route hijack: a subnet a bit wider than its own", ep(func(e *mcnetv1.Endpoint) { e.Spec.Subnets = []string{"10.20.0.0/15"} }), "10.20.0.0/15"},
		{"tunnels into a member: a gateway address inside hub's pods", ep(func(e *mcnetv1.Endpoint) { e.Spec.PublicIPs = []string{"10.0.0.5"} }), "gateway addresses"},
		{"probes aimed outside: a health-check address outside its allocation", ep(func(e *mcnetv1.Endpoint) { e.Spec.HealthCheckIPs = []string{"169.254.169.254"} }), "health-check addresses"},
		{"impersonation: an Endpoint of its own claiming east", ep(func(e *mcnetv1.Endpoint) { e.Spec.ClusterID = "east" }), "may only write the object named west with spec.clusterID west"},
		{"squatting: an Endpoint named after east", ep(func(e *mcnetv1.Endpoint) { e.Name = "east" }), "not east"},
		{"impersonation: a Cluster announcing east's pods", cl(func(c *mcnetv1.Cluster) { c.Spec.PodCIDRs = []string{"10.10.0.0/16"} }), "announces networks outside its allocation"},
		{"service impersonation: an export labelled as east's", export(func(si *mcsv1alpha1.ServiceImport) { si.Labels[mcsv1alpha1.LabelSourceCluster] = "east" }),
			"may only publish exports labelled " + mcsv1alpha1.LabelSourceCluster + "=west"},
		{"service impersonation: an export named as east's", export(func(si *mcsv1alpha1.ServiceImport) { si.Name = naming.BrokerName("app", "db", "east") }), "<namespace>.<service>.west"},
		{"squatting: an export whose service label holds dots, to take a name east's export needs",
			export(func(si *mcsv1alpha1.ServiceImport) {
				si.Labels[mcsv1alpha1.LabelServiceName] = "db.east"
				si.Name = naming.BrokerName("app", "db.east", "west")
			}), "which must be DNS labels"},
		{"squatting: EndpointSlices whose namespace label holds dots",
			slice(func(s *discoveryv1.EndpointSlice) {
				s.Labels[naming.LabelServiceNamespace] = "app.db"
				s.Labels[mcsv1alpha1.LabelServiceName] = "east"
				s.Name = naming.BrokerName("app.db", "east", "west") + ".ipv4"
			}), "which must be DNS labels"},
		{"service impersonation: endpoints labelled as east's", slice(func(s *discoveryv1.EndpointSlice) { s.Labels[mcsv1alpha1.LabelSourceCluster] = "east" }), "source-cluster=west"},
		// (Kubernetes itself refuses link-local endpoint addresses.)
		{"DNS hijack: an endpoint at an upstream resolver", slice(func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Addresses = []string{"8.8.8.8"} }),
			"publishes endpoint addresses outside its allocation (10.20.0.0/16, fd00:20::/56, 10.120.0.0/16, fd00:120::/108): 8.8.8.8"},
		{"DNS hijack: an endpoint in east's services", slice(func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Addresses = []string{"10.110.0.10"} }), "10.110.0.10"},
		{"DNS hijack: FQDN endpoints", slice(func(s *discoveryv1.EndpointSlice) {
			s.AddressType, s.Endpoints[0].Addresses = discoveryv1.AddressTypeFQDN, []string{"evil.example.com"}
		}), "evil.example.com"},
	} {
		t.Run(tc.attack, func(t *testing.T) {
			err := west.Create(ctx, tc.obj)
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want 403 naming %q, got %v", tc.want, err)
			}
			if err == nil {
				_ = adminClient.Delete(ctx, tc.obj)
			}
		})
	}

	t.Run("a flood of subnets is refused by the schema", func(t *testing.T) {
		flood := ep(func(e *mcnetv1.Endpoint) {
			for i := range 9 {
				e.Spec.Subnets = append(e.Spec.Subnets, fmt.Sprintf("10.20.%d.0/24", i))
			}
		})
		if err := west.Create(ctx, flood); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "must have at most 8 items") {
			t.Errorf("want 422 (at most 8 subnets), got %v", err)
		}
	})

	t.Run("what west may publish goes through", func(t *testing.T) {
		for _, o := range []client.Object{
			ep(func(e *mcnetv1.Endpoint) { e.Spec.Subnets = []string{"10.20.0.0/16", "fd00:20::/56", "10.120.0.0/16"} }),
			cl(func(*mcnetv1.Cluster) {}), export(func(*mcsv1alpha1.ServiceImport) {}), slice(func(*discoveryv1.EndpointSlice) {}),
		} {
			if err := west.Create(ctx, o); err != nil {
				t.Errorf("west publishes its own %T: %v", o, err)
				continue
			}
			upd := o.DeepCopyObject().(client.Object)
			if e, ok := upd.(*mcnetv1.Endpoint); ok {
				e.Spec.Subnets = append(e.Spec.Subnets, "0.0.0.0/0")
				if err := west.Update(ctx, e); !apierrors.IsForbidden(err) {
					t.Errorf("west widens its Endpoint by update: want 403, got %v", err)
				}
			}
			if err := west.Delete(ctx, o); err != nil {
				t.Errorf("west withdraws its %T: %v", o, err)
			}
		}
	})

	t.Run("the broker cluster's own components write only through its broker identity", func(t *testing.T) {
		// On the broker's cluster the controller and gateway ServiceAccounts hold
		// cluster-wide rights on the broker's kinds; the policy keeps them out of the
		// broker namespace, so they are held to the policies like every member.
		for _, sa := range []string{"mcnet-controller", "mcnet-gateway"} {
			local := impersonate(ctx, t, admin, mcnetv1.SystemNamespace, sa)
			e := endpoint(ns, "east")
			e.Spec.Subnets = []string{"10.10.0.0/16"}
			err := local.Create(ctx, e)
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "only with their cluster's broker identity") {
				t.Errorf("%s writes east's Endpoint in the broker namespace: want 403, got %v", sa, err)
			}
		}
	})

	t.Run("an identity outside the fleet table writes nothing", func(t *testing.T) {
		// An administrator mints a broker identity for a cluster Git does not list, with
		// west's rights.
		sa := kustomize.BrokerServiceAccount("evil")
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: kustomize.BrokerServiceAccount("west")},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
		}
		for _, o := range []client.Object{&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}}, rb} {
			if err := adminClient.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		evil := impersonate(ctx, t, admin, ns, sa)
		e := endpoint(ns, "evil")
		e.Spec.Subnets = []string{"10.66.0.0/16"}
		if err := evil.Create(ctx, e); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "cluster evil is not a member of fleet prod") {
			t.Errorf("want 403 (not a member), got %v", err)
		}
	})
}
