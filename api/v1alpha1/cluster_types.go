package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Cluster announces one member cluster to the others: its networks and the cable it
// prefers. Each cluster writes its own Cluster to the broker; the controller mirrors the
// others' into the cluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mcc,categories=mcnet
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterID`
// +kubebuilder:printcolumn:name="Pod CIDRs",type=string,JSONPath=`.spec.podCIDRs`
// +kubebuilder:printcolumn:name="Service CIDRs",type=string,JSONPath=`.spec.serviceCIDRs`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Cluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterObjSpec   `json:"spec"`
	Status ClusterObjStatus `json:"status,omitempty"`
}

// ClusterObjSpec is what a cluster announces about itself.
type ClusterObjSpec struct {
	// ClusterID is the cluster's name in the fleet.
	ClusterID string `json:"clusterID"`
	// PodCIDRs are the cluster's pod networks (one per IP family).
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:MaxLength=49
	PodCIDRs []string `json:"podCIDRs"`
	// ServiceCIDRs are the cluster's service networks (one per IP family).
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:MaxLength=49
	ServiceCIDRs []string `json:"serviceCIDRs"`
	// Cable is the cable driver the cluster's gateways run.
	Cable CableDriver `json:"cable"`
	// Version of the mcnet controller that published this object.
	// +optional
	Version string `json:"version,omitempty"`
}

// ClusterObjStatus reports what the local controller observed.
type ClusterObjStatus struct {
	// Conditions in kstatus form (Ready, Reconciling, Stalled).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true

// ClusterList is a list of Clusters.
type ClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Cluster `json:"items"`
}
