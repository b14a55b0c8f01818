package serviceimport

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/mcnet-io/mcnet/internal/clusterhealth"

	"github.com/mcnet-io/mcnet/internal/naming"
)

// LabelClusterSetIPOf names, on the derived Service that holds a ClusterSetIP and on its
// EndpointSlices, the imported service the ClusterSetIP belongs to.
const LabelClusterSetIPOf = "mcnet.io/clusterset-ip-of"

// rttBand and rttSlack say how much farther than the nearest remote cluster another may
// be and still take a share of a ClusterSetIP's traffic: up to rttBand times its RTT, or
// rttSlack more, whichever is larger (differences below a millisecond are noise, not
// distance). kube-proxy spreads connections evenly over endpoints and cannot weigh
// them, so the VIP's RTT preference is this cut-off.
const (
	rttBand  = 2
	rttSlack = time.Millisecond
)

// minRTT keeps near-zero measurements apart from nothing: below it, clusters are equally
// close.
const minRTT = 100 * time.Microsecond

// DerivedName is the name of the Service, in the import's namespace, whose ClusterIPs are
// the import's ClusterSetIPs. It is a hash so that it never takes a name a user could
// want, and fits any service name in a DNS label.
func DerivedName(service string) string {
	sum := sha256.Sum256([]byte(service))
	return "mcnet-" + hex.EncodeToString(sum[:])[:10]
}

// Choose says, for one IP family, which clusters a ClusterSetIP sends each import port's
// traffic to. A cluster is a candidate for a port when it serves it (served, from Merge)
// and has a ready endpoint of the family (ready). The local cluster, when a candidate,
// takes the port alone: its traffic never leaves the cluster. Otherwise the connected
// remote candidates take it, those within rttBand or rttSlack of the nearest one (an
// RTT not measured yet counts as the slowest measured). A cluster whose connection is
// down is never chosen: traffic would not reach it. The result maps each chosen cluster
// to its ports, in import order.
func Choose(ports []mcsv1alpha1.ServicePort, served map[string][]mcsv1alpha1.ServicePort, ready map[string]bool, local string, health map[string]clusterhealth.Health) map[string][]mcsv1alpha1.ServicePort {
	out := map[string][]mcsv1alpha1.ServicePort{}
	for _, p := range ports {
		var remote []string
		localServes := false
		for c, sp := range served {
			if !ready[c] || !slices.ContainsFunc(sp, func(q mcsv1alpha1.ServicePort) bool { return samePort(p, q) }) {
				continue
			}
			if c == local {
				localServes = true
			} else if health[c].Connected {
				remote = append(remote, c)
			}
		}
		if localServes {
			out[local] = append(out[local], p)
			continue
		}
		for _, c := range nearest(remote, health) {
			out[c] = append(out[c], p)
		}
	}
	return out
}

// nearest keeps the clusters within rttBand of the nearest one.
func nearest(clusters []string, health map[string]clusterhealth.Health) []string {
	var slowest time.Duration
	for _, c := range clusters {
		slowest = max(slowest, health[c].RTT)
	}
	rtt := func(c string) time.Duration {
		if r := health[c].RTT; r > 0 {
			return max(r, minRTT)
		}
		return max(slowest, minRTT)
	}
	best := time.Duration(-1)
	for _, c := range clusters {
		if best < 0 || rtt(c) < best {
			best = rtt(c)
		}
	}
	var out []string
	for _, c := range clusters {
		if rtt(c) <= max(rttBand*best, best+rttSlack) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// clusterSetIP gives a ClusterSetIP import its VIPs and keeps them pointing at the
// chosen clusters; for a headless import it removes any. It returns the import's Ready
// condition.
//
// The VIP is the ClusterIP of a derived Service without a selector in the import's
// namespace (DerivedName), which the local API server allocates from the cluster's
// service CIDRs and the cluster's own kube-proxy programs from the EndpointSlices
// written here: the local cluster's ready pods, or the ClusterIPs of the chosen remote
// clusters, which mcnet's tunnels route and the remote kube-proxy balances over its own
// pods.
func (r *Reconciler) clusterSetIP(ctx context.Context, si *mcsv1alpha1.ServiceImport, m Merged, imported []*discoveryv1.EndpointSlice) (metav1.Condition, error) {
	if m.Spec.Type != mcsv1alpha1.ClusterSetIP {
		if err := r.removeClusterSetIP(ctx, si.Namespace, si.Name); err != nil {
			return metav1.Condition{}, err
		}
		return readyCondition(m), nil
	}
	svc, notReady, err := r.ensureDerived(ctx, si, m)
	if err != nil || svc == nil {
		return notReady, err
	}
	if !slices.Equal(si.Spec.IPs, svc.Spec.ClusterIPs) || !slices.Equal(si.Spec.IPFamilies, svc.Spec.IPFamilies) {
		si.Spec.IPs, si.Spec.IPFamilies = slices.Clone(svc.Spec.ClusterIPs), slices.Clone(svc.Spec.IPFamilies)
		if err := r.Local.Update(ctx, si); err != nil {
			return metav1.Condition{}, fmt.Errorf("record ClusterSetIPs of %s/%s: %w", si.Namespace, si.Name, err)
		}
		log.FromContext(ctx).Info("allocated ClusterSetIP", "namespace", si.Namespace, "service", si.Name, "ips", svc.Spec.ClusterIPs)
	}
	health, err := r.health(ctx)
	if err != nil {
		return metav1.Condition{}, err
	}
	var local discoveryv1.EndpointSliceList
	if err := r.Local.List(ctx, &local, client.InNamespace(si.Namespace), localSliceSelector(si.Name)); err != nil {
		return metav1.Condition{}, err
	}
	want := vipSlices(svc, si.Name, r.ClusterID, m, imported, local.Items, health)
	var have discoveryv1.EndpointSliceList
	if err := r.Local.List(ctx, &have, client.InNamespace(si.Namespace), client.MatchingLabels{LabelClusterSetIPOf: si.Name, discoveryv1.LabelManagedBy: naming.SliceManagedBy}); err != nil {
		return metav1.Condition{}, err
	}
	if _, err := SyncSlices(ctx, r.Local, have.Items, want); err != nil {
		return metav1.Condition{}, fmt.Errorf("ClusterSetIP endpoints of %s/%s: %w", si.Namespace, si.Name, err)
	}
	c := readyCondition(m)
	c.Message += "; ClusterSetIPs " + strings.Join(svc.Spec.ClusterIPs, ", ")
	return c, nil
}

func readyCondition(m Merged) metav1.Condition {
	return metav1.Condition{Status: metav1.ConditionTrue, Reason: string(mcsv1alpha1.ServiceImportReasonReady),
		Message: "imported from " + strings.Join(m.Clusters, ", ")}
}

// health is the clusters' health as the tracker last judged it (healthWatch refreshes
// it), so a reconcile during an API-server outage keeps the endpoints it had.
func (r *Reconciler) health(ctx context.Context) (map[string]clusterhealth.Health, error) {
	h, err := r.tracker.Health(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the local Gateways: %w", err)
	}
	return h, nil
}

// localSliceSelector selects the EndpointSlices Kubernetes keeps for a local Service.
func localSliceSelector(service string) client.MatchingLabelsSelector {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: service})
	notMine, err := labels.NewRequirement(discoveryv1.LabelManagedBy, selection.NotEquals, []string{naming.SliceManagedBy})
	if err != nil {
		panic(err) // a constant, valid requirement
	}
	return client.MatchingLabelsSelector{Selector: sel.Add(*notMine)}
}

// derivedSpec is the derived Service the import needs.
func derivedSpec(m Merged) corev1.ServiceSpec {
	spec := corev1.ServiceSpec{
		Type:                  corev1.ServiceTypeClusterIP,
		SessionAffinity:       cmp.Or(m.Spec.SessionAffinity, corev1.ServiceAffinityNone),
		SessionAffinityConfig: m.Spec.SessionAffinityConfig.DeepCopy(),
		// Endpoints carry no node names; the import's own policy is for the clusters
		// the traffic ends in, whose kube-proxy applies it.
		InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyCluster),
	}
	for _, p := range m.Spec.Ports {
		spec.Ports = append(spec.Ports, corev1.ServicePort{Name: p.Name, Protocol: proto(p), Port: p.Port, AppProtocol: p.AppProtocol, TargetPort: intstr.FromInt32(p.Port)})
	}
	if len(m.Spec.IPFamilies) > 1 {
		// Whatever families the local cluster has, in its order; a single-stack cluster
		// gets a single-stack VIP.
		spec.IPFamilyPolicy = ptr(corev1.IPFamilyPolicyPreferDualStack)
	} else {
		spec.IPFamilyPolicy = ptr(corev1.IPFamilyPolicySingleStack)
		spec.IPFamilies = slices.Clone(m.Spec.IPFamilies)
	}
	return spec
}

// ensureDerived creates or updates the derived Service. It returns nil and the Ready
// condition to report while there is no usable Service.
func (r *Reconciler) ensureDerived(ctx context.Context, si *mcsv1alpha1.ServiceImport, m Merged) (*corev1.Service, metav1.Condition, error) {
	pending := metav1.Condition{Status: metav1.ConditionFalse, Reason: string(mcsv1alpha1.ServiceImportReasonPending), Message: "allocating the ClusterSetIP"}
	want := derivedSpec(m)
	key := client.ObjectKey{Namespace: si.Namespace, Name: DerivedName(si.Name)}
	var svc corev1.Service
	err := r.Local.Get(ctx, key, &svc)
	switch {
	case apierrors.IsNotFound(err):
		svc = corev1.Service{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: key.Namespace, Name: key.Name,
				Labels:          map[string]string{naming.ManagedByLabel: naming.ManagedBy, LabelClusterSetIPOf: si.Name},
				OwnerReferences: []metav1.OwnerReference{importOwner(si)},
			},
			Spec: want,
		}
		if err := r.Local.Create(ctx, &svc); err != nil {
			if apierrors.IsInvalid(err) {
				// The cluster cannot allocate an address of the import's only family.
				return nil, metav1.Condition{Status: metav1.ConditionFalse, Reason: string(mcsv1alpha1.ServiceImportReasonIPFamilyNotSupported),
					Message: fmt.Sprintf("no ClusterSetIP of family %s in this cluster: %v", families(m.Spec.IPFamilies), err)}, nil
			}
			return nil, pending, fmt.Errorf("create Service %s for the ClusterSetIP of %s: %w", key, si.Name, err)
		}
		return &svc, pending, nil
	case err != nil:
		return nil, pending, err
	case svc.Labels[LabelClusterSetIPOf] != si.Name:
		return nil, metav1.Condition{Status: metav1.ConditionFalse, Reason: "ServiceInTheWay",
			Message: fmt.Sprintf("Service %s, which mcnet did not create, holds the ClusterSetIP's name", key)}, nil
	case !svc.DeletionTimestamp.IsZero():
		return nil, pending, nil // recreated once gone
	case !sameFamilyPolicy(&svc.Spec, &want):
		// Families cannot change in place: a new ClusterSetIP replaces the old one.
		if err := r.Local.Delete(ctx, &svc, client.Preconditions{UID: &svc.UID}); client.IgnoreNotFound(err) != nil {
			return nil, pending, fmt.Errorf("replace Service %s: %w", key, err)
		}
		return nil, pending, nil
	}
	if !equality.Semantic.DeepEqual(svc.Spec.Ports, want.Ports) || svc.Spec.SessionAffinity != want.SessionAffinity ||
		!equality.Semantic.DeepEqual(svc.Spec.SessionAffinityConfig, want.SessionAffinityConfig) {
		svc.Spec.Ports, svc.Spec.SessionAffinity, svc.Spec.SessionAffinityConfig = want.Ports, want.SessionAffinity, want.SessionAffinityConfig
		if err := r.Local.Update(ctx, &svc); err != nil {
			return nil, pending, fmt.Errorf("update Service %s: %w", key, err)
		}
	}
	if len(svc.Spec.ClusterIPs) == 0 {
		return nil, pending, nil
	}
	return &svc, pending, nil
}

func sameFamilyPolicy(have, want *corev1.ServiceSpec) bool {
	if have.IPFamilyPolicy == nil || *have.IPFamilyPolicy != *want.IPFamilyPolicy {
		return false
	}
	return len(want.IPFamilies) == 0 || slices.Equal(have.IPFamilies, want.IPFamilies)
}

func importOwner(si *mcsv1alpha1.ServiceImport) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: mcsv1alpha1.GroupVersion.String(), Kind: "ServiceImport", Name: si.Name, UID: si.UID}
}

// removeClusterSetIP deletes a service's derived EndpointSlices and Service.
func (r *Reconciler) removeClusterSetIP(ctx context.Context, namespace, name string) error {
	var have discoveryv1.EndpointSliceList
	if err := r.Local.List(ctx, &have, client.InNamespace(namespace), client.MatchingLabels{LabelClusterSetIPOf: name, discoveryv1.LabelManagedBy: naming.SliceManagedBy}); err != nil {
		return err
	}
	if _, err := SyncSlices(ctx, r.Local, have.Items, nil); err != nil {
		return fmt.Errorf("remove ClusterSetIP endpoints of %s/%s: %w", namespace, name, err)
	}
	var svc corev1.Service
	err := r.Local.Get(ctx, client.ObjectKey{Namespace: namespace, Name: DerivedName(name)}, &svc)
	if err != nil || svc.Labels[LabelClusterSetIPOf] != name {
		return client.IgnoreNotFound(err)
	}
	if err := r.Local.Delete(ctx, &svc, client.Preconditions{UID: &svc.UID}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove the ClusterSetIP of %s/%s: %w", namespace, name, err)
	}
	return nil
}

// vipSlices are the derived Service's EndpointSlices: per IP family of the VIP, the
// chosen clusters' endpoints with the ports each was chosen for.
func vipSlices(svc *corev1.Service, service, localCluster string, m Merged, imported []*discoveryv1.EndpointSlice, local []discoveryv1.EndpointSlice, health map[string]clusterhealth.Health) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Namespace: svc.Namespace, Name: name,
			Labels: maps.Clone(map[string]string{
				discoveryv1.LabelServiceName: svc.Name,
				discoveryv1.LabelManagedBy:   naming.SliceManagedBy,
				naming.ManagedByLabel:        naming.ManagedBy,
				LabelClusterSetIPOf:          service,
			}),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID}},
		}
	}
	for _, fam := range svc.Spec.IPFamilies {
		at := discoveryv1.AddressTypeIPv4
		if fam == corev1.IPv6Protocol {
			at = discoveryv1.AddressTypeIPv6
		}
		famName := strings.ToLower(string(at))
		// Remote clusters' ready ClusterIPs, from their imported slices.
		remote := map[string][]discoveryv1.Endpoint{}
		for _, s := range imported {
			c := s.Labels[mcsv1alpha1.LabelSourceCluster]
			if s.AddressType != at || c == localCluster {
				continue
			}
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
					remote[c] = append(remote[c], discoveryv1.Endpoint{Addresses: ep.Addresses, Conditions: readyConditions()})
				}
			}
		}
		ready := map[string]bool{}
		for c, eps := range remote {
			ready[c] = len(eps) > 0
		}
		var localSlices []discoveryv1.EndpointSlice
		for _, s := range local {
			if s.AddressType == at && slices.ContainsFunc(s.Endpoints, endpointReady) {
				localSlices = append(localSlices, s)
				ready[localCluster] = true
			}
		}
		chosen := Choose(m.Spec.Ports, m.Ports, ready, localCluster, health)
		for _, c := range slices.Sorted(maps.Keys(chosen)) {
			if c != localCluster {
				s := &discoveryv1.EndpointSlice{ObjectMeta: meta(svc.Name + "." + c + "." + famName), AddressType: at, Endpoints: remote[c]}
				for _, p := range chosen[c] {
					s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr(p.Name), Protocol: ptr(proto(p)), Port: ptr(p.Port), AppProtocol: p.AppProtocol})
				}
				out = append(out, s)
				continue
			}
			// The local cluster's pods, with the ports its own slices give them.
			for _, ls := range localSlices {
				s := &discoveryv1.EndpointSlice{ObjectMeta: meta(svc.Name + "." + c + "." + ls.Name), AddressType: at}
				for _, ep := range ls.Endpoints {
					if endpointReady(ep) {
						s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: ep.Addresses, Conditions: readyConditions()})
					}
				}
				for _, p := range chosen[c] {
					for _, lp := range ls.Ports {
						if deref(lp.Name, "") == p.Name && lp.Port != nil && (lp.Protocol == nil || *lp.Protocol == proto(p)) {
							s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr(p.Name), Protocol: ptr(proto(p)), Port: ptr(*lp.Port), AppProtocol: p.AppProtocol})
						}
					}
				}
				if len(s.Ports) > 0 {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

func endpointReady(ep discoveryv1.Endpoint) bool {
	return len(ep.Addresses) > 0 && (ep.Conditions.Ready == nil || *ep.Conditions.Ready)
}

func readyConditions() discoveryv1.EndpointConditions {
	return discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)}
}

func ptr[T any](v T) *T { return &v }
