package kustomize

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// The About API (KEP-2149): a cluster-scoped ClusterProperty per fact about the cluster.
// Two are well known, and the MCS API relies on them: cluster.clusterset.k8s.io, the
// cluster's name, unique in its ClusterSet, and clusterset.k8s.io, the ClusterSet's.
// The render writes both from the fleet, so they come from Git like everything else.
const (
	aboutGroup   = "about.k8s.io"
	aboutCRDFile = "about.k8s.io_clusterproperties.yaml"
	// ClusterIDProperty is the ClusterProperty whose value is the cluster's
	// name in its ClusterSet (the fleet's name for it).
	ClusterIDProperty = "cluster.clusterset.k8s.io"
	// ClusterSetIDProperty is the ClusterProperty whose value is the
	// ClusterSet's name (the fleet file's metadata.name).
	ClusterSetIDProperty = "clusterset.k8s.io"
	// clusterPropertiesFile is where an overlay keeps its two properties.
	clusterPropertiesFile = "clusterproperties.yaml"
)

// clusterPropertyCRD is the About API's ClusterProperty CRD as the KEP defines it:
// about.k8s.io/v1alpha1, cluster-scoped, spec.value a string of up to 128k characters.
func clusterPropertyCRD() *apiextensionsv1.CustomResourceDefinition {
	maxLen := int64(128 * 1024)
	return &apiextensionsv1.CustomResourceDefinition{
		TypeMeta: metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "clusterproperties." + aboutGroup,
			// *.k8s.io groups are protected: the API server wants the API's approval
			// on record, here the KEP that defines it.
			Annotations: map[string]string{"api-approved.kubernetes.io": "https://github.com/kubernetes/enhancements/tree/master/keps/sig-multicluster/2149-clusterid"},
		},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: aboutGroup,
			Scope: apiextensionsv1.ClusterScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Plural: "clusterproperties", Singular: "clusterproperty", Kind: "ClusterProperty", ListKind: "ClusterPropertyList",
			},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1alpha1", Served: true, Storage: true,
				// kubectl get clusterproperties shows each value, not only the names.
				AdditionalPrinterColumns: []apiextensionsv1.CustomResourceColumnDefinition{
					{Name: "value", Type: "string", JSONPath: ".spec.value"},
					{Name: "age", Type: "date", JSONPath: ".metadata.creationTimestamp"},
				},
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type:        "object",
					Description: "ClusterProperty is a name/value fact about the cluster it is in (the About API, KEP-2149).",
					Required:    []string{"spec"},
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"apiVersion": {Type: "string"},
						"kind":       {Type: "string"},
						"metadata":   {Type: "object"},
						"spec": {
							Type:     "object",
							Required: []string{"value"},
							Properties: map[string]apiextensionsv1.JSONSchemaProps{
								"value": {Type: "string", MinLength: new(int64(1)), MaxLength: &maxLen, Description: "The property's value."},
							},
						},
					},
				}},
			}},
		},
	}
}

// clusterProperties are cluster c's two well-known properties. They are cluster-scoped
// objects named after the property, so a cluster holds exactly one of each.
func clusterProperties(cs *mcnetv1.ClusterSet, c *mcnetv1.ClusterSpec) []any {
	prop := func(name, value string) map[string]any {
		return map[string]any{
			"apiVersion": aboutGroup + "/v1alpha1",
			"kind":       "ClusterProperty",
			"metadata":   map[string]any{"name": name},
			"spec":       map[string]any{"value": value},
		}
	}
	return []any{prop(ClusterIDProperty, c.Name), prop(ClusterSetIDProperty, cs.Name)}
}
