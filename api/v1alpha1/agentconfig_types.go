package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Where the render puts a cluster's AgentConfig and where the components find it.
const (
	// AgentConfigMap is the ConfigMap in SystemNamespace that holds the cluster's
	// AgentConfig under AgentConfigKey. The render generates it with kustomize, so its
	// name carries a hash of its content and a change rolls the components out.
	AgentConfigMap = "mcnet-config"
	// AgentConfigKey is the ConfigMap key, and the file name, of the AgentConfig.
	AgentConfigKey = "config.yaml"
	// AgentConfigPath is where the components read the AgentConfig by default: the
	// ConfigMap mounted at /etc/mcnet.
	AgentConfigPath = "/etc/mcnet/" + AgentConfigKey
	// AgentConfigKind is the kind of an AgentConfig document.
	AgentConfigKind = "AgentConfig"
)

// AgentConfig is what every mcnet component of one cluster knows about the cluster:
// who it is, its networks and cable, where its broker is, which membership table to
// trust, and how it serves DNS. The render writes one per cluster, into the cluster's
// overlay, and the controller, the gateways and the route agents all read it (mounted
// from the ConfigMap AgentConfigMap) instead of flags; flags are left for what a process
// may choose alone (bind addresses, log level, intervals). It is a file format, like
// the kubelet's KubeletConfiguration, not a kind served by any API server.
type AgentConfig struct {
	metav1.TypeMeta `json:",inline"`

	// ClusterID is this cluster's name in the fleet.
	ClusterID string `json:"clusterID"`
	// Fleet names the Fleet object (cluster-scoped) whose table the components trust
	// for the other clusters' membership and allocations.
	Fleet string `json:"fleet"`
	// PodCIDRs are this cluster's pod networks, one per IP family.
	PodCIDRs []string `json:"podCIDRs"`
	// ServiceCIDRs are this cluster's service networks, one per IP family.
	ServiceCIDRs []string `json:"serviceCIDRs"`
	// Cable is the cable driver this cluster's gateways prefer.
	Cable CableDriver `json:"cable,omitempty"`
	// CablePort is the UDP port this cluster's gateways listen on with their own
	// driver; defaults to the driver's port.
	// +optional
	CablePort int32 `json:"cablePort,omitempty"`
	// Broker locates the broker.
	Broker AgentBrokerConfig `json:"broker"`
	// Discovery configures DNS for exported services.
	// +optional
	Discovery AgentDiscoveryConfig `json:"discovery,omitempty"`
	// Gateway configures the gateways and how the other nodes find them.
	// +optional
	Gateway AgentGatewayConfig `json:"gateway,omitempty"`
}

// AgentBrokerConfig locates the broker.
type AgentBrokerConfig struct {
	// Server is the broker API server's URL as this cluster reaches it. The controller
	// connects with the kubeconfig in its broker credentials; diagnose checks that the
	// cluster reaches this URL.
	// +optional
	Server string `json:"server,omitempty"`
	// Namespace on the broker's API server that holds the exchanged objects; defaults
	// to DefaultBrokerNamespace.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// AgentDiscoveryConfig configures DNS for exported services.
type AgentDiscoveryConfig struct {
	// Domain is the zone exported services resolve under; defaults to DefaultDomain.
	// +optional
	Domain string `json:"domain,omitempty"`
	// DNSServiceIPs are the ClusterIPs of the mcnet-dns Service (one per service CIDR),
	// where CoreDNS forwards the domain.
	// +optional
	DNSServiceIPs []string `json:"dnsServiceIPs,omitempty"`
}

// AgentGatewayConfig configures this cluster's gateways.
type AgentGatewayConfig struct {
	// NodeSelector matches the gateway nodes; route agents leave them to the gateway
	// process. Defaults to node-restriction.kubernetes.io/mcnet-gateway=true.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// HealthCheckPort is the UDP port gateways answer each other's health probes on,
	// inside the tunnels; every cluster of a fleet uses the same. Defaults to
	// DefaultHealthCheckPort.
	// +optional
	HealthCheckPort int32 `json:"healthCheckPort,omitempty"`
	// LivenessPort is the UDP port on a gateway node's own address where the active
	// gateway answers this cluster's standbys; 0 disables the check (Lease timing alone
	// decides failovers). Defaults to DefaultLivenessPort.
	// +optional
	LivenessPort *int32 `json:"livenessPort,omitempty"`
}

// Ports gateways use when the AgentConfig names none.
const (
	// DefaultHealthCheckPort is the UDP port gateways answer health probes on, at their
	// health-check addresses inside the tunnels.
	DefaultHealthCheckPort = 4801
	// DefaultLivenessPort is the UDP port, on every gateway node's own address, where the
	// active gateway answers its standbys.
	DefaultLivenessPort = 4802
)
