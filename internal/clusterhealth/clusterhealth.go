// Package clusterhealth reads, from the local cluster's Gateways, which remote clusters
// traffic can reach now and how far away they are. DNS answers and the ClusterSetIP's
// endpoints both choose clusters from it.
package clusterhealth

import (
	"time"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// Health is the state of the local cluster's connection to a remote one.
type Health struct {
	// Connected is true when the local active gateway's probes through the cable pass.
	Connected bool
	// RTT is the average round trip time the gateway measured; zero when unknown.
	RTT time.Duration
}

// FromGateways reads the clusters' health from the local Gateways: a cluster is
// connected when an active gateway says so; its RTT is that gateway's average. Passive
// gateways carry no traffic, so their view does not count. Clusters absent from the
// result are not connected.
func FromGateways(gateways []mcnetv1.Gateway) map[string]Health {
	h := map[string]Health{}
	for _, gw := range gateways {
		if gw.Status.HAStatus != mcnetv1.HAActive {
			continue
		}
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
