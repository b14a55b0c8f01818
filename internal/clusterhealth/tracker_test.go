package clusterhealth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// fakeAPI is an API server the test cuts and restores, holding Gateways whose
// heartbeats the test writes.
type fakeAPI struct {
	down bool
	gws  map[string]mcnetv1.Gateway
}

func (f *fakeAPI) list(context.Context) ([]mcnetv1.Gateway, error) {
	if f.down {
		return nil, errors.New("connection refused")
	}
	var out []mcnetv1.Gateway
	for _, g := range f.gws {
		out = append(out, g)
	}
	return out, nil
}

// beat is a running gateway's heartbeat at now, written only while the API is up.
func (f *fakeAPI) beat(name string, ha mcnetv1.HAStatus, now time.Time, connected ...string) {
	if !f.down {
		f.gws[name] = gw(name, ha, now, now.Add(mcnetv1.GatewayExpiry), "", connected...)
	}
}

// TestTracker runs a cluster through time in 250 ms steps, as DNS reads it: a dead
// gateway expires within GatewayExpiry of its last heartbeat; a 60 s API-server cut
// and its end expire nobody; a gateway dead before the cut stays expired after it.
func TestTracker(t *testing.T) {
	api := &fakeAPI{gws: map[string]mcnetv1.Gateway{}}
	tr := &Tracker{List: api.list}
	start := time.Unix(1000, 0)
	now := start
	step := 250 * time.Millisecond
	east := map[string]Health{"east": {Connected: true}}
	none := map[string]Health{}
	// run advances d with gateways a (and, while bBeats, b) beating each second, and
	// checks every read against want.
	run := func(what string, d time.Duration, aBeats bool, want map[string]Health) {
		t.Helper()
		for end := now.Add(d); now.Before(end); now = now.Add(step) {
			if now.Sub(start)%time.Second == 0 && aBeats {
				api.beat("a", mcnetv1.HAActive, now, "east")
			}
			got, _ := tr.Refresh(t.Context(), now)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("%s, at %s: health (-want +got):\n%s", what, now.Sub(start), diff)
			}
		}
	}
	run("running", 10*time.Second, true, east)
	api.down = true
	run("API server cut", 60*time.Second, true, east)
	api.down = false
	run("API server back", 10*time.Second, true, east)

	// a dies: its status lasts until its expireTime, at most GatewayExpiry later.
	died := now
	var gone time.Duration
	for ; now.Before(died.Add(10 * time.Second)); now = now.Add(step) {
		got, _ := tr.Refresh(t.Context(), now)
		if len(got) == 0 && gone == 0 {
			gone = now.Sub(died)
		}
	}
	if gone == 0 || gone > mcnetv1.GatewayExpiry {
		t.Fatalf("dead gateway dropped after %s, want within %s", gone, mcnetv1.GatewayExpiry)
	}
	// A cut and its end do not bring it back.
	api.down = true
	run("API server cut, a dead", 30*time.Second, false, none)
	api.down = false
	run("API server back, a dead", 10*time.Second, false, none)
	// It comes back.
	run("a back", 2*time.Second, true, east)
}

// TestTrackerStart: a reader that starts does not judge expiry before it has watched
// for GatewayExpiry, then does.
func TestTrackerStart(t *testing.T) {
	now := time.Unix(1000, 0)
	api := &fakeAPI{gws: map[string]mcnetv1.Gateway{
		"a": gw("a", mcnetv1.HAActive, now.Add(-time.Hour), now.Add(-time.Hour+mcnetv1.GatewayExpiry), "", "east"),
	}}
	tr := &Tracker{List: api.list}
	h, _ := tr.Refresh(t.Context(), now)
	if len(h) != 1 {
		t.Fatalf("just started: %v, want east still counted", h)
	}
	for end := now.Add(mcnetv1.GatewayExpiry); now.Before(end); {
		now = now.Add(time.Second)
		h, _ = tr.Refresh(t.Context(), now)
	}
	if len(h) != 0 {
		t.Fatalf("after watching for %s: %v, want the hour-old status expired", mcnetv1.GatewayExpiry, h)
	}
}
