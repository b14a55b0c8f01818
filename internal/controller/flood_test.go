package controller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/naming"
	"github.com/mcnet-io/mcnet/internal/testenv"
)

// TestReceiversCapAFloodingWriter has west, whose controller is the attacker's, use
// its own broker identity (so the broker's admission policy lets every object
// through) to publish many more exports than the fleet table allows it, one of them
// with more EndpointSlices than receivers take of one export. Every receiver imports
// exactly west's allowed oldest exports; east's export, made after the flood began,
// is imported regardless; and once west withdraws an old export, the next oldest of
// its flood takes the freed place, with at most the slice cap of its slices.
func TestReceiversCapAFloodingWriter(t *testing.T) {
	ctx := t.Context()
	f := startFleet(t)
	hub, east, west := f.members["hub"], f.members["east"], f.members["west"]
	const wait = 60 * time.Second
	const allowed, flood = 5, 12
	west.haltTB(t)
	defer west.startTB(ctx, t)
	// east stands for a well-behaved writer whose export is published under its
	// identity below; its own controller would withdraw what it did not export itself.
	east.haltTB(t)
	defer east.startTB(ctx, t)
	receivers := []*member{hub}
	for _, m := range receivers {
		if err := m.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		// Git lowers west's cap (the rendered table carries maxExports per cluster).
		var fl mcnetv1.Fleet
		if err := m.client.Get(ctx, client.ObjectKey{Name: f.set.Name}, &fl); err != nil {
			t.Fatal(err)
		}
		for i := range fl.Spec.Clusters {
			if fl.Spec.Clusters[i].Name == "west" {
				fl.Spec.Clusters[i].MaxExports = allowed
			}
		}
		if err := m.client.Update(ctx, &fl); err != nil {
			t.Fatal(err)
		}
	}
	setGateway(ctx, t, hub.client, map[string]time.Duration{"east": time.Millisecond, "west": time.Millisecond})

	// west's broker identity, as the attacker holds it.
	cfg, err := clientcmd.BuildConfigFromFlags("", west.opts.BrokerKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	attacker := testenv.Client(t, cfg)
	publish := func(c client.Client, writer, name string, slices int, addr func(int) string) {
		t.Helper()
		labels := naming.BrokerLabels("app", name, writer)
		si := &mcsv1alpha1.ServiceImport{
			ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: naming.BrokerName("app", name, writer), Labels: labels},
			Spec:       mcsv1alpha1.ServiceImportSpec{Type: mcsv1alpha1.Headless, Ports: []mcsv1alpha1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
		}
		if err := c.Create(ctx, si); err != nil {
			t.Fatalf("%s publishes %s: %v", writer, si.Name, err)
		}
		sliceLabels := map[string]string{discoveryv1.LabelManagedBy: naming.SliceManagedBy, naming.NoProxyLabel: ""}
		for k, v := range labels {
			sliceLabels[k] = v
		}
		port, proto, pname, ready := int32(80), corev1.ProtocolTCP, "http", true
		for i := range slices {
			sl := &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Namespace: f.ns, Name: fmt.Sprintf("%s.ipv4-%03d", si.Name, i), Labels: sliceLabels},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: &proto}},
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr(i)}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
			}
			if err := c.Create(ctx, sl); err != nil {
				t.Fatalf("%s publishes %s: %v", writer, sl.Name, err)
			}
		}
	}
	westAddr := func(i int) string { return fmt.Sprintf("10.120.%d.%d", i/250, i%250+1) }
	// The allowed exports first, then, a second later, the flood: creationTimestamp has
	// one-second resolution, and the test must know which exports are the oldest.
	for i := range allowed {
		publish(attacker, "west", fmt.Sprintf("old-%02d", i), 1, westAddr)
	}
	time.Sleep(1100 * time.Millisecond) // dates the flood later; not synchronisation
	publish(attacker, "west", "big", mcnetv1.MaxSlicesPerExport+6, westAddr)
	time.Sleep(1100 * time.Millisecond)
	for i := range flood {
		publish(attacker, "west", fmt.Sprintf("flood-%02d", i), 1, westAddr)
	}
	// east's own export, after the flood began, under east's broker identity.
	eastCfg, err := clientcmd.BuildConfigFromFlags("", east.opts.BrokerKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	publish(testenv.Client(t, eastCfg), "east", "victim", 1, func(int) string { return "10.110.0.10" })

	// imports counts, per service, the EndpointSlices a receiver imported from west.
	imports := func(m *member) (map[string]int, error) {
		var list discoveryv1.EndpointSliceList
		if err := m.client.List(ctx, &list, client.InNamespace("app"), client.MatchingLabels{mcsv1alpha1.LabelSourceCluster: "west"}); err != nil {
			return nil, err
		}
		got := map[string]int{}
		for _, s := range list.Items {
			got[s.Labels[mcsv1alpha1.LabelServiceName]]++
		}
		return got, nil
	}
	testenv.Eventually(ctx, t, wait, "hub imports east's export", importOf(hub.client, "app", "victim", "east"))
	for _, m := range receivers {
		testenv.Eventually(ctx, t, wait, m.name+" imports west's oldest exports only", func(ctx context.Context) error {
			got, err := imports(m)
			if err != nil {
				return err
			}
			want := map[string]int{}
			for i := range allowed {
				want[fmt.Sprintf("old-%02d", i)] = 1
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("west's imports (service → slices): %v, want %v", got, want)
			}
			return nil
		})
	}

	t.Run("a withdrawn export frees its place for the next oldest", func(t *testing.T) {
		var si mcsv1alpha1.ServiceImport
		if err := attacker.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: naming.BrokerName("app", "old-00", "west")}, &si); err != nil {
			t.Fatal(err)
		}
		if err := attacker.Delete(ctx, &si); err != nil {
			t.Fatal(err)
		}
		for _, m := range receivers {
			testenv.Eventually(ctx, t, wait, m.name+" imports big, capped at the slice limit", func(ctx context.Context) error {
				got, err := imports(m)
				if err != nil {
					return err
				}
				if got["old-00"] != 0 || got["big"] != mcnetv1.MaxSlicesPerExport || len(got) != allowed {
					return fmt.Errorf("west's imports (service → slices): %v; want old-01..04 and big with %d slices", got, mcnetv1.MaxSlicesPerExport)
				}
				return nil
			})
		}
	})
}
