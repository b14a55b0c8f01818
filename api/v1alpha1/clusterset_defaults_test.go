package v1alpha1

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestDefaultDNSServiceIPs(t *testing.T) {
	for _, tc := range []struct {
		cidrs []string
		want  []string
	}{
		{[]string{"10.96.0.0/12"}, []string{"10.96.0.53"}},
		{[]string{"10.120.0.0/16", "fd00:120::/108"}, []string{"10.120.0.53", "fd00:120::35"}},
		// Under 1024 addresses the band kept for chosen addresses may be only 16 long.
		{[]string{"10.0.0.0/24"}, []string{"10.0.0.11"}},
		{[]string{"10.0.0.0/22"}, []string{"10.0.0.53"}},
		{[]string{"10.0.0.0/29"}, nil}, // too small: validation asks for an address
		{[]string{"bad"}, nil},
	} {
		if got := DefaultDNSServiceIPs(tc.cidrs); !slices.Equal(got, tc.want) {
			t.Errorf("DefaultDNSServiceIPs(%v) = %v, want %v", tc.cidrs, got, tc.want)
		}
	}
}

// TestSetDefaultsCablePort checks where each cluster's cable port comes from: its own
// field, else the fleet's, else its driver's default.
func TestSetDefaultsCablePort(t *testing.T) {
	cs := &ClusterSet{Spec: ClusterSetSpec{Clusters: []ClusterSpec{
		{Name: "a", Cable: CableVXLAN},
		{Name: "b"},
		{Name: "c", CablePort: 4500},
	}}}
	SetDefaults_ClusterSet(cs)
	for i, want := range []int32{4789, 51820, 4500} {
		if got := cs.Spec.Clusters[i].CablePort; got != want {
			t.Errorf("cluster %s: cable port %d, want %d", cs.Spec.Clusters[i].Name, got, want)
		}
	}
	cs = &ClusterSet{Spec: ClusterSetSpec{CablePort: 4600, Clusters: []ClusterSpec{{Name: "a", Cable: CableVXLAN}, {Name: "b", CablePort: 4700}}}}
	SetDefaults_ClusterSet(cs)
	if a, b := cs.Spec.Clusters[0].CablePort, cs.Spec.Clusters[1].CablePort; a != 4600 || b != 4700 {
		t.Errorf("with spec.cablePort 4600: got %d and %d, want 4600 and 4700", a, b)
	}
}

// TestGatewaySelectorMustBeAdminOnly refuses a gateway node selector a kubelet could
// satisfy by labelling its own Node.
func TestGatewaySelectorMustBeAdminOnly(t *testing.T) {
	errs := validateSelector(field.NewPath("spec", "clusters[east]", "gateway", "nodeSelector"), map[string]string{"mcnet.io/gateway": "true"})
	if len(errs) != 1 || !strings.Contains(errs.ToAggregate().Error(), "kubelet can set this label on itself") || !strings.Contains(errs.ToAggregate().Error(), GatewayLabel) {
		t.Errorf("errors %v; want one naming the kubelet and %s", errs, GatewayLabel)
	}
	if errs := validateSelector(field.NewPath("x"), map[string]string{GatewayLabel: "true"}); len(errs) != 0 {
		t.Errorf("the default gateway label is refused: %v", errs)
	}
}
