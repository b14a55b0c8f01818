package v1alpha1

import (
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/mcnet-io/mcnet/internal/cidr"
)

// MaxClusters is the most clusters a fleet may have: the Fleet table's CRD holds no
// more, and the broker's admission policy is costed for that many. `make scale`
// measures fleets up to 1000 members on one broker (docs/scale.md).
const MaxClusters = 1024

// ValidateClusterSet returns every problem of a defaulted fleet, each naming its field
// and, where it can, the fix. The name follows Kubernetes' validation convention.
func ValidateClusterSet(cs *ClusterSet) field.ErrorList {
	var errs field.ErrorList
	if cs.APIVersion != GroupVersion.String() {
		errs = append(errs, field.Invalid(field.NewPath("apiVersion"), cs.APIVersion, "must be "+GroupVersion.String()))
	}
	if cs.Kind != "ClusterSet" {
		errs = append(errs, field.Invalid(field.NewPath("kind"), cs.Kind, "must be ClusterSet"))
	}
	errs = append(errs, validateName(field.NewPath("metadata", "name"), cs.Name, "name the fleet, e.g. metadata: {name: prod}")...)

	spec := field.NewPath("spec")
	errs = append(errs, validateCable(spec.Child("cable"), cs.Spec.Cable)...)
	errs = append(errs, validatePort(spec.Child("cablePort"), cs.Spec.CablePort, true)...)
	for _, msg := range validation.IsDNS1123Subdomain(cs.Spec.Discovery.Domain) {
		errs = append(errs, field.Invalid(spec.Child("discovery", "domain"), cs.Spec.Discovery.Domain, msg))
	}
	errs = append(errs, validateBroker(spec.Child("broker"), cs)...)
	if g := cs.Spec.GitOps; g.Path != "" && (path.IsAbs(g.Path) || strings.HasPrefix(path.Clean(g.Path), "..")) {
		errs = append(errs, field.Invalid(spec.Child("gitOps", "path"), g.Path, "must be a relative path inside the repository, e.g. fleet/prod"))
	}

	clusters := spec.Child("clusters")
	switch n := len(cs.Spec.Clusters); {
	case n == 0:
		errs = append(errs, field.Required(clusters, "list at least one cluster (two to connect anything), each with name, podCIDRs and serviceCIDRs"))
	case n > MaxClusters:
		errs = append(errs, field.TooMany(clusters, n, MaxClusters))
	}
	seen := map[string]int{}
	for i := range cs.Spec.Clusters {
		c := &cs.Spec.Clusters[i]
		p := clusters.Index(i)
		if c.Name != "" {
			p = clusters.Key(c.Name)
		}
		errs = append(errs, validateName(p.Child("name"), c.Name, "give every cluster a unique DNS-1123 label name, e.g. east")...)
		if j, dup := seen[c.Name]; dup && c.Name != "" {
			errs = append(errs, field.Duplicate(p.Child("name"), fmt.Sprintf("%s (also spec.clusters[%d]); cluster names must be unique", c.Name, j)))
		}
		seen[c.Name] = i
		errs = append(errs, validateCIDRs(p.Child("podCIDRs"), c.PodCIDRs)...)
		errs = append(errs, validateCIDRs(p.Child("serviceCIDRs"), c.ServiceCIDRs)...)
		errs = append(errs, validateCable(p.Child("cable"), c.Cable)...)
		errs = append(errs, validatePort(p.Child("cablePort"), c.CablePort, false)...)
		if c.MaxExports < 0 || c.MaxExports > 65536 {
			errs = append(errs, field.Invalid(p.Child("maxExports"), c.MaxExports, fmt.Sprintf("must be between 0 (the default, %d) and 65536", DefaultMaxExports)))
		}
		errs = append(errs, validateDNSServiceIPs(p.Child("dnsServiceIPs"), c)...)
		errs = append(errs, validateSelector(p.Child("gateway", "nodeSelector"), c.Gateway.NodeSelector)...)
		if c.Server != "" {
			errs = append(errs, validateURL(p.Child("server"), c.Server)...)
		}
	}
	errs = append(errs, validateOverlaps(cs)...)
	errs = append(errs, validateGlobalnet(cs)...)
	errs = append(errs, validateVXLANPorts(clusters, cs)...)
	return errs
}

// validateVXLANPorts wants one cablePort across the clusters that prefer VXLAN. Two
// of them connect over VXLAN, and a gateway's kernel VXLAN device listens on and
// sends to a single UDP port, so a pair on different ports cannot talk: the gateways
// would refuse the fleet at run time. WireGuard ports may differ per cluster.
func validateVXLANPorts(clusters *field.Path, cs *ClusterSet) field.ErrorList {
	var errs field.ErrorList
	first := -1
	for i := range cs.Spec.Clusters {
		c := &cs.Spec.Clusters[i]
		if c.Cable != CableVXLAN || c.CablePort == 0 {
			continue
		}
		if first < 0 {
			first = i
			continue
		}
		if f := &cs.Spec.Clusters[first]; c.CablePort != f.CablePort {
			errs = append(errs, field.Invalid(clusters.Key(c.Name).Child("cablePort"), c.CablePort,
				fmt.Sprintf("differs from cluster %s's VXLAN port %d; clusters preferring vxlan connect to each other on one UDP port, so give them the same cablePort (or set spec.cablePort once)", f.Name, f.CablePort)))
		}
	}
	return errs
}

func validateSelector(p *field.Path, sel map[string]string) field.ErrorList {
	var errs field.ErrorList
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		v := sel[k]
		if !strings.HasPrefix(k, NodeRestrictionPrefix) {
			errs = append(errs, field.Invalid(p.Key(k), k, fmt.Sprintf("a node's kubelet can set this label on itself, so any node could make itself a gateway; select gateway nodes by a label under %s (e.g. %s=true), which NodeRestriction lets only administrators set", NodeRestrictionPrefix, GatewayLabel)))
		}
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(p.Key(k), k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(p.Key(k), v, msg))
		}
	}
	return errs
}

func validateName(p *field.Path, name, hint string) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(p, hint)}
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(name) {
		errs = append(errs, field.Invalid(p, name, msg))
	}
	return errs
}

func validateCable(p *field.Path, d CableDriver) field.ErrorList {
	if slices.Contains(CableDrivers, d) {
		return nil
	}
	names := make([]string, len(CableDrivers))
	for i, c := range CableDrivers {
		names[i] = string(c)
	}
	return field.ErrorList{field.NotSupported(p, d, names)}
}

// validatePort wants a UDP port; zero passes where the field may be left out.
func validatePort(p *field.Path, port int32, optional bool) field.ErrorList {
	if (optional && port == 0) || (port >= 1 && port <= 65535) {
		return nil
	}
	return field.ErrorList{field.Invalid(p, port, "must be a UDP port between 1 and 65535")}
}

func validateBroker(p *field.Path, cs *ClusterSet) field.ErrorList {
	var errs field.ErrorList
	b := cs.Spec.Broker
	switch {
	case b.Cluster == "":
		errs = append(errs, field.Required(p.Child("cluster"), "name the member cluster whose API server hosts the broker"))
	case !slices.ContainsFunc(cs.Spec.Clusters, func(c ClusterSpec) bool { return c.Name == b.Cluster }):
		var names []string
		for _, c := range cs.Spec.Clusters {
			names = append(names, c.Name)
		}
		errs = append(errs, field.Invalid(p.Child("cluster"), b.Cluster,
			fmt.Sprintf("the broker must run on a cluster of the fleet; use one of [%s] or add %q to spec.clusters", strings.Join(names, ", "), b.Cluster)))
	}
	if b.Server == "" {
		errs = append(errs, field.Required(p.Child("server"), "the broker API server's URL as other clusters reach it, e.g. https://hub.example.com:6443"))
	} else {
		errs = append(errs, validateURL(p.Child("server"), b.Server)...)
	}
	for _, msg := range validation.IsDNS1123Label(b.Namespace) {
		errs = append(errs, field.Invalid(p.Child("namespace"), b.Namespace, msg))
	}
	return errs
}

func validateURL(p *field.Path, s string) field.ErrorList {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return field.ErrorList{field.Invalid(p, s, "must be an https URL with a host, e.g. https://api.example.com:6443")}
	}
	return nil
}

func validateCIDRs(p *field.Path, cidrs []string) field.ErrorList {
	if len(cidrs) == 0 {
		return field.ErrorList{field.Required(p, "list the cluster's CIDRs, e.g. [10.10.0.0/16]")}
	}
	var errs field.ErrorList
	families := map[bool]bool{}
	for i, s := range cidrs {
		pfx, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(p.Index(i), s, "not a CIDR; write it like 10.10.0.0/16 or fd00:10::/56"))
			continue
		case pfx.Masked() != pfx:
			errs = append(errs, field.Invalid(p.Index(i), s, fmt.Sprintf("has host bits set; did you mean %s?", pfx.Masked())))
		}
		if families[pfx.Addr().Is4()] {
			errs = append(errs, field.Invalid(p.Index(i), s, "at most one CIDR per IP family (one IPv4 and one IPv6)"))
		}
		families[pfx.Addr().Is4()] = true
	}
	return errs
}

// validateDNSServiceIPs wants one address inside each service CIDR, neither its
// first (network) address nor, for IPv4, its last.
func validateDNSServiceIPs(p *field.Path, c *ClusterSpec) field.ErrorList {
	var cidrs []netip.Prefix
	for _, s := range c.ServiceCIDRs {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return nil // reported on serviceCIDRs
		}
		cidrs = append(cidrs, pfx.Masked())
	}
	if len(c.DNSServiceIPs) == 0 {
		if len(cidrs) == 0 {
			return nil // serviceCIDRs are reported
		}
		return field.ErrorList{field.Required(p, "the service CIDRs are too small for the default address: name one address per service CIDR for the mcnet-dns Service")}
	}
	var errs field.ErrorList
	if len(c.DNSServiceIPs) != len(cidrs) {
		errs = append(errs, field.Invalid(p, c.DNSServiceIPs, fmt.Sprintf("list one address per service CIDR (%s), or leave it out for the default", strings.Join(c.ServiceCIDRs, ", "))))
	}
	used := map[netip.Prefix]bool{}
	for i, s := range c.DNSServiceIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			errs = append(errs, field.Invalid(p.Index(i), s, "not an IP address"))
			continue
		}
		var in netip.Prefix
		for _, pfx := range cidrs {
			if pfx.Contains(a) {
				in = pfx
			}
		}
		switch {
		case !in.IsValid():
			errs = append(errs, field.Invalid(p.Index(i), s, fmt.Sprintf("not inside the cluster's service CIDRs (%s)", strings.Join(c.ServiceCIDRs, ", "))))
		case used[in]:
			errs = append(errs, field.Invalid(p.Index(i), s, "a second address in "+in.String()+": list one per service CIDR"))
		case a == in.Addr() || (a.Is4() && in.Bits() < 31 && a == cidr.Last(in)):
			errs = append(errs, field.Invalid(p.Index(i), s, "the network or broadcast address of "+in.String()+"; pick another, e.g. "+strings.Join(DefaultDNSServiceIPs([]string{in.String()}), "")))
		}
		used[in] = true
	}
	return errs
}

type namedPrefix struct {
	path *field.Path
	pfx  netip.Prefix
	who  string
	name string // the cluster
}

// validateOverlaps rejects any two networks that overlap, whether in one cluster or across
// clusters: routing between clusters cannot tell overlapping networks apart. IPv4
// networks of different clusters may overlap when globalnet remaps them (see
// GlobalnetSpec); the error says how to turn it on.
func validateOverlaps(cs *ClusterSet) field.ErrorList {
	var all []namedPrefix
	for i := range cs.Spec.Clusters {
		c := &cs.Spec.Clusters[i]
		p := field.NewPath("spec", "clusters").Key(c.Name)
		for kind, list := range map[string][]string{"podCIDRs": c.PodCIDRs, "serviceCIDRs": c.ServiceCIDRs} {
			for j, s := range list {
				if pfx, err := netip.ParsePrefix(s); err == nil {
					all = append(all, namedPrefix{p.Child(kind).Index(j), pfx.Masked(), c.Name + " " + kind, c.Name})
				}
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].path.String() < all[j].path.String() })
	var errs field.ErrorList
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			a, b := all[i], all[j]
			if !a.pfx.Overlaps(b.pfx) {
				continue
			}
			switch {
			case a.name == b.name:
				errs = append(errs, field.Invalid(b.path, b.pfx.String(),
					fmt.Sprintf("overlaps %s %s (%s); a cluster's pod and service networks must be distinct", a.who, a.pfx, a.path)))
			case a.pfx.Addr().Is6() || !globalnetOn(cs, a.name, b.name):
				errs = append(errs, field.Invalid(b.path, b.pfx.String(),
					fmt.Sprintf("overlaps %s %s (%s); %s", a.who, a.pfx, a.path, globalOverlapDetail(a.pfx.Addr().Is6()))))
			}
		}
	}
	return errs
}
