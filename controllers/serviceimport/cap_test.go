package serviceimport

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/naming"
)

func brokerExport(writer string, i int, at time.Time) *mcsv1alpha1.ServiceImport {
	name := fmt.Sprintf("svc-%02d", i)
	l := naming.BrokerLabels("app", name, writer)
	l[mcnetv1.ClusterLabel] = writer
	return &mcsv1alpha1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Name: naming.BrokerName("app", name, writer), Labels: l, CreationTimestamp: metav1.NewTime(at)}}
}

// TestExportOrder checks that, in whatever order the informer tells of exports, each
// writer's cap admits its oldest ones, another writer's exports do not count against
// it, and every export that crosses the cap is named so it is imported or dropped.
func TestExportOrder(t *testing.T) {
	start := time.Unix(1000, 0)
	const limit = 3
	var west, east []*mcsv1alpha1.ServiceImport
	for i := range 8 {
		west = append(west, brokerExport("west", i, start.Add(time.Duration(i)*time.Second)))
		east = append(east, brokerExport("east", i, start.Add(time.Duration(i)*time.Second)))
	}
	within := func(o *exportOrder, si *mcsv1alpha1.ServiceImport) bool {
		r, _, ok := o.rank(si)
		return ok && r < limit
	}
	for trial := range 20 {
		all := append(slices.Clone(west), east[:2]...)
		rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		o := newExportOrder()
		admitted := map[types.NamespacedName]bool{}
		for _, si := range all {
			// Replay what the named services would do: recompute their admission.
			for _, s := range o.put(si.Name, si, func(string) int { return limit }) {
				admitted[s] = false
			}
			admitted[keyOf(si).service] = true
			for _, x := range all {
				if k := keyOf(x).service; admitted[k] {
					admitted[k] = within(o, x)
				}
			}
		}
		var got []string
		for _, si := range all {
			if within(o, si) {
				got = append(got, si.Name)
			}
		}
		slices.Sort(got)
		want := []string{east[0].Name, east[1].Name, west[0].Name, west[1].Name, west[2].Name}
		slices.Sort(want)
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("trial %d: admitted (-want +got):\n%s", trial, d)
		}
		// Withdrawing an admitted export names the next oldest, which comes in.
		moved := o.put(west[1].Name, nil, func(string) int { return limit })
		if d := cmp.Diff([]types.NamespacedName{keyOf(west[3]).service}, moved); d != "" || !within(o, west[3]) {
			t.Fatalf("trial %d: withdrawal moved (-want +got):\n%s", trial, d)
		}
		// An object never told of is not admitted.
		if within(newExportOrder(), west[0]) {
			t.Fatal("admitted an export the informer never told of")
		}
	}
}
