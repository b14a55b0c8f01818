package serviceimport

import (
	"context"
	"maps"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/mcnet-io/mcnet/internal/clusterhealth"
)

// healthWatch tells the reconciler when the clusters' health changes: a connection
// going up or down, or a Gateway's status expiring (a dead gateway writes no event),
// at once; RTT figures at most every rttEvery. Every Gateway renews its status each
// second, so watching Gateways directly would reconcile every import as often.
type healthWatch struct {
	tracker  *clusterhealth.Tracker
	events   chan event.GenericEvent
	every    time.Duration
	rttEvery time.Duration
	// notify is the object sent: allImports needs one in the system namespace.
	notify client.Object
}

// Start implements manager.Runnable.
func (w *healthWatch) Start(ctx context.Context) error {
	t := time.NewTicker(w.every)
	defer t.Stop()
	var last map[string]clusterhealth.Health
	var lastRTT time.Time
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			// A failed read keeps the last verdict (an API-server outage is not a dead
			// gateway), told once per outage.
			h, err := w.tracker.Refresh(ctx, now)
			if err != nil {
				if !failing && ctx.Err() == nil {
					log.FromContext(ctx).Error(err, "Cannot read the local Gateways; the ClusterSetIP endpoints keep the last health read")
				}
				failing = true
				continue
			}
			failing = false
			if last != nil && connectedSame(last, h) && (maps.Equal(last, h) || now.Sub(lastRTT) < w.rttEvery) {
				continue
			}
			if last == nil || !maps.Equal(last, h) {
				lastRTT = now
			}
			last = h
			select {
			case w.events <- event.GenericEvent{Object: w.notify}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: only the leader
// reconciles imports.
func (w *healthWatch) NeedLeaderElection() bool { return true }

func connectedSame(a, b map[string]clusterhealth.Health) bool {
	if len(a) != len(b) {
		return false
	}
	for c, h := range a {
		if b[c].Connected != h.Connected {
			return false
		}
	}
	return true
}
