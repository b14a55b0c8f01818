// Package naming holds the conventions mcnet's components agree on for the objects they
// exchange through the broker and the imports made from them: labels, annotations,
// object names, and how to tell an import from a broker object or someone else's
// object. Publishers (controllers/serviceexport), importers (controllers/serviceimport),
// the DNS server (internal/dns) and the render (kustomize) all read them from here, so
// none of them reaches into another for a name.
package naming

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// Labels and annotations of the objects mcnet's controller writes.
const (
	// LabelServiceNamespace names the exported service's namespace on broker objects
	// (they all live in the broker namespace).
	LabelServiceNamespace = "multicluster.kubernetes.io/service-namespace"
	// AnnotationExportedLabels and AnnotationExportedAnnotations carry, on a broker
	// ServiceImport, the ServiceExport's exportedLabels and exportedAnnotations as JSON
	// objects. They travel in annotations rather than as the broker object's own labels,
	// which the broker's admission policy and mcnet's selectors read: an exported label
	// must not be able to pose as one of those.
	AnnotationExportedLabels      = "mcnet.io/exported-labels"
	AnnotationExportedAnnotations = "mcnet.io/exported-annotations"
	// ManagedByLabel marks objects mcnet's controller wrote (value ManagedBy). Flux's and
	// Argo CD's tracking labels are never copied onto them.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedBy is the value of ManagedByLabel.
	ManagedBy = "mcnet-controller"
	// SliceManagedBy is the endpointslice.kubernetes.io/managed-by value of mcnet's
	// EndpointSlices, so the EndpointSlice controllers of Kubernetes leave them alone.
	SliceManagedBy = "controller.mcnet.io"
	// NoProxyLabel set (empty) on mcnet's EndpointSlices keeps them out of kube-proxy's
	// informer, which selects slices without it (cmd/kube-proxy/app/server.go): clients
	// reach the addresses DNS hands out, so there is nothing to proxy, as for a headless
	// service.
	NoProxyLabel = corev1.IsHeadlessService
)

// BrokerServiceAccount is the ServiceAccount in the broker namespace whose credentials
// a cluster uses on the broker. The broker's admission policy reads the cluster's name
// back out of it, so it is also the writer identity every broker object is bound to.
func BrokerServiceAccount(cluster string) string { return BrokerServiceAccountPrefix + cluster }

// BrokerServiceAccountPrefix starts the name of every cluster's broker ServiceAccount.
const BrokerServiceAccountPrefix = "cluster-"

// BrokerName is the name of the broker ServiceImport a cluster publishes for a service,
// and the stem of its EndpointSlices'. Namespaces, services and clusters are DNS labels,
// so the dots keep every triple distinct.
func BrokerName(namespace, service, cluster string) string {
	return namespace + "." + service + "." + cluster
}

// BrokerLabels are the labels of a cluster's broker objects for one service.
func BrokerLabels(namespace, service, cluster string) map[string]string {
	return map[string]string{
		mcnetv1.ClusterLabel:           cluster,
		ManagedByLabel:                 ManagedBy,
		mcsv1alpha1.LabelServiceName:   service,
		LabelServiceNamespace:          namespace,
		mcsv1alpha1.LabelSourceCluster: cluster,
	}
}

// ServiceSelector selects the broker objects of one service, of every cluster.
func ServiceSelector(namespace, service string) client.MatchingLabels {
	return client.MatchingLabels{mcsv1alpha1.LabelServiceName: service, LabelServiceNamespace: namespace}
}

// ImportedSliceLabels are the labels of an EndpointSlice imported from cluster.
func ImportedSliceLabels(service, cluster string) map[string]string {
	return map[string]string{
		mcsv1alpha1.LabelServiceName:   service,
		mcsv1alpha1.LabelSourceCluster: cluster,
		discoveryv1.LabelManagedBy:     SliceManagedBy,
		ManagedByLabel:                 ManagedBy,
		NoProxyLabel:                   "",
	}
}

// ImportedSliceSelector selects the EndpointSlices mcnet imported for a service, in the
// service's namespace. Broker objects, which live in the broker cluster's API server
// beside local ones, carry mcnet.io/cluster; imports never do.
func ImportedSliceSelector(service string) client.MatchingLabelsSelector {
	sel := labels.SelectorFromSet(labels.Set{
		mcsv1alpha1.LabelServiceName: service,
		discoveryv1.LabelManagedBy:   SliceManagedBy,
	})
	notBroker, err := labels.NewRequirement(mcnetv1.ClusterLabel, selection.DoesNotExist, nil)
	if err != nil {
		panic(err) // a constant, valid requirement
	}
	return client.MatchingLabelsSelector{Selector: sel.Add(*notBroker)}
}

// IsImport says whether a local object is one of mcnet's imports, as opposed to a broker
// object when the broker is on this cluster's API server, or someone else's object.
func IsImport(o client.Object) bool {
	l := o.GetLabels()
	_, broker := l[mcnetv1.ClusterLabel]
	return l[ManagedByLabel] == ManagedBy && !broker
}

// IsImportedSlice says whether a local EndpointSlice is one mcnet imported.
func IsImportedSlice(o client.Object) bool {
	return IsImport(o) && o.GetLabels()[discoveryv1.LabelManagedBy] == SliceManagedBy
}

// The broker credentials: the Secret in mcnet-system that holds a member cluster's
// kubeconfig for the broker. kubectl mcnet broker credentials writes it out of band
// (never into Git), the controller mounts it, diagnose checks it.
const (
	// BrokerCredentialsSecret is the Secret's name.
	BrokerCredentialsSecret = "mcnet-broker-credentials"
	// BrokerCredentialsKey is the data key of the kubeconfig.
	BrokerCredentialsKey = "kubeconfig"
	// AnnotationExpires is when the kubeconfig's token runs out (RFC 3339), so
	// diagnose can warn before it does.
	AnnotationExpires = "mcnet.io/expires"
)

// BrokerCredentials is the broker-credentials Secret for a member cluster; the
// cluster label says whose identity it carries.
func BrokerCredentials(cluster string, kubeconfig []byte, expires time.Time) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        BrokerCredentialsSecret,
			Namespace:   mcnetv1.SystemNamespace,
			Labels:      map[string]string{"app.kubernetes.io/part-of": "mcnet", mcnetv1.ClusterLabel: cluster},
			Annotations: map[string]string{AnnotationExpires: expires.UTC().Format(time.RFC3339)},
		},
		Type:       corev1.SecretTypeOpaque,
		StringData: map[string]string{BrokerCredentialsKey: string(kubeconfig)},
	}
}
