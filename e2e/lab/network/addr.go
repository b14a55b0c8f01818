package network

import (
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/mcnet-io/mcnet/internal/cidr"
)

// Address plan. All node, WAN and control-plane addresses come from 198.18.0.0/15
// (RFC 2544 benchmarking space), which no real network routes; pods and services use
// 10.x. The host's own network is never part of the plan. I is a cluster's index, J a
// node's, K a gateway's (gateways are the first nodes, so K = J for them).
//
//	198.18.I.0/24      cluster I's node LAN; .1 is the control plane, .10+J node J
//	198.18.100+I.0/24  cluster I's private gateway network behind its NAT router
//	198.19.0.0/16      the WAN; .0.1 the WAN namespace, 198.19.I+1.1 cluster I's uplink (its
//	                   API server's public address and its nodes' masquerading egress),
//	                   198.19.I+1.10+K gateway K of cluster I

// LANPrefix is cluster I's node LAN.
func LANPrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
}

// ControlPlaneIP is cluster I's control plane on its LAN: the API server's address
// for nodes and pods, and every node's default gateway.
func ControlPlaneIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(i), 1}) }

// NodeIP is node J of cluster I on the LAN, its InternalIP.
func NodeIP(i, j int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(i), byte(10 + j)}) }

func natRouterPrivateIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(100 + i), 1}) }

// NATGatewayIP is gateway K of cluster I behind its NAT router: the address on its
// wan0, which nobody outside the cluster's private gateway network can reach.
func NATGatewayIP(i, k int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(100 + i), byte(10 + k)})
}

// PublicIP is gateway K of cluster I on the WAN: its wan0 address, or behind NAT the
// address its router forwards to it.
func PublicIP(i, k int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(i + 1), byte(10 + k)})
}

// UplinkIP is cluster I's control-plane namespace on the WAN: its API server's public
// address and the source of its nodes' masqueraded egress.
func UplinkIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, byte(i + 1), 1}) }

// WANPrefix is the network joining the gateway nodes (and NAT routers) of all clusters.
var WANPrefix = netip.MustParsePrefix("198.19.0.0/16")

// WANIP is the address of the WAN namespace itself.
var WANIP = netip.MustParseAddr("198.19.0.1")

// MaxClusters is how many clusters the plan numbers: 198.18.100+I must stay below 256.
const MaxClusters = 99

// DefaultCIDRs gives cluster I pods 10.(10I+10).0.0/16 and services 10.(10I+11).0.0/16.
func DefaultCIDRs(i int) (pod, svc netip.Prefix) {
	b := byte(10*i + 10)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, b, 0, 0}), 16),
		netip.PrefixFrom(netip.AddrFrom4([4]byte{10, b + 1, 0, 0}), 16)
}

// PodSlices splits a cluster's pod CIDR into one slice per node: /24s when there is
// room, as kube-controller-manager's node IPAM does by default, smaller otherwise.
func PodSlices(pod netip.Prefix, nodes int) ([]netip.Prefix, error) {
	need := bits.Len(uint(nodes - 1)) // bits to number the nodes
	sliceBits := max(24, pod.Bits()+need)
	if sliceBits > 28 {
		return nil, fmt.Errorf("pod CIDR %s is too small for %d nodes", pod, nodes)
	}
	base := pod.Masked().Addr().As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	step := uint32(1) << (32 - sliceBits)
	out := make([]netip.Prefix, nodes)
	for j := range nodes {
		a := v + uint32(j)*step
		out[j] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), sliceBits)
	}
	return out, nil
}

// FirstServiceIP is the ClusterIP the API server gives the kubernetes Service.
func FirstServiceIP(svc netip.Prefix) netip.Addr { return cidr.Nth(svc, 1) }
