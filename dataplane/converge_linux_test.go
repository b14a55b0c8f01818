package dataplane

import (
	"crypto/sha256"
	"flag"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// testKey is a fixed private key derived from a name, so golden files are stable.
func testKey(name string) wgtypes.Key {
	sum := sha256.Sum256([]byte(name))
	k, _ := wgtypes.NewKey(sum[:])
	// Clamp as Curve25519 private keys are (wgtypes.GeneratePrivateKey does the same).
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k
}

func testPub(name string) Key { return Key(testKey(name).PublicKey()) }

// fakeDataplane returns a Dataplane on a fresh fake kernel with a fixed node key.
func fakeDataplane(t *testing.T) (*Dataplane, *fakeKernel) {
	t.Helper()
	f := newFakeKernel()
	return fakeDataplaneOn(t, f, f.kernel()), f
}

// fakeDataplaneOn returns a Dataplane on k (f's seams, possibly wrapped).
func fakeDataplaneOn(t *testing.T, f *fakeKernel, k kernel) *Dataplane {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "wg.key")
	if err := os.WriteFile(key, []byte(testKey("node").String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dp, err := newDataplane(Config{StateDir: dir, KeyFile: key}, k)
	if err != nil {
		t.Fatal(err)
	}
	return dp
}

// convergeStates are the States the convergence tests move between: roles, drivers,
// families and sizes a node goes through in its life.
func convergeStates() map[string]State {
	local := prefixes("10.1.0.0/16", "10.101.0.0/16")
	b := Remote{ClusterID: "b", CIDRs: prefixes("10.2.0.0/16", "10.102.0.0/16"),
		Cable: Cable{Driver: DriverVXLAN, Endpoints: []netip.Addr{netip.MustParseAddr("198.18.0.2")}}}
	c := Remote{ClusterID: "c", CIDRs: prefixes("10.3.0.0/16"),
		Cable: Cable{Driver: DriverWireGuard, Endpoints: []netip.Addr{netip.MustParseAddr("198.18.0.3")}, PublicKey: testPub("c")}}
	bWG := b
	bWG.Cable = Cable{Driver: DriverWireGuard, Endpoints: b.Cable.Endpoints, Port: 51821, PublicKey: testPub("b")}
	c6 := c
	c6.CIDRs = prefixes("10.3.0.0/16", "fd00:3::/48")
	bSmall := b
	bSmall.CIDRs = prefixes("10.2.0.0/16")
	gw := &Gateway{ClusterNodes: []netip.Addr{netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.1.2")}}
	return map[string]State{
		"empty":             {ClusterID: "a"},
		"gateway-vxlan":     {ClusterID: "a", LocalCIDRs: local, Remotes: []Remote{b}, Gateway: gw},
		"gateway-vxlan-one": {ClusterID: "a", LocalCIDRs: local, Remotes: []Remote{bSmall}, Gateway: gw},
		"gateway-wireguard": {ClusterID: "a", LocalCIDRs: local, Remotes: []Remote{bWG, c}, Gateway: gw},
		"gateway-mixed":     {ClusterID: "a", LocalCIDRs: local, Remotes: []Remote{b, c}, Gateway: gw},
		"gateway-dualstack": {ClusterID: "a", LocalCIDRs: append(prefixes("fd00:1::/48"), local...), Remotes: []Remote{b, c6}, Gateway: gw, UnderlayMTU: 9000},
		"gateway-remap": {ClusterID: "a", LocalCIDRs: local, Remotes: []Remote{b, c}, Gateway: gw,
			Remap: []PrefixMap{
				{Real: netip.MustParsePrefix("10.1.0.0/16"), Global: netip.MustParsePrefix("100.64.0.0/16")},
				{Real: netip.MustParsePrefix("10.101.0.0/16"), Global: netip.MustParsePrefix("100.65.0.0/16"), Stateless: true},
			}},
		"node":            {ClusterID: "a", LocalCIDRs: local, Remotes: []Remote{b, c}, ActiveGateway: netip.MustParseAddr("198.18.1.1"), LooseRPFilter: []string{"eth0"}},
		"node-no-gateway": {ClusterID: "a", LocalCIDRs: local, Remotes: []Remote{b, c}},
	}
}

// TestConverge applies every State to a fresh fake kernel and compares the rendered
// kernel with a golden file; then replays the States in random orders, from a kernel
// littered with stale mcnet objects, and checks each Apply lands on the same kernel
// as from scratch, that a second Apply changes nothing, and that Cleanup restores the
// kernel as it was before mcnet.
func TestConverge(t *testing.T) {
	states := convergeStates()
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	slices.Sort(names)

	want := map[string]string{}
	for _, name := range names {
		dp, f := fakeDataplane(t)
		if err := dp.Apply(t.Context(), states[name]); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want[name] = f.String()
		golden := filepath.Join("testdata", "converge", name+".golden")
		if *update {
			os.MkdirAll(filepath.Dir(golden), 0o755)
			if err := os.WriteFile(golden, []byte(want[name]), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run with -update to create)", err)
		}
		if diff := cmp.Diff(string(b), want[name]); diff != "" {
			t.Errorf("%s: kernel differs from %s (-want +got):\n%s", name, golden, diff)
		}
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for round := range 20 {
		dp, f := fakeDataplane(t)
		pristine := f.String()
		litter(t, f, dp.cfg)
		order := slices.Clone(names)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, name := range order {
			if err := dp.Apply(t.Context(), states[name]); err != nil {
				t.Fatalf("round %d %s: %v", round, name, err)
			}
			// Forwarding, once on, stays on (see Cleanup); everything else must match.
			if diff := cmp.Diff(withoutForwarding(want[name]), withoutForwarding(f.String())); diff != "" {
				t.Fatalf("round %d (seed %d, order %v) %s: kernel differs from a fresh Apply (-want +got):\n%s", round, seed, order, name, diff)
			}
			if err := dp.Apply(t.Context(), states[name]); err != nil || dp.changes != 0 {
				t.Fatalf("round %d %s: second Apply made %d changes (err %v)", round, name, dp.changes, err)
			}
		}
		if err := dp.Cleanup(t.Context()); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(withoutForwarding(pristine), withoutForwarding(f.String())); diff != "" {
			t.Fatalf("round %d: Cleanup left a difference (-before +after):\n%s", round, diff)
		}
	}
}

// litter adds what a crashed or older mcnet could have left: a stale route, rule and
// link, a duplicate jump, a stale rule in an mcnet chain and an IPv6 chain.
func litter(t *testing.T, f *fakeKernel, c Config) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: c.vxLink()}, VxlanId: 99, Port: 9999, Learning: true}))
	must(f.RouteReplace(&netlink.Route{Table: c.Table, Dst: ipNet(netip.MustParsePrefix("10.99.0.0/16")), LinkIndex: 1}))
	r := netlink.NewRule()
	r.Table, r.Priority, r.Dst = c.Table, 42, ipNet(netip.MustParsePrefix("10.99.0.0/16"))
	must(f.RuleAdd(r))
	// An earlier mcnet's iptables chains, as iptables-nft keeps them: one with a
	// stale rule jumped to twice from FORWARD, and an IPv6 nat chain.
	old := c.ChainPrefix + "-FORWARD"
	f.nft.iptablesChain(nftables.TableFamilyIPv4, "filter", "FORWARD", old)
	f.nft.iptablesChain(nftables.TableFamilyIPv4, "filter", "FORWARD", old)
	f.nft.iptablesChain(nftables.TableFamilyIPv6, "nat", "POSTROUTING", c.ChainPrefix+"-POSTROUTING")
	ip4filter := &nftables.Table{Name: "filter", Family: nftables.TableFamilyIPv4}
	f.nft.AddRule(&nftables.Rule{Table: ip4filter, Chain: &nftables.Chain{Name: old}, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	// A stale mcnet table: an accept where none belongs, and a chain of its own.
	mt := &nftables.Table{Name: c.nftTable(), Family: nftables.TableFamilyINet}
	f.nft.AddTable(mt)
	in := f.nft.AddChain(&nftables.Chain{Table: mt, Name: chainVXLANSources, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	f.nft.AddRule(&nftables.Rule{Table: mt, Chain: in, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	f.nft.AddChain(&nftables.Chain{Table: mt, Name: "stale"})
	must(f.nft.Flush())
}

// withoutForwarding drops the forwarding sysctls, which Cleanup leaves on on purpose.
func withoutForwarding(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "sysctl net/ipv4/ip_forward=") && !strings.HasPrefix(l, "sysctl net/ipv6/conf/all/forwarding=") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestKeyChangeTriggersHandshake checks that when the node's key changes, existing
// peers get their keepalive switched off and on, which makes WireGuard send at once:
// the side that changes its key must initiate the handshake.
func TestKeyChangeTriggersHandshake(t *testing.T) {
	dp, f := fakeDataplane(t)
	s := convergeStates()["gateway-wireguard"]
	if err := dp.Apply(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	f.wgLog = nil
	if err := os.WriteFile(dp.cfg.KeyFile, []byte(testKey("rotated").String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := dp.Apply(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	pub, err := dp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if pub != testPub("rotated") || f.wg[dp.cfg.wgLink()].PublicKey != wgtypes.Key(pub) {
		t.Errorf("device key not rotated: public key %s", pub)
	}
	var got []string
	for _, l := range f.wgLog {
		got = append(got, l[strings.Index(l, " ")+1:])
	}
	want := []string{"keepalive 0s", "keepalive 0s", "keepalive 25s", "keepalive 25s"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("keepalive changes (-want +got):\n%s", diff)
	}
}

// TestKeyFile checks the private key is created once with mode 0600 and reused.
func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	dp, err := newDataplane(Config{StateDir: filepath.Join(dir, "state")}, newFakeKernel().kernel())
	if err != nil {
		t.Fatal(err)
	}
	k1, err := dp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "state", "wireguard.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := dp.PublicKey()
	if err != nil || k1 != k2 || k1.IsZero() {
		t.Errorf("second PublicKey = %s, %v; want %s", k2, err, k1)
	}
	if err := os.WriteFile(filepath.Join(dir, "state", "wireguard.key"), []byte("secret-but-broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dp.PublicKey(); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("malformed key file: err = %v, want an error that does not echo the file", err)
	}
}

// TestApplyInvalidState checks an invalid State is refused before the kernel is touched.
func TestApplyInvalidState(t *testing.T) {
	dp, f := fakeDataplane(t)
	before := f.String()
	s := convergeStates()["gateway-mixed"]
	s.Remotes[0].CIDRs = prefixes("10.1.0.0/24") // overlaps a local CIDR
	err := dp.Apply(t.Context(), s)
	if err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("Apply = %v, want an overlap error", err)
	}
	if diff := cmp.Diff(before, f.String()); diff != "" {
		t.Errorf("invalid State changed the kernel:\n%s", diff)
	}
}
