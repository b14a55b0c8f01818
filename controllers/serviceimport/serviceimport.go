// Package serviceimport imports the services exported anywhere in the fleet into the local
// cluster, following the Multi-Cluster Services API (KEP-1645).
//
// Every exporting cluster publishes, in the broker namespace, one ServiceImport per
// exported service named <namespace>.<service>.<cluster> and EndpointSlices named after it
// (see controllers/serviceexport). They carry the labels
// multicluster.kubernetes.io/service-name, multicluster.kubernetes.io/service-namespace,
// multicluster.kubernetes.io/source-cluster and mcnet.io/cluster (the broker's admission
// policy only lets a cluster write objects carrying its own name). The oldest export
// wins conflicts, by the broker ServiceImport's creationTimestamp: the broker's API
// server sets it, so no publisher can date its export back.
//
// For each service this package keeps, in the service's namespace of the local cluster:
//   - one ServiceImport named like the service, merged from every cluster's export
//     (Merge: the oldest export decides type, session affinity, internal traffic policy,
//     traffic distribution and the exported labels and annotations the import carries;
//     ports are the union, contradicting ports are dropped); status.clusters lists the
//     clusters it includes, status.endpointSliceObjects is Present and the Ready
//     condition says whether it can be used;
//   - one EndpointSlice per broker EndpointSlice of an included cluster, named
//     <service>.<cluster>.<family>, labelled multicluster.kubernetes.io/service-name and
//     multicluster.kubernetes.io/source-cluster, and managed by controller.mcnet.io so
//     Kubernetes' EndpointSlice controllers leave them alone. They deliberately lack
//     kubernetes.io/service-name, and carry service.kubernetes.io/headless, so
//     kube-proxy neither mixes them into a local Service of the same name nor even
//     watches them. The slices are owned by the ServiceImport.
//
// Namespace sameness: imports appear only in namespaces that exist locally; a namespace
// created later gets its imports at once. The controller never creates namespaces, which
// GitOps owns. A ServiceImport of the same name that mcnet did not write is left alone.
//
// Like brokersync, a pass compares both sides by name and label, so unexporting, deleting
// the service, a cluster leaving the fleet (its broker objects are garbage-collected with
// its broker identity) or a change made while the controller was down all converge on the
// next pass without finalizers.
package serviceimport

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/brokersync"
	"github.com/mcnet-io/mcnet/internal/clusterhealth"

	"github.com/mcnet-io/mcnet/internal/membership"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// Reconciler keeps the local ServiceImports and EndpointSlices of every exported service.
// Requests name the service (namespace/name).
type Reconciler struct {
	// Local is the local cluster's client (reads from its cache).
	Local client.Client
	// Broker is the broker cluster; its cache holds the broker namespace.
	Broker cluster.Cluster
	// BrokerNamespace holds the published exports.
	BrokerNamespace string
	// ClusterID is the local cluster's name: its own endpoints take its ClusterSetIPs'
	// traffic when they can.
	ClusterID string
	// SystemNamespace holds the local Gateways, whose status says which clusters are
	// reachable and how far (mcnet-system).
	SystemNamespace string
	// Fleet names the fleet table (a Fleet object, read through Local): only exports of
	// its members, inside their allocations, are imported (accept.go).
	Fleet string
	// APIReader reads the local Gateways from the API server itself, so their
	// heartbeats are judged on fresh reads (clusterhealth.Tracker); Local when nil.
	APIReader client.Reader

	// Recorder, when set, records on the local fleet table what the importer ignores
	// (noteRejected).
	Recorder events.EventRecorder

	tracker *clusterhealth.Tracker
	// noted is, per reason and service, the last ignored set an Event told of.
	noted sync.Map

	// orderOnce makes exportOrder, every writer's broker exports in the order
	// receivers accept them (see cap.go).
	orderOnce   sync.Once
	exportOrder *exportOrder
}

// SetupWithManager registers the reconciler with mgr.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	reader := r.APIReader
	if reader == nil {
		reader = r.Local
	}
	r.tracker = &clusterhealth.Tracker{List: func(ctx context.Context) ([]mcnetv1.Gateway, error) {
		var gws mcnetv1.GatewayList
		err := reader.List(ctx, &gws, client.InNamespace(r.SystemNamespace))
		return gws.Items, err
	}}
	health := &healthWatch{
		tracker: r.tracker,
		events:  make(chan event.GenericEvent), every: 250 * time.Millisecond, rttEvery: 5 * time.Second,
		notify: &mcnetv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: r.SystemNamespace}},
	}
	if err := mgr.Add(health); err != nil {
		return err
	}
	fromBroker := func(_ context.Context, o client.Object) []reconcile.Request {
		return serviceRequest(o.GetLabels()[naming.LabelServiceNamespace], o.GetLabels()[mcsv1alpha1.LabelServiceName])
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("serviceimport").
		WithOptions(controller.Options{RateLimiter: brokersync.RetryLimiter()}).
		WatchesRawSource(source.Kind(r.Broker.GetCache(), client.Object(&mcsv1alpha1.ServiceImport{}), r.exportEvents())).
		WatchesRawSource(source.Kind(r.Broker.GetCache(), client.Object(&discoveryv1.EndpointSlice{}), handler.EnqueueRequestsFromMapFunc(fromBroker))).
		Watches(&mcsv1alpha1.ServiceImport{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if !naming.IsImport(o) {
				return nil
			}
			return serviceRequest(o.GetNamespace(), o.GetName())
		})).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			l := o.GetLabels()
			switch {
			case l[discoveryv1.LabelManagedBy] != naming.SliceManagedBy:
				// A local Service's own slices: its ready pods may take its ClusterSetIP.
				return serviceRequest(o.GetNamespace(), l[discoveryv1.LabelServiceName])
			case !naming.IsImport(o):
				return nil
			case l[LabelClusterSetIPOf] != "":
				return serviceRequest(o.GetNamespace(), l[LabelClusterSetIPOf])
			}
			return serviceRequest(o.GetNamespace(), l[mcsv1alpha1.LabelServiceName])
		})).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return serviceRequest(o.GetNamespace(), o.GetLabels()[LabelClusterSetIPOf])
		})).
		// A connection going down or up, a Gateway's status expiring, or an RTT change,
		// moves ClusterSetIP traffic.
		WatchesRawSource(source.Channel(health.events, handler.EnqueueRequestsFromMapFunc(r.allImports))).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.namespaceRequests)).
		// A change of the fleet table (through Git) can admit or drop any export.
		Watches(&mcnetv1.Fleet{}, handler.EnqueueRequestsFromMapFunc(r.fleetRequests)).
		Complete(r)
	if err != nil {
		return fmt.Errorf("set up serviceimport controller: %w", err)
	}
	return nil
}

func serviceRequest(namespace, name string) []reconcile.Request {
	if namespace == "" || name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}}}
}

// allImports names every local import whose ClusterSetIP the local Gateways' view of
// the other clusters can move.
func (r *Reconciler) allImports(ctx context.Context, o client.Object) []reconcile.Request {
	if o.GetNamespace() != r.SystemNamespace {
		return nil
	}
	var list mcsv1alpha1.ServiceImportList
	if err := r.Local.List(ctx, &list, client.MatchingLabels{naming.ManagedByLabel: naming.ManagedBy}); err != nil {
		log.FromContext(ctx).Error(err, "list imports")
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if si := &list.Items[i]; naming.IsImport(si) && si.Spec.Type == mcsv1alpha1.ClusterSetIP {
			reqs = append(reqs, serviceRequest(si.Namespace, si.Name)...)
		}
	}
	return reqs
}

// namespaceRequests names every service exported from a namespace, so that creating or
// deleting the namespace locally adds or removes its imports.
func (r *Reconciler) namespaceRequests(ctx context.Context, o client.Object) []reconcile.Request {
	var list mcsv1alpha1.ServiceImportList
	if err := r.Broker.GetClient().List(ctx, &list, client.InNamespace(r.BrokerNamespace), client.MatchingLabels{naming.LabelServiceNamespace: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "list exports of a namespace", "namespace", o.GetName())
		return nil
	}
	var reqs []reconcile.Request
	for _, si := range list.Items {
		reqs = append(reqs, serviceRequest(o.GetName(), si.Labels[mcsv1alpha1.LabelServiceName])...)
	}
	return reqs
}

// Reconcile makes one service's local import match the exports on the broker.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if req.Namespace == r.BrokerNamespace {
		return reconcile.Result{}, nil // the broker's own objects, never imports
	}
	exports, err := r.exports(ctx, req.Namespace, req.Name)
	if err != nil {
		return reconcile.Result{}, err
	}
	present, err := r.namespacePresent(ctx, req.Namespace)
	if err != nil {
		return reconcile.Result{}, err
	}
	if len(exports) == 0 || !present {
		return reconcile.Result{}, r.remove(ctx, req.NamespacedName)
	}
	merged := Merge(exports)
	si, err := r.upsertImport(ctx, req.NamespacedName, merged)
	if err != nil || si == nil {
		return reconcile.Result{}, err
	}
	imported, err := r.syncSlices(ctx, si, merged.Clusters)
	if err != nil {
		return reconcile.Result{}, err
	}
	ready, err := r.clusterSetIP(ctx, si, merged, imported)
	if err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, r.updateStatus(ctx, si, merged.Clusters, ready)
}

func (r *Reconciler) exports(ctx context.Context, namespace, name string) ([]Export, error) {
	var list mcsv1alpha1.ServiceImportList
	if err := r.Broker.GetClient().List(ctx, &list, client.InNamespace(r.BrokerNamespace), naming.ServiceSelector(namespace, name)); err != nil {
		return nil, fmt.Errorf("list exports of %s/%s on the broker: %w", namespace, name, err)
	}
	table, err := r.table(ctx)
	if err != nil {
		return nil, err
	}
	var out []Export
	var rejected []membership.Rejection
	for i := range list.Items {
		si := &list.Items[i]
		// Only what a member wrote under its own name counts, whoever else could
		// write the broker.
		ok, rej := acceptExport(table, namespace, name, si)
		if ok {
			ok, rej = r.withinCap(table, si)
		}
		if rej != nil {
			rejected = append(rejected, *rej)
		}
		if ok {
			out = append(out, ExportFrom(si))
		}
	}
	r.noteRejected(ctx, "exports", namespace, name, rejected)
	return out, nil
}

func (r *Reconciler) namespacePresent(ctx context.Context, name string) (bool, error) {
	var ns corev1.Namespace
	err := r.Local.Get(ctx, client.ObjectKey{Name: name}, &ns)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return ns.DeletionTimestamp.IsZero(), nil
}

// remove deletes the service's import: its ClusterSetIP and slices first, then the
// ServiceImport.
func (r *Reconciler) remove(ctx context.Context, key types.NamespacedName) error {
	if err := r.removeClusterSetIP(ctx, key.Namespace, key.Name); err != nil {
		return err
	}
	if _, err := r.sync(ctx, key, nil); err != nil {
		return err
	}
	var si mcsv1alpha1.ServiceImport
	if err := r.Local.Get(ctx, key, &si); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !naming.IsImport(&si) {
		return nil
	}
	if err := r.Local.Delete(ctx, &si, client.Preconditions{UID: &si.UID}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove ServiceImport %s: %w", key, err)
	}
	log.FromContext(ctx).Info("removed import", "namespace", key.Namespace, "service", key.Name)
	return nil
}

// importMeta is the labels and annotations of the local ServiceImport: mcnet's own
// label and the oldest export's exportedLabels and exportedAnnotations. An exported label
// cannot replace mcnet's, which marks the import as mcnet's to manage.
func importMeta(m Merged) (map[string]string, map[string]string) {
	labels := maps.Clone(m.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[naming.ManagedByLabel] = naming.ManagedBy
	return labels, maps.Clone(m.Annotations)
}

// upsertImport writes the merged ServiceImport; it returns nil when a ServiceImport of
// that name belongs to someone else. The ClusterSetIPs (spec.ips) and the IP families
// they were allocated in are the VIP step's, and kept here.
func (r *Reconciler) upsertImport(ctx context.Context, key types.NamespacedName, m Merged) (*mcsv1alpha1.ServiceImport, error) {
	labels, annotations := importMeta(m)
	var si mcsv1alpha1.ServiceImport
	err := r.Local.Get(ctx, key, &si)
	switch {
	case apierrors.IsNotFound(err):
		si = mcsv1alpha1.ServiceImport{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: labels, Annotations: annotations},
			Spec:       m.Spec,
		}
		if err := r.Local.Create(ctx, &si); err != nil {
			return nil, fmt.Errorf("create ServiceImport %s: %w", key, err)
		}
		log.FromContext(ctx).Info("imported service", "namespace", key.Namespace, "service", key.Name, "clusters", m.Clusters)
		return &si, nil
	case err != nil:
		return nil, err
	case !naming.IsImport(&si):
		log.FromContext(ctx).Info("a ServiceImport mcnet did not create is in the way; not importing", "namespace", key.Namespace, "service", key.Name)
		return nil, nil
	}
	want := m.Spec
	if m.Spec.Type == mcsv1alpha1.ClusterSetIP && len(si.Spec.IPs) > 0 {
		want.IPs, want.IPFamilies = si.Spec.IPs, si.Spec.IPFamilies
	}
	if equality.Semantic.DeepEqual(si.Spec, want) && maps.Equal(si.Labels, labels) && maps.Equal(si.Annotations, annotations) {
		return &si, nil
	}
	si.Spec, si.Labels, si.Annotations = want, labels, annotations
	if err := r.Local.Update(ctx, &si); err != nil {
		return nil, fmt.Errorf("update ServiceImport %s: %w", key, err)
	}
	return &si, nil
}

// updateStatus reports the clusters the import includes, that mcnet keeps MCS
// EndpointSlices for it, and its Ready condition.
func (r *Reconciler) updateStatus(ctx context.Context, si *mcsv1alpha1.ServiceImport, clusters []string, ready metav1.Condition) error {
	before := si.DeepCopy()
	si.Status.Clusters = make([]mcsv1alpha1.ClusterStatus, len(clusters))
	for i, c := range clusters {
		si.Status.Clusters[i] = mcsv1alpha1.ClusterStatus{Cluster: c}
	}
	si.Status.EndpointSliceObjects = mcsv1alpha1.EndpointSliceObjectsPresent
	ready.Type, ready.ObservedGeneration = string(mcsv1alpha1.ServiceImportConditionReady), si.Generation
	meta.SetStatusCondition(&si.Status.Conditions, ready)
	if equality.Semantic.DeepEqual(before.Status, si.Status) {
		return nil
	}
	if err := r.Local.Status().Patch(ctx, si, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("update ServiceImport %s/%s status: %w", si.Namespace, si.Name, err)
	}
	return nil
}

// syncSlices copies the broker EndpointSlices of the included clusters and returns them.
func (r *Reconciler) syncSlices(ctx context.Context, si *mcsv1alpha1.ServiceImport, clusters []string) ([]*discoveryv1.EndpointSlice, error) {
	var list discoveryv1.EndpointSliceList
	if err := r.Broker.GetClient().List(ctx, &list, client.InNamespace(r.BrokerNamespace), naming.ServiceSelector(si.Namespace, si.Name)); err != nil {
		return nil, fmt.Errorf("list EndpointSlices of %s/%s on the broker: %w", si.Namespace, si.Name, err)
	}
	table, err := r.table(ctx)
	if err != nil {
		return nil, err
	}
	owner := metav1.OwnerReference{APIVersion: mcsv1alpha1.GroupVersion.String(), Kind: "ServiceImport", Name: si.Name, UID: si.UID}
	var want []*discoveryv1.EndpointSlice
	candidates := slices.DeleteFunc(list.Items, func(src discoveryv1.EndpointSlice) bool {
		c := src.Labels[mcsv1alpha1.LabelSourceCluster]
		return c != writer(&src) || !slices.Contains(clusters, c) || !strings.HasPrefix(src.Name, naming.BrokerName(si.Namespace, si.Name, c)+".") || !src.DeletionTimestamp.IsZero()
	})
	kept, rejected := capSlices(candidates)
	for _, src := range kept {
		c := src.Labels[mcsv1alpha1.LabelSourceCluster]
		stem := naming.BrokerName(si.Namespace, si.Name, c) + "."
		endpoints, rej := acceptEndpoints(table, c, src)
		rejected = append(rejected, rej...)
		if c != r.ClusterID {
			endpoints, rej = reachEndpoints(table, c, src.Name, endpoints)
			rejected = append(rejected, rej...)
		}
		want = append(want, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace:       si.Namespace,
				Name:            si.Name + "." + c + "." + strings.TrimPrefix(src.Name, stem),
				Labels:          naming.ImportedSliceLabels(si.Name, c),
				OwnerReferences: []metav1.OwnerReference{owner},
			},
			AddressType: src.AddressType,
			Endpoints:   endpoints,
			Ports:       src.Ports,
		})
	}
	r.noteRejected(ctx, "slices", si.Namespace, si.Name, rejected)
	if _, err := r.sync(ctx, types.NamespacedName{Namespace: si.Namespace, Name: si.Name}, want); err != nil {
		return nil, err
	}
	return want, nil
}

func (r *Reconciler) sync(ctx context.Context, key types.NamespacedName, want []*discoveryv1.EndpointSlice) (bool, error) {
	var have discoveryv1.EndpointSliceList
	if err := r.Local.List(ctx, &have, client.InNamespace(key.Namespace), naming.ImportedSliceSelector(key.Name)); err != nil {
		return false, err
	}
	return SyncSlices(ctx, r.Local, have.Items, want)
}
