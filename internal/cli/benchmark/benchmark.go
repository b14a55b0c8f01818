// Package benchmark implements `kubectl mcnet benchmark throughput|latency`.
//
// The plugin measures nothing itself: it creates a pair of NetworkTest objects, one in
// each cluster, and the agents already running on the chosen nodes (mcnet-gateway or
// mcnet-route-agent) serve and run the test and write the figures into the status.
// internal/netest drives one such pair; this package picks the pairs and the nodes,
// and prints the results.
package benchmark

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/cli/clioptions"
	"github.com/mcnet-io/mcnet/internal/cmdutil"
	"github.com/mcnet-io/mcnet/internal/inspect"
	"github.com/mcnet-io/mcnet/internal/multicluster"
	"github.com/mcnet-io/mcnet/internal/netest"
	"github.com/mcnet-io/mcnet/internal/output"
	"github.com/mcnet-io/mcnet/internal/version"
)

// Kind is the kind of benchmark's document.
const Kind = "BenchmarkReport"

// Options are the flags and state of benchmark.
type Options struct {
	// Clusters selects the contexts to measure between (--contexts, --fleet).
	Clusters multicluster.Options
	// Print is -o; the default prints the table.
	Print *clioptions.PrintFlags
	// Test is the positional argument, throughput or latency.
	Test mcnetv1.NetworkTestType
	// From and To narrow the ordered pairs to one client or server cluster.
	From, To string
	// Mode is gateway, worker or both: which nodes' agents run the test.
	Mode string
	// Duration and Streams shape a throughput run.
	Duration time.Duration
	Streams  int32
	// Count and Interval shape a latency run.
	Count    int32
	Interval time.Duration
	// AgentTimeout bounds the wait for an agent to pick a NetworkTest up, so a
	// cluster whose agents are down fails its pair instead of hanging the run.
	AgentTimeout time.Duration

	// flags are the root's kubeconfig flags; all but -n apply.
	flags   *genericclioptions.ConfigFlags
	flagErr error // a kubeconfig flag that cannot apply, reported by Validate
	// targets are the clusters Run resolved, one per kubeconfig context.
	targets []*multicluster.Target
	getenv  func(string) string // os.Getenv, replaced in tests (NO_COLOR, TERM)
	genericiooptions.IOStreams
}

// NewCommand returns the benchmark command. flags are the root's kubeconfig flags,
// which select and reach the clusters; the defaults (5 s, one stream, 100 echoes
// 20 ms apart) keep a run over a handful of clusters within a minute or two.
func NewCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{flags: flags, IOStreams: streams, getenv: os.Getenv, Print: clioptions.NewPrintFlags(clioptions.Table)}
	cmd := &cobra.Command{
		Use:       "benchmark throughput|latency",
		Short:     "Measure throughput or latency between clusters, gateway to gateway and worker to worker",
		ValidArgs: []string{"throughput", "latency"},
		Long: `Benchmark measures between every ordered pair of clusters (or --from/--to) through
the tunnels, the way pods' traffic crosses them. The agents already running on the
nodes do the measuring — mcnet-gateway on gateway nodes, mcnet-route-agent on workers —
asked through NetworkTest objects whose status carries the result; no pod or image
is added. throughput sends TCP streams (like iperf3) and reports Gbit/s at the
receiver; latency sends UDP echoes and reports RTT min/avg/p99/max and loss.

--mode gateway measures between the active gateways, worker between a non-gateway
node of each cluster, both does both.

-o json|yaml prints a BenchmarkReport document (apiVersion mcnet.io/v1alpha1), which
-o jsonpath=... and -o go-template=... read too; -o name prints the clusters
measured. The tests run in mcnet's own namespace, so -n does not apply.`,
		Example: `  # Throughput between every pair, gateways and workers
  kubectl mcnet benchmark throughput

  # Latency from east to west's active gateway, as JSON
  kubectl mcnet benchmark latency --from east --to west --mode gateway -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(cmd, args); err != nil {
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
	f.StringVar(&o.From, "from", "", "Client cluster (fleet name or context); default every cluster")
	f.StringVar(&o.To, "to", "", "Server cluster (fleet name or context); default every other cluster")
	f.StringVar(&o.Mode, "mode", "both", "gateway, worker or both")
	f.DurationVar(&o.Duration, "duration", 5*time.Second, "Throughput: how long each run sends")
	f.Int32Var(&o.Streams, "streams", 1, "Throughput: parallel TCP streams")
	f.Int32Var(&o.Count, "count", 100, "Latency: echoes per pair")
	f.DurationVar(&o.Interval, "interval", 20*time.Millisecond, "Latency: time between echoes")
	f.DurationVar(&o.AgentTimeout, "agent-timeout", 15*time.Second, "How long to wait for an agent to start a test")
	return cmd
}

// Complete parses the benchmark's name and notes a -n, which cannot apply. It fails
// (exit code 2) only on an unknown benchmark name; a refused flag waits in flagErr
// for Validate, so all usage errors are reported together.
func (o *Options) Complete(cmd *cobra.Command, args []string) error {
	// The short aliases are the names of the tools people know (iperf's
	// "tput", ping's "rtt").
	switch args[0] {
	case "throughput", "tput":
		o.Test = mcnetv1.TestThroughput
	case "latency", "rtt":
		o.Test = mcnetv1.TestLatency
	default:
		return cmdutil.Usage(fmt.Errorf("unknown benchmark %q; use throughput or latency", args[0]))
	}
	// Every kubeconfig flag applies except -n: NetworkTests live in mcnet's own
	// namespace, and silently ignoring a -n the user gave would mislead.
	var allow []string
	for _, n := range clioptions.KubeconfigFlags() {
		if n != "namespace" {
			allow = append(allow, n)
		}
	}
	o.flagErr = clioptions.RejectKubeconfigFlags(cmd, "the agents run NetworkTests in "+mcnetv1.SystemNamespace+" only", allow...)
	return nil
}

// Validate checks every flag at once, before any cluster is contacted, and returns
// every problem joined into one usage error (exit code 2), or nil.
func (o *Options) Validate() error {
	// Collect every problem, so one run names them all. The bounds mirror the
	// NetworkTest CRD's, which the API server would enforce anyway, but later
	// and per cluster.
	errs := []error{o.flagErr, o.Print.Validate(), o.Clusters.Validate(o.flags)}
	if !slices.Contains([]string{"gateway", "worker", "both"}, o.Mode) {
		errs = append(errs, fmt.Errorf("--mode %q: use gateway, worker or both", o.Mode))
	}
	if o.Streams < 1 || o.Streams > 64 {
		errs = append(errs, fmt.Errorf("--streams %d: use 1 to 64", o.Streams))
	}
	if o.Count < 1 {
		errs = append(errs, fmt.Errorf("--count %d: use at least 1", o.Count))
	}
	if o.Duration <= 0 || o.Duration > 2*time.Minute {
		errs = append(errs, fmt.Errorf("--duration %s: use more than 0 and at most 2m", o.Duration))
	}
	if o.Interval <= 0 || o.AgentTimeout <= 0 {
		errs = append(errs, errors.New("--interval and --agent-timeout must be positive"))
	}
	return cmdutil.Usage(errors.Join(errs...))
}

// Report is benchmark's document, printed by -o json|yaml|jsonpath|go-template as
// kind BenchmarkReport of mcnet.io/v1alpha1.
type Report struct {
	output.TypeMeta `json:",inline"`
	// PluginVersion is the version of the plugin that measured, to compare
	// figures across releases.
	PluginVersion string `json:"pluginVersion"`
	// Test is throughput or latency.
	Test string `json:"test"`
	// Results holds one entry per ordered pair and mode, in the order measured.
	Results []Result `json:"results"`
}

// DeepCopyObject makes the report a runtime.Object, which cli-runtime's printers take.
func (r *Report) DeepCopyObject() runtime.Object { return output.DeepCopyJSON(r) }

// Subjects are what -o name prints: the clusters measured, client side first.
func (r *Report) Subjects() []runtime.Object {
	var names []string
	for _, x := range r.Results {
		names = append(names, x.From, x.To)
	}
	return output.ClusterSubjects(names...)
}

// Result is one measured pair. Figures are pointers so that JSON leaves out
// what was not measured (a failed pair, or the other test's fields) rather than
// reporting zeros that look like measurements.
type Result struct {
	// From and To are the client and server clusters (their fleet names).
	From string `json:"from"`
	To   string `json:"to"`
	// Mode is gateway or worker: which nodes ran the test.
	Mode string `json:"mode"`
	// FromNode and ToNode are the nodes whose agents ran the client and the
	// server; empty when no node could be picked.
	FromNode string `json:"fromNode,omitempty"`
	ToNode   string `json:"toNode,omitempty"`
	// Gbps is the throughput at the receiver, summed over Streams.
	Gbps    *float64 `json:"gbps,omitempty"`
	Streams int32    `json:"streams,omitempty"`
	// The RTT figures are over the echoes that got a reply, in milliseconds.
	RTTMinMs *float64 `json:"rttMinMs,omitempty"`
	RTTAvgMs *float64 `json:"rttAvgMs,omitempty"`
	RTTP99Ms *float64 `json:"rttP99Ms,omitempty"`
	RTTMaxMs *float64 `json:"rttMaxMs,omitempty"`
	// LossPct is the share of echoes without a reply, 0 to 100.
	LossPct *float64 `json:"lossPercent,omitempty"`
	// Error says why the pair has no figures (or only partial ones); empty
	// when it succeeded.
	Error string `json:"error,omitempty"`
	// DurationMs is the wall time of the whole pair, agent pick-up included.
	DurationMs int64 `json:"durationMs,omitempty"`
}

// Run measures every pair, one at a time so runs do not share the path. A cluster
// that cannot be read ends the run before any test (exit code 2); a pair that fails
// is reported in its row and makes the exit code 1 once the whole table is printed.
func (o *Options) Run(ctx context.Context) error {
	var err error
	if o.targets, err = o.Clusters.Resolve(ctx, o.flags); err != nil {
		return err
	}
	// Snapshots of every cluster first, in parallel: the pairs need each
	// side's active gateway, endpoint addresses and nodes.
	spin := output.StartSpinner(o.ErrOut, o.getenv, "reading clusters")
	defer spin.Stop()
	results := multicluster.Parallel(ctx, o.targets, o.Clusters.PerCluster(), func(ctx context.Context, t *multicluster.Target) (*inspect.Snapshot, error) {
		return inspect.Collect(ctx, t.Client, t.Kube, t.Context)
	})
	var snaps []*inspect.Snapshot
	var clients []*multicluster.Target
	for i, r := range results {
		if r.Err != nil {
			spin.Stop()
			return &cmdutil.ExitError{Code: cmdutil.ExitUsage, Err: fmt.Errorf("context %s: %w", o.targets[i].Context, r.Err)}
		}
		snaps, clients = append(snaps, r.Value), append(clients, o.targets[i])
	}
	// --from/--to take a fleet cluster name or a kubeconfig context.
	match := func(s *inspect.Snapshot, name string) bool {
		return name == "" || s.ClusterID == name || s.Context == name
	}
	rep := Report{TypeMeta: output.Meta(Kind), PluginVersion: version.Version, Test: string(o.Test)}
	modes := []string{"gateway", "worker"}
	if o.Mode != "both" {
		modes = []string{o.Mode}
	}
	// Pairs run one after another, never at once: two throughput runs through the same
	// gateway would each measure half the path.
	for i, a := range snaps {
		for j, b := range snaps {
			if i == j || !match(a, o.From) || !match(b, o.To) {
				continue
			}
			for _, mode := range modes {
				spin.Set(fmt.Sprintf("%s %s → %s (%s)", o.Test, a.ClusterID, b.ClusterID, mode))
				rep.Results = append(rep.Results, o.measure(ctx, a, b, clients[i], clients[j], mode))
			}
		}
	}
	spin.Stop()
	// --from/--to naming no cluster (or the same one twice) leaves no pair.
	if len(rep.Results) == 0 {
		return cmdutil.Usage(errors.New("no pair of clusters matches --from/--to"))
	}
	if o.Print.Default() {
		Print(o.Out, output.StyleFor(o.Out, o.getenv), &rep)
	} else {
		err = o.Print.Print(o.Out, &rep)
	}
	if err != nil {
		return err
	}
	// A failed pair is a finding (exit 1), not a usage error: the report is
	// printed in full first so the failing pair can be read next to the rest.
	failed := 0
	for _, r := range rep.Results {
		if r.Error != "" {
			failed++
		}
	}
	if failed > 0 {
		return &cmdutil.ExitError{Code: cmdutil.ExitFindings, Err: fmt.Errorf("%d of %d measurements failed", failed, len(rep.Results))}
	}
	return nil
}

// measure runs one NetworkTest pair: the server agent in b listens, the client
// agent in a connects through the tunnel, and the result comes back in the
// NetworkTest's status. Errors are recorded in the Result, never returned, so
// one bad pair does not hide the others.
func (o *Options) measure(ctx context.Context, a, b *inspect.Snapshot, ta, tb *multicluster.Target, mode string) Result {
	res := Result{From: a.ClusterID, To: b.ClusterID, Mode: mode}
	server, cl, err := sides(a, b, mode)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	server.Client, cl.Client = tb.Client, ta.Client
	res.FromNode, res.ToNode = cl.Node, server.Node
	start := time.Now()
	st, err := netest.Run(ctx, server, cl, netest.Spec{Type: o.Test, Duration: o.Duration, Streams: o.Streams, Count: o.Count, Interval: o.Interval, AgentTimeout: o.AgentTimeout})
	res.DurationMs = time.Since(start).Milliseconds()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	// A test that did not succeed keeps whatever figures its status carries,
	// beside the message that says what went wrong.
	if st.Phase != mcnetv1.TestSucceeded {
		res.Error = st.Message
	}
	if t := st.Throughput; t != nil {
		g := float64(t.BitsPerSecond) / 1e9
		res.Gbps, res.Streams = &g, t.Streams
	}
	if l := st.Latency; l != nil && l.Received > 0 {
		ms := func(d time.Duration) *float64 { v := float64(d) / 1e6; return &v }
		res.RTTMinMs, res.RTTAvgMs, res.RTTP99Ms, res.RTTMaxMs = ms(l.Min.Duration), ms(l.Avg.Duration), ms(l.P99.Duration), ms(l.Max.Duration)
		// Loss is the share of echoes without a reply, not of bytes: the latency test
		// sends one small datagram per interval.
		loss := 100 * float64(l.Sent-l.Received) / float64(l.Sent)
		res.LossPct = &loss
	}
	return res
}

// sides picks the nodes: the active gateways, or a non-gateway node of each cluster.
// The server address is the gateway's health-check IP or, for workers, the node's
// address inside its cluster's pod CIDRs; the client sends from its own pod CIDRs so
// replies return through the tunnel.
func sides(a, b *inspect.Snapshot, mode string) (server, cl netest.Side, err error) {
	podCIDRs := func(s *inspect.Snapshot) []netip.Prefix {
		var out []netip.Prefix
		if self := s.Self(); self != nil {
			for _, c := range self.Spec.PodCIDRs {
				if p, err := netip.ParsePrefix(c); err == nil {
					out = append(out, p)
				}
			}
		}
		return out
	}
	if mode == "gateway" {
		// With zero or two active gateways the result would not say which
		// path it measured; refuse rather than guess.
		ga, gb := a.ActiveGateways(), b.ActiveGateways()
		if len(ga) != 1 || len(gb) != 1 {
			return server, cl, fmt.Errorf("needs exactly one active gateway in %s and %s", a.ClusterID, b.ClusterID)
		}
		// The remote's health-check IP is an address the tunnel routes, so
		// the client is preferred to reach the server there.
		var prefer []netip.Addr
		if ep := b.Endpoint(b.ClusterID); ep != nil {
			for _, s := range ep.Spec.HealthCheckIPs {
				if ip, err := netip.ParseAddr(s); err == nil {
					prefer = append(prefer, ip)
				}
			}
		}
		server = netest.Side{Node: gb[0].Name, Agent: mcnetv1.AgentGateway, Prefer: prefer, Within: podCIDRs(b)}
		cl = netest.Side{Node: ga[0].Name, Agent: mcnetv1.AgentGateway, Within: podCIDRs(a)}
		return server, cl, nil
	}
	wa, wb := worker(a), worker(b)
	if wa == "" || wb == "" {
		return server, cl, fmt.Errorf("needs a node without the gateway label in %s and %s", a.ClusterID, b.ClusterID)
	}
	server = netest.Side{Node: wb, Agent: mcnetv1.AgentRouteAgent, Within: podCIDRs(b)}
	cl = netest.Side{Node: wa, Agent: mcnetv1.AgentRouteAgent, Within: podCIDRs(a)}
	return server, cl, nil
}

// worker picks a schedulable node that cannot become a gateway, the first by
// name so repeated runs measure the same node.
func worker(s *inspect.Snapshot) string {
	sel := s.GatewaySelector()
	var names []string
	for _, n := range s.Nodes {
		if !inspect.Matches(n.Labels, sel) && n.Spec.Unschedulable == false {
			names = append(names, n.Name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// Print writes the results as a table: one row per pair and mode, with the columns
// of the report's test, and the error (on one line) in RESULT when the pair failed.
func Print(w io.Writer, st output.Style, r *Report) {
	tw := output.NewTable(w)
	defer tw.Flush()
	// f prints an unmeasured figure as "-", never as 0.
	f := func(p *float64, format string) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf(format, *p)
	}
	if r.Test == string(mcnetv1.TestThroughput) {
		fmt.Fprintln(tw, "FROM\tTO\tMODE\tFROM NODE\tTO NODE\tSTREAMS\tTHROUGHPUT\tRESULT")
	} else {
		fmt.Fprintln(tw, "FROM\tTO\tMODE\tFROM NODE\tTO NODE\tRTT MIN\tRTT AVG\tRTT P99\tLOSS\tRESULT")
	}
	for _, x := range r.Results {
		result := st.Good("ok")
		if x.Error != "" {
			result = st.Bad("error: " + strings.ReplaceAll(x.Error, "\n", " "))
		}
		if r.Test == string(mcnetv1.TestThroughput) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", x.From, x.To, x.Mode, output.Dash(x.FromNode), output.Dash(x.ToNode), x.Streams, f(x.Gbps, "%.2f Gbit/s"), result)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.From, x.To, x.Mode, output.Dash(x.FromNode), output.Dash(x.ToNode),
				f(x.RTTMinMs, "%.3f ms"), f(x.RTTAvgMs, "%.3f ms"), f(x.RTTP99Ms, "%.3f ms"), f(x.LossPct, "%.0f%%"), result)
		}
	}
}
