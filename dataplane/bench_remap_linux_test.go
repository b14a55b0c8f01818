package dataplane

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// BenchmarkRemapRules counts what globalnet costs each node's kernel as the number of
// remapped (overlapping) remote clusters k grows: the rules of mcnet's nftables table
// (all of them, and those of the remap chains), the elements of its sets, the routes
// of its routing table and its policy rules, after a real Apply in a network
// namespace. Three nodes of a mixed fleet, each with the same k remapped remotes
// (a global pod and a global service range each): the active gateway of a remapped
// cluster (it translates its own two ranges), the active gateway of a cluster that
// overlaps nobody (it translates nothing), and another node of the remapped cluster
// (it routes to its gateway). It prints a table, e.g.
//
//	remap rules:   k | remapped gateway            | plain gateway               | node of the remapped cluster
//	remap rules:   1 |  16 rules (4 remap)   4 elems   2 routes 2 iprules |  12 rules (0 remap) ...
//
// and reports the remapped gateway's figures at the largest k, and its rules per
// added remapped cluster. The counts are the kernel's, read back with nft -j and ip;
// they do not depend on the machine.
func BenchmarkRemapRules(b *testing.B) {
	requireRoot(b)
	ks := []int{1, 2, 4, 8, 16, 32, 64}
	roles := []string{"gwa", "gwb", "nodea"}
	type counts struct{ rules, remap, elems, routes, iprules int }
	var table [][3]counts
	for b.Loop() {
		table = table[:0]
		l := newNamespaces(b, append(roles, "wan")...)
		l.veth("gwa", "wan0", wanA.String()+"/16", "wan", "a0", "198.18.255.1/16")
		l.veth("gwb", "wan0", wanB.String()+"/16", "wan", "b0", "198.18.255.2/16")
		l.veth("gwa", "lan0", lanGw.String()+"/24", "nodea", "lan0", "198.18.1.2/24")
		for _, role := range roles {
			l.nodes[role] = l.startNode(role)
		}
		local := prefixes("10.244.0.0/16", "10.96.0.0/16")
		// block j of the global pool, a /16: remote i holds 2i and 2i+1, the remapped
		// local cluster the two after the last remote.
		block := func(j int) netip.Prefix {
			return netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + j), 0, 0}), 16)
		}
		for _, k := range ks {
			var remotes []Remote
			for i := range k {
				// Each remote gateway at its own underlay address (198.18.2.x), all
				// reachable through wan0.
				ep := netip.AddrFrom4([4]byte{198, 18, byte(2 + i/250), byte(1 + i%250)})
				remotes = append(remotes, Remote{ClusterID: fmt.Sprintf("r%02d", i), CIDRs: []netip.Prefix{block(2 * i), block(2*i + 1)},
					Cable: Cable{Driver: DriverVXLAN, Endpoints: []netip.Addr{ep}}})
			}
			remap := []PrefixMap{{Real: local[0], Global: block(2 * k)}, {Real: local[1], Global: block(2*k + 1), Stateless: true}}
			states := map[string]State{
				"gwa":   {ClusterID: "a", LocalCIDRs: local, Remotes: remotes, Gateway: &Gateway{ClusterNodes: []netip.Addr{lanGw, lanNode}}, Remap: remap},
				"gwb":   {ClusterID: "b", LocalCIDRs: prefixes("10.40.0.0/16", "10.41.0.0/16"), Remotes: remotes, Gateway: &Gateway{}},
				"nodea": {ClusterID: "a", LocalCIDRs: local, Remotes: remotes, ActiveGateway: lanGw, Remap: remap},
			}
			var row [3]counts
			for i, role := range roles {
				if _, err := l.nodes[role].call(helperRequest{Op: "apply", State: states[role]}); err != nil {
					b.Fatal(err)
				}
				c := &row[i]
				c.rules, c.remap, c.elems = l.nftCounts(role)
				c.routes = len(nonEmptyLines(l.ip(role, "-4", "route", "show", "table", fmt.Sprint(DefaultTable))))
				for _, r := range nonEmptyLines(l.ip(role, "-4", "rule", "show")) {
					if strings.HasPrefix(r, fmt.Sprint(DefaultRulePriority)+":") {
						c.iprules++
					}
				}
				// The figures must be of the state asked for: all 2k remote ranges
				// routed, and the remap chains on the remapped gateway alone.
				if c.routes < 2*k {
					b.Fatalf("%s, k=%d: %d routes in table %d, want at least %d", role, k, c.routes, DefaultTable, 2*k)
				}
				if want := map[string]int{"gwa": 2 * len(remap)}[role]; c.remap != want {
					b.Fatalf("%s, k=%d: %d rules in the remap chains, want %d:\n%s", role, k, c.remap, want, l.nftDump(role))
				}
			}
			table = append(table, row)
		}
		for _, role := range roles {
			if _, err := l.nodes[role].call(helperRequest{Op: "cleanup"}); err != nil {
				b.Fatal(err)
			}
		}
	}
	fmt.Println("remap rules: per node, after Apply with k remapped remote clusters (rules of table inet mcnet, of them in the remap chains, set elements, routes in table 2711, ip rules)")
	fmt.Println("remap rules:   k | remapped gateway            | plain gateway               | node of the remapped cluster")
	for i, row := range table {
		line := fmt.Sprintf("remap rules: %3d", ks[i])
		for _, c := range row {
			line += fmt.Sprintf(" | %3d rules (%d remap) %3d elems %3d routes %d iprules", c.rules, c.remap, c.elems, c.routes, c.iprules)
		}
		fmt.Println(line)
	}
	if len(table) > 0 {
		first, last := table[0][0], table[len(table)-1][0]
		k := ks[len(ks)-1]
		b.ReportMetric(float64(last.rules), fmt.Sprintf("gw-rules@k%d", k))
		b.ReportMetric(float64(last.remap), fmt.Sprintf("gw-remap-rules@k%d", k))
		b.ReportMetric(float64(last.elems), fmt.Sprintf("gw-set-elems@k%d", k))
		b.ReportMetric(float64(last.routes), fmt.Sprintf("gw-routes@k%d", k))
		b.ReportMetric(float64(last.rules-first.rules)/float64(k-ks[0]), "gw-rules-per-remapped-cluster")
	}
}

// nftCounts reads mcnet's table in role's namespace as nft's JSON and counts its
// rules, the rules of its remap chains and its sets' elements.
func (l *lab) nftCounts(role string) (rules, remap, elems int) {
	l.tb.Helper()
	out := l.exec(role, "nft", "-j", "list", "table", "inet", "mcnet")
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Chain string `json:"chain"`
			} `json:"rule"`
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		l.tb.Fatalf("nft -j in %s: %v\n%s", role, err, out)
	}
	for _, o := range doc.Nftables {
		switch {
		case o.Rule != nil:
			rules++
			if strings.HasPrefix(o.Rule.Chain, "remap-") {
				remap++
			}
		case o.Set != nil:
			elems += len(o.Set.Elem)
		}
	}
	return rules, remap, elems
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimSpace(line) != "" {
			out = append(out, line)
		}
	}
	return out
}
