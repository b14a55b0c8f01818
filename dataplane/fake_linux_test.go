package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeKernel is an in-memory kernel behind the dataplane's seams, close enough to the
// real one where the dataplane depends on it (replace semantics, link deletion taking
// routes and neighbours along, nftables transactions that apply whole or not at all). Its
// String renders every object as sorted text, so two kernels compare with a diff.
type fakeKernel struct {
	links   map[string]*fakeLink
	nextIdx int
	routes  []netlink.Route
	rules   []netlink.Rule
	neighs  []netlink.Neigh
	nft     *fakeNFT
	sysctls map[string]string
	wg      map[string]*wgtypes.Device
	wgLog   []string // peer keepalive changes, to see handshake triggers
}

type fakeLink struct {
	link  netlink.Link
	addrs []netip.Prefix
}

func newFakeKernel() *fakeKernel {
	f := &fakeKernel{
		links: map[string]*fakeLink{}, nextIdx: 1,
		nft:     newFakeNFT(),
		sysctls: map[string]string{"net/ipv4/ip_forward": "0", "net/ipv6/conf/all/forwarding": "0"},
		wg:      map[string]*wgtypes.Device{},
	}
	// The underlay and a foreign route, rule and firewall rule that must survive.
	eth0 := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500, Flags: net.FlagUp}}
	f.LinkAdd(eth0)
	f.routes = append(f.routes, netlink.Route{Table: unix.RT_TABLE_MAIN, Dst: ipNet(netip.MustParsePrefix("10.1.1.0/24")), LinkIndex: 1, Family: netlink.FAMILY_V4})
	r := netlink.NewRule()
	r.Priority, r.Table, r.Family = 100, 100, netlink.FAMILY_V4
	f.rules = append(f.rules, *r)
	// iptables-nft's tables with kube-proxy's jumps.
	f.nft.iptablesChain(nftables.TableFamilyIPv4, "filter", "FORWARD", "KUBE-FORWARD")
	f.nft.iptablesChain(nftables.TableFamilyIPv4, "nat", "POSTROUTING", "KUBE-POSTROUTING")
	f.nft.iptablesChain(nftables.TableFamilyIPv6, "nat", "POSTROUTING", "KUBE-POSTROUTING")
	return f
}

func (f *fakeKernel) kernel() kernel {
	return kernel{nl: f, nft: f.nft, wg: f, wgLink: fakeWGLinker{f}, sysctl: f}
}

var errNoDev = fmt.Errorf("fake: %w", unix.ENODEV)

// --- netlinkHandle

func (f *fakeKernel) LinkList() ([]netlink.Link, error) {
	var out []netlink.Link
	for _, l := range f.links {
		out = append(out, l.link)
	}
	return out, nil
}

func (f *fakeKernel) LinkByName(name string) (netlink.Link, error) {
	if l, ok := f.links[name]; ok {
		return l.link, nil
	}
	return nil, errNoDev
}

func (f *fakeKernel) LinkByIndex(idx int) (netlink.Link, error) {
	for _, l := range f.links {
		if l.link.Attrs().Index == idx {
			return l.link, nil
		}
	}
	return nil, errNoDev
}

func (f *fakeKernel) LinkAdd(l netlink.Link) error {
	a := l.Attrs()
	if _, ok := f.links[a.Name]; ok {
		return unix.EEXIST
	}
	if _, ok := l.(*netlink.Wireguard); ok {
		return unix.EOPNOTSUPP // like this kernel: no module (fakeWGLinker makes them)
	}
	a.Index = f.nextIdx
	f.nextIdx++
	if a.MTU == 0 {
		a.MTU = 1500
	}
	if a.HardwareAddr == nil {
		m := clusterMAC("fake/" + a.Name) // by name: stable whatever the history
		a.HardwareAddr = m[:]
	}
	f.links[a.Name] = &fakeLink{link: l}
	f.sysctls["net/ipv4/conf/"+a.Name+"/rp_filter"] = "0"
	return nil
}

func (f *fakeKernel) LinkDel(l netlink.Link) error {
	fl, ok := f.links[l.Attrs().Name]
	if !ok {
		return errNoDev
	}
	idx := fl.link.Attrs().Index
	delete(f.links, l.Attrs().Name)
	delete(f.sysctls, "net/ipv4/conf/"+l.Attrs().Name+"/rp_filter")
	// Like the kernel: routes and neighbours through a deleted link go with it.
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool { return r.LinkIndex == idx })
	f.neighs = slices.DeleteFunc(f.neighs, func(n netlink.Neigh) bool { return n.LinkIndex == idx })
	return nil
}

func (f *fakeKernel) find(l netlink.Link) (*fakeLink, error) {
	fl, ok := f.links[l.Attrs().Name]
	if !ok {
		return nil, errNoDev
	}
	return fl, nil
}

func (f *fakeKernel) LinkSetUp(l netlink.Link) error {
	fl, err := f.find(l)
	if err == nil {
		fl.link.Attrs().Flags |= net.FlagUp
	}
	return err
}

func (f *fakeKernel) LinkSetMTU(l netlink.Link, mtu int) error {
	fl, err := f.find(l)
	if err == nil {
		fl.link.Attrs().MTU = mtu
	}
	return err
}

func (f *fakeKernel) LinkSetHardwareAddr(l netlink.Link, hw net.HardwareAddr) error {
	fl, err := f.find(l)
	if err == nil {
		fl.link.Attrs().HardwareAddr = slices.Clone(hw)
	}
	return err
}

func (f *fakeKernel) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	fl, err := f.find(l)
	if err != nil {
		return nil, err
	}
	var out []netlink.Addr
	for _, p := range fl.addrs {
		out = append(out, netlink.Addr{IPNet: ipNet(p)})
	}
	return out, nil
}

func (f *fakeKernel) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	fl, err := f.find(l)
	if err != nil {
		return err
	}
	p, _ := prefixOf(a.IPNet)
	if slices.Contains(fl.addrs, p) {
		return unix.EEXIST
	}
	fl.addrs = append(fl.addrs, p)
	return nil
}

func (f *fakeKernel) AddrDel(l netlink.Link, a *netlink.Addr) error {
	fl, err := f.find(l)
	if err != nil {
		return err
	}
	p, _ := prefixOf(a.IPNet)
	fl.addrs = slices.DeleteFunc(fl.addrs, func(q netip.Prefix) bool { return q == p })
	return nil
}

// RouteGet: everything is reached through eth0.
func (f *fakeKernel) RouteGet(dst net.IP) ([]netlink.Route, error) {
	return []netlink.Route{{LinkIndex: f.links["eth0"].link.Attrs().Index}}, nil
}

func (f *fakeKernel) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, r := range f.routes {
		if mask&netlink.RT_FILTER_TABLE != 0 && r.Table != filter.Table {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func routeID(r netlink.Route) string { return fmt.Sprintf("%d %s", r.Table, r.Dst) }

func (f *fakeKernel) RouteReplace(r *netlink.Route) error {
	if _, err := f.LinkByIndex(r.LinkIndex); err != nil {
		return err
	}
	f.routes = slices.DeleteFunc(f.routes, func(o netlink.Route) bool { return routeID(o) == routeID(*r) })
	f.routes = append(f.routes, *r)
	return nil
}

func (f *fakeKernel) RouteDel(r *netlink.Route) error {
	// Like the kernel: given next-hop attributes must match too.
	match := func(o netlink.Route) bool {
		return routeID(o) == routeID(*r) && (r.LinkIndex == 0 || r.LinkIndex == o.LinkIndex) && (r.Gw == nil || r.Gw.Equal(o.Gw))
	}
	n := len(f.routes)
	f.routes = slices.DeleteFunc(f.routes, match)
	if len(f.routes) == n {
		return unix.ESRCH
	}
	return nil
}

func (f *fakeKernel) RuleListFiltered(family int, filter *netlink.Rule, mask uint64) ([]netlink.Rule, error) {
	var out []netlink.Rule
	for _, r := range f.rules {
		if mask&netlink.RT_FILTER_TABLE != 0 && r.Table != filter.Table {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func ruleID(r netlink.Rule) string { return fmt.Sprintf("%d %d %s", r.Priority, r.Table, r.Dst) }

func (f *fakeKernel) RuleAdd(r *netlink.Rule) error {
	if slices.ContainsFunc(f.rules, func(o netlink.Rule) bool { return ruleID(o) == ruleID(*r) }) {
		return unix.EEXIST
	}
	f.rules = append(f.rules, *r)
	return nil
}

func (f *fakeKernel) RuleDel(r *netlink.Rule) error {
	i := slices.IndexFunc(f.rules, func(o netlink.Rule) bool { return ruleID(o) == ruleID(*r) })
	if i < 0 {
		return unix.ENOENT
	}
	f.rules = slices.Delete(f.rules, i, i+1)
	return nil
}

func neighID(n netlink.Neigh) string {
	if n.Family == unix.AF_BRIDGE {
		return fmt.Sprintf("%d fdb %s", n.LinkIndex, n.HardwareAddr)
	}
	return fmt.Sprintf("%d %d %s", n.LinkIndex, n.Family, n.IP)
}

func (f *fakeKernel) NeighList(idx, family int) ([]netlink.Neigh, error) {
	var out []netlink.Neigh
	for _, n := range f.neighs {
		if n.LinkIndex == idx && n.Family == family {
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *fakeKernel) NeighSet(n *netlink.Neigh) error {
	if _, err := f.LinkByIndex(n.LinkIndex); err != nil {
		return err
	}
	f.neighs = slices.DeleteFunc(f.neighs, func(o netlink.Neigh) bool { return neighID(o) == neighID(*n) })
	f.neighs = append(f.neighs, *n)
	return nil
}

// ConntrackDeleteFilters: the fake kernel keeps no flows.
func (f *fakeKernel) ConntrackDeleteFilters(netlink.ConntrackTableType, netlink.InetFamily, ...netlink.CustomConntrackFilter) (uint, error) {
	return 0, nil
}

func (f *fakeKernel) NeighDel(n *netlink.Neigh) error {
	f.neighs = slices.DeleteFunc(f.neighs, func(o netlink.Neigh) bool { return neighID(o) == neighID(*n) })
	return nil
}

// --- sysctlHandle

func (f *fakeKernel) Get(key string) (string, error) {
	v, ok := f.sysctls[key]
	if !ok {
		return "", fmt.Errorf("fake sysctl %s: %w", key, unix.ENOENT)
	}
	return v, nil
}

func (f *fakeKernel) Set(key, value string) error {
	if _, ok := f.sysctls[key]; !ok {
		return fmt.Errorf("fake sysctl %s: %w", key, unix.ENOENT)
	}
	f.sysctls[key] = value
	return nil
}

// --- wgClient

func (f *fakeKernel) Device(name string) (*wgtypes.Device, error) {
	d, ok := f.wg[name]
	if !ok {
		return nil, fmt.Errorf("fake wg %s: %w", name, unix.ENOENT)
	}
	c := *d
	c.Peers = slices.Clone(d.Peers)
	return &c, nil
}

func (f *fakeKernel) ConfigureDevice(name string, cfg wgtypes.Config) error {
	d, ok := f.wg[name]
	if !ok {
		return fmt.Errorf("fake wg %s: %w", name, unix.ENOENT)
	}
	if cfg.PrivateKey != nil {
		d.PrivateKey, d.PublicKey = *cfg.PrivateKey, cfg.PrivateKey.PublicKey()
	}
	if cfg.ListenPort != nil {
		d.ListenPort = *cfg.ListenPort
	}
	if cfg.ReplacePeers {
		d.Peers = nil
	}
	for _, pc := range cfg.Peers {
		i := slices.IndexFunc(d.Peers, func(p wgtypes.Peer) bool { return p.PublicKey == pc.PublicKey })
		switch {
		case pc.Remove:
			if i >= 0 {
				d.Peers = slices.Delete(d.Peers, i, i+1)
			}
			continue
		case i < 0 && pc.UpdateOnly:
			continue
		case i < 0:
			d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: pc.PublicKey})
			i = len(d.Peers) - 1
		}
		p := &d.Peers[i]
		if pc.Endpoint != nil {
			p.Endpoint = pc.Endpoint
		}
		if pc.PersistentKeepaliveInterval != nil {
			f.wgLog = append(f.wgLog, fmt.Sprintf("%s keepalive %s", pc.PublicKey, *pc.PersistentKeepaliveInterval))
			p.PersistentKeepaliveInterval = *pc.PersistentKeepaliveInterval
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		p.AllowedIPs = append(p.AllowedIPs, pc.AllowedIPs...)
	}
	return nil
}

// fakeWGLinker makes "userspace" WireGuard links in the fake kernel.
type fakeWGLinker struct{ f *fakeKernel }

func (w fakeWGLinker) Create(_ context.Context, name string, mtu int) error {
	if err := w.f.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}); err != nil {
		return err
	}
	w.f.wg[name] = &wgtypes.Device{Name: name, Type: wgtypes.Userspace}
	return nil
}

func (w fakeWGLinker) Running(name string) bool { _, ok := w.f.wg[name]; return ok }

func (w fakeWGLinker) Remove(_ context.Context, name string) error {
	delete(w.f.wg, name)
	if l, ok := w.f.links[name]; ok {
		return w.f.LinkDel(l.link)
	}
	return nil
}

// String renders the whole fake kernel as sorted lines; nftables rules carry their
// position in their chain.
func (f *fakeKernel) String() string {
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	names := map[int]string{}
	for name, l := range f.links {
		a := l.link.Attrs()
		names[a.Index] = name
		s := fmt.Sprintf("link %s type %s mtu %d mac %s up %v", name, l.link.Type(), a.MTU, a.HardwareAddr, a.Flags&net.FlagUp != 0)
		if vx, ok := l.link.(*netlink.Vxlan); ok {
			s += fmt.Sprintf(" vni %d port %d learning %v udpcsum %v", vx.VxlanId, vx.Port, vx.Learning, vx.UDPCSum)
		}
		for _, p := range l.addrs {
			s += " addr " + p.String()
		}
		lines = append(lines, s)
	}
	for _, r := range f.routes {
		s := fmt.Sprintf("route table %d %s dev %s", r.Table, r.Dst, names[r.LinkIndex])
		if r.Gw != nil {
			s += fmt.Sprintf(" via %s onlink %v", r.Gw, r.Flags&int(netlink.FLAG_ONLINK) != 0)
		}
		add("%s", s)
	}
	for _, r := range f.rules {
		add("rule pref %d to %v table %d", r.Priority, r.Dst, r.Table)
	}
	for _, n := range f.neighs {
		if n.Family == unix.AF_BRIDGE {
			add("fdb %s %s dst %s", names[n.LinkIndex], n.HardwareAddr, n.IP)
		} else {
			add("neigh %s %s lladdr %s", names[n.LinkIndex], n.IP, n.HardwareAddr)
		}
	}
	lines = append(lines, strings.Split(strings.TrimSuffix(f.nft.String(), "\n"), "\n")...)
	for k, v := range f.sysctls {
		add("sysctl %s=%s", k, v)
	}
	for name, d := range f.wg {
		add("wg %s port %d pub %s", name, d.ListenPort, d.PublicKey)
		for _, p := range d.Peers {
			var ips []string
			for _, n := range p.AllowedIPs {
				ips = append(ips, n.String())
			}
			add("wg %s peer %s endpoint %s allowed %s keepalive %s", name, p.PublicKey, p.Endpoint, strings.Join(ips, ","), p.PersistentKeepaliveInterval)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}
