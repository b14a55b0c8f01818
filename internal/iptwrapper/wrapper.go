// Package iptwrapper picks the iptables backend — legacy (x_tables) or nft (nf_tables) —
// that the node a container runs on uses, and runs the iptables command the caller asked
// for in that mode. mcnet's image installs it as iptables, ip6tables and their -save and
// -restore variants, the way kube-proxy's images do, because a container cannot know from
// its own files which backend the node's kubelet, kube-proxy and CNI plugins write to,
// and rules written to the other backend are silently ignored by the node's ones (both
// are evaluated by the kernel, but chains like KUBE-FORWARD are in one of them).
//
// The choice, in order:
//  1. MCNET_IPTABLES_MODE=legacy or nft, when set (for a node whose state misleads 2-3);
//  2. the backend that holds the kubelet's hint chain KUBE-IPTABLES-HINT or its canary
//     KUBE-KUBELET-CANARY in the mangle table (kubelet creates them in the mode it uses);
//  3. the backend that holds more rules, IPv4 and IPv6 together;
//  4. nft, which Debian and most current distributions default to.
//
// Once decided, the wrapper points the iptables links at the chosen backend so that later
// calls run it directly; on a read-only root filesystem it decides again on every call.
package iptwrapper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Mode is an iptables backend.
type Mode string

const (
	// Legacy is the x_tables kernel interface (iptables-legacy).
	Legacy Mode = "legacy"
	// NFT is the nf_tables kernel interface through the iptables syntax (iptables-nft).
	NFT Mode = "nft"
)

// EnvMode names the environment variable that forces a mode.
const EnvMode = "MCNET_IPTABLES_MODE"

// hintChains are the chains the kubelet creates in the mangle table of the backend it
// uses (KUBE-IPTABLES-HINT exists for exactly this purpose; the canary is older).
var hintChains = []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"}

// Commands are the names the wrapper is installed as.
var Commands = []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"}

// Saver runs `<family>-<mode>-save [args]` and returns its output; family is iptables or
// ip6tables.
type Saver func(ctx context.Context, family string, mode Mode, args ...string) (string, error)

// Detect chooses the mode, as the package documentation describes. An unusable backend
// (its save command fails, e.g. because the kernel lacks it) counts as holding nothing.
func Detect(ctx context.Context, env func(string) string, save Saver) (Mode, error) {
	switch m := Mode(env(EnvMode)); m {
	case Legacy, NFT:
		return m, nil
	case "":
	default:
		return "", fmt.Errorf("%s=%q: want %q or %q", EnvMode, m, Legacy, NFT)
	}
	for _, mode := range []Mode{NFT, Legacy} {
		out, err := save(ctx, "iptables", mode, "-t", "mangle")
		if err != nil {
			continue
		}
		for _, c := range hintChains {
			if hasChain(out, c) {
				return mode, nil
			}
		}
	}
	count := map[Mode]int{}
	for _, mode := range []Mode{NFT, Legacy} {
		for _, family := range []string{"iptables", "ip6tables"} {
			if out, err := save(ctx, family, mode); err == nil {
				count[mode] += countRules(out)
			}
		}
	}
	if count[Legacy] > count[NFT] {
		return Legacy, nil
	}
	return NFT, nil
}

// hasChain reports whether iptables-save output declares chain (":NAME POLICY [p:b]").
func hasChain(save, chain string) bool {
	for _, l := range strings.Split(save, "\n") {
		if name, _, ok := strings.Cut(strings.TrimPrefix(l, ":"), " "); ok && strings.HasPrefix(l, ":") && name == chain {
			return true
		}
	}
	return false
}

// countRules counts the rules ("-A CHAIN ...") in iptables-save output.
func countRules(save string) int {
	n := 0
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, "-A ") {
			n++
		}
	}
	return n
}

// Target is the backend command that serves name ("ip6tables-save") in mode: the
// multi-call binary and the argv[0] that selects the command within it.
func Target(name string, mode Mode) (binary, argv0 string, err error) {
	family, verb, _ := strings.Cut(name, "-")
	if (family != "iptables" && family != "ip6tables") || (verb != "" && verb != "save" && verb != "restore") {
		return "", "", fmt.Errorf("iptables-wrapper runs as one of %s, not as %q", strings.Join(Commands, ", "), name)
	}
	argv0 = family + "-" + string(mode)
	if verb != "" {
		argv0 += "-" + verb
	}
	return "xtables-" + string(mode) + "-multi", argv0, nil
}

// Relink points each of Commands in dir at the multi-call binary of mode, replacing the
// links to the wrapper, each by an atomic rename so that a concurrent caller always finds
// one or the other. It stops at the first error (typically a read-only file system).
func Relink(dir string, mode Mode) error {
	for _, c := range Commands {
		bin, _, err := Target(c, mode)
		if err != nil {
			return err
		}
		tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d", c, os.Getpid()))
		_ = os.Remove(tmp)
		if err := os.Symlink(bin, tmp); err != nil {
			return fmt.Errorf("link %s to %s: %w", c, bin, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, c)); err != nil {
			return errors.Join(fmt.Errorf("link %s to %s: %w", c, bin, err), os.Remove(tmp))
		}
	}
	return nil
}
