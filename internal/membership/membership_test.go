package membership

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

func table(t *testing.T) *Table {
	t.Helper()
	tab, err := New(&mcnetv1.Fleet{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: mcnetv1.FleetSpec{Clusters: []mcnetv1.FleetMember{
		{Name: "east", PodCIDRs: []string{"10.10.0.0/16"}, ServiceCIDRs: []string{"10.110.0.0/16"}, Cable: mcnetv1.CableVXLAN, CablePort: 4789},
		{Name: "west", PodCIDRs: []string{"10.20.0.0/16", "fd00:20::/56"}, ServiceCIDRs: []string{"10.120.0.0/16"}, Cable: mcnetv1.CableWireGuard, CablePort: 51820},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestSubnets(t *testing.T) {
	west, _ := table(t).Member("west")
	for _, tc := range []struct {
		name      string
		published []string
		want      []string
		reasons   []string
	}{
		{"its own", []string{"10.20.0.0/16", "fd00:20::/56", "10.120.0.0/16"}, []string{"10.20.0.0/16", "fd00:20::/56", "10.120.0.0/16"}, nil},
		{"a part of its own", []string{"10.20.5.0/24"}, []string{"10.20.5.0/24"}, nil},
		{"host bits are masked", []string{"10.20.0.1/16"}, []string{"10.20.0.0/16"}, nil},
		{"everything", []string{"0.0.0.0/0", "::/0"}, nil, []string{"outside its allocation", "outside its allocation"}},
		{"wider than its own", []string{"10.20.0.0/15"}, nil, []string{"outside its allocation"}},
		{"another member's", []string{"10.10.0.0/16"}, nil, []string{"outside its allocation"}},
		{"garbage", []string{"ten"}, nil, []string{"not a CIDR"}},
		{"duplicates and covered", []string{"10.20.1.0/24", "10.20.0.0/16", "10.20.0.0/16"}, []string{"10.20.0.0/16"},
			[]string{"already covered by another published subnet", "already covered by another published subnet"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rej := west.Subnets("Endpoint west", "spec.subnets", tc.published)
			var gotS []string
			for _, p := range got {
				gotS = append(gotS, p.String())
			}
			var reasons []string
			for _, r := range rej {
				reasons = append(reasons, strings.SplitN(r.Reason, " (", 2)[0])
				if r.Cluster != "west" || r.Object != "Endpoint west" || !strings.HasPrefix(r.Field, "spec.subnets[") {
					t.Errorf("rejection does not say who published what: %+v", r)
				}
			}
			if d := cmp.Diff(tc.want, gotS); d != "" {
				t.Errorf("accepted (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.reasons, reasons); d != "" {
				t.Errorf("reasons (-want +got):\n%s", d)
			}
		})
	}
}

func TestSubnetsFlood(t *testing.T) {
	west, _ := table(t).Member("west")
	var flood []string
	for i := range 1000 {
		flood = append(flood, netip.AddrFrom4([4]byte{10, 20, byte(i >> 8), byte(i)}).String()+"/32")
	}
	got, rej := west.Subnets("Endpoint west", "spec.subnets", flood)
	if len(got) != MaxSubnets {
		t.Errorf("accepted %d subnets, want at most %d", len(got), MaxSubnets)
	}
	if s := Summary(rej, 3); !strings.Contains(s, "and ") || !strings.Contains(Summary(rej, 100), "1000 entries; only the first 64 are read") {
		t.Errorf("summary: %s", s)
	}
}

func TestTable(t *testing.T) {
	tab := table(t)
	if got := tab.Names(); !cmp.Equal(got, []string{"east", "west"}) {
		t.Errorf("names %v", got)
	}
	if !tab.InFleet(netip.MustParseAddr("10.110.3.4")) || tab.InFleet(netip.MustParseAddr("198.18.0.1")) {
		t.Error("InFleet")
	}
	east, _ := tab.Member("east")
	if east.ContainsAddr(netip.MustParseAddr("10.20.0.1")) || !east.ContainsAddr(netip.MustParseAddr("10.10.0.1")) {
		t.Error("ContainsAddr")
	}
	if _, ok := tab.Member("evil"); ok {
		t.Error("a stranger is a member")
	}
	if r := tab.NotMember("evil", "Endpoint evil"); r.String() != `cluster evil: Endpoint evil: cluster "evil" is not a member of fleet prod` {
		t.Errorf("NotMember: %s", r)
	}
	if _, ok := Empty("prod").Member("east"); ok {
		t.Error("the empty table has members")
	}
	// A broken entry leaves that member out, and only it.
	bad, err := New(&mcnetv1.Fleet{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: mcnetv1.FleetSpec{Clusters: []mcnetv1.FleetMember{
		{Name: "east", PodCIDRs: []string{"10.10.0.0/33"}, ServiceCIDRs: []string{"10.110.0.0/16"}},
		{Name: "west", PodCIDRs: []string{"10.20.0.0/16"}, ServiceCIDRs: []string{"10.120.0.0/16"}},
	}}})
	if err == nil || errors.Is(err, ErrNoTable) || !strings.Contains(err.Error(), `member "east" left out`) || !cmp.Equal(bad.Names(), []string{"west"}) {
		t.Errorf("broken entry: %v, members %v", err, bad.Names())
	}
}
