package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
