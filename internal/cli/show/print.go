package show

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/output"
)

// Print writes the report as per-cluster blocks of tables, the default output of
// show: a header per cluster, then its read problems as warnings, then each section
// asked for. A cluster that could not be read gets one failed line instead. Style
// st adds colour only on a terminal. The error is always nil; it is there so Print
// can stand where a cli-runtime printer does.
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

// printSection prints one section of a cluster's block as an indented table.
// An empty section says why it may be empty, which is usually the finding.
func printSection(w io.Writer, st output.Style, sec string, c *ClusterView, plugin string) {
	// Section titles go straight to w and rows through tw, which aligns the
	// columns when flushed: a section with two tables flushes in between.
	tw := output.NewTable(w)
	defer tw.Flush()
	switch sec {
	case "networks":
		fmt.Fprintln(w, st.Bold("Networks"))
		// The globalnet columns only for a fleet that remaps someone.
		global := slices.ContainsFunc(c.Networks, func(n NetworkView) bool { return len(n.GlobalPodCIDRs) > 0 })
		if global {
			fmt.Fprintln(tw, "  CLUSTER\tPOD CIDRS\tSERVICE CIDRS\tGLOBAL PODS\tGLOBAL SERVICES\tCABLE\tVERSION")
		} else {
			fmt.Fprintln(tw, "  CLUSTER\tPOD CIDRS\tSERVICE CIDRS\tCABLE\tVERSION")
		}
		for _, n := range c.Networks {
			name := n.Cluster
			if n.Local {
				name += " (local)"
			}
			if global {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, strings.Join(n.PodCIDRs, ","), strings.Join(n.ServiceCIDRs, ","),
					output.Dash(strings.Join(n.GlobalPodCIDRs, ",")), output.Dash(strings.Join(n.GlobalServiceCIDRs, ",")), output.Dash(n.Cable), output.Dash(n.Version))
				continue
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
			// Green for the active gateway; red, with the stale claim beside it,
			// for a gateway whose status expired (its process is not running).
			ha := g.HA
			switch {
			case ha == string(mcnetv1.HAActive):
				ha = st.Good(ha)
			case g.Expired:
				ha = st.Bad(ha + " (says " + g.ReportedHA + ")")
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
			// connecting (yellow) is the normal state of a new cable for a few
			// probes; error (red) needs a look at the message below the table.
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
		// Messages of tunnels that are not up go below the table: too long
		// for a column, and the reason is what the reader is looking for.
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
		// Two tables: what this cluster exports, with the MCS conditions that
		// say whether the export was accepted, and what it imports from the set.
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
		// Rows rather than columns: the versions differ per component, and a
		// rollout in progress shows as images that do not match the announced
		// version or the gateways' own.
		v := c.Versions
		fmt.Fprintln(w, st.Bold("Versions"))
		fmt.Fprintf(tw, "  plugin\t%s\n", plugin)
		fmt.Fprintf(tw, "  kubernetes\t%s\n", output.Dash(v.Kubernetes))
		fmt.Fprintf(tw, "  controller image\t%s\n", output.Dash(v.Controller))
		fmt.Fprintf(tw, "  gateway image\t%s\n", output.Dash(v.Gateway))
		fmt.Fprintf(tw, "  route agent image\t%s\n", output.Dash(v.RouteAgent))
		fmt.Fprintf(tw, "  announced (Cluster)\t%s\n", output.Dash(v.Announced))
		// Gateways by node name, so two runs print the same order.
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

// rtt prints a duration string compactly, or a dash when none was measured.
func rtt(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return "-"
	}
	return output.Duration(d)
}

// yesNo prints a flag column in words, which read better than true/false in a table.
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
