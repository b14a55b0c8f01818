// Package v1alpha1 holds mcnet's API: the ClusterSet fleet file that render reads; the
// Fleet membership table and the per-cluster AgentConfig that render writes from it; and
// the Cluster, Endpoint and Gateway objects the in-cluster components exchange through
// the broker. Defaulting (SetDefaults_*) and validation (Validate*) live beside the
// types. Group mcnet.io, version v1alpha1.
//
// +kubebuilder:object:generate=true
// +groupName=mcnet.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "mcnet.io", Version: "v1alpha1"}

	// SchemeBuilder registers this package's kinds with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&ClusterSet{}, &ClusterSetList{},
		&Fleet{}, &FleetList{},
		&Cluster{}, &ClusterList{},
		&Endpoint{}, &EndpointList{},
		&Gateway{}, &GatewayList{},
		&NetworkTest{}, &NetworkTestList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
