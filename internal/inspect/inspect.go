// Package inspect reads what mcnet runs in one cluster — its identity and settings,
// components, Cluster, Endpoint and Gateway objects, nodes, exported and imported
// services — into one snapshot that show prints and diagnose checks.
package inspect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/clusterhealth"
)

// Workload names of mcnet's components in mcnet-system.
const (
	ControllerName = "mcnet-controller"
	GatewayName    = "mcnet-gateway"
	RouteAgentName = "mcnet-route-agent"
)

// Snapshot is what one cluster runs.
type Snapshot struct {
	// Context is the kubeconfig context it was read through.
	Context string
	// ClusterID is the cluster's name in the fleet (its AgentConfig's clusterID).
	ClusterID string
	// Config is the AgentConfig the controller runs with: the ConfigMap its Deployment
	// mounts. Empty (zero) when it cannot be read.
	Config mcnetv1.AgentConfig
	// ServerVersion is the Kubernetes version.
	ServerVersion string

	// Fleet is the fleet table the components trust (the Config's fleet), nil when it
	// cannot be read.
	Fleet *mcnetv1.Fleet

	Controller *appsv1.Deployment
	GatewayDS  *appsv1.DaemonSet
	RouteAgent *appsv1.DaemonSet
	Clusters   []mcnetv1.Cluster
	Endpoints  []mcnetv1.Endpoint
	Gateways   []mcnetv1.Gateway
	// GatewaysReadAt is when the Gateways were read, by this machine's clock: a
	// Gateway whose status.expireTime it passed is not running. Zero when unknown
	// (every Gateway then counts as live).
	GatewaysReadAt time.Time
	Nodes          []corev1.Node
	Exports        []mcsv1alpha1.ServiceExport
	Imports        []mcsv1alpha1.ServiceImport
	ExportsRead    bool

	// Problems are reads that failed without making the snapshot useless.
	Problems []string
}

// Collect reads a snapshot. It fails only when the cluster cannot be reached at all;
// missing pieces are left empty (diagnose reports them).
func Collect(ctx context.Context, c client.Client, kube kubernetes.Interface, contextName string) (*Snapshot, error) {
	s := &Snapshot{Context: contextName}
	if kube != nil {
		v, err := kube.Discovery().ServerVersion()
		if err != nil {
			return nil, fmt.Errorf("reach API server: %w", err)
		}
		s.ServerVersion = v.GitVersion
	}
	ns := client.InNamespace(mcnetv1.SystemNamespace)
	var d appsv1.Deployment
	if s.read(c.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: ControllerName}, &d), "Deployment "+ControllerName) {
		s.Controller = &d
		s.readConfig(ctx, c, d.Spec.Template.Spec)
		s.ClusterID = s.Config.ClusterID
	}
	for name, dst := range map[string]**appsv1.DaemonSet{GatewayName: &s.GatewayDS, RouteAgentName: &s.RouteAgent} {
		var ds appsv1.DaemonSet
		if s.read(c.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: name}, &ds), "DaemonSet "+name) {
			*dst = &ds
		}
	}
	if s.Config.Fleet != "" {
		var f mcnetv1.Fleet
		if s.read(c.Get(ctx, client.ObjectKey{Name: s.Config.Fleet}, &f), "Fleet "+s.Config.Fleet) {
			s.Fleet = &f
		}
	}
	var cl mcnetv1.ClusterList
	if s.read(c.List(ctx, &cl, ns), "Clusters") {
		s.Clusters = cl.Items
	}
	var el mcnetv1.EndpointList
	if s.read(c.List(ctx, &el, ns), "Endpoints") {
		s.Endpoints = el.Items
	}
	var gl mcnetv1.GatewayList
	if s.read(c.List(ctx, &gl, ns), "Gateways") {
		s.Gateways, s.GatewaysReadAt = gl.Items, time.Now()
	}
	var nl corev1.NodeList
	if s.read(c.List(ctx, &nl), "Nodes") {
		s.Nodes = nl.Items
	}
	var xl mcsv1alpha1.ServiceExportList
	if s.read(c.List(ctx, &xl), "ServiceExports") {
		s.Exports, s.ExportsRead = xl.Items, true
	}
	var il mcsv1alpha1.ServiceImportList
	if s.read(c.List(ctx, &il), "ServiceImports") {
		s.Imports = il.Items
	}
	if s.ClusterID == "" {
		s.ClusterID = s.guessClusterID()
	}
	slices.SortFunc(s.Clusters, func(a, b mcnetv1.Cluster) int { return strings.Compare(a.Spec.ClusterID, b.Spec.ClusterID) })
	slices.SortFunc(s.Endpoints, func(a, b mcnetv1.Endpoint) int { return strings.Compare(a.Spec.ClusterID, b.Spec.ClusterID) })
	slices.SortFunc(s.Gateways, func(a, b mcnetv1.Gateway) int { return strings.Compare(a.Name, b.Name) })
	return s, nil
}

// read records a failed read as a problem, except for kinds not installed or absent
// objects, and reports whether the read succeeded.
func (s *Snapshot) read(err error, what string) bool {
	if err == nil {
		return true
	}
	if !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) && !errors.Is(err, &meta.NoKindMatchError{}) {
		s.Problems = append(s.Problems, fmt.Sprintf("read %s: %v", what, err))
	}
	return false
}

// guessClusterID is the cluster's name when the controller is missing: the one
// Gateway's published endpoint, else nothing.
func (s *Snapshot) guessClusterID() string {
	for _, g := range s.Gateways {
		if g.Status.LocalEndpoint != nil {
			return g.Status.LocalEndpoint.ClusterID
		}
	}
	return ""
}

// readConfig reads the AgentConfig a pod template mounts: the ConfigMap the render
// generated (its name carries a hash of its content).
func (s *Snapshot) readConfig(ctx context.Context, c client.Client, spec corev1.PodSpec) {
	for _, v := range spec.Volumes {
		if v.ConfigMap == nil || !strings.HasPrefix(v.ConfigMap.Name, mcnetv1.AgentConfigMap) {
			continue
		}
		var cm corev1.ConfigMap
		if !s.read(c.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: v.ConfigMap.Name}, &cm), "ConfigMap "+v.ConfigMap.Name) {
			return
		}
		cfg, err := agentconfig.Parse([]byte(cm.Data[mcnetv1.AgentConfigKey]))
		if err != nil {
			s.Problems = append(s.Problems, fmt.Sprintf("ConfigMap %s: %v", v.ConfigMap.Name, err))
			return
		}
		s.Config = *cfg
		return
	}
}

// Self is the cluster's own Cluster object, or nil.
func (s *Snapshot) Self() *mcnetv1.Cluster {
	for i := range s.Clusters {
		if s.Clusters[i].Spec.ClusterID == s.ClusterID {
			return &s.Clusters[i]
		}
	}
	return nil
}

// FleetMember is cluster id's row of the fleet table, or nil (no table, or not in it).
func (s *Snapshot) FleetMember(id string) *mcnetv1.FleetMember {
	if s.Fleet == nil {
		return nil
	}
	for i := range s.Fleet.Spec.Clusters {
		if s.Fleet.Spec.Clusters[i].Name == id {
			return &s.Fleet.Spec.Clusters[i]
		}
	}
	return nil
}

// ActiveGateways are the Gateways that carry the cluster's traffic, judged as DNS
// judges them (clusterhealth.Active): reporting haStatus active and not past their
// heartbeat's expiry at GatewaysReadAt. A dead gateway's object still says active.
func (s *Snapshot) ActiveGateways() []*mcnetv1.Gateway {
	return clusterhealth.Active(s.Gateways, s.GatewaysReadAt)
}

// Expired says whether g's status had passed its expireTime when it was read: its
// gateway is not running, whatever the status says.
func (s *Snapshot) Expired(g *mcnetv1.Gateway) bool {
	return !s.GatewaysReadAt.IsZero() && !clusterhealth.Live(g, s.GatewaysReadAt)
}

// Endpoint returns the Endpoint of cluster id, or nil.
func (s *Snapshot) Endpoint(id string) *mcnetv1.Endpoint {
	for i := range s.Endpoints {
		if s.Endpoints[i].Spec.ClusterID == id {
			return &s.Endpoints[i]
		}
	}
	return nil
}

// Node returns the node called name, or nil.
func (s *Snapshot) Node(name string) *corev1.Node {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i]
		}
	}
	return nil
}

// GatewaySelector is the gateway DaemonSet's node selector (node-restriction.kubernetes.io/mcnet-gateway=true when
// there is none).
func (s *Snapshot) GatewaySelector() map[string]string {
	if s.GatewayDS != nil && len(s.GatewayDS.Spec.Template.Spec.NodeSelector) > 0 {
		return s.GatewayDS.Spec.Template.Spec.NodeSelector
	}
	return map[string]string{mcnetv1.GatewayLabel: "true"}
}

// GatewayNodes are the nodes the gateway selector matches.
func (s *Snapshot) GatewayNodes() []*corev1.Node {
	sel := s.GatewaySelector()
	var out []*corev1.Node
	for i := range s.Nodes {
		if Matches(s.Nodes[i].Labels, sel) {
			out = append(out, &s.Nodes[i])
		}
	}
	return out
}

// Matches says whether labels carry every pair of sel.
func Matches(labels, sel map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Image returns the image of a workload's first container, or "".
func Image(spec *corev1.PodSpec) string {
	if spec == nil || len(spec.Containers) == 0 {
		return ""
	}
	return spec.Containers[0].Image
}

// ImageTag returns the tag of an image reference ("" when it has none).
func ImageTag(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[i+1:]
	}
	return ""
}

// Domain is the clusterset DNS domain the controller serves.
func (s *Snapshot) Domain() string {
	if d := s.Config.Discovery.Domain; d != "" {
		return d
	}
	return mcnetv1.DefaultDomain
}
