package lab

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRunIDOf(t *testing.T) {
	tests := map[string]string{
		"mclab12-east-gw1": "ab12",
		"mclab12-wan":      "ab12",
		"mcnt-26636-1-gwa": "", // another project's namespace
		"mcl-":             "",
		"mclnodash":        "",
	}
	for in, want := range tests {
		if got := runIDOf(in); got != want {
			t.Errorf("runIDOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOptionsComplete(t *testing.T) {
	o := Options{Clusters: []ClusterOptions{{Name: "east"}, {Name: "west", Nodes: 3, Gateways: 2}}}
	if err := o.complete(); err != nil {
		t.Fatal(err)
	}
	want := []ClusterOptions{
		{Name: "east", PodCIDR: "10.10.0.0/16", ServiceCIDR: "10.11.0.0/16", Nodes: 2, Gateways: 1, ProxyMode: "iptables"},
		{Name: "west", PodCIDR: "10.20.0.0/16", ServiceCIDR: "10.21.0.0/16", Nodes: 3, Gateways: 2, ProxyMode: "iptables"},
	}
	if diff := cmp.Diff(want, o.Clusters); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}

	bad := Options{Clusters: []ClusterOptions{{Name: "East"}, {Name: "x", Nodes: 1}, {Name: "x", PodCIDR: "fd00::/64"}, {Name: "y", ProxyMode: "ipvs"}}, ProxyMode: "ipvs"}
	err := bad.complete()
	if err == nil {
		t.Fatal("no error for bad options")
	}
	for _, want := range []string{`"East" is not a DNS label`, "need 2 to 200 nodes", `cluster "x" given twice`, "not an IPv4 CIDR", `proxy mode "ipvs"`, `cluster "y": proxy mode "ipvs"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
