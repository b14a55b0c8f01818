package serviceimport

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// Labels and annotations of the objects mcnet's discovery writes.
const (
	// LabelServiceNamespace names the exported service's namespace on broker objects
	// (they all live in the broker namespace).
	LabelServiceNamespace = "multicluster.kubernetes.io/service-namespace"
	// AnnotationExportCreated carries, on a broker ServiceImport, when its ServiceExport
	// was created: the oldest export wins conflicts.
	AnnotationExportCreated = "mcnet.io/export-creation-timestamp"
	// ManagedByLabel marks objects mcnet's controller wrote (value ManagedBy).
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

// Export is one cluster's export of a service as published on the broker.
type Export struct {
	Cluster string
	Created time.Time
	Spec    mcsv1alpha1.ServiceImportSpec
}

// ExportFrom reads an Export from a broker ServiceImport.
func ExportFrom(si *mcsv1alpha1.ServiceImport) Export {
	e := Export{Cluster: si.Labels[mcsv1alpha1.LabelSourceCluster], Spec: si.Spec}
	if t, err := time.Parse(time.RFC3339, si.Annotations[AnnotationExportCreated]); err == nil {
		e.Created = t
	} else {
		e.Created = si.CreationTimestamp.Time
	}
	return e
}

// Conflict is why one cluster's export disagrees with the oldest one.
type Conflict struct {
	// Reasons are ServiceExport Conflict reasons (PortConflict, TypeConflict, ...).
	Reasons []mcsv1alpha1.ServiceExportConditionReason
	// Message names the fields, the winning cluster and why it won.
	Message string
}

// Merged is the ServiceImport every cluster derives from the exports of one service.
type Merged struct {
	// Spec is the imported service: the oldest export's type and session affinity, the
	// union of every export's ports (a port that contradicts an older one is dropped).
	Spec mcsv1alpha1.ServiceImportSpec
	// Clusters whose endpoints the import includes, sorted: every exporting cluster
	// except those whose service type contradicts the oldest export's.
	Clusters []string
	// Conflicts by cluster; clusters without conflicts are absent.
	Conflicts map[string]Conflict
}

// Merge combines the exports of one service following the MCS KEP: the oldest export
// (ties broken by cluster name) decides the type and session affinity; ports are merged,
// and a port whose name or number contradicts an older export's is dropped and flagged.
// An export of another type is flagged and left out of the import: headless pod
// addresses cannot stand in for a ClusterIP, nor the other way round.
func Merge(exports []Export) Merged {
	exports = slices.Clone(exports)
	slices.SortFunc(exports, func(a, b Export) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Cluster, b.Cluster)
	})
	m := Merged{Conflicts: map[string]Conflict{}}
	if len(exports) == 0 {
		return m
	}
	oldest := exports[0]
	m.Spec = mcsv1alpha1.ServiceImportSpec{
		Type:                  oldest.Spec.Type,
		SessionAffinity:       oldest.Spec.SessionAffinity,
		SessionAffinityConfig: oldest.Spec.SessionAffinityConfig.DeepCopy(),
	}
	why := fmt.Sprintf("the oldest export (cluster %s, exported %s) wins", oldest.Cluster, oldest.Created.UTC().Format(time.RFC3339))
	for _, e := range exports {
		var c Conflict
		var fields []string
		flag := func(r mcsv1alpha1.ServiceExportConditionReason, field string) {
			c.Reasons = append(c.Reasons, r)
			fields = append(fields, field)
		}
		if e.Spec.Type != oldest.Spec.Type {
			flag(mcsv1alpha1.ServiceExportReasonTypeConflict, fmt.Sprintf("type %s (imported as %s)", e.Spec.Type, oldest.Spec.Type))
		} else {
			m.Clusters = append(m.Clusters, e.Cluster)
			for _, p := range e.Spec.Ports {
				if bad, ok := addPort(&m.Spec.Ports, p); !ok {
					flag(mcsv1alpha1.ServiceExportReasonPortConflict, bad)
				}
			}
			for _, f := range e.Spec.IPFamilies {
				if !slices.Contains(m.Spec.IPFamilies, f) {
					m.Spec.IPFamilies = append(m.Spec.IPFamilies, f)
				}
			}
		}
		if e.Spec.SessionAffinity != oldest.Spec.SessionAffinity {
			flag(mcsv1alpha1.ServiceExportReasonSessionAffinityConflict, fmt.Sprintf("sessionAffinity %s (imported as %s)", affinity(e.Spec.SessionAffinity), affinity(oldest.Spec.SessionAffinity)))
		} else if !reflect.DeepEqual(e.Spec.SessionAffinityConfig, oldest.Spec.SessionAffinityConfig) {
			flag(mcsv1alpha1.ServiceExportReasonSessionAffinityConfigConflict, "sessionAffinityConfig")
		}
		if len(c.Reasons) > 0 {
			c.Message = "conflicting " + strings.Join(fields, ", ") + ": " + why
			m.Conflicts[e.Cluster] = c
		}
	}
	slices.Sort(m.Clusters)
	return m
}

func affinity(a corev1.ServiceAffinity) string {
	if a == "" {
		return string(corev1.ServiceAffinityNone)
	}
	return string(a)
}

// addPort adds p to ports unless an existing port has its name or its number and
// protocol with a different definition; then it says which.
func addPort(ports *[]mcsv1alpha1.ServicePort, p mcsv1alpha1.ServicePort) (string, bool) {
	proto := func(p mcsv1alpha1.ServicePort) corev1.Protocol {
		if p.Protocol == "" {
			return corev1.ProtocolTCP
		}
		return p.Protocol
	}
	for _, q := range *ports {
		sameName := q.Name == p.Name
		sameNumber := q.Port == p.Port && proto(q) == proto(p)
		switch {
		case sameName && sameNumber:
			return "", true // the same port again; its appProtocol follows the oldest
		case sameName || sameNumber:
			return fmt.Sprintf("port %s %d/%s (imported as %s %d/%s)", portName(p), p.Port, proto(p), portName(q), q.Port, proto(q)), false
		}
	}
	*ports = append(*ports, p)
	return "", true
}

func portName(p mcsv1alpha1.ServicePort) string {
	if p.Name == "" {
		return `""`
	}
	return p.Name
}
