package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HAStatus says whether a gateway carries the cluster's traffic.
// +kubebuilder:validation:Enum=active;passive
type HAStatus string

const (
	// HAActive marks the gateway holding the cluster's gateway Lease.
	HAActive HAStatus = "active"
	// HAPassive marks a warm standby gateway.
	HAPassive HAStatus = "passive"
)

// GatewayHeartbeat is how often a running gateway renews its Gateway status
// (status.renewTime), changed or not.
const GatewayHeartbeat = time.Second

// GatewayExpiry is how far ahead of each renewal a running gateway sets
// status.expireTime: three missed heartbeats, and readers stop believing the status.
const GatewayExpiry = 3 * GatewayHeartbeat

// GatewayConditionActiveReachable is the condition a standby Gateway reports about the
// active gateway's liveness port: False means a slow API server can make the standby
// take over from a gateway that still works.
const GatewayConditionActiveReachable = "ActiveGatewayReachable"

// GatewayConditionRemotesInAllocation is the condition the active Gateway reports about
// what the other clusters publish: False (reason OutsideAllocation) when some cluster
// publishes something the fleet table does not allocate to it, or is not in the table
// at all; the message says which cluster published what. That part is ignored.
const GatewayConditionRemotesInAllocation = "RemotesWithinAllocation"

// ReasonOutsideAllocation is the reason of a False RemotesWithinAllocation condition
// and of the Warning Event recorded when it becomes so.
const ReasonOutsideAllocation = "OutsideAllocation"

// ConnectionStatus is the state of a cable to one remote cluster.
// +kubebuilder:validation:Enum=connecting;connected;error
type ConnectionStatus string

const (
	// Connecting means the cable is configured but no probe has passed yet.
	Connecting ConnectionStatus = "connecting"
	// Connected means probes through the tunnel pass: traffic actually flows.
	Connected ConnectionStatus = "connected"
	// ConnectionError means probes fail; the connection's message says what is wrong.
	ConnectionError ConnectionStatus = "error"
)

// Gateway reports one gateway node's state: whether it is active and, for the active
// one, every connection to a remote cluster as measured by probes through the tunnel.
// Its name is the node's name.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mcgw,categories=mcnet
// +kubebuilder:printcolumn:name="HA",type=string,JSONPath=`.status.haStatus`
// +kubebuilder:printcolumn:name="Cable",type=string,JSONPath=`.status.cable`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Gateway struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status GatewayStatus `json:"status,omitempty"`
}

// GatewayStatus is what a gateway observed.
type GatewayStatus struct {
	// HAStatus is active on the gateway holding the Lease, passive on standbys.
	// +optional
	HAStatus HAStatus `json:"haStatus,omitempty"`
	// Cable is the driver this gateway runs.
	// +optional
	Cable CableDriver `json:"cable,omitempty"`
	// Version of the gateway binary.
	// +optional
	Version string `json:"version,omitempty"`
	// LocalEndpoint is the Endpoint this gateway publishes.
	// +optional
	LocalEndpoint *EndpointSpec `json:"localEndpoint,omitempty"`
	// Connections lists one entry per remote cluster.
	// +optional
	// +listType=map
	// +listMapKey=cluster
	Connections []Connection `json:"connections,omitempty"`
	// Conditions in kstatus form (Ready, Reconciling, Stalled).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// RenewTime is when the gateway last wrote this status: its heartbeat, renewed
	// every GatewayHeartbeat.
	// +optional
	RenewTime *metav1.MicroTime `json:"renewTime,omitempty"`
	// ExpireTime is when this status stops being true unless renewed: GatewayExpiry
	// after RenewTime while the gateway runs, the end of its restart grace while it
	// restarts. Readers (DNS, the ClusterSetIP endpoints, show, diagnose) treat a
	// Gateway past its ExpireTime as not running, whatever it says.
	// +optional
	ExpireTime *metav1.MicroTime `json:"expireTime,omitempty"`
	// Remap lists the prefix maps of globalnet the active gateway of a remapped
	// cluster translates, as read back from the kernel's remap chains after its last
	// apply (not as intended): `kubectl mcnet diagnose` compares them with the fleet
	// table.
	// +optional
	Remap []RemapStatus `json:"remap,omitempty"`
}

// RemapStatus is one 1:1 prefix map a gateway translates in both directions.
type RemapStatus struct {
	// Real is the cluster's own CIDR.
	Real string `json:"real"`
	// Global is the range the other clusters reach it at.
	Global string `json:"global"`
	// Service marks the service range (translated before conntrack).
	// +optional
	Service bool `json:"service,omitempty"`
}

// Connection is the state of the cable to one remote cluster.
type Connection struct {
	// Cluster is the remote cluster's name.
	Cluster string `json:"cluster"`
	// Endpoint is the remote gateway as published.
	// +optional
	Endpoint *EndpointSpec `json:"endpoint,omitempty"`
	// Status is connected only when probes through the tunnel pass.
	Status ConnectionStatus `json:"status"`
	// Message says what is wrong when Status is not connected.
	// +optional
	Message string `json:"message,omitempty"`
	// Cable is the driver the cable to this cluster runs, as the kernel reports it: the
	// pair's driver (the same from both ends), never either side's preference.
	// +optional
	Cable CableDriver `json:"cable,omitempty"`
	// Port is the remote gateway's UDP port the cable sends to.
	// +optional
	Port int32 `json:"port,omitempty"`
	// UsingIP is the remote address the cable sends to.
	// +optional
	UsingIP string `json:"usingIP,omitempty"`
	// NAT is true when the remote gateway is reached at a public address that differs
	// from its private one.
	// +optional
	NAT bool `json:"nat,omitempty"`
	// RTT statistics of probes through the tunnel.
	// +optional
	RTT *RTTStats `json:"rtt,omitempty"`
	// LossPercent is the share of recent probes that got no reply.
	// +optional
	LossPercent int32 `json:"lossPercent,omitempty"`
	// RxBytes and TxBytes count traffic through the cable since it was created.
	// +optional
	RxBytes int64 `json:"rxBytes,omitempty"`
	// +optional
	TxBytes int64 `json:"txBytes,omitempty"`
	// LastTransitionTime is when Status last changed.
	// +optional
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`
}

// RTTStats summarise probe round-trip times, as durations (e.g. "1.2ms").
type RTTStats struct {
	// +optional
	Last metav1.Duration `json:"last,omitempty"`
	// +optional
	Min metav1.Duration `json:"min,omitempty"`
	// +optional
	Avg metav1.Duration `json:"avg,omitempty"`
	// +optional
	Max metav1.Duration `json:"max,omitempty"`
	// +optional
	StdDev metav1.Duration `json:"stdDev,omitempty"`
}

// +kubebuilder:object:root=true

// GatewayList is a list of Gateways.
type GatewayList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Gateway `json:"items"`
}
