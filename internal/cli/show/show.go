// Package show implements `kubectl mcnet show`: what mcnet runs in each cluster.
//
// Show reads each cluster once into an inspect.Snapshot (in parallel), Build turns
// each snapshot into a ClusterView holding only the sections asked for, and the
// Report is printed as tables (Print) or through cli-runtime's printers (-o). Show
// judges nothing; diagnose is the verb that says what is wrong.
package show

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/mcnet-io/mcnet/internal/cli/clioptions"
	"github.com/mcnet-io/mcnet/internal/cmdutil"
	"github.com/mcnet-io/mcnet/internal/inspect"
	"github.com/mcnet-io/mcnet/internal/multicluster"
	"github.com/mcnet-io/mcnet/internal/output"
	"github.com/mcnet-io/mcnet/internal/version"
)

// Kind is the kind of show's JSON/YAML document.
const Kind = "ShowReport"

// Sections show can print, in the order "all" prints them.
var Sections = []string{"networks", "gateways", "connections", "endpoints", "services", "versions"}

// Options are the flags and state of show.
type Options struct {
	// Clusters selects the contexts to read (--contexts, --fleet).
	Clusters multicluster.Options
	// Print is -o; the default prints per-cluster tables.
	Print *clioptions.PrintFlags
	// Sections are the sections to print, from the arguments (default:
	// connections).
	Sections []string
	// Namespace is -n when given: the services section lists only that namespace's
	// exports and imports. The kubeconfig context's own namespace does not filter, as
	// show reads every cluster and a context's default would hide the rest.
	Namespace string

	// flags are the root's kubeconfig flags; show honours all of them.
	flags *genericclioptions.ConfigFlags
	// targets are the clusters Run resolved, in --contexts order.
	targets []*multicluster.Target
	getenv  func(string) string // os.Getenv, replaced in tests (NO_COLOR)
	genericiooptions.IOStreams
}

// NewCommand returns the show command.
func NewCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{flags: flags, IOStreams: streams, getenv: os.Getenv, Print: clioptions.NewPrintFlags(clioptions.Table)}
	cmd := &cobra.Command{
		Use:       "show [connections|endpoints|gateways|networks|services|versions|all]...",
		Short:     "Show gateways, connections, networks, services and versions of each cluster",
		ValidArgs: append(slices.Clone(Sections), "all"),
		Long: `Show reads mcnet's objects in every cluster (all kubeconfig contexts with mcnet
installed, or --contexts) in parallel and prints one block per cluster:

  networks     the cluster's pod and service CIDRs and those of the clusters it knows
  gateways     gateway nodes, which one is active, cable driver, version
  connections  each tunnel from the active gateway: state, NAT, RTT, loss, bytes
  endpoints    how each cluster's active gateway is reached (addresses, port, key)
  services     exported and imported services (Multi-Cluster Services API)
  versions     plugin, components and Kubernetes versions

Without arguments it shows connections. -o json|yaml prints a ShowReport document
(apiVersion mcnet.io/v1alpha1), which -o jsonpath=... and -o go-template=... read
too; -o name prints the clusters shown. -n NAMESPACE limits services to one
namespace.`,
		Example: `  # Connections of every cluster with mcnet in the kubeconfig
  kubectl mcnet show

  # Everything, for two clusters, as JSON
  kubectl mcnet show all --contexts east,west -o json

  # The status of each connection, one line per tunnel
  kubectl mcnet show -o jsonpath='{range .clusters[*].connections[*]}{.gateway} {.remote} {.status}{"\n"}{end}'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.Clusters.AddFlags(cmd.Flags())
	o.Print.AddFlags(cmd)
	return cmd
}

// Complete parses the sections and takes -n from the root's flags. It fails with a
// usage error (exit code 2) on an unknown section.
func (o *Options) Complete(args []string) error {
	sections, err := ParseSections(args)
	if err != nil {
		return err
	}
	o.Sections = sections
	if o.flags.Namespace != nil {
		o.Namespace = *o.flags.Namespace
	}
	return nil
}

// Validate checks -o and the cluster flags before any cluster is contacted.
func (o *Options) Validate() error {
	if err := o.Print.Validate(); err != nil {
		return err
	}
	return o.Clusters.Validate(o.flags)
}

// ParseSections turns arguments into the sections to print, in the order given:
// none means connections, "all" every section, and a section may be named in the
// singular (gateway for gateways) or in any case. An unknown name is a usage error
// listing the valid ones.
func ParseSections(args []string) ([]string, error) {
	if len(args) == 0 {
		return []string{"connections"}, nil
	}
	var out []string
	for _, a := range args {
		a = strings.ToLower(a)
		switch {
		case a == "all":
			return slices.Clone(Sections), nil
		case slices.Contains(Sections, a):
			out = append(out, a)
		case slices.Contains(Sections, a+"s"):
			out = append(out, a+"s")
		default:
			return nil, cmdutil.Usage(fmt.Errorf("unknown section %q; use one of %s or all", a, strings.Join(Sections, ", ")))
		}
	}
	return out, nil
}

// Run collects and prints. A cluster that cannot be read makes the exit code 2 after
// the others are printed.
func (o *Options) Run(ctx context.Context) error {
	var err error
	if o.targets, err = o.Clusters.Resolve(ctx, o.flags); err != nil {
		return err
	}
	spin := output.StartSpinner(o.ErrOut, o.getenv, fmt.Sprintf("reading %d clusters", len(o.targets)))
	results := multicluster.Parallel(ctx, o.targets, o.Clusters.PerCluster(), func(ctx context.Context, t *multicluster.Target) (*inspect.Snapshot, error) {
		return inspect.Collect(ctx, t.Client, t.Kube, t.Context)
	})
	spin.Stop()
	rep := Report{TypeMeta: output.Meta(Kind), PluginVersion: version.Version, Sections: o.Sections}
	failed := 0
	for i, r := range results {
		if r.Err != nil {
			failed++
			rep.Clusters = append(rep.Clusters, ClusterView{Context: o.targets[i].Context, Error: r.Err.Error()})
			continue
		}
		rep.Clusters = append(rep.Clusters, Build(r.Value, o.Sections))
	}
	// -n filters after the read, so the other sections still show the whole
	// cluster.
	rep.InNamespace(o.Namespace)
	if o.Print.Default() {
		err = Print(o.Out, output.StyleFor(o.Out, o.getenv), &rep)
	} else {
		err = o.Print.Print(o.Out, &rep)
	}
	if err != nil {
		return err
	}
	if failed > 0 {
		return &cmdutil.ExitError{Code: cmdutil.ExitUsage, Err: fmt.Errorf("%d of %d clusters could not be read", failed, len(o.targets))}
	}
	return nil
}
