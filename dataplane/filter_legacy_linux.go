package dataplane

// Versions before the nftables table kept iptables chains <ChainPrefix>-FORWARD,
// -INPUT and -POSTROUTING (filter, nat and mangle; IPv4 and IPv6), jumped to first
// from the built-in chains. With the iptables-nft backend they live in nftables
// tables ip/ip6 filter, nat and mangle, so Apply finds and removes them through
// netlink too. Chains made with iptables-legacy are invisible here.

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// findLegacy finds the iptables chains of earlier mcnet versions in the iptables-nft
// tables (ip and ip6 families) and every rule jumping to them (the built-in chain's
// jump, and any other). It looks each chain up by name, so a node with kube-proxy's
// thousands of iptables chains pays a few lookups, not a dump of them all.
func (d *Dataplane) findLegacy() (chains []*nftables.Chain, jumps []*nftables.Rule, err error) {
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		tables, err := d.k.nft.ListTablesOfFamily(fam)
		if err != nil {
			return nil, nil, fmt.Errorf("list %s tables: %w", famName(fam), err)
		}
		found := map[string][]string{} // table -> old chains in it
		for _, tc := range d.cfg.legacyChains() {
			if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == tc[0] }) {
				continue
			}
			t := &nftables.Table{Name: tc[0], Family: fam}
			c, err := d.k.nft.ListChain(t, tc[1])
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("look up %s %s %s: %w", famName(fam), tc[0], tc[1], err)
			}
			c.Table = t
			chains = append(chains, c)
			found[tc[0]] = append(found[tc[0]], tc[1])
		}
		if len(found) == 0 {
			continue
		}
		// Rare and once: scan the tables holding an old chain for jumps to it, or
		// deleting the chain would fail.
		all, err := d.k.nft.ListChainsOfTableFamily(fam)
		if err != nil {
			return nil, nil, fmt.Errorf("list %s chains: %w", famName(fam), err)
		}
		for _, c := range all {
			if c.Table == nil || len(found[c.Table.Name]) == 0 || slices.Contains(found[c.Table.Name], c.Name) {
				continue
			}
			rules, err := d.k.nft.GetRules(c.Table, c)
			if err != nil {
				return nil, nil, fmt.Errorf("list rules of %s %s: %w", c.Table.Name, c.Name, err)
			}
			for _, r := range rules {
				if slices.ContainsFunc(r.Exprs, func(e expr.Any) bool {
					v, ok := e.(*expr.Verdict)
					return ok && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) && slices.Contains(found[c.Table.Name], v.Chain)
				}) {
					r.Table, r.Chain = c.Table, c
					jumps = append(jumps, r)
				}
			}
		}
	}
	return chains, jumps, nil
}

// removeLegacy deletes the iptables chains of earlier versions and the jumps to them.
func (d *Dataplane) removeLegacy(ctx context.Context) error {
	chains, jumps, err := d.findLegacy()
	if err != nil {
		return fmt.Errorf("old iptables chains: %w", err)
	}
	if len(chains) == 0 {
		return nil
	}
	for _, r := range jumps {
		if err := d.k.nft.DelRule(r); err != nil {
			d.abort()
			return fmt.Errorf("old iptables chains: delete jump: %w", err)
		}
	}
	var names []string
	for _, c := range chains {
		d.k.nft.FlushChain(c)
		d.k.nft.DelChain(c)
		names = append(names, famName(c.Table.Family)+" "+c.Table.Name+" "+c.Name)
	}
	if err := d.k.nft.Flush(); err != nil {
		return fmt.Errorf("old iptables chains: delete %v: %w", names, err)
	}
	d.changed(ctx, "Removed iptables chains of an earlier mcnet", "chains", names, "jumps", len(jumps))
	return nil
}
