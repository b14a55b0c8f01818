package election

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// freeUDPPort returns a UDP port free on the loopback.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// fixedLock returns the same record on every Get, as a Lease nobody renews.
type fixedLock struct {
	resourcelock.Interface
	rec resourcelock.LeaderElectionRecord
	raw []byte
	err error
}

func (f *fixedLock) Get(context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	if f.err != nil {
		return nil, nil, f.err
	}
	r := f.rec
	return &r, f.raw, nil
}

func (f *fixedLock) Identity() string { return "gw2" }

func TestLeaseLockVetoesOnlyForALateLiveHolder(t *testing.T) {
	start := time.Unix(1000, 0)
	now := start
	alive := true
	inner := &fixedLock{rec: resourcelock.LeaderElectionRecord{HolderIdentity: "gw1"}, raw: []byte(`{"holderIdentity":"gw1"}`)}
	var firsts, all int
	l := &leaseLock{Interface: inner, alive: func(h string, _ time.Time) bool { return alive && h == "gw1" },
		vetoAfter: 600 * time.Millisecond, maxVeto: 30 * time.Second, now: func() time.Time { return now },
		tolerated: func(_ string, _ time.Duration, first bool) {
			all++
			if first {
				firsts++
			}
		}}
	get := func() []byte {
		t.Helper()
		_, raw, err := l.Get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	first := get()
	// A renewal that is merely not due yet: the record is what the API server says.
	now = start.Add(400 * time.Millisecond)
	if got := get(); !bytes.Equal(got, first) {
		t.Fatalf("record changed before the renewal was late: %s", got)
	}
	// Late and alive: every Get looks like a renewal, so client-go restarts the term.
	now = start.Add(700 * time.Millisecond)
	a := get()
	now = start.Add(900 * time.Millisecond)
	b := get()
	if bytes.Equal(a, first) || bytes.Equal(a, b) {
		t.Errorf("a late, live holder's record did not change on each Get:\n%s\n%s\n%s", first, a, b)
	}
	if firsts != 1 || all != 2 {
		t.Errorf("told of %d late renewals, %d as the first of an episode; want 2, 1", all, firsts)
	}
	// Dead: the record stays as it is, and the Lease runs out.
	alive = false
	now = start.Add(1100 * time.Millisecond)
	c := get()
	now = start.Add(1300 * time.Millisecond)
	if d := get(); !bytes.Equal(c, d) {
		t.Errorf("a dead holder's record still changes:\n%s\n%s", c, d)
	}
	// Alive but unable to renew for maxVeto: no longer protected.
	alive = true
	now = start.Add(31 * time.Second)
	e := get()
	now = start.Add(32 * time.Second)
	if f := get(); !bytes.Equal(e, f) {
		t.Errorf("a holder that has not renewed for 30 s is still protected")
	}
	// A real renewal starts over.
	inner.raw = []byte(`{"holderIdentity":"gw1","renew":2}`)
	now = start.Add(33 * time.Second)
	g := get()
	now = start.Add(33*time.Second + 300*time.Millisecond)
	if h := get(); !bytes.Equal(g, h) {
		t.Errorf("vetoed right after a renewal")
	}
	// This node's own record is never touched by liveness.
	inner.rec.HolderIdentity = "gw2"
	inner.raw = []byte(`{"holderIdentity":"gw2"}`)
	now = start.Add(40 * time.Second)
	i := get()
	now = start.Add(41 * time.Second)
	if j := get(); !bytes.Equal(i, j) {
		t.Errorf("own record changed")
	}
}

func TestLivenessAnswersOnlyWhileServing(t *testing.T) {
	ctx := t.Context()
	active := newLiveness(freeUDPPort(t))
	standby := newLiveness(freeUDPPort(t))
	standby.peerPort = active.port
	rec := &resourcelock.LeaderElectionRecord{HolderIdentity: "gw1", LeaderTransitions: 2}
	active.observe("gw1", rec)
	standby.observe("gw2", rec)
	for _, l := range []*liveness{active, standby} {
		l.setKey(testLivenessKey)
		go func() {
			if err := l.run(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	standby.watch("gw1", netip.MustParseAddr("127.0.0.1"))
	waitFor := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if standby.alive("gw1", time.Now()) == want {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("alive never became %v", want)
	}
	time.Sleep(3 * livenessInterval)
	if standby.alive("gw1", time.Now()) {
		t.Fatal("alive before the holder serves")
	}
	active.serving.Store(true)
	waitFor(true)
	if standby.alive("gw9", time.Now()) {
		t.Error("alive for a node that is not watched")
	}
	if ok, known := standby.reachable("gw1", time.Second, time.Now()); !ok || !known {
		t.Errorf("reachable = %v, %v while it answers", ok, known)
	}
	if _, known := standby.reachable("gw9", time.Second, time.Now()); known {
		t.Error("something known of a node that is not watched")
	}
	active.serving.Store(false) // stepped down, or a new process not yet active
	waitFor(false)
	time.Sleep(300 * time.Millisecond)
	if ok, known := standby.reachable("gw1", 300*time.Millisecond, time.Now()); ok || !known {
		t.Errorf("reachable = %v, %v after it stopped answering", ok, known)
	}
	active.serving.Store(true)
	waitFor(true)
	standby.watch("", netip.Addr{})
	if standby.alive("gw1", time.Now()) {
		t.Error("alive after the watch ended")
	}
}

// flakyLock fails every read whose number fail says, as a throttled API server does;
// the record itself never changes: its holder is dead.
type flakyLock struct {
	fixedLock
	reads int
	fail  func(read int) bool
}

func (f *flakyLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	f.reads++
	if f.fail(f.reads) {
		return nil, nil, apierrors.NewTooManyRequests("throttled", 1)
	}
	return f.fixedLock.Get(ctx)
}

// TestLeaseReadFailuresDoNotHoldOffAFailover runs client-go's election as a standby
// against a dead holder's Lease whose reads fail, throttled: every other read, then in
// long runs. The standby must still take the Lease within a bounded time: short gaps
// never restart the term, and long ones only a few times.
func TestLeaseReadFailuresDoNotHoldOffAFailover(t *testing.T) {
	const ld, rd, rp = time.Second, 800 * time.Millisecond, 200 * time.Millisecond
	for _, tc := range []struct {
		name string
		fail func(read int) bool
		// within bounds the takeover, in retry periods (reads) after the first.
		within int
	}{
		{"every other read fails", func(n int) bool { return n%2 == 0 }, 2 * int(ld/rp)},
		{"two of three reads fail", func(n int) bool { return n%3 != 0 }, 3 * int(ld/rp)},
		// Outages of a second (5 reads) between single successes: each may restart the
		// term, but only maxOutages times.
		{"long outages", func(n int) bool { return n%6 != 0 }, (3 + 2) * 6 * int(ld/rp)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			inner := &flakyLock{fixedLock: fixedLock{rec: resourcelock.LeaderElectionRecord{HolderIdentity: "gw1", LeaseDurationSeconds: 1}, raw: []byte(`{"holderIdentity":"gw1"}`)}, fail: tc.fail}
			l := &leaseLock{Interface: inner, alive: func(string, time.Time) bool { return false },
				vetoAfter: ld - 2*rp, maxVeto: 30 * time.Second, minOutage: ld - 2*rp, maxOutages: 3,
				now: func() time.Time { return now }}
			// What client-go's elector does with the raw record: the term restarts
			// whenever it changes, and the Lease is free once unchanged for ld.
			var observedRaw []byte
			var observedAt time.Time
			for read := 1; read <= 1000; read++ {
				_, raw, err := l.Get(t.Context())
				if err == nil {
					if !bytes.Equal(raw, observedRaw) {
						observedRaw, observedAt = raw, now
					}
					if now.Sub(observedAt) >= ld {
						if read > tc.within {
							t.Errorf("took over at read %d, want within %d", read, tc.within)
						}
						return
					}
				}
				now = now.Add(rp)
			}
			t.Fatalf("no takeover in 1000 reads (%s) with the holder dead: read failures restart the term without end", 1000*rp)
		})
	}
}
