package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
)

// LeaseName is the Lease in the system namespace whose holder is the cluster's active
// gateway; its holder identity is the gateway's node name. Route agents read it to
// find where to send remote traffic.
const LeaseName = "mcnet-gateway"

// PublicIPAnnotation on a gateway Node overrides the address other clusters reach it at
// (a cloud's public IP or a NAT's outside address).
const PublicIPAnnotation = "mcnet.io/public-ip"

// HealthCheckIPAnnotation on a gateway Node overrides its health-check address; by
// default it is the first address of the node's pod CIDR, the address CNIs that use
// per-node ranges give the node itself.
const HealthCheckIPAnnotation = "mcnet.io/health-check-ip"

// RemoteEndpoints returns the Endpoints of other clusters, one per cluster, sorted by
// cluster: the mirrored ones named after their cluster and labelled with it.
func RemoteEndpoints(local string, eps []mcnetv1.Endpoint) []mcnetv1.Endpoint {
	var out []mcnetv1.Endpoint
	for _, ep := range eps {
		c := ep.Spec.ClusterID
		if c == "" || c == local || ep.Labels[mcnetv1.ClusterLabel] != c || ep.DeletionTimestamp != nil {
			continue
		}
		out = append(out, ep)
	}
	slices.SortFunc(out, func(a, b mcnetv1.Endpoint) int {
		return cmp.Or(cmp.Compare(a.Spec.ClusterID, b.Spec.ClusterID), cmp.Compare(a.Name, b.Name))
	})
	return slices.CompactFunc(out, func(a, b mcnetv1.Endpoint) bool { return a.Spec.ClusterID == b.Spec.ClusterID })
}

// Remote turns a remote cluster's Endpoint into the dataplane's view of it, using
// the driver both clusters agree on (mcnetv1.CableTo) and the port of that driver.
func Remote(localCable mcnetv1.CableDriver, ep *mcnetv1.Endpoint) (dataplane.Remote, error) {
	var errs []error
	r := dataplane.Remote{ClusterID: ep.Spec.ClusterID}
	for _, s := range ep.Spec.Subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("subnet %q: %w", s, err))
			continue
		}
		r.CIDRs = append(r.CIDRs, p.Masked())
	}
	driver, port := mcnetv1.CableTo(localCable, &ep.Spec)
	r.Cable.Driver, r.Cable.Port = dataplane.Driver(driver), uint16(port)
	// Public addresses first: they are what other networks route; private ones serve
	// peers on the same network.
	for _, s := range append(slices.Clone(ep.Spec.PublicIPs), ep.Spec.PrivateIPs...) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("address %q: %w", s, err))
			continue
		}
		if !slices.Contains(r.Cable.Endpoints, a) {
			r.Cable.Endpoints = append(r.Cable.Endpoints, a)
		}
	}
	if driver == mcnetv1.CableWireGuard {
		if ep.Spec.PublicKey == "" {
			errs = append(errs, errors.New("no WireGuard public key"))
		} else if k, err := dataplane.ParseKey(ep.Spec.PublicKey); err != nil {
			errs = append(errs, err)
		} else {
			r.Cable.PublicKey = k
		}
	}
	if len(r.CIDRs) == 0 {
		errs = append(errs, errors.New("no subnets"))
	}
	if err := errors.Join(errs...); err != nil {
		return r, fmt.Errorf("endpoint of cluster %s: %w", ep.Spec.ClusterID, err)
	}
	return r, nil
}

// Local is what a node knows about its own cluster.
type Local struct {
	ClusterID string
	Cable     mcnetv1.CableDriver
	CablePort int32
	// CIDRs are the cluster's pod and service CIDRs.
	CIDRs []netip.Prefix
}

// BuildState computes a node's dataplane State from the remote Endpoints. gw is set on
// the active gateway; activeGateway on every other node. Endpoints that cannot be used
// are left out and reported by cluster, so one broken remote does not cut the others.
func BuildState(l Local, eps []mcnetv1.Endpoint, gw *dataplane.Gateway, activeGateway netip.Addr) (dataplane.State, map[string]error) {
	s := dataplane.State{ClusterID: l.ClusterID, LocalCIDRs: l.CIDRs, Gateway: gw}
	if gw == nil {
		s.ActiveGateway = activeGateway
	}
	bad := map[string]error{}
	for _, ep := range RemoteEndpoints(l.ClusterID, eps) {
		r, err := Remote(l.Cable, &ep)
		if err == nil {
			// Validate the remote alone against what is already accepted, so an
			// overlapping or otherwise invalid cluster is the only one left out.
			try := s
			try.Remotes = append(slices.Clone(s.Remotes), r)
			err = try.Validate()
		}
		if err != nil {
			bad[ep.Spec.ClusterID] = err
			continue
		}
		s.Remotes = append(s.Remotes, r)
	}
	return s, bad
}

// GatewayPorts is the dataplane's gateway configuration for a cluster: its own driver
// listens on the cable port, the other driver (used towards clusters that prefer it)
// on its default port.
func GatewayPorts(l Local, healthIPs []netip.Addr) *dataplane.Gateway {
	g := &dataplane.Gateway{HealthCheckIPs: healthIPs}
	switch l.Cable {
	case mcnetv1.CableVXLAN:
		g.VXLANPort = uint16(l.CablePort)
	case mcnetv1.CableWireGuard:
		g.WireGuardPort = uint16(l.CablePort)
	}
	return g
}

// NodeAddrs are a gateway node's addresses as the Endpoint publishes them.
type NodeAddrs struct {
	Private, Public []netip.Addr
	HealthCheck     []netip.Addr
}

// HealthCheckIPs returns the node's health-check addresses: the annotation, else the
// first host address of each of the node's pod CIDRs.
func HealthCheckIPs(node *corev1.Node) ([]netip.Addr, error) {
	if s, ok := node.Annotations[HealthCheckIPAnnotation]; ok {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("node %s annotation %s: %w", node.Name, HealthCheckIPAnnotation, err)
		}
		return []netip.Addr{a}, nil
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	var out []netip.Addr
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("node %s pod CIDR %q: %w", node.Name, s, err)
		}
		out = append(out, p.Masked().Addr().Next())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("node %s has no pod CIDR for a health-check address (set annotation %s)", node.Name, HealthCheckIPAnnotation)
	}
	return out, nil
}

// PublicIPs returns where other clusters reach the node: the annotation, else its
// ExternalIP addresses, else none (the private addresses are used).
func PublicIPs(node *corev1.Node) ([]netip.Addr, error) {
	if s, ok := node.Annotations[PublicIPAnnotation]; ok {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("node %s annotation %s: %w", node.Name, PublicIPAnnotation, err)
		}
		return []netip.Addr{a}, nil
	}
	return nodeAddrs(node, corev1.NodeExternalIP), nil
}

// InternalIP returns the node's first InternalIP, the address other nodes of the
// cluster reach it at.
func InternalIP(node *corev1.Node) (netip.Addr, bool) {
	if a := nodeAddrs(node, corev1.NodeInternalIP); len(a) > 0 {
		return a[0], true
	}
	return netip.Addr{}, false
}

func nodeAddrs(node *corev1.Node, t corev1.NodeAddressType) []netip.Addr {
	var out []netip.Addr
	for _, a := range node.Status.Addresses {
		if a.Type != t {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// LocalEndpoint is the Endpoint the active gateway publishes.
func LocalEndpoint(l Local, node string, addrs NodeAddrs, publicKey dataplane.Key) mcnetv1.EndpointSpec {
	spec := mcnetv1.EndpointSpec{
		ClusterID: l.ClusterID,
		Hostname:  node,
		Cable:     l.Cable,
		Port:      l.CablePort,
		// Published whatever the cluster's own driver: a remote that prefers
		// WireGuard makes the pair use it.
		PublicKey:      publicKey.String(),
		PrivateIPs:     strs(addrs.Private),
		PublicIPs:      strs(addrs.Public),
		HealthCheckIPs: strs(addrs.HealthCheck),
		Subnets:        strs(l.CIDRs),
	}
	return spec
}

func strs[T fmt.Stringer](xs []T) []string {
	if len(xs) == 0 {
		return nil
	}
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}
