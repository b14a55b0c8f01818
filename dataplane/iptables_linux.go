package dataplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// syncChains makes every chain spec true: managed chains exist with exactly their rules
// and one jump from their built-in chain; unmanaged chains (a family the State no longer
// uses, or Cleanup) are gone with their jumps. Rules inside an mcnet chain carry no
// order: each is a terminal ACCEPT or a TCPMSS on disjoint matches.
func (d *Dataplane) syncChains(ctx context.Context, chains []chainSpec) error {
	var errs []error
	for _, c := range chains {
		ipt := d.k.ipt4
		if c.V6 {
			ipt = d.k.ipt6
		}
		if ipt == nil {
			if c.Managed {
				errs = append(errs, fmt.Errorf("chain %s/%s: %s not available", c.Table, c.Name, iptName(c.V6)))
			}
			continue
		}
		var err error
		if c.Managed {
			err = d.ensureChain(ctx, ipt, c)
		} else {
			err = d.removeChain(ctx, ipt, c)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s chain %s/%s: %w", iptName(c.V6), c.Table, c.Name, err))
		}
	}
	return errors.Join(errs...)
}

func iptName(v6 bool) string {
	if v6 {
		return "ip6tables"
	}
	return "iptables"
}

func (d *Dataplane) ensureChain(ctx context.Context, ipt iptablesHandle, c chainSpec) error {
	ok, err := ipt.ChainExists(c.Table, c.Name)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if !ok {
		if err := ipt.NewChain(c.Table, c.Name); err != nil {
			return fmt.Errorf("create: %w", err)
		}
		d.changed(ctx, "Created chain", "table", c.Table, "chain", c.Name, "ipv6", c.V6)
	}
	have, err := listRules(ipt, c.Table, c.Name)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	var errs []error
	for _, r := range c.Rules {
		k := strings.Join(r, " ")
		if want[k] {
			continue
		}
		want[k] = true
		if have[k] > 0 {
			continue
		}
		if err := ipt.Append(c.Table, c.Name, r...); err != nil {
			errs = append(errs, fmt.Errorf("append %q: %w", k, err))
			continue
		}
		d.changed(ctx, "Appended rule", "table", c.Table, "chain", c.Name, "rule", k)
	}
	for k, n := range have {
		// Stale rules go, and so do duplicates beyond the first.
		extra := n
		if want[k] {
			extra = n - 1
		}
		for range extra {
			if err := ipt.Delete(c.Table, c.Name, strings.Fields(k)...); err != nil {
				errs = append(errs, fmt.Errorf("delete %q: %w", k, err))
				break
			}
			d.changed(ctx, "Deleted rule", "table", c.Table, "chain", c.Name, "rule", k)
		}
	}
	errs = append(errs, d.ensureJump(ctx, ipt, c))
	return errors.Join(errs...)
}

// ensureJump leaves exactly one "-j <chain>" in the built-in chain, first, so mcnet's
// decisions come before a CNI's or kube-proxy's masquerade and drop rules. A jump
// found elsewhere (someone inserted before it) is moved back to the top.
func (d *Dataplane) ensureJump(ctx context.Context, ipt iptablesHandle, c chainSpec) error {
	lines, err := ipt.List(c.Table, c.From)
	if err != nil {
		return fmt.Errorf("list %s/%s: %w", c.Table, c.From, err)
	}
	jump := "-A " + c.From + " -j " + c.Name
	var rules []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, strings.Join(strings.Fields(l), " "))
		}
	}
	n := 0
	for _, r := range rules {
		if r == jump {
			n++
		}
	}
	if n == 1 && rules[0] == jump {
		return nil
	}
	// iptables -D removes the first match; remove all, then insert at the top.
	for range n {
		if err := ipt.Delete(c.Table, c.From, "-j", c.Name); err != nil {
			return fmt.Errorf("delete misplaced jump from %s: %w", c.From, err)
		}
	}
	if err := ipt.Insert(c.Table, c.From, 1, "-j", c.Name); err != nil {
		return fmt.Errorf("insert jump from %s: %w", c.From, err)
	}
	d.changed(ctx, "Inserted jump", "table", c.Table, "from", c.From, "chain", c.Name, "replaced", n)
	return nil
}

func countJumps(ipt iptablesHandle, c chainSpec) (int, error) {
	rules, err := listRules(ipt, c.Table, c.From)
	if err != nil {
		return 0, err
	}
	return rules["-j "+c.Name], nil
}

func (d *Dataplane) removeChain(ctx context.Context, ipt iptablesHandle, c chainSpec) error {
	ok, err := ipt.ChainExists(c.Table, c.Name)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if !ok {
		return nil
	}
	jumps, err := countJumps(ipt, c)
	if err != nil {
		return err
	}
	for range jumps {
		if err := ipt.Delete(c.Table, c.From, "-j", c.Name); err != nil {
			return fmt.Errorf("delete jump from %s: %w", c.From, err)
		}
		d.changed(ctx, "Deleted jump", "table", c.Table, "from", c.From, "chain", c.Name)
	}
	if err := ipt.ClearAndDeleteChain(c.Table, c.Name); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	d.changed(ctx, "Deleted chain", "table", c.Table, "chain", c.Name, "ipv6", c.V6)
	return nil
}

// listRules returns a chain's rule specs (iptables -S without "-A <chain> ") counted.
func listRules(ipt iptablesHandle, table, chain string) (map[string]int, error) {
	lines, err := ipt.List(table, chain)
	if err != nil {
		return nil, fmt.Errorf("list %s/%s: %w", table, chain, err)
	}
	out := map[string]int{}
	prefix := "-A " + chain + " "
	for _, l := range lines {
		if spec, ok := strings.CutPrefix(l, prefix); ok {
			out[strings.Join(strings.Fields(spec), " ")]++
		}
	}
	return out, nil
}
