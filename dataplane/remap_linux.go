package dataplane

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The globalnet chains of mcnet's table, present only on the active gateway of a
// remapped cluster (State.Remap):
//
//	chain remap-in {
//		type nat hook prerouting priority dstnat - 10; policy accept;
//		ip daddr 100.64.0.0/16 dnat ip prefix to 10.244.0.0/16
//	}
//	chain remap-out {
//		type nat hook postrouting priority srcnat - 20; policy accept;
//		ip saddr 10.244.0.0/16 ip daddr @remote-v4 snat ip prefix to 100.64.0.0/16
//	}
//
// "prefix" is the kernel's NF_NAT_RANGE_NETMAP: the host part of the address is kept,
// so the map is 1:1 (nf_nat_core.c, nf_nat_l3proto_ip netmap since Linux 5.8). Both are
// stateful: conntrack translates the replies back. remap-out runs before keep-source
// (priority srcnat - 10), whose identity binding would otherwise stop it: the kernel
// runs a hook's nat chains only until one binds. remap-in runs before kube-proxy's
// dstnat chains; a packet for a global pod address needs no service DNAT, so taking
// the hook's binding costs nothing. Neither depends on kube-proxy's mode.
//
// A stateless map (the service range) gets chains of its own, of type filter:
//
//	chain remap-svc-in {
//		type filter hook prerouting priority raw; policy accept;
//		ip daddr 100.65.0.0/16 ip daddr set ip daddr & 10.96.255.255 | 10.96.0.0
//	}
//	chain remap-svc-out {
//		type filter hook postrouting priority 300; policy accept;
//		ip saddr 10.96.0.0/16 ip daddr @remote-v4 ip saddr set ip saddr & 100.65.255.255 | 100.65.0.0
//	}
//
// remap-svc-in rewrites before conntrack (priority -200), which then sees the real
// ClusterIP and lets kube-proxy DNAT it, in either of its modes. The reply leaves the
// gateway with the ClusterIP as source once conntrack has undone kube-proxy's DNAT
// (at srcnat), so remap-svc-out runs after that. The checksums are updated with the
// addresses (csum_type inet, L4 pseudo-header).
const (
	chainRemapIn     = "remap-in"
	chainRemapOut    = "remap-out"
	chainRemapSvcIn  = "remap-svc-in"
	chainRemapSvcOut = "remap-svc-out"
)

var remapChainDefs = []struct {
	name string
	typ  nftables.ChainType
	hook nftables.ChainHook
	prio nftables.ChainPriority
}{
	{chainRemapIn, nftables.ChainTypeNAT, unix.NF_INET_PRE_ROUTING, -110},
	{chainRemapOut, nftables.ChainTypeNAT, unix.NF_INET_POST_ROUTING, 80},
	{chainRemapSvcIn, nftables.ChainTypeFilter, unix.NF_INET_PRE_ROUTING, -300},
	{chainRemapSvcOut, nftables.ChainTypeFilter, unix.NF_INET_POST_ROUTING, 300},
}

// remapRules are the rules of the remap chains for the maps.
func remapRules(maps []PrefixMap) map[string][][]expr.Any {
	out := map[string][][]expr.Any{}
	for _, m := range maps {
		if m.Stateless {
			out[chainRemapSvcIn] = append(out[chainRemapSvcIn], concat(matchNFProto(false),
				matchPrefix(false, m.Global),
				rewritePrefix(false, m.Real)))
			out[chainRemapSvcOut] = append(out[chainRemapSvcOut], concat(matchNFProto(false),
				matchPrefix(true, m.Real),
				[]expr.Any{loadAddr(false, false), lookup("remote-v4", false)},
				rewritePrefix(true, m.Global)))
			continue
		}
		out[chainRemapIn] = append(out[chainRemapIn], concat(matchNFProto(false),
			matchPrefix(false, m.Global),
			natPrefix(expr.NATTypeDestNAT, m.Real)))
		out[chainRemapOut] = append(out[chainRemapOut], concat(matchNFProto(false),
			matchPrefix(true, m.Real),
			[]expr.Any{loadAddr(false, false), lookup("remote-v4", false)},
			natPrefix(expr.NATTypeSourceNAT, m.Global)))
	}
	return out
}

// matchPrefix matches the source or destination IPv4 address against p, as nft
// encodes "ip saddr 10.0.0.0/16": load, mask, compare.
func matchPrefix(src bool, p netip.Prefix) []expr.Any {
	m := prefixMask(p)
	return []expr.Any{
		loadAddr(false, src),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

func prefixMask(p netip.Prefix) []byte {
	b := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return b
}

// rewritePrefix replaces the network part of the source or destination address with
// p's, keeping the host part, and updates the checksums: nft's
// "ip daddr set ip daddr & <host mask | net> | <net>".
func rewritePrefix(src bool, p netip.Prefix) []expr.Any {
	mask := prefixMask(p)
	for i := range mask {
		mask[i] = ^mask[i]
	}
	load := loadAddr(false, src)
	return []expr.Any{
		load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: p.Masked().Addr().AsSlice()},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: load.Offset, Len: 4,
			CsumType: expr.CsumTypeInet, CsumOffset: 10, CsumFlags: unix.NFT_PAYLOAD_L4CSUM_PSEUDOHDR},
	}
}

// renderRewrite prints a rewritePrefix sequence after its load of field as nft does,
// or "" when rest does not continue with one.
func renderRewrite(field string, load *expr.Payload, rest []expr.Any) string {
	if len(rest) < 2 {
		return ""
	}
	b, ok1 := rest[0].(*expr.Bitwise)
	w, ok2 := rest[1].(*expr.Payload)
	if !ok1 || !ok2 || w.OperationType != expr.PayloadWrite || w.Base != load.Base || w.Offset != load.Offset || w.Len != load.Len ||
		w.SourceRegister != b.DestRegister || len(b.Mask) != 4 || len(b.Xor) != 4 {
		return ""
	}
	or := make([]byte, 4)
	for i := range or {
		or[i] = b.Mask[i] | b.Xor[i]
	}
	m, _ := netip.AddrFromSlice(or)
	x, _ := netip.AddrFromSlice(b.Xor)
	return fmt.Sprintf("%s set %s & %s | %s", field, field, m, x)
}

// natPrefix maps the address onto p keeping its host part (nft's "prefix to").
func natPrefix(t expr.NATType, p netip.Prefix) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: p.Masked().Addr().AsSlice()},
		&expr.Immediate{Register: 2, Data: lastAddr(p).AsSlice()},
		&expr.NAT{Type: t, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 2, Prefix: true},
	}
}

// renderNATPrefix prints two immediates and a prefix NAT as nft does, reporting how
// many expressions it used (0: not that pattern).
func renderNATPrefix(exprs []expr.Any) (string, int) {
	if len(exprs) < 3 {
		return "", 0
	}
	lo, ok1 := exprs[0].(*expr.Immediate)
	hi, ok2 := exprs[1].(*expr.Immediate)
	n, ok3 := exprs[2].(*expr.NAT)
	if !ok1 || !ok2 || !ok3 || !n.Prefix || n.RegAddrMin != lo.Register || n.RegAddrMax != hi.Register || n.Family != unix.NFPROTO_IPV4 {
		return "", 0
	}
	a, okA := netip.AddrFromSlice(lo.Data)
	b, okB := netip.AddrFromSlice(hi.Data)
	if !okA || !okB {
		return "", 0
	}
	kind := "snat"
	if n.Type == expr.NATTypeDestNAT {
		kind = "dnat"
	}
	return fmt.Sprintf("%s ip prefix to %s", kind, rangeString(a, b)), 3
}

// renderMaskedCmp prints a masked compare of an address as nft does ("10.0.0.0/16"),
// or "" when rest does not start with one.
func renderMaskedCmp(rest []expr.Any) string {
	if len(rest) < 2 {
		return ""
	}
	b, ok1 := rest[0].(*expr.Bitwise)
	c, ok2 := rest[1].(*expr.Cmp)
	if !ok1 || !ok2 || c.Op != expr.CmpOpEq || len(b.Mask) != len(c.Data) {
		return ""
	}
	ones := 0
	for _, x := range b.Mask {
		for i := 7; i >= 0; i-- {
			if x&(1<<i) != 0 {
				ones++
			}
		}
	}
	a, ok := netip.AddrFromSlice(c.Data)
	if !ok {
		return ""
	}
	p := netip.PrefixFrom(a, ones)
	if !bytes.Equal(prefixMask(p), b.Mask) || p.Masked().Addr() != a {
		return ""
	}
	return p.String()
}

// ReadRemap reads back the prefix maps the kernel's remap chains translate, as
// `kubectl mcnet diagnose` compares them with the fleet table (through the gateway's
// status): a map counts only when the rules of both directions are there. None when
// mcnet's table or its remap chains are absent.
func (d *Dataplane) ReadRemap() ([]PrefixMap, error) {
	v, ok, err := d.readRuleset()
	if err != nil || !ok {
		return nil, err
	}
	return remapFromView(v), nil
}

// remapFromView parses the remap chains of a table as renderExprs prints them (the
// rules remapRules writes) and keeps the maps present in both directions.
func remapFromView(v nftView) []PrefixMap {
	rules := map[string][]string{}
	for _, c := range v.chains {
		rules[c.name] = c.rules
	}
	type half struct{ in, out bool }
	seen := map[PrefixMap]*half{}
	var order []PrefixMap
	note := func(m PrefixMap, in bool) {
		h := seen[m]
		if h == nil {
			h = &half{}
			seen[m] = h
			order = append(order, m)
		}
		if in {
			h.in = true
		} else {
			h.out = true
		}
	}
	for _, r := range rules[chainRemapIn] {
		// ip daddr G dnat ip prefix to R
		var g, real string
		if n, _ := fmt.Sscanf(r, "ip daddr %s dnat ip prefix to %s", &g, &real); n == 2 {
			if m, ok := parseMap(real, g, false); ok {
				note(m, true)
			}
		}
	}
	for _, r := range rules[chainRemapOut] {
		// ip saddr R ip daddr @remote-v4 snat ip prefix to G
		var real, set, g string
		if n, _ := fmt.Sscanf(r, "ip saddr %s ip daddr %s snat ip prefix to %s", &real, &set, &g); n == 3 {
			if m, ok := parseMap(real, g, false); ok {
				note(m, false)
			}
		}
	}
	for _, r := range rules[chainRemapSvcIn] {
		// ip daddr G ip daddr set ip daddr & MASK | R
		var g, mask, real string
		if n, _ := fmt.Sscanf(r, "ip daddr %s ip daddr set ip daddr & %s | %s", &g, &mask, &real); n == 3 {
			if gp, err := netip.ParsePrefix(g); err == nil {
				if m, ok := parseMap(real+"/"+fmt.Sprint(gp.Bits()), g, true); ok {
					note(m, true)
				}
			}
		}
	}
	for _, r := range rules[chainRemapSvcOut] {
		// ip saddr R ip daddr @remote-v4 ip saddr set ip saddr & MASK | G
		var real, set, mask, g string
		if n, _ := fmt.Sscanf(r, "ip saddr %s ip daddr %s ip saddr set ip saddr & %s | %s", &real, &set, &mask, &g); n == 4 {
			if rp, err := netip.ParsePrefix(real); err == nil {
				if m, ok := parseMap(real, g+"/"+fmt.Sprint(rp.Bits()), true); ok {
					note(m, false)
				}
			}
		}
	}
	var out []PrefixMap
	for _, m := range order {
		if h := seen[m]; h.in && h.out {
			out = append(out, m)
		}
	}
	return out
}

func parseMap(real, global string, stateless bool) (PrefixMap, bool) {
	r, err1 := netip.ParsePrefix(real)
	g, err2 := netip.ParsePrefix(global)
	if err1 != nil || err2 != nil {
		return PrefixMap{}, false
	}
	return PrefixMap{Real: r.Masked(), Global: g.Masked(), Stateless: stateless}, true
}

// dropUntranslated deletes the conntrack flows the remap chains should have
// translated but did not, because their first packet came before the chains (or the
// remote's range in @remote-v4) did: the kernel runs NAT chains only for a flow's
// first packet, so such a flow stays untranslated for as long as it lives, and a
// gateway's health probes (one UDP socket, sent every second) keep theirs alive
// forever. Translated flows are left alone; a deleted flow's next packet starts a new
// one, which the chains now translate.
func (d *Dataplane) dropUntranslated(ctx context.Context, f filterSpec) error {
	var maps []PrefixMap
	for _, m := range f.Remap {
		if !m.Stateless {
			maps = append(maps, m)
		}
	}
	if len(maps) == 0 {
		return nil
	}
	n, err := d.k.nl.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, untranslated{maps: maps, remote: f.Remote})
	if err != nil {
		// A repair, not the table: logged (no nf_conntrack_netlink, say), never
		// holding the rest of the state back.
		logr.FromContextOrDiscard(ctx).Error(err, "Cannot drop untranslated conntrack flows")
		return nil
	}
	if n > 0 {
		d.changed(ctx, "Dropped untranslated conntrack flows", "flows", n)
	}
	return nil
}

// untranslated matches flows that a stateful map covers but conntrack holds without
// its NAT: leaving the cluster from Real towards a remote with the source unchanged,
// or arriving for Global with the destination unchanged.
type untranslated struct {
	maps   []PrefixMap
	remote []netip.Prefix
}

func (u untranslated) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	src, ok1 := netip.AddrFromSlice(fl.Forward.SrcIP)
	dst, ok2 := netip.AddrFromSlice(fl.Forward.DstIP)
	rsrc, ok3 := netip.AddrFromSlice(fl.Reverse.SrcIP)
	rdst, ok4 := netip.AddrFromSlice(fl.Reverse.DstIP)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return false
	}
	src, dst, rsrc, rdst = src.Unmap(), dst.Unmap(), rsrc.Unmap(), rdst.Unmap()
	for _, m := range u.maps {
		if m.Global.Contains(dst) && rsrc == dst {
			return true // not DNATed
		}
		if m.Real.Contains(src) && rdst == src && slices.ContainsFunc(u.remote, func(p netip.Prefix) bool { return p.Contains(dst) }) {
			return true // not SNATed
		}
	}
	return false
}
