package dataplane

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// fakeNFT is an in-memory nftables behind nftHandle. Writes queue until Flush, which
// applies them to a copy and keeps it only if every one succeeds, as the kernel's
// transactions do; it refuses what the kernel refuses where mcnet could trip over it
// (a missing table or chain, a lookup of a missing set, deleting a chain that has
// rules or is jumped to).
type fakeNFT struct {
	tables     map[fakeTableKey]*fakeTable
	queue      []func(map[fakeTableKey]*fakeTable) error
	nextHandle uint64
	generation int // committed transactions, like NFTA_GEN_ID
}

type fakeTableKey struct {
	fam  nftables.TableFamily
	name string
}

type fakeTable struct {
	chains map[string]*fakeChain
	sets   map[string]*fakeSet
}

type fakeChain struct {
	chain nftables.Chain
	rules []nftables.Rule
}

type fakeSet struct {
	set   nftables.Set
	elems []nftables.SetElement
}

func newFakeNFT() *fakeNFT {
	return &fakeNFT{tables: map[fakeTableKey]*fakeTable{}, nextHandle: 1}
}

var errFakeNoEnt = fmt.Errorf("fake nftables: %w", unix.ENOENT)

func (t *fakeTable) clone() *fakeTable {
	c := &fakeTable{chains: map[string]*fakeChain{}, sets: map[string]*fakeSet{}}
	for n, ch := range t.chains {
		c.chains[n] = &fakeChain{chain: ch.chain, rules: slices.Clone(ch.rules)}
	}
	for n, s := range t.sets {
		c.sets[n] = &fakeSet{set: s.set, elems: slices.Clone(s.elems)}
	}
	return c
}

func key(t *nftables.Table) fakeTableKey { return fakeTableKey{t.Family, t.Name} }

// iptablesChain adds a base chain as iptables-nft makes it, with a jump to a
// user chain (created too), as kube-proxy's chains are.
func (f *fakeNFT) iptablesChain(fam nftables.TableFamily, table, builtin, target string) {
	t := &nftables.Table{Name: table, Family: fam}
	hook := map[string]nftables.ChainHook{"INPUT": unix.NF_INET_LOCAL_IN, "FORWARD": unix.NF_INET_FORWARD, "POSTROUTING": unix.NF_INET_POST_ROUTING}[builtin]
	prio := map[string]nftables.ChainPriority{"filter": 0, "nat": 100, "mangle": -150}[table]
	typ := nftables.ChainTypeFilter
	if table == "nat" {
		typ = nftables.ChainTypeNAT
	}
	f.AddTable(t)
	base := f.AddChain(&nftables.Chain{Table: t, Name: builtin, Type: typ, Hooknum: &hook, Priority: &prio, Policy: ptr(nftables.ChainPolicyAccept)})
	f.AddChain(&nftables.Chain{Table: t, Name: target})
	f.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictJump, Chain: target}}})
	if err := f.Flush(); err != nil {
		panic(err)
	}
}

// --- reads

func (f *fakeNFT) ListTablesOfFamily(fam nftables.TableFamily) ([]*nftables.Table, error) {
	var out []*nftables.Table
	for k := range f.tables {
		if fam == nftables.TableFamilyUnspecified || k.fam == fam {
			out = append(out, &nftables.Table{Name: k.name, Family: k.fam})
		}
	}
	return out, nil
}

func (f *fakeNFT) ListChainsOfTableFamily(fam nftables.TableFamily) ([]*nftables.Chain, error) {
	var out []*nftables.Chain
	for k, t := range f.tables {
		if k.fam != fam {
			continue
		}
		for _, c := range t.chains {
			cc := c.chain
			cc.Table = &nftables.Table{Name: k.name, Family: k.fam}
			out = append(out, &cc)
		}
	}
	return out, nil
}

func (f *fakeNFT) ListChain(t *nftables.Table, name string) (*nftables.Chain, error) {
	c, err := f.chain(t, name)
	if err != nil {
		return nil, err
	}
	cc := c.chain
	cc.Table = &nftables.Table{Name: t.Name, Family: t.Family}
	return &cc, nil
}

func (f *fakeNFT) chain(t *nftables.Table, name string) (*fakeChain, error) {
	tb, ok := f.tables[key(t)]
	if !ok {
		return nil, errFakeNoEnt
	}
	c, ok := tb.chains[name]
	if !ok {
		return nil, errFakeNoEnt
	}
	return c, nil
}

func (f *fakeNFT) GetRules(t *nftables.Table, c *nftables.Chain) ([]*nftables.Rule, error) {
	fc, err := f.chain(t, c.Name)
	if err != nil {
		return nil, err
	}
	var out []*nftables.Rule
	for _, r := range fc.rules {
		r.Exprs = slices.Clone(r.Exprs)
		out = append(out, &r)
	}
	return out, nil
}

func (f *fakeNFT) GetSets(t *nftables.Table) ([]*nftables.Set, error) {
	tb, ok := f.tables[key(t)]
	if !ok {
		return nil, errFakeNoEnt
	}
	var out []*nftables.Set
	for _, s := range tb.sets {
		c := s.set
		c.Table = t
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeNFT) GetSetElements(s *nftables.Set) ([]nftables.SetElement, error) {
	tb, ok := f.tables[key(s.Table)]
	if !ok {
		return nil, errFakeNoEnt
	}
	fs, ok := tb.sets[s.Name]
	if !ok {
		return nil, errFakeNoEnt
	}
	// The kernel returns interval elements in descending order.
	out := slices.Clone(fs.elems)
	slices.Reverse(out)
	return out, nil
}

// --- writes (queued)

func (f *fakeNFT) op(fn func(map[fakeTableKey]*fakeTable) error) { f.queue = append(f.queue, fn) }

func (f *fakeNFT) AddTable(t *nftables.Table) *nftables.Table {
	k := key(t)
	f.op(func(s map[fakeTableKey]*fakeTable) error {
		if _, ok := s[k]; !ok {
			s[k] = &fakeTable{chains: map[string]*fakeChain{}, sets: map[string]*fakeSet{}}
		}
		return nil
	})
	return t
}

func (f *fakeNFT) DelTable(t *nftables.Table) {
	k := key(t)
	f.op(func(s map[fakeTableKey]*fakeTable) error {
		if _, ok := s[k]; !ok {
			return errFakeNoEnt
		}
		delete(s, k)
		return nil
	})
}

func (f *fakeNFT) AddChain(c *nftables.Chain) *nftables.Chain {
	k, cc := key(c.Table), *c
	f.op(func(s map[fakeTableKey]*fakeTable) error {
		t, ok := s[k]
		if !ok {
			return errFakeNoEnt
		}
		if _, ok := t.chains[cc.Name]; !ok {
			cc.Table = nil
			t.chains[cc.Name] = &fakeChain{chain: cc}
		}
		return nil
	})
	return c
}

func (f *fakeNFT) FlushChain(c *nftables.Chain) {
	k, name := key(c.Table), c.Name
	f.op(func(s map[fakeTableKey]*fakeTable) error {
		t, ok := s[k]
		if !ok || t.chains[name] == nil {
			return errFakeNoEnt
		}
		t.chains[name].rules = nil
		return nil
	})
}

func (f *fakeNFT) DelChain(c *nftables.Chain) {
	k, name := key(c.Table), c.Name
	f.op(func(s map[fakeTableKey]*fakeTable) error {
		t, ok := s[k]
		if !ok || t.chains[name] == nil {
			return errFakeNoEnt
		}
		if len(t.chains[name].rules) > 0 {
			return fmt.Errorf("fake nftables: delete chain %s with rules: %w", name, unix.EBUSY)
		}
		for _, other := range t.chains {
			for _, r := range other.rules {
				if jumpsTo(r, name) {
					return fmt.Errorf("fake nftables: delete chain %s jumped to from %s: %w", name, other.chain.Name, unix.EBUSY)
				}
			}
		}
		delete(t.chains, name)
		return nil
	})
}

func jumpsTo(r nftables.Rule, chain string) bool {
	return slices.ContainsFunc(r.Exprs, func(e expr.Any) bool {
		v, ok := e.(*expr.Verdict)
		return ok && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) && v.Chain == chain
	})
}

func (f *fakeNFT) AddRule(r *nftables.Rule) *nftables.Rule {
	k, chain := key(r.Table), r.Chain.Name
	rr := nftables.Rule{Exprs: slices.Clone(r.Exprs), UserData: r.UserData}
	f.op(func(s map[fakeTableKey]*fakeTable) error {
		t, ok := s[k]
		if !ok || t.chains[chain] == nil {
			return errFakeNoEnt
		}
		for _, e := range rr.Exprs {
			if l, ok := e.(*expr.Lookup); ok && t.sets[l.SetName] == nil {
				return fmt.Errorf("fake nftables: lookup of missing set %s: %w", l.SetName, unix.ENOENT)
			}
			if v, ok := e.(*expr.Verdict); ok && v.Chain != "" && t.chains[v.Chain] == nil {
				return fmt.Errorf("fake nftables: jump to missing chain %s: %w", v.Chain, unix.ENOENT)
			}
		}
		rr.Handle = f.nextHandle
		f.nextHandle++
		t.chains[chain].rules = append(t.chains[chain].rules, rr)
		return nil
	})
	return r
}

func (f *fakeNFT) DelRule(r *nftables.Rule) error {
	if r.Handle == 0 {
		return fmt.Errorf("rule's handle cannot be 0")
	}
	k, chain, handle := key(r.Table), r.Chain.Name, r.Handle
	f.op(func(s map[fakeTableKey]*fakeTable) error {
		t, ok := s[k]
		if !ok || t.chains[chain] == nil {
			return errFakeNoEnt
		}
		c := t.chains[chain]
		i := slices.IndexFunc(c.rules, func(r nftables.Rule) bool { return r.Handle == handle })
		if i < 0 {
			return errFakeNoEnt
		}
		c.rules = slices.Delete(c.rules, i, i+1)
		return nil
	})
	return nil
}

func (f *fakeNFT) AddSet(set *nftables.Set, vals []nftables.SetElement) error {
	k, ss, elems := key(set.Table), *set, slices.Clone(vals)
	ss.Table = nil
	f.op(func(s map[fakeTableKey]*fakeTable) error {
		t, ok := s[k]
		if !ok {
			return errFakeNoEnt
		}
		if old, ok := t.sets[ss.Name]; ok {
			old.elems = append(old.elems, elems...)
			return nil
		}
		t.sets[ss.Name] = &fakeSet{set: ss, elems: elems}
		return nil
	})
	return nil
}

// Flush applies the queued writes all or nothing; an empty queue sends nothing.
func (f *fakeNFT) Flush() error {
	q := f.queue
	f.queue = nil
	if len(q) == 0 {
		return nil
	}
	next := map[fakeTableKey]*fakeTable{}
	for k, t := range f.tables {
		next[k] = t.clone()
	}
	for _, fn := range q {
		if err := fn(next); err != nil {
			return err
		}
	}
	f.tables = next
	f.generation++
	return nil
}

// String renders every table as nftView lines (the format the real-kernel tests
// normalise `nft list` output into), tables in a stable order.
func (f *fakeNFT) String() string {
	keys := slices.SortedFunc(maps.Keys(f.tables), func(a, b fakeTableKey) int {
		return cmp.Or(cmp.Compare(a.fam, b.fam), cmp.Compare(a.name, b.name))
	})
	var b strings.Builder
	for _, k := range keys {
		t := f.tables[k]
		v := nftView{family: famName(k.fam), table: k.name}
		for _, s := range t.sets {
			v.sets = append(v.sets, viewSet(&s.set, s.elems))
		}
		for _, c := range t.chains {
			var rules [][]expr.Any
			for _, r := range c.rules {
				rules = append(rules, r.Exprs)
			}
			v.chains = append(v.chains, viewChain(&c.chain, rules))
		}
		b.WriteString(v.sorted().String())
	}
	return b.String()
}
