package show

// The types below are show's JSON and YAML schema (kind ShowReport); field names
// and omitempty choices are part of what scripts rely on, so change them as an API.

import (
	"github.com/mcnet-io/mcnet/internal/output"
)

// Report is show's document.
type Report struct {
	output.TypeMeta `json:",inline"`
	// PluginVersion is the version of the plugin that read the clusters; the
	// versions section compares the clusters' components with it.
	PluginVersion string `json:"pluginVersion"`
	// Sections are the sections asked for, in the order they are printed.
	Sections []string `json:"sections"`
	// Clusters holds one block per kubeconfig context read, in that order.
	Clusters []ClusterView `json:"clusters"`
}

// ClusterView is one cluster's block. Only the sections asked for are filled;
// the rest stay nil and are left out of JSON and YAML.
type ClusterView struct {
	// Context is the kubeconfig context read; Cluster the fleet name the
	// controller reports, empty when the cluster could not be read.
	Context string `json:"context"`
	Cluster string `json:"cluster,omitempty"`
	// Error is why the cluster could not be read at all; Problems are reads
	// that failed while others succeeded (RBAC on one kind, say).
	Error       string           `json:"error,omitempty"`
	Problems    []string         `json:"problems,omitempty"`
	Networks    []NetworkView    `json:"networks,omitempty"`
	Gateways    []GatewayView    `json:"gateways,omitempty"`
	Connections []ConnectionView `json:"connections,omitempty"`
	Endpoints   []EndpointView   `json:"endpoints,omitempty"`
	Services    *ServicesView    `json:"services,omitempty"`
	Versions    *VersionsView    `json:"versions,omitempty"`
}

// NetworkView is one cluster's networks as this cluster knows them: from the
// Cluster objects the controller keeps, so a remote missing here is a remote
// this cluster does not route to.
type NetworkView struct {
	Cluster      string   `json:"cluster"`
	Local        bool     `json:"local"`
	PodCIDRs     []string `json:"podCIDRs"`
	ServiceCIDRs []string `json:"serviceCIDRs"`
	// GlobalPodCIDRs and GlobalServiceCIDRs are where the other clusters reach a
	// remapped cluster's pods and services (globalnet), from the fleet table the
	// components trust; empty for a cluster reached at its own addresses.
	GlobalPodCIDRs     []string `json:"globalPodCIDRs,omitempty"`
	GlobalServiceCIDRs []string `json:"globalServiceCIDRs,omitempty"`
	// Cable is the cluster's preferred driver, as it announces it.
	Cable   string `json:"cable"`
	Version string `json:"version,omitempty"`
}

// GatewayView is one gateway node.
type GatewayView struct {
	Node string `json:"node"`
	// HA is active or standby, from the gateway's own status; "expired" when the
	// status had passed its expireTime when read (the gateway is not running).
	HA string `json:"haStatus"`
	// Expired says the status had passed its heartbeat's expireTime when read;
	// ReportedHA is then what the stale status still says.
	Expired    bool   `json:"expired,omitempty"`
	ReportedHA string `json:"reportedHAStatus,omitempty"`
	// ExpireTime is the status' expiry (RFC 3339), empty when it has none.
	ExpireTime string `json:"expireTime,omitempty"`
	Cable      string `json:"cable,omitempty"`
	Version    string `json:"version,omitempty"`
	// Ready is the Ready condition's status, "Unknown" when it has none.
	Ready string `json:"ready"`
	// Connected of Remotes tunnels are up.
	Connected int `json:"connected"`
	Remotes   int `json:"remotes"`
	// Labelled says whether the node still carries the gateway label: a
	// Gateway object of an unlabelled node is left over, not a gateway.
	Labelled bool `json:"labelled"`
}

// ConnectionView is one tunnel from the active gateway. Cable and Port are
// what the pair runs, the same from both ends; durations are strings (as
// time.Duration prints them) so JSON readers need no unit convention.
type ConnectionView struct {
	// Gateway is the local active gateway's node, Remote the remote cluster.
	Gateway string `json:"gateway"`
	Remote  string `json:"remote"`
	// Status is connecting, connected or error, as the gateway last probed it.
	Status string `json:"status"`
	Cable  string `json:"cable,omitempty"`
	Port   int32  `json:"port,omitempty"`
	// RemoteNode is the remote active gateway's node; UsingIP is the address of
	// it the cable is built to, and NAT says that address is a public one that
	// differs from the gateway's private addresses.
	RemoteNode string `json:"remoteGateway,omitempty"`
	UsingIP    string `json:"usingIP,omitempty"`
	NAT        bool   `json:"nat"`
	// The RTT figures and LossPercent are over the gateway's last health
	// probes through the cable; empty RTTs mean no probe got a reply yet.
	RTTAvg      string `json:"rttAvg,omitempty"`
	RTTMin      string `json:"rttMin,omitempty"`
	RTTMax      string `json:"rttMax,omitempty"`
	LossPercent int32  `json:"lossPercent"`
	// RxBytes and TxBytes count the traffic through the cable since it was
	// created (WireGuard only; VXLAN reports 0).
	RxBytes int64 `json:"rxBytes"`
	TxBytes int64 `json:"txBytes"`
	// Since is when Status last changed (RFC 3339); Message says why it is
	// not connected, when it is not.
	Since   *string `json:"since,omitempty"`
	Message string  `json:"message,omitempty"`
}

// EndpointView is how one cluster's active gateway is reached, as published
// on the broker and accepted by this cluster.
type EndpointView struct {
	// Cluster publishes the Endpoint; Gateway is its active gateway's node.
	Cluster string `json:"cluster"`
	Gateway string `json:"gateway"`
	// Cable and Port are the driver and the UDP port the gateway listens on.
	Cable string `json:"cable"`
	Port  int32  `json:"port"`
	// PrivateIPs are the node's own addresses, PublicIPs those seen from
	// outside a NAT; a remote gateway builds its cable to one of them.
	PrivateIPs []string `json:"privateIPs"`
	PublicIPs  []string `json:"publicIPs,omitempty"`
	// HealthCheckIPs are addresses inside the tunnel the gateway answers
	// health probes on.
	HealthCheckIPs []string `json:"healthCheckIPs,omitempty"`
	// PublicKey is the gateway's WireGuard key (empty for VXLAN).
	PublicKey string `json:"publicKey,omitempty"`
	// Subnets are the networks routed to the cluster through this gateway.
	Subnets []string `json:"subnets"`
}

// ServicesView lists exported and imported services.
type ServicesView struct {
	Exports []ExportView `json:"exports"`
	Imports []ImportView `json:"imports"`
}

// ExportView is one ServiceExport, with its MCS conditions; Message carries the
// reason of whichever condition is not as wanted.
type ExportView struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Valid and Conflict are the MCS conditions' statuses: True, False or
	// Unknown (not reconciled yet).
	Valid    string `json:"valid"`
	Conflict string `json:"conflict"`
	Message  string `json:"message,omitempty"`
}

// ImportView is one ServiceImport: its clusterset IPs (empty for a headless
// service) and the clusters currently exporting it.
type ImportView struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Type is ClusterSetIP or Headless.
	Type string   `json:"type"`
	IPs  []string `json:"ips,omitempty"`
	// Ports are "PORT/PROTOCOL", as the ServiceImport lists them.
	Ports    []string `json:"ports,omitempty"`
	Clusters []string `json:"clusters,omitempty"`
}

// VersionsView lists versions: the images the workloads ask for, what the
// cluster announces on the broker, and what each gateway reports running. They
// differ during a rollout, which is what this section is for.
type VersionsView struct {
	// Kubernetes is the API server's version.
	Kubernetes string `json:"kubernetes"`
	// Controller, Gateway and RouteAgent are the images of the workloads' pod
	// templates: what should run once a rollout is done.
	Controller string `json:"controller,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
	RouteAgent string `json:"routeAgent,omitempty"`
	// Announced is the version the cluster's Cluster object publishes to the
	// broker.
	Announced string `json:"announced,omitempty"`
	// Gateways maps each gateway node to the version its status reports.
	Gateways map[string]string `json:"gateways,omitempty"`
}
