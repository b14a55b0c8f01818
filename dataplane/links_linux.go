package dataplane

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
)

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
