package agent

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/membership"
)

// scaleFleet is a fleet table of n members with disjoint /20 pod and /22 service
// networks, and the Endpoints of all but the first (the local cluster).
func scaleFleet(b *testing.B, n int) (Local, *membership.Table, []mcnetv1.Endpoint) {
	b.Helper()
	f := &mcnetv1.Fleet{ObjectMeta: metav1.ObjectMeta{Name: "scale"}}
	var eps []mcnetv1.Endpoint
	for i := range n {
		pod := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + i>>4), byte(i << 4), 0}), 20)
		svc := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + i>>6), byte(i << 2), 0}), 22)
		name := fmt.Sprintf("c%04d", i)
		f.Spec.Clusters = append(f.Spec.Clusters, mcnetv1.FleetMember{Name: name, PodCIDRs: []string{pod.String()}, ServiceCIDRs: []string{svc.String()}, Cable: mcnetv1.CableWireGuard, CablePort: 51820})
		if i == 0 {
			continue
		}
		k, _ := ecdh.X25519().GenerateKey(rand.Reader)
		eps = append(eps, mcnetv1.Endpoint{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{mcnetv1.ClusterLabel: name}},
			Spec: mcnetv1.EndpointSpec{ClusterID: name, Hostname: "gw", Cable: mcnetv1.CableWireGuard, Port: 51820,
				PublicKey:  base64.StdEncoding.EncodeToString(k.PublicKey().Bytes()),
				PrivateIPs: []string{netip.AddrFrom4([4]byte{198, 19, byte(128 + i/250), byte(i%250 + 1)}).String()},
				Subnets:    []string{pod.String(), svc.String()}},
		})
	}
	t, err := membership.New(f)
	if err != nil {
		b.Fatal(err)
	}
	local := Local{ClusterID: "c0000", Fleet: "scale", Cable: mcnetv1.CableWireGuard, CablePort: 51820,
		CIDRs: []netip.Prefix{netip.MustParsePrefix("10.128.0.0/20"), netip.MustParsePrefix("10.64.0.0/22")}}
	return local, t, eps
}

// BenchmarkBuildState builds the active gateway's state with 99, 299 and 999 remote
// clusters: what every gateway and route agent does on each change.
func BenchmarkBuildState(b *testing.B) {
	for _, n := range []int{100, 300, 1000} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			local, t, eps := scaleFleet(b, n)
			gw := GatewayPorts(local, nil, nil)
			for b.Loop() {
				s, bad, _ := BuildState(local, t, eps, gw, netip.Addr{})
				if len(bad) > 0 || len(s.Remotes) != n-1 {
					b.Fatalf("%d remotes, bad: %v", len(s.Remotes), bad)
				}
			}
		})
	}
}
