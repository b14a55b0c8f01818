package clusterhealth

import (
	"context"
	"sync"
	"time"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// Tracker keeps the clusters' health from live reads of the local Gateways, and
// expires a Gateway only on evidence it could see.
//
// A heartbeat that stops means the gateway died, or that it cannot reach its API
// server, or that the reader cannot: in an API-server outage nobody renews and nobody
// reads, and when the API server returns every status has passed its expireTime
// before any gateway had the chance to renew. So:
//
//   - a read that fails changes nothing: the last verdict stands (DNS keeps answering
//     as it did) until a read succeeds;
//   - an expireTime counts only once the reader has seen the API server answer
//     without a break (reads no more than freshGap apart) for GatewayExpiry, time in
//     which every running gateway renews at least twice;
//   - a Gateway the tracker already judged expired stays so until it renews, also
//     during that window.
//
// A gateway that can reach its API server no longer but whose cables work is kept
// by its live standby's word (Active). With no standby, it is judged dead.
type Tracker struct {
	// List reads the local Gateways from the API server itself, not from a cache, so
	// a read that succeeds is fresh.
	List func(ctx context.Context) ([]mcnetv1.Gateway, error)

	mu      sync.Mutex
	read    bool
	okSince time.Time // start of the current unbroken run of successful reads
	lastOK  time.Time
	health  map[string]Health
	// expired maps the Gateways judged expired to the renewTime they had then.
	expired map[string]time.Time
}

// freshGap is the longest time between two successful reads that still counts as
// an unbroken view of the API server.
const freshGap = 2 * time.Second

// readTimeout bounds each read: an API server that does not answer is one that failed.
const readTimeout = time.Second

// Refresh reads the Gateways and returns the health at now. When the read fails it
// returns the last verdict and the error.
func (t *Tracker) Refresh(ctx context.Context, now time.Time) (map[string]Health, error) {
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	gws, err := t.List(rctx)
	cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		return t.health, err
	}
	if !t.read || now.Sub(t.lastOK) > freshGap {
		t.okSince = now
	}
	t.read, t.lastOK = true, now
	t.health = t.judge(gws, now)
	return t.health, nil
}

// Health returns the last verdict, reading once first if nothing was read yet.
func (t *Tracker) Health(ctx context.Context) (map[string]Health, error) {
	t.mu.Lock()
	read, h := t.read, t.health
	t.mu.Unlock()
	if read {
		return h, nil
	}
	return t.Refresh(ctx, time.Now())
}

// judge applies the expiry rules to gws at now; t.mu is held.
func (t *Tracker) judge(gws []mcnetv1.Gateway, now time.Time) map[string]Health {
	settled := !now.Before(t.okSince.Add(mcnetv1.GatewayExpiry))
	expired := map[string]time.Time{}
	live := func(gw *mcnetv1.Gateway) bool {
		if Live(gw, now) {
			return true
		}
		r, was := t.expired[gw.Name]
		if !settled && (!was || !r.Equal(renewed(gw))) {
			return true
		}
		expired[gw.Name] = renewed(gw)
		return false
	}
	h := fromGateways(gws, live)
	t.expired = expired
	return h
}
