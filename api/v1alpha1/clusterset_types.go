package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CableDriver names the kind of tunnel between two clusters' gateways.
// +kubebuilder:validation:Enum=wireguard;vxlan
type CableDriver string

const (
	// CableWireGuard encrypts traffic between gateways with WireGuard (kernel device where
	// the module exists, an embedded userspace device otherwise).
	CableWireGuard CableDriver = "wireguard"
	// CableVXLAN carries traffic between gateways in plain VXLAN: fast, for trusted networks.
	CableVXLAN CableDriver = "vxlan"
)

// CableDrivers lists every supported cable driver, in the order help texts show them.
var CableDrivers = []CableDriver{CableWireGuard, CableVXLAN}

// PairDriver is the cable driver between two clusters that prefer a and b: WireGuard
// when either side asks for it (a cluster that wants encryption gets it on every
// connection), VXLAN only when both do. Both ends compute the same answer.
func PairDriver(a, b CableDriver) CableDriver {
	if a == CableVXLAN && b == CableVXLAN {
		return CableVXLAN
	}
	return CableWireGuard
}

// CableTo is the driver and UDP port a cluster preferring local uses to reach the
// gateway that published remote: the port remote publishes when the pair uses the
// driver remote prefers, else 0 for the driver's default (DefaultCablePort).
func CableTo(local CableDriver, remote *EndpointSpec) (CableDriver, int32) {
	d := PairDriver(local, remote.Cable)
	if d == remote.Cable {
		return d, remote.Port
	}
	return d, 0
}

// DefaultCablePort returns the UDP port a driver listens on when the fleet names none.
func DefaultCablePort(d CableDriver) int32 {
	if d == CableVXLAN {
		return 4789
	}
	return 51820
}

const (
	// DefaultDomain is the DNS zone exported services resolve under.
	DefaultDomain = "clusterset.local"
	// DefaultBrokerNamespace is the namespace on the broker's API server holding the
	// objects clusters exchange.
	DefaultBrokerNamespace = "mcnet-broker"
	// DefaultImageRepository is where the in-cluster components' image is published.
	DefaultImageRepository = "ghcr.io/mcnet-io/mcnet"
	// GatewayLabel is the node label that, set to "true", marks gateway nodes when a
	// cluster names no node selector of its own. It is under NodeRestrictionPrefix: a
	// node's kubelet cannot set it on itself, so only an administrator makes a gateway.
	GatewayLabel = NodeRestrictionPrefix + "mcnet-gateway"
	// NodeRestrictionPrefix starts the node labels the NodeRestriction admission plugin
	// forbids kubelets to set (kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#noderestriction).
	// Every key of a gateway node selector must carry it.
	NodeRestrictionPrefix = "node-restriction.kubernetes.io/"
	// ClusterLabel names the cluster an object on the broker belongs to; the broker's
	// admission policy only lets a cluster write objects carrying its own name.
	ClusterLabel = "mcnet.io/cluster"
	// SystemNamespace is where mcnet's components run in every cluster.
	SystemNamespace = "mcnet-system"
	// DNSServiceName is the Service in SystemNamespace that serves the clusterset domain.
	DNSServiceName = "mcnet-dns"
	// CoreDNSConfigMap is the ConfigMap in kube-system holding, under CoreDNSServerKey,
	// the CoreDNS server block that forwards the clusterset domain to DNSServiceName.
	CoreDNSConfigMap = "mcnet-coredns"
	CoreDNSServerKey = "mcnet.server"
)

// ClusterSet describes a fleet: the clusters mcnet connects, how, and where their broker
// is. It is the input of `kubectl mcnet render`, kept in Git; it is not installed in any
// cluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
type ClusterSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ClusterSetSpec `json:"spec"`
}

// ClusterSetSpec is the desired shape of a fleet.
type ClusterSetSpec struct {
	// Broker says which cluster's API server hosts the broker namespace.
	Broker BrokerSpec `json:"broker"`

	// Cable is the default cable driver between clusters; a cluster may override it.
	// +kubebuilder:default=wireguard
	// +optional
	Cable CableDriver `json:"cable,omitempty"`

	// CablePort is the UDP port gateways listen on, unless a cluster names its own;
	// defaults to 51820 for WireGuard and 4789 for VXLAN.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	CablePort int32 `json:"cablePort,omitempty"`

	// Discovery configures service discovery across clusters.
	// +optional
	Discovery DiscoverySpec `json:"discovery,omitempty"`

	// Image selects the container image of mcnet's in-cluster components.
	// +optional
	Image ImageSpec `json:"image,omitempty"`

	// GitOps says where the rendered tree lives, for the Flux and Argo CD objects that
	// deploy it.
	// +optional
	GitOps GitOpsSpec `json:"gitOps,omitempty"`

	// Globalnet lets clusters whose pod or service networks overlap join the fleet: the
	// render gives each such cluster a global pod range of the same size from this
	// pool, and the other clusters reach its pods there, remapped 1:1. See GlobalnetSpec.
	// +optional
	Globalnet *GlobalnetSpec `json:"globalnet,omitempty"`

	// Clusters lists the member clusters.
	Clusters []ClusterSpec `json:"clusters"`
}

// GitOpsSpec locates the rendered tree in Git.
type GitOpsSpec struct {
	// RepoURL is the Git repository holding the rendered tree. Argo CD Applications point
	// at it; Flux gets a GitRepository of its own for it. Without it, Flux objects use the
	// flux-system GitRepository that bootstrap created, and render takes Argo CD's URL
	// from the output directory's Git remote "origin".
	// +optional
	RepoURL string `json:"repoURL,omitempty"`
	// Revision is the branch the controllers follow.
	// +kubebuilder:default=main
	// +optional
	Revision string `json:"revision,omitempty"`
	// Path is the rendered tree's directory inside the repository; render finds it when
	// the output directory is inside a Git working tree.
	// +optional
	Path string `json:"path,omitempty"`
}

// BrokerSpec locates the broker: a namespace on one member cluster's API server.
type BrokerSpec struct {
	// Cluster names the member cluster whose API server hosts the broker.
	Cluster string `json:"cluster"`
	// Server is the broker API server's URL as the other clusters reach it.
	Server string `json:"server"`
	// Namespace on the broker's API server that holds the exchanged objects.
	// +kubebuilder:default=mcnet-broker
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// DiscoverySpec configures DNS for exported services.
type DiscoverySpec struct {
	// Domain is the zone exported services resolve under.
	// +kubebuilder:default=clusterset.local
	// +optional
	Domain string `json:"domain,omitempty"`
}

// ImageSpec selects the in-cluster components' container image.
type ImageSpec struct {
	// Repository of the image, without tag.
	// +optional
	Repository string `json:"repository,omitempty"`
	// Tag of the image; defaults to the plugin's own version.
	// +optional
	Tag string `json:"tag,omitempty"`
}

// ClusterSpec describes one member cluster.
type ClusterSpec struct {
	// Name identifies the cluster in the fleet, on the broker and in DNS names
	// (DNS-1123 label, at most 63 characters).
	Name string `json:"name"`

	// PodCIDRs are the cluster's pod networks, one per IP family.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	PodCIDRs []string `json:"podCIDRs"`

	// ServiceCIDRs are the cluster's service networks, one per IP family.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	ServiceCIDRs []string `json:"serviceCIDRs"`

	// Gateway selects the nodes that may run the cluster's gateway.
	// +optional
	Gateway GatewaySelector `json:"gateway,omitempty"`

	// Cable overrides the fleet's default cable driver for connections of this cluster.
	// +optional
	Cable CableDriver `json:"cable,omitempty"`

	// CablePort is the UDP port this cluster's gateways listen on; defaults to the
	// fleet's spec.cablePort, else to the port of the cluster's cable driver.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	CablePort int32 `json:"cablePort,omitempty"`
	// MaxExports is how many services this cluster may export to the rest of the fleet:
	// receivers import only its MaxExports oldest exports and ignore the rest (and say
	// so), so a cluster whose broker credentials are abused cannot flood every other
	// cluster with imports. 0 means DefaultMaxExports.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65536
	// +optional
	MaxExports int32 `json:"maxExports,omitempty"`

	// DNSServiceIPs are the ClusterIPs of the mcnet-dns Service, where CoreDNS forwards
	// the clusterset domain: one per service CIDR. They are pinned so that the rendered
	// CoreDNS server block can name them. Defaults to the 53rd address of each service
	// CIDR (the 11th in ranges of fewer than 1024 addresses), inside the band Kubernetes
	// keeps for ClusterIPs chosen by hand, so no dynamically allocated Service takes it.
	// +kubebuilder:validation:MaxItems=2
	// +optional
	DNSServiceIPs []string `json:"dnsServiceIPs,omitempty"`

	// Server is the cluster's own API server URL, used by GitOps objects that deploy to
	// it from a hub (Argo CD's destination); optional.
	// +optional
	Server string `json:"server,omitempty"`

	// GlobalPodCIDRs pins the cluster's global pod range (one IPv4 CIDR of the same
	// size as its IPv4 pod CIDR) instead of letting the render allocate one from
	// spec.globalnet.cidr. Other clusters reach its pods there when its networks
	// overlap another member's.
	// +kubebuilder:validation:MaxItems=1
	// +optional
	GlobalPodCIDRs []string `json:"globalPodCIDRs,omitempty"`

	// GlobalServiceCIDRs likewise pins the cluster's global service range (one IPv4
	// CIDR of the size of its IPv4 service CIDR).
	// +kubebuilder:validation:MaxItems=1
	// +optional
	GlobalServiceCIDRs []string `json:"globalServiceCIDRs,omitempty"`
}

// GatewaySelector selects gateway nodes.
type GatewaySelector struct {
	// NodeSelector matches the labels of nodes eligible to run the gateway; defaults to
	// node-restriction.kubernetes.io/mcnet-gateway=true.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
}

// +kubebuilder:object:root=true

// ClusterSetList is a list of ClusterSets.
type ClusterSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterSet `json:"items"`
}
