package diagnose

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/inspect"
	"github.com/mcnet-io/mcnet/internal/membership"
)

// ConnectingGrace is how long a connection may stay "connecting" before it is a
// finding rather than a tunnel being set up.
const ConnectingGrace = 30 * time.Second

// LossThreshold is the probe loss, in percent, above which a connected tunnel is
// reported.
const LossThreshold = 5

// Install checks that mcnet's components run.
func Install(s *inspect.Snapshot) []Check {
	id := s.ClusterID
	if id == "" {
		id = s.Context
	}
	if s.Controller == nil {
		return []Check{fail("MCN1001", id, "mcnet is installed", "Deployment mcnet-system/mcnet-controller not found")}
	}
	out := []Check{ok("kubernetes", id, "mcnet is installed")}
	if s.Controller.Status.AvailableReplicas < 1 {
		out = append(out, fail("MCN1002", id, "controller is available", "mcnet-controller has %d available replicas", s.Controller.Status.AvailableReplicas))
	} else {
		out = append(out, ok("kubernetes", id, "controller is available"))
	}
	for _, w := range []struct {
		ds   *inspectDS
		code string
		name string
	}{{dsOf(s.GatewayDS), "MCN1003", "gateway pods are ready"}, {dsOf(s.RouteAgent), "MCN1004", "route agent pods are ready"}} {
		switch {
		case w.ds == nil:
			out = append(out, fail(w.code, id, w.name, "DaemonSet not found"))
		case w.ds.ready < w.ds.desired:
			out = append(out, fail(w.code, id, w.name, "%d of %d pods ready", w.ds.ready, w.ds.desired))
		default:
			out = append(out, ok("kubernetes", id, w.name))
		}
	}
	return out
}

type inspectDS struct{ desired, ready int32 }

func dsOf(d *appsv1.DaemonSet) *inspectDS {
	if d == nil {
		return nil
	}
	return &inspectDS{d.Status.DesiredNumberScheduled, d.Status.NumberReady}
}

// Gateways checks gateway labels, the single active gateway and its Endpoint.
func Gateways(s *inspect.Snapshot) []Check {
	id := s.ClusterID
	var out []Check
	nodes := s.GatewayNodes()
	if len(nodes) == 0 {
		out = append(out, fail("MCN1301", id, "gateway nodes are labelled", "no node matches the gateway selector %s", selString(s.GatewaySelector())))
	} else {
		out = append(out, ok("gateways", id, fmt.Sprintf("gateway nodes are labelled (%d)", len(nodes))))
	}
	for i := range s.Gateways {
		g := &s.Gateways[i]
		if g.Status.HAStatus == mcnetv1.HAActive && s.Expired(g) {
			out = append(out, fail("MCN1307", id, "active gateways renew their heartbeat", "Gateway %s says active but its status expired at %s, %s before it was read (by this machine's clock)",
				g.Name, g.Status.ExpireTime.UTC().Format(time.RFC3339), s.GatewaysReadAt.Sub(g.Status.ExpireTime.Time).Round(time.Second)))
		}
	}
	active := s.ActiveGateways()
	switch len(active) {
	case 0:
		out = append(out, fail("MCN1302", id, "exactly one gateway is active", "no Gateway reports haStatus active (%d Gateway objects)", len(s.Gateways)))
	case 1:
		out = append(out, ok("gateways", id, "exactly one gateway is active ("+active[0].Name+")"))
	default:
		var names []string
		for _, g := range active {
			names = append(names, g.Name)
		}
		out = append(out, fail("MCN1303", id, "exactly one gateway is active", "%d gateways report active: %s", len(active), strings.Join(names, ", ")))
	}
	sel := s.GatewaySelector()
	for _, g := range active {
		if n := s.Node(g.Name); n != nil && !inspect.Matches(n.Labels, sel) {
			out = append(out, fail("MCN1304", id, "active gateway's node is labelled", "node %s runs the active gateway but does not match %s", g.Name, selString(sel)))
		}
	}
	for _, g := range s.Gateways {
		if g.Status.HAStatus != mcnetv1.HAPassive {
			continue
		}
		if c := meta.FindStatusCondition(g.Status.Conditions, mcnetv1.GatewayConditionActiveReachable); c != nil && c.Status == metav1.ConditionFalse {
			out = append(out, warn("MCN1306", id, "standbys reach the active gateway", "standby %s: %s", g.Name, c.Message))
		}
	}
	if len(active) == 1 {
		ep := s.Endpoint(id)
		switch {
		case ep == nil:
			out = append(out, fail("MCN1305", id, "Endpoint is published", "no Endpoint for cluster %s", id))
		case ep.Spec.Hostname != active[0].Name:
			out = append(out, fail("MCN1305", id, "Endpoint is published", "the Endpoint names gateway %s but %s is active", ep.Spec.Hostname, active[0].Name))
		default:
			out = append(out, ok("gateways", id, "Endpoint is published by the active gateway"))
		}
	}
	return out
}

// Connections checks every tunnel of the active gateway(s) against the clusters known.
func Connections(s *inspect.Snapshot, now time.Time) []Check {
	id := s.ClusterID
	var out []Check
	active := s.ActiveGateways()
	if len(active) == 0 {
		return []Check{skip("connections", id, "tunnels carry traffic", "no active gateway")}
	}
	g := active[0]
	have := map[string]mcnetv1.Connection{}
	for _, c := range g.Status.Connections {
		have[c.Cluster] = c
	}
	for _, cl := range s.Clusters {
		if cl.Spec.ClusterID == id {
			continue
		}
		name := fmt.Sprintf("tunnel to %s carries traffic", cl.Spec.ClusterID)
		c, found := have[cl.Spec.ClusterID]
		switch {
		case !found:
			out = append(out, fail("MCN1403", id, name, "gateway %s reports no connection to %s", g.Name, cl.Spec.ClusterID))
		case c.Status == mcnetv1.ConnectionError:
			out = append(out, fail("MCN1401", id, name, "%s", connMessage(c)))
		case c.Status == mcnetv1.Connecting:
			since := "since an unknown time"
			if c.LastTransitionTime != nil {
				if now.Sub(c.LastTransitionTime.Time) < ConnectingGrace {
					out = append(out, warn("MCN1402", id, name, "connecting for %s", now.Sub(c.LastTransitionTime.Time).Round(time.Second)))
					continue
				}
				since = "for " + now.Sub(c.LastTransitionTime.Time).Round(time.Second).String()
			}
			out = append(out, fail("MCN1402", id, name, "still connecting %s: %s", since, connMessage(c)))
		case c.LossPercent > LossThreshold:
			out = append(out, warn("MCN1404", id, name, "connected, but %d%% of probes to %s are lost", c.LossPercent, cl.Spec.ClusterID))
		default:
			rtt := ""
			if c.RTT != nil && c.RTT.Avg.Duration > 0 {
				rtt = fmt.Sprintf(" (rtt %s)", c.RTT.Avg.Duration.Round(10*time.Microsecond))
			}
			out = append(out, ok("connections", id, name+rtt))
		}
	}
	return out
}

func connMessage(c mcnetv1.Connection) string {
	if c.Message == "" {
		return string(c.Status)
	}
	return c.Message
}

// NodeCIDRs checks that nodes' pod CIDRs lie inside the announced pod CIDRs.
func NodeCIDRs(s *inspect.Snapshot) []Check {
	self := s.Self()
	if self == nil {
		return nil
	}
	var announced []netip.Prefix
	for _, c := range self.Spec.PodCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil {
			announced = append(announced, p.Masked())
		}
	}
	var bad []string
	for _, n := range s.Nodes {
		for _, c := range nodePodCIDRs(&n) {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				continue
			}
			inside := false
			for _, a := range announced {
				if a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
					inside = true
				}
			}
			if !inside {
				bad = append(bad, fmt.Sprintf("%s (%s)", n.Name, c))
			}
		}
	}
	if len(bad) > 0 {
		return []Check{fail("MCN1204", s.ClusterID, "nodes' pod CIDRs are announced", "outside %s: %s", strings.Join(self.Spec.PodCIDRs, ","), strings.Join(bad, ", "))}
	}
	return []Check{ok("networks", s.ClusterID, "nodes' pod CIDRs are announced")}
}

// Allocation names every remote cluster that publishes, in the Cluster and Endpoint
// objects this cluster received, something outside what the fleet table allocates to
// it, or that is not in the table at all: one finding per offending cluster.
func Allocation(s *inspect.Snapshot) []Check {
	const name = "remote clusters publish within their allocation"
	if s.Fleet == nil {
		return nil // no table to judge by; the components report that themselves
	}
	table, _ := membership.New(s.Fleet)
	var rej []membership.Rejection
	for _, c := range s.Clusters {
		id := c.Spec.ClusterID
		if id == s.ClusterID {
			continue
		}
		m, ok := table.Member(id)
		if !ok {
			rej = append(rej, table.NotMember(id, "Cluster "+c.Name))
			continue
		}
		_, r1 := m.Subnets("Cluster "+c.Name, "spec.podCIDRs", c.Spec.PodCIDRs)
		_, r2 := m.Subnets("Cluster "+c.Name, "spec.serviceCIDRs", c.Spec.ServiceCIDRs)
		rej = append(append(rej, r1...), r2...)
	}
	for _, e := range s.Endpoints {
		id := e.Spec.ClusterID
		if id == s.ClusterID {
			continue
		}
		m, ok := table.Member(id)
		if !ok {
			rej = append(rej, table.NotMember(id, "Endpoint "+e.Name))
			continue
		}
		_, r := m.Subnets("Endpoint "+e.Name, "spec.subnets", e.Spec.Subnets)
		rej = append(rej, r...)
	}
	if len(rej) == 0 {
		return []Check{ok("networks", s.ClusterID, name)}
	}
	membership.Sort(rej)
	byCluster := map[string][]membership.Rejection{}
	var order []string
	for _, r := range rej {
		if _, seen := byCluster[r.Cluster]; !seen {
			order = append(order, r.Cluster)
		}
		byCluster[r.Cluster] = append(byCluster[r.Cluster], r)
	}
	var out []Check
	for _, c := range order {
		f := fail("MCN1205", s.ClusterID, name, "cluster %s publishes outside its allocation in fleet %s (ignored): %s", c, table.Name(), membership.Summary(byCluster[c], 5))
		f.Offender = c
		out = append(out, f)
	}
	return out
}

func nodePodCIDRs(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) > 0 {
		return n.Spec.PodCIDRs
	}
	if n.Spec.PodCIDR != "" {
		return []string{n.Spec.PodCIDR}
	}
	return nil
}

// DNS checks that the mcnet DNS Service exists, that the rendered CoreDNS server block
// (ConfigMap kube-system/mcnet-coredns) forwards the domain to it, and that CoreDNS uses
// the block: its Corefile imports it from where the CoreDNS Deployment mounts the
// ConfigMap, or forwards the domain to the Service itself.
func DNS(ctx context.Context, c client.Client, s *inspect.Snapshot) []Check {
	id := s.ClusterID
	domain := s.Domain()
	var svc corev1.Service
	if err := c.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: mcnetv1.DNSServiceName}, &svc); err != nil || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return []Check{fail("MCN1701", id, "mcnet DNS service exists", "Service %s/%s: %v", mcnetv1.SystemNamespace, mcnetv1.DNSServiceName, errOr(err, "no ClusterIP"))}
	}
	ip := svc.Spec.ClusterIP
	out := []Check{ok("dns", id, "mcnet DNS service exists ("+ip+")")}

	blockName := "server block kube-system/" + mcnetv1.CoreDNSConfigMap + " forwards " + domain
	var block corev1.ConfigMap
	switch err := c.Get(ctx, client.ObjectKey{Namespace: metav1.NamespaceSystem, Name: mcnetv1.CoreDNSConfigMap}, &block); {
	case err != nil:
		out = append(out, fail("MCN1704", id, blockName, "ConfigMap kube-system/%s: %v", mcnetv1.CoreDNSConfigMap, err))
	case !ForwardsDomain(block.Data[mcnetv1.CoreDNSServerKey], domain, ip):
		out = append(out, fail("MCN1705", id, blockName, "the server block does not forward %s to %s, where Service %s is", domain, ip, mcnetv1.DNSServiceName))
	default:
		out = append(out, ok("dns", id, blockName+" to "+ip))
	}

	usesName := "CoreDNS uses the " + domain + " server block"
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: metav1.NamespaceSystem, Name: "coredns"}, &cm); err != nil {
		return append(out, warn("MCN1703", id, usesName, "ConfigMap kube-system/coredns: %v", err))
	}
	corefile := cm.Data["Corefile"]
	if ForwardsDomain(corefile, domain, ip) {
		return append(out, ok("dns", id, "CoreDNS forwards "+domain+" to mcnet DNS"))
	}
	pattern := ImportedServerBlocks(corefile)
	if pattern == "" {
		return append(out, fail("MCN1702", id, usesName, "the Corefile neither imports *.server files nor forwards %s to %s", domain, ip))
	}
	dir, file := path.Split(pattern)
	if m, _ := path.Match(file, mcnetv1.CoreDNSServerKey); !m {
		return append(out, fail("MCN1702", id, usesName, "the Corefile imports %s, which does not match %s", pattern, mcnetv1.CoreDNSServerKey))
	}
	mounted, checked, err := mountsConfigMap(ctx, c, mcnetv1.CoreDNSConfigMap, path.Clean(dir))
	switch {
	case err != nil:
		return append(out, warn("MCN1703", id, usesName, "CoreDNS Deployment: %v", err))
	case !checked:
		return append(out, ok("dns", id, "the Corefile imports "+pattern+" (no CoreDNS Deployment labelled k8s-app=kube-dns to check the mount)"))
	case !mounted:
		return append(out, fail("MCN1702", id, usesName, "the Corefile imports %s but the CoreDNS Deployment does not mount ConfigMap %s at %s", pattern, mcnetv1.CoreDNSConfigMap, path.Clean(dir)))
	}
	return append(out, ok("dns", id, "CoreDNS imports the "+domain+" server block from "+pattern))
}

// ImportedServerBlocks returns the pattern of the Corefile's top-level import of
// server block files, "" when it has none.
func ImportedServerBlocks(corefile string) string {
	depth := 0
	for _, line := range strings.Split(stripComments(corefile), "\n") {
		f := strings.Fields(line)
		if depth == 0 && len(f) == 2 && f[0] == "import" {
			return f[1]
		}
		depth += strings.Count(line, "{") - strings.Count(line, "}")
	}
	return ""
}

// mountsConfigMap says whether the CoreDNS Deployment (k8s-app=kube-dns in kube-system)
// mounts ConfigMap name at dir; checked is false when there is no such Deployment.
func mountsConfigMap(ctx context.Context, c client.Client, name, dir string) (mounted, checked bool, err error) {
	var deps appsv1.DeploymentList
	if err := c.List(ctx, &deps, client.InNamespace(metav1.NamespaceSystem), client.MatchingLabels{"k8s-app": "kube-dns"}); err != nil {
		return false, false, err
	}
	for _, d := range deps.Items {
		checked = true
		vols := map[string]bool{}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.ConfigMap != nil && v.ConfigMap.Name == name {
				vols[v.Name] = true
			}
		}
		for _, ctr := range d.Spec.Template.Spec.Containers {
			for _, m := range ctr.VolumeMounts {
				if vols[m.Name] && path.Clean(m.MountPath) == dir {
					return true, true, nil
				}
			}
		}
	}
	return false, checked, nil
}

// ForwardsDomain says whether a Corefile (or server block) has a server block for
// domain whose forward plugin sends to ip.
func ForwardsDomain(corefile, domain, ip string) bool {
	want, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	domain = strings.TrimSuffix(domain, ".")
	blocks := strings.Split(stripComments(corefile), "}")
	for _, b := range blocks {
		head, body, found := strings.Cut(b, "{")
		if !found {
			continue
		}
		matches := false
		for _, key := range strings.Fields(head) {
			key = strings.TrimPrefix(key, "dns://")
			if h, _, err := net.SplitHostPort(key); err == nil {
				key = h
			}
			if strings.TrimSuffix(key, ".") == domain {
				matches = true
			}
		}
		if !matches {
			continue
		}
		for _, line := range strings.Split(body, "\n") {
			f := strings.Fields(line)
			if len(f) < 3 || f[0] != "forward" {
				continue
			}
			for _, to := range f[2:] {
				to = strings.TrimPrefix(to, "dns://")
				if ap, err := netip.ParseAddrPort(to); err == nil {
					to = ap.Addr().String()
				}
				if a, err := netip.ParseAddr(to); err == nil && a == want {
					return true
				}
			}
		}
	}
	return false
}

// stripComments drops everything from # to the end of each line.
func stripComments(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if j := strings.IndexByte(l, '#'); j >= 0 {
			lines[i] = l[:j]
		}
	}
	return strings.Join(lines, "\n")
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

func selString(sel map[string]string) string {
	var parts []string
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}
