// Package serviceexport publishes the local cluster's exported services to the broker,
// following the Multi-Cluster Services API (KEP-1645).
//
// For every ServiceExport the reconciler reads the Service of the same name and its
// EndpointSlices and writes to the broker namespace, labelled with the local cluster
// (the only objects the broker's admission policy lets it write):
//   - a ServiceImport named <namespace>.<service>.<cluster> with the service's ports, type
//     (Headless when clusterIP is None, else ClusterSetIP), session affinity, IP
//     families, internal traffic policy and traffic distribution (conflicts are decided
//     by the broker object's creationTimestamp, which the broker's API server sets, so
//     no publisher can date its export back); and the ServiceExport's exportedLabels and
//     exportedAnnotations (annotations mcnet.io/exported-labels and
//     mcnet.io/exported-annotations, JSON), never the Service's own;
//   - EndpointSlices <namespace>.<service>.<cluster>.ipv4 / .ipv6 (then -1, -2, ... past
//     1000 endpoints). For a ClusterSetIP service they hold the service's ClusterIP, ready
//     when any of its pods is: mcnet's tunnels route the service CIDRs between clusters,
//     so the remote cluster's kube-proxy balances over its own pods. For a headless
//     service they hold the pods' addresses, readiness and hostnames, without node names
//     or pod references, which mean nothing in another cluster.
//
// The ServiceExport's conditions say what happened: Valid (False with NoService or
// InvalidServiceType for ExternalName services, which are never exported), Conflict
// (True on every export of the service when the exports differ: PortConflict,
// TypeConflict, IPFamilyConflict, SessionAffinityConflict,
// InternalTrafficPolicyConflict, LabelsConflict..., combined with commas; the message
// names the differences and the winner) and Ready (True, Exported, once published;
// False, Failed when a type conflict keeps it out of the import).
//
// Withdrawal needs no finalizer: a pass for a service without a valid export deletes
// the cluster's broker objects for it, and every broker object of the cluster is mapped
// back to its service, so an export deleted while the controller was down is withdrawn at
// the next start. The broker objects are owned by the cluster's broker ServiceAccount, so
// removing the cluster from the fleet garbage-collects them.
package serviceexport

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/mcnet-io/mcnet/controllers/brokersync"
	"github.com/mcnet-io/mcnet/controllers/serviceimport"

	"github.com/mcnet-io/mcnet/internal/naming"
)

// maxEndpoints is the most endpoints the API allows in one EndpointSlice.
const maxEndpoints = 1000

// Reconciler publishes one cluster's ServiceExports. Requests name the service.
type Reconciler struct {
	// ClusterID is the local cluster's name.
	ClusterID string
	// Local is the local cluster's client (reads from its cache).
	Local client.Client
	// Broker is the broker cluster; its cache holds the broker namespace.
	Broker cluster.Cluster
	// BrokerNamespace holds the published exports.
	BrokerNamespace string
	// Owner, when set, owns every published object (the cluster's broker
	// ServiceAccount), so that removing the cluster garbage-collects them.
	Owner *metav1.OwnerReference
	// Recorder, when set, records an Event on the ServiceExport whenever one of its
	// conditions changes, so `kubectl describe serviceexport` tells the story.
	Recorder events.EventRecorder
}

// SetupWithManager registers the reconciler with mgr.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	byName := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return request(o.GetNamespace(), o.GetName())
	})
	fromBroker := func(mine bool) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			l := o.GetLabels()
			if mine && l[mcsv1alpha1.LabelSourceCluster] != r.ClusterID {
				return nil
			}
			return request(l[naming.LabelServiceNamespace], l[mcsv1alpha1.LabelServiceName])
		})
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("serviceexport").
		WithOptions(controller.Options{RateLimiter: brokersync.RetryLimiter()}).
		For(&mcsv1alpha1.ServiceExport{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Watches(&corev1.Service{}, byName).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return request(o.GetNamespace(), o.GetLabels()[discoveryv1.LabelServiceName])
		})).
		// Every cluster's export of the service can change this one's conflicts.
		WatchesRawSource(source.Kind(r.Broker.GetCache(), client.Object(&mcsv1alpha1.ServiceImport{}), fromBroker(false))).
		WatchesRawSource(source.Kind(r.Broker.GetCache(), client.Object(&discoveryv1.EndpointSlice{}), fromBroker(true))).
		Complete(r)
	if err != nil {
		return fmt.Errorf("set up serviceexport controller: %w", err)
	}
	return nil
}

func request(namespace, name string) []reconcile.Request {
	if namespace == "" || name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}}}
}

// Reconcile publishes or withdraws one service and reports on its ServiceExport.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (result reconcile.Result, retErr error) {
	var se mcsv1alpha1.ServiceExport
	if err := r.Local.Get(ctx, req.NamespacedName, &se); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, r.withdraw(ctx, req.NamespacedName)
	}
	if !se.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, r.withdraw(ctx, req.NamespacedName)
	}
	before := se.DeepCopy()
	defer func() {
		r.recordTransitions(before, &se)
		if err := r.patchStatus(ctx, before, &se); err != nil && retErr == nil {
			retErr = err
		}
	}()

	svc, err := r.validate(ctx, &se)
	if err != nil || svc == nil {
		return reconcile.Result{}, err
	}
	published, err := r.publish(ctx, &se, svc)
	if err != nil {
		setCondition(&se, mcsv1alpha1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1alpha1.ServiceExportReasonFailed, err.Error())
		return reconcile.Result{}, err
	}
	merged, err := r.conflicts(ctx, &se, published)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !slices.Contains(merged.Clusters, r.ClusterID) {
		setCondition(&se, mcsv1alpha1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1alpha1.ServiceExportReasonFailed, "left out of the import: "+merged.Conflicts[r.ClusterID].Message)
	} else {
		setCondition(&se, mcsv1alpha1.ServiceExportConditionReady, metav1.ConditionTrue, mcsv1alpha1.ServiceExportReasonExported, "published to the broker")
	}
	return reconcile.Result{}, nil
}

// validate sets the Valid condition; it returns the Service when it can be exported and
// otherwise withdraws it.
func (r *Reconciler) validate(ctx context.Context, se *mcsv1alpha1.ServiceExport) (*corev1.Service, error) {
	var svc corev1.Service
	err := r.Local.Get(ctx, client.ObjectKeyFromObject(se), &svc)
	var reason mcsv1alpha1.ServiceExportConditionReason
	var msg string
	switch {
	case apierrors.IsNotFound(err) || (err == nil && !svc.DeletionTimestamp.IsZero()):
		reason, msg = mcsv1alpha1.ServiceExportReasonNoService, "service "+se.Name+" does not exist"
	case err != nil:
		return nil, err
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		reason, msg = mcsv1alpha1.ServiceExportReasonInvalidServiceType, "ExternalName services cannot be exported: they have no endpoints"
	default:
		setCondition(se, mcsv1alpha1.ServiceExportConditionValid, metav1.ConditionTrue, mcsv1alpha1.ServiceExportReasonValid, "service is exported")
		return &svc, nil
	}
	setCondition(se, mcsv1alpha1.ServiceExportConditionValid, metav1.ConditionFalse, reason, msg)
	setCondition(se, mcsv1alpha1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1alpha1.ServiceExportReasonPending, msg)
	meta.RemoveStatusCondition(&se.Status.Conditions, string(mcsv1alpha1.ServiceExportConditionConflict))
	return nil, r.withdraw(ctx, client.ObjectKeyFromObject(se))
}

// publish writes the broker ServiceImport and EndpointSlices of the service.
func (r *Reconciler) publish(ctx context.Context, se *mcsv1alpha1.ServiceExport, svc *corev1.Service) (*mcsv1alpha1.ServiceImport, error) {
	var local discoveryv1.EndpointSliceList
	if err := r.Local.List(ctx, &local, client.InNamespace(svc.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
		return nil, err
	}
	want, slicesWant := Published(r.ClusterID, r.BrokerNamespace, se, svc, local.Items)
	if r.Owner != nil {
		want.OwnerReferences = []metav1.OwnerReference{*r.Owner}
		for _, s := range slicesWant {
			s.OwnerReferences = []metav1.OwnerReference{*r.Owner}
		}
	}
	bc := r.Broker.GetClient()
	var have mcsv1alpha1.ServiceImport
	err := bc.Get(ctx, client.ObjectKeyFromObject(want), &have)
	switch {
	case apierrors.IsNotFound(err):
		if err := bc.Create(ctx, want.DeepCopy()); err != nil {
			return nil, fmt.Errorf("publish ServiceImport %s: %w", want.Name, err)
		}
		log.FromContext(ctx).Info("published export", "namespace", svc.Namespace, "service", svc.Name)
	case err != nil:
		return nil, err
	case !equality.Semantic.DeepEqual(have.Spec, want.Spec) || !equality.Semantic.DeepEqual(have.Labels, want.Labels) ||
		!equality.Semantic.DeepEqual(have.Annotations, want.Annotations) ||
		(len(want.OwnerReferences) > 0 && !equality.Semantic.DeepEqual(have.OwnerReferences, want.OwnerReferences)):
		have.Spec, have.Labels, have.Annotations = want.Spec, want.Labels, want.Annotations
		if len(want.OwnerReferences) > 0 {
			have.OwnerReferences = want.OwnerReferences
		}
		if err := bc.Update(ctx, &have); err != nil {
			return nil, fmt.Errorf("update ServiceImport %s on the broker: %w", want.Name, err)
		}
	}
	var existing discoveryv1.EndpointSliceList
	if err := bc.List(ctx, &existing, client.InNamespace(r.BrokerNamespace), r.mine(svc.Namespace, svc.Name)); err != nil {
		return nil, err
	}
	if _, err := serviceimport.SyncSlices(ctx, bc, existing.Items, slicesWant); err != nil {
		return nil, fmt.Errorf("publish EndpointSlices: %w", err)
	}
	return want, nil
}

func (r *Reconciler) mine(namespace, name string) client.MatchingLabels {
	return client.MatchingLabels(naming.BrokerLabels(namespace, name, r.ClusterID))
}

// withdraw deletes the cluster's broker objects of a service, slices first.
func (r *Reconciler) withdraw(ctx context.Context, key types.NamespacedName) error {
	bc := r.Broker.GetClient()
	var slicesHave discoveryv1.EndpointSliceList
	if err := bc.List(ctx, &slicesHave, client.InNamespace(r.BrokerNamespace), r.mine(key.Namespace, key.Name)); err != nil {
		return err
	}
	if _, err := serviceimport.SyncSlices(ctx, bc, slicesHave.Items, nil); err != nil {
		return fmt.Errorf("withdraw EndpointSlices of %s: %w", key, err)
	}
	var imports mcsv1alpha1.ServiceImportList
	if err := bc.List(ctx, &imports, client.InNamespace(r.BrokerNamespace), r.mine(key.Namespace, key.Name)); err != nil {
		return err
	}
	for i := range imports.Items {
		si := &imports.Items[i]
		if err := bc.Delete(ctx, si, client.Preconditions{UID: &si.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("withdraw ServiceImport %s from the broker: %w", si.Name, err)
		}
		log.FromContext(ctx).Info("withdrew export", "namespace", key.Namespace, "service", key.Name)
	}
	return nil
}

// conflicts sets the Conflict condition from every cluster's export of the service and
// returns the merge; this cluster's export counts as published even before the broker
// cache has it.
func (r *Reconciler) conflicts(ctx context.Context, se *mcsv1alpha1.ServiceExport, published *mcsv1alpha1.ServiceImport) (serviceimport.Merged, error) {
	var list mcsv1alpha1.ServiceImportList
	if err := r.Broker.GetClient().List(ctx, &list, client.InNamespace(r.BrokerNamespace), naming.ServiceSelector(se.Namespace, se.Name)); err != nil {
		return serviceimport.Merged{}, err
	}
	exports := []serviceimport.Export{serviceimport.ExportFrom(published)}
	for i := range list.Items {
		si := &list.Items[i]
		c := si.Labels[mcsv1alpha1.LabelSourceCluster]
		if c != r.ClusterID && si.Name == naming.BrokerName(se.Namespace, se.Name, c) && si.DeletionTimestamp.IsZero() {
			exports = append(exports, serviceimport.ExportFrom(si))
		}
	}
	merged := serviceimport.Merge(exports)
	conflict, ok := merged.Conflicts[r.ClusterID]
	if !ok {
		setCondition(se, mcsv1alpha1.ServiceExportConditionConflict, metav1.ConditionFalse, mcsv1alpha1.ServiceExportReasonNoConflicts, "no conflicts with other clusters' exports")
		return merged, nil
	}
	setCondition(se, mcsv1alpha1.ServiceExportConditionConflict, metav1.ConditionTrue, mcsv1alpha1.ServiceExportConditionReason(conflict.Reason()), conflict.Message)
	return merged, nil
}

func setCondition(se *mcsv1alpha1.ServiceExport, t mcsv1alpha1.ServiceExportConditionType, s metav1.ConditionStatus, reason mcsv1alpha1.ServiceExportConditionReason, msg string) {
	meta.SetStatusCondition(&se.Status.Conditions, metav1.Condition{
		Type: string(t), Status: s, Reason: string(reason), Message: msg, ObservedGeneration: se.Generation,
	})
}

// Event reasons of ServiceExport transitions that are not condition reasons.
const (
	ReasonConflictResolved = "ConflictResolved"
	ReasonValid            = "Valid"
)

// recordTransitions records an Event for each condition of after that differs in
// status or reason from before: Warnings for an invalid export, a conflict or a
// failure, Normal events for an export published, valid again or out of conflict.
func (r *Reconciler) recordTransitions(before, after *mcsv1alpha1.ServiceExport) {
	if r.Recorder == nil {
		return
	}
	for _, t := range []mcsv1alpha1.ServiceExportConditionType{
		mcsv1alpha1.ServiceExportConditionValid, mcsv1alpha1.ServiceExportConditionConflict, mcsv1alpha1.ServiceExportConditionReady,
	} {
		c := meta.FindStatusCondition(after.Status.Conditions, string(t))
		if c == nil {
			continue
		}
		old := meta.FindStatusCondition(before.Status.Conditions, string(t))
		if old != nil && old.Status == c.Status && old.Reason == c.Reason {
			continue
		}
		typ, reason := corev1.EventTypeNormal, c.Reason
		switch {
		case t == mcsv1alpha1.ServiceExportConditionValid && c.Status == metav1.ConditionTrue:
			if old == nil {
				continue // every export starts valid; Ready's event says it was published
			}
			reason = ReasonValid
		case t == mcsv1alpha1.ServiceExportConditionConflict && c.Status == metav1.ConditionFalse:
			if old == nil || old.Status != metav1.ConditionTrue {
				continue
			}
			reason = ReasonConflictResolved
		case t == mcsv1alpha1.ServiceExportConditionReady && c.Status == metav1.ConditionFalse &&
			c.Reason == string(mcsv1alpha1.ServiceExportReasonPending):
			continue // the Valid=False event already says why
		case t != mcsv1alpha1.ServiceExportConditionReady || c.Status == metav1.ConditionFalse:
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(after, nil, typ, reason, "Export", "%s", c.Message)
	}
}

func (r *Reconciler) patchStatus(ctx context.Context, before, after *mcsv1alpha1.ServiceExport) error {
	if equality.Semantic.DeepEqual(before.Status, after.Status) {
		return nil
	}
	if err := r.Local.Status().Patch(ctx, after, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("update ServiceExport %s/%s status: %w", after.Namespace, after.Name, err)
	}
	return nil
}
