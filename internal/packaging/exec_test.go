package packaging

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/mcnet-io/mcnet/internal/iptwrapper"
)

// execers are the packages in the in-cluster binaries that import os/exec, with the
// programs they run there; nil means they run nothing in a pod, and why.
var execers = map[string]struct {
	programs []string
	why      string
}{
	// The dataplane's packet filter used it before its nftables table; should it (or
	// anything using it) come back, the wrapped iptables commands are there.
	"github.com/coreos/go-iptables/iptables": {programs: iptwrapper.Commands, why: "iptables rules"},
	// client-go runs kubeconfig exec credential plugins; the components authenticate with
	// their service account and the broker kubeconfig's token, never a plugin.
	"k8s.io/client-go/plugin/pkg/client/auth/exec": {why: "kubeconfig exec plugins, unused in-cluster"},
	// gnostic's compiler runs OpenAPI extension plugins; client-go only parses documents.
	"github.com/google/gnostic-models/compiler": {why: "OpenAPI extension plugins, unused"},
}

// TestImageHoldsWhatComponentsExec lists every package of the in-cluster binaries that
// can exec a program and fails for one not in execers (decide what it runs, and put that
// in the image's Debian packages), and checks the image provides what the known ones run
// (the iptables commands, through the wrapper that picks the node's backend).
// TestContainerdRunsTheImages runs them in the built image.
func TestImageHoldsWhatComponentsExec(t *testing.T) {
	root := repoRoot(t)
	cmds, err := commands(root)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`}
	for _, c := range cmds {
		if c != pluginBinary {
			args = append(args, "./cmd/"+c)
		}
	}
	list := exec.CommandContext(t.Context(), "go", args...)
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var found []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && slices.Contains(f[1:], "os/exec") {
			found = append(found, f[0])
		}
	}
	if len(found) == 0 {
		t.Fatal("no package of the in-cluster binaries imports os/exec: client-go's exec credential plugin at least should (is go list's output read right?)")
	}
	provided := mcnetBase(nil).Alternatives
	for _, pkg := range found {
		e, ok := execers[pkg]
		if !ok {
			t.Errorf("%s imports os/exec: find what it runs in a pod, make the image provide it (MCNetPackages), and list it in execers", pkg)
			continue
		}
		for _, prog := range e.programs {
			if provided["/usr/sbin/"+prog] == "" {
				t.Errorf("%s runs %s (%s), which the image does not install in /usr/sbin", pkg, prog, e.why)
			}
		}
	}
	if !slices.Contains(MCNetPackages, "iptables") {
		t.Error("the image's Debian packages lack iptables, which the iptables wrapper runs")
	}
}
