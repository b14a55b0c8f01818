package serviceimport

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/membership"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// The acceptance filter: what the importer takes from the broker. An export counts only
// when its writer is a member of the fleet table and says it is what its name says. The
// writer is the mcnet.io/cluster label, which the broker's admission policy binds to
// the identity that wrote the object; the MCS source-cluster label is the exporter's
// own claim and must agree with it. Of an accepted export's EndpointSlices, only
// endpoints whose addresses all lie inside the writer's allocation are imported, so
// DNS never hands out an address the fleet does not route to that cluster.

// writer is the cluster that wrote a broker object, as the broker vouches for it.
func writer(o client.Object) string { return o.GetLabels()[mcnetv1.ClusterLabel] }

// acceptExport says whether the broker ServiceImport si may count as an export of
// namespace/name, and if not why.
func acceptExport(t *membership.Table, namespace, name string, si *mcsv1alpha1.ServiceImport) (bool, *membership.Rejection) {
	w := writer(si)
	object := "ServiceImport " + si.Name
	reject := func(field, value, why string) (bool, *membership.Rejection) {
		return false, &membership.Rejection{Cluster: w, Object: object, Field: field, Value: value, Reason: why}
	}
	switch {
	case !si.DeletionTimestamp.IsZero():
		return false, nil
	case w == "":
		return reject("metadata.labels", "", "no "+mcnetv1.ClusterLabel+" label: nobody vouches for its writer")
	case si.Labels[mcsv1alpha1.LabelSourceCluster] != w:
		return reject("metadata.labels["+mcsv1alpha1.LabelSourceCluster+"]", si.Labels[mcsv1alpha1.LabelSourceCluster], "claims another source cluster than its writer "+w)
	case si.Name != naming.BrokerName(namespace, name, w):
		return reject("metadata.name", si.Name, "not the name "+naming.BrokerName(namespace, name, w)+" its writer publishes the service under")
	}
	if _, ok := t.Member(w); !ok {
		r := t.NotMember(w, object)
		return false, &r
	}
	return true, nil
}

// acceptEndpoints returns the endpoints of a broker EndpointSlice of cluster c that lie
// inside c's allocation; the others come back as rejections.
func acceptEndpoints(t *membership.Table, c string, src *discoveryv1.EndpointSlice) ([]discoveryv1.Endpoint, []membership.Rejection) {
	object := "EndpointSlice " + src.Name
	m, ok := t.Member(c)
	if !ok {
		return nil, []membership.Rejection{t.NotMember(c, object)}
	}
	if src.AddressType != discoveryv1.AddressTypeIPv4 && src.AddressType != discoveryv1.AddressTypeIPv6 {
		return nil, []membership.Rejection{{Cluster: c, Object: object, Field: "addressType", Value: string(src.AddressType), Reason: "only IP addresses are imported"}}
	}
	var out []discoveryv1.Endpoint
	var rej []membership.Rejection
	for i, ep := range src.Endpoints {
		ok := len(ep.Addresses) > 0
		for j, s := range ep.Addresses {
			if a, err := netip.ParseAddr(s); err != nil || !m.ContainsAddr(a) {
				ok = false
				rej = append(rej, membership.Rejection{Cluster: c, Object: object, Field: fmt.Sprintf("endpoints[%d].addresses[%d]", i, j), Value: s,
					Reason: "outside its allocation"})
			}
		}
		if ok {
			out = append(out, ep)
		}
	}
	return out, rej
}

// noteRejected says, for one service, what the importer ignored and who published it:
// in the log, and as a Warning Event on the local fleet table whenever it changes
// (what names the exports beyond a writer's cap, ReasonExportCapExceeded, and the rest,
// ReasonOutsideAllocation, apart). kind tells the exports and the slices of the service
// apart, which are judged in separate steps.
func (r *Reconciler) noteRejected(ctx context.Context, kind, namespace, service string, rejected []membership.Rejection) {
	membership.Sort(rejected)
	if len(rejected) > 0 {
		log.FromContext(ctx).Info("ignoring what clusters publish outside their allocation", "namespace", namespace, "service", service,
			"ignored", membership.Summary(rejected, 5), "count", len(rejected))
	}
	var capped, outside []membership.Rejection
	for _, rej := range rejected {
		if rej.Field == FieldExports || rej.Field == FieldEndpointSlices {
			capped = append(capped, rej)
		} else {
			outside = append(outside, rej)
		}
	}
	for _, g := range []struct {
		reason string
		rej    []membership.Rejection
	}{{ReasonExportCapExceeded, capped}, {ReasonOutsideAllocation, outside}} {
		key := g.reason + "/" + kind + "/" + namespace + "/" + service
		summary := membership.Summary(g.rej, 5)
		if prev, _ := r.noted.Load(key); prev == nil && summary == "" || prev == summary {
			continue
		}
		if summary == "" {
			r.noted.Delete(key)
			continue
		}
		r.noted.Store(key, summary)
		if r.Recorder == nil {
			continue
		}
		var fleet mcnetv1.Fleet
		if err := r.Local.Get(ctx, client.ObjectKey{Name: r.Fleet}, &fleet); err != nil {
			continue // no table, nothing imported: the importer says so itself
		}
		r.Recorder.Eventf(&fleet, nil, corev1.EventTypeWarning, g.reason, "Import", "service %s/%s: ignored %d: %s", namespace, service, len(g.rej), summary)
	}
}

// table reads the fleet table. Without one nothing is imported; a read that failed for
// another reason than its absence is retried.
func (r *Reconciler) table(ctx context.Context) (*membership.Table, error) {
	t, err := membership.Load(ctx, r.Local, r.Fleet)
	switch {
	case errors.Is(err, membership.ErrNoTable) && !apierrors.IsNotFound(err):
		return nil, err
	case err != nil:
		log.FromContext(ctx).Error(err, "fleet table incomplete; importing only from its members")
	}
	return t, nil
}

// fleetRequests names, when the fleet table changes, every service exported on the
// broker and every one imported here.
func (r *Reconciler) fleetRequests(ctx context.Context, o client.Object) []reconcile.Request {
	if o.GetName() != r.Fleet {
		return nil
	}
	seen := map[types.NamespacedName]bool{}
	var reqs []reconcile.Request
	add := func(ns, name string) {
		for _, req := range serviceRequest(ns, name) {
			if !seen[req.NamespacedName] {
				seen[req.NamespacedName] = true
				reqs = append(reqs, req)
			}
		}
	}
	var exported mcsv1alpha1.ServiceImportList
	if err := r.Broker.GetClient().List(ctx, &exported, client.InNamespace(r.BrokerNamespace)); err != nil {
		log.FromContext(ctx).Error(err, "list exports on the broker")
	}
	for _, si := range exported.Items {
		add(si.Labels[naming.LabelServiceNamespace], si.Labels[mcsv1alpha1.LabelServiceName])
	}
	var imported mcsv1alpha1.ServiceImportList
	if err := r.Local.List(ctx, &imported, client.MatchingLabels{naming.ManagedByLabel: naming.ManagedBy}); err != nil {
		log.FromContext(ctx).Error(err, "list imports")
	}
	for i := range imported.Items {
		if si := &imported.Items[i]; naming.IsImport(si) {
			add(si.Namespace, si.Name)
		}
	}
	return reqs
}
