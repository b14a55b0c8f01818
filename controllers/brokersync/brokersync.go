// Package brokersync keeps a cluster and the broker in step: it publishes the cluster's
// own Cluster and Endpoint to the broker namespace and mirrors every other cluster's back
// into the local mcnet-system namespace.
//
// Objects are told apart by the mcnet.io/cluster label: the publisher only handles objects
// labelled with the local cluster and the mirror only the others, so neither can feed the
// other (no loops). Both reconcile by name against the current state of both sides, so a
// restart, a missed event or an object deleted while the controller was down converges on
// the next pass. The broker's informer keeps its last view while the broker is
// unreachable, so an outage never withdraws a remote cluster locally.
package brokersync

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
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

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// Kind describes one kind the controller syncs.
type Kind[T client.Object] struct {
	// Name is used in controller names and logs.
	Name string
	// New returns an empty object of the kind.
	New func() T
	// CopySpec copies the synced content from src to dst and reports whether dst changed.
	CopySpec func(dst, src T) bool
}

// Clusters syncs Cluster objects.
var Clusters = Kind[*mcnetv1.Cluster]{
	Name: "cluster",
	New:  func() *mcnetv1.Cluster { return &mcnetv1.Cluster{} },
	CopySpec: func(dst, src *mcnetv1.Cluster) bool {
		if reflect.DeepEqual(dst.Spec, src.Spec) {
			return false
		}
		dst.Spec = *src.Spec.DeepCopy()
		return true
	},
}

// Endpoints syncs Endpoint objects.
var Endpoints = Kind[*mcnetv1.Endpoint]{
	Name: "endpoint",
	New:  func() *mcnetv1.Endpoint { return &mcnetv1.Endpoint{} },
	CopySpec: func(dst, src *mcnetv1.Endpoint) bool {
		if reflect.DeepEqual(dst.Spec, src.Spec) {
			return false
		}
		dst.Spec = *src.Spec.DeepCopy()
		return true
	},
}

// Syncer publishes and mirrors one kind between the local cluster and the broker.
type Syncer[T client.Object] struct {
	Kind Kind[T]
	// ClusterID is the local cluster's name.
	ClusterID string
	// Local is the client of the local cluster (reads from its cache).
	Local client.Client
	// LocalNamespace holds local and mirrored objects (mcnet-system).
	LocalNamespace string
	// Broker is the broker cluster (its client and cache).
	Broker cluster.Cluster
	// BrokerNamespace holds the objects clusters exchange.
	BrokerNamespace string
	// Owner, when set, becomes the owner of every object published to the broker: the
	// cluster's ServiceAccount there, so that taking the cluster out of the fleet (GitOps
	// prunes the ServiceAccount) garbage-collects everything it published.
	Owner *metav1.OwnerReference
}

func (s *Syncer[T]) isLocal(o client.Object) bool {
	return o.GetLabels()[mcnetv1.ClusterLabel] == s.ClusterID
}

func (s *Syncer[T]) isRemote(o client.Object) bool {
	c, ok := o.GetLabels()[mcnetv1.ClusterLabel]
	return ok && c != "" && c != s.ClusterID
}

// SetupWithManager registers the publisher and the mirror with mgr.
func (s *Syncer[T]) SetupWithManager(mgr ctrl.Manager) error {
	inNS := func(ns string) predicate.Predicate {
		return predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetNamespace() == ns })
	}
	local := predicate.NewPredicateFuncs(s.isLocal)

	// Publisher: requests name local objects; broker copies of ours map back to them.
	err := ctrl.NewControllerManagedBy(mgr).
		Named("publish-"+s.Kind.Name).
		WithOptions(controller.Options{RateLimiter: RetryLimiter()}).
		For(s.Kind.New(), builder.WithPredicates(inNS(s.LocalNamespace), local)).
		WatchesRawSource(source.Kind(s.Broker.GetCache(), s.Kind.New(),
			handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, o T) []reconcile.Request {
				if !s.isLocal(o) || o.GetNamespace() != s.BrokerNamespace {
					return nil
				}
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: s.LocalNamespace, Name: o.GetName()}}}
			}))).
		Complete(reconcile.Func(s.publish))
	if err != nil {
		return fmt.Errorf("set up %s publisher: %w", s.Kind.Name, err)
	}

	// Mirror: requests name broker objects of other clusters; local mirrors map back.
	err = ctrl.NewControllerManagedBy(mgr).
		Named("mirror-"+s.Kind.Name).
		WithOptions(controller.Options{RateLimiter: RetryLimiter()}).
		WatchesRawSource(source.Kind(s.Broker.GetCache(), s.Kind.New(),
			handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, o T) []reconcile.Request {
				if !s.isRemote(o) || o.GetNamespace() != s.BrokerNamespace {
					return nil
				}
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: s.BrokerNamespace, Name: o.GetName()}}}
			}))).
		Watches(s.Kind.New(), handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if !s.isRemote(o) || o.GetNamespace() != s.LocalNamespace {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: s.BrokerNamespace, Name: o.GetName()}}}
		})).
		Complete(reconcile.Func(s.mirror))
	if err != nil {
		return fmt.Errorf("set up %s mirror: %w", s.Kind.Name, err)
	}
	return nil
}

// RetryLimiter retries a failed sync at most every 2 s. The default limiter doubles its
// delay up to 1000 s, so a change made while the broker was down for a minute would wait
// another minute or more after it came back.
func RetryLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](50*time.Millisecond, 2*time.Second)
}

// publish makes the broker's copy of a local object match it, or removes the copy when
// the local object is gone.
func (s *Syncer[T]) publish(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx).WithValues("kind", s.Kind.Name, "name", req.Name)
	src := s.Kind.New()
	err := s.Local.Get(ctx, req.NamespacedName, src)
	switch {
	case apierrors.IsNotFound(err) || (err == nil && !src.GetDeletionTimestamp().IsZero()):
		return reconcile.Result{}, s.withdraw(ctx, req.Name)
	case err != nil:
		return reconcile.Result{}, err
	case !s.isLocal(src):
		return reconcile.Result{}, nil
	}
	dst := s.Kind.New()
	dst.SetNamespace(s.BrokerNamespace)
	dst.SetName(req.Name)
	if s.Owner != nil {
		dst.SetOwnerReferences([]metav1.OwnerReference{*s.Owner})
	}
	op, err := s.upsert(ctx, s.Broker.GetClient(), src, dst)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("publish %s %s to the broker: %w", s.Kind.Name, req.Name, err)
	}
	if op != "" {
		logger.Info("published to the broker", "operation", op)
	}
	return reconcile.Result{}, nil
}

func (s *Syncer[T]) withdraw(ctx context.Context, name string) error {
	dst := s.Kind.New()
	err := s.Broker.GetClient().Get(ctx, client.ObjectKey{Namespace: s.BrokerNamespace, Name: name}, dst)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !s.isLocal(dst) {
		return nil // another cluster's object of the same name: never ours to delete
	}
	if err := s.Broker.GetClient().Delete(ctx, dst, client.Preconditions{UID: ptr(dst.GetUID())}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("withdraw %s %s from the broker: %w", s.Kind.Name, name, err)
	}
	log.FromContext(ctx).Info("withdrew from the broker", "kind", s.Kind.Name, "name", name)
	return nil
}

// mirror makes the local copy of another cluster's broker object match it, or removes
// the copy when the broker no longer has it.
func (s *Syncer[T]) mirror(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx).WithValues("kind", s.Kind.Name, "name", req.Name)
	src := s.Kind.New()
	err := s.Broker.GetClient().Get(ctx, req.NamespacedName, src)
	gone := apierrors.IsNotFound(err) || (err == nil && !s.isRemote(src))
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	key := client.ObjectKey{Namespace: s.LocalNamespace, Name: req.Name}
	if gone {
		dst := s.Kind.New()
		if err := s.Local.Get(ctx, key, dst); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
		if !s.isRemote(dst) {
			return reconcile.Result{}, nil
		}
		if err := s.Local.Delete(ctx, dst); client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, fmt.Errorf("remove mirrored %s %s: %w", s.Kind.Name, req.Name, err)
		}
		logger.Info("removed mirror of a withdrawn object")
		return reconcile.Result{}, nil
	}
	dst := s.Kind.New()
	dst.SetNamespace(s.LocalNamespace)
	dst.SetName(req.Name)
	op, err := s.upsert(ctx, s.Local, src, dst)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("mirror %s %s: %w", s.Kind.Name, req.Name, err)
	}
	if op != "" {
		logger.Info("mirrored from the broker", "operation", op, "cluster", src.GetLabels()[mcnetv1.ClusterLabel])
	}
	return reconcile.Result{}, nil
}

// upsert makes dst (named, in its namespace) carry src's spec and cluster label. It
// returns "created", "updated" or "" when nothing changed.
func (s *Syncer[T]) upsert(ctx context.Context, c client.Client, src, dst T) (string, error) {
	key := client.ObjectKeyFromObject(dst)
	owners := dst.GetOwnerReferences()
	err := c.Get(ctx, key, dst)
	if apierrors.IsNotFound(err) {
		s.Kind.CopySpec(dst, src)
		dst.SetLabels(syncLabels(src))
		return "created", c.Create(ctx, dst)
	}
	if err != nil {
		return "", err
	}
	if dst.GetLabels()[mcnetv1.ClusterLabel] != src.GetLabels()[mcnetv1.ClusterLabel] {
		return "", fmt.Errorf("%s %s belongs to cluster %q, not %q; refusing to overwrite it",
			s.Kind.Name, key, dst.GetLabels()[mcnetv1.ClusterLabel], src.GetLabels()[mcnetv1.ClusterLabel])
	}
	changed := s.Kind.CopySpec(dst, src)
	if len(owners) > 0 && !reflect.DeepEqual(dst.GetOwnerReferences(), owners) {
		dst.SetOwnerReferences(owners)
		changed = true
	}
	labels := dst.GetLabels()
	want := syncLabels(src)
	if !mapsContain(labels, want) {
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, want)
		dst.SetLabels(labels)
		changed = true
	}
	if !changed {
		return "", nil
	}
	return "updated", c.Update(ctx, dst)
}

// syncLabels are the only labels a copy carries: its cluster and who manages it. Never
// GitOps tracking labels, which would make Flux or Argo CD claim (and prune) the copy.
func syncLabels(src client.Object) map[string]string {
	return map[string]string{
		mcnetv1.ClusterLabel:  src.GetLabels()[mcnetv1.ClusterLabel],
		naming.ManagedByLabel: naming.ManagedBy,
	}
}

func mapsContain(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func ptr[T any](v T) *T { return &v }

// LocalCluster returns the Cluster object a cluster announces about itself.
func LocalCluster(namespace string, spec mcnetv1.ClusterObjSpec) *mcnetv1.Cluster {
	return &mcnetv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{
			Name:      spec.ClusterID,
			Namespace: namespace,
			Labels:    map[string]string{mcnetv1.ClusterLabel: spec.ClusterID, naming.ManagedByLabel: naming.ManagedBy},
		},
		Spec: spec,
	}
}
