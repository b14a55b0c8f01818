package serviceimport

import (
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/membership"
	"github.com/mcnet-io/mcnet/internal/naming"
)

func testTable(t *testing.T) *membership.Table {
	t.Helper()
	tab, err := membership.New(&mcnetv1.Fleet{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: mcnetv1.FleetSpec{Clusters: []mcnetv1.FleetMember{
		{Name: "east", PodCIDRs: []string{"10.10.0.0/16"}, ServiceCIDRs: []string{"10.110.0.0/16"}},
		{Name: "west", PodCIDRs: []string{"10.20.0.0/16"}, ServiceCIDRs: []string{"10.120.0.0/16"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestAcceptExport checks that an export counts only when its writer (the label the
// broker binds to it) is a member and its MCS label and name agree with the writer.
func TestAcceptExport(t *testing.T) {
	export := func(name, writer, source string) *mcsv1alpha1.ServiceImport {
		l := naming.BrokerLabels("app", "db", writer)
		l[mcsv1alpha1.LabelSourceCluster] = source
		if writer == "" {
			delete(l, mcnetv1.ClusterLabel)
		}
		return &mcsv1alpha1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
	}
	for _, tc := range []struct {
		name string
		si   *mcsv1alpha1.ServiceImport
		ok   bool
		why  string
	}{
		{"its own", export("app.db.west", "west", "west"), true, ""},
		{"claims another source", export("app.db.east", "west", "east"), false, "claims another source cluster than its writer west"},
		{"named as another's", export("app.db.east", "west", "west"), false, "not the name app.db.west"},
		{"nobody vouches", export("app.db.west", "", "west"), false, "nobody vouches"},
		{"not a member", export("app.db.evil", "evil", "evil"), false, "not a member of fleet prod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, rej := acceptExport(testTable(t), "app", "db", tc.si)
			if ok != tc.ok || (rej == nil) != tc.ok || (rej != nil && !strings.Contains(rej.String(), tc.why)) {
				t.Errorf("accept = %v, %v; want %v, %q", ok, rej, tc.ok, tc.why)
			}
		})
	}
}

func TestAcceptEndpoints(t *testing.T) {
	src := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "app.db.west.ipv4"},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.120.0.10"}}, {Addresses: []string{"8.8.8.8"}}, {Addresses: []string{"10.110.0.10"}}, {Addresses: []string{"10.20.0.4", "169.254.169.254"}}, {},
		},
	}
	got, rej := acceptEndpoints(testTable(t), "west", src)
	if len(got) != 1 || got[0].Addresses[0] != "10.120.0.10" || len(rej) != 3 {
		t.Errorf("accepted %+v, rejected %v", got, rej)
	}
	src.AddressType = discoveryv1.AddressTypeFQDN
	if got, _ := acceptEndpoints(testTable(t), "west", src); len(got) != 0 {
		t.Errorf("FQDN endpoints imported: %+v", got)
	}
	if got, _ := acceptEndpoints(testTable(t), "evil", src); len(got) != 0 {
		t.Errorf("a stranger's endpoints imported: %+v", got)
	}
}
