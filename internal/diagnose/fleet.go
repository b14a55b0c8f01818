package diagnose

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/inspect"
	"github.com/mcnet-io/mcnet/internal/multicluster"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// Network is one cluster's networks, from a fleet file or a Cluster object.
type Network struct {
	Cluster      string
	PodCIDRs     []string
	ServiceCIDRs []string
	// Remapped says the fleet reaches the cluster at global ranges (globalnet), so
	// its networks may overlap another remapped cluster's.
	Remapped bool
}

// Overlaps reports every pair of overlapping networks across and within clusters.
func Overlaps(nets []Network) []Check {
	type pfx struct {
		who string
		p   netip.Prefix
		net *Network
	}
	var all []pfx
	var out []Check
	for i := range nets {
		n := &nets[i]
		for kind, list := range map[string][]string{"pod": n.PodCIDRs, "service": n.ServiceCIDRs} {
			for _, s := range list {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					out = append(out, fail("MCN1201", n.Cluster, "CIDRs are valid", "%s CIDR %q: %v", kind, s, err))
					continue
				}
				all = append(all, pfx{fmt.Sprintf("%s %s %s", n.Cluster, kind, p), p.Masked(), n})
			}
		}
	}
	slices.SortFunc(all, func(a, b pfx) int { return strings.Compare(a.who, b.who) })
	remapped := 0
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			if !all[i].p.Overlaps(all[j].p) {
				continue
			}
			// Two remapped clusters may share networks: each is reached at its own
			// global ranges.
			if a, b := all[i].net, all[j].net; a.Remapped && b.Remapped && a.Cluster != b.Cluster {
				remapped++
				continue
			}
			out = append(out, fail("MCN1201", "", "no CIDRs overlap", "%s overlaps %s", all[i].who, all[j].who))
		}
	}
	if len(out) == 0 && remapped > 0 {
		out = append(out, ok("networks", "", fmt.Sprintf("no CIDRs overlap but those globalnet remaps (%d pairs, %d clusters)", remapped, len(nets))))
	} else if len(out) == 0 {
		out = append(out, ok("networks", "", fmt.Sprintf("no CIDRs overlap (%d clusters)", len(nets))))
	}
	return out
}

// Fleet checks what only a view across clusters shows: overlapping networks, clusters
// that do not know each other, version skew.
func Fleet(snaps []*inspect.Snapshot, pluginVersion string) []Check {
	var out []Check
	// Networks as each cluster announces itself.
	var nets []Network
	ids := map[string]bool{}
	for _, s := range snaps {
		if self := s.Self(); self != nil {
			m := s.FleetMember(s.ClusterID)
			nets = append(nets, Network{Cluster: s.ClusterID, PodCIDRs: self.Spec.PodCIDRs, ServiceCIDRs: self.Spec.ServiceCIDRs, Remapped: m != nil && m.Remapped})
			ids[s.ClusterID] = true
		} else if s.ClusterID != "" {
			out = append(out, fail("MCN1202", s.ClusterID, "cluster is announced", "no Cluster object %q in mcnet-system", s.ClusterID))
		}
	}
	// Every cluster known everywhere, also those the plugin cannot reach itself.
	for _, s := range snaps {
		for _, c := range s.Clusters {
			ids[c.Spec.ClusterID] = true
		}
	}
	out = append(out, Overlaps(nets)...)
	out = append(out, Globalnet(snaps)...)
	for _, s := range snaps {
		if s.ClusterID == "" {
			continue
		}
		var missing []string
		for id := range ids {
			known := false
			for _, c := range s.Clusters {
				known = known || c.Spec.ClusterID == id
			}
			if !known && id != s.ClusterID {
				missing = append(missing, id)
			}
		}
		slices.Sort(missing)
		if len(missing) > 0 {
			out = append(out, fail("MCN1203", s.ClusterID, "knows every other cluster", "no Cluster object for %s", strings.Join(missing, ", ")))
		} else {
			out = append(out, ok("networks", s.ClusterID, "knows every other cluster"))
		}
	}
	out = append(out, Versions(snaps, pluginVersion)...)
	return out
}

// Versions checks skew within each cluster, across clusters and with the plugin.
func Versions(snaps []*inspect.Snapshot, pluginVersion string) []Check {
	var out []Check
	minors := map[string][]string{}
	for _, s := range snaps {
		if s.Controller == nil {
			continue
		}
		vs := map[string]string{
			"controller":  inspect.ImageTag(inspect.Image(&s.Controller.Spec.Template.Spec)),
			"gateway":     "",
			"route agent": "",
		}
		if s.GatewayDS != nil {
			vs["gateway"] = inspect.ImageTag(inspect.Image(&s.GatewayDS.Spec.Template.Spec))
		}
		if s.RouteAgent != nil {
			vs["route agent"] = inspect.ImageTag(inspect.Image(&s.RouteAgent.Spec.Template.Spec))
		}
		if self := s.Self(); self != nil && self.Spec.Version != "" {
			vs["announced"] = self.Spec.Version
		}
		for _, g := range s.Gateways {
			if g.Status.Version != "" {
				vs["gateway "+g.Name] = g.Status.Version
			}
		}
		distinct := map[string][]string{}
		for who, v := range vs {
			// Image tags count only when they are versions: a tag like "latest" or a
			// digest-pinned local build says nothing about skew.
			if imageTag := who == "controller" || who == "gateway" || who == "route agent"; imageTag && !versionTag.MatchString(v) {
				continue
			}
			if v != "" {
				distinct[v] = append(distinct[v], who)
			}
		}
		if len(distinct) > 1 {
			var parts []string
			for v, whos := range distinct {
				slices.Sort(whos)
				parts = append(parts, v+" ("+strings.Join(whos, ", ")+")")
			}
			slices.Sort(parts)
			out = append(out, warn("MCN1601", s.ClusterID, "components run one version", "%s", strings.Join(parts, "; ")))
		} else {
			out = append(out, ok("versions", s.ClusterID, "components run one version"))
		}
		for v := range distinct {
			m := minor(v)
			minors[m] = append(minors[m], s.ClusterID)
		}
	}
	if len(minors) > 1 {
		var parts []string
		for m, ids := range minors {
			parts = append(parts, m+": "+strings.Join(dedupe(ids), ","))
		}
		slices.Sort(parts)
		out = append(out, fail("MCN1602", "", "clusters run one minor version", "%s", strings.Join(parts, "; ")))
	} else if len(minors) == 1 {
		out = append(out, ok("versions", "", "clusters run one minor version"))
		for m := range minors {
			if pm := minor(pluginVersion); pm != m && !strings.Contains(pluginVersion, "dev") {
				out = append(out, warn("MCN1603", "", "plugin matches the clusters", "plugin %s, clusters %s", pluginVersion, m))
			}
		}
	}
	return out
}

// minor returns "v1.2" of "v1.2.3" (or the input when it is not semver-like).
// versionTag matches image tags that name a release, e.g. v1.2.3 or 1.2.
var versionTag = regexp.MustCompile(`^v?\d+\.\d+`)

func minor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

func dedupe(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// Datapath checks CNI and kube-proxy compatibility.
func Datapath(ctx context.Context, c client.Client, s *inspect.Snapshot, remote []Network) []Check {
	id := s.ClusterID
	var out []Check
	var dss appsv1.DaemonSetList
	_ = c.List(ctx, &dss, client.InNamespace("kube-system"))
	cni := ""
	known := map[string]string{"calico-node": "calico", "cilium": "cilium", "kube-flannel-ds": "flannel", "kube-flannel": "flannel", "weave-net": "weave", "aws-node": "aws-vpc-cni", "kindnet": "kindnet", "antrea-agent": "antrea", "canal": "canal", "kube-router": "kube-router", "ovnkube-node": "ovn-kubernetes"}
	var proxy *appsv1.DaemonSet
	for i, d := range dss.Items {
		if n, ok := known[d.Name]; ok && cni == "" {
			cni = n
		}
		if d.Name == "kube-proxy" {
			proxy = &dss.Items[i]
		}
	}
	if cni == "" {
		out = append(out, warn("MCN1501", id, "CNI is detected", "no known CNI DaemonSet in kube-system"))
	} else {
		out = append(out, ok("datapath", id, "CNI is detected ("+cni+")"))
	}
	mode := ""
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "kube-proxy"}, &cm); err == nil {
		for _, v := range cm.Data {
			for _, line := range strings.Split(v, "\n") {
				if k, val, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == "mode" {
					mode = strings.Trim(strings.TrimSpace(val), `"'`)
				}
			}
		}
	}
	if proxy != nil && mode == "" {
		mode = proxyModeArg(proxy)
	}
	switch mode {
	case "ipvs":
		out = append(out, warn("MCN1502", id, "kube-proxy mode is supported", "kube-proxy runs in ipvs mode"))
	case "":
		out = append(out, ok("datapath", id, "kube-proxy mode is supported (default or no kube-proxy)"))
	default:
		out = append(out, ok("datapath", id, "kube-proxy mode is supported ("+mode+")"))
	}
	if cni == "calico" || cni == "canal" {
		out = append(out, calicoPools(ctx, c, id, remote)...)
	}
	return out
}

func proxyModeArg(d *appsv1.DaemonSet) string {
	for _, ctr := range d.Spec.Template.Spec.Containers {
		for _, a := range append(slices.Clone(ctr.Command), ctr.Args...) {
			if v, ok := strings.CutPrefix(a, "--proxy-mode="); ok {
				return v
			}
		}
	}
	return ""
}

// calicoPools checks that Calico has a disabled, non-NAT IPPool for each remote CIDR, so
// it neither SNATs traffic to remote clusters nor allocates from their ranges.
func calicoPools(ctx context.Context, c client.Client, id string, remote []Network) []Check {
	var pools unstructured.UnstructuredList
	pools.SetAPIVersion("crd.projectcalico.org/v1")
	pools.SetKind("IPPoolList")
	if err := c.List(ctx, &pools); err != nil {
		return []Check{skip("datapath", id, "Calico does not SNAT remote traffic", "cannot list Calico IPPools: "+err.Error())}
	}
	covered := map[string]bool{}
	for _, p := range pools.Items {
		cidr, _, _ := unstructured.NestedString(p.Object, "spec", "cidr")
		nat, _, _ := unstructured.NestedBool(p.Object, "spec", "natOutgoing")
		if !nat {
			covered[cidr] = true
		}
	}
	var missing []string
	for _, n := range remote {
		for _, cidr := range append(slices.Clone(n.PodCIDRs), n.ServiceCIDRs...) {
			if !covered[cidr] {
				missing = append(missing, n.Cluster+" "+cidr)
			}
		}
	}
	if len(missing) > 0 {
		return []Check{fail("MCN1503", id, "Calico does not SNAT remote traffic", "no IPPool with natOutgoing: false for %s", strings.Join(missing, ", "))}
	}
	return []Check{ok("datapath", id, "Calico does not SNAT remote traffic")}
}

// BrokerHost returns the target whose cluster hosts the broker namespace ns, or nil.
// Diagnose talks to the broker through it when it can: the broker URL in a cluster's
// credentials is the one the clusters use, which need not be reachable from here.
func BrokerHost(ctx context.Context, targets []*multicluster.Target, ns string) *multicluster.Target {
	if ns == "" {
		ns = mcnetv1.DefaultBrokerNamespace
	}
	for _, t := range targets {
		var n corev1.Namespace
		if err := t.Client.Get(ctx, client.ObjectKey{Name: ns}, &n); err == nil {
			return t
		}
	}
	return nil
}

// Broker checks the cluster's broker credentials against the broker: reachable, valid,
// allowed to publish its own objects, not allowed to read Secrets, and published. via,
// when not nil, is the broker's own cluster as reached from here; the credentials are
// then presented to it rather than to the URL they name.
func Broker(ctx context.Context, t *multicluster.Target, s *inspect.Snapshot, via *multicluster.Target) []Check {
	id := s.ClusterID
	server, ns := s.Config.Broker.Server, s.Config.Broker.Namespace
	if ns == "" {
		ns = mcnetv1.DefaultBrokerNamespace
	}
	if s.Controller == nil {
		return []Check{skip("broker", id, "broker is reachable", "mcnet is not installed")}
	}
	if server == "" {
		return []Check{fail("MCN1101", id, "broker is configured", "the controller's config (ConfigMap %s) names no broker.server", mcnetv1.AgentConfigMap)}
	}
	var sec corev1.Secret
	if err := t.Client.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: naming.BrokerCredentialsSecret}, &sec); err != nil {
		if apierrors.IsForbidden(err) {
			return []Check{skip("broker", id, "broker credentials are valid", "you may not read Secret mcnet-system/"+naming.BrokerCredentialsSecret)}
		}
		return []Check{fail("MCN1102", id, "broker credentials exist", "Secret mcnet-system/%s: %v", naming.BrokerCredentialsSecret, err)}
	}
	kc := sec.Data[naming.BrokerCredentialsKey]
	if len(kc) == 0 {
		return []Check{fail("MCN1102", id, "broker credentials exist", "Secret mcnet-system/%s has no key kubeconfig", naming.BrokerCredentialsSecret)}
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		return []Check{fail("MCN1102", id, "broker credentials exist", "the kubeconfig in the Secret does not load: %v", err)}
	}
	if cfg.Host == "" {
		cfg.Host = server
	}
	if via != nil {
		// Same identity, through the connection to the broker's cluster that works here.
		through := rest.AnonymousClientConfig(via.Config)
		through.BearerToken, through.BearerTokenFile = cfg.BearerToken, cfg.BearerTokenFile
		through.CertData, through.KeyData, through.CertFile, through.KeyFile = cfg.CertData, cfg.KeyData, cfg.CertFile, cfg.KeyFile
		cfg = through
	}
	cfg.Timeout = 10e9
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return []Check{fail("MCN1102", id, "broker credentials exist", "%v", err)}
	}
	out := []Check{ok("broker", id, "broker credentials exist")}
	// Reachable and valid: a SelfSubjectReview-free probe that needs authentication.
	_, err = kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, access(ns, "get", "mcnet.io", "clusters"), metav1.CreateOptions{})
	switch {
	case apierrors.IsUnauthorized(err):
		return append(out, fail("MCN1104", id, "broker credentials are valid", "%s rejects the credentials: %v", cfg.Host, err))
	case err != nil && !apierrors.IsForbidden(err):
		return append(out, fail("MCN1103", id, "broker is reachable", "%s: %v", cfg.Host, err))
	}
	reached := cfg.Host
	if via != nil {
		reached = "through context " + via.Context
	}
	out = append(out, ok("broker", id, "broker is reachable ("+reached+")"), ok("broker", id, "broker credentials are valid"))
	var lacking, broad []string
	for _, want := range []struct {
		verb, group, resource string
	}{{"create", "mcnet.io", "clusters"}, {"update", "mcnet.io", "endpoints"}, {"watch", "mcnet.io", "endpoints"}, {"create", "multicluster.x-k8s.io", "serviceimports"}} {
		if !allowed(ctx, kube, access(ns, want.verb, want.group, want.resource)) {
			lacking = append(lacking, want.verb+" "+want.resource)
		}
	}
	if allowed(ctx, kube, access(ns, "get", "", "secrets")) {
		broad = append(broad, "read Secrets in "+ns)
	}
	if allowed(ctx, kube, access("kube-system", "get", "", "secrets")) {
		broad = append(broad, "read Secrets in kube-system")
	}
	if allowed(ctx, kube, access("", "create", "mcnet.io", "clusters")) && allowed(ctx, kube, access("default", "create", "mcnet.io", "clusters")) {
		broad = append(broad, "write Clusters outside "+ns)
	}
	if len(lacking) > 0 {
		out = append(out, fail("MCN1105", id, "broker credentials may publish the cluster", "in namespace %s the credentials may not: %s", ns, strings.Join(lacking, ", ")))
	} else {
		out = append(out, ok("broker", id, "broker credentials may publish the cluster"))
	}
	if len(broad) > 0 {
		out = append(out, fail("MCN1106", id, "broker credentials are scoped", "the credentials may %s", strings.Join(broad, "; ")))
	} else {
		out = append(out, ok("broker", id, "broker credentials are scoped (no Secrets, own namespace)"))
	}
	bc, err := client.New(cfg, client.Options{Scheme: multicluster.Scheme()})
	if err == nil {
		var cl mcnetv1.Cluster
		if err := bc.Get(ctx, client.ObjectKey{Namespace: ns, Name: id}, &cl); err != nil {
			out = append(out, fail("MCN1107", id, "cluster is published on the broker", "Cluster %s/%s on the broker: %v", ns, id, err))
		} else {
			out = append(out, ok("broker", id, "cluster is published on the broker"))
		}
		// What every member publishes, as each importer reads it: who exports beyond
		// the cap the fleet table sets.
		var exports mcsv1alpha1.ServiceImportList
		if err := bc.List(ctx, &exports, client.InNamespace(ns)); err != nil {
			out = append(out, skip("broker", id, "clusters export within their maxExports", fmt.Sprintf("list the exports on the broker: %v", err)))
		} else {
			out = append(out, ExportCaps(id, s.Fleet, exports.Items)...)
		}
	}
	return out
}

func access(ns, verb, group, resource string) *authorizationv1.SelfSubjectAccessReview {
	return &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Resource: resource},
	}}
}

func allowed(ctx context.Context, kube kubernetes.Interface, r *authorizationv1.SelfSubjectAccessReview) bool {
	res, err := kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, r, metav1.CreateOptions{})
	return err == nil && res.Status.Allowed
}
