package dns

import (
	"net/netip"
	"time"
)

// minRTT keeps a near-zero measurement from taking every answer: below it, clusters are
// equally close.
const minRTT = 100 * time.Microsecond

// family tells whether an address answers a query of type A (4) or AAAA (6).
func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

func hasReady(b *Backend, fam int) bool {
	for i := range b.Endpoints {
		if !b.Endpoints[i].Ready {
			continue
		}
		for _, a := range b.Endpoints[i].Addrs {
			if family(a) == fam {
				return true
			}
		}
	}
	return false
}

// choose picks the cluster that answers for a ClusterSetIP service: the local cluster
// when it has ready endpoints of the family, otherwise a connected remote cluster with
// ready endpoints, at random with weight 1/RTT. r is a uniform number in [0, 1). It
// returns nil when no cluster may answer.
func choose(backends []Backend, local string, health map[string]Health, fam int, r float64) *Backend {
	for i := range backends {
		if backends[i].Cluster == local && hasReady(&backends[i], fam) {
			return &backends[i]
		}
	}
	// Clusters whose RTT is not measured yet weigh as much as the slowest measured one:
	// they are reachable, but nothing says they are close.
	var slowest time.Duration
	for i := range backends {
		if h, ok := health[backends[i].Cluster]; ok && h.Connected && h.RTT > slowest {
			slowest = h.RTT
		}
	}
	var total float64
	var weights [16]float64 // no allocation for fleets of up to 16 clusters
	ws := weights[:0]
	for i := range backends {
		ws = append(ws, weight(&backends[i], local, health, fam, slowest))
		total += ws[i]
	}
	if total == 0 {
		return nil
	}
	x := r * total
	last := -1
	for i, w := range ws {
		if w == 0 {
			continue
		}
		last = i
		if x < w {
			return &backends[i]
		}
		x -= w
	}
	return &backends[last] // rounding
}

func weight(b *Backend, local string, health map[string]Health, fam int, slowest time.Duration) float64 {
	if b.Cluster == local || !hasReady(b, fam) {
		return 0
	}
	h, ok := health[b.Cluster]
	if !ok || !h.Connected {
		return 0
	}
	rtt := h.RTT
	if rtt == 0 {
		rtt = slowest
	}
	rtt = max(rtt, minRTT)
	return float64(time.Second) / float64(rtt)
}

// healthy says whether a cluster's pods may be in an answer that is not aimed at it.
func healthy(cluster, local string, health map[string]Health) bool {
	return cluster == local || health[cluster].Connected
}
