// Package clusterhealth reads, from the local cluster's Gateways, which remote clusters
// traffic can reach now and how far away they are. DNS answers and the ClusterSetIP's
// endpoints both choose clusters from it.
package clusterhealth

import (
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// Health is the state of the local cluster's connection to a remote one.
type Health struct {
	// Connected is true when the local active gateway's probes through the cable pass.
	Connected bool
	// RTT is the average round trip time the gateway measured; zero when unknown.
	RTT time.Duration
}

// Live reports whether gw's status is still true at now: it has not passed its
// status.expireTime. A Gateway without one (written by a version without heartbeats)
// counts as live.
func Live(gw *mcnetv1.Gateway, now time.Time) bool {
	return gw.Status.ExpireTime == nil || now.Before(gw.Status.ExpireTime.Time)
}

// Active returns the Gateways that carry the cluster's traffic at now: those that
// report active and are live. An active gateway that stopped renewing still counts
// while a live standby reports that it answers on its liveness port (its own API
// server may be away while its cables work, and then it keeps the Lease); of several
// such, the one renewed last. A dead gateway's Gateway object, which still says
// active, does not count.
func Active(gws []mcnetv1.Gateway, now time.Time) []*mcnetv1.Gateway {
	return active(gws, func(gw *mcnetv1.Gateway) bool { return Live(gw, now) })
}

// active is Active with the liveness verdict given.
func active(gws []mcnetv1.Gateway, isLive func(*mcnetv1.Gateway) bool) []*mcnetv1.Gateway {
	var live, stale []*mcnetv1.Gateway
	vouched := false
	for i := range gws {
		gw := &gws[i]
		switch {
		case gw.Status.HAStatus == mcnetv1.HAActive && isLive(gw):
			live = append(live, gw)
		case gw.Status.HAStatus == mcnetv1.HAActive:
			stale = append(stale, gw)
		case gw.Status.HAStatus == mcnetv1.HAPassive && isLive(gw) &&
			meta.IsStatusConditionTrue(gw.Status.Conditions, mcnetv1.GatewayConditionActiveReachable):
			vouched = true
		}
	}
	if len(live) > 0 || !vouched || len(stale) == 0 {
		return live
	}
	return []*mcnetv1.Gateway{slices.MaxFunc(stale, func(a, b *mcnetv1.Gateway) int {
		return renewed(a).Compare(renewed(b))
	})}
}

func renewed(gw *mcnetv1.Gateway) time.Time {
	if gw.Status.RenewTime == nil {
		return time.Time{}
	}
	return gw.Status.RenewTime.Time
}

// FromGateways reads the clusters' health at now from the local Gateways: a cluster is
// connected when an active gateway (Active) says so; its RTT is that gateway's average.
// Passive gateways carry no traffic, so their view does not count. Clusters absent
// from the result are not connected. A reader that watches over time uses a Tracker,
// which does not take an API-server outage for dead gateways.
func FromGateways(gateways []mcnetv1.Gateway, now time.Time) map[string]Health {
	return fromGateways(gateways, func(gw *mcnetv1.Gateway) bool { return Live(gw, now) })
}

func fromGateways(gateways []mcnetv1.Gateway, isLive func(*mcnetv1.Gateway) bool) map[string]Health {
	h := map[string]Health{}
	for _, gw := range active(gateways, isLive) {
		for _, c := range gw.Status.Connections {
			if c.Status != mcnetv1.Connected || h[c.Cluster].Connected {
				continue
			}
			rtt := Health{Connected: true}
			if c.RTT != nil {
				rtt.RTT = c.RTT.Avg.Duration
				if rtt.RTT == 0 {
					rtt.RTT = c.RTT.Last.Duration
				}
			}
			h[c.Cluster] = rtt
		}
	}
	return h
}
