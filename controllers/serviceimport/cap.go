package serviceimport

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/membership"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// Every export on the broker fans out to every member: an import, its EndpointSlices,
// a ClusterSetIP Service and DNS names in each of them. The broker's admission policy
// binds what a cluster writes to its own name, but cannot count, and a ResourceQuota
// on the broker refuses every write until the broker's quota controller has counted
// the kinds once (and bounds only the sum of all writers, so one flooding writer would
// use up everyone's share). The bound is therefore kept by each receiver, from the
// fleet table: of each writer's exports it imports the writer's MaxExports oldest, in
// the order the broker's API server dated them (creationTimestamp, then name), and
// ignores the rest, saying so. Every receiver sees the same broker, so all of them
// pick the same exports, and a flood only displaces the flooder's own newest exports,
// never another cluster's and never the flooder's older ones.

// Event reasons, on the local fleet table, of what the importer ignores, and the
// Rejection fields of the caps.
const (
	// ReasonExportCapExceeded: a writer publishes more exports than its maxExports,
	// or an export more EndpointSlices than MaxSlicesPerExport; the newest are ignored.
	ReasonExportCapExceeded = "ExportCapExceeded"
	// ReasonOutsideAllocation: an export claims another writer, or endpoints outside
	// its writer's allocation.
	ReasonOutsideAllocation = mcnetv1.ReasonOutsideAllocation

	FieldExports        = "exports"
	FieldEndpointSlices = "endpointSlices"
)

// exportOrder keeps every writer's broker exports in that order, updated from the
// broker informer's events, so that whether an export is within its writer's cap is
// a binary search rather than a pass over the broker.
type exportOrder struct {
	mu       sync.Mutex
	byWriter map[string][]orderKey
	at       map[string]orderKey // broker object name → its key
}

type orderKey struct {
	created time.Time
	name    string
	service types.NamespacedName // the service it exports
	writer  string
}

func compareKeys(a, b orderKey) int {
	return cmp.Or(a.created.Compare(b.created), cmp.Compare(a.name, b.name))
}

func newExportOrder() *exportOrder {
	return &exportOrder{byWriter: map[string][]orderKey{}, at: map[string]orderKey{}}
}

func keyOf(o client.Object) orderKey {
	l := o.GetLabels()
	return orderKey{created: o.GetCreationTimestamp().Time, name: o.GetName(), writer: l[mcnetv1.ClusterLabel],
		service: types.NamespacedName{Namespace: l[naming.LabelServiceNamespace], Name: l[mcsv1alpha1.LabelServiceName]}}
}

// put records o (nil removes name) and returns the services whose export moved across
// the cap of its writer (limit gives a writer's cap), so they are imported or dropped.
func (e *exportOrder) put(name string, o client.Object, limit func(writer string) int) []types.NamespacedName {
	e.mu.Lock()
	defer e.mu.Unlock()
	var moved []types.NamespacedName
	if old, ok := e.at[name]; ok {
		list := e.byWriter[old.writer]
		if i, found := slices.BinarySearchFunc(list, old, compareKeys); found {
			// Everything after i moves up by one: the first beyond the cap comes in.
			if n := limit(old.writer); i < n && n < len(list) {
				moved = append(moved, list[n].service)
			}
			e.byWriter[old.writer] = slices.Delete(list, i, i+1)
		}
		delete(e.at, name)
	}
	if o == nil {
		return moved
	}
	k := keyOf(o)
	list := e.byWriter[k.writer]
	i, _ := slices.BinarySearchFunc(list, k, compareKeys)
	if n := limit(k.writer); i < n && n <= len(list) {
		moved = append(moved, list[n-1].service) // pushed out
	}
	e.byWriter[k.writer] = slices.Insert(list, i, k)
	e.at[name] = k
	return moved
}

// rank is the position of the broker export o among its writer's exports, and how many
// the writer has; ok is false when the informer has not told of o yet.
func (e *exportOrder) rank(o client.Object) (rank, total int, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k, known := e.at[o.GetName()]
	if !known || !k.created.Equal(o.GetCreationTimestamp().Time) {
		return 0, 0, false
	}
	list := e.byWriter[k.writer]
	i, found := slices.BinarySearchFunc(list, k, compareKeys)
	return i, len(list), found
}

// withinCap says whether the accepted export si is among its writer's cap oldest, and
// if not why.
func (r *Reconciler) withinCap(t *membership.Table, si *mcsv1alpha1.ServiceImport) (bool, *membership.Rejection) {
	w := writer(si)
	m, _ := t.Member(w)
	rank, total, ok := r.order().rank(si)
	switch {
	case !ok:
		// Not counted yet: imported once the informer's event has counted it (the
		// event names the service again).
		return false, nil
	case rank < m.MaxExports:
		return true, nil
	}
	return false, &membership.Rejection{Cluster: w, Object: "ServiceImport " + si.Name, Field: FieldExports, Value: fmt.Sprint(total),
		Reason: fmt.Sprintf("beyond the %d oldest exports the fleet table allows cluster %s (maxExports); the rest of its %d exports are ignored", m.MaxExports, w, total)}
}

// capSlices keeps, of each writer's EndpointSlices of one service, the
// MaxSlicesPerExport oldest; the others come back as rejections.
func capSlices(items []discoveryv1.EndpointSlice) ([]*discoveryv1.EndpointSlice, []membership.Rejection) {
	sorted := make([]*discoveryv1.EndpointSlice, len(items))
	for i := range items {
		sorted[i] = &items[i]
	}
	slices.SortFunc(sorted, func(a, b *discoveryv1.EndpointSlice) int {
		return cmp.Or(cmp.Compare(writer(a), writer(b)), compareKeys(keyOf(a), keyOf(b)))
	})
	var kept []*discoveryv1.EndpointSlice
	var rej []membership.Rejection
	count := map[string]int{}
	for _, s := range sorted {
		w := writer(s)
		if count[w]++; count[w] > mcnetv1.MaxSlicesPerExport {
			rej = append(rej, membership.Rejection{Cluster: w, Object: "EndpointSlice " + s.Name, Field: FieldEndpointSlices, Value: fmt.Sprint(count[w]),
				Reason: fmt.Sprintf("beyond the %d oldest EndpointSlices imported of one cluster's export", mcnetv1.MaxSlicesPerExport)})
			continue
		}
		kept = append(kept, s)
	}
	return kept, rej
}

// order is the reconciler's export order, made on first use.
func (r *Reconciler) order() *exportOrder {
	r.orderOnce.Do(func() { r.exportOrder = newExportOrder() })
	return r.exportOrder
}

// limit is a writer's export cap in the current fleet table; a cluster outside it has
// none (its exports are refused anyway).
func (r *Reconciler) limit(ctx context.Context) func(string) int {
	t, err := r.table(ctx)
	return func(w string) int {
		if err != nil || t == nil {
			return mcnetv1.DefaultMaxExports
		}
		if m, ok := t.Member(w); ok {
			return m.MaxExports
		}
		return 0
	}
}

// exportEvents counts broker ServiceImports in the export order and names the service
// of each, and of every export that moved across its writer's cap.
func (r *Reconciler) exportEvents() handler.TypedEventHandler[client.Object, reconcile.Request] {
	put := func(ctx context.Context, name string, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, s := range r.order().put(name, o, r.limit(ctx)) {
			for _, req := range serviceRequest(s.Namespace, s.Name) {
				q.Add(req)
			}
		}
		if o != nil {
			for _, req := range serviceRequest(keyOf(o).service.Namespace, keyOf(o).service.Name) {
				q.Add(req)
			}
		}
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			put(ctx, e.Object.GetName(), e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			put(ctx, e.ObjectOld.GetName(), nil, q)
			old := keyOf(e.ObjectOld).service
			for _, req := range serviceRequest(old.Namespace, old.Name) {
				q.Add(req)
			}
			put(ctx, e.ObjectNew.GetName(), e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			put(ctx, e.Object.GetName(), nil, q)
			s := keyOf(e.Object).service
			for _, req := range serviceRequest(s.Namespace, s.Name) {
				q.Add(req)
			}
		},
	}
}
