package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Endpoint is how other clusters reach a cluster's active gateway: its addresses, cable
// port and driver, and (for WireGuard) its public key. Only the active gateway's Endpoint
// is published; it is replaced on failover.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=mce,categories=mcnet
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterID`
// +kubebuilder:printcolumn:name="Gateway",type=string,JSONPath=`.spec.hostname`
// +kubebuilder:printcolumn:name="Cable",type=string,JSONPath=`.spec.cable`
// +kubebuilder:printcolumn:name="Public IPs",type=string,JSONPath=`.spec.publicIPs`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Endpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec EndpointSpec `json:"spec"`
}

// EndpointSpec describes a cluster's active gateway as seen from other clusters.
type EndpointSpec struct {
	// ClusterID names the cluster this gateway belongs to.
	ClusterID string `json:"clusterID"`
	// Hostname is the gateway node's name.
	Hostname string `json:"hostname"`
	// Cable is the driver the gateway runs.
	Cable CableDriver `json:"cable"`
	// Port is the UDP port the cable listens on.
	Port int32 `json:"port"`
	// PrivateIPs are the gateway node's own addresses (one per IP family).
	// +kubebuilder:validation:MaxItems=4
	// +kubebuilder:validation:items:MaxLength=45
	PrivateIPs []string `json:"privateIPs"`
	// PublicIPs are the addresses other clusters reach the gateway at; they differ from
	// PrivateIPs behind NAT.
	// +kubebuilder:validation:MaxItems=4
	// +kubebuilder:validation:items:MaxLength=45
	// +optional
	PublicIPs []string `json:"publicIPs,omitempty"`
	// PublicKey is the gateway's WireGuard public key (base64); empty for other drivers.
	// The private key never leaves the node.
	// +optional
	PublicKey string `json:"publicKey,omitempty"`
	// HealthCheckIPs are addresses inside the tunnel the gateway answers probes on.
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:MaxLength=45
	// +optional
	HealthCheckIPs []string `json:"healthCheckIPs,omitempty"`
	// Subnets are the cluster networks reachable through this gateway: its pod and
	// service CIDRs. Receivers route only those inside the cluster's allocation in the
	// fleet table, at most 8.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=49
	Subnets []string `json:"subnets"`
}

// +kubebuilder:object:root=true

// EndpointList is a list of Endpoints.
type EndpointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Endpoint `json:"items"`
}
