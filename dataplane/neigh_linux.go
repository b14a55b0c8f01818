package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
