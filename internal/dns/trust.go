package dns

import (
	"context"
	"errors"
	"net/netip"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/mcnet-io/mcnet/internal/membership"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// trust holds svc to the fleet table (Trusted). Without a table DNS answers for no
// remote cluster; a read that failed for another reason is retried.
func (s *Source) trust(ctx context.Context, svc *Service) error {
	table, err := membership.Load(ctx, s.Client, s.Fleet)
	if errors.Is(err, membership.ErrNoTable) && !apierrors.IsNotFound(err) {
		return err
	}
	if dropped := TrustedAt(svc, table, s.ClusterID); dropped > 0 {
		log.FromContext(ctx).V(1).Info("DNS leaves out answers outside the fleet table", "namespace", svc.Namespace, "service", svc.Name, "dropped", dropped)
	}
	return nil
}

// Trusted removes from svc every backend of a cluster outside the table t and every
// endpoint with an address outside what is routed to its cluster (its allocation, or
// its global range when the fleet remaps it), and says how many endpoints it removed.
// The importer already filters so; this keeps DNS to the table on its own, also for
// imports written before a change of the table reached the importer.
func Trusted(svc *Service, t *membership.Table) int { return TrustedAt(svc, t, "") }

// TrustedAt is Trusted for the DNS of cluster local: its own backends are held to its
// own networks, remote ones to what local routes to them (their global range when the
// fleet remaps them; the importer writes those addresses).
func TrustedAt(svc *Service, t *membership.Table, local string) int {
	dropped := 0
	var backends []Backend
	for _, b := range svc.Backends {
		m, ok := t.Member(b.Cluster)
		if !ok {
			dropped += len(b.Endpoints)
			continue
		}
		var eps []Endpoint
		for _, e := range b.Endpoints {
			inside := m.Reaches
			if b.Cluster == local {
				inside = m.ContainsAddr
			}
			if len(e.Addrs) > 0 && !slices.ContainsFunc(e.Addrs, func(a netip.Addr) bool { return !inside(a) }) {
				eps = append(eps, e)
			} else {
				dropped++
			}
		}
		b.Endpoints = eps
		backends = append(backends, b)
	}
	svc.Backends = backends
	return dropped
}

// allImports names every service imported here.
func (s *Source) allImports(ctx context.Context, _ client.Object) []reconcile.Request {
	var list mcsv1alpha1.ServiceImportList
	if err := s.Client.List(ctx, &list, client.MatchingLabels{naming.ManagedByLabel: naming.ManagedBy}); err != nil {
		log.FromContext(ctx).Error(err, "list imports")
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if si := &list.Items[i]; naming.IsImport(si) {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: si.Namespace, Name: si.Name}})
		}
	}
	return reqs
}
