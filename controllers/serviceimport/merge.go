package serviceimport

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/mcnet-io/mcnet/internal/naming"
)

// Export is one cluster's export of a service as published on the broker.
type Export struct {
	Cluster string
	Created time.Time
	Spec    mcsv1alpha1.ServiceImportSpec
	// Labels and Annotations are the ServiceExport's exportedLabels and
	// exportedAnnotations.
	Labels, Annotations map[string]string
}

// ExportFrom reads an Export from a broker ServiceImport.
func ExportFrom(si *mcsv1alpha1.ServiceImport) Export {
	// Created is the time the broker's API server set, never one the publisher wrote:
	// an annotation dated back would let any cluster take a service over.
	e := Export{Cluster: si.Labels[mcsv1alpha1.LabelSourceCluster], Spec: si.Spec, Created: si.CreationTimestamp.Time}
	e.Labels = decodeMap(si.Annotations[naming.AnnotationExportedLabels])
	e.Annotations = decodeMap(si.Annotations[naming.AnnotationExportedAnnotations])
	return e
}

// EncodeMap writes exported labels or annotations for a broker annotation; empty maps
// are left out (""), so an export without them carries no annotation.
func EncodeMap(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	b, err := json.Marshal(m) // a map of strings always marshals; keys come out sorted
	if err != nil {
		return ""
	}
	return string(b)
}

// decodeMap reads what EncodeMap wrote; anything unreadable counts as nothing exported.
func decodeMap(s string) map[string]string {
	if s == "" {
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil || len(m) == 0 {
		return nil
	}
	return m
}

// Conflict is why an export of a service disagrees with the others.
type Conflict struct {
	// Reasons are ServiceExport Conflict reasons (PortConflict, TypeConflict, ...), each
	// once, in a fixed order.
	Reasons []mcsv1alpha1.ServiceExportConditionReason
	// Message names the fields, the clusters that differ, the winning cluster and why
	// it won.
	Message string
}

// Reason is the Conflict condition's reason: the reasons joined by commas, as the MCS
// API combines them.
func (c Conflict) Reason() string {
	rs := make([]string, len(c.Reasons))
	for i, r := range c.Reasons {
		rs[i] = string(r)
	}
	return strings.Join(rs, ",")
}

// Merged is the ServiceImport every cluster derives from the exports of one service.
type Merged struct {
	// Spec is the imported service: the oldest export's type, session affinity,
	// internal traffic policy and traffic distribution; the union of the included
	// exports' ports (a port that contradicts an older one is dropped) and IP families.
	Spec mcsv1alpha1.ServiceImportSpec
	// Labels and Annotations are the oldest export's exported labels and annotations.
	Labels, Annotations map[string]string
	// Clusters whose endpoints the import includes, sorted: every exporting cluster
	// except those whose service type contradicts the oldest export's.
	Clusters []string
	// Ports are, for each included cluster, the import's ports it serves: those it
	// exports with the same name, protocol and number. Traffic to an import port goes
	// only to the clusters that serve it.
	Ports map[string][]mcsv1alpha1.ServicePort
	// Conflicts by cluster. The MCS API asks for the Conflict condition on every
	// export of a conflicting set, so either every exporting cluster is present, with
	// the same conflict, or none is.
	Conflicts map[string]Conflict
}

// conflictOrder is the order of reasons in a Conflict.
var conflictOrder = []mcsv1alpha1.ServiceExportConditionReason{
	mcsv1alpha1.ServiceExportReasonTypeConflict,
	mcsv1alpha1.ServiceExportReasonPortConflict,
	mcsv1alpha1.ServiceExportReasonIPFamilyConflict,
	mcsv1alpha1.ServiceExportReasonSessionAffinityConflict,
	mcsv1alpha1.ServiceExportReasonSessionAffinityConfigConflict,
	mcsv1alpha1.ServiceExportReasonInternalTrafficPolicyConflict,
	mcsv1alpha1.ServiceExportReasonTrafficDistributionConflict,
	mcsv1alpha1.ServiceExportReasonLabelsConflict,
	mcsv1alpha1.ServiceExportReasonAnnotationsConflict,
}

// Merge combines the exports of one service following the MCS KEP. The oldest export
// (ties broken by cluster name) decides the type, session affinity, internal traffic
// policy, traffic distribution and exported labels and annotations. Ports are merged:
// a port whose name or number contradicts an older export's is dropped. An export of
// another type is left out of the import: headless pod addresses cannot stand in for a
// ClusterIP, nor the other way round. Whenever the exports differ in any of these
// (ports included: a port that only some clusters serve is a difference), every export
// of the service gets the same Conflict, naming the differences and the winner.
func Merge(exports []Export) Merged {
	exports = slices.Clone(exports)
	slices.SortFunc(exports, func(a, b Export) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Cluster, b.Cluster)
	})
	m := Merged{Conflicts: map[string]Conflict{}, Ports: map[string][]mcsv1alpha1.ServicePort{}}
	if len(exports) == 0 {
		return m
	}
	oldest := exports[0]
	m.Spec = mcsv1alpha1.ServiceImportSpec{
		Type:                  oldest.Spec.Type,
		SessionAffinity:       oldest.Spec.SessionAffinity,
		SessionAffinityConfig: oldest.Spec.SessionAffinityConfig.DeepCopy(),
		InternalTrafficPolicy: copyPtr(oldest.Spec.InternalTrafficPolicy),
		TrafficDistribution:   copyPtr(oldest.Spec.TrafficDistribution),
	}
	m.Labels, m.Annotations = maps.Clone(oldest.Labels), maps.Clone(oldest.Annotations)
	found := map[mcsv1alpha1.ServiceExportConditionReason][]string{}
	flag := func(r mcsv1alpha1.ServiceExportConditionReason, detail string) {
		found[r] = append(found[r], detail)
	}
	var included []Export
	for _, e := range exports {
		if e.Spec.Type != oldest.Spec.Type {
			flag(mcsv1alpha1.ServiceExportReasonTypeConflict, fmt.Sprintf("cluster %s exports type %s (left out of the import)", e.Cluster, e.Spec.Type))
			continue
		}
		included = append(included, e)
		m.Clusters = append(m.Clusters, e.Cluster)
		for _, p := range e.Spec.Ports {
			if bad, ok := addPort(&m.Spec.Ports, p); !ok {
				flag(mcsv1alpha1.ServiceExportReasonPortConflict, fmt.Sprintf("cluster %s exports %s", e.Cluster, bad))
			}
		}
		for _, f := range e.Spec.IPFamilies {
			if !slices.Contains(m.Spec.IPFamilies, f) {
				m.Spec.IPFamilies = append(m.Spec.IPFamilies, f)
			}
		}
	}
	for _, e := range included {
		for _, p := range m.Spec.Ports {
			if slices.ContainsFunc(e.Spec.Ports, func(q mcsv1alpha1.ServicePort) bool { return samePort(p, q) }) {
				m.Ports[e.Cluster] = append(m.Ports[e.Cluster], p)
			} else if !portContradicted(e.Spec.Ports, p) {
				flag(mcsv1alpha1.ServiceExportReasonPortConflict, fmt.Sprintf("cluster %s does not export %s", e.Cluster, describePort(p)))
			}
		}
		if !sameFamilies(e.Spec.IPFamilies, m.Spec.IPFamilies) {
			flag(mcsv1alpha1.ServiceExportReasonIPFamilyConflict, fmt.Sprintf("cluster %s exports IP families %s (imported as %s)", e.Cluster, families(e.Spec.IPFamilies), families(m.Spec.IPFamilies)))
		}
	}
	for _, e := range exports[1:] {
		if affinity(e.Spec.SessionAffinity) != affinity(oldest.Spec.SessionAffinity) {
			flag(mcsv1alpha1.ServiceExportReasonSessionAffinityConflict, fmt.Sprintf("cluster %s exports sessionAffinity %s (imported as %s)", e.Cluster, affinity(e.Spec.SessionAffinity), affinity(oldest.Spec.SessionAffinity)))
		} else if !reflect.DeepEqual(e.Spec.SessionAffinityConfig, oldest.Spec.SessionAffinityConfig) {
			flag(mcsv1alpha1.ServiceExportReasonSessionAffinityConfigConflict, fmt.Sprintf("cluster %s exports another sessionAffinityConfig", e.Cluster))
		}
		if a, b := deref(e.Spec.InternalTrafficPolicy, corev1.ServiceInternalTrafficPolicyCluster), deref(oldest.Spec.InternalTrafficPolicy, corev1.ServiceInternalTrafficPolicyCluster); a != b {
			flag(mcsv1alpha1.ServiceExportReasonInternalTrafficPolicyConflict, fmt.Sprintf("cluster %s exports internalTrafficPolicy %s (imported as %s)", e.Cluster, a, b))
		}
		if a, b := deref(e.Spec.TrafficDistribution, "unset"), deref(oldest.Spec.TrafficDistribution, "unset"); a != b {
			flag(mcsv1alpha1.ServiceExportReasonTrafficDistributionConflict, fmt.Sprintf("cluster %s exports trafficDistribution %s (imported as %s)", e.Cluster, a, b))
		}
		if !maps.Equal(e.Labels, oldest.Labels) {
			flag(mcsv1alpha1.ServiceExportReasonLabelsConflict, fmt.Sprintf("cluster %s exports other labels", e.Cluster))
		}
		if !maps.Equal(e.Annotations, oldest.Annotations) {
			flag(mcsv1alpha1.ServiceExportReasonAnnotationsConflict, fmt.Sprintf("cluster %s exports other annotations", e.Cluster))
		}
	}
	slices.Sort(m.Clusters)
	if len(found) == 0 {
		return m
	}
	var c Conflict
	var details []string
	for _, r := range conflictOrder {
		if d := found[r]; len(d) > 0 {
			c.Reasons = append(c.Reasons, r)
			details = append(details, d...)
		}
	}
	c.Message = fmt.Sprintf("conflicting exports: %s; the oldest export (cluster %s, exported %s) wins",
		strings.Join(details, "; "), oldest.Cluster, oldest.Created.UTC().Format(time.RFC3339))
	for _, e := range exports {
		m.Conflicts[e.Cluster] = c
	}
	return m
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func deref[T ~string](p *T, unset T) T {
	if p == nil {
		return unset
	}
	return *p
}

func affinity(a corev1.ServiceAffinity) string {
	if a == "" {
		return string(corev1.ServiceAffinityNone)
	}
	return string(a)
}

func proto(p mcsv1alpha1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

// samePort says whether two ports have the same name, number and protocol.
func samePort(p, q mcsv1alpha1.ServicePort) bool {
	return p.Name == q.Name && p.Port == q.Port && proto(p) == proto(q)
}

// portContradicted says whether ports has a port that contradicts p (same name or
// same number and protocol, but not both); that was reported when p won.
func portContradicted(ports []mcsv1alpha1.ServicePort, p mcsv1alpha1.ServicePort) bool {
	return slices.ContainsFunc(ports, func(q mcsv1alpha1.ServicePort) bool {
		return !samePort(p, q) && (p.Name == q.Name || (p.Port == q.Port && proto(p) == proto(q)))
	})
}

// addPort adds p to ports unless an existing port has its name or its number and
// protocol with a different definition; then it says which.
func addPort(ports *[]mcsv1alpha1.ServicePort, p mcsv1alpha1.ServicePort) (string, bool) {
	for _, q := range *ports {
		sameName := q.Name == p.Name
		sameNumber := q.Port == p.Port && proto(q) == proto(p)
		switch {
		case sameName && sameNumber:
			return "", true // the same port again; its appProtocol follows the oldest
		case sameName || sameNumber:
			return fmt.Sprintf("%s (imported as %s)", describePort(p), describePort(q)), false
		}
	}
	*ports = append(*ports, p)
	return "", true
}

func describePort(p mcsv1alpha1.ServicePort) string {
	name := p.Name
	if name == "" {
		name = `""`
	}
	return fmt.Sprintf("port %s %d/%s", name, p.Port, proto(p))
}

func sameFamilies(a, b []corev1.IPFamily) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(f corev1.IPFamily) bool { return !slices.Contains(b, f) })
}

func families(fs []corev1.IPFamily) string {
	if len(fs) == 0 {
		return "none"
	}
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = string(f)
	}
	return strings.Join(s, ",")
}
