package dataplane

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// writeCounter records every write call that reaches a kernel seam, independently
// of the dataplane's own change accounting.
type writeCounter struct {
	mu     sync.Mutex
	writes []string
}

func (c *writeCounter) add(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, fmt.Sprintf(format, args...))
}

// take returns the writes since the last take.
func (c *writeCounter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

// counting wraps every seam of k so that writes are recorded in c; reads pass through.
func counting(k kernel, c *writeCounter) kernel {
	k.nl = countingNL{k.nl, c}
	k.nft = countingNFT{k.nft, c}
	k.wg = countingWG{k.wg, c}
	k.sysctl = countingSysctl{k.sysctl, c}
	if k.wgLink != nil {
		k.wgLink = countingWGLink{k.wgLink, c}
	}
	return k
}

type countingNL struct {
	netlinkHandle
	c *writeCounter
}

func (n countingNL) LinkAdd(l netlink.Link) error {
	n.c.add("link add %s", l.Attrs().Name)
	return n.netlinkHandle.LinkAdd(l)
}
func (n countingNL) LinkDel(l netlink.Link) error {
	n.c.add("link del %s", l.Attrs().Name)
	return n.netlinkHandle.LinkDel(l)
}
func (n countingNL) LinkSetUp(l netlink.Link) error {
	n.c.add("link up %s", l.Attrs().Name)
	return n.netlinkHandle.LinkSetUp(l)
}
func (n countingNL) LinkSetMTU(l netlink.Link, mtu int) error {
	n.c.add("link mtu %s", l.Attrs().Name)
	return n.netlinkHandle.LinkSetMTU(l, mtu)
}
func (n countingNL) LinkSetHardwareAddr(l netlink.Link, hw net.HardwareAddr) error {
	n.c.add("link mac %s", l.Attrs().Name)
	return n.netlinkHandle.LinkSetHardwareAddr(l, hw)
}
func (n countingNL) RouteReplace(r *netlink.Route) error {
	n.c.add("route replace %s", r.Dst)
	return n.netlinkHandle.RouteReplace(r)
}
func (n countingNL) RouteDel(r *netlink.Route) error {
	n.c.add("route del %s", r.Dst)
	return n.netlinkHandle.RouteDel(r)
}
func (n countingNL) RuleAdd(r *netlink.Rule) error {
	n.c.add("rule add %s", r.Dst)
	return n.netlinkHandle.RuleAdd(r)
}
func (n countingNL) RuleDel(r *netlink.Rule) error {
	n.c.add("rule del %s", r.Dst)
	return n.netlinkHandle.RuleDel(r)
}
func (n countingNL) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	n.c.add("addr add %s", a.IPNet)
	return n.netlinkHandle.AddrAdd(l, a)
}
func (n countingNL) AddrDel(l netlink.Link, a *netlink.Addr) error {
	n.c.add("addr del %s", a.IPNet)
	return n.netlinkHandle.AddrDel(l, a)
}
func (n countingNL) NeighSet(x *netlink.Neigh) error {
	n.c.add("neigh set %s", x.IP)
	return n.netlinkHandle.NeighSet(x)
}
func (n countingNL) NeighDel(x *netlink.Neigh) error {
	n.c.add("neigh del %s", x.IP)
	return n.netlinkHandle.NeighDel(x)
}

type countingNFT struct {
	nftHandle
	c *writeCounter
}

func (n countingNFT) AddTable(t *nftables.Table) *nftables.Table {
	n.c.add("nft add table %s", t.Name)
	return n.nftHandle.AddTable(t)
}
func (n countingNFT) DelTable(t *nftables.Table) {
	n.c.add("nft del table %s", t.Name)
	n.nftHandle.DelTable(t)
}
func (n countingNFT) AddChain(c *nftables.Chain) *nftables.Chain {
	n.c.add("nft add chain %s", c.Name)
	return n.nftHandle.AddChain(c)
}
func (n countingNFT) FlushChain(c *nftables.Chain) {
	n.c.add("nft flush chain %s", c.Name)
	n.nftHandle.FlushChain(c)
}
func (n countingNFT) DelChain(c *nftables.Chain) {
	n.c.add("nft del chain %s", c.Name)
	n.nftHandle.DelChain(c)
}
func (n countingNFT) AddRule(r *nftables.Rule) *nftables.Rule {
	n.c.add("nft add rule %s", r.Chain.Name)
	return n.nftHandle.AddRule(r)
}
func (n countingNFT) DelRule(r *nftables.Rule) error {
	n.c.add("nft del rule %s", r.Chain.Name)
	return n.nftHandle.DelRule(r)
}
func (n countingNFT) AddSet(s *nftables.Set, v []nftables.SetElement) error {
	n.c.add("nft add set %s", s.Name)
	return n.nftHandle.AddSet(s, v)
}

type countingWG struct {
	wgClient
	c *writeCounter
}

func (w countingWG) ConfigureDevice(name string, cfg wgtypes.Config) error {
	w.c.add("wg configure %s", name)
	return w.wgClient.ConfigureDevice(name, cfg)
}

type countingSysctl struct {
	sysctlHandle
	c *writeCounter
}

func (s countingSysctl) Set(key, value string) error {
	s.c.add("sysctl %s=%s", key, value)
	return s.sysctlHandle.Set(key, value)
}

type countingWGLink struct {
	wgLinker
	c *writeCounter
}

func (w countingWGLink) Create(ctx context.Context, name string, mtu int) error {
	w.c.add("wg create %s", name)
	return w.wgLinker.Create(ctx, name, mtu)
}
func (w countingWGLink) Remove(ctx context.Context, name string) error {
	w.c.add("wg remove %s", name)
	return w.wgLinker.Remove(ctx, name)
}

// TestNoOpApplyWritesNothing applies every State twice through counting seams: the
// second Apply reaches no kernel write at all, and the fake's nftables generation
// (the kernel's NFTA_GEN_ID) does not move.
func TestNoOpApplyWritesNothing(t *testing.T) {
	for name, s := range convergeStates() {
		t.Run(name, func(t *testing.T) {
			f := newFakeKernel()
			var c writeCounter
			dp := fakeDataplaneOn(t, f, counting(f.kernel(), &c))
			if err := dp.Apply(t.Context(), s); err != nil {
				t.Fatal(err)
			}
			if w := c.take(); len(w) == 0 {
				t.Fatal("first Apply wrote nothing: the counter sees no writes")
			}
			gen := f.nft.generation
			if err := dp.Apply(t.Context(), s); err != nil {
				t.Fatal(err)
			}
			if w := c.take(); len(w) != 0 {
				t.Errorf("second Apply wrote %d times: %q", len(w), w)
			}
			if f.nft.generation != gen {
				t.Errorf("second Apply committed %d nftables transactions", f.nft.generation-gen)
			}
		})
	}
}

// TestFilterDriftRepaired deletes things from mcnet's table behind its back (a rule,
// a set element, a whole chain) and checks the next Apply puts back exactly the
// table a fresh Apply makes, in one transaction.
func TestFilterDriftRepaired(t *testing.T) {
	s := convergeStates()["gateway-mixed"]
	for _, tc := range []struct {
		name  string
		drift func(t *testing.T, f *fakeNFT, table *nftables.Table)
	}{
		{"rule", func(t *testing.T, f *fakeNFT, table *nftables.Table) {
			rules, err := f.GetRules(table, &nftables.Chain{Name: chainVXLANSources})
			if err != nil || len(rules) == 0 {
				t.Fatalf("rules of %s: %v, %v", chainVXLANSources, rules, err)
			}
			f.DelRule(&nftables.Rule{Table: table, Chain: &nftables.Chain{Name: chainVXLANSources}, Handle: rules[0].Handle})
		}},
		{"element", func(t *testing.T, f *fakeNFT, table *nftables.Table) {
			f.tables[key(table)].sets["cable-peers-v4"].elems = nil
		}},
		{"chain", func(t *testing.T, f *fakeNFT, table *nftables.Table) {
			f.FlushChain(&nftables.Chain{Table: table, Name: chainKeepSource})
			f.DelChain(&nftables.Chain{Table: table, Name: chainKeepSource})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dp, f := fakeDataplane(t)
			if err := dp.Apply(t.Context(), s); err != nil {
				t.Fatal(err)
			}
			want := f.String()
			table := &nftables.Table{Name: dp.cfg.nftTable(), Family: nftables.TableFamilyINet}
			tc.drift(t, f.nft, table)
			if err := f.nft.Flush(); err != nil {
				t.Fatal(err)
			}
			if f.String() == want {
				t.Fatal("the drift changed nothing")
			}
			gen := f.nft.generation
			if err := dp.Apply(t.Context(), s); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, f.String()); diff != "" {
				t.Errorf("Apply did not repair the drift (-want +got):\n%s", diff)
			}
			if n := f.nft.generation - gen; n != 1 {
				t.Errorf("repair took %d nftables transactions, want 1", n)
			}
		})
	}
}

// failingSets makes AddSet fail, as the library does for an element list it cannot
// encode, after the first n calls.
type failingSets struct {
	nftHandle
	n int
}

func (f *failingSets) AddSet(s *nftables.Set, v []nftables.SetElement) error {
	if f.n == 0 {
		return fmt.Errorf("encode set %s: too big", s.Name)
	}
	f.n--
	return f.nftHandle.AddSet(s, v)
}

// TestFilterAbortKeepsTable checks that a table replacement that fails half-way
// queued (the old table's deletion already in the batch) leaves the old table in
// place, and that nothing of the aborted batch goes out with the next transaction.
func TestFilterAbortKeepsTable(t *testing.T) {
	f := newFakeKernel()
	k := f.kernel()
	fs := &failingSets{nftHandle: k.nft, n: 1 << 30}
	k.nft = fs
	dp := fakeDataplaneOn(t, f, k)
	states := convergeStates()
	if err := dp.Apply(t.Context(), states["gateway-vxlan"]); err != nil {
		t.Fatal(err)
	}
	before := f.nft.String()
	fs.n = 2
	if err := dp.Apply(t.Context(), states["gateway-mixed"]); err == nil || !strings.Contains(err.Error(), "too big") {
		t.Fatalf("Apply = %v, want the set error", err)
	}
	if diff := cmp.Diff(before, f.nft.String()); diff != "" {
		t.Errorf("a failed replacement changed the table (-before +after):\n%s", diff)
	}
	if len(f.nft.queue) != 0 {
		t.Errorf("%d writes of the aborted batch still queued", len(f.nft.queue))
	}
	fs.n = 1 << 30
	if err := dp.Apply(t.Context(), states["gateway-mixed"]); err != nil {
		t.Fatal(err)
	}
	want, g := fakeDataplane(t)
	if err := want.Apply(t.Context(), states["gateway-mixed"]); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(g.nft.String(), f.nft.String()); diff != "" {
		t.Errorf("after the failure, Apply did not land on a fresh Apply's table (-want +got):\n%s", diff)
	}
}
