// Package membership is a cluster's view of the fleet's membership table, the Fleet
// object rendered from Git, and the judge of what other clusters publish on the broker.
// Receivers (gateways, route agents, the service importer and DNS) accept only clusters
// in the table and, from each, only subnets and addresses inside that cluster's own
// allocation; everything else comes back as a Rejection saying who published what, so
// the receiver can report it. A missing table accepts nothing.
package membership

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// MaxSubnets is the most subnets accepted from one cluster. A cluster publishes its pod
// and service CIDRs, at most two each; more is a flood, and every accepted subnet costs
// a route, a rule and a filter entry on every node of every other cluster.
const MaxSubnets = 8

// maxConsidered bounds the work spent on one published list: entries past it are
// rejected unread.
const maxConsidered = 64

// Member is one cluster of the table.
type Member struct {
	Name         string
	PodCIDRs     []netip.Prefix
	ServiceCIDRs []netip.Prefix
	// Cable and CablePort are the driver the cluster prefers and the port its gateways
	// listen on with it, as Git says; what its Endpoint claims does not count.
	Cable     mcnetv1.CableDriver
	CablePort int32
	// GlobalPodCIDRs and Remapped are as in the Fleet table (see globalnet.go).
	GlobalPodCIDRs     []netip.Prefix
	GlobalServiceCIDRs []netip.Prefix
	Remapped           bool
	// MaxExports is how many of the member's exports receivers import.
	MaxExports int
}

// CIDRs are the member's pod and service CIDRs: its whole allocation.
func (m *Member) CIDRs() []netip.Prefix {
	return append(slices.Clone(m.PodCIDRs), m.ServiceCIDRs...)
}

// Contains says whether p lies inside the member's allocation.
func (m *Member) Contains(p netip.Prefix) bool {
	for _, c := range m.CIDRs() {
		if c.Bits() <= p.Bits() && c.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// ContainsAddr says whether a lies inside the member's allocation.
func (m *Member) ContainsAddr(a netip.Addr) bool {
	return slices.ContainsFunc(m.CIDRs(), func(c netip.Prefix) bool { return c.Contains(a.Unmap()) })
}

func (m *Member) allocation() string {
	return strings.Join(strs(m.CIDRs()), ", ")
}

// Table is the fleet's membership table.
type Table struct {
	name    string
	members map[string]*Member
	// nets are every member's networks by prefix, and bits the prefix lengths among
	// them: InFleet looks an address up once per length instead of scanning every
	// member (gateways ask it for each address of each remote).
	nets map[netip.Prefix]bool
	bits []int
}

// Empty is the table of a Fleet that cannot be read: it accepts nothing.
func Empty(name string) *Table {
	return &Table{name: name, members: map[string]*Member{}, nets: map[netip.Prefix]bool{}}
}

// New reads a Fleet into a table. A member whose entry does not parse (the Fleet CRD's
// validation makes that unlikely) is left out, and reported in the error; the table
// holds the others.
func New(f *mcnetv1.Fleet) (*Table, error) {
	t := Empty(f.Name)
	var errs []error
	for _, fm := range f.Spec.Clusters {
		m := &Member{Name: fm.Name, Cable: fm.Cable, CablePort: fm.CablePort, Remapped: fm.Remapped, MaxExports: int(fm.MaxExports)}
		if m.MaxExports <= 0 {
			m.MaxExports = mcnetv1.DefaultMaxExports
		}
		var bad []error
		for _, list := range []struct {
			dst *[]netip.Prefix
			src []string
		}{{&m.PodCIDRs, fm.PodCIDRs}, {&m.ServiceCIDRs, fm.ServiceCIDRs}, {&m.GlobalPodCIDRs, fm.GlobalPodCIDRs}, {&m.GlobalServiceCIDRs, fm.GlobalServiceCIDRs}} {
			for _, s := range list.src {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					bad = append(bad, err)
					continue
				}
				*list.dst = append(*list.dst, p.Masked())
			}
		}
		bad = append(bad, m.checkGlobal())
		if _, dup := t.members[fm.Name]; dup {
			bad = append(bad, errors.New("listed twice"))
		}
		if bad = slices.DeleteFunc(bad, func(e error) bool { return e == nil }); len(bad) > 0 {
			errs = append(errs, fmt.Errorf("member %q left out: %w", fm.Name, errors.Join(bad...)))
			continue
		}
		t.members[fm.Name] = m
		for _, p := range slices.Concat(m.CIDRs(), m.GlobalPodCIDRs, m.GlobalServiceCIDRs) { // global ranges too
			if !slices.Contains(t.bits, p.Bits()) {
				t.bits = append(t.bits, p.Bits())
			}
			t.nets[p] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return t, fmt.Errorf("fleet table %s: %w", f.Name, err)
	}
	return t, nil
}

// ErrNoTable is wrapped by Load's error when the Fleet could not be read at all (as
// opposed to a member left out of a table that was read).
var ErrNoTable = errors.New("no fleet table")

// Load reads the Fleet called name through r. When it cannot be read the table is
// Empty, so the caller accepts nothing, and the error (wrapping ErrNoTable and the
// read's error) says why.
func Load(ctx context.Context, r client.Reader, name string) (*Table, error) {
	var f mcnetv1.Fleet
	if err := r.Get(ctx, client.ObjectKey{Name: name}, &f); err != nil {
		return Empty(name), fmt.Errorf("%w: read Fleet %s: %w", ErrNoTable, name, err)
	}
	return New(&f)
}

// Name is the Fleet's name.
func (t *Table) Name() string { return t.name }

// Member returns the member called name.
func (t *Table) Member(name string) (*Member, bool) {
	m, ok := t.members[name]
	return m, ok
}

// Names lists the members, sorted.
func (t *Table) Names() []string {
	out := make([]string, 0, len(t.members))
	for n := range t.members {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// InFleet says whether a lies inside any member's allocation, or in the global range
// other clusters reach a member at.
func (t *Table) InFleet(a netip.Addr) bool {
	a = a.Unmap()
	for _, b := range t.bits {
		if p, err := a.Prefix(b); err == nil && t.nets[p] {
			return true
		}
	}
	return false
}

// NotMember is the Rejection of everything a cluster outside the table publishes.
func (t *Table) NotMember(cluster, object string) Rejection {
	return Rejection{Cluster: cluster, Object: object, Reason: fmt.Sprintf("cluster %q is not a member of fleet %s", cluster, t.name)}
}

// Rejection is something a cluster published that receivers ignore, and why.
type Rejection struct {
	// Cluster is the cluster that published it (its writer identity on the broker).
	Cluster string
	// Object names what carried it, e.g. "Endpoint west".
	Object string
	// Field and Value, when set, name the offending entry, e.g. spec.subnets[2] ::/0.
	Field, Value string
	// Reason says why it is ignored.
	Reason string
}

func (r Rejection) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster %s: %s", r.Cluster, r.Object)
	if r.Field != "" {
		fmt.Fprintf(&b, " %s", r.Field)
	}
	if r.Value != "" {
		fmt.Fprintf(&b, " %s", r.Value)
	}
	fmt.Fprintf(&b, ": %s", r.Reason)
	return b.String()
}

// Summary joins rejections into one line, at most max of them spelled out.
func Summary(rs []Rejection, max int) string {
	parts := make([]string, 0, min(len(rs), max)+1)
	for i, r := range rs {
		if i == max {
			parts = append(parts, fmt.Sprintf("and %d more", len(rs)-max))
			break
		}
		parts = append(parts, r.String())
	}
	return strings.Join(parts, "; ")
}

// Sort orders rejections by cluster, object and field, for stable reports.
func Sort(rs []Rejection) {
	slices.SortStableFunc(rs, func(a, b Rejection) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Object, b.Object), cmp.Compare(a.Field, b.Field))
	})
}

// Subnets returns the subnets of published (the field at path of object) that may be
// routed to the member: each inside its allocation, none already covered by another,
// at most MaxSubnets, in the order published. The rest come back as rejections.
func (m *Member) Subnets(object, path string, published []string) ([]netip.Prefix, []Rejection) {
	var rej []Rejection
	reject := func(i int, v, why string) {
		rej = append(rej, Rejection{Cluster: m.Name, Object: object, Field: fmt.Sprintf("%s[%d]", path, i), Value: v, Reason: why})
	}
	type cand struct {
		i int
		p netip.Prefix
	}
	var in []cand
	for i, s := range published {
		if i >= maxConsidered {
			rej = append(rej, Rejection{Cluster: m.Name, Object: object, Field: path,
				Reason: fmt.Sprintf("%d entries; only the first %d are read", len(published), maxConsidered)})
			break
		}
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			reject(i, s, "not a CIDR")
		case !m.Contains(p.Masked()):
			reject(i, s, "outside its allocation ("+m.allocation()+")")
		default:
			in = append(in, cand{i, p.Masked()})
		}
	}
	var out []netip.Prefix
	for k, c := range in {
		covered := slices.ContainsFunc(in, func(o cand) bool {
			return o.i != c.i && o.p.Contains(c.p.Addr()) && (o.p.Bits() < c.p.Bits() || (o.p == c.p && o.i < c.i))
		})
		switch {
		case covered:
			reject(c.i, c.p.String(), "already covered by another published subnet")
		case len(out) == MaxSubnets:
			reject(in[k].i, c.p.String(), fmt.Sprintf("more than %d subnets", MaxSubnets))
		default:
			out = append(out, c.p)
		}
	}
	return out, rej
}

func strs(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
