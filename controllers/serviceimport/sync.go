package serviceimport

import (
	"context"
	"fmt"
	"maps"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SyncSlices makes the EndpointSlices in have (those the caller listed as its own) into
// want: it creates and updates before it deletes, so a reader never sees a service
// without endpoints in between. It returns whether anything changed.
func SyncSlices(ctx context.Context, c client.Client, have []discoveryv1.EndpointSlice, want []*discoveryv1.EndpointSlice) (bool, error) {
	byName := make(map[string]*discoveryv1.EndpointSlice, len(have))
	for i := range have {
		byName[have[i].Name] = &have[i]
	}
	changed := false
	keep := map[string]bool{}
	for _, w := range want {
		keep[w.Name] = true
		h, ok := byName[w.Name]
		if !ok {
			// AlreadyExists means the cache is behind: the retry updates it.
			if err := c.Create(ctx, w); err != nil {
				return changed, fmt.Errorf("create EndpointSlice %s/%s: %w", w.Namespace, w.Name, err)
			}
			changed = true
			continue
		}
		if sliceEqual(h, w) {
			continue
		}
		u := h.DeepCopy()
		u.Labels, u.Annotations = w.Labels, w.Annotations
		u.AddressType, u.Endpoints, u.Ports = w.AddressType, w.Endpoints, w.Ports
		if len(w.OwnerReferences) > 0 {
			u.OwnerReferences = w.OwnerReferences
		}
		if err := c.Update(ctx, u); err != nil {
			return changed, fmt.Errorf("update EndpointSlice %s/%s: %w", u.Namespace, u.Name, err)
		}
		changed = true
	}
	for i := range have {
		if keep[have[i].Name] {
			continue
		}
		if err := c.Delete(ctx, &have[i], client.Preconditions{UID: &have[i].UID}); client.IgnoreNotFound(err) != nil {
			return changed, fmt.Errorf("delete EndpointSlice %s/%s: %w", have[i].Namespace, have[i].Name, err)
		}
		changed = true
	}
	return changed, nil
}

func sliceEqual(have, want *discoveryv1.EndpointSlice) bool {
	return maps.Equal(have.Labels, want.Labels) &&
		maps.Equal(have.Annotations, want.Annotations) &&
		have.AddressType == want.AddressType &&
		equality.Semantic.DeepEqual(have.Endpoints, want.Endpoints) &&
		equality.Semantic.DeepEqual(have.Ports, want.Ports) &&
		(len(want.OwnerReferences) == 0 || equality.Semantic.DeepEqual(have.OwnerReferences, want.OwnerReferences))
}
