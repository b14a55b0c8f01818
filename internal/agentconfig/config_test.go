package agentconfig

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

const minimal = `apiVersion: mcnet.io/v1alpha1
kind: AgentConfig
clusterID: east
fleet: prod
podCIDRs: [10.10.0.0/16]
serviceCIDRs: [10.110.0.0/16]
cable: vxlan
`

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	live := int32(mcnetv1.DefaultLivenessPort)
	want := &mcnetv1.AgentConfig{
		ClusterID: "east", Fleet: "prod", PodCIDRs: []string{"10.10.0.0/16"}, ServiceCIDRs: []string{"10.110.0.0/16"},
		Cable: mcnetv1.CableVXLAN, CablePort: 4789,
		Broker:    mcnetv1.AgentBrokerConfig{Namespace: mcnetv1.DefaultBrokerNamespace},
		Discovery: mcnetv1.AgentDiscoveryConfig{Domain: mcnetv1.DefaultDomain},
		Gateway: mcnetv1.AgentGatewayConfig{NodeSelector: map[string]string{mcnetv1.GatewayLabel: "true"},
			HealthCheckPort: mcnetv1.DefaultHealthCheckPort, LivenessPort: &live},
	}
	want.APIVersion, want.Kind = mcnetv1.GroupVersion.String(), mcnetv1.AgentConfigKind
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("defaulted config (-want +got):\n%s", diff)
	}
	// livenessPort 0 is kept: it disables the check.
	c, err = Parse([]byte(minimal + "gateway: {livenessPort: 0}\n"))
	if err != nil || c.Gateway.LivenessPort == nil || *c.Gateway.LivenessPort != 0 {
		t.Errorf("livenessPort 0: %v, %v", c.Gateway.LivenessPort, err)
	}
}

// TestParseRejects checks that each kind of bad config names the field at fault.
func TestParseRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{"empty", "\n", []string{"empty"}},
		{"unknown field", minimal + "clusterset: prod\n", []string{`unknown field "clusterset"`}},
		{"duplicate field", minimal + "cable: wireguard\n", []string{`"cable"`, "already set"}},
		{"wrong kind", strings.Replace(minimal, "kind: AgentConfig", "kind: ClusterSet", 1), []string{"kind", "must be AgentConfig"}},
		{"no cluster", strings.Replace(minimal, "clusterID: east\n", "", 1), []string{"clusterID: Required value"}},
		{"no fleet", strings.Replace(minimal, "fleet: prod\n", "", 1), []string{"fleet: Required value"}},
		{"bad CIDR", strings.Replace(minimal, "10.10.0.0/16", "10.10.0.0/33", 1), []string{"podCIDRs[0]", "not a CIDR"}},
		{"bad cable", strings.Replace(minimal, "cable: vxlan", "cable: gre", 1), []string{"cable", `Unsupported value: "gre"`}},
		{"bad port", minimal + "gateway: {healthCheckPort: 70000}\n", []string{"gateway.healthCheckPort", "UDP port"}},
		{"bad broker URL", minimal + "broker: {server: hub:6443}\n", []string{"broker.server", "https URL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("want ErrInvalid, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
