package dataplane

// mcnet's packet filter is one nftables table of its own, family inet (IPv4 and IPv6
// in one table), programmed through netlink: no iptables binary, no fork. Apply
// reads the table back (a few netlink dumps), renders it as text with the same
// renderer that renders the desired table, and only when the two differ sends the
// whole new table in one transaction: delete the table and add it again, in one
// batch, so packets see the old filter or the new one, never a mix
// (https://wiki.nftables.org/wiki-nftables/index.php/Atomic_rule_replacement).
//
// The table accepts nothing. In nftables every base chain of a hook sees the packet
// and a packet passes only if none drops it: an accept here would not stop the
// CNI's, kube-proxy's or a NetworkPolicy engine's chains (iptables-nft chains are
// base chains too), and an accept could not open a host firewall's drop either
// (https://wiki.nftables.org/wiki-nftables/index.php/Configuring_chains#Base_chain_priority).
// So mcnet only:
//
//   - drops VXLAN frames of its VNIs that come from anyone but the expected peers
//     (chain vxlan-sources, hook input);
//   - keeps the source address of traffic between local and remote CIDRs (chain
//     keep-source, hook postrouting, before the iptables and kube-proxy nat chains);
//   - clamps the TCP MSS of SYNs leaving through a tunnel to what fits its MTU
//     (chain clamp-mss);
//   - exempts the outer UDP packets of its VXLAN links from connection tracking
//     (chains untracked-in and untracked-out, at raw priority, before conntrack).
//
// Earlier versions kept iptables chains <ChainPrefix>-FORWARD and friends, jumped
// to first from the built-in chains; Apply removes them from the iptables-nft
// tables, in a transaction of its own.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftHandle is the part of *nftables.Conn the dataplane uses. Reads go to the kernel
// at once; writes are queued until Flush sends them as one transaction.
type nftHandle interface {
	ListTablesOfFamily(family nftables.TableFamily) ([]*nftables.Table, error)
	ListChainsOfTableFamily(family nftables.TableFamily) ([]*nftables.Chain, error)
	ListChain(t *nftables.Table, chain string) (*nftables.Chain, error)
	GetRules(t *nftables.Table, c *nftables.Chain) ([]*nftables.Rule, error)
	GetSets(t *nftables.Table) ([]*nftables.Set, error)
	GetSetElements(s *nftables.Set) ([]nftables.SetElement, error)
	AddTable(t *nftables.Table) *nftables.Table
	DelTable(t *nftables.Table)
	AddChain(c *nftables.Chain) *nftables.Chain
	FlushChain(c *nftables.Chain)
	DelChain(c *nftables.Chain)
	AddRule(r *nftables.Rule) *nftables.Rule
	DelRule(r *nftables.Rule) error
	AddSet(s *nftables.Set, vals []nftables.SetElement) error
	Flush() error
}

// nftConn is the real nftHandle: *nftables.Conn, with ListChain's "no such chain"
// made testable. The library wraps that error with %v
// (https://github.com/google/nftables/blob/v0.3.0/chain.go#L219), losing ENOENT.
type nftConn struct{ *nftables.Conn }

func (c nftConn) ListChain(t *nftables.Table, chain string) (*nftables.Chain, error) {
	ch, err := c.Conn.ListChain(t, chain)
	if err != nil && strings.HasSuffix(err.Error(), unix.ENOENT.Error()) {
		return nil, fmt.Errorf("list chain %s: %w", chain, unix.ENOENT)
	}
	return ch, err
}

// The chains of mcnet's table. keep-source runs before srcnat (100), where
// iptables' nat POSTROUTING and kube-proxy's nftables masquerade live.
const (
	chainVXLANSources = "vxlan-sources"
	chainKeepSource   = "keep-source"
	chainClampMSS     = "clamp-mss"
	chainUntrackedIn  = "untracked-in"
	chainUntrackedOut = "untracked-out"
)

// prioRaw is where iptables' raw table sits, before conntrack (-200).
const prioRaw = -300

// nftChainDefs are mcnet's base chains, in the order they are created and rendered.
var nftChainDefs = []struct {
	name string
	typ  nftables.ChainType
	hook nftables.ChainHook
	prio nftables.ChainPriority
}{
	{chainVXLANSources, nftables.ChainTypeFilter, unix.NF_INET_LOCAL_IN, 0},
	{chainKeepSource, nftables.ChainTypeNAT, unix.NF_INET_POST_ROUTING, 90},
	{chainClampMSS, nftables.ChainTypeFilter, unix.NF_INET_FORWARD, -150},
	{chainUntrackedIn, nftables.ChainTypeFilter, unix.NF_INET_PRE_ROUTING, prioRaw},
	{chainUntrackedOut, nftables.ChainTypeFilter, unix.NF_INET_LOCAL_OUT, prioRaw},
}

// nftRuleset is a whole mcnet table as netlink objects, ready to send.
type nftRuleset struct {
	table  *nftables.Table
	sets   []nftSetElems
	chains []nftChainRules
}

type nftSetElems struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

type nftChainRules struct {
	chain *nftables.Chain
	rules [][]expr.Any
}

// buildRuleset turns a filterSpec into the table mcnet wants.
func buildRuleset(name string, f filterSpec) nftRuleset {
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	rs := nftRuleset{table: t}
	addSet := func(name string, v6, interval bool, elems []nftables.SetElement) {
		kt := nftables.TypeIPAddr
		if v6 {
			kt = nftables.TypeIP6Addr
		}
		rs.sets = append(rs.sets, nftSetElems{&nftables.Set{Table: t, Name: name, KeyType: kt, Interval: interval}, elems})
	}
	for _, v6 := range []bool{false, true} {
		addSet("local"+famSuffix(v6), v6, true, prefixElements(f.Local, v6))
		addSet("remote"+famSuffix(v6), v6, true, prefixElements(f.Remote, v6))
	}
	var sources, keep, mssRules, untracked [][]expr.Any
	for _, pf := range f.Ports {
		for _, v6 := range []bool{false, true} {
			set := pf.Name + "-peers" + famSuffix(v6)
			addSet(set, v6, false, addrElements(pf.Peers, v6))
			sources = append(sources, concat(
				matchUDPDport(pf.Port), matchVNI(pf.VNI), matchNFProto(v6),
				[]expr.Any{loadAddr(v6, true), lookup(set, true), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}},
			))
		}
	}
	for _, e := range f.Encap {
		// Both directions use the port as destination: a VXLAN device sends to
		// the port it listens on.
		untracked = append(untracked, concat(matchUDPDport(e.Port), matchVNI(e.VNI), []expr.Any{&expr.Notrack{}}))
	}
	for _, v6 := range []bool{false, true} {
		local, remote := "local"+famSuffix(v6), "remote"+famSuffix(v6)
		for _, dir := range [][2]string{{local, remote}, {remote, local}} {
			// A NAT statement that maps the source to itself: the kernel runs the nat
			// chains of a hook in priority order only until one sets up a binding, so
			// this identity binding keeps every later MASQUERADE away
			// (nf_nat_inet_fn, https://elixir.bootlin.com/linux/v6.18/source/net/netfilter/nf_nat_core.c).
			// An accept would not: it ends only this chain.
			keep = append(keep, concat(matchNFProto(v6), []expr.Any{
				loadAddr(v6, true), lookup(dir[0], false),
				loadAddr(v6, false), lookup(dir[1], false),
				loadAddr(v6, true),
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(nfproto(v6)), RegAddrMin: 1},
			}))
		}
	}
	for _, m := range f.MSS {
		for _, v6 := range []bool{false, true} {
			// The MSS that fills the tunnel MTU: minus the IP header (20 or 40) and
			// the TCP header (20). Setting it only ever lowers the MSS, like
			// iptables' TCPMSS ("increase can cause connection to stall",
			// https://elixir.bootlin.com/linux/v6.18/source/net/netfilter/nft_exthdr.c).
			// A fixed value rather than "rt mtu": google/nftables v0.3.0 cannot read
			// rt and byteorder expressions back, so the table could not be compared.
			mss := m.MTU - 40
			if v6 {
				mss = m.MTU - 60
			}
			mssRules = append(mssRules, concat(
				[]expr.Any{
					&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(m.Link)},
				},
				matchNFProto(v6),
				[]expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
					&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpSYN | tcpRST}, Xor: []byte{0}},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{tcpSYN}},
					&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(mss))},
					&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: tcpOptMaxSeg, Offset: 2, Len: 2, SourceRegister: 1},
				},
			))
		}
	}
	rules := map[string][][]expr.Any{chainVXLANSources: sources, chainKeepSource: keep, chainClampMSS: mssRules,
		chainUntrackedIn: untracked, chainUntrackedOut: untracked}
	defs := slices.Clone(nftChainDefs)
	if len(f.Remap) > 0 {
		for name, r := range remapRules(f.Remap) {
			rules[name] = r
		}
		for _, d := range remapChainDefs {
			if rules[d.name] != nil {
				defs = append(defs, d)
			}
		}
	}
	for _, def := range defs {
		rs.chains = append(rs.chains, nftChainRules{
			chain: &nftables.Chain{
				Table: t, Name: def.name, Type: def.typ,
				Hooknum: nftables.ChainHookRef(def.hook), Priority: nftables.ChainPriorityRef(def.prio),
				Policy: ptr(nftables.ChainPolicyAccept),
			},
			rules: rules[def.name],
		})
	}
	return rs
}

const (
	tcpSYN       = 0x02
	tcpRST       = 0x04
	tcpOptMaxSeg = 2
)

func famSuffix(v6 bool) string {
	if v6 {
		return "-v6"
	}
	return "-v4"
}

func nfproto(v6 bool) byte {
	if v6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

func concat(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }

// matchNFProto is the dependency nft adds before any IP header match in an inet table.
func matchNFProto(v6 bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto(v6)}},
	}
}

func matchUDPDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// matchVNI matches the 24-bit VNI of a VXLAN header, 4 bytes into it, after the 8
// bytes of UDP header (RFC 7348 section 5): other VXLAN devices (a CNI's) may share
// the port with other VNIs, and their frames are none of mcnet's business.
func matchVNI(vni int) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 12, Len: 3},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(vni >> 16), byte(vni >> 8), byte(vni)}},
	}
}

// loadAddr loads the source or destination address of the IP header into register 1.
func loadAddr(v6, src bool) *expr.Payload {
	p := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
	switch {
	case v6 && src:
		p.Offset, p.Len = 8, 16
	case v6:
		p.Offset, p.Len = 24, 16
	case src:
		p.Offset = 12
	}
	return p
}

func lookup(set string, invert bool) *expr.Lookup {
	return &expr.Lookup{SourceRegister: 1, SetName: set, Invert: invert}
}

// ifname is an interface name as the kernel compares it: IFNAMSIZ bytes, NUL padded.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func addrElements(addrs []netip.Addr, v6 bool) []nftables.SetElement {
	var out []nftables.SetElement
	for _, a := range addrs {
		if a = a.Unmap(); a.Is6() == v6 {
			out = append(out, nftables.SetElement{Key: a.AsSlice()})
		}
	}
	return out
}

// prefixElements encodes prefixes of one family for an interval set: merged ranges,
// each a start element and an end element one past its last address (none when the
// range ends at the top of the address space), as nft sends them.
func prefixElements(ps []netip.Prefix, v6 bool) []nftables.SetElement {
	type span struct{ lo, hi netip.Addr }
	var spans []span
	for _, p := range ps {
		if p.Addr().Is6() == v6 {
			spans = append(spans, span{p.Masked().Addr(), lastAddr(p)})
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo.Compare(b.lo) })
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 && (merged[n-1].hi.Next() == s.lo || s.lo.Compare(merged[n-1].hi) <= 0) {
			if s.hi.Compare(merged[n-1].hi) > 0 {
				merged[n-1].hi = s.hi
			}
			continue
		}
		merged = append(merged, s)
	}
	var out []nftables.SetElement
	for _, s := range merged {
		out = append(out, nftables.SetElement{Key: s.lo.AsSlice()})
		if end := s.hi.Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// lastAddr is the highest address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// view renders the wanted ruleset the way readRuleset renders the kernel's.
func (rs nftRuleset) view() nftView {
	v := nftView{table: rs.table.Name}
	for _, s := range rs.sets {
		v.sets = append(v.sets, viewSet(s.set, s.elems))
	}
	for _, c := range rs.chains {
		v.chains = append(v.chains, viewChain(c.chain, c.rules))
	}
	return v.sorted()
}

// readRuleset reads mcnet's table from the kernel; ok is false when it is absent.
func (d *Dataplane) readRuleset() (v nftView, ok bool, err error) {
	name := d.cfg.nftTable()
	tables, err := d.k.nft.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return v, false, fmt.Errorf("list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == name }) {
		return v, false, nil
	}
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	v.table = name
	chains, err := d.k.nft.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return v, false, fmt.Errorf("list nftables chains: %w", err)
	}
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != name {
			continue
		}
		rules, err := d.k.nft.GetRules(t, c)
		if err != nil {
			return v, false, fmt.Errorf("list rules of %s: %w", c.Name, err)
		}
		var exprs [][]expr.Any
		for _, r := range rules {
			exprs = append(exprs, r.Exprs)
		}
		v.chains = append(v.chains, viewChain(c, exprs))
	}
	sets, err := d.k.nft.GetSets(t)
	if err != nil {
		return v, false, fmt.Errorf("list nftables sets: %w", err)
	}
	for _, s := range sets {
		elems, err := d.k.nft.GetSetElements(s)
		if err != nil {
			return v, false, fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		v.sets = append(v.sets, viewSet(s, elems))
	}
	return v.sorted(), true, nil
}

// syncFilter makes mcnet's nftables table equal to f in one transaction, or leaves it
// alone when it already is; remove deletes it instead (Cleanup). Chains of earlier
// versions go in a transaction of their own, so trouble with them never holds the
// table back.
func (d *Dataplane) syncFilter(ctx context.Context, f filterSpec, remove bool) error {
	if d.k.nft == nil {
		return errors.New("packet filter: no nftables handle")
	}
	return errors.Join(d.syncTable(ctx, f, remove), d.removeLegacy(ctx))
}

func (d *Dataplane) syncTable(ctx context.Context, f filterSpec, remove bool) error {
	want := buildRuleset(d.cfg.nftTable(), f)
	have, exists, err := d.readRuleset()
	if err != nil {
		return fmt.Errorf("packet filter: %w", err)
	}
	switch {
	case remove && !exists, !remove && exists && have.String() == want.view().String():
		return nil
	}
	nft := d.k.nft
	if exists {
		nft.DelTable(want.table)
	}
	if !remove {
		nft.AddTable(want.table)
		ids := map[string]uint32{}
		for _, s := range want.sets {
			if err := nft.AddSet(s.set, s.elems); err != nil {
				d.abort()
				return fmt.Errorf("packet filter: set %s: %w", s.set.Name, err)
			}
			ids[s.set.Name] = s.set.ID
		}
		for _, c := range want.chains {
			nft.AddChain(c.chain)
			for _, exprs := range c.rules {
				for _, e := range exprs {
					if l, ok := e.(*expr.Lookup); ok {
						l.SetID = ids[l.SetName] // the set is new in this transaction
					}
				}
				nft.AddRule(&nftables.Rule{Table: want.table, Chain: c.chain, Exprs: exprs})
			}
		}
	}
	if err := nft.Flush(); err != nil {
		return fmt.Errorf("packet filter: replace table inet %s: %w", want.table.Name, err)
	}
	if remove {
		d.changed(ctx, "Deleted nftables table", "table", want.table.Name)
		return nil
	}
	d.changed(ctx, "Replaced nftables table", "table", want.table.Name, "existed", exists)
	return d.dropUntranslated(ctx, f)
}

// abort throws away the writes queued so far: the library has no way to drop them,
// so it sends them with one that must fail (deleting a table that cannot exist),
// and the kernel rejects the whole batch.
func (d *Dataplane) abort() {
	d.k.nft.DelTable(&nftables.Table{Name: d.cfg.nftTable() + "-no-such-table", Family: nftables.TableFamilyINet})
	_ = d.k.nft.Flush()
}

// famName names a table family the way nft prints it.
func famName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return fmt.Sprintf("family%d", f)
}
