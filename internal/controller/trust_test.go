package controller_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/naming"
	"github.com/mcnet-io/mcnet/internal/testenv"
)

// brokerExport writes, as the broker's administrator (past the admission policy), an
// export of app/name claiming to be written by writer, with one EndpointSlice.
func brokerExport(ctx context.Context, t *testing.T, f *fleetEnv, name, writer string, edit func(labels map[string]string), addrs ...string) {
	t.Helper()
	labels := naming.BrokerLabels("app", name, writer)
	edit(labels)
	si := &mcsv1alpha1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: naming.BrokerName("app", name, writer), Labels: labels},
		Spec:       mcsv1alpha1.ServiceImportSpec{Type: mcsv1alpha1.ClusterSetIP, Ports: []mcsv1alpha1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
	}
	sliceLabels := map[string]string{discoveryv1.LabelManagedBy: naming.SliceManagedBy, naming.NoProxyLabel: ""}
	for k, v := range labels {
		sliceLabels[k] = v
	}
	port, proto, pname, ready := int32(80), corev1.ProtocolTCP, "http", true
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: f.ns, Name: si.Name + ".ipv4", Labels: sliceLabels},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: &proto}},
	}
	for _, a := range addrs {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	for _, o := range []client.Object{si, sl} {
		if err := f.broker.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

// importedAddrs checks the addresses of a service's imported EndpointSlices.
func importedAddrs(c client.Client, name string, want ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		var list discoveryv1.EndpointSliceList
		if err := c.List(ctx, &list, client.InNamespace("app"), naming.ImportedSliceSelector(name)); err != nil {
			return err
		}
		var got []string
		for _, s := range list.Items {
			for _, e := range s.Endpoints {
				got = append(got, e.Addresses...)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("imported addresses of app/%s: %v, want %v", name, got, want)
		}
		return nil
	}
}

// TestReceiversTrustOnlyTheTable puts on the broker, as its administrator would (so no
// admission policy stops them), exports that no member's broker identity may write: one
// of west's claiming to be east's, one of west's with an endpoint outside west's
// networks, and one of a cluster outside the fleet. Every importer and DNS server
// ignores what the fleet table does not vouch for, and follows a change of the table
// without a restart.
func TestReceiversTrustOnlyTheTable(t *testing.T) {
	ctx := t.Context()
	f := startFleet(t)
	hub, east, west := f.members["hub"], f.members["east"], f.members["west"]
	const wait = 20 * time.Second
	// west is the compromised member: its own controller is the attacker's, and would
	// withdraw what it did not publish itself.
	west.haltTB(t)
	defer west.startTB(ctx, t) // for the cleanup's halt
	receivers := []*member{hub, east}
	for _, m := range receivers {
		if err := m.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	setGateway(ctx, t, hub.client, map[string]time.Duration{"east": time.Millisecond, "west": time.Millisecond, "evil": time.Millisecond})

	// A legitimate export of west's, with one endpoint outside west's networks.
	brokerExport(ctx, t, f, "leak", "west", func(map[string]string) {}, "10.120.0.10", "8.8.8.8")
	// west poses as east: its own object (mcnet.io/cluster is west), east's MCS label.
	brokerExport(ctx, t, f, "spoof", "west", func(l map[string]string) { l[mcsv1alpha1.LabelSourceCluster] = "east" }, "10.110.0.10")
	// A cluster outside the fleet.
	brokerExport(ctx, t, f, "outsider", "evil", func(map[string]string) {}, "10.66.0.10")
	// A marker the receivers must import, so the checks below do not pass merely
	// because nothing was read yet.
	brokerExport(ctx, t, f, "marker", "west", func(map[string]string) {}, "10.120.0.11")

	for _, m := range receivers {
		testenv.Eventually(ctx, t, wait, m.name+" imports the marker", importOf(m.client, "app", "marker", "west"))
		testenv.Eventually(ctx, t, wait, m.name+" imports west's leak without the outside endpoint", importedAddrs(m.client, "leak", "10.120.0.10"))
		testenv.Eventually(ctx, t, wait, m.name+" answers west.leak inside west's networks only", answers(m, "west.leak.app.svc.clusterset.local", dns.TypeA, "10.120.0.10"))
		for _, name := range []string{"spoof", "outsider"} {
			if err := importOf(m.client, "app", name)(ctx); err != nil {
				t.Errorf("%s: %v", m.name, err)
			}
			if err := answers(m, name+".app.svc.clusterset.local", dns.TypeA)(ctx); err != nil {
				t.Errorf("%s: %v", m.name, err)
			}
		}
		if err := answers(m, "east.spoof.app.svc.clusterset.local", dns.TypeA)(ctx); err != nil {
			t.Errorf("%s answers for east what west published: %v", m.name, err)
		}
	}

	var table mcnetv1.Fleet
	if err := hub.client.Get(ctx, client.ObjectKey{Name: f.set.Name}, &table); err != nil {
		t.Fatal(err)
	}
	evil := mcnetv1.FleetMember{Name: "evil", PodCIDRs: []string{"10.66.0.0/16"}, ServiceCIDRs: []string{"10.166.0.0/16"}, Cable: mcnetv1.CableWireGuard, CablePort: 51820}
	t.Run("a cluster added to the table through Git is imported without a restart", func(t *testing.T) {
		for _, m := range receivers {
			var fl mcnetv1.Fleet
			if err := m.client.Get(ctx, client.ObjectKey{Name: f.set.Name}, &fl); err != nil {
				t.Fatal(err)
			}
			fl.Spec.Clusters = append(fl.Spec.Clusters, evil)
			if err := m.client.Update(ctx, &fl); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range receivers {
			testenv.Eventually(ctx, t, wait, m.name+" imports the new member's export", importOf(m.client, "app", "outsider", "evil"))
			testenv.Eventually(ctx, t, wait, m.name+" answers for the new member", answers(m, "evil.outsider.app.svc.clusterset.local", dns.TypeA, "10.66.0.10"))
		}
	})
	t.Run("a cluster removed from the table is dropped without a restart", func(t *testing.T) {
		for _, m := range receivers {
			var fl mcnetv1.Fleet
			if err := m.client.Get(ctx, client.ObjectKey{Name: f.set.Name}, &fl); err != nil {
				t.Fatal(err)
			}
			fl.Spec.Clusters = slices.DeleteFunc(fl.Spec.Clusters, func(c mcnetv1.FleetMember) bool { return c.Name == "west" })
			if err := m.client.Update(ctx, &fl); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range receivers {
			testenv.Eventually(ctx, t, wait, m.name+" drops west's exports", importOf(m.client, "app", "marker"))
			testenv.Eventually(ctx, t, wait, m.name+" no longer answers for west", answers(m, "west.leak.app.svc.clusterset.local", dns.TypeA))
		}
	})
}
