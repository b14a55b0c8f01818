package fleet

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

const valid = `apiVersion: mcnet.io/v1alpha1
kind: ClusterSet
metadata: {name: prod}
spec:
  broker: {cluster: east, server: https://hub.example.com:6443}
  clusters:
  - name: east
    podCIDRs: [10.10.0.0/16]
    serviceCIDRs: [10.110.0.0/16]
    cable: vxlan
  - name: west
    podCIDRs: [10.20.0.0/16, fd00:20::/56]
    serviceCIDRs: [10.120.0.0/16]
`

func TestParseDefaults(t *testing.T) {
	cs, err := Parse([]byte(valid))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if diff := cmp.Diff(mcnetv1.CableWireGuard, cs.Spec.Cable); diff != "" {
		t.Errorf("default cable (-want +got):\n%s", diff)
	}
	if got := cs.Spec.Clusters[1].Cable; got != mcnetv1.CableWireGuard {
		t.Errorf("west inherits cable: got %q", got)
	}
	if got := cs.Spec.Clusters[0].Cable; got != mcnetv1.CableVXLAN {
		t.Errorf("east keeps its override: got %q", got)
	}
	if diff := cmp.Diff(map[string]string{"node-restriction.kubernetes.io/mcnet-gateway": "true"}, cs.Spec.Clusters[0].Gateway.NodeSelector); diff != "" {
		t.Errorf("default gateway selector (-want +got):\n%s", diff)
	}
	if cs.Spec.Broker.Namespace != "mcnet-broker" || cs.Spec.Discovery.Domain != "clusterset.local" {
		t.Errorf("defaults: broker namespace %q, domain %q", cs.Spec.Broker.Namespace, cs.Spec.Discovery.Domain)
	}
	if diff := cmp.Diff([]string{"10.110.0.53"}, cs.Spec.Clusters[0].DNSServiceIPs); diff != "" {
		t.Errorf("default DNS Service IP (-want +got):\n%s", diff)
	}
	if got := cs.Spec.Clusters[0].CablePort; got != 4789 {
		t.Errorf("vxlan port: got %d, want 4789", got)
	}
	if got := cs.Spec.Clusters[1].CablePort; got != 51820 {
		t.Errorf("wireguard port: got %d, want 51820", got)
	}
}

// TestParseRejects checks that each kind of bad input is reported with the field (and
// cluster) that has it, and a hint at the fix.
func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(string) string
		want []string // substrings the message must contain
	}{
		{"unknown field", func(s string) string { return strings.Replace(s, "cable: vxlan", "cabel: vxlan", 1) }, []string{`unknown field "spec.clusters[0].cabel"`, "spelling"}},
		{"invalid name", func(s string) string { return strings.Replace(s, "name: east\n", "name: East_1\n", 1) }, []string{"spec.clusters[East_1].name", "RFC 1123"}},
		{"name too long", func(s string) string { return strings.Replace(s, "name: west", "name: "+strings.Repeat("w", 64), 1) }, []string{"name", "must be no more than 63 characters"}},
		{"bad CIDR", func(s string) string { return strings.Replace(s, "10.20.0.0/16,", "10.20.0.0/33,", 1) }, []string{"spec.clusters[west].podCIDRs[0]", "not a CIDR"}},
		{"host bits", func(s string) string { return strings.Replace(s, "10.20.0.0/16,", "10.20.0.1/16,", 1) }, []string{"spec.clusters[west].podCIDRs[0]", "did you mean 10.20.0.0/16"}},
		{"overlap across clusters", func(s string) string { return strings.Replace(s, "10.20.0.0/16,", "10.10.128.0/17,", 1) }, []string{"spec.clusters[west].podCIDRs[0]", "overlaps east podCIDRs 10.10.0.0/16"}},
		{"pod overlaps service", func(s string) string { return strings.Replace(s, "[10.120.0.0/16]", "[10.20.0.0/20]", 1) }, []string{"overlaps west podCIDRs"}},
		{"duplicate name", func(s string) string { return strings.Replace(s, "name: west", "name: east", 1) }, []string{"Duplicate value", "spec.clusters[east].name"}},
		{"unknown cable", func(s string) string { return strings.Replace(s, "cable: vxlan", "cable: ipsec", 1) }, []string{"spec.clusters[east].cable", `Unsupported value: "ipsec"`, `"wireguard", "vxlan"`}},
		{"broker not a member", func(s string) string { return strings.Replace(s, "cluster: east,", "cluster: hub,", 1) }, []string{"spec.broker.cluster", "use one of [east, west]"}},
		{"broker URL", func(s string) string { return strings.Replace(s, "https://hub.example.com:6443", "hub:6443", 1) }, []string{"spec.broker.server", "https URL"}},
		{"empty clusters", func(s string) string { return s[:strings.Index(s, "  clusters:")] + "  clusters: []\n" }, []string{"spec.clusters: Required value"}},
		{"missing CIDRs", func(s string) string { return strings.Replace(s, "    serviceCIDRs: [10.110.0.0/16]\n", "", 1) }, []string{"spec.clusters[east].serviceCIDRs: Required value"}},
		{"empty file", func(string) string { return "\n" }, []string{"empty"}},
		{"DNS IP outside", func(s string) string {
			return strings.Replace(s, "cable: vxlan", "cable: vxlan\n    dnsServiceIPs: [10.111.0.53]", 1)
		}, []string{"spec.clusters[east].dnsServiceIPs[0]", "not inside the cluster's service CIDRs (10.110.0.0/16)"}},
		{"DNS IP network address", func(s string) string {
			return strings.Replace(s, "cable: vxlan", "cable: vxlan\n    dnsServiceIPs: [10.110.0.0]", 1)
		}, []string{"spec.clusters[east].dnsServiceIPs[0]", "network or broadcast", "e.g. 10.110.0.53"}},
		{"DNS IP count", func(s string) string {
			return strings.Replace(s, "cable: vxlan", "cable: vxlan\n    dnsServiceIPs: [10.110.0.53, 10.110.0.54]", 1)
		}, []string{"spec.clusters[east].dnsServiceIPs", "one address per service CIDR"}},
		{"service CIDR too small for the default", func(s string) string { return strings.Replace(s, "[10.110.0.0/16]", "[10.110.0.0/29]", 1) }, []string{"spec.clusters[east].dnsServiceIPs: Required value", "too small"}},
		{"cable port", func(s string) string {
			return strings.Replace(s, "cable: vxlan", "cable: vxlan\n    cablePort: 70000", 1)
		}, []string{"spec.clusters[east].cablePort", "UDP port between 1 and 65535"}},
		{"VXLAN ports differ", func(s string) string {
			s = strings.Replace(s, "cable: vxlan", "cable: vxlan\n    cablePort: 4789", 1)
			return strings.Replace(s, "serviceCIDRs: [10.120.0.0/16]\n", "serviceCIDRs: [10.120.0.0/16]\n    cable: vxlan\n    cablePort: 8472\n", 1)
		}, []string{"spec.clusters[west].cablePort", "differs from cluster east's VXLAN port 4789", "same cablePort"}},
		{"DNS IP not an address", func(s string) string {
			return strings.Replace(s, "cable: vxlan", "cable: vxlan\n    dnsServiceIPs: [dns]", 1)
		}, []string{"spec.clusters[east].dnsServiceIPs[0]", "not an IP address"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.edit(valid)))
			if err == nil {
				t.Fatal("Parse accepted bad input")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestCablePortsPerDriver checks that WireGuard clusters may each listen on their
// own port, and VXLAN clusters on one shared port.
func TestCablePortsPerDriver(t *testing.T) {
	wg := strings.Replace(valid, "cable: vxlan", "cablePort: 51000", 1)
	wg = strings.Replace(wg, "serviceCIDRs: [10.120.0.0/16]\n", "serviceCIDRs: [10.120.0.0/16]\n    cablePort: 52000\n", 1)
	if _, err := Parse([]byte(wg)); err != nil {
		t.Errorf("WireGuard clusters on their own ports: %v", err)
	}
	vx := strings.Replace(valid, "serviceCIDRs: [10.120.0.0/16]\n", "serviceCIDRs: [10.120.0.0/16]\n    cable: vxlan\n", 1)
	if _, err := Parse([]byte(vx)); err != nil {
		t.Errorf("VXLAN clusters on the default port: %v", err)
	}
}

func TestExplicitDNSServiceIPs(t *testing.T) {
	// An explicit choice is kept and validated.
	cs, err := Parse([]byte(strings.Replace(valid, "cable: vxlan", "cable: vxlan\n    dnsServiceIPs: [10.110.1.1]", 1)))
	if err != nil || !slices.Equal(cs.Spec.Clusters[0].DNSServiceIPs, []string{"10.110.1.1"}) {
		t.Errorf("explicit dnsServiceIPs: %v, %v", cs, err)
	}
}

// TestParseReportsAllProblems checks that one run lists every problem, not the first.
func TestParseReportsAllProblems(t *testing.T) {
	bad := strings.NewReplacer(
		"cable: vxlan", "cable: gre",
		"10.20.0.0/16,", "10.10.0.0/16,",
		"name: prod", "name: Prod",
	).Replace(valid)
	_, err := Parse([]byte(bad))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want *ValidationError, got %v", err)
	}
	if got := len(ve.Errors); got != 3 {
		t.Errorf("got %d problems, want 3:\n%v", got, err)
	}
}
