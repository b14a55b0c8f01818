package dataplane

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// normalizeNFT turns the output of `nft list table <family> <table>` into nftView
// lines, so what the kernel holds (as nft itself decodes it) compares with what the
// fake kernel renders: priorities as numbers, counters without their values, set
// elements on one line.
func normalizeNFT(family, out string) (string, error) {
	var v nftView
	v.family = family
	var set *nftSetView
	var chain *nftChainView
	lines := strings.Split(out, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case l == "":
		case strings.HasPrefix(l, "table "):
			f := strings.Fields(l)
			if len(f) < 3 {
				return "", fmt.Errorf("nft: %q", l)
			}
			v.table = f[2]
		case strings.HasPrefix(l, "set ") && strings.HasSuffix(l, "{"):
			set = &nftSetView{name: strings.Fields(l)[1]}
		case strings.HasPrefix(l, "chain ") && strings.HasSuffix(l, "{"):
			chain = &nftChainView{name: strings.Fields(l)[1]}
		case l == "}":
			switch {
			case set != nil:
				slices.SortFunc(set.elems, compareElems)
				v.sets = append(v.sets, *set)
				set = nil
			case chain != nil:
				v.chains = append(v.chains, *chain)
				chain = nil
			}
		case set != nil && strings.HasPrefix(l, "type "):
			set.keyType = strings.TrimPrefix(l, "type ")
		case set != nil && l == "flags interval":
			set.interval = true
		case set != nil && strings.HasPrefix(l, "elements = {"):
			body := strings.TrimPrefix(l, "elements = {")
			for !strings.HasSuffix(body, "}") && i+1 < len(lines) {
				i++
				body += " " + strings.TrimSpace(lines[i])
			}
			for _, e := range strings.Split(strings.TrimSuffix(body, "}"), ",") {
				if e = strings.TrimSpace(e); e != "" {
					set.elems = append(set.elems, e)
				}
			}
		case chain != nil && strings.HasPrefix(l, "type "):
			// type filter hook input priority filter; policy accept;
			head, policy, _ := strings.Cut(strings.TrimSuffix(l, ";"), "; policy ")
			f := strings.Fields(head)
			if len(f) < 6 || f[2] != "hook" || f[4] != "priority" {
				return "", fmt.Errorf("nft chain header %q", l)
			}
			prio, err := parsePriority(strings.Join(f[5:], " "))
			if err != nil {
				return "", err
			}
			chain.base, chain.typ, chain.hook, chain.prio, chain.policy = true, f[1], f[3], prio, policy
		case chain != nil:
			f := strings.Fields(l)
			var rule []string
			for j := 0; j < len(f); j++ {
				rule = append(rule, f[j])
				if f[j] == "counter" && j+4 < len(f) && f[j+1] == "packets" && f[j+3] == "bytes" {
					j += 4
				}
			}
			chain.rules = append(chain.rules, strings.Join(rule, " "))
		default:
			return "", fmt.Errorf("nft: unexpected line %q", l)
		}
	}
	if v.table == "" {
		return "", nil
	}
	return v.sorted().String(), nil
}

// parsePriority reads nft's "filter", "srcnat - 10", "-150".
func parsePriority(s string) (int32, error) {
	names := map[string]int32{"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
	f := strings.Fields(s)
	var base int32
	if n, ok := names[f[0]]; ok {
		base = n
	} else {
		n, err := strconv.Atoi(f[0])
		if err != nil {
			return 0, fmt.Errorf("nft priority %q", s)
		}
		base = int32(n)
	}
	if len(f) == 3 {
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return 0, fmt.Errorf("nft priority %q", s)
		}
		if f[1] == "-" {
			n = -n
		}
		base += int32(n)
	}
	return base, nil
}
