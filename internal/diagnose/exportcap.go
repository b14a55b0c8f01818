package diagnose

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/membership"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// ExportCaps names every member that publishes more exports on the broker than the
// fleet table lets receivers import of it (its maxExports): receivers import its
// maxExports oldest, by the broker's creationTimestamp and then name, as the importer
// orders them, and ignore the rest, which the finding lists. exports are the broker's
// ServiceImports; id is the cluster diagnose reads the broker as.
func ExportCaps(id string, fleet *mcnetv1.Fleet, exports []mcsv1alpha1.ServiceImport) []Check {
	const name = "clusters export within their maxExports"
	if fleet == nil {
		return nil
	}
	table, _ := membership.New(fleet)
	byWriter := map[string][]*mcsv1alpha1.ServiceImport{}
	for i := range exports {
		w := exports[i].Labels[mcnetv1.ClusterLabel]
		if _, member := table.Member(w); member {
			byWriter[w] = append(byWriter[w], &exports[i])
		}
	}
	var out []Check
	for _, w := range slices.Sorted(maps.Keys(byWriter)) {
		list := byWriter[w]
		m, _ := table.Member(w)
		if len(list) <= m.MaxExports {
			continue
		}
		slices.SortFunc(list, func(a, b *mcsv1alpha1.ServiceImport) int {
			return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name))
		})
		var ignored []string
		for _, si := range list[m.MaxExports:] {
			ignored = append(ignored, si.Labels[naming.LabelServiceNamespace]+"/"+si.Labels[mcsv1alpha1.LabelServiceName])
		}
		shown := ignored[:min(len(ignored), 5)]
		more := ""
		if len(ignored) > len(shown) {
			more = fmt.Sprintf(" and %d more", len(ignored)-len(shown))
		}
		f := fail("MCN1108", id, name, "cluster %s publishes %d exports on the broker, over its maxExports %d in fleet %s: receivers ignore its %d newest: %s%s",
			w, len(list), m.MaxExports, table.Name(), len(ignored), strings.Join(shown, ", "), more)
		f.Offender = w
		out = append(out, f)
	}
	if len(out) == 0 {
		return []Check{ok("broker", id, name)}
	}
	return out
}
