package dns

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/clusterhealth"

	"github.com/mcnet-io/mcnet/internal/naming"
)

// Source keeps an Index in step with the local cluster: the ServiceImports and
// EndpointSlices that controllers/serviceimport writes, and the connections the local
// active Gateway reports. It only reads, so it runs in every controller replica, leader
// or not, and each replica's DNS server answers alike.
type Source struct {
	Index *Index
	// Client reads from the manager's cache.
	Client client.Client
	// Namespace holds the local Gateways (mcnet-system).
	Namespace string
	// Fleet names the fleet table: the index holds only clusters of the table, and of
	// each only addresses inside its allocation, whatever the imports say (trust.go).
	Fleet string
	// ClusterID is the local cluster: its own backends keep their real addresses.
	ClusterID string
	// APIReader reads the local Gateways from the API server itself (the manager's
	// GetAPIReader): the health judges heartbeats only on reads it knows are fresh.
	APIReader client.Reader

	trackerOnce sync.Once
	tracker     *clusterhealth.Tracker

	// healthNoted is set once noteHealth has logged the first health read.
	healthNoted atomic.Bool
}

// SetupWithManager registers the source's watches and its health refresh with mgr.
func (s *Source) SetupWithManager(mgr ctrl.Manager) error {
	noLeader := controller.Options{NeedLeaderElection: ptr(false)}
	managed := predicate.NewPredicateFuncs(naming.IsImport)
	err := ctrl.NewControllerManagedBy(mgr).
		Named("dns-services").
		WithOptions(noLeader).
		For(&mcsv1alpha1.ServiceImport{}, builder.WithPredicates(managed)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if !naming.IsImportedSlice(o) {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetLabels()[mcsv1alpha1.LabelServiceName]}}}
		})).
		// A change of the fleet table can admit or drop any cluster's answers.
		Watches(&mcnetv1.Fleet{}, handler.EnqueueRequestsFromMapFunc(s.allImports)).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			return reconcile.Result{}, s.UpdateService(ctx, req.NamespacedName)
		}))
	if err != nil {
		return fmt.Errorf("set up DNS service source: %w", err)
	}
	return mgr.Add(healthRefresh{s})
}

// Sync rebuilds the whole index from the cache; call it once the cache has synced and
// before serving, so the server never answers from a partial view.
func (s *Source) Sync(ctx context.Context) error {
	var list mcsv1alpha1.ServiceImportList
	if err := s.Client.List(ctx, &list, client.MatchingLabels{naming.ManagedByLabel: naming.ManagedBy}); err != nil {
		return err
	}
	for _, si := range list.Items {
		if !naming.IsImport(&si) {
			continue
		}
		if err := s.UpdateService(ctx, types.NamespacedName{Namespace: si.Namespace, Name: si.Name}); err != nil {
			return err
		}
	}
	// The first health read must succeed before serving, but one read that times
	// out (a loaded API server answers a list in more than the Tracker's bound) is
	// no reason to give up: try again until it succeeds or ctx ends.
	for {
		err := s.UpdateHealth(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		log.FromContext(ctx).V(1).Info("first health read failed; retrying", "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(healthRefreshEvery):
		}
	}
}

// UpdateService re-reads one service into the index.
func (s *Source) UpdateService(ctx context.Context, key types.NamespacedName) error {
	var si mcsv1alpha1.ServiceImport
	err := s.Client.Get(ctx, key, &si)
	if apierrors.IsNotFound(err) || (err == nil && (!naming.IsImport(&si) || !si.DeletionTimestamp.IsZero())) {
		s.Index.Delete(key.Namespace, key.Name)
		return nil
	}
	if err != nil {
		return err
	}
	var slices discoveryv1.EndpointSliceList
	if err := s.Client.List(ctx, &slices, client.InNamespace(key.Namespace), naming.ImportedSliceSelector(key.Name)); err != nil {
		return err
	}
	svc := ServiceFrom(&si, slices.Items)
	if err := s.trust(ctx, svc); err != nil {
		return err
	}
	s.Index.Set(svc)
	return nil
}

// ServiceFrom converts an imported service to the index's form.
func ServiceFrom(si *mcsv1alpha1.ServiceImport, slices []discoveryv1.EndpointSlice) *Service {
	svc := &Service{Namespace: si.Namespace, Name: si.Name, Headless: si.Spec.Type == mcsv1alpha1.Headless}
	for _, ip := range si.Spec.IPs {
		if a, err := netip.ParseAddr(ip); err == nil {
			svc.ClusterSetIPs = append(svc.ClusterSetIPs, a)
		}
	}
	for _, p := range si.Spec.Ports {
		svc.Ports = append(svc.Ports, Port{Name: p.Name, Protocol: protocol(string(p.Protocol)), Port: p.Port})
	}
	byCluster := map[string]*Backend{}
	var order []string
	for _, sl := range slices {
		c := sl.Labels[mcsv1alpha1.LabelSourceCluster]
		if c == "" || sl.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		b := byCluster[c]
		if b == nil {
			b = &Backend{Cluster: c}
			byCluster[c] = b
			order = append(order, c)
		}
		for _, p := range sl.Ports {
			bp := Port{Protocol: "TCP"}
			if p.Name != nil {
				bp.Name = *p.Name
			}
			if p.Protocol != nil {
				bp.Protocol = protocol(string(*p.Protocol))
			}
			if p.Port != nil {
				bp.Port = *p.Port
			}
			b.Ports = append(b.Ports, bp)
		}
		for _, ep := range sl.Endpoints {
			e := Endpoint{Ready: ep.Conditions.Ready == nil || *ep.Conditions.Ready}
			if ep.Hostname != nil {
				e.Hostname = *ep.Hostname
			}
			for _, a := range ep.Addresses {
				if addr, err := netip.ParseAddr(a); err == nil {
					e.Addrs = append(e.Addrs, addr)
				}
			}
			b.Endpoints = append(b.Endpoints, e)
		}
	}
	for _, c := range order {
		svc.Backends = append(svc.Backends, *byCluster[c])
	}
	return svc
}

func protocol(p string) string {
	if p == "" {
		return "TCP"
	}
	return p
}

// UpdateHealth re-reads the connections of the local active gateways from the API
// server (clusterhealth.Tracker). When the read fails the index keeps the health it
// had: an API-server outage is not a dead gateway.
func (s *Source) UpdateHealth(ctx context.Context) error {
	h, err := s.healthTracker().Refresh(ctx, time.Now())
	if err != nil {
		return fmt.Errorf("read the local Gateways: %w", err)
	}
	s.noteHealth(ctx, s.Index.SetHealth(h), h)
	return nil
}

// noteHealth logs the remote clusters DNS answers with at the first health read, and
// after it each cluster that leaves or comes back between the index's health prev and
// h: a name that answers NXDOMAIN or fewer addresses for a moment is explained by
// these lines in the DNS server's log.
func (s *Source) noteHealth(ctx context.Context, prev, h map[string]Health) {
	left, back := healthChanges(prev, h)
	logger := log.FromContext(ctx)
	if s.healthNoted.CompareAndSwap(false, true) {
		logger.Info("Remote clusters in DNS answers", "clusters", back)
		return
	}
	for _, c := range left {
		logger.Info("Cluster left DNS answers: the local active gateway reports no connection to it", "cluster", c)
	}
	for _, c := range back {
		logger.Info("Cluster back in DNS answers", "cluster", c)
	}
}

// healthChanges returns, sorted, the clusters connected in prev but not in next (left)
// and those connected in next but not in prev (back).
func healthChanges(prev, next map[string]Health) (left, back []string) {
	for c, v := range prev {
		if v.Connected && !next[c].Connected {
			left = append(left, c)
		}
	}
	for c, v := range next {
		if v.Connected && !prev[c].Connected {
			back = append(back, c)
		}
	}
	slices.Sort(left)
	slices.Sort(back)
	return left, back
}

func (s *Source) healthTracker() *clusterhealth.Tracker {
	s.trackerOnce.Do(func() {
		s.tracker = &clusterhealth.Tracker{List: func(ctx context.Context) ([]mcnetv1.Gateway, error) {
			var list mcnetv1.GatewayList
			err := s.APIReader.List(ctx, &list, client.InNamespace(s.Namespace))
			return list.Items, err
		}}
	})
	return s.tracker
}

// HealthFrom reads the clusters' health at now from the local Gateways (see
// clusterhealth.FromGateways).
func HealthFrom(gateways []mcnetv1.Gateway, now time.Time) map[string]Health {
	return clusterhealth.FromGateways(gateways, now)
}

// healthRefreshEvery is how often the health is read: a Gateway whose status expires
// (a dead gateway) changes nothing in the API, so no event would tell.
const healthRefreshEvery = 250 * time.Millisecond

// healthRefresh re-reads the health every healthRefreshEvery, in every replica.
type healthRefresh struct{ s *Source }

// Start implements manager.Runnable.
func (r healthRefresh) Start(ctx context.Context) error {
	t := time.NewTicker(healthRefreshEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			// Told once per outage, not four times a second.
			err := r.s.UpdateHealth(ctx)
			switch {
			case err != nil && !failing && ctx.Err() == nil:
				log.FromContext(ctx).Error(err, "Cannot read the clusters' health; answering with the last one read")
			case err == nil && failing:
				log.FromContext(ctx).Info("Reading the clusters' health again")
			}
			failing = err != nil
		}
	}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (healthRefresh) NeedLeaderElection() bool { return false }

func ptr[T any](v T) *T { return &v }
