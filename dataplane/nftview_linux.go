package dataplane

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftView is an nftables table rendered as text: set and chain definitions and
// rules in the syntax `nft list table` prints them in, one line each. Apply
// compares the kernel's view with the wanted one; the fake kernel and the
// real-kernel tests render with it too, so `nft` itself checks the renderer.
type nftView struct {
	family string // "inet" unless set
	table  string
	sets   []nftSetView
	chains []nftChainView
}

type nftSetView struct {
	name, keyType string
	interval      bool
	elems         []string // sorted
}

type nftChainView struct {
	name, typ string
	hook      string
	prio      int32
	policy    string
	base      bool
	rules     []string // in order
}

func (v nftView) sorted() nftView {
	slices.SortFunc(v.sets, func(a, b nftSetView) int { return cmp.Compare(a.name, b.name) })
	slices.SortFunc(v.chains, func(a, b nftChainView) int { return cmp.Compare(a.name, b.name) })
	return v
}

// String renders one line per set, chain and rule, prefixed with "nft <family>
// <table>"; rules carry their position in the chain.
func (v nftView) String() string {
	fam := cmp.Or(v.family, "inet")
	var b strings.Builder
	for _, s := range v.sets {
		fmt.Fprintf(&b, "nft %s %s set %s type %s", fam, v.table, s.name, s.keyType)
		if s.interval {
			b.WriteString(" flags interval")
		}
		if len(s.elems) > 0 {
			fmt.Fprintf(&b, " elements %s", strings.Join(s.elems, ","))
		}
		b.WriteString("\n")
	}
	for _, c := range v.chains {
		fmt.Fprintf(&b, "nft %s %s chain %s", fam, v.table, c.name)
		if c.base {
			fmt.Fprintf(&b, " type %s hook %s priority %d policy %s", c.typ, c.hook, c.prio, c.policy)
		}
		b.WriteString("\n")
		for i, r := range c.rules {
			fmt.Fprintf(&b, "nft %s %s chain %s #%d %s\n", fam, v.table, c.name, i+1, r)
		}
	}
	return b.String()
}

func viewChain(c *nftables.Chain, rules [][]expr.Any) nftChainView {
	cv := nftChainView{name: c.Name, typ: string(c.Type)}
	if c.Hooknum != nil {
		cv.base = true
		cv.hook = hookName(*c.Hooknum)
		if c.Priority != nil {
			cv.prio = int32(*c.Priority)
		}
		cv.policy = "accept"
		if c.Policy != nil && *c.Policy == nftables.ChainPolicyDrop {
			cv.policy = "drop"
		}
	}
	for _, r := range rules {
		cv.rules = append(cv.rules, renderExprs(r))
	}
	return cv
}

func hookName(h nftables.ChainHook) string {
	switch h {
	case unix.NF_INET_PRE_ROUTING:
		return "prerouting"
	case unix.NF_INET_LOCAL_IN:
		return "input"
	case unix.NF_INET_FORWARD:
		return "forward"
	case unix.NF_INET_LOCAL_OUT:
		return "output"
	case unix.NF_INET_POST_ROUTING:
		return "postrouting"
	}
	return fmt.Sprintf("hook%d", h)
}

// viewSet renders a set's elements as nft does: addresses, and for interval sets the
// ranges between start and end elements, as prefixes where they are one.
func viewSet(s *nftables.Set, elems []nftables.SetElement) nftSetView {
	sv := nftSetView{name: s.Name, keyType: s.KeyType.Name, interval: s.Interval}
	if !s.Interval {
		for _, e := range elems {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				sv.elems = append(sv.elems, a.String())
			}
		}
		slices.SortFunc(sv.elems, compareElems)
		return sv
	}
	sorted := slices.Clone(elems)
	slices.SortStableFunc(sorted, func(a, b nftables.SetElement) int { return bytes.Compare(a.Key, b.Key) })
	var start netip.Addr
	for _, e := range sorted {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			continue
		}
		switch {
		case !e.IntervalEnd:
			if start.IsValid() { // an open range: runs to the top of the space
				sv.elems = append(sv.elems, rangeString(start, maxAddr(start)))
			}
			start = a
		case start.IsValid(): // nft's leading "0 end" element has no start: skipped
			sv.elems = append(sv.elems, rangeString(start, a.Prev()))
			start = netip.Addr{}
		}
	}
	if start.IsValid() {
		sv.elems = append(sv.elems, rangeString(start, maxAddr(start)))
	}
	return sv
}

func maxAddr(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	var b [16]byte
	for i := range b {
		b[i] = 0xff
	}
	return netip.AddrFrom16(b)
}

// rangeString prints [lo, hi] as nft does: a prefix when it is one, else lo-hi.
func rangeString(lo, hi netip.Addr) string {
	for bits := 0; bits <= lo.BitLen(); bits++ {
		if p := netip.PrefixFrom(lo, bits); p.Masked().Addr() == lo && lastAddr(p) == hi {
			if bits == lo.BitLen() {
				return lo.String()
			}
			return p.String()
		}
	}
	return lo.String() + "-" + hi.String()
}

// compareElems orders rendered elements (addresses, prefixes, ranges) by their
// first address.
func compareElems(a, b string) int {
	first := func(s string) netip.Addr {
		if i := strings.IndexAny(s, "/-"); i >= 0 {
			s = s[:i]
		}
		ip, _ := netip.ParseAddr(s)
		return ip
	}
	return cmp.Or(first(a).Compare(first(b)), cmp.Compare(a, b))
}

// renderExprs prints a rule in nft's syntax for the expressions mcnet writes (and
// the iptables-nft jumps it removes), eliding the protocol dependencies nft elides.
// Anything else prints as its Go type, so a foreign rule never looks like mcnet's.
// (Expressions google/nftables cannot decode at all, such as rt, it drops when
// reading; mcnet writes none.)
func renderExprs(exprs []expr.Any) string {
	var out []string
	// Protocol dependencies ("meta l4proto", "meta nfproto") print only when no
	// header match that implies them follows.
	var l4, nfp dep
	flush := func() {
		for _, d := range []*dep{&l4, &nfp} {
			if d.set && !d.used {
				out = append(out, d.name)
			}
		}
		l4, nfp = dep{}, dep{}
	}
	for i := 0; i < len(exprs); i++ {
		next := func(k int) expr.Any {
			if i+k < len(exprs) {
				return exprs[i+k]
			}
			return nil
		}
		switch e := exprs[i].(type) {
		case *expr.Meta:
			c, ok := next(1).(*expr.Cmp)
			if !ok || c.Op != expr.CmpOpEq || e.SourceRegister {
				break
			}
			switch {
			case e.Key == expr.MetaKeyL4PROTO && len(c.Data) == 1:
				flush()
				l4, i = dep{set: true, val: c.Data[0], name: "meta l4proto " + l4Name(c.Data[0])}, i+1
				continue
			case e.Key == expr.MetaKeyNFPROTO && len(c.Data) == 1:
				nfp, i = dep{set: true, val: c.Data[0], name: "meta nfproto " + nfprotoName(c.Data[0])}, i+1
				continue
			case e.Key == expr.MetaKeyOIFNAME || e.Key == expr.MetaKeyIIFNAME:
				flush()
				name := "oifname"
				if e.Key == expr.MetaKeyIIFNAME {
					name = "iifname"
				}
				out = append(out, fmt.Sprintf("%s %q", name, string(bytes.TrimRight(c.Data, "\x00"))))
				i++
				continue
			}
		case *expr.Payload:
			if s, n := renderPayload(e, exprs[i+1:], &l4, &nfp); n > 0 {
				out = append(out, s)
				i += n - 1
				continue
			}
		case *expr.Immediate:
			if s, n := renderNATPrefix(exprs[i:]); n > 0 {
				flush()
				out = append(out, s)
				i += n - 1
				continue
			}
			x, ok := next(1).(*expr.Exthdr)
			if ok && e.Register == x.SourceRegister && len(e.Data) == 2 &&
				x.Op == expr.ExthdrOpTcpopt && x.Type == tcpOptMaxSeg && x.Offset == 2 && x.Len == 2 {
				flush()
				out = append(out, fmt.Sprintf("tcp option maxseg size set %d", binary.BigEndian.Uint16(e.Data)))
				i++
				continue
			}
		case *expr.Counter:
			flush()
			out = append(out, "counter")
			continue
		case *expr.Notrack:
			flush()
			out = append(out, "notrack")
			continue
		case *expr.Verdict:
			flush()
			out = append(out, verdictString(e))
			continue
		}
		flush()
		out = append(out, fmt.Sprintf("%T", exprs[i]))
	}
	flush()
	return strings.Join(out, " ")
}

// dep is a pending protocol dependency of the rule being rendered.
type dep struct {
	set, used bool
	val       byte
	name      string
}

// renderPayload prints a payload load with what consumes it and reports how many
// expressions it used (0: not a pattern mcnet writes).
func renderPayload(p *expr.Payload, rest []expr.Any, l4, nfp *dep) (string, int) {
	if p.OperationType != expr.PayloadLoad || len(rest) == 0 {
		return "", 0
	}
	switch p.Base {
	case expr.PayloadBaseTransportHeader:
		proto := l4.val
		if !l4.set {
			proto = 0
		}
		switch {
		case p.Offset == 2 && p.Len == 2 && proto != 0:
			if c, ok := rest[0].(*expr.Cmp); ok && c.Op == expr.CmpOpEq && len(c.Data) == 2 {
				l4.used = true
				return fmt.Sprintf("%s dport %d", l4Name(proto), binary.BigEndian.Uint16(c.Data)), 2
			}
		case p.Offset == 13 && p.Len == 1 && proto == unix.IPPROTO_TCP && len(rest) >= 2:
			b, ok1 := rest[0].(*expr.Bitwise)
			c, ok2 := rest[1].(*expr.Cmp)
			if ok1 && ok2 && bytes.Equal(b.Mask, []byte{tcpSYN | tcpRST}) && bytes.Equal(c.Data, []byte{tcpSYN}) {
				l4.used = true
				return "tcp flags syn / syn,rst", 3
			}
		}
		if c, ok := rest[0].(*expr.Cmp); ok && c.Op == expr.CmpOpEq {
			// A raw match, as nft prints one: @th,<bit offset>,<bit length> <hex>.
			var v uint64
			for _, b := range c.Data {
				v = v<<8 | uint64(b)
			}
			return fmt.Sprintf("@th,%d,%d %#x", p.Offset*8, p.Len*8, v), 2
		}
	case expr.PayloadBaseNetworkHeader:
		field, ok := map[[2]uint32]string{{12, 4}: "ip saddr", {16, 4}: "ip daddr", {8, 16}: "ip6 saddr", {24, 16}: "ip6 daddr"}[[2]uint32{p.Offset, p.Len}]
		if !ok {
			return "", 0
		}
		want := byte(unix.NFPROTO_IPV4)
		if p.Len == 16 {
			want = unix.NFPROTO_IPV6
		}
		if !nfp.set || nfp.val != want {
			return "", 0
		}
		nfp.used = true
		switch e := rest[0].(type) {
		case *expr.Lookup:
			op := ""
			if e.Invert {
				op = "!= "
			}
			return fmt.Sprintf("%s %s@%s", field, op, e.SetName), 2
		case *expr.Cmp:
			if a, ok := netip.AddrFromSlice(e.Data); ok && e.Op == expr.CmpOpEq {
				return field + " " + a.String(), 2
			}
		case *expr.Bitwise:
			if p := renderMaskedCmp(rest); p != "" {
				return field + " " + p, 3
			}
			if s := renderRewrite(field, p, rest); s != "" {
				return s, 3
			}
		case *expr.NAT:
			fam := map[uint32]string{unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6"}[e.Family]
			if e.Type == expr.NATTypeSourceNAT && e.RegAddrMin == p.DestRegister && (e.RegAddrMax == 0 || e.RegAddrMax == e.RegAddrMin) &&
				e.RegProtoMin == 0 && !e.Random && !e.FullyRandom && !e.Persistent && !e.Prefix && fam != "" {
				return fmt.Sprintf("snat %s to %s", fam, field), 2
			}
		}
	}
	return "", 0
}

func l4Name(p byte) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	}
	return fmt.Sprint(p)
}

func nfprotoName(p byte) string {
	switch p {
	case unix.NFPROTO_IPV4:
		return "ipv4"
	case unix.NFPROTO_IPV6:
		return "ipv6"
	}
	return fmt.Sprint(p)
}

func verdictString(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}
