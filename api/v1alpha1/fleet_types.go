package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A CRD rather than a typed document inside a ConfigMap: the API server validates every
// entry (formats, sizes, at most MaxClusters members) before any receiver sees it, the
// admission policy's CEL reads it typed as its paramKind, and RBAC can grant reading it
// and nothing else.

// Fleet is the fleet's membership table: every member cluster and the networks Git
// allocates to it. The render writes it once, from the ClusterSet, as a shared base that
// every cluster applies (one object of O(N) size for the whole tree), named after the
// ClusterSet. It is the trust anchor of what clusters publish on the broker: gateways,
// route agents, the service importer and DNS accept only clusters in the table, and
// from each only what lies inside its own allocation; the broker's admission policy
// reads it as its parameter to hold every writer to its allocation. It is
// cluster-scoped: it describes the fleet, not a namespace, and the admission policy
// refers to it by name alone.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=mcnet
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Fleet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec FleetSpec `json:"spec"`
}

// FleetSpec lists the members of a fleet.
type FleetSpec struct {
	// Clusters are the member clusters, sorted by name.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1024
	Clusters []FleetMember `json:"clusters"`
}

// FleetMember is one member cluster as Git declares it: what others may route to it
// and how its gateways listen.
// +kubebuilder:validation:XValidation:rule="self.podCIDRs.all(c, isCIDR(c) && cidr(c) == cidr(c).masked())",message="podCIDRs must be CIDRs without host bits, e.g. 10.10.0.0/16"
// +kubebuilder:validation:XValidation:rule="self.serviceCIDRs.all(c, isCIDR(c) && cidr(c) == cidr(c).masked())",message="serviceCIDRs must be CIDRs without host bits, e.g. 10.110.0.0/16"
type FleetMember struct {
	// Name identifies the cluster: its Cluster and Endpoint objects, its broker
	// identity and its DNS names carry it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// PodCIDRs are the cluster's pod networks, one per IP family.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:MaxLength=49
	PodCIDRs []string `json:"podCIDRs"`
	// ServiceCIDRs are the cluster's service networks, one per IP family.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:MaxLength=49
	ServiceCIDRs []string `json:"serviceCIDRs"`
	// Cable is the cable driver the cluster prefers.
	Cable CableDriver `json:"cable"`
	// CablePort is the UDP port the cluster's gateways listen on with their own driver.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	CablePort int32 `json:"cablePort"`
	// GlobalPodCIDRs is the cluster's global pod range (IPv4, the size of its IPv4 pod
	// CIDR), kept here once allocated so that later renders never move it.
	// +kubebuilder:validation:MaxItems=1
	// +kubebuilder:validation:items:MaxLength=18
	// +optional
	GlobalPodCIDRs []string `json:"globalPodCIDRs,omitempty"`
	// GlobalServiceCIDRs is the cluster's global service range (IPv4, the size of its
	// IPv4 service CIDR), kept like GlobalPodCIDRs.
	// +kubebuilder:validation:MaxItems=1
	// +kubebuilder:validation:items:MaxLength=18
	// +optional
	GlobalServiceCIDRs []string `json:"globalServiceCIDRs,omitempty"`
	// Remapped says the cluster's networks overlap another member's: every other
	// cluster reaches its pods at GlobalPodCIDRs and its services at
	// GlobalServiceCIDRs (its gateway maps them 1:1 onto the real ones both ways).
	// +optional
	Remapped bool `json:"remapped,omitempty"`
	// MaxExports is how many of the cluster's exports receivers import: its
	// MaxExports oldest on the broker (by the creationTimestamp the broker's API server
	// set), the rest ignored. 0 means DefaultMaxExports.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65536
	// +optional
	MaxExports int32 `json:"maxExports,omitempty"`
}

// Receivers' caps on what one cluster may make every other cluster import. A cap is
// enforced by each receiver on its own, from the fleet table, so it holds whatever
// the broker admits and needs no quota controller on the broker.
const (
	// DefaultMaxExports is a member's export cap when the fleet names none.
	DefaultMaxExports = 512
	// MaxSlicesPerExport is how many EndpointSlices of one cluster's export of one
	// service receivers import (each holds up to 100 endpoints as exporters write
	// them, 1000 at most), the oldest first.
	MaxSlicesPerExport = 64
)

// +kubebuilder:object:root=true

// FleetList is a list of Fleets.
type FleetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Fleet `json:"items"`
}
