package iptwrapper

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDetect(t *testing.T) {
	const (
		hint    = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
		canary  = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"
		empty   = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
		rules3  = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUT -j DROP\n-A FORWARD -j ACCEPT\nCOMMIT\n"
		oneRule = "*nat\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n"
	)
	type out struct {
		s   string
		err error
	}
	broken := out{"", errors.New("can't initialize iptables table")}
	for _, tc := range []struct {
		name string
		env  string
		// save outputs by family/mode/"mangle" or "all"
		outs map[string]out
		want Mode
	}{
		{"forced legacy", "legacy", nil, Legacy},
		{"forced nft", "nft", map[string]out{"iptables/legacy/mangle": {hint, nil}}, NFT},
		{"kubelet hint in nft", "", map[string]out{"iptables/nft/mangle": {hint, nil}, "iptables/legacy/all": {rules3, nil}}, NFT},
		{"kubelet hint in legacy", "", map[string]out{"iptables/legacy/mangle": {hint, nil}, "iptables/nft/all": {rules3, nil}}, Legacy},
		{"kubelet canary in legacy", "", map[string]out{"iptables/legacy/mangle": {canary, nil}}, Legacy},
		{"more rules in legacy", "", map[string]out{"iptables/legacy/all": {rules3, nil}, "iptables/nft/all": {oneRule, nil}}, Legacy},
		{"ipv6 rules count too", "", map[string]out{"ip6tables/legacy/all": {rules3, nil}, "iptables/nft/all": {oneRule, nil}}, Legacy},
		{"more rules in nft", "", map[string]out{"iptables/legacy/all": {oneRule, nil}, "iptables/nft/all": {rules3, nil}}, NFT},
		{"no rules anywhere", "", map[string]out{"iptables/legacy/all": {empty, nil}, "iptables/nft/all": {empty, nil}}, NFT},
		{"legacy unusable", "", map[string]out{"iptables/legacy/mangle": broken, "iptables/legacy/all": broken, "iptables/nft/all": {empty, nil}}, NFT},
		{"nft unusable", "", map[string]out{"iptables/nft/all": {rules3, errors.New("no nf_tables")}, "iptables/legacy/all": {oneRule, nil}}, Legacy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			save := func(_ context.Context, family string, mode Mode, args ...string) (string, error) {
				what := "all"
				if len(args) == 2 && args[0] == "-t" && args[1] == "mangle" {
					what = "mangle"
				}
				o := tc.outs[family+"/"+string(mode)+"/"+what]
				return o.s, o.err
			}
			env := func(k string) string {
				if k == EnvMode {
					return tc.env
				}
				return ""
			}
			got, err := Detect(t.Context(), env, save)
			if err != nil || got != tc.want {
				t.Errorf("Detect = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := Detect(t.Context(), func(string) string { return "nftables" }, nil); err == nil {
		t.Errorf("%s=nftables: no error, want one naming the valid modes", EnvMode)
	}
}

func TestTarget(t *testing.T) {
	for name, want := range map[string][2]string{
		"iptables":          {"xtables-nft-multi", "iptables-nft"},
		"ip6tables-save":    {"xtables-nft-multi", "ip6tables-nft-save"},
		"iptables-restore":  {"xtables-nft-multi", "iptables-nft-restore"},
		"ip6tables-restore": {"xtables-nft-multi", "ip6tables-nft-restore"},
	} {
		bin, argv0, err := Target(name, NFT)
		if err != nil || bin != want[0] || argv0 != want[1] {
			t.Errorf("Target(%s, nft) = %s, %s, %v; want %s, %s", name, bin, argv0, err, want[0], want[1])
		}
	}
	if bin, argv0, _ := Target("ip6tables", Legacy); bin != "xtables-legacy-multi" || argv0 != "ip6tables-legacy" {
		t.Errorf("Target(ip6tables, legacy) = %s, %s", bin, argv0)
	}
	for _, bad := range []string{"ebtables", "iptables-apply", "iptables-wrapper", "sh"} {
		if _, _, err := Target(bad, NFT); err == nil {
			t.Errorf("Target(%s): no error", bad)
		}
	}
}

// TestRelink replaces the links to the wrapper with links to the backend, and fails
// cleanly where the directory cannot be written.
func TestRelink(t *testing.T) {
	dir := t.TempDir()
	for _, c := range Commands {
		if err := os.Symlink("iptables-wrapper", filepath.Join(dir, c)); err != nil {
			t.Fatal(err)
		}
	}
	if err := Relink(dir, Legacy); err != nil {
		t.Fatal(err)
	}
	for _, c := range Commands {
		if got, err := os.Readlink(filepath.Join(dir, c)); err != nil || got != "xtables-legacy-multi" {
			t.Errorf("%s -> %q (%v), want xtables-legacy-multi", c, got, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(Commands) {
		t.Errorf("%d entries left in the directory, want %d (no temporary links)", len(entries), len(Commands))
	}
	if err := Relink(filepath.Join(dir, "missing"), NFT); err == nil {
		t.Error("Relink into a missing directory: no error")
	}
}
