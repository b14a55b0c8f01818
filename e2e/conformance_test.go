//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/internal/conformance"
)

// TestMCSConformance runs the upstream MCS API conformance suite, unmodified, against
// two and then three lab clusters with the fleet installed (the first cluster exports),
// and fails unless every Required spec passes. The suite is its own test binary (docs/conformance.md): MCS_CONFORMANCE
// names one, or hack/build-tools.sh mcs-conformance builds the pinned version into
// bin/. The Go module proxy these machines reach serves no version of it, so without a
// binary the test says so and skips: there is nothing of mcnet's to run instead.
// MCS_CONFORMANCE_LABELS, when set, is the suite's label filter (default: every spec).
func TestMCSConformance(t *testing.T) {
	suite := os.Getenv("MCS_CONFORMANCE")
	if suite == "" {
		root, err := lab.RepoRoot("")
		if err != nil {
			t.Fatal(err)
		}
		matches, _ := filepath.Glob(filepath.Join(root, "bin", "mcs-conformance", "*", "conformance.test"))
		if len(matches) == 0 {
			t.Skip("no MCS conformance suite binary: set MCS_CONFORMANCE=/path/to/conformance.test, or run hack/build-tools.sh mcs-conformance where the module proxy serves sigs.k8s.io/mcs-api/conformance")
		}
		suite = matches[len(matches)-1]
	}
	for _, drivers := range [][]mcnetv1.CableDriver{
		{mcnetv1.CableVXLAN, mcnetv1.CableWireGuard},
		{mcnetv1.CableVXLAN, mcnetv1.CableWireGuard, mcnetv1.CableVXLAN},
	} {
		t.Run(fmt.Sprintf("%d clusters", len(drivers)), func(t *testing.T) { runConformance(t, suite, drivers) })
	}
}

func runConformance(t *testing.T, suite string, drivers []mcnetv1.CableDriver) {
	ctx := t.Context()
	l := startConnected(t, connectFleet(drivers...), 2)
	var contexts []string
	for _, c := range l.Clusters() {
		contexts = append(contexts, c.Name)
		// The suite's pods resolve through each cluster's CoreDNS, which imports the
		// rendered server block; startClusterDNS checks both are there.
		startClusterDNS(t, l.Lab, c)
	}
	// Reports go where `make conformance` keeps them (MCS_CONFORMANCE_OUT/N-clusters),
	// else beside the lab's logs.
	out := filepath.Join(l.LogDir, "conformance")
	if dir := os.Getenv("MCS_CONFORMANCE_OUT"); dir != "" {
		out = filepath.Join(dir, fmt.Sprintf("%d-clusters", len(drivers)))
	}
	var progress strings.Builder
	specs, err := conformance.Run(ctx, conformance.Options{
		Suite:       suite,
		Kubeconfig:  l.Kubeconfig(),
		Contexts:    contexts,
		OutDir:      out,
		LabelFilter: os.Getenv("MCS_CONFORMANCE_LABELS"),
		Version:     "lab",
		Timeout:     40 * time.Minute,
		Progress:    &progress,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(progress.String(), 4000))
	}
	var table strings.Builder
	if err := conformance.WriteTable(&table, specs); err != nil {
		t.Fatal(err)
	}
	t.Logf("MCS conformance, %d clusters (reports in %s):\n%s", len(drivers), out, table.String())
	for _, s := range specs {
		if s.Outcome != conformance.Pass && s.Label == conformance.Required {
			t.Errorf("Required spec %q: %s %s", s.Name, s.Outcome, s.Message)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
