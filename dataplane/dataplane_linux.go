package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// netlinkHandle is the part of *netlink.Handle the dataplane uses.
type netlinkHandle interface {
	LinkList() ([]netlink.Link, error)
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetHardwareAddr(link netlink.Link, hwaddr net.HardwareAddr) error
	RouteGet(destination net.IP) ([]netlink.Route, error)
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
	RuleListFiltered(family int, filter *netlink.Rule, filterMask uint64) ([]netlink.Rule, error)
	RuleAdd(rule *netlink.Rule) error
	RuleDel(rule *netlink.Rule) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	NeighList(linkIndex, family int) ([]netlink.Neigh, error)
	NeighSet(neigh *netlink.Neigh) error
	NeighDel(neigh *netlink.Neigh) error
}

// iptablesHandle is the part of *iptables.IPTables the dataplane uses.
type iptablesHandle interface {
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	List(table, chain string) ([]string, error)
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
}

// wgClient is the part of *wgctrl.Client the dataplane uses.
type wgClient interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
}

// sysctlHandle reads and writes /proc/sys keys given with slashes (interface names
// may contain dots).
type sysctlHandle interface {
	Get(key string) (string, error)
	Set(key, value string) error
}

// wgLinker creates and removes WireGuard links: a kernel device, or a userspace
// device living in this process.
type wgLinker interface {
	// Create makes link name with the given MTU.
	Create(ctx context.Context, name string, mtu int) error
	// Running reports whether name is a userspace device this process runs.
	Running(name string) bool
	// Remove stops a userspace device (its TUN link vanishes with it) or deletes the
	// kernel link; a missing link is not an error.
	Remove(ctx context.Context, name string) error
}

// kernel bundles the seams; tests pass fakes.
type kernel struct {
	nl     netlinkHandle
	ipt4   iptablesHandle // nil when iptables is missing
	ipt6   iptablesHandle // nil when ip6tables is missing
	wg     wgClient
	wgLink wgLinker
	sysctl sysctlHandle
	close  func() error
}

// Dataplane owns mcnet's kernel state on one node (one network namespace). Its methods
// are safe for concurrent use; they serialise.
type Dataplane struct {
	cfg Config
	k   kernel

	mu      sync.Mutex
	last    *plan // last plan applied, for Stats
	changes int   // kernel writes made by the last Apply or Cleanup (tests read it)
}

// New returns a Dataplane for the network namespace of the calling thread, using the
// kernel's netlink, iptables/ip6tables, wgctrl and, when the WireGuard module is
// absent, embedded userspace WireGuard devices. Call Close when done.
func New(cfg Config) (*Dataplane, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("dataplane config: %w", err)
	}
	nl, err := newRTNL()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	wg, err := wgctrl.New()
	if err != nil {
		nl.Close()
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}
	k := kernel{nl: nl, wg: wg, sysctl: procSysctl{}}
	// A node without iptables (or ip6tables) can still run a dataplane that needs
	// only the other family; Apply reports the missing one when a State needs it.
	if ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4); err == nil {
		k.ipt4 = ipt
	}
	if ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv6); err == nil {
		k.ipt6 = ipt
	}
	links := newWGLinks(nl)
	k.wgLink = links
	k.close = func() error {
		err := links.closeAll()
		nl.Close()
		return errors.Join(err, wg.Close())
	}
	return newDataplane(cfg, k)
}

// newDataplane wires a Dataplane to any kernel; tests pass fakes.
func newDataplane(cfg Config, k kernel) (*Dataplane, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("dataplane config: %w", err)
	}
	return &Dataplane{cfg: cfg, k: k}, nil
}

// Close releases the kernel handles and stops userspace WireGuard devices (their links
// disappear with them). Other kernel state stays until Cleanup.
func (d *Dataplane) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.k.close == nil {
		return nil
	}
	return d.k.close()
}

// Apply makes the node's mcnet kernel state equal to s: it creates and updates what is
// missing or different first, then removes what s no longer asks for. Calling it again
// with the same State changes nothing. An invalid State returns an error wrapping
// ErrInvalidState and touches nothing.
func (d *Dataplane) Apply(ctx context.Context, s State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.changes = 0
	p := buildPlan(d.cfg, s, d.resolve)
	if p.WG != nil && d.k.wg == nil {
		return errors.New("apply: wireguard cable requested but no wgctrl client")
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("component", "dataplane")
	ctx = logr.NewContext(ctx, log)

	// Additions and updates, in dependency order: a route needs its link, a rule is
	// only useful once its table has routes, a jump needs its chain.
	var errs []error
	errs = append(errs, d.applySysctls(ctx, p, true))
	errs = append(errs, d.ensureLinks(ctx, p))
	if p.WG != nil {
		errs = append(errs, d.configureWireGuard(ctx, *p.WG))
	}
	errs = append(errs, d.syncNeighbours(ctx, p))
	errs = append(errs, d.syncRoutes(ctx, p))
	errs = append(errs, d.syncRules(ctx, p))
	errs = append(errs, d.syncChains(ctx, p.Chains))
	// rp_filter keys exist only once the links do.
	errs = append(errs, d.applySysctls(ctx, p, false))
	// Deletions: what the plan does not mention. syncRules/syncRoutes/syncNeighbours
	// and syncChains have already removed stale entries after adding new ones.
	errs = append(errs, d.removeStaleLinks(ctx, p))
	d.last = &p
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apply dataplane: %w", err)
	}
	log.V(1).Info("Applied dataplane state", "changes", d.changes, "remotes", len(s.Remotes), "gateway", s.Gateway != nil)
	return nil
}

// Cleanup removes every link, route, rule, neighbour, chain and userspace WireGuard
// device mcnet created on the node. It leaves net.ipv4.ip_forward on (other software
// relies on it) and keeps the WireGuard key file, so the node's public key survives.
func (d *Dataplane) Cleanup(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.changes = 0
	log := logr.FromContextOrDiscard(ctx).WithValues("component", "dataplane")
	ctx = logr.NewContext(ctx, log)
	empty := plan{}
	var chains []chainSpec
	for _, v6 := range []bool{false, true} {
		chains = append(chains, planChains(d.cfg, State{}, v6, false, nil, nil)...)
	}
	saved, err := d.loadSavedSysctls()
	errs := []error{
		err,
		d.restoreSysctls(ctx, saved, nil, false),
		d.syncRules(ctx, empty),
		d.syncRoutes(ctx, empty),
		d.removeStaleLinks(ctx, empty),
		d.syncChains(ctx, chains),
	}
	d.last = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup dataplane: %w", err)
	}
	log.V(1).Info("Cleaned up dataplane", "changes", d.changes)
	return nil
}

// changed counts and logs one kernel write.
func (d *Dataplane) changed(ctx context.Context, msg string, kv ...any) {
	d.changes++
	logr.FromContextOrDiscard(ctx).V(1).Info(msg, kv...)
}

// resolve asks the main table how an underlay address is reached (ip route get).
func (d *Dataplane) resolve(a netip.Addr) underlay {
	if !a.IsValid() {
		return underlay{}
	}
	routes, err := d.k.nl.RouteGet(a.AsSlice())
	if err != nil || len(routes) == 0 {
		return underlay{}
	}
	l, err := d.k.nl.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return underlay{}
	}
	mtu := l.Attrs().MTU
	if routes[0].MTU > 0 && routes[0].MTU < mtu {
		mtu = routes[0].MTU // a route MTU (ip route ... mtu N) lowers the path MTU
	}
	return underlay{Iface: l.Attrs().Name, MTU: mtu}
}

// applySysctls writes forwarding keys (global) or per-interface keys (the rest).
// Before loosening rp_filter on an interface mcnet does not own, it records the old
// value in the state directory, and restores it once no State needs it any more.
func (d *Dataplane) applySysctls(ctx context.Context, p plan, global bool) error {
	keys := make([]string, 0, len(p.Sysctls))
	for k := range p.Sysctls {
		if strings.HasPrefix(k, "net/ipv4/conf/") != global {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var saved map[string]string
	var errs []error
	if !global {
		var err error
		if saved, err = d.loadSavedSysctls(); err != nil {
			return err
		}
	}
	dirty := false
	for _, k := range keys {
		cur, err := d.k.sysctl.Get(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("read sysctl %s: %w", k, err))
			continue
		}
		if cur == p.Sysctls[k] {
			continue
		}
		if _, ok := saved[k]; !ok && !global && !d.ownsSysctl(k) {
			saved[k], dirty = cur, true
			// Record first: a crash after the write must still be able to restore.
			if err := d.storeSavedSysctls(saved); err != nil {
				return err
			}
		}
		if err := d.k.sysctl.Set(k, p.Sysctls[k]); err != nil {
			errs = append(errs, fmt.Errorf("write sysctl %s: %w", k, err))
			continue
		}
		d.changed(ctx, "Set sysctl", "key", k, "value", p.Sysctls[k])
	}
	if !global {
		errs = append(errs, d.restoreSysctls(ctx, saved, p.Sysctls, dirty))
	}
	return errors.Join(errs...)
}

// restoreSysctls puts back every saved value the plan no longer sets.
func (d *Dataplane) restoreSysctls(ctx context.Context, saved, keep map[string]string, dirty bool) error {
	var errs []error
	for k, v := range saved {
		if _, ok := keep[k]; ok {
			continue
		}
		delete(saved, k)
		dirty = true
		cur, err := d.k.sysctl.Get(k)
		if err != nil || cur == v {
			continue // the interface is gone, or already back
		}
		if err := d.k.sysctl.Set(k, v); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s: %w", k, err))
			continue
		}
		d.changed(ctx, "Restored sysctl", "key", k, "value", v)
	}
	if dirty {
		errs = append(errs, d.storeSavedSysctls(saved))
	}
	return errors.Join(errs...)
}

// ownsSysctl reports whether a key belongs to a link mcnet owns (it goes with it).
func (d *Dataplane) ownsSysctl(key string) bool {
	for _, l := range d.cfg.ownedLinks() {
		if strings.HasPrefix(key, "net/ipv4/conf/"+l+"/") {
			return true
		}
	}
	return false
}

func (d *Dataplane) savedSysctlsPath() string {
	return filepath.Join(d.cfg.StateDir, "sysctl-saved.json")
}

func (d *Dataplane) loadSavedSysctls() (map[string]string, error) {
	saved := map[string]string{}
	b, err := os.ReadFile(d.savedSysctlsPath())
	if errors.Is(err, os.ErrNotExist) {
		return saved, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read saved sysctls: %w", err)
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("read saved sysctls %s: %w", d.savedSysctlsPath(), err)
	}
	return saved, nil
}

func (d *Dataplane) storeSavedSysctls(saved map[string]string) error {
	path := d.savedSysctlsPath()
	if len(saved) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove saved sysctls: %w", err)
		}
		return nil
	}
	b, _ := json.Marshal(saved)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save sysctls: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save sysctls: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save sysctls: %w", err)
	}
	return nil
}

// ensureLinks creates or updates every planned link and brings it up.
func (d *Dataplane) ensureLinks(ctx context.Context, p plan) error {
	var errs []error
	for _, spec := range p.Links {
		if err := d.ensureLink(ctx, spec); err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", spec.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (d *Dataplane) ensureLink(ctx context.Context, spec linkSpec) error {
	l, err := d.k.nl.LinkByName(spec.Name)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("look up: %w", err)
	}
	if l != nil && !d.linkMatches(l, spec) {
		// Parameters like the VNI or port cannot change in place: recreate.
		if err := d.deleteLink(ctx, l); err != nil {
			return err
		}
		l = nil
	}
	if l == nil {
		if err := d.createLink(ctx, spec); err != nil {
			return err
		}
		if l, err = d.k.nl.LinkByName(spec.Name); err != nil {
			return fmt.Errorf("look up after create: %w", err)
		}
	}
	a := l.Attrs()
	if a.MTU != spec.MTU {
		if err := d.k.nl.LinkSetMTU(l, spec.MTU); err != nil {
			return fmt.Errorf("set mtu %d: %w", spec.MTU, err)
		}
		d.changed(ctx, "Set link MTU", "link", spec.Name, "mtu", spec.MTU)
	}
	if spec.Kind == DriverVXLAN && !slices.Equal(a.HardwareAddr, spec.MAC[:]) {
		// The intra-cluster device switches MAC when the node becomes the gateway.
		if err := d.k.nl.LinkSetHardwareAddr(l, spec.MAC[:]); err != nil {
			return fmt.Errorf("set mac: %w", err)
		}
		d.changed(ctx, "Set link MAC", "link", spec.Name, "mac", macString(spec.MAC))
	}
	if err := d.syncLinkAddr(ctx, l, spec); err != nil {
		return err
	}
	if a.Flags&net.FlagUp == 0 {
		if err := d.k.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("set up: %w", err)
		}
		d.changed(ctx, "Set link up", "link", spec.Name)
	}
	return nil
}

// syncLinkAddr gives the link exactly the planned IPv4 addresses (or none). IPv6
// link-local addresses are the kernel's and stay.
func (d *Dataplane) syncLinkAddr(ctx context.Context, l netlink.Link, spec linkSpec) error {
	have, err := d.k.nl.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	want := map[netip.Prefix]int{} // prefix → scope
	if spec.Addr.IsValid() {
		want[spec.Addr] = int(netlink.SCOPE_LINK)
	}
	for _, a := range spec.HealthAddrs {
		want[a] = int(netlink.SCOPE_UNIVERSE)
	}
	found := map[netip.Prefix]bool{}
	for _, a := range have {
		if p, ok := prefixOf(a.IPNet); ok {
			if _, ok := want[p]; ok {
				found[p] = true
				continue
			}
		}
		if err := d.k.nl.AddrDel(l, &a); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete address %s: %w", a.IPNet, err)
		}
		d.changed(ctx, "Deleted address", "link", spec.Name, "addr", a.IPNet.String())
	}
	for _, p := range slices.SortedFunc(maps.Keys(want), comparePrefix) {
		if found[p] {
			continue
		}
		if err := d.k.nl.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p), Scope: want[p]}); err != nil {
			return fmt.Errorf("add address %s: %w", p, err)
		}
		d.changed(ctx, "Added address", "link", spec.Name, "addr", p.String())
	}
	return nil
}

// linkMatches reports whether an existing link can be kept for spec.
func (d *Dataplane) linkMatches(l netlink.Link, spec linkSpec) bool {
	switch spec.Kind {
	case DriverVXLAN:
		vx, ok := l.(*netlink.Vxlan)
		return ok && vx.VxlanId == spec.VNI && vx.Port == int(spec.Port) && !vx.Learning && vx.UDPCSum == !spec.ZeroUDPCsum
	case DriverWireGuard:
		// A kernel device, or a TUN only if it is the userspace device we run (a
		// leftover TUN from a dead process has nobody behind it).
		return l.Type() == "wireguard" || (l.Type() == "tuntap" && d.k.wgLink != nil && d.k.wgLink.Running(l.Attrs().Name))
	}
	return false
}

func (d *Dataplane) createLink(ctx context.Context, spec linkSpec) error {
	switch spec.Kind {
	case DriverVXLAN:
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: spec.Name, MTU: spec.MTU, HardwareAddr: spec.MAC[:]},
			VxlanId:   spec.VNI,
			Port:      int(spec.Port),
			// FDB entries are static: learning would let any sender on the port
			// redirect a cluster's traffic.
			Learning: false,
			UDPCSum:  !spec.ZeroUDPCsum,
		}
		if err := d.k.nl.LinkAdd(vx); err != nil {
			return fmt.Errorf("create vxlan: %w", err)
		}
	case DriverWireGuard:
		if d.k.wgLink == nil {
			return errors.New("no wireguard link support")
		}
		if err := d.k.wgLink.Create(ctx, spec.Name, spec.MTU); err != nil {
			return fmt.Errorf("create wireguard: %w", err)
		}
	default:
		return fmt.Errorf("unknown link kind %q", spec.Kind)
	}
	d.changed(ctx, "Created link", "link", spec.Name, "kind", spec.Kind, "mtu", spec.MTU)
	return nil
}

func (d *Dataplane) deleteLink(ctx context.Context, l netlink.Link) error {
	name := l.Attrs().Name
	if d.k.wgLink != nil && (l.Type() == "wireguard" || d.k.wgLink.Running(name)) {
		if err := d.k.wgLink.Remove(ctx, name); err != nil {
			return fmt.Errorf("remove wireguard %s: %w", name, err)
		}
	} else if err := d.k.nl.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	d.changed(ctx, "Deleted link", "link", name)
	return nil
}

// removeStaleLinks deletes the owned links p does not plan (with their routes and
// neighbours, which the kernel drops with them).
func (d *Dataplane) removeStaleLinks(ctx context.Context, p plan) error {
	var errs []error
	for _, name := range d.cfg.ownedLinks() {
		if slices.ContainsFunc(p.Links, func(s linkSpec) bool { return s.Name == name }) {
			continue
		}
		l, err := d.k.nl.LinkByName(name)
		if isNotFound(err) {
			// A userspace device whose link someone deleted still holds its socket.
			if d.k.wgLink != nil && d.k.wgLink.Running(name) {
				errs = append(errs, d.k.wgLink.Remove(ctx, name))
			}
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("look up %s: %w", name, err))
			continue
		}
		errs = append(errs, d.deleteLink(ctx, l))
	}
	return errors.Join(errs...)
}

// linkIndexes maps the owned links that exist to their indexes.
func (d *Dataplane) linkIndexes() (byName map[string]int, byIndex map[int]string, err error) {
	byName, byIndex = map[string]int{}, map[int]string{}
	for _, name := range d.cfg.ownedLinks() {
		l, err := d.k.nl.LinkByName(name)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("look up %s: %w", name, err)
		}
		byName[name] = l.Attrs().Index
		byIndex[l.Attrs().Index] = name
	}
	return byName, byIndex, nil
}

// syncNeighbours makes the permanent neighbour and FDB entries of the owned VXLAN
// links equal to the plan.
func (d *Dataplane) syncNeighbours(ctx context.Context, p plan) error {
	byName, _, err := d.linkIndexes()
	if err != nil {
		return err
	}
	var errs []error
	for _, spec := range p.Links {
		idx, ok := byName[spec.Name]
		if !ok || spec.Kind != DriverVXLAN {
			continue
		}
		// Neighbours (ARP and NDP) for the on-link next hops.
		var want []netlink.Neigh
		for _, n := range p.Neighs {
			if n.Link == spec.Name {
				want = append(want, netlink.Neigh{
					LinkIndex: idx, Family: family(n.IP), State: netlink.NUD_PERMANENT,
					IP: n.IP.AsSlice(), HardwareAddr: slices.Clone(n.MAC[:]),
				})
			}
		}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			have, err := d.k.nl.NeighList(idx, fam)
			if err != nil {
				errs = append(errs, fmt.Errorf("list neighbours of %s: %w", spec.Name, err))
				continue
			}
			// Only permanent entries are ours; the kernel owns dynamic ones.
			have = slices.DeleteFunc(have, func(n netlink.Neigh) bool { return n.State&netlink.NUD_PERMANENT == 0 })
			errs = append(errs, d.syncNeighList(ctx, spec.Name, filterFamily(want, fam), have, neighKey))
		}
		// FDB: which underlay address a MAC lives behind.
		var wantFDB []netlink.Neigh
		for _, f := range p.FDB {
			if f.Link == spec.Name {
				wantFDB = append(wantFDB, netlink.Neigh{
					LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
					Flags: netlink.NTF_SELF, IP: f.Dst.AsSlice(), HardwareAddr: slices.Clone(f.MAC[:]),
				})
			}
		}
		have, err := d.k.nl.NeighList(idx, unix.AF_BRIDGE)
		if err != nil {
			errs = append(errs, fmt.Errorf("list fdb of %s: %w", spec.Name, err))
			continue
		}
		errs = append(errs, d.syncNeighList(ctx, spec.Name, wantFDB, have, fdbKey))
	}
	return errors.Join(errs...)
}

func neighKey(n netlink.Neigh) string { return n.IP.String() + " " + n.HardwareAddr.String() }
func fdbKey(n netlink.Neigh) string   { return n.HardwareAddr.String() + " " + n.IP.String() }

func filterFamily(ns []netlink.Neigh, fam int) []netlink.Neigh {
	var out []netlink.Neigh
	for _, n := range ns {
		if n.Family == fam {
			out = append(out, n)
		}
	}
	return out
}

// syncNeighList adds missing entries, then deletes the ones not wanted.
func (d *Dataplane) syncNeighList(ctx context.Context, link string, want, have []netlink.Neigh, key func(netlink.Neigh) string) error {
	var errs []error
	haveKeys := map[string]bool{}
	for _, n := range have {
		haveKeys[key(n)] = true
	}
	wantKeys := map[string]bool{}
	for _, n := range want {
		wantKeys[key(n)] = true
		if haveKeys[key(n)] {
			continue
		}
		if err := d.k.nl.NeighSet(&n); err != nil {
			errs = append(errs, fmt.Errorf("set neighbour %s on %s: %w", key(n), link, err))
			continue
		}
		d.changed(ctx, "Set neighbour", "link", link, "entry", key(n))
	}
	for _, n := range have {
		if wantKeys[key(n)] {
			continue
		}
		if err := d.k.nl.NeighDel(&n); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete neighbour %s on %s: %w", key(n), link, err))
			continue
		}
		d.changed(ctx, "Deleted neighbour", "link", link, "entry", key(n))
	}
	return errors.Join(errs...)
}

// syncRoutes makes the mcnet table equal to the plan's routes.
func (d *Dataplane) syncRoutes(ctx context.Context, p plan) error {
	byName, byIndex, err := d.linkIndexes()
	if err != nil {
		return err
	}
	have, err := d.k.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: d.cfg.Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes of table %d: %w", d.cfg.Table, err)
	}
	haveKeys := map[string]bool{}
	for _, r := range have {
		haveKeys[d.routeKey(r, byIndex)] = true
	}
	var errs []error
	wantKeys := map[string]bool{}
	wantDst := map[netip.Prefix]bool{}
	for _, spec := range p.Routes {
		wantDst[spec.Dst] = true
		idx, ok := byName[spec.Link]
		if !ok {
			continue // its link failed; ensureLinks reported why
		}
		r := d.netlinkRoute(spec, idx)
		k := d.routeKey(*r, byIndex)
		wantKeys[k] = true
		if haveKeys[k] {
			continue
		}
		// Replace, not add: a route to the same prefix through another link (a
		// driver change) is swapped atomically instead of leaving a gap.
		if err := d.k.nl.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("replace route %s: %w", spec, err))
			continue
		}
		d.changed(ctx, "Replaced route", "route", spec.String(), "table", d.cfg.Table)
	}
	for _, r := range have {
		// A route to a wanted prefix was replaced above (one route per prefix).
		if p, ok := prefixOf(r.Dst); wantKeys[d.routeKey(r, byIndex)] || ok && wantDst[p] {
			continue
		}
		if err := d.k.nl.RouteDel(&r); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", d.routeKey(r, byIndex), err))
			continue
		}
		d.changed(ctx, "Deleted route", "route", d.routeKey(r, byIndex), "table", d.cfg.Table)
	}
	return errors.Join(errs...)
}

func (d *Dataplane) netlinkRoute(spec routeSpec, idx int) *netlink.Route {
	r := &netlink.Route{
		Dst: ipNet(spec.Dst), LinkIndex: idx, Table: d.cfg.Table,
		Family: family(spec.Dst.Addr()), Protocol: unix.RTPROT_STATIC,
	}
	if spec.Via.IsValid() {
		// The next hop is a static neighbour, not a subnet of the link: onlink.
		r.Gw = spec.Via.AsSlice()
		r.Flags = int(netlink.FLAG_ONLINK)
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

// routeKey identifies a route by what matters: prefix, link and next hop.
func (d *Dataplane) routeKey(r netlink.Route, byIndex map[int]string) string {
	dst := "default"
	if p, ok := prefixOf(r.Dst); ok {
		dst = p.String()
	}
	link, ok := byIndex[r.LinkIndex]
	if !ok {
		link = fmt.Sprintf("if%d", r.LinkIndex)
	}
	k := dst + " dev " + link
	if r.Gw != nil {
		k += " via " + r.Gw.String()
	}
	return k
}

// syncRules makes the rules pointing at the mcnet table equal to the plan.
func (d *Dataplane) syncRules(ctx context.Context, p plan) error {
	have, err := d.k.nl.RuleListFiltered(netlink.FAMILY_ALL, &netlink.Rule{Table: d.cfg.Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list rules of table %d: %w", d.cfg.Table, err)
	}
	key := func(r netlink.Rule) string {
		dst := "all"
		if p, ok := prefixOf(r.Dst); ok {
			dst = p.String()
		}
		return fmt.Sprintf("pref %d to %s", r.Priority, dst)
	}
	haveKeys := map[string]bool{}
	for _, r := range have {
		haveKeys[key(r)] = true
	}
	var errs []error
	wantKeys := map[string]bool{}
	for _, prefix := range p.Rules {
		r := netlink.NewRule()
		r.Table, r.Priority, r.Dst, r.Family = d.cfg.Table, d.cfg.RulePriority, ipNet(prefix), family(prefix.Addr())
		k := key(*r)
		wantKeys[k] = true
		if haveKeys[k] {
			continue
		}
		if err := d.k.nl.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add rule %s: %w", k, err))
			continue
		}
		haveKeys[k] = true
		d.changed(ctx, "Added rule", "rule", k, "table", d.cfg.Table)
	}
	for _, r := range have {
		if wantKeys[key(r)] {
			delete(wantKeys, key(r)) // a second identical rule is a duplicate: delete it
			continue
		}
		if err := d.k.nl.RuleDel(&r); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete rule %s: %w", key(r), err))
			continue
		}
		d.changed(ctx, "Deleted rule", "rule", key(r), "table", d.cfg.Table)
	}
	return errors.Join(errs...)
}

func family(a netip.Addr) int {
	if a.Is4() || a.Is4In6() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// isNotFound reports the ways netlink says something does not exist.
func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return err != nil && (errors.As(err, &lnf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) || errors.Is(err, os.ErrNotExist))
}

// procSysctl is the real sysctlHandle: /proc/sys of the caller's network namespace.
type procSysctl struct{}

func (procSysctl) Get(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	return strings.TrimSpace(string(b)), err
}

func (procSysctl) Set(key, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
}
