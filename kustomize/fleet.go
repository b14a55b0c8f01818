package kustomize

import (
	"path"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// DirFleet holds the fleet's membership table, the one object every cluster's overlay
// shares (so the whole tree holds it once).
const DirFleet = "bases/fleet"

// FleetTable is the membership table of a defaulted fleet: its members, sorted by name,
// with the networks and cable Git gives each. It is named after the ClusterSet.
func FleetTable(cs *mcnetv1.ClusterSet) *mcnetv1.Fleet {
	f := &mcnetv1.Fleet{
		TypeMeta:   metav1.TypeMeta{APIVersion: mcnetv1.GroupVersion.String(), Kind: "Fleet"},
		ObjectMeta: metav1.ObjectMeta{Name: cs.Name},
	}
	remapped := mcnetv1.RemappedClusters(cs)
	// Slices are cloned: the table is marshalled later, and must not share backing
	// arrays with the ClusterSet its caller goes on using.
	for _, c := range cs.Spec.Clusters {
		f.Spec.Clusters = append(f.Spec.Clusters, mcnetv1.FleetMember{
			Name:               c.Name,
			PodCIDRs:           slices.Clone(c.PodCIDRs),
			ServiceCIDRs:       slices.Clone(c.ServiceCIDRs),
			Cable:              c.Cable,
			CablePort:          c.CablePort,
			GlobalPodCIDRs:     slices.Clone(c.GlobalPodCIDRs),
			GlobalServiceCIDRs: slices.Clone(c.GlobalServiceCIDRs),
			Remapped:           remapped[c.Name],
			MaxExports:         c.MaxExports,
		})
	}
	// Sorted by name, so the same fleet renders the same bytes whatever order its file
	// lists the clusters in, and reordering them changes nothing in Git.
	slices.SortFunc(f.Spec.Clusters, func(a, b mcnetv1.FleetMember) int { return strings.Compare(a.Name, b.Name) })
	return f
}

// AgentConfig is the defaulted configuration of cluster c's components in a defaulted
// fleet.
func AgentConfig(cs *mcnetv1.ClusterSet, c *mcnetv1.ClusterSpec) *mcnetv1.AgentConfig {
	ac := &mcnetv1.AgentConfig{
		ClusterID:    c.Name,
		Fleet:        cs.Name,
		PodCIDRs:     slices.Clone(c.PodCIDRs),
		ServiceCIDRs: slices.Clone(c.ServiceCIDRs),
		Cable:        c.Cable,
		CablePort:    c.CablePort,
		Broker:       mcnetv1.AgentBrokerConfig{Server: cs.Spec.Broker.Server, Namespace: cs.Spec.Broker.Namespace},
		Discovery:    mcnetv1.AgentDiscoveryConfig{Domain: cs.Spec.Discovery.Domain, DNSServiceIPs: addrStrings(dnsServiceIPs(c))},
		Gateway:      mcnetv1.AgentGatewayConfig{NodeSelector: c.Gateway.NodeSelector},
	}
	// The same defaulting the components apply when they load the file
	// (internal/agentconfig), so the rendered config already says what will run.
	mcnetv1.SetDefaults_AgentConfig(ac)
	return ac
}

// renderFleet writes bases/fleet: the Fleet table, which every cluster's overlay
// includes and which the broker's allocation policies take as their parameter.
func renderFleet(t Tree, cs *mcnetv1.ClusterSet) error {
	if err := t.putYAML(path.Join(DirFleet, "fleet.yaml"),
		"# The fleet's members and the networks each may have routed to it. Every cluster applies\n"+
			"# this one object; its components and the broker's admission policy trust only what it\n"+
			"# says: a cluster publishing anything outside its own allocation is ignored.\n",
		FleetTable(cs)); err != nil {
		return err
	}
	return t.putYAML(path.Join(DirFleet, "kustomization.yaml"),
		"# The membership table, shared by every cluster's overlay. Needs the CRDs in ../crds.\n",
		kustomization(map[string]any{"resources": []string{"fleet.yaml"}}))
}
