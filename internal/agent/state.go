package agent

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/membership"
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

// Remote turns a member's Endpoint into the dataplane's view of it, trusting the fleet
// table over what the Endpoint claims: the pair's driver and port follow the member's
// entry in the table (mcnetv1.CableTo), only subnets inside the member's allocation are
// routed, and a gateway address inside any member's networks is never a cable
// endpoint. What is left out comes back as rejections; the error says why the Endpoint
// cannot be used at all.
func Remote(localCable mcnetv1.CableDriver, t *membership.Table, m *membership.Member, ep *mcnetv1.Endpoint) (dataplane.Remote, []membership.Rejection, error) {
	var errs []error
	object := "Endpoint " + ep.Name
	r := dataplane.Remote{ClusterID: ep.Spec.ClusterID}
	cidrs, rej := m.Subnets(object, "spec.subnets", ep.Spec.Subnets)
	r.CIDRs = reachable(m, cidrs)
	spec := ep.Spec
	if spec.Cable != m.Cable || spec.Port != m.CablePort {
		rej = append(rej, membership.Rejection{Cluster: m.Name, Object: object, Field: "spec.cable/port",
			Value: fmt.Sprintf("%s:%d", spec.Cable, spec.Port), Reason: fmt.Sprintf("the fleet table says %s:%d; using that", m.Cable, m.CablePort)})
	}
	spec.Cable, spec.Port = m.Cable, m.CablePort
	driver, port := mcnetv1.CableTo(localCable, &spec)
	r.Cable.Driver, r.Cable.Port = dataplane.Driver(driver), uint16(port)
	// Public addresses first: they are what other networks route; private ones serve
	// peers on the same network.
	for i, s := range append(slices.Clone(ep.Spec.PublicIPs), ep.Spec.PrivateIPs...) {
		field := fmt.Sprintf("spec.publicIPs[%d]", i)
		if i >= len(ep.Spec.PublicIPs) {
			field = fmt.Sprintf("spec.privateIPs[%d]", i-len(ep.Spec.PublicIPs))
		}
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("address %q: %w", s, err))
		case t.InFleet(a):
			// Tunnels to it would be routed into a member's networks.
			rej = append(rej, membership.Rejection{Cluster: m.Name, Object: object, Field: field, Value: s, Reason: "a gateway address inside the fleet's networks"})
		case !slices.Contains(r.Cable.Endpoints, a):
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
		errs = append(errs, fmt.Errorf("no subnets inside its allocation (%s)", cidrList(m.CIDRs())))
	}
	if len(r.Cable.Endpoints) == 0 {
		errs = append(errs, errors.New("no usable gateway address"))
	}
	if err := errors.Join(errs...); err != nil {
		return r, rej, fmt.Errorf("endpoint of cluster %s: %w", ep.Spec.ClusterID, err)
	}
	return r, rej, nil
}

func cidrList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// Local is what a node knows about its own cluster.
type Local struct {
	ClusterID string
	// Fleet names the membership table the node trusts.
	Fleet     string
	Cable     mcnetv1.CableDriver
	CablePort int32
	// CIDRs are the cluster's pod and service CIDRs.
	CIDRs []netip.Prefix
}

// BuildState computes a node's dataplane State from the remote Endpoints, judged
// against the fleet table t: Endpoints of clusters outside the table are ignored, and
// of a member only what lies inside its allocation is used. gw is set on the active
// gateway; activeGateway on every other node. Members whose Endpoint cannot be used are
// left out and reported by cluster, so one broken remote does not cut the others; what
// was ignored comes back as rejections, for the caller to report.
func BuildState(l Local, t *membership.Table, eps []mcnetv1.Endpoint, gw *dataplane.Gateway, activeGateway netip.Addr) (dataplane.State, map[string]error, []membership.Rejection) {
	s := dataplane.State{ClusterID: l.ClusterID, LocalCIDRs: l.CIDRs, Gateway: gw, Remap: localRemap(t, l.ClusterID)}
	if gw == nil {
		s.ActiveGateway = activeGateway
	}
	bad := map[string]error{}
	var rejected []membership.Rejection
	var accepted remoteNets
	for _, ep := range RemoteEndpoints(l.ClusterID, eps) {
		m, ok := t.Member(ep.Spec.ClusterID)
		if !ok {
			rejected = append(rejected, t.NotMember(ep.Spec.ClusterID, "Endpoint "+ep.Name))
			continue
		}
		r, rej, err := Remote(l.Cable, t, m, &ep)
		rejected = append(rejected, rej...)
		if err == nil {
			// Validate the remote alone, then its networks against those already
			// accepted, so an overlapping or otherwise invalid cluster is the only one
			// left out. (Validating the whole state again for each remote made this
			// cubic in the number of clusters: 999 remotes took minutes.)
			alone := s
			alone.Remotes = []dataplane.Remote{r}
			err = errors.Join(alone.Validate(), accepted.overlaps(r))
		}
		if err != nil {
			bad[ep.Spec.ClusterID] = err
			continue
		}
		s.Remotes = append(s.Remotes, r)
		accepted.add(r)
	}
	membership.Sort(rejected)
	return s, bad, rejected
}

// remoteNets are the networks of the accepted remotes, pairwise disjoint, sorted by
// first address: a new prefix overlaps one of them exactly when its predecessor
// contains its first address or its successor starts inside it, so each check is a
// binary search.
type remoteNets []remoteNet

type remoteNet struct {
	prefix  netip.Prefix
	cluster string
}

func (ns remoteNets) search(a netip.Addr) int {
	i, _ := slices.BinarySearchFunc(ns, a, func(n remoteNet, a netip.Addr) int { return n.prefix.Addr().Compare(a) })
	return i
}

// overlaps reports every network of r that overlaps an accepted one, in the words of
// dataplane.State.Validate.
func (ns remoteNets) overlaps(r dataplane.Remote) error {
	var errs []error
	for _, p := range r.CIDRs {
		i := ns.search(p.Addr())
		for _, j := range []int{i - 1, i} {
			if j < 0 || j >= len(ns) || !ns[j].prefix.Overlaps(p) {
				continue
			}
			errs = append(errs, fmt.Errorf("remote %s CIDR %s overlaps remote %s CIDR %s", ns[j].cluster, ns[j].prefix, r.ClusterID, p))
		}
	}
	return errors.Join(errs...)
}

// add inserts r's networks; the caller has checked they overlap none.
func (ns *remoteNets) add(r dataplane.Remote) {
	for _, p := range r.CIDRs {
		*ns = slices.Insert(*ns, ns.search(p.Addr()), remoteNet{p, r.ClusterID})
	}
}

// GatewayPorts is the dataplane's gateway configuration for a cluster: its own driver
// listens on the cable port, the other driver (used towards clusters that prefer it)
// on its default port; the intra-cluster VXLAN admits the cluster's node addresses.
func GatewayPorts(l Local, healthIPs, clusterNodes []netip.Addr) *dataplane.Gateway {
	g := &dataplane.Gateway{HealthCheckIPs: healthIPs, ClusterNodes: clusterNodes}
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

// ClusterNodeAddrs returns the addresses the cluster's nodes report (InternalIP and
// ExternalIP), sorted and without duplicates: where they send the intra-cluster VXLAN
// to the gateway from.
func ClusterNodeAddrs(nodes []corev1.Node) []netip.Addr {
	var out []netip.Addr
	for i := range nodes {
		for _, a := range nodes[i].Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				out = append(out, ip.Unmap())
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
