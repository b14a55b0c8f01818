// Package show implements `kubectl mcnet show`: what mcnet runs in each cluster.
package show

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
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
	Clusters multicluster.Options
	Print    *clioptions.PrintFlags
	Sections []string
	// Namespace is -n when given: the services section lists only that namespace's
	// exports and imports. The kubeconfig context's own namespace does not filter, as
	// show reads every cluster and a context's default would hide the rest.
	Namespace string

	flags   *genericclioptions.ConfigFlags
	targets []*multicluster.Target
	getenv  func(string) string
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

// Complete parses the sections and takes -n from the root's flags.
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

// ParseSections turns arguments into the sections to print.
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

// Report is show's document.
type Report struct {
	output.TypeMeta `json:",inline"`
	PluginVersion   string        `json:"pluginVersion"`
	Sections        []string      `json:"sections"`
	Clusters        []ClusterView `json:"clusters"`
}

// ClusterView is one cluster's block.
type ClusterView struct {
	Context     string           `json:"context"`
	Cluster     string           `json:"cluster,omitempty"`
	Error       string           `json:"error,omitempty"`
	Problems    []string         `json:"problems,omitempty"`
	Networks    []NetworkView    `json:"networks,omitempty"`
	Gateways    []GatewayView    `json:"gateways,omitempty"`
	Connections []ConnectionView `json:"connections,omitempty"`
	Endpoints   []EndpointView   `json:"endpoints,omitempty"`
	Services    *ServicesView    `json:"services,omitempty"`
	Versions    *VersionsView    `json:"versions,omitempty"`
}

// NetworkView is one cluster's networks as this cluster knows them.
type NetworkView struct {
	Cluster      string   `json:"cluster"`
	Local        bool     `json:"local"`
	PodCIDRs     []string `json:"podCIDRs"`
	ServiceCIDRs []string `json:"serviceCIDRs"`
	Cable        string   `json:"cable"`
	Version      string   `json:"version,omitempty"`
}

// GatewayView is one gateway node.
type GatewayView struct {
	Node      string `json:"node"`
	HA        string `json:"haStatus"`
	Cable     string `json:"cable,omitempty"`
	Version   string `json:"version,omitempty"`
	Ready     string `json:"ready"`
	Connected int    `json:"connected"`
	Remotes   int    `json:"remotes"`
	Labelled  bool   `json:"labelled"`
}

// ConnectionView is one tunnel from the active gateway.
type ConnectionView struct {
	Gateway     string  `json:"gateway"`
	Remote      string  `json:"remote"`
	Status      string  `json:"status"`
	Cable       string  `json:"cable,omitempty"`
	Port        int32   `json:"port,omitempty"`
	RemoteNode  string  `json:"remoteGateway,omitempty"`
	UsingIP     string  `json:"usingIP,omitempty"`
	NAT         bool    `json:"nat"`
	RTTAvg      string  `json:"rttAvg,omitempty"`
	RTTMin      string  `json:"rttMin,omitempty"`
	RTTMax      string  `json:"rttMax,omitempty"`
	LossPercent int32   `json:"lossPercent"`
	RxBytes     int64   `json:"rxBytes"`
	TxBytes     int64   `json:"txBytes"`
	Since       *string `json:"since,omitempty"`
	Message     string  `json:"message,omitempty"`
}

// EndpointView is how one cluster's active gateway is reached.
type EndpointView struct {
	Cluster        string   `json:"cluster"`
	Gateway        string   `json:"gateway"`
	Cable          string   `json:"cable"`
	Port           int32    `json:"port"`
	PrivateIPs     []string `json:"privateIPs"`
	PublicIPs      []string `json:"publicIPs,omitempty"`
	HealthCheckIPs []string `json:"healthCheckIPs,omitempty"`
	PublicKey      string   `json:"publicKey,omitempty"`
	Subnets        []string `json:"subnets"`
}

// ServicesView lists exported and imported services.
type ServicesView struct {
	Exports []ExportView `json:"exports"`
	Imports []ImportView `json:"imports"`
}

// ExportView is one ServiceExport.
type ExportView struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Valid     string `json:"valid"`
	Conflict  string `json:"conflict"`
	Message   string `json:"message,omitempty"`
}

// ImportView is one ServiceImport.
type ImportView struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	IPs       []string `json:"ips,omitempty"`
	Ports     []string `json:"ports,omitempty"`
	Clusters  []string `json:"clusters,omitempty"`
}

// VersionsView lists versions.
type VersionsView struct {
	Kubernetes string            `json:"kubernetes"`
	Controller string            `json:"controller,omitempty"`
	Gateway    string            `json:"gateway,omitempty"`
	RouteAgent string            `json:"routeAgent,omitempty"`
	Announced  string            `json:"announced,omitempty"`
	Gateways   map[string]string `json:"gateways,omitempty"`
}

// Build turns a snapshot into the sections asked for.
func Build(s *inspect.Snapshot, sections []string) ClusterView {
	v := ClusterView{Context: s.Context, Cluster: s.ClusterID, Problems: s.Problems}
	for _, sec := range sections {
		switch sec {
		case "networks":
			for _, c := range s.Clusters {
				v.Networks = append(v.Networks, NetworkView{
					Cluster: c.Spec.ClusterID, Local: c.Spec.ClusterID == s.ClusterID,
					PodCIDRs: c.Spec.PodCIDRs, ServiceCIDRs: c.Spec.ServiceCIDRs,
					Cable: string(c.Spec.Cable), Version: c.Spec.Version,
				})
			}
		case "gateways":
			sel := s.GatewaySelector()
			for _, g := range s.Gateways {
				gv := GatewayView{Node: g.Name, HA: output.Dash(string(g.Status.HAStatus)), Cable: string(g.Status.Cable), Version: g.Status.Version, Ready: "Unknown", Remotes: len(g.Status.Connections)}
				if c := meta.FindStatusCondition(g.Status.Conditions, "Ready"); c != nil {
					gv.Ready = string(c.Status)
				}
				for _, c := range g.Status.Connections {
					if c.Status == mcnetv1.Connected {
						gv.Connected++
					}
				}
				if n := s.Node(g.Name); n != nil {
					gv.Labelled = inspect.Matches(n.Labels, sel)
				}
				v.Gateways = append(v.Gateways, gv)
			}
		case "connections":
			v.Connections = []ConnectionView{}
			for _, g := range s.ActiveGateways() {
				for _, c := range g.Status.Connections {
					v.Connections = append(v.Connections, connectionView(g.Name, c))
				}
			}
		case "endpoints":
			for _, e := range s.Endpoints {
				v.Endpoints = append(v.Endpoints, EndpointView{
					Cluster: e.Spec.ClusterID, Gateway: e.Spec.Hostname, Cable: string(e.Spec.Cable), Port: e.Spec.Port,
					PrivateIPs: e.Spec.PrivateIPs, PublicIPs: e.Spec.PublicIPs, HealthCheckIPs: e.Spec.HealthCheckIPs,
					PublicKey: e.Spec.PublicKey, Subnets: e.Spec.Subnets,
				})
			}
		case "services":
			v.Services = services(s)
		case "versions":
			v.Versions = versions(s)
		}
	}
	return v
}

func connectionView(gw string, c mcnetv1.Connection) ConnectionView {
	// The cable that runs, as the gateway reports it; the remote's published
	// preference is not the pair's driver.
	cv := ConnectionView{Gateway: gw, Remote: c.Cluster, Status: string(c.Status), Cable: string(c.Cable), Port: c.Port,
		UsingIP: c.UsingIP, NAT: c.NAT, LossPercent: c.LossPercent, RxBytes: c.RxBytes, TxBytes: c.TxBytes, Message: c.Message}
	if c.Endpoint != nil {
		cv.RemoteNode = c.Endpoint.Hostname
	}
	if c.RTT != nil {
		cv.RTTAvg, cv.RTTMin, cv.RTTMax = c.RTT.Avg.Duration.String(), c.RTT.Min.Duration.String(), c.RTT.Max.Duration.String()
	}
	if c.LastTransitionTime != nil {
		t := c.LastTransitionTime.UTC().Format(time.RFC3339)
		cv.Since = &t
	}
	return cv
}

func services(s *inspect.Snapshot) *ServicesView {
	sv := &ServicesView{Exports: []ExportView{}, Imports: []ImportView{}}
	for _, e := range s.Exports {
		ev := ExportView{Namespace: e.Namespace, Name: e.Name, Valid: "Unknown", Conflict: "Unknown"}
		if c := meta.FindStatusCondition(e.Status.Conditions, "Valid"); c != nil {
			ev.Valid = string(c.Status)
			if c.Status != "True" {
				ev.Message = c.Message
			}
		}
		if c := meta.FindStatusCondition(e.Status.Conditions, "Conflict"); c != nil {
			ev.Conflict = string(c.Status)
			if c.Status == "True" {
				ev.Message = c.Message
			}
		}
		sv.Exports = append(sv.Exports, ev)
	}
	for _, i := range s.Imports {
		iv := ImportView{Namespace: i.Namespace, Name: i.Name, Type: string(i.Spec.Type), IPs: i.Spec.IPs}
		for _, p := range i.Spec.Ports {
			iv.Ports = append(iv.Ports, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
		for _, c := range i.Status.Clusters {
			iv.Clusters = append(iv.Clusters, c.Cluster)
		}
		sv.Imports = append(sv.Imports, iv)
	}
	return sv
}

func versions(s *inspect.Snapshot) *VersionsView {
	v := &VersionsView{Kubernetes: s.ServerVersion, Gateways: map[string]string{}}
	if s.Controller != nil {
		v.Controller = inspect.Image(&s.Controller.Spec.Template.Spec)
	}
	if s.GatewayDS != nil {
		v.Gateway = inspect.Image(&s.GatewayDS.Spec.Template.Spec)
	}
	if s.RouteAgent != nil {
		v.RouteAgent = inspect.Image(&s.RouteAgent.Spec.Template.Spec)
	}
	if self := s.Self(); self != nil {
		v.Announced = self.Spec.Version
	}
	for _, g := range s.Gateways {
		if g.Status.Version != "" {
			v.Gateways[g.Name] = g.Status.Version
		}
	}
	return v
}

// Print writes the report as per-cluster blocks of tables.
func Print(w io.Writer, st output.Style, rep *Report) error {
	for i, c := range rep.Clusters {
		if i > 0 {
			fmt.Fprintln(w)
		}
		title := fmt.Sprintf("cluster %s (context %s)", output.Dash(c.Cluster), c.Context)
		fmt.Fprintln(w, st.Header(title))
		if c.Error != "" {
			fmt.Fprintf(w, "%s %s\n", st.Mark("fail"), st.Bad("cannot read: "+c.Error))
			continue
		}
		for _, p := range c.Problems {
			fmt.Fprintf(w, "%s %s\n", st.Mark("warn"), p)
		}
		for _, sec := range rep.Sections {
			printSection(w, st, sec, &c, rep.PluginVersion)
		}
	}
	return nil
}

func printSection(w io.Writer, st output.Style, sec string, c *ClusterView, plugin string) {
	tw := output.NewTable(w)
	defer tw.Flush()
	switch sec {
	case "networks":
		fmt.Fprintln(w, st.Bold("Networks"))
		fmt.Fprintln(tw, "  CLUSTER\tPOD CIDRS\tSERVICE CIDRS\tCABLE\tVERSION")
		for _, n := range c.Networks {
			name := n.Cluster
			if n.Local {
				name += " (local)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", name, strings.Join(n.PodCIDRs, ","), strings.Join(n.ServiceCIDRs, ","), output.Dash(n.Cable), output.Dash(n.Version))
		}
		if len(c.Networks) == 0 {
			fmt.Fprintln(tw, "  (no Cluster objects: is the controller running?)")
		}
	case "gateways":
		fmt.Fprintln(w, st.Bold("Gateways"))
		fmt.Fprintln(tw, "  NODE\tHA\tREADY\tCABLE\tCONNECTED\tLABELLED\tVERSION")
		for _, g := range c.Gateways {
			ha := g.HA
			if ha == string(mcnetv1.HAActive) {
				ha = st.Good(ha)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", g.Node, ha, g.Ready, output.Dash(g.Cable), g.Connected, g.Remotes, yesNo(g.Labelled), output.Dash(g.Version))
		}
		if len(c.Gateways) == 0 {
			fmt.Fprintln(tw, "  (no Gateway objects: no gateway node runs mcnet-gateway)")
		}
	case "connections":
		fmt.Fprintln(w, st.Bold("Connections"))
		fmt.Fprintln(tw, "  GATEWAY\tREMOTE\tSTATUS\tCABLE\tPORT\tREMOTE GATEWAY\tUSING IP\tNAT\tRTT AVG\tLOSS\tRX\tTX")
		for _, cn := range c.Connections {
			status := cn.Status
			switch mcnetv1.ConnectionStatus(cn.Status) {
			case mcnetv1.Connected:
				status = st.Good(status)
			case mcnetv1.ConnectionError:
				status = st.Bad(status)
			default:
				status = st.Warn(status)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d%%\t%s\t%s\n", cn.Gateway, cn.Remote, status, output.Dash(cn.Cable), port(cn.Port),
				output.Dash(cn.RemoteNode), output.Dash(cn.UsingIP), yesNo(cn.NAT), rtt(cn.RTTAvg), cn.LossPercent, output.Bytes(cn.RxBytes), output.Bytes(cn.TxBytes))
		}
		if len(c.Connections) == 0 {
			fmt.Fprintln(tw, "  (none: no active gateway reports connections)")
		}
		tw.Flush()
		for _, cn := range c.Connections {
			if cn.Message != "" && cn.Status != string(mcnetv1.Connected) {
				fmt.Fprintf(w, "  %s → %s: %s\n", cn.Gateway, cn.Remote, st.Faint(cn.Message))
			}
		}
	case "endpoints":
		fmt.Fprintln(w, st.Bold("Endpoints"))
		fmt.Fprintln(tw, "  CLUSTER\tGATEWAY\tCABLE\tPORT\tPRIVATE IPS\tPUBLIC IPS\tHEALTH CHECK\tSUBNETS")
		for _, e := range c.Endpoints {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", e.Cluster, e.Gateway, e.Cable, e.Port, strings.Join(e.PrivateIPs, ","),
				output.Dash(strings.Join(e.PublicIPs, ",")), output.Dash(strings.Join(e.HealthCheckIPs, ",")), strings.Join(e.Subnets, ","))
		}
		if len(c.Endpoints) == 0 {
			fmt.Fprintln(tw, "  (no Endpoint objects)")
		}
	case "services":
		fmt.Fprintln(w, st.Bold("Exported services"))
		fmt.Fprintln(tw, "  NAMESPACE\tNAME\tVALID\tCONFLICT\tMESSAGE")
		for _, e := range c.Services.Exports {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", e.Namespace, e.Name, e.Valid, e.Conflict, output.Dash(e.Message))
		}
		tw.Flush()
		fmt.Fprintln(w, st.Bold("Imported services"))
		fmt.Fprintln(tw, "  NAMESPACE\tNAME\tTYPE\tIPS\tPORTS\tCLUSTERS")
		for _, i := range c.Services.Imports {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", i.Namespace, i.Name, i.Type, output.Dash(strings.Join(i.IPs, ",")), output.Dash(strings.Join(i.Ports, ",")), output.Dash(strings.Join(i.Clusters, ",")))
		}
	case "versions":
		v := c.Versions
		fmt.Fprintln(w, st.Bold("Versions"))
		fmt.Fprintf(tw, "  plugin\t%s\n", plugin)
		fmt.Fprintf(tw, "  kubernetes\t%s\n", output.Dash(v.Kubernetes))
		fmt.Fprintf(tw, "  controller image\t%s\n", output.Dash(v.Controller))
		fmt.Fprintf(tw, "  gateway image\t%s\n", output.Dash(v.Gateway))
		fmt.Fprintf(tw, "  route agent image\t%s\n", output.Dash(v.RouteAgent))
		fmt.Fprintf(tw, "  announced (Cluster)\t%s\n", output.Dash(v.Announced))
		nodes := make([]string, 0, len(v.Gateways))
		for n := range v.Gateways {
			nodes = append(nodes, n)
		}
		slices.Sort(nodes)
		for _, n := range nodes {
			fmt.Fprintf(tw, "  gateway %s\t%s\n", n, v.Gateways[n])
		}
	}
}

func rtt(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return "-"
	}
	return output.Duration(d)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// port prints a UDP port, or a dash when none is known.
func port(p int32) string {
	if p == 0 {
		return "-"
	}
	return strconv.Itoa(int(p))
}
