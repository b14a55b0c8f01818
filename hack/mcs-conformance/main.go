// Command mcs-conformance runs the MCS API conformance suite against clusters and prints
// its result table; `make conformance` drives it. See docs/conformance.md.
//
//	mcs-conformance run -suite BIN -kubeconfig FILE -contexts c0,c1[,c2] -out DIR [-label-filter EXPR]
//	mcs-conformance run -suite BIN -cluster c0=KUBECONFIG -cluster c1=KUBECONFIG ... -out DIR
//	mcs-conformance table DIR/report.json
//
// run exits 1 when a Required spec did not pass, 2 on a bad command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mcnet-io/mcnet/internal/conformance"
)

var errUsage = errors.New("usage: mcs-conformance run|table ... (see docs/conformance.md)")

// errRequired marks a run where a Required spec did not pass.
var errRequired = errors.New("not every Required spec passed")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "mcs-conformance:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "mcs-conformance:", err)
		os.Exit(1)
	}
}

// clusterFlags collects repeated -cluster name=kubeconfig flags in order.
type clusterFlags struct {
	order []string
	paths map[string]string
}

func (c *clusterFlags) String() string { return strings.Join(c.order, ",") }

func (c *clusterFlags) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("-cluster %q: want NAME=KUBECONFIG", v)
	}
	if c.paths == nil {
		c.paths = map[string]string{}
	}
	if _, dup := c.paths[name]; dup {
		return fmt.Errorf("-cluster %s given twice", name)
	}
	c.order, c.paths[name] = append(c.order, name), path
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "table":
		if len(args) != 2 {
			return errUsage
		}
		f, err := os.Open(args[1])
		if err != nil {
			return err
		}
		defer f.Close()
		specs, err := conformance.ReadReport(f)
		if err != nil {
			return err
		}
		return conformance.WriteTable(stdout, specs)
	case "run":
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	var o conformance.Options
	var contexts string
	var clusters clusterFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Suite, "suite", "", "the suite's test binary")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "one kubeconfig with a context per cluster")
	fs.StringVar(&contexts, "contexts", "", "comma-separated contexts of -kubeconfig; the first cluster exports")
	fs.Var(&clusters, "cluster", "NAME=KUBECONFIG, once per cluster (instead of -kubeconfig/-contexts); merged into DIR/kubeconfig")
	fs.StringVar(&o.OutDir, "out", "", "directory for the reports and the suite's log")
	fs.StringVar(&o.LabelFilter, "label-filter", "", "Ginkgo label filter, e.g. Required")
	fs.StringVar(&o.Domain, "dns-domain", "", "clusterset DNS domain (default: the suite's clusterset.local)")
	fs.StringVar(&o.Version, "mcnet-version", "", "mcnet version recorded in the suite's report")
	fs.DurationVar(&o.Timeout, "timeout", time.Hour, "bound on the whole run")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	switch {
	case len(clusters.order) > 0 && (o.Kubeconfig != "" || contexts != ""):
		return fmt.Errorf("%w: give -cluster or -kubeconfig with -contexts, not both", errUsage)
	case len(clusters.order) > 0:
		if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
			return err
		}
		o.Kubeconfig = filepath.Join(o.OutDir, conformance.Kubeconfig)
		if err := conformance.MergeKubeconfigs(o.Kubeconfig, clusters.paths, clusters.order); err != nil {
			return err
		}
		o.Contexts = clusters.order
	case contexts != "":
		o.Contexts = strings.Split(contexts, ",")
	}
	o.Progress = stderr
	specs, err := conformance.Run(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nMCS conformance with %d clusters (%s); reports in %s\n", len(o.Contexts), strings.Join(o.Contexts, ","), o.OutDir)
	if err := conformance.WriteTable(stdout, specs); err != nil {
		return err
	}
	if c := conformance.Counts(specs)[conformance.Required]; c.Passed < c.Total {
		return fmt.Errorf("%w (%d/%d)", errRequired, c.Passed, c.Total)
	}
	return nil
}
