// Package fleet reads a ClusterSet fleet file, fills in defaults and validates it,
// reporting every problem at once with the field that has it and how to fix it.
package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/cidr"
)

// ErrInvalid is wrapped by every error that is the fleet file's fault, so callers can
// tell bad input (exit 2) from other failures.
var ErrInvalid = errors.New("invalid fleet")

// Load reads, defaults and validates the fleet file at path.
func Load(path string) (*mcnetv1.ClusterSet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read fleet: %w", err)
	}
	cs, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// Parse decodes a fleet document strictly (unknown or duplicate fields are errors), fills
// in defaults and validates it.
func Parse(data []byte) (*mcnetv1.ClusterSet, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: the file is empty; start from examples/fleet.yaml", ErrInvalid)
	}
	var cs mcnetv1.ClusterSet
	js, err := yaml.YAMLToJSONStrict(data) // rejects duplicate keys
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// sigs.k8s.io/json names the full path of every unknown field, as kubectl does.
	strict, err := kjson.UnmarshalStrict(js, &cs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = "  - " + e.Error()
		}
		return nil, fmt.Errorf("%w: fleet has %d problem(s):\n%s\n(check the spelling against examples/fleet.yaml)", ErrInvalid, len(strict), strings.Join(msgs, "\n"))
	}
	Default(&cs)
	if errs := Validate(&cs); len(errs) > 0 {
		return nil, &ValidationError{Errors: errs}
	}
	return &cs, nil
}

// ValidationError lists every problem found in a fleet.
type ValidationError struct {
	Errors field.ErrorList
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fleet has %d problem(s):", len(e.Errors))
	for _, fe := range e.Errors {
		b.WriteString("\n  - ")
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Unwrap lets errors.Is(err, ErrInvalid) identify bad input.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Default fills in what a fleet may leave out.
func Default(cs *mcnetv1.ClusterSet) {
	if cs.APIVersion == "" {
		cs.APIVersion = mcnetv1.GroupVersion.String()
	}
	if cs.Kind == "" {
		cs.Kind = "ClusterSet"
	}
	if cs.Spec.Cable == "" {
		cs.Spec.Cable = mcnetv1.CableWireGuard
	}
	if cs.Spec.Broker.Namespace == "" {
		cs.Spec.Broker.Namespace = mcnetv1.DefaultBrokerNamespace
	}
	if cs.Spec.Discovery.Domain == "" {
		cs.Spec.Discovery.Domain = mcnetv1.DefaultDomain
	}
	if cs.Spec.Image.Repository == "" {
		cs.Spec.Image.Repository = mcnetv1.DefaultImageRepository
	}
	if cs.Spec.GitOps.Revision == "" {
		cs.Spec.GitOps.Revision = "main"
	}
	for i := range cs.Spec.Clusters {
		c := &cs.Spec.Clusters[i]
		if c.Cable == "" {
			c.Cable = cs.Spec.Cable
		}
		if len(c.Gateway.NodeSelector) == 0 {
			c.Gateway.NodeSelector = map[string]string{mcnetv1.GatewayLabel: "true"}
		}
		if len(c.DNSServiceIPs) == 0 {
			c.DNSServiceIPs = defaultDNSServiceIPs(c.ServiceCIDRs)
		}
	}
}

// defaultDNSServiceIPs picks one address per service CIDR for the mcnet-dns Service:
// the 53rd, or the 11th when the range has fewer than 1024 addresses. Both lie in the
// lower band of the range (min(max(16, size/16), 256) addresses) that the API server
// hands out only to Services asking for an address, never dynamically. Nothing is
// returned when a CIDR does not parse: validation reports it.
func defaultDNSServiceIPs(cidrs []string) []string {
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

// CoreDNSServerBlock is the CoreDNS server block that forwards domain to mcnet's DNS
// Service at addrs.
func CoreDNSServerBlock(domain string, addrs []string) string {
	return fmt.Sprintf(`# Forwards %s to Service %s/%s (rendered by kubectl mcnet render).
%s:53 {
    errors
    forward . %s
}
`, domain, mcnetv1.SystemNamespace, mcnetv1.DNSServiceName, domain, strings.Join(addrs, " "))
}

// CablePort is the UDP port a cluster's gateways listen on.
func CablePort(cs *mcnetv1.ClusterSet, c *mcnetv1.ClusterSpec) int32 {
	if cs.Spec.CablePort != 0 {
		return cs.Spec.CablePort
	}
	return mcnetv1.DefaultCablePort(c.Cable)
}

// Validate returns every problem of a defaulted fleet.
func Validate(cs *mcnetv1.ClusterSet) field.ErrorList {
	var errs field.ErrorList
	if cs.APIVersion != mcnetv1.GroupVersion.String() {
		errs = append(errs, field.Invalid(field.NewPath("apiVersion"), cs.APIVersion, "must be "+mcnetv1.GroupVersion.String()))
	}
	if cs.Kind != "ClusterSet" {
		errs = append(errs, field.Invalid(field.NewPath("kind"), cs.Kind, "must be ClusterSet"))
	}
	errs = append(errs, validateName(field.NewPath("metadata", "name"), cs.Name, "name the fleet, e.g. metadata: {name: prod}")...)

	spec := field.NewPath("spec")
	errs = append(errs, validateCable(spec.Child("cable"), cs.Spec.Cable)...)
	if p := cs.Spec.CablePort; p != 0 && (p < 1 || p > 65535) {
		errs = append(errs, field.Invalid(spec.Child("cablePort"), p, "must be a UDP port between 1 and 65535"))
	}
	for _, msg := range validation.IsDNS1123Subdomain(cs.Spec.Discovery.Domain) {
		errs = append(errs, field.Invalid(spec.Child("discovery", "domain"), cs.Spec.Discovery.Domain, msg))
	}
	errs = append(errs, validateBroker(spec.Child("broker"), cs)...)
	if g := cs.Spec.GitOps; g.Path != "" && (path.IsAbs(g.Path) || strings.HasPrefix(path.Clean(g.Path), "..")) {
		errs = append(errs, field.Invalid(spec.Child("gitOps", "path"), g.Path, "must be a relative path inside the repository, e.g. fleet/prod"))
	}

	clusters := spec.Child("clusters")
	if len(cs.Spec.Clusters) == 0 {
		errs = append(errs, field.Required(clusters, "list at least one cluster (two to connect anything), each with name, podCIDRs and serviceCIDRs"))
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
		errs = append(errs, validateDNSServiceIPs(p.Child("dnsServiceIPs"), c)...)
		for k, v := range c.Gateway.NodeSelector {
			for _, msg := range validation.IsQualifiedName(k) {
				errs = append(errs, field.Invalid(p.Child("gateway", "nodeSelector").Key(k), k, msg))
			}
			for _, msg := range validation.IsValidLabelValue(v) {
				errs = append(errs, field.Invalid(p.Child("gateway", "nodeSelector").Key(k), v, msg))
			}
		}
		if c.Server != "" {
			errs = append(errs, validateURL(p.Child("server"), c.Server)...)
		}
	}
	errs = append(errs, validateOverlaps(cs)...)
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

func validateCable(p *field.Path, d mcnetv1.CableDriver) field.ErrorList {
	if slices.Contains(mcnetv1.CableDrivers, d) {
		return nil
	}
	names := make([]string, len(mcnetv1.CableDrivers))
	for i, c := range mcnetv1.CableDrivers {
		names[i] = string(c)
	}
	return field.ErrorList{field.NotSupported(p, d, names)}
}

func validateBroker(p *field.Path, cs *mcnetv1.ClusterSet) field.ErrorList {
	var errs field.ErrorList
	b := cs.Spec.Broker
	switch {
	case b.Cluster == "":
		errs = append(errs, field.Required(p.Child("cluster"), "name the member cluster whose API server hosts the broker"))
	case !slices.ContainsFunc(cs.Spec.Clusters, func(c mcnetv1.ClusterSpec) bool { return c.Name == b.Cluster }):
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
func validateDNSServiceIPs(p *field.Path, c *mcnetv1.ClusterSpec) field.ErrorList {
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
			errs = append(errs, field.Invalid(p.Index(i), s, "the network or broadcast address of "+in.String()+"; pick another, e.g. "+strings.Join(defaultDNSServiceIPs([]string{in.String()}), "")))
		}
		used[in] = true
	}
	return errs
}

type namedPrefix struct {
	path *field.Path
	pfx  netip.Prefix
	who  string
}

// validateOverlaps rejects any two networks that overlap, whether in one cluster or across
// clusters: routing between clusters cannot tell overlapping networks apart.
func validateOverlaps(cs *mcnetv1.ClusterSet) field.ErrorList {
	var all []namedPrefix
	for i := range cs.Spec.Clusters {
		c := &cs.Spec.Clusters[i]
		p := field.NewPath("spec", "clusters").Key(c.Name)
		for kind, list := range map[string][]string{"podCIDRs": c.PodCIDRs, "serviceCIDRs": c.ServiceCIDRs} {
			for j, s := range list {
				if pfx, err := netip.ParsePrefix(s); err == nil {
					all = append(all, namedPrefix{p.Child(kind).Index(j), pfx.Masked(), c.Name + " " + kind})
				}
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].path.String() < all[j].path.String() })
	var errs field.ErrorList
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			if all[i].pfx.Overlaps(all[j].pfx) {
				errs = append(errs, field.Invalid(all[j].path, all[j].pfx.String(),
					fmt.Sprintf("overlaps %s %s (%s); every cluster needs its own pod and service networks", all[i].who, all[i].pfx, all[i].path)))
			}
		}
	}
	return errs
}
