// Package diagnose implements `kubectl mcnet diagnose`: the cobra command, its flags
// and the order in which the checks of internal/diagnose run. The checks themselves,
// their codes (MCN1001...) and hints live in internal/diagnose, so they can be tested
// without a command line.
//
// Diagnose reads each cluster once (an inspect.Snapshot) and runs every check on the
// snapshot, so a check never sees a cluster change half-way through the report.
package diagnose

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/mcnet-io/mcnet/internal/cli/clioptions"
	"github.com/mcnet-io/mcnet/internal/cmdutil"
	"github.com/mcnet-io/mcnet/internal/diagnose"
	"github.com/mcnet-io/mcnet/internal/inspect"
	"github.com/mcnet-io/mcnet/internal/multicluster"
	"github.com/mcnet-io/mcnet/internal/output"
	"github.com/mcnet-io/mcnet/internal/version"
	"github.com/mcnet-io/mcnet/kustomize"
)

// Options are the flags and state of diagnose.
type Options struct {
	// Clusters selects the contexts to check (--contexts, --fleet).
	Clusters multicluster.Options
	// Print is -o; the default prints one line per check.
	Print *clioptions.PrintFlags
	// Offline checks only files, so a fleet can be checked in CI before any
	// cluster exists.
	Offline bool
	// FleetFile is checked as render would check it, and compared with the
	// tree in RepoDir when both are given (is the tree up to date?).
	FleetFile string
	// RepoDir is a rendered tree: built offline, compared with the live
	// objects online (drift).
	RepoDir string
	// Probe lets the checks ask the agents for measurements (path MTU, cable
	// port, broker reachability): slower, but the only way to see a firewall.
	Probe bool
	// AgentTimeout bounds the wait for an agent to pick a probe up.
	AgentTimeout time.Duration

	// flags are the root's kubeconfig flags, shared by every verb.
	flags   *genericclioptions.ConfigFlags
	flagErr error // a kubeconfig flag that cannot apply, reported by Validate
	// targets are the clusters Run resolved from the kubeconfig, in the order
	// of --contexts (or of the kubeconfig); empty offline.
	targets []*multicluster.Target
	getenv  func(string) string // os.Getenv, replaced in tests
	now     func() time.Time    // time.Now, replaced in tests of stale status
	genericiooptions.IOStreams
}

// NewCommand returns the diagnose command. flags are the root's kubeconfig flags:
// every one of them applies online except -n, and none offline (Complete says so
// rather than ignoring them).
func NewCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{flags: flags, IOStreams: streams, getenv: os.Getenv, now: time.Now, Print: clioptions.NewPrintFlags(clioptions.Table)}
	cmd := &cobra.Command{
		Use:   "diagnose",
		Short: "Check clusters, tunnels, broker, DNS and the GitOps tree; say what is wrong and what to do",
		Long: `Diagnose runs checks grouped by area and prints one line per check. Each finding
has a stable code (MCN1001...) documented in docs/diagnose.md, and a hint.

Online (the default), it reads every cluster with mcnet in the kubeconfig (or
--contexts) in parallel and checks components, broker credentials, networks,
gateways, each tunnel, the cable port and path MTU (measured by the gateways
through NetworkTest objects), whether each cluster reaches the broker (a TCP
connection from the controller's node; --probe=false skips the measurements), CNI and kube-proxy,
version skew and DNS forwarding. With --repo DIR it also builds every kustomization
of the rendered tree and compares it with the live objects (drift).

--offline checks a fleet file (-f) and/or a rendered tree (--repo) with no cluster.

-o json|yaml prints a DiagnoseReport document (apiVersion mcnet.io/v1alpha1), which
-o jsonpath=... and -o go-template=... read too; -o name prints the clusters that
have a failed check. Diagnose checks whole clusters, so -n does not apply.

Exit codes: 0 no failed check (warnings allowed), 1 a check failed, 2 bad usage or a
cluster could not be reached.`,
		Example: `  # Check every cluster with mcnet in the kubeconfig
  kubectl mcnet diagnose

  # Check a fleet file and its rendered tree before committing
  kubectl mcnet diagnose --offline -f fleet.yaml --repo ./fleet-repo

  # Drift between Git and two clusters, as JSON
  kubectl mcnet diagnose --contexts east,west --repo ./fleet-repo -o json

  # The codes of the failed checks only
  kubectl mcnet diagnose -o jsonpath='{range .checks[?(@.result=="fail")]}{.code} {.cluster}{"\n"}{end}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(cmd); err != nil {
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
	f := cmd.Flags()
	f.BoolVar(&o.Offline, "offline", false, "Check only the fleet file and/or rendered tree; contact no cluster")
	f.StringVarP(&o.FleetFile, "filename", "f", "", "Fleet file to check")
	f.StringVar(&o.RepoDir, "repo", "", "Rendered tree (kubectl mcnet render --out) to build and compare with the live objects")
	f.BoolVar(&o.Probe, "probe", true, "Ask the agents to measure path MTU, cable port and broker reachability")
	f.DurationVar(&o.AgentTimeout, "agent-timeout", 15*time.Second, "How long to wait for an agent to start a probe")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml")
	_ = cmd.MarkFlagDirname("repo")
	return cmd
}

// Complete records which root flags were given: offline, no kubeconfig flag applies,
// and -n never does. It never fails itself: a refused flag is kept in flagErr and
// returned by Validate, so every usage error comes from one place.
func (o *Options) Complete(cmd *cobra.Command) error {
	why := "diagnose checks whole clusters, not one namespace"
	allow := []string{}
	for _, n := range clioptions.KubeconfigFlags() {
		if n != "namespace" {
			allow = append(allow, n)
		}
	}
	if o.Offline {
		why, allow = "--offline contacts no cluster", nil
	}
	o.flagErr = clioptions.RejectKubeconfigFlags(cmd, why, allow...)
	return nil
}

// Validate checks the flags before any cluster is contacted. Its errors are usage
// errors (exit code 2): a refused kubeconfig flag, a bad -o or template, a
// non-positive --agent-timeout, --offline with nothing to check, or a --contexts or
// --fleet selection that the kubeconfig cannot satisfy.
func (o *Options) Validate() error {
	if o.flagErr != nil {
		return o.flagErr
	}
	if err := o.Print.Validate(); err != nil {
		return err
	}
	if o.AgentTimeout <= 0 {
		return cmdutil.Usage(fmt.Errorf("--agent-timeout %s: use a positive duration", o.AgentTimeout))
	}
	if o.Offline {
		if o.FleetFile == "" && o.RepoDir == "" {
			return cmdutil.Usage(errors.New("--offline needs -f FLEET and/or --repo DIR"))
		}
		return nil
	}
	return o.Clusters.Validate(o.flags)
}

// Run runs the checks and prints the report. The files come first (the fleet file,
// then the rendered tree, and whether the tree is what the fleet renders to today),
// then, online, the clusters. It returns an ExitError: code 2 when a cluster could
// not be reached, 1 when a check failed, nil when only warnings (or nothing) came up.
func (o *Options) Run(ctx context.Context) error {
	if !o.Offline {
		var err error
		if o.targets, err = o.Clusters.Resolve(ctx, o.flags); err != nil {
			return err
		}
	}
	rep := &diagnose.Report{TypeMeta: output.Meta(diagnose.Kind), PluginVersion: version.Version}
	spin := output.StartSpinner(o.ErrOut, o.getenv, "checking")
	// The files first: the tree they yield feeds the online drift checks.
	// A tree is compared with a fresh render of the fleet only when the fleet
	// itself is valid; otherwise the fleet's own findings say why.
	var tree *diagnose.Tree
	if o.FleetFile != "" {
		cs, checks := diagnose.FleetFile(o.FleetFile)
		rep.Add(checks...)
		if cs != nil && o.RepoDir != "" {
			t, checks := diagnose.RenderedTree(o.RepoDir)
			rep.Add(checks...)
			tree = t
			if t != nil {
				rep.Add(diagnose.UpToDate(cs, t, kustomize.Options{Version: version.Version})...)
			}
		}
	}
	// A tree given without a fleet file is still built, so drift can be checked
	// against the live objects.
	if o.RepoDir != "" && tree == nil && o.FleetFile == "" {
		t, checks := diagnose.RenderedTree(o.RepoDir)
		rep.Add(checks...)
		tree = t
	}
	// The spinner writes to stderr, and only on a terminal without NO_COLOR, so
	// stdout carries nothing but the report.
	unreachable := 0
	if !o.Offline {
		unreachable = o.online(ctx, rep, tree, spin)
	}
	spin.Stop()
	// Checks arrive in whatever order the parallel reads finished; sorting makes
	// two runs over the same clusters print the same report.
	rep.Sort()
	// The report is printed whatever the outcome; the exit code then says
	// whether a cluster was out of reach (2) or a check failed (1).
	if o.Print.Default() {
		diagnose.Print(o.Out, output.StyleFor(o.Out, o.getenv), rep)
	} else if err := o.Print.Print(o.Out, rep); err != nil {
		return err
	}
	switch {
	case unreachable > 0:
		return &cmdutil.ExitError{Code: cmdutil.ExitUsage, Err: fmt.Errorf("%d of %d clusters could not be reached", unreachable, len(o.targets))}
	case rep.Summary.Fail > 0:
		return &cmdutil.ExitError{Code: cmdutil.ExitFindings, Err: fmt.Errorf("%d checks failed", rep.Summary.Fail)}
	}
	return nil
}

// online reads every target once, in parallel, then runs the per-cluster
// checks against those snapshots and the pairwise gateway probes. It returns
// how many clusters could not be read; each of those is a failed check too.
func (o *Options) online(ctx context.Context, rep *diagnose.Report, tree *diagnose.Tree, spin *output.Spinner) int {
	spin.Set(fmt.Sprintf("reading %d clusters", len(o.targets)))
	results := multicluster.Parallel(ctx, o.targets, o.Clusters.PerCluster(), func(ctx context.Context, t *multicluster.Target) (*inspect.Snapshot, error) {
		return inspect.Collect(ctx, t.Client, t.Kube, t.Context)
	})
	var snaps []*inspect.Snapshot
	var targets []*multicluster.Target
	unreachable := 0
	for i, r := range results {
		if r.Err != nil {
			unreachable++
			rep.Add(diagnose.Check{Area: "kubernetes", Name: "cluster is reachable", Result: diagnose.Fail, Code: "MCN1005",
				Cluster: o.targets[i].Context, Message: r.Err.Error(), Hint: diagnose.Catalog["MCN1005"].Hint})
			continue
		}
		snaps, targets = append(snaps, r.Value), append(targets, o.targets[i])
		rep.Clusters = append(rep.Clusters, r.Value.ClusterID)
	}
	// Every cluster's networks as each member sees them on the broker: the
	// datapath check of one cluster needs the others' CIDRs.
	var nets []diagnose.Network
	for _, s := range snaps {
		for _, c := range s.Clusters {
			nets = append(nets, diagnose.Network{Cluster: c.Spec.ClusterID, PodCIDRs: c.Spec.PodCIDRs, ServiceCIDRs: c.Spec.ServiceCIDRs})
		}
	}
	spin.Set(fmt.Sprintf("checking %d clusters", len(snaps)))
	// Checks of different clusters run at once and append to one report.
	var mu sync.Mutex
	add := func(cs []diagnose.Check) {
		mu.Lock()
		defer mu.Unlock()
		rep.Add(cs...)
	}
	// Fleet-wide checks compare the snapshots with each other: overlapping
	// networks, clusters that do not know each other, version skew.
	add(diagnose.Fleet(snaps, version.Version))
	per := make([]*multicluster.Target, len(snaps))
	copy(per, targets)
	// The broker namespace comes from the members' AgentConfigs; any member that
	// names one will do, since one fleet has one broker.
	brokerNS := ""
	for _, s := range snaps {
		if ns := s.Config.Broker.Namespace; ns != "" {
			brokerNS = ns
		}
	}
	// The broker is a namespace on one member's API server. The broker URL in a
	// member's config may be reachable only from inside the fleet, so each member's
	// broker token is tried through the connection this plugin already has to the
	// hosting member's API server.
	brokerHost := diagnose.BrokerHost(ctx, targets, brokerNS)
	multicluster.Parallel(ctx, per, o.Clusters.PerCluster(), func(ctx context.Context, t *multicluster.Target) (struct{}, error) {
		var s *inspect.Snapshot
		for i := range targets {
			if targets[i] == t {
				s = snaps[i]
			}
		}
		for _, p := range s.Problems {
			add([]diagnose.Check{{Area: "kubernetes", Name: "objects are readable", Result: diagnose.Warn, Code: "MCN1005", Cluster: s.ClusterID, Message: p, Hint: diagnose.Catalog["MCN1005"].Hint}})
		}
		add(diagnose.Install(s))
		// Without mcnet's controller the cluster is not a member yet: the install
		// check has said so, and every check below would only repeat it.
		if s.Controller == nil {
			return struct{}{}, nil
		}
		add(diagnose.Broker(ctx, t, s, brokerHost))
		if o.Probe {
			add(diagnose.BrokerFromCluster(ctx, t.Client, s, o.AgentTimeout))
		}
		add(diagnose.NodeCIDRs(s))
		add(diagnose.Allocation(s))
		add(diagnose.RemapKernel(s))
		add(diagnose.Gateways(s))
		add(diagnose.Connections(s, o.now()))
		// The datapath check asks whether this cluster routes every other
		// cluster's networks, so its own are left out.
		var remote []diagnose.Network
		for _, n := range nets {
			if n.Cluster != s.ClusterID {
				remote = append(remote, n)
			}
		}
		add(diagnose.Datapath(ctx, t.Client, s, dedupe(remote)))
		add(diagnose.DNS(ctx, t.Client, s))
		if tree != nil {
			add(diagnose.Drift(ctx, t.Client, s.ClusterID, tree))
		}
		return struct{}{}, nil
	})
	// Path MTU and the cable port can only be measured between two gateways, by the
	// agents on them: every ordered pair, since a NAT or a firewall may pass one
	// direction only.
	if o.Probe && len(snaps) > 1 {
		spin.Set("measuring path MTU and cable ports through the gateways")
		type pair struct{ a, b int }
		var pairs []pair
		for i := range snaps {
			for j := range snaps {
				if i != j && snaps[i].Controller != nil && snaps[j].Controller != nil {
					pairs = append(pairs, pair{i, j})
				}
			}
		}
		var wg sync.WaitGroup
		for _, p := range pairs {
			wg.Go(func() {
				// The agent gets AgentTimeout to pick the test up; the measurement
				// itself (MTU steps, port probes) needs well under 40 s more.
				pctx, cancel := context.WithTimeout(ctx, o.AgentTimeout+40*time.Second)
				defer cancel()
				add(diagnose.Probe(pctx, diagnose.Pair{A: snaps[p.a], B: snaps[p.b], ClientA: targets[p.a].Client, ClientB: targets[p.b].Client, AgentTimeout: o.AgentTimeout}))
			})
		}
		wg.Wait()
	}
	return unreachable
}

// dedupe keeps one entry per cluster: every member lists every other cluster,
// so the same network arrives once per snapshot.
func dedupe(nets []diagnose.Network) []diagnose.Network {
	seen := map[string]bool{}
	var out []diagnose.Network
	for _, n := range nets {
		if !seen[n.Cluster] {
			seen[n.Cluster] = true
			out = append(out, n)
		}
	}
	return out
}
