package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
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
	// ConntrackDeleteFilters drops flows a remap chain did not translate (remap_linux.go).
	ConntrackDeleteFilters(table netlink.ConntrackTableType, family netlink.InetFamily, filters ...netlink.CustomConntrackFilter) (uint, error)
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
	nft    nftHandle
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
// kernel's rtnetlink and nftables netlink sockets, wgctrl and, when the WireGuard
// module is absent, embedded userspace WireGuard devices. It runs no programs.
// Call Close when done.
func New(cfg Config) (*Dataplane, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("dataplane config: %w", err)
	}
	k, err := newKernel()
	if err != nil {
		return nil, err
	}
	return newDataplane(cfg, k)
}

// newKernel opens the real seams in the calling thread's network namespace; tests
// wrap them (to count writes) before handing them to newDataplane.
func newKernel() (kernel, error) {
	nl, err := newRTNL()
	if err != nil {
		return kernel{}, fmt.Errorf("open netlink: %w", err)
	}
	wg, err := wgctrl.New()
	if err != nil {
		nl.Close()
		return kernel{}, fmt.Errorf("open wgctrl: %w", err)
	}
	// A lasting socket stays in this namespace whatever thread later uses it.
	nft, err := nftables.New(nftables.AsLasting())
	if err != nil {
		nl.Close()
		wg.Close()
		return kernel{}, fmt.Errorf("open nftables netlink: %w", err)
	}
	links := newWGLinks(nl)
	k := kernel{nl: nl, nft: nftConn{nft}, wg: wg, wgLink: links, sysctl: procSysctl{}}
	k.close = func() error {
		err := links.closeAll()
		nl.Close()
		return errors.Join(err, wg.Close(), nft.CloseLasting())
	}
	return k, nil
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
	// only useful once its table has routes.
	var errs []error
	errs = append(errs, d.applySysctls(ctx, p, true))
	errs = append(errs, d.ensureLinks(ctx, p))
	if p.WG != nil {
		errs = append(errs, d.configureWireGuard(ctx, *p.WG))
	}
	errs = append(errs, d.syncNeighbours(ctx, p))
	errs = append(errs, d.syncRoutes(ctx, p))
	errs = append(errs, d.syncRules(ctx, p))
	errs = append(errs, d.syncFilter(ctx, p.Filter, false))
	// rp_filter keys exist only once the links do.
	errs = append(errs, d.applySysctls(ctx, p, false))
	// Deletions: what the plan does not mention. syncRules/syncRoutes/syncNeighbours
	// have already removed stale entries after adding new ones; syncFilter replaces
	// the whole table at once.
	errs = append(errs, d.removeStaleLinks(ctx, p))
	d.last = &p
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apply dataplane: %w", err)
	}
	log.V(1).Info("Applied dataplane state", "changes", d.changes, "remotes", len(s.Remotes), "gateway", s.Gateway != nil)
	return nil
}

// Cleanup removes every link, route, rule, neighbour, nftables table (and iptables
// chain of earlier versions) and userspace WireGuard device mcnet created on the
// node. It leaves net.ipv4.ip_forward on (other software
// relies on it) and keeps the WireGuard key file, so the node's public key survives.
func (d *Dataplane) Cleanup(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.changes = 0
	log := logr.FromContextOrDiscard(ctx).WithValues("component", "dataplane")
	ctx = logr.NewContext(ctx, log)
	empty := plan{}
	saved, err := d.loadSavedSysctls()
	errs := []error{
		err,
		d.restoreSysctls(ctx, saved, nil, false),
		d.syncRules(ctx, empty),
		d.syncRoutes(ctx, empty),
		d.removeStaleLinks(ctx, empty),
		d.syncFilter(ctx, filterSpec{}, true),
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
