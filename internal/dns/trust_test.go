package dns

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/membership"
)

// TestTrusted checks that the index keeps, of each cluster, only what the fleet table
// allocates to it, and nothing of clusters outside the table.
func TestTrusted(t *testing.T) {
	tab, err := membership.New(&mcnetv1.Fleet{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: mcnetv1.FleetSpec{Clusters: []mcnetv1.FleetMember{
		{Name: "west", PodCIDRs: []string{"10.20.0.0/16"}, ServiceCIDRs: []string{"10.120.0.0/16"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	ep := func(addrs ...string) Endpoint {
		e := Endpoint{Ready: true}
		for _, a := range addrs {
			e.Addrs = append(e.Addrs, netip.MustParseAddr(a))
		}
		return e
	}
	svc := &Service{Namespace: "app", Name: "db", Backends: []Backend{
		{Cluster: "west", Endpoints: []Endpoint{ep("10.120.0.10"), ep("8.8.8.8"), ep("10.20.0.5", "169.254.169.254")}},
		{Cluster: "evil", Endpoints: []Endpoint{ep("10.66.0.1")}},
	}}
	if dropped := Trusted(svc, tab); dropped != 3 {
		t.Errorf("dropped %d endpoints, want 3", dropped)
	}
	want := []Backend{{Cluster: "west", Endpoints: []Endpoint{ep("10.120.0.10")}}}
	if d := cmp.Diff(want, svc.Backends, cmpopts.EquateComparable(netip.Addr{}), cmpopts.IgnoreUnexported(Endpoint{})); d != "" {
		t.Errorf("backends (-want +got):\n%s", d)
	}
	if Trusted(svc, membership.Empty("prod")); len(svc.Backends) != 0 {
		t.Errorf("without a table: %+v", svc.Backends)
	}
}
