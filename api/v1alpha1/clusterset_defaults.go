package v1alpha1

import (
	"net/netip"

	"github.com/mcnet-io/mcnet/internal/cidr"
)

// SetDefaults_ClusterSet fills in what a fleet file may leave out, so the rest of mcnet
// reads every setting from the object itself: the cable and its port per cluster, the
// broker namespace, the domain, the image, the gateway selector and the DNS Service
// addresses. It is idempotent and never overwrites a value the file sets.
//
//nolint:revive // the Kubernetes defaulting convention names it so
func SetDefaults_ClusterSet(cs *ClusterSet) { //nolint:staticcheck
	if cs.APIVersion == "" {
		cs.APIVersion = GroupVersion.String()
	}
	if cs.Kind == "" {
		cs.Kind = "ClusterSet"
	}
	if cs.Spec.Cable == "" {
		cs.Spec.Cable = CableWireGuard
	}
	if cs.Spec.Broker.Namespace == "" {
		cs.Spec.Broker.Namespace = DefaultBrokerNamespace
	}
	if cs.Spec.Discovery.Domain == "" {
		cs.Spec.Discovery.Domain = DefaultDomain
	}
	if cs.Spec.Image.Repository == "" {
		cs.Spec.Image.Repository = DefaultImageRepository
	}
	if cs.Spec.GitOps.Revision == "" {
		cs.Spec.GitOps.Revision = "main"
	}
	for i := range cs.Spec.Clusters {
		c := &cs.Spec.Clusters[i]
		if c.Cable == "" {
			c.Cable = cs.Spec.Cable
		}
		if c.CablePort == 0 {
			c.CablePort = cs.Spec.CablePort
		}
		if c.CablePort == 0 {
			c.CablePort = DefaultCablePort(c.Cable)
		}
		if len(c.Gateway.NodeSelector) == 0 {
			c.Gateway.NodeSelector = map[string]string{GatewayLabel: "true"}
		}
		if len(c.DNSServiceIPs) == 0 {
			c.DNSServiceIPs = DefaultDNSServiceIPs(c.ServiceCIDRs)
		}
	}
}

// DefaultDNSServiceIPs picks one address per service CIDR for the mcnet-dns Service:
// the 53rd, or the 11th when the range has fewer than 1024 addresses. Both lie in the
// lower band of the range (min(max(16, size/16), 256) addresses) that the API server
// hands out only to Services asking for an address, never dynamically. Nothing is
// returned when a CIDR does not parse: validation reports it.
func DefaultDNSServiceIPs(cidrs []string) []string {
	var out []string
	for _, s := range cidrs {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return nil
		}
		pfx = pfx.Masked()
		offset := 53
		if hostBits := pfx.Addr().BitLen() - pfx.Bits(); hostBits < 10 {
			offset = 11
		}
		a := cidr.Nth(pfx, offset)
		if !pfx.Contains(a) {
			return nil
		}
		out = append(out, a.String())
	}
	return out
}
