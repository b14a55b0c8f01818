package dataplane

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestKernelConverge is TestConverge against a real network namespace, in lockstep
// with the fake kernel: the same States in random orders from the same litter, and
// after every Apply the real kernel, read back with ip, bridge, wg, sysctl and nft,
// must render exactly as the fake does. So the fake cannot drift from the kernel it
// stands for. A second Apply must change nothing there: no write through any seam,
// no nftables transaction, no process started.
func TestKernelConverge(t *testing.T) {
	requireRoot(t)
	l := newNamespaces(t, "cv", "cvpeer")
	// The underlay: every lab address (198.18.0.0/15) is on eth0, as in the fake.
	l.veth("cv", "eth0", "198.18.0.1/15", "cvpeer", "eth0", "198.18.255.254/15")
	l.sysctl("cv", "net.ipv4.ip_forward", "0")
	l.sysctl("cv", "net.ipv6.conf.all.forwarding", "0")
	l.sysctl("cv", "net.ipv4.conf.eth0.rp_filter", "0")

	dir := t.TempDir()
	key := filepath.Join(dir, "wg.key")
	if err := os.WriteFile(key, []byte(testKey("node").String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{LinkPrefix: l.prefix["cv"], ChainPrefix: "MCNET", StateDir: filepath.Join(dir, "fake"), KeyFile: key}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	real := l.startHelper("cv", exe, helperConfig{LinkPrefix: cfg.LinkPrefix, StateDir: filepath.Join(dir, "real"), KeyFile: key})
	forks := newForkWatcher(t)
	f := newFakeKernel()
	fake, err := newDataplane(cfg, f.kernel())
	if err != nil {
		t.Fatal(err)
	}
	full := cfg.withDefaults()

	litter(t, f, full)
	l.litter("cv", full)
	compare := func(when string) {
		t.Helper()
		if diff := cmp.Diff(f.ownedDump(full), l.ownedDump("cv", full)); diff != "" {
			t.Fatalf("%s: real kernel differs from the fake (-fake +real):\n%s", when, diff)
		}
	}

	states := convergeStates()
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range states {
			if !yield(n) {
				return
			}
		}
	})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for round := range 2 {
		order := slices.Clone(names)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, name := range order {
			when := fmt.Sprintf("round %d (seed %d, order %v) %s", round, seed, order, name)
			if err := fake.Apply(t.Context(), states[name]); err != nil {
				t.Fatalf("%s: fake: %v", when, err)
			}
			if _, err := real.call(helperRequest{Op: "apply", State: states[name]}); err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			compare(when)
			var rep helperReply
			n := forks.count(t, real.cmd.Process.Pid, func() {
				rep, err = real.call(helperRequest{Op: "apply", State: states[name]})
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Changes != 0 || len(rep.Writes) != 0 || n != 0 {
				t.Errorf("%s: second Apply: %d changes, writes %q, %d processes started; want none", when, rep.Changes, rep.Writes, n)
			}
		}
	}
	if err := fake.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := real.call(helperRequest{Op: "cleanup"}); err != nil {
		t.Fatal(err)
	}
	compare("after Cleanup")
	if got := l.ownedDump("cv", full); strings.Contains(got, "nft ") || strings.Contains(got, "link ") {
		t.Errorf("Cleanup left mcnet objects:\n%s", got)
	}
}

// TestKernelNoOpGeneration checks with the kernel's own counter that a second Apply
// commits no nftables transaction, and that a rule deleted behind mcnet's back with
// nft(8) is back after the next Apply, in one transaction.
func TestKernelNoOpGeneration(t *testing.T) {
	requireRoot(t)
	l := newNamespaces(t, "gen", "genpeer")
	l.veth("gen", "eth0", "198.18.0.1/15", "genpeer", "eth0", "198.18.255.254/15")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	n := l.startHelper("gen", exe, helperConfig{LinkPrefix: l.prefix["gen"], StateDir: t.TempDir()})
	s := convergeStates()["gateway-mixed"]
	first, err := n.call(helperRequest{Op: "apply", State: s})
	if err != nil {
		t.Fatal(err)
	}
	second, err := n.call(helperRequest{Op: "apply", State: s})
	if err != nil {
		t.Fatal(err)
	}
	if second.Generation != first.Generation {
		t.Errorf("nftables generation moved from %d to %d on a no-op Apply", first.Generation, second.Generation)
	}
	want := l.nftDump("gen")

	// Delete the first drop rule of the VXLAN port, as an operator might.
	out := l.exec("gen", "nft", "-a", "list", "chain", "inet", "mcnet", chainVXLANSources)
	handle := ""
	for _, line := range lines(out) {
		if strings.Contains(line, "drop") {
			handle = line[strings.LastIndex(line, " ")+1:]
			break
		}
	}
	if handle == "" {
		t.Fatalf("no drop rule in:\n%s", out)
	}
	l.exec("gen", "nft", "delete", "rule", "inet", "mcnet", chainVXLANSources, "handle", handle)
	if l.nftDump("gen") == want {
		t.Fatal("deleting the rule changed nothing")
	}
	gen, err := n.call(helperRequest{Op: "gen"})
	if err != nil {
		t.Fatal(err)
	}
	repaired, err := n.call(helperRequest{Op: "apply", State: s})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, l.nftDump("gen")); diff != "" {
		t.Errorf("Apply did not restore the deleted rule (-want +got):\n%s", diff)
	}
	if d := repaired.Generation - gen.Generation; d != 1 {
		t.Errorf("the repair took %d nftables transactions, want 1", d)
	}
}

// litter leaves in role's namespace what TestConverge's litter leaves in the fake:
// a stale cable link, route and rule, an earlier mcnet's iptables chains (a stale
// rule, two jumps, an IPv6 nat chain) and a stale mcnet table.
func (l *lab) litter(role string, c Config) {
	l.tb.Helper()
	l.ip(role, "link", "add", c.vxLink(), "type", "vxlan", "id", "99", "dstport", "9999", "learning")
	l.ip(role, "route", "add", "10.99.0.0/16", "dev", "eth0", "table", strconv.Itoa(c.Table))
	l.ip(role, "rule", "add", "to", "10.99.0.0/16", "lookup", strconv.Itoa(c.Table), "pref", "42")
	old := c.ChainPrefix + "-FORWARD"
	for _, args := range [][]string{
		{"iptables", "-N", "KUBE-FORWARD"},
		{"iptables", "-A", "FORWARD", "-j", "KUBE-FORWARD"},
		{"iptables", "-t", "nat", "-N", "KUBE-POSTROUTING"},
		{"iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "KUBE-POSTROUTING"},
		{"ip6tables", "-t", "nat", "-N", "KUBE-POSTROUTING"},
		{"ip6tables", "-t", "nat", "-A", "POSTROUTING", "-j", "KUBE-POSTROUTING"},
		{"iptables", "-N", old},
		{"iptables", "-A", old, "-j", "ACCEPT"},
		{"iptables", "-I", "FORWARD", "1", "-j", old},
		{"iptables", "-A", "FORWARD", "-j", old},
		{"ip6tables", "-t", "nat", "-N", c.ChainPrefix + "-POSTROUTING"},
		{"ip6tables", "-t", "nat", "-I", "POSTROUTING", "1", "-j", c.ChainPrefix + "-POSTROUTING"},
		{"nft", "add table inet " + c.nftTable()},
		{"nft", "add chain inet " + c.nftTable() + " " + chainVXLANSources + " { type filter hook input priority filter; }"},
		{"nft", "add rule inet " + c.nftTable() + " " + chainVXLANSources + " accept"},
		{"nft", "add chain inet " + c.nftTable() + " stale"},
	} {
		l.exec(role, args...)
	}
}

// ownedDump renders what of mcnet the fake holds, in the format ownedDump of the lab
// renders a real namespace: owned links with their addresses, neighbours and FDB,
// the mcnet routing table and its rules, the sysctls mcnet sets, WireGuard devices,
// mcnet's nftables table and any iptables chain of an earlier mcnet.
func (f *fakeKernel) ownedDump(c Config) string {
	var out []string
	names := map[int]string{}
	owned := func(name string) bool { return strings.HasPrefix(name, c.LinkPrefix+"-") }
	for name, fl := range f.links {
		names[fl.link.Attrs().Index] = name
		if !owned(name) {
			continue
		}
		a := fl.link.Attrs()
		kind := fl.link.Type()
		if kind == "tuntap" {
			kind = "tun"
		}
		s := fmt.Sprintf("link %s %s mtu %d up %v", name, kind, a.MTU, a.Flags&unix.IFF_UP != 0)
		if vx, ok := fl.link.(*netlink.Vxlan); ok {
			s += fmt.Sprintf(" mac %s vni %d port %d learning %v udpcsum %v", a.HardwareAddr, vx.VxlanId, vx.Port, vx.Learning, vx.UDPCSum)
		}
		addrs := slices.Clone(fl.addrs)
		slices.SortFunc(addrs, comparePrefix)
		for _, p := range addrs {
			s += " addr " + p.String()
		}
		out = append(out, s)
	}
	for _, r := range f.routes {
		if r.Table != c.Table {
			continue
		}
		s := fmt.Sprintf("route %s dev %s", r.Dst, names[r.LinkIndex])
		if r.Gw != nil {
			s += " via " + r.Gw.String()
		}
		out = append(out, s)
	}
	for _, r := range f.rules {
		if r.Table == c.Table {
			p, _ := prefixOf(r.Dst)
			out = append(out, fmt.Sprintf("rule pref %d to %s", r.Priority, p))
		}
	}
	for _, n := range f.neighs {
		if n.Family == unix.AF_BRIDGE {
			out = append(out, fmt.Sprintf("fdb %s %s dst %s", names[n.LinkIndex], n.HardwareAddr, n.IP))
		} else {
			out = append(out, fmt.Sprintf("neigh %s %s lladdr %s", names[n.LinkIndex], n.IP, n.HardwareAddr))
		}
	}
	for k, v := range f.sysctls {
		if k == "net/ipv4/ip_forward" || k == "net/ipv6/conf/all/forwarding" || k == "net/ipv4/conf/eth0/rp_filter" || owned(strings.TrimPrefix(k, "net/ipv4/conf/")) {
			out = append(out, fmt.Sprintf("sysctl %s=%s", k, v))
		}
	}
	for name, d := range f.wg {
		out = append(out, fmt.Sprintf("wg %s port %d pub %s", name, d.ListenPort, d.PublicKey))
		for _, p := range d.Peers {
			var ips []string
			for _, n := range p.AllowedIPs {
				ips = append(ips, n.String())
			}
			slices.Sort(ips)
			out = append(out, fmt.Sprintf("wg %s peer %s endpoint %s allowed %s keepalive %s", name, p.PublicKey, p.Endpoint, strings.Join(ips, ","), p.PersistentKeepaliveInterval))
		}
	}
	for _, line := range strings.Split(f.nft.String(), "\n") {
		if strings.HasPrefix(line, "nft inet "+c.nftTable()+" ") {
			out = append(out, line)
		}
	}
	for k, t := range f.nft.tables {
		for name := range t.chains {
			if k.fam != nftables.TableFamilyINet && strings.HasPrefix(name, c.ChainPrefix+"-") {
				out = append(out, fmt.Sprintf("legacy %s %s %s", famName(k.fam), k.name, name))
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n") + "\n"
}

// ownedDump reads the same from a real namespace with the standard tools.
func (l *lab) ownedDump(role string, c Config) string {
	l.tb.Helper()
	var out []string
	var links []struct {
		Name     string   `json:"ifname"`
		Flags    []string `json:"flags"`
		MTU      int      `json:"mtu"`
		Address  string   `json:"address"`
		LinkInfo struct {
			Kind string `json:"info_kind"`
			Data struct {
				ID       int  `json:"id"`
				Port     int  `json:"port"`
				Learning bool `json:"learning"`
				UDPCsum  bool `json:"udp_csum"`
			} `json:"info_data"`
		} `json:"linkinfo"`
	}
	l.jsonOut(role, &links, "ip", "-j", "-d", "link", "show")
	var owned []string
	for _, k := range links {
		if !strings.HasPrefix(k.Name, c.LinkPrefix+"-") {
			continue
		}
		owned = append(owned, k.Name)
		s := fmt.Sprintf("link %s %s mtu %d up %v", k.Name, k.LinkInfo.Kind, k.MTU, slices.Contains(k.Flags, "UP"))
		if k.LinkInfo.Kind == "vxlan" {
			d := k.LinkInfo.Data
			s += fmt.Sprintf(" mac %s vni %d port %d learning %v udpcsum %v", k.Address, d.ID, d.Port, d.Learning, d.UDPCsum)
		}
		var addrs []struct {
			Info []struct {
				Local string `json:"local"`
				Len   int    `json:"prefixlen"`
			} `json:"addr_info"`
		}
		l.jsonOut(role, &addrs, "ip", "-j", "-4", "addr", "show", "dev", k.Name)
		var ps []netip.Prefix
		for _, a := range addrs {
			for _, i := range a.Info {
				ps = append(ps, netip.PrefixFrom(netip.MustParseAddr(i.Local), i.Len))
			}
		}
		slices.SortFunc(ps, comparePrefix)
		for _, p := range ps {
			s += " addr " + p.String()
		}
		out = append(out, s)

		var neighs []struct {
			Dst    string `json:"dst"`
			LLAddr string `json:"lladdr"`
		}
		l.jsonOut(role, &neighs, "ip", "-j", "neigh", "show", "dev", k.Name, "nud", "permanent")
		for _, n := range neighs {
			out = append(out, fmt.Sprintf("neigh %s %s lladdr %s", k.Name, n.Dst, n.LLAddr))
		}
		var fdb []struct {
			MAC string `json:"mac"`
			Dst string `json:"dst"`
		}
		l.jsonOut(role, &fdb, "bridge", "-j", "fdb", "show", "dev", k.Name)
		for _, e := range fdb {
			if e.Dst != "" {
				out = append(out, fmt.Sprintf("fdb %s %s dst %s", k.Name, e.MAC, e.Dst))
			}
		}
		if k.LinkInfo.Kind == "tun" || k.LinkInfo.Kind == "wireguard" {
			out = append(out, l.wgDump(role, k.Name)...)
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		var routes []struct {
			Dst     string `json:"dst"`
			Gateway string `json:"gateway"`
			Dev     string `json:"dev"`
		}
		// An IPv6 table that never had a route does not exist: an error, nothing to list.
		if o, err := l.try(role, "ip", "-j", fam, "route", "show", "table", strconv.Itoa(c.Table)); err == nil {
			if err := json.Unmarshal([]byte(o), &routes); err != nil {
				l.tb.Fatalf("ip route: %v\n%s", err, o)
			}
		}
		for _, r := range routes {
			s := fmt.Sprintf("route %s dev %s", r.Dst, r.Dev)
			if r.Gateway != "" {
				s += " via " + r.Gateway
			}
			out = append(out, s)
		}
		var rules []struct {
			Priority int    `json:"priority"`
			Dst      string `json:"dst"`
			DstLen   int    `json:"dstlen"`
			Table    string `json:"table"`
		}
		l.jsonOut(role, &rules, "ip", "-j", fam, "rule", "show")
		for _, r := range rules {
			if r.Table == strconv.Itoa(c.Table) {
				out = append(out, fmt.Sprintf("rule pref %d to %s/%d", r.Priority, r.Dst, r.DstLen))
			}
		}
	}
	keys := []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/eth0/rp_filter"}
	for _, n := range owned {
		keys = append(keys, "net/ipv4/conf/"+n+"/rp_filter")
	}
	for _, k := range keys {
		v := strings.TrimSpace(l.exec(role, "cat", "/proc/sys/"+k))
		out = append(out, fmt.Sprintf("sysctl %s=%s", k, v))
	}
	if s := l.nftDump(role); s != "" {
		out = append(out, strings.Split(strings.TrimSuffix(s, "\n"), "\n")...)
	}
	table := ""
	for _, line := range lines(l.exec(role, "nft", "list", "ruleset")) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "table":
			table = f[1] + " " + f[2]
		case len(f) >= 2 && f[0] == "chain" && strings.HasPrefix(f[1], c.ChainPrefix+"-"):
			out = append(out, "legacy "+table+" "+f[1])
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n") + "\n"
}

// wgDump renders a WireGuard device from `wg show <dev> dump`.
func (l *lab) wgDump(role, dev string) []string {
	l.tb.Helper()
	var out []string
	for i, line := range lines(l.exec(role, "wg", "show", dev, "dump")) {
		f := strings.Split(line, "\t")
		if i == 0 {
			if len(f) < 3 {
				l.tb.Fatalf("wg show dump: %q", line)
			}
			out = append(out, fmt.Sprintf("wg %s port %s pub %s", dev, f[2], f[1]))
			continue
		}
		if len(f) < 8 {
			l.tb.Fatalf("wg show dump: %q", line)
		}
		ips := strings.Split(f[3], ",")
		slices.Sort(ips)
		keepalive := "0s"
		if f[7] != "off" {
			keepalive = f[7] + "s"
		}
		out = append(out, fmt.Sprintf("wg %s peer %s endpoint %s allowed %s keepalive %s", dev, f[0], f[2], strings.Join(ips, ","), keepalive))
	}
	return out
}

func (l *lab) jsonOut(role string, v any, args ...string) {
	l.tb.Helper()
	o := l.exec(role, args...)
	if strings.TrimSpace(o) == "" {
		return
	}
	if err := json.Unmarshal([]byte(o), v); err != nil {
		l.tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, o)
	}
}
