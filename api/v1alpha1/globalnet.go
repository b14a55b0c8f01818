package v1alpha1

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// GlobalnetSpec is the fleet's global address space for clusters whose networks
// overlap (clusters built from the same defaults, such as pod 10.244.0.0/16 and
// service 10.96.0.0/12).
//
// A cluster whose IPv4 pod or service CIDR overlaps any CIDR of another member is
// remapped: it gets a global pod range and a global service range, each the size of
// its IPv4 pod or service CIDR, and every other cluster reaches its pods and services
// there. Its gateway maps the ranges 1:1 onto the real ones in both directions
// (nftables prefix NAT), so each remote pod keeps a unique, stable address and the
// source a destination sees identifies one pod; DNS answers the global addresses.
// Clusters whose networks overlap no other member's keep their own addresses (a third
// cluster could not tell two identical ranges apart, so every other member reaches a
// remapped cluster at its global ranges). The decision is made from the fleet alone,
// so both ends of every pair agree on it.
//
// Allocations are kept in the rendered Fleet table: a later render keeps every
// allocation it finds there, so adding or removing clusters never moves another's.
// IPv4 only: overlapping IPv6 networks are still an error.
type GlobalnetSpec struct {
	// CIDR is the IPv4 pool global ranges are allocated from, e.g. 100.64.0.0/10.
	// It must overlap no member's pod or service CIDR.
	CIDR string `json:"cidr"`
}

// GlobalnetHint is how an error tells the user to turn globalnet on.
const GlobalnetHint = "to connect clusters with the same ranges, turn globalnet on: spec.globalnet: {cidr: 100.64.0.0/10}"

// RemappedClusters returns the names of the clusters whose IPv4 pod or service CIDRs
// overlap a CIDR of another cluster: the clusters other members reach at global
// addresses. CIDRs that do not parse are ignored (validation reports them).
func RemappedClusters(cs *ClusterSet) map[string]bool {
	type owned struct {
		cluster string
		p       netip.Prefix
	}
	var all []owned
	for _, c := range cs.Spec.Clusters {
		for _, s := range slices.Concat(c.PodCIDRs, c.ServiceCIDRs) {
			if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
				all = append(all, owned{c.Name, p.Masked()})
			}
		}
	}
	out := map[string]bool{}
	for i, a := range all {
		for _, b := range all[i+1:] {
			if a.cluster != b.cluster && a.p.Overlaps(b.p) {
				out[a.cluster], out[b.cluster] = true, true
			}
		}
	}
	return out
}

// globalnetOn says whether overlapping clusters a and b can be remapped: the fleet has
// a pool, or both pin their global ranges.
func globalnetOn(cs *ClusterSet, a, b string) bool {
	if cs.Spec.Globalnet != nil {
		return true
	}
	pinned := func(name string) bool {
		i := slices.IndexFunc(cs.Spec.Clusters, func(c ClusterSpec) bool { return c.Name == name })
		return i >= 0 && len(cs.Spec.Clusters[i].GlobalPodCIDRs) > 0
	}
	return pinned(a) && pinned(b)
}

// globalKind is one of the two networks a remapped cluster gets a global twin of.
type globalKind struct {
	field string // of ClusterSpec and FleetMember
	real  func(*ClusterSpec) []string
	get   func(*ClusterSpec) *[]string
	kept  func(*FleetMember) []string
}

var globalKinds = []globalKind{
	{"globalPodCIDRs", func(c *ClusterSpec) []string { return c.PodCIDRs }, func(c *ClusterSpec) *[]string { return &c.GlobalPodCIDRs }, func(m *FleetMember) []string { return m.GlobalPodCIDRs }},
	{"globalServiceCIDRs", func(c *ClusterSpec) []string { return c.ServiceCIDRs }, func(c *ClusterSpec) *[]string { return &c.GlobalServiceCIDRs }, func(m *FleetMember) []string { return m.GlobalServiceCIDRs }},
}

// v4Pod is the cluster's IPv4 pod CIDR, if it has one that parses.
func v4Pod(c *ClusterSpec) (netip.Prefix, bool) { return firstV4(c.PodCIDRs) }

func firstV4(cidrs []string) (netip.Prefix, bool) {
	for _, s := range cidrs {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			return p.Masked(), true
		}
	}
	return netip.Prefix{}, false
}

// realCIDRs are every member's pod and service CIDRs that parse.
func realCIDRs(cs *ClusterSet) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cs.Spec.Clusters {
		for _, s := range slices.Concat(c.PodCIDRs, c.ServiceCIDRs) {
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Masked())
			}
		}
	}
	return out
}

// validateGlobalnet checks the pool and the pinned global ranges.
func validateGlobalnet(cs *ClusterSet) field.ErrorList {
	var errs field.ErrorList
	real := realCIDRs(cs)
	overlapsReal := func(p netip.Prefix) (netip.Prefix, bool) {
		for _, r := range real {
			if r.Overlaps(p) {
				return r, true
			}
		}
		return netip.Prefix{}, false
	}
	var pool netip.Prefix
	if g := cs.Spec.Globalnet; g != nil {
		fp := field.NewPath("spec", "globalnet", "cidr")
		p, err := netip.ParsePrefix(g.CIDR)
		switch {
		case g.CIDR == "":
			errs = append(errs, field.Required(fp, "name the IPv4 pool global pod ranges come from, e.g. 100.64.0.0/10"))
		case err != nil || !p.Addr().Is4():
			errs = append(errs, field.Invalid(fp, g.CIDR, "must be an IPv4 CIDR, e.g. 100.64.0.0/10 (globalnet is IPv4 only)"))
		case p.Masked() != p:
			errs = append(errs, field.Invalid(fp, g.CIDR, fmt.Sprintf("has host bits set; did you mean %s?", p.Masked())))
		default:
			if r, bad := overlapsReal(p); bad {
				errs = append(errs, field.Invalid(fp, g.CIDR, fmt.Sprintf("overlaps the member network %s; pick a pool no cluster uses, e.g. 100.64.0.0/10", r)))
			} else {
				pool = p
			}
		}
	}
	type pinned struct {
		path *field.Path
		p    netip.Prefix
	}
	var pins []pinned
	for i := range cs.Spec.Clusters {
		c := &cs.Spec.Clusters[i]
		for _, k := range globalKinds {
			p := field.NewPath("spec", "clusters").Key(c.Name).Child(k.field)
			pinnedList := *k.get(c)
			if len(pinnedList) > 1 {
				errs = append(errs, field.TooMany(p, len(pinnedList), 1))
			}
			for j, s := range pinnedList {
				g, err := netip.ParsePrefix(s)
				real, hasReal := firstV4(k.real(c))
				switch {
				case err != nil || !g.Addr().Is4():
					errs = append(errs, field.Invalid(p.Index(j), s, "must be an IPv4 CIDR (globalnet is IPv4 only)"))
				case g.Masked() != g:
					errs = append(errs, field.Invalid(p.Index(j), s, fmt.Sprintf("has host bits set; did you mean %s?", g.Masked())))
				case !hasReal:
					errs = append(errs, field.Invalid(p.Index(j), s, "the cluster has no IPv4 CIDR to map it onto"))
				case g.Bits() != real.Bits():
					errs = append(errs, field.Invalid(p.Index(j), s, fmt.Sprintf("must be a /%d, the size of %s (the map is 1:1)", real.Bits(), real)))
				case pool.IsValid() && !(pool.Bits() <= g.Bits() && pool.Contains(g.Addr())):
					errs = append(errs, field.Invalid(p.Index(j), s, fmt.Sprintf("outside spec.globalnet.cidr %s", pool)))
				default:
					if r, bad := overlapsReal(g); bad {
						errs = append(errs, field.Invalid(p.Index(j), s, fmt.Sprintf("overlaps the member network %s", r)))
						continue
					}
					for _, o := range pins {
						if o.p.Overlaps(g) {
							errs = append(errs, field.Invalid(p.Index(j), s, fmt.Sprintf("overlaps %s (%s)", o.p, o.path)))
						}
					}
					pins = append(pins, pinned{p.Index(j), g})
				}
			}
		}
	}
	for name := range RemappedClusters(cs) {
		i := slices.IndexFunc(cs.Spec.Clusters, func(c ClusterSpec) bool { return c.Name == name })
		c := &cs.Spec.Clusters[i]
		if _, ok := v4Pod(c); !ok {
			errs = append(errs, field.Invalid(field.NewPath("spec", "clusters").Key(name).Child("podCIDRs"), c.PodCIDRs,
				"its networks overlap another cluster's, so it needs an IPv4 pod CIDR to remap (globalnet is IPv4 only)"))
		}
	}
	return errs
}

// AllocateGlobalnet gives every remapped cluster of a defaulted, valid fleet a global
// pod range and a global service range (each the size of its IPv4 pod or service
// CIDR) from spec.globalnet.cidr where it pins none, writing them into the cluster's
// GlobalPodCIDRs and GlobalServiceCIDRs. kept is the Fleet table of the previous render (nil for none): every
// allocation recorded there for a cluster still in the fleet is kept, remapped or not,
// so no render ever moves an allocation. New ones are the lowest free block of the
// pod CIDR's size, given in cluster-name order, so the result depends on the fleet and
// the kept table alone. An exhausted pool is an error naming the field and the fix;
// cs is then left unchanged.
func AllocateGlobalnet(cs *ClusterSet, kept *Fleet) error {
	if cs.Spec.Globalnet == nil {
		return nil
	}
	pool, err := netip.ParsePrefix(cs.Spec.Globalnet.CIDR)
	if err != nil {
		return fmt.Errorf("spec.globalnet.cidr: %w", err)
	}
	taken := realCIDRs(cs)
	type key struct {
		cluster string
		kind    int
	}
	alloc := map[key]netip.Prefix{}
	for _, c := range cs.Spec.Clusters {
		for k, kind := range globalKinds {
			for _, s := range *kind.get(&c) {
				if p, err := netip.ParsePrefix(s); err == nil {
					taken = append(taken, p.Masked())
					alloc[key{c.Name, k}] = p.Masked()
				}
			}
		}
	}
	fits := func(p netip.Prefix) bool {
		if !(pool.Bits() <= p.Bits() && pool.Contains(p.Addr())) {
			return false
		}
		return !slices.ContainsFunc(taken, p.Overlaps)
	}
	byName := slices.Clone(cs.Spec.Clusters)
	sort.Slice(byName, func(i, j int) bool { return byName[i].Name < byName[j].Name })
	// Kept allocations first, so a new cluster never takes a block an old one holds.
	if kept != nil {
		for _, c := range byName {
			for k, kind := range globalKinds {
				real, ok := firstV4(kind.real(&c))
				if _, pinned := alloc[key{c.Name, k}]; pinned || !ok {
					continue
				}
				for _, m := range kept.Spec.Clusters {
					if m.Name != c.Name || len(kind.kept(&m)) == 0 {
						continue
					}
					if p, err := netip.ParsePrefix(kind.kept(&m)[0]); err == nil && p.Bits() == real.Bits() && fits(p.Masked()) {
						alloc[key{c.Name, k}] = p.Masked()
						taken = append(taken, p.Masked())
					}
				}
			}
		}
	}
	remapped := RemappedClusters(cs)
	for _, c := range byName {
		for k, kind := range globalKinds {
			real, ok := firstV4(kind.real(&c))
			if _, done := alloc[key{c.Name, k}]; done || !remapped[c.Name] || !ok {
				continue
			}
			p, ok := firstFree(pool, real.Bits(), fits)
			if !ok {
				return fmt.Errorf("spec.globalnet.cidr: %s has no free /%d left for cluster %s's %s (%d global ranges already allocated): "+
					"use a larger pool (e.g. 100.64.0.0/10), smaller pod or service CIDRs, or give clusters that need no remap networks of their own",
					pool, real.Bits(), c.Name, kind.field, len(alloc))
			}
			alloc[key{c.Name, k}] = p
			taken = append(taken, p)
		}
	}
	for i := range cs.Spec.Clusters {
		for k, kind := range globalKinds {
			if p, ok := alloc[key{cs.Spec.Clusters[i].Name, k}]; ok {
				*kind.get(&cs.Spec.Clusters[i]) = []string{p.String()}
			}
		}
	}
	return nil
}

// firstFree is the lowest block of the given size in pool that fits.
func firstFree(pool netip.Prefix, bits int, fits func(netip.Prefix) bool) (netip.Prefix, bool) {
	if bits < pool.Bits() || bits > 32 {
		return netip.Prefix{}, false
	}
	step := uint64(1) << (32 - bits)
	a := pool.Addr().As4()
	start := uint64(a[0])<<24 | uint64(a[1])<<16 | uint64(a[2])<<8 | uint64(a[3])
	end := start + uint64(1)<<(32-pool.Bits())
	for v := start; v < end; v += step {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bits)
		if fits(p) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// MapPrefix maps a, an address inside from, to the address at the same offset inside
// to (a prefix of the same size): the 1:1 remap between a pod CIDR and its global range.
func MapPrefix(a netip.Addr, from, to netip.Prefix) netip.Addr {
	tb, ab := to.Masked().Addr().AsSlice(), a.AsSlice()
	out := make([]byte, len(ab))
	for i := range ab {
		bit := i * 8
		var mask byte
		switch n := from.Bits() - bit; {
		case n >= 8:
			mask = 0xff
		case n > 0:
			mask = ^byte(0xff >> n)
		}
		out[i] = tb[i]&mask | ab[i]&^mask
	}
	r, _ := netip.AddrFromSlice(out)
	return r
}

// globalOverlapDetail is the reason an overlap between two clusters is refused.
func globalOverlapDetail(v6 bool) string {
	if v6 {
		return "every cluster needs its own pod and service networks (globalnet remaps IPv4 only)"
	}
	return "every cluster needs its own pod and service networks; " + GlobalnetHint
}
